"""Throughput of driver inference (run with --benchmark-enable for timings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from bench_plugins.drivers.neural import NeuralDriver, build_model, norm_to_json

from bench.checkpoints import save_checkpoint
from bench.contracts import DriverBatch, NormStats


@pytest.mark.benchmark
@pytest.mark.parametrize("arch", ["lstm", "vico-listener"])
def test_driver_throughput_10s_clip(arch: str, tmp_path: Path, benchmark: Any) -> None:
    """One 10 s clip (300 frames): the regularised LSTM must be far faster than rendering (~1 s/frame)."""
    torch.manual_seed(0)
    stats = NormStats(torch.zeros(73), torch.ones(73), torch.zeros(45), torch.ones(45))
    meta = {"model": {"arch": arch, "audio_dim": 45, "options": {}}, "norm": norm_to_json(stats)}
    driver = NeuralDriver(arch, save_checkpoint(tmp_path / "m.pt", build_model(arch).state_dict(), meta))
    batch = DriverBatch(audio=torch.randn(1, 300, 45), init=torch.randn(1, 73), speaker=torch.randn(1, 300, 73))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = benchmark(driver.predict, batch)
    finally:
        torch.set_num_threads(before)
    assert out.shape == (1, 300, 73)
