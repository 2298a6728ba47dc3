"""`bench eval` on vico-mini: it reproduces `bench run` cells, the `videos` renderer
feeds an external method through the harness, OpenCV and PyAV decode alike."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from bench import evaluate


@pytest.fixture(scope="module")
def vico_root() -> Path:
    from bench.data.synth import ensure_vico_mini

    return ensure_vico_mini(progress=False)


def _summary(db: Path) -> dict[str, dict[str, float]]:
    """{driver|renderer: {metric key: value}} of every finished cell."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT c.driver, c.renderer, s.key, s.value FROM summaries s "
                           "JOIN cells c ON c.id = s.cell_id WHERE c.status='finished'").fetchall()
    finally:
        con.close()
    out: dict[str, dict[str, float]] = {}
    for driver, renderer, key, value in rows:
        out.setdefault(f"{driver}|{renderer}", {})[key] = value
    return out


def _first_uuids(root: Path, n: int, out: Path) -> Path:
    with (root / "test.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:n]
    with out.open("w", newline="") as handle:
        w = csv.DictWriter(handle, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


@pytest.mark.slow  # three passes over two 256x256 clips: minutes on a shared 2-core CPU
def test_eval_reproduces_bench_run_and_videos_renderer(vico_root: Path, tmp_path: Path) -> None:
    from bench.cli import main

    db, vids = tmp_path / "r.db", tmp_path / "vids"
    common = ["--driver", "static", "--limit", "2", "--metrics", "psnr,ssim", "--store", str(db),
              "--bootstrap", "0", "--device", "cpu", "-q"]
    main(["run", "--renderer", "rig", "--save-videos", str(vids), *common])
    run = _summary(db)["static|rig"]
    split = _first_uuids(vico_root, 2, tmp_path / "two.csv")
    assert sorted(p.name.split(".")[0] for p in vids.glob("*.mp4")) == sorted(
        r["uuid"] for r in csv.DictReader(split.open()))

    # The saved videos went through H.264 (crf 12): equal within codec precision.
    ev = evaluate.evaluate_videos(vids, vico_root, "talking", split_csv=split, name="rig-videos",
                                  metrics=["psnr", "ssim"], store=db, n_resamples=0, decoder="pyav")
    assert ev.values["psnr"] == pytest.approx(run["psnr"], abs=0.1)
    assert ev.values["ssim"] == pytest.approx(run["ssim"], abs=3e-3)
    assert _summary(db)["rig-videos|rig-videos"]["psnr"] == pytest.approx(ev.values["psnr"])

    # The same videos through the harness's `videos` renderer (OpenCV; PyAV and OpenCV
    # decode these files identically, see below) give the eval numbers exactly.
    main(["run", "--renderer", "videos:" + str(vids), *common])
    (through_harness,) = [v for k, v in _summary(db).items() if k.startswith("static|videos:")]
    assert through_harness["psnr"] == pytest.approx(ev.values["psnr"], abs=1e-6)
    assert through_harness["ssim"] == pytest.approx(ev.values["ssim"], abs=1e-7)


@pytest.mark.slow
def test_decoders_agree_on_vico_mini(vico_root: Path, tmp_path: Path) -> None:
    """Decoder parity, measured: PyAV vs OpenCV (the official decoder) on every test video,
    and the PSNR/SSIM differences they cause (bounds: 0.01 dB, 1e-4)."""
    split = vico_root / "test.csv"
    uuids = [r["uuid"] for r in csv.DictReader(split.open(newline=""))]
    report = []
    for uuid in uuids:
        d = evaluate.decoder_difference(vico_root / "videos" / f"{uuid}.speaker.mp4")
        report.append({"uuid": uuid, "max": d.max_abs_levels, "mean": d.mean_abs_levels})
        assert d.max_abs_levels <= 2.0 and d.mean_abs_levels < 0.1
    # prediction: the listener video scored as if it were the speaker (a real, imperfect pair)
    pred = tmp_path / "pred"
    pred.mkdir()
    for uuid in uuids:
        (pred / f"{uuid}.speaker.mp4").symlink_to(vico_root / "videos" / f"{uuid}.listener.mp4")
    scores = {}
    for decoder in evaluate.DECODERS:
        scores[decoder] = evaluate.evaluate_videos(pred, vico_root, "talking", split_csv=split,
                                                   metrics=["psnr", "ssim"], n_resamples=0,
                                                   decoder=decoder).values
    print(json.dumps({"videos": report, "scores": scores}))
    assert abs(scores["opencv"]["psnr"] - scores["pyav"]["psnr"]) < 0.01
    assert abs(scores["opencv"]["ssim"] - scores["pyav"]["ssim"]) < 1e-4


@pytest.mark.slow  # dlib on every frame of both videos of a clip
def test_lmd_matches_the_official_formula(vico_root: Path, tmp_path: Path) -> None:
    """LipLMD of `bench eval` vs compute_lmd.py's formula written out here: OpenCV frames,
    dlib's detector (best box; upsampled once if none) and 68-point predictor, then
    mean |pd - gt| over the x and y of points 48-67 of all frames with a face."""
    import importlib.util

    import numpy as np
    from official_decode import cv2_frames_uint8

    split = _first_uuids(vico_root, 1, tmp_path / "one.csv")
    (uuid,) = [r["uuid"] for r in csv.DictReader(split.open(newline=""))]
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / f"{uuid}.speaker.mp4").symlink_to(vico_root / "videos" / f"{uuid}.listener.mp4")
    res = evaluate.evaluate_videos(pred, vico_root, "talking", split_csv=split, metrics=["lmd"],
                                   n_resamples=0)

    dlib = pytest.importorskip("dlib")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        pytest.skip("face_recognition_models is not installed")
    # the package's own locator imports pkg_resources, gone from modern setuptools
    models = Path(next(iter(spec.submodule_search_locations or []))) / "models"
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))

    def landmarks(image: np.ndarray) -> np.ndarray | None:
        for upsample in (0, 1):
            boxes, scores, _ = detector.run(image, upsample, 0.0)
            if len(boxes):
                shape = predictor(image, boxes[int(np.argmax(scores))])
                return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return None

    diffs = []
    gt_frames = cv2_frames_uint8(vico_root / "videos" / f"{uuid}.speaker.mp4")
    pd_frames = cv2_frames_uint8(pred / f"{uuid}.speaker.mp4")
    for pd_image, gt_image in zip(pd_frames, gt_frames, strict=True):
        gt_points, pd_points = landmarks(gt_image), landmarks(pd_image)
        if gt_points is not None and pd_points is not None:
            diffs.append(np.abs(pd_points[48:68] - gt_points[48:68]))
    assert len(diffs) > 0.9 * len(gt_frames)  # vico-mini's faces are found
    assert res.values["lmd"] == pytest.approx(float(np.mean(diffs)), abs=1e-9)
