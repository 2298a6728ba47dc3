"""Official ViCo file formats: round trips, the official layout read with scipy/torch
directly, and every malformed-input case."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from bench.data import formats
from bench.data.formats import SplitRow
from bench.errors import InputError

RNG = np.random.default_rng(0)


def test_recon_mat_official_layout(tmp_path: Path) -> None:
    coeff = RNG.normal(size=(7, 257))
    params = RNG.normal(size=(7, 5))
    path = tmp_path / "a.speaker.mat"
    formats.write_recon_mat(path, coeff, params)
    raw = scipy.io.loadmat(path)  # what Deep3DFaceRecon / the official scripts read
    assert raw["coeff"].dtype == np.float32 and raw["coeff"].shape == (7, 257)
    assert raw["transform_params"].dtype == np.float32 and raw["transform_params"].shape == (7, 5)
    np.testing.assert_allclose(raw["coeff"], coeff.astype(np.float32))
    got_coeff, got_params = formats.read_recon_mat(path)
    np.testing.assert_array_equal(got_coeff, raw["coeff"])
    np.testing.assert_array_equal(got_params, raw["transform_params"])
    # a .mat written by scipy the way Deep3DFaceRecon does (float64 here) reads too
    scipy.io.savemat(tmp_path / "b.mat", {"coeff": coeff, "transform_params": params, "extra": 1})
    np.testing.assert_allclose(formats.read_recon_mat(tmp_path / "b.mat")[0], coeff, rtol=1e-6)


def test_video_feats_official_layout(tmp_path: Path) -> None:
    coeff = RNG.normal(size=(6, 257)).astype(np.float32)
    params = RNG.normal(size=(6, 5)).astype(np.float32)
    content = formats.video_feats_from_recon(coeff, params)
    # independent restatement of the official rearrangement (SPEC 2)
    np.testing.assert_array_equal(content["angle.exp.trans"], np.concatenate(
        [coeff[:, 224:227], coeff[:, 80:144], coeff[:, 254:257], params[:, -3:]], axis=1))
    np.testing.assert_array_equal(content["id.gamma.tex"], np.concatenate(
        [coeff[:, 0:80], coeff[:, 227:254], coeff[:, 144:224]], axis=1))
    path = tmp_path / "a.listener.bin"
    formats.write_video_feats(path, content["angle.exp.trans"], content["id.gamma.tex"])
    raw = torch.load(path, weights_only=False)  # as the official training code loads it
    assert set(raw) == {"angle.exp.trans", "id.gamma.tex"}
    assert isinstance(raw["angle.exp.trans"], np.ndarray)
    assert raw["angle.exp.trans"].dtype == np.float32 and raw["id.gamma.tex"].shape == (6, 187)
    got = formats.read_video_feats(path)
    np.testing.assert_array_equal(got["angle.exp.trans"], content["angle.exp.trans"])
    # a file saved by plain torch.save (float64, official key order) reads weights-only
    torch.save({"id.gamma.tex": content["id.gamma.tex"].astype(np.float64),
                "angle.exp.trans": content["angle.exp.trans"].astype(np.float64)}, tmp_path / "o.bin")
    np.testing.assert_allclose(formats.read_video_feats(tmp_path / "o.bin")["angle.exp.trans"],
                               content["angle.exp.trans"], rtol=1e-6)


def test_mean_std_official_layouts(tmp_path: Path) -> None:
    dyn = torch.from_numpy(RNG.normal(size=(50, 73)))
    fixed = torch.from_numpy(RNG.normal(size=(50, 187)))
    audio = torch.from_numpy(RNG.normal(size=(50, 45)))
    # files exactly as the official statistics script writes them
    torch.save({"angle.exp.trans": {"mean": dyn.mean(0), "std": dyn.std(0)},
                "id.gamma.tex": {"mean": fixed.mean(0), "std": fixed.std(0)}}, tmp_path / "v.bin")
    torch.save({"mean": audio.mean(0), "std": audio.std(0)}, tmp_path / "a.bin")
    video = formats.read_mean_std(tmp_path / "v.bin")
    np.testing.assert_allclose(video["angle.exp.trans"]["std"], dyn.std(0).numpy(), rtol=1e-6)
    aud = formats.read_mean_std(tmp_path / "a.bin")
    assert set(aud) == {formats.AUDIO_KEY}
    np.testing.assert_allclose(aud["audio"]["mean"], audio.mean(0).numpy(), rtol=1e-5, atol=1e-7)
    # our writer produces the same structure (torch tensors, flat for audio)
    formats.write_mean_std(tmp_path / "v2.bin", video)
    formats.write_mean_std(tmp_path / "a2.bin", aud)
    raw_v = torch.load(tmp_path / "v2.bin", weights_only=True)
    raw_a = torch.load(tmp_path / "a2.bin", weights_only=True)
    assert set(raw_v) == {"angle.exp.trans", "id.gamma.tex"} and set(raw_a) == {"mean", "std"}
    assert isinstance(raw_a["std"], torch.Tensor) and raw_a["std"].shape == (45,)
    torch.testing.assert_close(raw_v["angle.exp.trans"]["mean"], dyn.mean(0).float())


def test_split_csv_round_trip_and_header_spaces(tmp_path: Path) -> None:
    rows = [SplitRow("1", "u1", "s1", "l1", "positive"), SplitRow("2", "u2", "s2", "l2", None)]
    formats.write_split_csv(tmp_path / "t.csv", rows)
    assert formats.read_split_csv(tmp_path / "t.csv") == rows
    (tmp_path / "c.csv").write_text("video_id, uuid, speaker_id, listener_id\n3, u3, s, l\n\n")
    assert formats.read_split_csv(tmp_path / "c.csv") == [SplitRow("3", "u3", "s", "l", None)]
    formats.write_split_csv(tmp_path / "n.csv", rows[1:])
    assert (tmp_path / "n.csv").read_text().splitlines()[0] == "video_id,uuid,speaker_id,listener_id"


@pytest.mark.parametrize(("text", "message"), [
    ("video_id,uuid,speaker_id\n1,u,s\n", "missing column"),
    ("video_id,uuid,speaker_id,listener_id\n1,u,s\n", "row 2"),
    ("video_id,uuid,speaker_id,listener_id,attitude\n1,u,s,l,happy\n", "unknown attitude 'happy'"),
    ("video_id,uuid,speaker_id,listener_id\n1,,s,l\n", "empty field"),
    ("video_id,uuid,speaker_id,listener_id\n1,u,s,l\n2,u,s,l\n", "duplicate uuid"),
    ("", "empty"),
])
def test_split_csv_bad_rows(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        formats.read_split_csv(path)
    assert info.value.path == path and "bad.csv" in str(info.value)


def test_bad_mat_files(tmp_path: Path) -> None:
    p = tmp_path / "x.mat"
    with pytest.raises(InputError, match="not found"):
        formats.read_recon_mat(p)
    scipy.io.savemat(p, {"coeff": np.zeros((4, 256)), "transform_params": np.zeros((4, 5))})
    with pytest.raises(InputError, match=r"\(T,257\)"):
        formats.read_recon_mat(p)
    scipy.io.savemat(p, {"coeff": np.zeros((4, 257)), "transform_params": np.zeros((3, 5))})
    with pytest.raises(InputError, match="3 rows, expected 4"):
        formats.read_recon_mat(p)
    bad = np.zeros((4, 257))
    bad[2, 7] = np.nan
    scipy.io.savemat(p, {"coeff": bad, "transform_params": np.zeros((4, 5))})
    with pytest.raises(InputError, match="NaN.*frame 2"):
        formats.read_recon_mat(p)
    scipy.io.savemat(p, {"coeff": np.zeros((4, 257))})
    with pytest.raises(InputError, match="missing key 'transform_params'"):
        formats.read_recon_mat(p)
    formats.write_recon_mat(p, np.zeros((4, 257)), np.zeros((4, 5)))
    p.write_bytes(p.read_bytes()[:100])  # truncated
    with pytest.raises(InputError, match=r"x\.mat"):
        formats.read_recon_mat(p)
    with pytest.raises(InputError, match="NaN"):
        formats.write_recon_mat(tmp_path / "y.mat", bad, np.zeros((4, 5)))


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_bad_bin_files(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    torch.save({"exp": np.zeros((3, 64), np.float32)}, p)
    with pytest.raises(InputError, match="angle.exp.trans"):
        formats.read_video_feats(p)
    torch.save({"angle.exp.trans": np.zeros((3, 70), np.float32)}, p)
    with pytest.raises(InputError, match=r"\(T,73\)"):
        formats.read_video_feats(p)
    nan = np.zeros((3, 73), np.float32)
    nan[1, 0] = np.nan
    torch.save({"angle.exp.trans": nan}, p)
    with pytest.raises(InputError, match="NaN"):
        formats.read_video_feats(p)
    torch.save({"angle.exp.trans": np.zeros((3, 73)), "id.gamma.tex": np.zeros((2, 187))}, p)
    with pytest.raises(InputError, match="2 rows, expected 3"):
        formats.read_video_feats(p)
    formats.write_video_feats(p, np.zeros((3, 73)), np.zeros((3, 187)))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(InputError, match=r"x\.bin"):
        formats.read_video_feats(p)
    # code in a pickle is refused by the weights-only loader, not executed
    with open(p, "wb") as handle:
        pickle.dump({"angle.exp.trans": _Evil()}, handle, protocol=2)
    with pytest.raises(InputError, match="not a loadable"):
        formats.read_video_feats(p)
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        formats.read_video_feats(p)


def test_bad_mean_std(tmp_path: Path) -> None:
    p = tmp_path / "m.bin"
    torch.save({"angle.exp.trans": {"mean": torch.zeros(73)}}, p)
    with pytest.raises(InputError, match="'mean' and 'std'"):
        formats.read_mean_std(p)
    torch.save({"mean": torch.zeros(45), "std": torch.ones(44)}, p)
    with pytest.raises(InputError, match="equal length"):
        formats.read_mean_std(p)
    torch.save({"mean": torch.full((45,), float("nan")), "std": torch.ones(45)}, p)
    with pytest.raises(InputError, match="NaN"):
        formats.read_mean_std(p)
