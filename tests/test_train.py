"""Training: losses against the official formulas, determinism, the store, resumable ensembles."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_drivers_fake import FakeDataset

from bench import coeffs as C
from bench.checkpoints import CheckpointStore, load_checkpoint
from bench.contracts import DriverBatch
from bench.errors import ConfigError
from bench.train import TrainConfig, baseline_loss, paper_loss, run_key, train, train_many, windows

TINY = TrainConfig(arch="lstm", epochs=2, batch_size=4, clip_len=16, stride=8, seed=0)


# small models run fastest (and reproducibly) on one thread, above all on a busy CPU
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_data() -> FakeDataset:
    return FakeDataset(n_clips=(3, 2, 2), length=24)


def _official_pairwise(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    b, n, c = p.shape
    return F.pairwise_distance(p.reshape(b * n, c), t.reshape(b * n, c)).mean()


def _official_spiky(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return _official_pairwise(p[:, 1:] - p[:, :-1], t[:, 1:] - t[:, :-1])


def test_losses_match_the_official_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 10, 73, generator=g), torch.randn(3, 10, 73, generator=g)
    pose = torch.cat([(pred - target)[..., :3], (pred - target)[..., 67:70]], -1).abs().mean()
    expected = (
        _official_pairwise(pred[..., 3:67], target[..., 3:67])
        + _official_pairwise(pred[..., 70:], target[..., 70:])
        + pose
        + _official_spiky(pred[..., 70:], target[..., 70:])
    )
    torch.testing.assert_close(paper_loss(pred, target), expected, atol=1e-5, rtol=1e-5)
    weights = {"angle": (1, 1), "exp": (1, 0.001), "trans": (1, 1), "crop": (1, 1)}
    groups = {"angle": C.ANGLE, "exp": C.EXP, "trans": C.TRANS, "crop": C.CROP}
    base = sum(
        w * _official_pairwise(pred[..., groups[k]], target[..., groups[k]])
        + ws * _official_spiky(pred[..., groups[k]], target[..., groups[k]])
        for k, (w, ws) in weights.items()
    )
    torch.testing.assert_close(baseline_loss(pred, target), base, atol=1e-5, rtol=1e-5)


def test_windows_cover_every_frame() -> None:
    data = FakeDataset(n_clips=(3, 1, 1), length=40)
    from bench.train import load_clips

    clips = load_clips(data, "train", "talking", data.norm_stats())
    wins = windows(clips, clip_len=16, stride=10)
    for i, clip in enumerate(clips):
        covered: set[int] = set()
        for j, s, n in wins:
            if j == i:
                assert n == 16 and s >= 0 and s + n <= len(clip.coeffs)
                covered.update(range(s, s + n))
        assert covered == set(range(len(clip.coeffs)))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0]


def test_training_smoke_is_deterministic_and_writes_a_loadable_checkpoint(
    tiny_data: FakeDataset, tmp_path: Path
) -> None:
    store_a, store_b = CheckpointStore(tmp_path / "a"), CheckpointStore(tmp_path / "b")
    res = train(tiny_data, TINY, store=store_a, progress=False)
    again = train(tiny_data, TINY, store=store_b, progress=False)
    other = train(tiny_data, replace(TINY, seed=1), store=store_a, progress=False)
    wa, wb, wo = _weights(res.best), _weights(again.best), _weights(other.best)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "same seed must give bit-identical weights"
    assert not all(torch.equal(wa[k], wo[k]) for k in wa)

    # store layout, snapshots and sidecar
    key = run_key(tiny_data, TINY)
    assert res.best == store_a.best(key) and store_a.is_done(key)
    assert res.best.parent.relative_to(store_a.root).parts[:2] == ("lstm", "fake")
    assert len(res.snapshots) == 2 and store_a.snapshots(key) == res.snapshots
    _, meta = load_checkpoint(res.best)
    assert meta["model"] == {"arch": "lstm", "audio_dim": 45, "options": {}}
    assert len(meta["norm"]["coeff_mean"]) == 73 and meta["train"]["seed"] == 0
    assert meta["train"]["lr"] == 5e-3 and meta["train"]["weight_decay"] == 0.05
    assert meta["metrics"]["val_loss"] == min(h["val_loss"] for h in meta["run"]["history"])
    assert {"torch", "headbench"} <= set(meta["versions"])
    # the official layout: the same keys as the Megvii state dict
    from bench_plugins.drivers.models import RegularisedLSTM

    assert set(wa) == set(RegularisedLSTM().state_dict())

    from bench_plugins.drivers.neural import NeuralDriver

    sample = tiny_data.samples("test", "talking")[0]
    driver = NeuralDriver("lstm", res.best)
    out = driver.predict(DriverBatch(audio=sample.audio_features()[None], init=sample.gt_coeffs()[None, 0]))  # type: ignore[index]
    assert out.shape == (1, sample.n_frames, 73) and torch.isfinite(out).all()


def test_config_hash_changes_with_recipe_and_data(tiny_data: FakeDataset) -> None:
    k = run_key(tiny_data, TINY)
    assert run_key(tiny_data, replace(TINY, seed=3)).config_hash == k.config_hash
    assert run_key(tiny_data, replace(TINY, epochs=3)).config_hash != k.config_hash
    assert run_key(FakeDataset(n_clips=(3, 2, 2), length=24, seed=1), TINY).config_hash != k.config_hash
    with pytest.raises(ConfigError, match="trainable"):
        TrainConfig(arch="static").resolved()


def test_smaller_model_keeps_the_official_keys_and_loads_back(tiny_data: FakeDataset, tmp_path: Path) -> None:
    """--hidden/--width shrink the shapes, not the key layout; the sidecar rebuilds that size."""
    from bench_plugins.drivers.models import RegularisedLSTM
    from bench_plugins.drivers.neural import NeuralDriver

    cfg = replace(TINY, epochs=1, hidden=8, width=16)
    assert run_key(tiny_data, cfg).config_hash != run_key(tiny_data, TINY).config_hash
    res = train(tiny_data, cfg, store=CheckpointStore(tmp_path), progress=False)
    weights = _weights(res.best)
    official = RegularisedLSTM().state_dict()
    assert set(weights) == set(official)
    assert weights["audio_to_face.fusion.0.weight"].shape == (16, 45 + 73)
    assert weights["audio_to_face.lstm_layers.weight_hh_l0"].shape == (4 * 8, 8)
    assert weights["dynam_3dmm_fc.weight"].shape == (73, 2 * 8)
    driver = NeuralDriver("lstm", res.best)
    assert {k: v.shape for k, v in driver.model.state_dict().items()} == {k: v.shape for k, v in weights.items()}
    with pytest.raises(ConfigError):
        TrainConfig(hidden=0).resolved()


def test_listener_trains_with_attitude(tiny_data: FakeDataset, tmp_path: Path) -> None:
    cfg = replace(TINY, arch="vico-listener", attitude=True, epochs=1, snapshots=1)
    res = train(tiny_data, cfg, store=CheckpointStore(tmp_path), progress=False)
    state, meta = load_checkpoint(res.best)
    assert "fusion.attitude_embedding.weight" in state and meta["model"]["options"] == {"attitude": True}


def _serve_dataset(monkeypatch: pytest.MonkeyPatch, data: FakeDataset) -> Any:
    """Make ``bench.load("dataset", ...)`` return ``data``; returns the real ``bench.load``."""
    import bench

    real_load = bench.load
    monkeypatch.setattr(bench, "load", lambda kind, name, **o: data if kind == "dataset" else real_load(kind, name, **o))
    return real_load


def test_cli_listener_options_reach_the_sidecar_keys_and_command(
    tiny_data: FakeDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bench_home: Path
) -> None:
    """--residual/--speaker-motion/--weight-decay: recorded (so loading rebuilds them), official keys."""
    from bench_plugins.drivers.models import VicoListener

    from bench.cli import main

    real_load = _serve_dataset(monkeypatch, tiny_data)
    export = tmp_path / "shipped"
    main(["train", "--driver", "vico-listener", "--dataset", "fake", "--epochs", "1", "--batch-size", "4",
          "--clip-len", "16", "--stride", "8", "--residual", "--speaker-motion", "--weight-decay", "0.5",
          "--no-progress", "--export", str(export)])
    entry = json.loads((export / "manifest.json").read_text())["drivers"]["vico-listener"]
    assert "--residual" in entry["command"] and "--speaker-motion" in entry["command"]
    assert "--weight-decay 0.5" in entry["command"]
    state, meta = load_checkpoint(export / entry["files"][0])
    assert meta["model"]["options"] == {"residual": True, "speaker_motion": True}
    assert meta["train"]["weight_decay"] == 0.5
    assert set(state) == set(VicoListener().state_dict())
    driver = real_load("driver", f"vico-listener:{export / entry['files'][0]}")
    assert driver.model.residual and driver.model.speaker_motion
    # the defaults leave the run key as it was; the options change it; they are listener-only
    base = replace(TINY, arch="vico-listener")
    assert run_key(tiny_data, replace(base, residual=True)).config_hash != run_key(tiny_data, base).config_hash
    assert run_key(tiny_data, replace(base, speaker_motion=True)).config_hash != run_key(tiny_data, base).config_hash
    for bad in (replace(TINY, residual=True), replace(TINY, speaker_motion=True)):
        with pytest.raises(ConfigError, match="vico-listener option"):
            bad.resolved()


def test_ensemble_training_resumes_and_selects_by_validation(
    tiny_data: FakeDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path)
    cfg = replace(TINY, epochs=1, snapshots=1)
    first = train_many(tiny_data, cfg, [0, 1], store=store, progress=False)

    import bench.train as T

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("finished seeds must not be retrained")

    monkeypatch.setattr(T, "train", no_training)
    again = T.train_many(tiny_data, cfg, [0, 1], store=store, progress=False)
    assert again == first
    best = T.select_best([*first, (7, Path("x"), -1.0)], 2)
    assert best[0][0] == 7 and best[1] == min(first, key=lambda r: r[2])


def test_cli_trains_an_ensemble_and_exports_it(
    tiny_data: FakeDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bench_home: Path
) -> None:
    from bench.cli import main

    real_load = _serve_dataset(monkeypatch, tiny_data)
    export = tmp_path / "shipped"
    args = ["train", "--driver", "lstm-ens5", "--dataset", "fake", "--seeds", "2", "--epochs", "1",
            "--batch-size", "4", "--clip-len", "16", "--stride", "8", "--no-progress", "--export", str(export)]
    main(args)
    manifest = json.loads((export / "manifest.json").read_text())
    entry = manifest["drivers"]["lstm-ens5"]
    assert len(entry["files"]) == 2 and "--seeds 2" in entry["command"]
    assert all((export / f).is_file() and (export / f).with_suffix(".json").is_file() for f in entry["files"])
    _state, meta = load_checkpoint(export / entry["files"][0])
    assert meta["stored_dtype"] == "float16"
    listing = next((bench_home / "checkpoints" / "lstm-ens5" / "fake").rglob("selection.json"))
    ens = real_load("driver", f"lstm-ens5:{listing}")
    assert len(ens.members) == 2


@pytest.mark.slow
def test_lstm_learns_what_static_cannot(tmp_path: Path) -> None:
    data = FakeDataset(n_clips=(16, 3, 3), length=60)
    cfg = TrainConfig(arch="lstm", epochs=30, batch_size=8, clip_len=30, stride=15)
    res = train(data, cfg, store=CheckpointStore(tmp_path), progress=False)
    from bench_plugins.drivers.neural import NeuralDriver

    driver = NeuralDriver("lstm", res.best)
    err_lstm = err_static = 0.0
    for s in data.samples("test", "talking"):
        gt = s.gt_coeffs()
        assert gt is not None
        out = driver.predict(DriverBatch(audio=s.audio_features()[None], init=gt[None, 0]))[0]
        err_lstm += float((out[1:] - gt[1:]).abs().mean())
        err_static += float((gt[:1] - gt[1:]).abs().mean())
    assert err_lstm < 0.85 * err_static
