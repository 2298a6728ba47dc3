"""The default executor: shards run on this machine, one worker per visible GPU."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from bench.contracts import WorkItem


def _pin(slots: Any) -> None:
    """Worker initialiser: this process sees only its own GPU."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(slots.get())


class LocalExecutor:
    """Runs work items on this machine.

    With one (or no) GPU, items run sequentially in this process, which keeps the
    live progress display, model reuse and ``KeyboardInterrupt`` simple. With
    several visible GPUs, items run in that many spawned worker processes, each
    pinned to one GPU through ``CUDA_VISIBLE_DEVICES``: processes rather than
    threads, because torch's seeded RNGs are process-global and would make runs
    non-deterministic if workers shared them.
    """

    def __init__(self, workers: int | None = None) -> None:
        from bench.harness import default_workers

        self.workers = workers if workers is not None else default_workers()

    @property
    def in_process(self) -> bool:
        """Whether items run in this process (the harness may then pass live callbacks)."""
        return self.workers <= 1

    def map(self, fn: Callable[[WorkItem], Any], items: Sequence[WorkItem]) -> list[Any]:
        if self.workers <= 1 or len(items) <= 1:
            return [fn(item) for item in items]
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        slots = ctx.Manager().Queue()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(self.workers)]
        for dev in devices[: self.workers]:
            slots.put(dev)
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_pin,
                                 initargs=(slots,)) as pool:
            return list(pool.map(fn, items))
