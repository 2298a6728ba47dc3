"""Slurm job arrays through submitit: one array task per shard of a cell."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.contracts import WorkItem


class SubmititExecutor:
    """Submits each work item as one task of a Slurm job array and waits for all.

    Args:
        folder: where submitit keeps job scripts, pickles and logs (default
            ``$BENCH_HOME/submitit``). It must be on a filesystem the nodes share,
            like the results store, which the tasks write to directly.
        cluster: ``None`` (auto: Slurm when available), ``"slurm"``, ``"local"``
            (tasks as local subprocesses; used in tests) or ``"debug"`` (in-process).
        gpus_per_task, cpus_per_task, timeout_min, partition, array_parallelism:
            the usual Slurm resources.
        slurm: extra ``slurm_*`` parameters passed to ``update_parameters``.
    """

    in_process = False

    def __init__(self, folder: str | Path | None = None, cluster: str | None = None,
                 gpus_per_task: int = 1, cpus_per_task: int = 8, timeout_min: int = 240,
                 partition: str | None = None, array_parallelism: int = 64,
                 slurm: Mapping[str, Any] | None = None) -> None:
        from bench.paths import bench_home

        self.folder = Path(folder) if folder else bench_home() / "submitit"
        self.cluster = cluster
        self.params: dict[str, Any] = {"timeout_min": timeout_min, "cpus_per_task": cpus_per_task}
        if cluster not in ("local", "debug"):
            self.params.update(gpus_per_node=gpus_per_task, slurm_array_parallelism=array_parallelism)
            if partition:
                self.params["slurm_partition"] = partition
            self.params.update(dict(slurm or {}))

    def map(self, fn: Callable[[WorkItem], Any], items: Sequence[WorkItem]) -> list[Any]:
        import submitit

        executor = submitit.AutoExecutor(folder=str(self.folder), cluster=self.cluster)
        params = dict(self.params)
        if executor.cluster in ("local", "debug"):
            params = {"timeout_min": params["timeout_min"]}
        executor.update_parameters(name="bench-run", **params)
        jobs = executor.map_array(fn, list(items))
        return [job.result() for job in jobs]
