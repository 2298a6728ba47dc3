"""`bench eval` input checks: every problem reported at once, warnings kept apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench import evaluate, video
from bench.errors import ConfigError


def _frames(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 4, 4, generator=gen)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear").repeat(1, 3, 1, 1)


def _write(path: Path, n: int, size: int = 32, fps: int = 30) -> None:
    video.write_video(path, [_frames(n, size)], fps=fps)


def _write_with_audio(path: Path, n: int) -> None:
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width = vs.height = 32
        vs.pix_fmt = "yuv420p"
        aus = out.add_stream("aac", rate=44100)
        for image in video.to_uint8(_frames(n)):
            for packet in vs.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        samples = np.zeros((1, 1024), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 44100
        for packet in aus.encode(frame):
            out.mux(packet)
        for packet in aus.encode():
            out.mux(packet)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt" / "videos", tmp_path / "pred"
    for uuid in ("a", "b", "c", "d", "e"):
        _write(gt / f"{uuid}.speaker.mp4", 12)
    _write(pred / "a.speaker.mp4", 12)  # good
    _write(pred / "b.speaker.mp4", 9)  # truncated
    _write(pred / "c.speaker.mp4", 12, size=48)  # wrong size
    # d missing
    _write_with_audio(pred / "e.speaker.mp4", 12)  # audio track: warning only
    _write(pred / "zzz.speaker.mp4", 12)  # extra
    (pred / "a.listener.mp4").write_bytes(b"")  # other role: ignored for talking
    return pred, tmp_path / "gt"


def test_all_problems_reported_together(folders: tuple[Path, Path]) -> None:
    pred, gt = folders
    pairing = evaluate.pair_videos(pred, gt, "talking")
    assert [p.uuid for p in pairing.pairs] == ["a", "e"]
    fatal = {p.path.name: p.problem for p in pairing.fatal}
    assert set(fatal) == {"b.speaker.mp4", "c.speaker.mp4", "d.speaker.mp4", "zzz.speaker.mp4"}
    assert "9 frames, ground truth has 12" in fatal["b.speaker.mp4"]
    assert "48x48" in fatal["c.speaker.mp4"]
    assert fatal["d.speaker.mp4"] == "prediction missing"
    assert [w.path.name for w in pairing.warnings] == ["e.speaker.mp4"]
    text = pairing.report()
    assert text.startswith("4 problem(s) found") and "audio track" in text


def test_split_csv_restricts_uuids(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = folders
    split = tmp_path / "test.csv"
    split.write_text("video_id,uuid,speaker_id,listener_id\n0,a,s,l\n1,zzz,s,l\n")
    pairing = evaluate.pair_videos(pred, gt, "talking", split)
    assert [p.uuid for p in pairing.pairs] == ["a"]
    assert {p.path.name: p.problem for p in pairing.fatal} == {
        "zzz.speaker.mp4": "ground-truth video missing"}
    # predictions outside the split are reported, not fatal
    assert {p.path.name for p in pairing.warnings} == {"b.speaker.mp4", "c.speaker.mp4", "e.speaker.mp4"}
    with pytest.raises(ConfigError):
        evaluate.pair_videos(pred, gt, "singing")


def test_opencv_and_pyav_decoders_agree_closely(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    _write(path, 20)
    a = torch.cat(list(evaluate.read_frames(path, 8, "opencv")))
    b = torch.cat(list(evaluate.read_frames(path, 8, "pyav")))
    assert a.shape == b.shape == (20, 3, 32, 32)
    diff = evaluate.decoder_difference(path)
    assert diff.frames == 20
    assert diff.max_abs_levels <= 3.0  # same bitstream; colour conversion rounding only
