"""Executors: the same cell through local, submitit (local cluster) and Ray (local) on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness_fakes import plan_args

import bench
from bench import harness
from bench.contracts import Executor, WorkItem

pytest_plugins = ("harness_fixtures",)


def _values(summary: dict) -> list[tuple]:
    return [(m["key"], m["value"], m["ci_low"], m["ci_high"], m["n_clips"]) for m in summary["metrics"]]


def _square(item: WorkItem) -> int:
    return item.shard * item.shard


def _visible(item: WorkItem) -> str:
    import os

    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_local_executor_sequential_in_process() -> None:
    ex = bench.load("executor", "local", workers=1)
    assert isinstance(ex, Executor)
    assert ex.in_process  # type: ignore[attr-defined]
    assert ex.map(_square, [WorkItem("c", s, 6) for s in range(6)]) == [0, 1, 4, 9, 16, 25]


@pytest.mark.slow
def test_local_executor_one_process_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    ex = bench.load("executor", "local", workers=2)
    assert not ex.in_process
    items = [WorkItem("c", s, 6) for s in range(6)]
    assert ex.map(_square, items) == [0, 1, 4, 9, 16, 25]
    assert set(ex.map(_visible, items)) <= {"4", "7"}


def _reference(fakes: Path, tmp_path: Path) -> tuple[harness.Plan, list[tuple]]:
    p = harness.plan(**plan_args(fakes, drivers=["fake-noisy"]))
    ref = harness.run_plan(p, tmp_path / "local.db", n_resamples=30)[0].summary
    return p, _values(ref)


@pytest.mark.slow
def test_submitit_local_cluster(fakes: Path, tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    p, ref = _reference(fakes, tmp_path)
    ex = bench.load("executor", "submitit", folder=str(tmp_path / "jobs"), cluster="local")
    out = harness.run_plan(p, tmp_path / "slurm.db", executor=ex, n_shards=2, n_resamples=30)[0]
    assert _values(out.summary) == ref


@pytest.mark.slow
def test_ray_local(fakes: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    p, ref = _reference(fakes, tmp_path)
    ex = bench.load("executor", "ray", init={"num_cpus": 2}, num_gpus=0)
    try:
        out = harness.run_plan(p, tmp_path / "ray.db", executor=ex, n_shards=2, n_resamples=30)[0]
    finally:
        ray.shutdown()
    assert _values(out.summary) == ref
