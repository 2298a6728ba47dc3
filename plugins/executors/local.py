"""The default executor: shards run in this process, one worker per visible GPU."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.contracts import WorkItem


class LocalExecutor:
    """Runs work items in-process.

    With several visible GPUs, items run in that many threads, thread ``k``
    pinned to ``cuda:k`` (torch releases the GIL inside kernels, so GPUs overlap);
    otherwise sequentially, which keeps the live progress display and
    ``KeyboardInterrupt`` handling simple.
    """

    #: the harness may pass live callbacks (progress) in the payload
    in_process = True

    def __init__(self, workers: int | None = None) -> None:
        from bench.harness import default_workers

        self.workers = workers if workers is not None else default_workers()

    def map(self, fn: Callable[[WorkItem], Any], items: Sequence[WorkItem]) -> list[Any]:
        if self.workers <= 1 or len(items) <= 1:
            return [fn(item) for item in items]
        import threading

        import torch

        slots = iter(range(self.workers))
        lock = threading.Lock()
        local = threading.local()

        def pinned(item: WorkItem) -> Any:
            if not hasattr(local, "gpu"):
                with lock:
                    local.gpu = next(slots)
                if torch.cuda.is_available():
                    torch.cuda.set_device(local.gpu)
            return fn(item)

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bench-gpu") as pool:
            return list(pool.map(pinned, items))
