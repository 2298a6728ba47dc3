"""Built-in executors: where the shards of cells run.

``local`` runs them in this process (one worker thread per visible GPU),
``submitit`` as a Slurm job array (or submitit's local executor), ``ray`` as
Ray tasks with ``num_gpus``. Every executor calls the same module-level
:func:`bench.harness.run_work_item`, which writes its shard to the store.
"""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec

_BASE = "bench_plugins.executors"


@hookimpl
def bench_add_executors() -> dict[str, ComponentSpec]:
    return {
        "local": ComponentSpec(
            f"{_BASE}.local:LocalExecutor",
            summary="in this process; one worker per visible GPU (default)",
        ),
        "submitit": ComponentSpec(
            f"{_BASE}.slurm:SubmititExecutor",
            summary="Slurm job arrays through submitit (cluster='local' runs jobs as local processes)",
            requires=("submitit",),
        ),
        "ray": ComponentSpec(
            f"{_BASE}.ray_tasks:RayExecutor",
            summary="Ray tasks with num_gpus per shard (address=None starts a local Ray)",
            requires=("ray",),
        ),
    }
