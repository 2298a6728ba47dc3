"""Planning (cell specs and ids, validation) and the streaming pipeline's numbers."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import harness_fakes as hf
import pytest
import torch
from harness_fakes import CLIPS, plan_args

from bench import harness
from bench.errors import ConfigError, UnknownComponentError
from bench.store import Store

pytest_plugins = ("harness_fixtures",)


def _ids(root: Path, **over: object) -> list[str]:
    return [c.id for c in harness.plan(**plan_args(root, **over)).cells]


def _reference_psnr(clips: list[dict], coeffs_of, post=None) -> float:
    """Pooled PSNR over all frames of all clips, computed directly from the fakes."""
    sse, n = 0.0, 0
    for c in clips:
        s = hf.FakeSample(c["uuid"], "talking", "speaker", c["n_frames"], 30.0, None, c["seed"])
        ref = s.reference_image()
        gen = hf.draw(coeffs_of(s), ref)
        if post is not None:
            gen = post(gen, ref)
        gt = hf.gt_from_drawn(hf.draw(s.gt_coeffs(), ref))
        sse += float(((gen.double() - gt.double()) ** 2).sum())
        n += gen.numel()
    return -10 * math.log10(sse / n + 1e-8)


def test_cell_id_is_hash_of_canonical_spec(fakes: Path) -> None:
    cell = harness.plan(**plan_args(fakes)).cells[0]
    text = json.dumps(cell.spec, sort_keys=True, separators=(",", ":"))
    assert cell.id == hashlib.sha256(text.encode()).hexdigest()[:20]
    assert _ids(fakes) == [cell.id]  # stable across plans
    assert cell.spec["dataset"]["content_hash"] == hashlib.sha256((fakes / "manifest.json").read_bytes()).hexdigest()


def test_cell_id_changes_with_every_field(fakes: Path, tmp_path: Path) -> None:
    w1, w2 = tmp_path / "w1.pt", tmp_path / "w2.pt"
    w1.write_bytes(b"one")
    w2.write_bytes(b"two")
    variants: dict[str, dict[str, Any]] = {
        "base": {},
        "split": {"split": "train"},
        "task": {"task": "listening"},
        "driver": {"drivers": ["static"]},
        "driver_options": {"drivers": ["fake-noisy"], "driver_options": {"fake-noisy": {"scale": 0.5}}},
        "postproc": {"postprocs": ["fake-blend"]},
        "postproc_options": {"postprocs": ["fake-blend"], "postproc_options": {"fake-blend": {"alpha": 0.5}}},
        "renderer_options": {"renderer_options": {"fake-rig": {"batch_size": 3}}},
        "weights1": {"renderer_weights": w1},
        "weights2": {"renderer_weights": w2},
        "metrics": {"metrics": ["fake-psnr"]},
        "metric_options": {"metric_options": {"fake-psnr": {}}, "metrics": ["fake-psnr", "fake-l1"]},
        "seed": {"seed": 1},
        "batch_size": {"batch_size": 5},
        "precision": {"precision": "bf16"},
        "limit": {"limit": 2},
    }
    ids = {k: _ids(fakes, **v)[0] for k, v in variants.items()}
    ids.pop("metric_options")  # empty options are the same cell as none: checked below
    assert len(set(ids.values())) == len(ids), ids
    # renaming a weights file does not change the id; its content does
    w3 = tmp_path / "renamed.pt"
    w3.write_bytes(b"one")
    assert _ids(fakes, renderer_weights=w3) == [ids["weights1"]]
    # dataset content is part of the id
    hf.write_dataset(fakes, [*CLIPS[:-1], {**CLIPS[-1], "n_frames": 12}])
    harness._DATASETS.clear()
    assert _ids(fakes)[0] != ids["base"]


def test_default_weights_content_is_in_the_id(fakes: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    w = tmp_path / "default.pt"
    w.write_bytes(b"first")
    monkeypatch.setenv("FAKE_RIG_WEIGHTS", str(w))
    cell = harness.plan(**plan_args(fakes, renderers=["fake-rig-w"])).cells[0]
    assert cell.spec["renderer"]["weights_sha256"] == hashlib.sha256(b"first").hexdigest()
    w.write_bytes(b"second!")
    assert _ids(fakes, renderers=["fake-rig-w"]) != [cell.id]


def test_component_version_changes_id(fakes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import bench.plugins

    before = _ids(fakes)
    reg = bench.plugins.session().registry
    entry = reg.get("renderer", "fake-rig")
    bumped = dataclasses.replace(entry, spec=dataclasses.replace(entry.spec, version="2"))
    monkeypatch.setitem(reg._entries["renderer"], "fake-rig", bumped)
    assert _ids(fakes) != before


def test_grid_is_cartesian_product(fakes: Path) -> None:
    p = harness.plan(**plan_args(fakes, drivers=["gt", "static", "fake-noisy"],
                                 postprocs=["none", "fake-blend", "fake-blend+fake-dim"]))
    labels = [c.label for c in p.cells]
    assert len(labels) == 9 == len(set(labels))
    assert "static | fake-rig | fake-blend+fake-dim" in labels
    assert len({c.id for c in p.cells}) == 9


def test_postproc_renderer_options_are_planned(fakes: Path) -> None:
    cell = harness.plan(**plan_args(fakes, postprocs=["fake-blend"])).cells[0]
    assert cell.renderer.options == {"padding_mode": "border"}
    assert cell.spec["renderer"]["options"]["padding_mode"] == "border"


def test_planning_validation(fakes: Path) -> None:
    with pytest.raises(UnknownComponentError, match="Did you mean: static"):
        harness.plan(**plan_args(fakes, drivers=["statik"]))
    with pytest.raises(ConfigError, match="warp_mode"):
        harness.plan(**plan_args(fakes, postprocs=["fake-warp"]))
    with pytest.raises(ConfigError, match="does not support task 'listening'"):
        harness.plan(**plan_args(fakes, drivers=["fake-talk-only"], task="listening"))
    with pytest.raises(UnknownComponentError, match="metric"):
        harness.plan(**plan_args(fakes, metrics=["fake-psnr", "nope"]))
    with pytest.raises(ConfigError, match="no split"):
        harness.plan(**plan_args(fakes, split="val"))
    with pytest.raises(ConfigError, match="precision"):
        harness.plan(**plan_args(fakes, precision="fp8"))


def test_default_metrics_skip_unregistered(fakes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(harness.CHALLENGE_METRICS, "talking", ("not-registered", "fake-psnr", "nor-this"))
    p = harness.plan(**plan_args(fakes, metrics=None))
    assert [m["name"] for m in p.cells[0].spec["metrics"]] == ["fake-psnr"]
    assert any(s.startswith("not-registered") for s in p.skipped_metrics)
    monkeypatch.setitem(harness.CHALLENGE_METRICS, "talking", ("not-registered",))
    with pytest.raises(ConfigError, match="no metric"):
        harness.plan(**plan_args(fakes, metrics=None))


def test_values_match_independent_reference(fakes: Path, tmp_path: Path) -> None:
    p = harness.plan(**plan_args(fakes, drivers=["gt", "static"], postprocs=["none", "fake-blend"]))
    out = {o.cell.label: o.summary for o in harness.run_plan(p, tmp_path / "r.db", n_resamples=50)}

    def value(label: str, key: str) -> float:
        return next(m["value"] for m in out[label]["metrics"] if m["key"] == key)

    def gt(s: hf.FakeSample) -> torch.Tensor:
        return s.gt_coeffs()

    def static(s: hf.FakeSample) -> torch.Tensor:
        return s.gt_coeffs()[:1].expand(s.n_frames, -1)

    def blend(gen: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return 0.75 * gen + 0.25 * ref[None]

    assert value("gt | fake-rig | none", "fake-psnr") == pytest.approx(_reference_psnr(CLIPS, gt), abs=1e-5)
    assert value("static | fake-rig | none", "fake-psnr") == pytest.approx(_reference_psnr(CLIPS, static), abs=1e-5)
    assert value("static | fake-rig | fake-blend", "fake-psnr") == pytest.approx(
        _reference_psnr(CLIPS, static, blend), abs=1e-5)
    assert value("gt | fake-rig | none", "fake-l1") == 0.0
    l1 = sum(float((static(s) - s.gt_coeffs()).abs().sum()) for s in (
        hf.FakeSample(c["uuid"], "talking", "speaker", c["n_frames"], 30.0, None, c["seed"]) for c in CLIPS))
    assert value("static | fake-rig | none", "fake-l1") == pytest.approx(
        l1 / (73 * sum(c["n_frames"] for c in CLIPS)), rel=1e-6)
    m = next(m for m in out["gt | fake-rig | none"]["metrics"] if m["key"] == "fake-psnr")
    assert m["ci_low"] < m["value"] < m["ci_high"]
    assert m["n_clips"] == len(CLIPS) and m["n_failed"] == 0


def test_same_seed_same_numbers_other_seed_differs(fakes: Path, tmp_path: Path) -> None:
    def run(seed: int, db: str) -> float:
        p = harness.plan(**plan_args(fakes, drivers=["fake-noisy"], seed=seed))
        s = harness.run_plan(p, tmp_path / db, n_resamples=20)[0].summary
        return next(m["value"] for m in s["metrics"] if m["key"] == "fake-psnr")

    a, b, c = run(7, "a.db"), run(7, "b.db"), run(8, "c.db")
    assert a == b
    assert a != c


def test_failure_isolation_and_strict(fakes: Path, tmp_path: Path) -> None:
    clips = [*CLIPS[:2], {"uuid": "bad1", "n_frames": 10, "seed": 9},
             {"uuid": "x9", "n_frames": 12, "seed": 11, "corrupt": 6}, *CLIPS[2:]]
    hf.write_dataset(fakes, clips)
    p = harness.plan(**plan_args(fakes, drivers=["fake-nan"], metrics=["fake-psnr"]))
    out = harness.run_plan(p, tmp_path / "r.db", n_resamples=0)[0]
    m = out.summary["metrics"][0]
    assert (m["n_clips"], m["n_failed"]) == (len(CLIPS), 2)
    assert m["value"] == pytest.approx(_reference_psnr(CLIPS, lambda s: s.gt_coeffs()), abs=1e-5)
    with Store(tmp_path / "r.db") as st:
        errors = dict(st.conn.execute("SELECT uuid, error FROM clips WHERE error IS NOT NULL").fetchall())
    assert set(errors) == {"bad1", "x9"}
    assert "NaN" in errors["bad1"] and "corrupt frame 6" in errors["x9"]
    with pytest.raises(harness.ClipFailure, match="NaN"):
        harness.run_plan(p, tmp_path / "s.db", options=harness.RunOptions(strict=True), n_resamples=0)
    with Store(tmp_path / "s.db") as st:
        assert not st.cell_finished(p.cells[0].id)


def test_shards_merge_exactly(fakes: Path, tmp_path: Path) -> None:
    p = harness.plan(**plan_args(fakes, drivers=["fake-noisy"]))
    one = harness.run_plan(p, tmp_path / "one.db", n_resamples=100)[0].summary
    three = harness.run_plan(p, tmp_path / "three.db", n_shards=3, n_resamples=100)[0].summary
    assert one["metrics"] == three["metrics"]  # values and CIs bit-identical
    with Store(tmp_path / "three.db") as st:
        assert st.finished_shards(p.cells[0].id, 3) == {0, 1, 2}


def test_gt_key_and_clip_states(fakes: Path, tmp_path: Path) -> None:
    p = harness.plan(**plan_args(fakes, limit=2))
    cell = p.cells[0]
    res = harness.run_shard(cell.payload())
    assert [c.uuid for c in res.clips] == ["a1", "b2"]
    psnr = harness._METRIC_CACHE[next(k for k in harness._METRIC_CACHE if k.startswith("fake-psnr"))]
    keys = psnr.keys_seen[-5:]  # b2: 20 frames, rendered in 5s, metrics in batch_size 4
    h = cell.spec["dataset"]["content_hash"][:16]
    assert keys == [f"{h}_b2.speaker_f{i}-{i + 4}" for i in range(0, 20, 4)]
    assert harness.gt_key("ab" * 20, "x/y z", "listener", 0, 8) == "abababababababab_x_y_z.listener_f0-8"
    st = res.clips[1].states["fake-means"]["means"]
    assert st.shape == (20,)
    assert res.clips[0].states["fake-psnr"]["n"] == 13 * 3 * 16 * 16


@pytest.mark.parametrize(("sizes", "size"), [([5, 5, 3], 4), ([1] * 7, 3), ([10], 4), ([2, 2], 2), ([3], 8)])
def test_rechunk_regroups_exactly(sizes: list[int], size: int) -> None:
    total = sum(sizes)
    data = torch.arange(total, dtype=torch.float32)
    batches = list(torch.split(data, sizes))
    chunks = list(harness.rechunk(iter(batches), size))
    assert [len(c) for c in chunks] == [size] * (total // size) + ([total % size] if total % size else [])
    assert torch.equal(torch.cat(chunks), data)


def test_runtime_options_inject_device_where_accepted(fakes: Path) -> None:
    opts, handles = harness.runtime_options("renderer", "fake-rig", {"delay": 0.0}, device="cpu",
                                            precision="bf16")
    assert opts == {"delay": 0.0, "device": "cpu", "precision": "bf16"} and handles
    opts, handles = harness.runtime_options("postproc", "fake-blend", {}, device="cpu", precision="bf16")
    assert opts == {} and not handles
    opts, _ = harness.runtime_options("metric", "fake-psnr", {}, device="cpu")
    assert opts == {}


def test_throughput_excludes_warmup(fakes: Path) -> None:
    res = harness.run_shard(harness.plan(**plan_args(fakes)).cells[0].payload())
    assert res.warmup_clips == 1
    assert res.frames == sum(c["n_frames"] for c in CLIPS[1:])
    assert set(harness.STAGES) <= set(res.stage_seconds)
    per_metric = sum(v for k, v in res.stage_seconds.items() if k.startswith("metrics."))
    assert {"metrics.fake-psnr", "metrics.fake-l1", "metrics.fake-means"} <= set(res.stage_seconds)
    assert per_metric <= res.stage_seconds["metrics"] + 1e-6
    assert all(v >= 0 for v in res.stage_seconds.values())
    assert res.wall >= sum(v for k, v in res.stage_seconds.items() if "." not in k) * 0.99
    assert res.peak_host_bytes > 0


def test_save_videos_submission_layout(fakes: Path, tmp_path: Path) -> None:
    from bench.video import probe

    p = harness.plan(**plan_args(fakes, limit=2, task="listening"))
    harness.run_plan(p, tmp_path / "r.db", options=harness.RunOptions(save_videos=str(tmp_path / "sub")),
                     n_resamples=0)
    files = sorted(f.name for f in (tmp_path / "sub").iterdir())
    assert files == ["a1.listener.mp4", "b2.listener.mp4"]
    assert probe(tmp_path / "sub" / "b2.listener.mp4").n_frames == 20


def test_peak_memory_independent_of_clip_length(fakes: Path) -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc peak-RSS reset")

    def peak(n_frames: int) -> int:
        hf.write_dataset(fakes, [{"uuid": "w0", "n_frames": 8, "seed": 0, "size": 128},
                                 {"uuid": "long", "n_frames": n_frames, "seed": 1, "size": 128}])
        harness._DATASETS.clear()
        p = harness.plan(**plan_args(fakes, metrics=["fake-psnr"], batch_size=8,
                                     renderer_options={"fake-rig": {"batch_size": 8}}))
        return harness.run_shard(p.cells[0].payload()).peak_host_bytes

    short, long_ = peak(100), peak(1500)
    whole_clip = 1500 * 3 * 128 * 128 * 4  # ~295 MB if a clip's frames were held
    assert long_ - short < whole_clip / 6, (short, long_)


@pytest.mark.benchmark
def test_benchmark_harness_overhead(fakes: Path, benchmark: Any) -> None:
    """Frames/s of the harness itself: trivial renderer and metric at 256x256 (the ViCo size),
    so what is measured is decoding hand-off, rechunking, timing and bookkeeping."""
    hf.write_dataset(fakes, [{"uuid": f"c{i}", "n_frames": 120, "seed": i, "size": 256} for i in range(3)])
    harness._DATASETS.clear()
    cell = harness.plan(**plan_args(fakes, metrics=["fake-psnr"], batch_size=16,
                                    renderer_options={"fake-rig": {"batch_size": 16}})).cells[0]
    res = benchmark.pedantic(harness.run_shard, args=(cell.payload(),), rounds=1, iterations=1)
    benchmark.extra_info["frames_per_s"] = res.frames / res.wall
    benchmark.extra_info["stage_seconds"] = res.stage_seconds
    assert res.frames == 240 and not any(c.error for c in res.clips)
