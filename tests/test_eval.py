"""`bench eval`: scores of external videos against independent reimplementations of the
official formulas (piq, pytorch-fid), the results store, input problems, GT caches."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from official_decode import cv2_frames

from bench import evaluate, video

SIZE = 64
N_FRAMES = 10
UUIDS = ("u1", "u2", "u3")


def _gt_clip(seed: int) -> torch.Tensor:
    """(N,3,SIZE,SIZE) smooth moving colour patterns in [0,1] (H.264 keeps them well)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(N_FRAMES, 3, 6, 6, generator=gen)
    return torch.nn.functional.interpolate(low, size=(SIZE, SIZE), mode="bicubic").clamp(0, 1)


def _pred_clip(seed: int) -> torch.Tensor:
    gt = _gt_clip(seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    noise = torch.nn.functional.interpolate(torch.randn(N_FRAMES, 3, 16, 16, generator=gen), size=(SIZE, SIZE))
    return (gt + 0.08 * noise).clamp(0, 1)


def _make(root: Path, clips: dict[str, torch.Tensor], role: str = "speaker") -> Path:
    for uuid, frames in clips.items():
        video.write_video(root / f"{uuid}.{role}.mp4", [frames], fps=30)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("eval")
    gt = _make(base / "gt" / "videos", {u: _gt_clip(i) for i, u in enumerate(UUIDS[:2])}).parent
    pred = _make(base / "pred", {u: _pred_clip(i) for i, u in enumerate(UUIDS[:2])})
    return pred, gt


def test_psnr_ssim_match_piq_on_decoded_frames(folders: tuple[Path, Path], bench_home: Path) -> None:
    import piq

    pred, gt = folders
    res = evaluate.evaluate_videos(pred, gt, "talking", metrics=["psnr", "ssim"], n_resamples=0)
    psnrs, ssims = [], []
    for uuid in UUIDS[:2]:
        p = cv2_frames(pred / f"{uuid}.speaker.mp4")
        g = cv2_frames(gt / "videos" / f"{uuid}.speaker.mp4")
        psnrs.append(piq.psnr(p, g, data_range=1.0, reduction="none"))
        ssims.append(piq.ssim(p, g, data_range=1.0, reduction="none"))
    # the challenge pools over all frames of all videos
    assert res.values["psnr"] == pytest.approx(float(torch.cat(psnrs).double().mean()), abs=0.01)
    assert res.values["ssim"] == pytest.approx(float(torch.cat(ssims).double().mean()), abs=1e-4)
    assert res.n_clips == 2 and res.frames == 2 * N_FRAMES and res.n_failed == 0


@pytest.mark.slow  # InceptionV3 on CPU: minutes on a shared 2-core machine
def test_fid_matches_pytorch_fid(folders: tuple[Path, Path], bench_home: Path) -> None:
    from bench_plugins.metrics.inception import fid_weights_path
    from pytorch_fid.fid_score import calculate_frechet_distance
    from pytorch_fid.inception import InceptionV3

    if not fid_weights_path().is_file():
        pytest.skip("pytorch-fid weights not in the torch hub cache")
    pred, gt = folders
    res = evaluate.evaluate_videos(pred, gt, "talking", metrics=["fid"], n_resamples=0)
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()

    def feats(folder: Path) -> np.ndarray:
        out = []
        with torch.no_grad():
            for uuid in UUIDS[:2]:
                out.append(model(cv2_frames(folder / f"{uuid}.speaker.mp4"))[0].squeeze(-1).squeeze(-1))
        return torch.cat(out).double().numpy()

    a, b = feats(pred), feats(gt / "videos")
    ref = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert res.values["fid"] == pytest.approx(float(ref), rel=1e-3)


def test_missing_and_truncated_listed_once_exit_2(tmp_path: Path, bench_home: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main

    gt = _make(tmp_path / "gt", {u: _gt_clip(i) for i, u in enumerate(UUIDS)})
    pred = _make(tmp_path / "pred", {"u1": _pred_clip(0), "u3": _pred_clip(2)[: N_FRAMES - 3]})  # u2 missing
    args = ["eval", "--pred", str(pred), "--gt", str(gt), "--task", "talking", "--metrics", "psnr",
            "--store", str(tmp_path / "r.db"), "--bootstrap", "0"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "u2.speaker.mp4" in err and "prediction missing" in err
    assert "u3.speaker.mp4" in err and f"{N_FRAMES - 3} frames, ground truth has {N_FRAMES}" in err
    assert "2 problem(s)" in err
    assert not (tmp_path / "r.db").exists()

    main([*args, "--allow-partial"])
    out = capsys.readouterr().out
    assert "psnr" in out and "1 clips" in out
    from bench.store import results

    cells = results(tmp_path / "r.db")["cells"]
    assert len(cells) == 1 and cells.iloc[0]["psnr"] > 10
    assert json.loads(cells.iloc[0]["spec"])["eval"]["uuids"] == ["u1"]


def test_cell_in_store_beside_run_cells(folders: tuple[Path, Path], tmp_path: Path, bench_home: Path) -> None:
    from bench.store import results

    pred, gt = folders
    db = tmp_path / "r.db"
    res = evaluate.evaluate_videos(pred, gt, "talking", name="mymethod", metrics=["psnr", "ssim"],
                                   store=db, n_resamples=200)
    tables = results(db)
    cell = tables["cells"].set_index("cell_id").loc[res.cell_id]
    assert cell["driver"] == "mymethod" and cell["renderer"] == "mymethod" and cell["status"] == "finished"
    spec = json.loads(cell["spec"])
    assert spec["driver"]["options"]["pred_hash"] == evaluate._folder_hash(
        [pred / f"{u}.speaker.mp4" for u in UUIDS[:2]])
    assert cell["psnr"] == pytest.approx(res.values["psnr"])
    summ = tables["summaries"].set_index(["cell_id", "key"]).loc[(res.cell_id, "psnr")]
    assert summ["ci_low"] <= res.values["psnr"] <= summ["ci_high"]
    assert summ["n_clips"] == 2
    clips = tables["clips"][tables["clips"]["cell_id"] == res.cell_id]
    assert sorted(clips["uuid"]) == list(UUIDS[:2])
    # per-clip psnr: that clip's frames only, the same formula
    import piq

    p = cv2_frames(pred / "u1.speaker.mp4")
    g = cv2_frames(gt / "videos" / "u1.speaker.mp4")
    u1 = float(clips.set_index("uuid").loc["u1", "psnr"])
    assert u1 == pytest.approx(float(piq.psnr(p, g, data_range=1.0, reduction="none").double().mean()), abs=0.01)
    # a changed prediction folder is another cell; the same folder again the same cell
    again = evaluate.evaluate_videos(pred, gt, "talking", name="mymethod", metrics=["psnr", "ssim"],
                                     store=db, n_resamples=200)
    assert again.cell_id == res.cell_id and again.values == res.values


def test_coefficient_metrics_skipped_with_reason(folders: tuple[Path, Path], bench_home: Path) -> None:
    pred, gt = folders
    res = evaluate.evaluate_videos(pred, gt, "talking", metrics=["psnr", "expfd"], n_resamples=0)
    assert "expfd" not in res.values and "psnr" in res.values
    assert any(s.startswith("expfd") and "source=video" in s for s in res.skipped)


@pytest.mark.slow
def test_second_evaluation_reuses_gt_fid_features(folders: tuple[Path, Path], tmp_path: Path,
                                                 bench_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench_plugins.metrics import fid as fid_module
    from bench_plugins.metrics.inception import fid_weights_path

    if not fid_weights_path().is_file():
        pytest.skip("pytorch-fid weights not in the torch hub cache")
    pred, gt = folders
    calls: list[int] = []
    original = fid_module.FID.features

    def counting(self: object, frames: torch.Tensor) -> torch.Tensor:
        calls.append(int(frames.shape[0]))
        return original(self, frames)

    monkeypatch.setattr(fid_module.FID, "features", counting)
    first = evaluate.evaluate_videos(pred, gt, "talking", metrics=["fid"], n_resamples=0)
    assert sum(calls) == 2 * 2 * N_FRAMES  # generated + ground truth
    calls.clear()
    other = _make(tmp_path / "other", {u: _pred_clip(i + 7) for i, u in enumerate(UUIDS[:2])})
    second = evaluate.evaluate_videos(other, gt, "talking", metrics=["fid"], n_resamples=0)
    assert sum(calls) == 2 * N_FRAMES  # ground-truth features came from the cache
    assert second.values["fid"] != first.values["fid"]


def test_split_csv_selects_clips(folders: tuple[Path, Path], tmp_path: Path, bench_home: Path) -> None:
    pred, gt = folders
    split = tmp_path / "one.csv"
    with split.open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["video_id", "uuid"])
        w.writerow(["v", "u2"])
    res = evaluate.evaluate_videos(pred, gt, "talking", split_csv=split, metrics=["psnr"], n_resamples=0)
    assert res.n_clips == 1 and res.spec["split"] == "one"
    assert res.pairing.warnings and "extra prediction" in res.pairing.warnings[0].problem


def test_videos_renderer_streams_the_clip_file(folders: tuple[Path, Path], tmp_path: Path) -> None:
    from types import SimpleNamespace

    from bench_plugins.renderers.videos import VideosRenderer

    import bench
    from bench.errors import InputError

    pred, _ = folders
    renderer = bench.load("renderer", f"videos:{pred}", batch_size=4)
    sample = SimpleNamespace(uuid="u2", role="speaker")
    source = torch.zeros(3, SIZE, SIZE)
    batches = list(renderer.render(source, torch.zeros(N_FRAMES, 73), sample=sample))
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), cv2_frames(pred / "u2.speaker.mp4"))
    with pytest.raises(InputError, match=f"clip has {N_FRAMES + 2}"):  # length must match the clip
        list(renderer.render(source, torch.zeros(N_FRAMES + 2, 73), sample=sample))
    with pytest.raises(InputError, match="no video for clip"):
        list(renderer.render(source, torch.zeros(N_FRAMES, 73), sample=SimpleNamespace(uuid="zz", role="speaker")))
    # the cell spec hashes the folder's videos: other files, other cell
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in pred.glob("*.mp4"):
        (copy / p.name).write_bytes(p.read_bytes())
    before = VideosRenderer.spec_content(f"videos:{copy}", {})
    assert before == VideosRenderer.spec_content("videos", {"root": str(pred)})
    _make(copy, {"u1": _pred_clip(5)})
    assert VideosRenderer.spec_content(f"videos:{copy}", {}) != before
