"""Ray tasks: one remote task per shard, each asking for ``num_gpus``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.contracts import WorkItem


class RayExecutor:
    """Runs each work item as a Ray task.

    Args:
        address: a running cluster (``"auto"``, ``"ray://host:10001"``) or None to
            start a local Ray in this process.
        num_gpus: GPUs per task (default: 1 when this machine sees a GPU, else 0).
        num_cpus: CPUs per task.
        init: extra ``ray.init`` arguments (e.g. ``{"num_cpus": 2}`` for a small local Ray).
    """

    in_process = False

    def __init__(self, address: str | None = None, num_gpus: float | None = None,
                 num_cpus: float = 1, init: dict[str, Any] | None = None) -> None:
        self.address = address
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.init_args = dict(init or {})

    def map(self, fn: Callable[[WorkItem], Any], items: Sequence[WorkItem]) -> list[Any]:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     **self.init_args)
        gpus = self.num_gpus
        if gpus is None:
            import torch

            gpus = 1 if torch.cuda.is_available() else 0
        remote = ray.remote(num_gpus=gpus, num_cpus=self.num_cpus, max_retries=0)(fn)
        return list(ray.get([remote.remote(item) for item in items]))
