"""bench.accel: channels-last eager and AOTInductor-compiled networks agree with plain eager."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import bench.accel as accel
from bench.errors import ConfigError

needs_compiler = pytest.mark.skipif(accel.compiler_available() is None, reason="no C++ compiler")


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(8, 4, 3, padding=2, dilation=2),
        nn.AdaptiveAvgPool2d(1),
    )
    for m in net.modules():  # non-trivial batch-norm statistics, so folding them matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_resolve_compile_validates_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_COMPILE", "off")
    assert accel.resolve_compile("auto") == "off"
    assert accel.resolve_compile("on") == "on"  # an explicit choice beats the environment
    monkeypatch.setenv("BENCH_COMPILE", "sometimes")
    with pytest.raises(ConfigError, match=r"\$BENCH_COMPILE"):
        accel.resolve_compile("auto")
    with pytest.raises(ConfigError, match="compile must be one of"):
        accel.resolve_compile("yes")


def test_eager_is_channels_last_and_equal() -> None:
    net = _net()
    x = torch.rand(3, 3, 21, 17)
    with torch.inference_mode():
        want = net(x)
        fast = accel.Accelerated("toy", _net(), compile="off")
        got = fast(x)
    assert fast.describe() == "eager"
    assert next(fast.module.parameters()).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_batches_beyond_the_compiled_range_are_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "MAX_BATCH", 2)
    x = torch.rand(5, 3, 9, 9)
    with torch.inference_mode():
        got = accel.Accelerated("toy", _net(), compile="off")(x)
        torch.testing.assert_close(got, _net()(x), rtol=0, atol=1e-6)


def test_auto_without_compiler_runs_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_COMPILE", "auto")
    monkeypatch.setattr(accel, "compiler_available", lambda: None)
    monkeypatch.setattr(accel, "compiled", lambda *a: pytest.fail("must not compile"))
    fast = accel.Accelerated("toy", _net(), compile="auto")
    assert fast.describe() == "eager"
    with torch.inference_mode():
        fast(torch.rand(2, 3, 8, 8))


def test_failed_compilation_is_an_error_when_asked_for_and_eager_otherwise(
    bench_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("no linker today")

    monkeypatch.setattr(accel, "compiler_available", lambda: "/usr/bin/g++")
    monkeypatch.setattr(accel, "_compile_package", broken)
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ConfigError, match="no linker today") as info, torch.inference_mode():
        accel.Accelerated("toy", _net(), compile="on")(x)
    assert "compile='off'" in str(info.value)
    fast = accel.Accelerated("toy", _net(), compile="auto")
    monkeypatch.setenv("BENCH_COMPILE", "auto")
    fast = accel.Accelerated("toy", _net(), compile="auto")
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), _net()(x), rtol=0, atol=1e-6)
    assert fast.compile == "off"  # gave up once, not per batch


@needs_compiler
def test_compiled_matches_eager_for_any_batch_and_is_reused(
    bench_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel, "_LOADED", {})
    net = _net()
    fast = accel.Accelerated("toy", _net(), compile="on")
    assert fast.describe() == "aoti"
    with torch.inference_mode():
        for batch in (3, 1, 7):  # one package, dynamic batch dimension
            x = torch.rand(batch, 3, 24, 20)
            torch.testing.assert_close(fast(x), net(x), rtol=0, atol=1e-5)
    packages = list((bench_home / "cache" / "aoti").glob("toy-*.pt2"))
    assert len(packages) == 1

    # a new process (empty in-memory table) loads the package instead of compiling
    monkeypatch.setattr(accel, "_LOADED", {})
    monkeypatch.setattr(accel, "_compile_package", lambda *a: pytest.fail("compiled twice"))
    again = accel.Accelerated("toy", _net(), compile="on")
    with torch.inference_mode():
        x = torch.rand(2, 3, 24, 20)
        torch.testing.assert_close(again(x), net(x), rtol=0, atol=1e-5)

    # other weights are another package, never the cached one
    assert accel.package_path("toy", _net(seed=1), x) != packages[0]


@pytest.mark.slow
@needs_compiler
def test_a_corrupt_package_is_rebuilt(bench_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "_LOADED", {})
    x = torch.rand(2, 3, 16, 16)
    path = accel.package_path("toy", _net().to(memory_format=torch.channels_last), x)
    path.write_bytes(b"not a zip file")
    fast = accel.Accelerated("toy", _net(), compile="on")
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), _net()(x), rtol=0, atol=1e-5)
    assert path.stat().st_size > 1000
