"""`bench data check | stats | synth` through the real CLI entry point."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from _vico_fixture import SR, driver_order, make_vico

from bench.cli import main
from bench.features.audio import audio_features


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("cli_template") / "ViCo"
    return root, make_vico(root, splits={"train": 3, "test": 1}, n_frames=8)


@pytest.fixture
def vico(_template: tuple[Path, list], tmp_path: Path, bench_home: Path) -> tuple[Path, list]:
    root = tmp_path / "ViCo"
    shutil.copytree(_template[0], root)
    return root, _template[1]


def _run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_check_clean_folder(vico: tuple[Path, list], capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = vico
    assert _run(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "train: 3/3 clips OK" in out and "OK" in out


def test_check_lists_every_problem(vico: tuple[Path, list], capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = vico
    (root / "videos" / "train000.listener.mp4").unlink()
    (root / "audios" / "train002.wav").write_bytes(b"junk")
    (root / "test.csv").write_text("video_id,uuid,speaker_id,listener_id,attitude\n1,x,a,b,bored\n")
    torch.save({"mean": torch.zeros(3)}, root / "audio_feats_mean_std.bin")
    assert _run(["data", "check", str(root)]) == 1
    err = capsys.readouterr().err
    for fragment in ("train000.listener.mp4", "train002.wav", "unknown attitude 'bored'",
                     "audio_feats_mean_std.bin", "4 problem(s)"):
        assert fragment in err, (fragment, err)


def test_check_not_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["data", "check", str(tmp_path)]) == 1
    assert "no split CSV" in capsys.readouterr().err


def test_stats_writes_official_files(vico: tuple[Path, list], tmp_path: Path) -> None:
    root, clips = vico
    (root / "audios" / "train001.wav").write_bytes(b"junk")  # skipped, reported
    out = tmp_path / "stats"
    assert _run(["data", "stats", str(root), "--out", str(out)]) == 0
    video = torch.load(out / "video_feats_mean_std.bin", weights_only=True)
    audio = torch.load(out / "audio_feats_mean_std.bin", weights_only=True)
    used = [c for c in clips if c.split == "train" and c.uuid != "train001"]
    dyn = torch.from_numpy(np.concatenate(
        [driver_order(c.coeff[r], c.params[r]) for c in used for r in ("speaker", "listener")]))
    torch.testing.assert_close(video["angle.exp.trans"]["std"], dyn.std(0), atol=1e-5, rtol=1e-5)
    fixed = torch.from_numpy(np.concatenate(
        [np.concatenate([c.coeff[r][:, :80], c.coeff[r][:, 227:254], c.coeff[r][:, 144:224]], 1)
         for c in used for r in ("speaker", "listener")]))
    torch.testing.assert_close(video["id.gamma.tex"]["mean"], fixed.mean(0), atol=1e-5, rtol=1e-5)
    feats = torch.from_numpy(np.concatenate([audio_features((c.audio, SR), c.n_frames) for c in used]))
    torch.testing.assert_close(audio["mean"], feats.mean(0), atol=1e-4, rtol=1e-4)
    assert _run(["data", "stats", str(root), "--strict"]) == 2  # user error: exit 2


def test_synth_calls_the_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[Path, int]] = []

    def synthesize(out: Path, *, seed: int = 0, progress: bool = True) -> Path:
        calls.append((Path(out), seed))
        return Path(out)

    fake = types.ModuleType("bench.data.synth")
    fake.synthesize = synthesize  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.data.synth", fake)
    assert _run(["data", "synth", "--out", str(tmp_path / "mini"), "--seed", "7"]) == 0
    assert calls == [(tmp_path / "mini", 7)]
    assert str(tmp_path / "mini") in capsys.readouterr().out


@pytest.mark.slow
def test_synth_then_check_and_official_layout(tmp_path: Path, bench_home: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Acceptance: generated vico-mini passes `bench data check`, and the reader agrees with
    its .mat/.bin files read directly with scipy/torch."""
    import importlib.util

    if importlib.util.find_spec("bench.data.synth") is None:
        pytest.skip("bench.data.synth (the vico-mini generator) is not in this checkout")
    import scipy.io

    from bench.data.vico import ViCoDataset

    out = tmp_path / "mini"
    assert _run(["data", "synth", "--out", str(out)]) == 0
    assert _run(["data", "check", str(out)]) == 0, capsys.readouterr().err
    ds = ViCoDataset(out)
    for split in ds.splits():
        for sample in ds.samples(split, "listening"):
            u = sample.uuid
            raw = torch.load(out / "video_feats" / f"{u}.listener.bin", weights_only=False)
            np.testing.assert_array_equal(sample.gt_coeffs().numpy(), raw["angle.exp.trans"])  # type: ignore[union-attr]
            mat = scipy.io.loadmat(out / "recons" / f"{u}.speaker.mat")
            np.testing.assert_allclose(sample.speaker_coeffs().numpy(),  # type: ignore[union-attr]
                                       driver_order(mat["coeff"], mat["transform_params"]), atol=1e-6)
            assert sample.n_frames == raw["angle.exp.trans"].shape[0]
    assert ds.problems == []
