"""Faster inference for fixed networks: channels-last eager, or AOTInductor, compiled once and cached.

On CPU most of a convolutional network's time goes to layout conversions and
unfused conv -> batch-norm -> ReLU chains. :func:`accelerate` wraps an eval-mode
module so that it

* runs channels-last (oneDNN's native layout; about 1.4-2x on AVX-512 CPUs, bit-for-bit
  the same maths up to summation order), and
* on CPU, when a C++ compiler is present, is exported with :mod:`torch.export` and
  compiled ahead of time by AOTInductor with freezing (batch norms folded into the
  convolutions, weights pre-packed, elementwise tails fused; another 1.5-1.8x).

The compiled package depends on the torch version, the CPU's instruction set, the
thread count (OpenMP regions are specialised to it), the input's shape apart from
the batch dimension and the network's weights, so all of these key its file in
``$BENCH_HOME/cache/aoti``. The first use compiles (30-60 s for InceptionV3 or
U2NETP on two cores); every later process loads the package in well under a second.

``compile`` chooses the path: ``"off"`` (eager, channels-last), ``"on"`` (compile or
fail with the reason) and ``"auto"`` (compile when a C++ compiler is found, else eager
with a warning). ``$BENCH_COMPILE`` overrides ``"auto"`` for a whole process; the
test-suite sets it to ``off`` so that it does not compile a network per test.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .errors import ConfigError
from .paths import cache_dir

log = logging.getLogger(__name__)

Compile = Literal["auto", "on", "off"]
COMPILE_CHOICES: tuple[str, ...] = ("auto", "on", "off")
#: Changes whenever the export wrapper or the inductor options change.
_PACKAGE_VERSION = "1"
_INDUCTOR_OPTIONS: dict[str, Any] = {"freezing": True}
_LOADED: dict[Path, Callable[..., Any]] = {}
#: The largest batch a compiled package takes; larger inputs are split.
MAX_BATCH = 1024
_LOAD_LOCK = threading.Lock()


def resolve_compile(compile: str) -> Compile:
    """Validate a ``compile`` option; ``"auto"`` defers to ``$BENCH_COMPILE`` when set."""
    if compile not in COMPILE_CHOICES:
        raise ConfigError(f"compile must be one of {', '.join(COMPILE_CHOICES)}, got {compile!r}")
    if compile == "auto":
        env = os.environ.get("BENCH_COMPILE", "auto").strip().lower()
        if env not in COMPILE_CHOICES:
            raise ConfigError(f"$BENCH_COMPILE must be one of {', '.join(COMPILE_CHOICES)}, got {env!r}")
        return env  # type: ignore[return-value]
    return compile  # type: ignore[return-value]


def compiler_available() -> str | None:
    """Path of the C++ compiler AOTInductor would use, or None."""
    for candidate in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def planned_mode(compile: str, device: str | torch.device) -> str:
    """``"aoti"`` or ``"eager"``: how :class:`Accelerated` will run a network, known
    before any network is built (for backend strings at planning time)."""
    mode = resolve_compile(compile)
    if mode == "off" or torch.device(device).type != "cpu":
        return "eager"
    if mode == "auto" and compiler_available() is None:
        return "eager"
    return "aoti"


class _ChannelsLast(nn.Module):
    """Feeds the wrapped module channels-last input; callers pass ordinary NCHW tensors."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> Any:
        return self.module(x.contiguous(memory_format=torch.channels_last))


def weights_digest(module: nn.Module) -> str:
    """Content hash of a module's parameters and buffers (names, dtypes, shapes, bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in (*module.named_parameters(), *module.named_buffers()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def package_path(name: str, module: nn.Module, example: torch.Tensor) -> Path:
    """Where the compiled package of ``module`` for inputs shaped like ``example`` lives."""
    key = "|".join(
        (
            _PACKAGE_VERSION,
            repr(sorted(_INDUCTOR_OPTIONS.items())),
            torch.__version__,
            platform.python_version(),
            platform.machine(),
            str(torch.backends.cpu.get_cpu_capability()),
            f"threads={torch.get_num_threads()}",
            f"shape={tuple(example.shape[1:])}",
            str(example.dtype),
            type(module).__qualname__,
            weights_digest(module),
        )
    )
    return cache_dir("aoti") / f"{name}-{hashlib.blake2b(key.encode(), digest_size=10).hexdigest()}.pt2"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so parallel processes compile a package once."""
    import fcntl

    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compile_package(wrapped: nn.Module, example: torch.Tensor, dst: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.inference_mode(False), torch.no_grad():
        exported = torch.export.export(wrapped, (example,), dynamic_shapes={"x": {0: batch}})
    fd, tmp = tempfile.mkstemp(prefix=dst.stem + ".", suffix=".part.pt2", dir=dst.parent)  # AOTI wants .pt2
    os.close(fd)
    try:
        torch._inductor.aoti_compile_and_package(
            exported, package_path=tmp, inductor_configs=dict(_INDUCTOR_OPTIONS)
        )
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_package(path: Path) -> Callable[..., Any]:
    with _LOAD_LOCK:
        if path not in _LOADED:
            _LOADED[path] = torch._inductor.aoti_load_package(str(path))
        return _LOADED[path]


def compiled(name: str, module: nn.Module, example: torch.Tensor) -> Callable[..., Any]:
    """The AOTInductor package of ``_ChannelsLast(module)``, compiled on first use.

    ``example`` is one input batch (any batch size: the batch dimension is dynamic);
    the package is specialised to its other dimensions and dtype.
    """
    import torch._inductor  # noqa: F401 - AOTInductor lives here

    path = package_path(name, module, example)
    if not path.is_file():
        with _file_lock(path.with_suffix(".lock")):
            if not path.is_file():  # another process may have compiled it meanwhile
                log.warning("compiling %s for this CPU (once; cached in %s)", name, path.parent)
                _compile_package(_ChannelsLast(module).eval(), example, path)
    try:
        return _load_package(path)
    except Exception:  # a package from an interrupted or foreign build: rebuild once
        path.unlink(missing_ok=True)
        with _file_lock(path.with_suffix(".lock")):
            if not path.is_file():
                _compile_package(_ChannelsLast(module).eval(), example, path)
        return _load_package(path)


class Accelerated:
    """A callable running ``module`` on ``(b, ...)`` inputs the fastest safe way available.

    Attributes:
        mode: ``"aoti"`` (compiled package) or ``"eager"`` (channels-last module).
    """

    def __init__(self, name: str, module: nn.Module, *, compile: str = "auto") -> None:
        self.name = name
        self.compile = resolve_compile(compile)
        self.module = module.eval().to(memory_format=torch.channels_last)
        self._eager = _ChannelsLast(self.module)
        self._runners: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self._device = next(iter(module.parameters())).device
        if self.compile == "auto" and self._device.type == "cpu" and compiler_available() is None:
            log.warning("%s: no C++ compiler found, running eager (install g++ for a 1.5-2x faster "
                        "compiled network)", name)

    def describe(self) -> str:
        """``eager`` or ``aoti``, for backend strings and cache tags (decided without compiling)."""
        return planned_mode(self.compile, self._device)

    def _runner(self, x: torch.Tensor) -> Callable[..., Any]:
        if self.describe() == "eager":
            return self._eager
        key = (tuple(x.shape[1:]), x.dtype, torch.get_num_threads())
        runner = self._runners.get(key)
        if runner is None:
            try:
                # batch 2: an example batch of 1 would specialise the dynamic batch dimension
                example = x[:1].expand(2, *x.shape[1:]).contiguous()
                runner = compiled(self.name, self.module, example)
            except Exception as exc:
                if self.compile == "on":
                    raise ConfigError(
                        f"{self.name}: AOTInductor compilation failed ({type(exc).__name__}: {exc})",
                        fix="install a C++ compiler (g++) or pass compile='off'",
                    ) from exc
                log.warning("%s: compilation failed (%s: %s); running eager", self.name,
                            type(exc).__name__, exc)
                self.compile = "off"
                return self._eager
            self._runners[key] = runner
        return runner

    def __call__(self, x: torch.Tensor) -> Any:
        """Run the network on ``x`` (ordinary NCHW layout; contiguity is handled here)."""
        if x.shape[0] > MAX_BATCH:  # beyond the compiled package's dynamic range
            parts = [self(part) for part in x.split(MAX_BATCH)]
            return torch.cat(parts) if isinstance(parts[0], torch.Tensor) else \
                type(parts[0])(torch.cat(group) for group in zip(*parts, strict=True))
        return self._runner(x)(x.contiguous())
