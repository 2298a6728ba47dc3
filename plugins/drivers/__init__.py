"""Built-in drivers: baselines (`static`, `gt`), the LSTM family, ViCo baselines, ensembles.

Registration only: nothing here imports torch (targets are lazy ``module:attr``).
"""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec

_BASE = "bench_plugins.drivers"
_NEURAL = f"{_BASE}.neural"
_STATUS = f"{_BASE}.shipped"
_TALK = ("talking",)
_LISTEN = ("listening",)


def _neural(factory: str, summary: str, tasks: tuple[str, ...], status: str) -> ComponentSpec:
    return ComponentSpec(
        f"{_NEURAL}:{factory}",
        summary=summary,
        tasks=tasks,
        positional="checkpoint",
        weights=f"{_STATUS}:{status}",
    )


def _ensemble(shipped: str, arch: str, summary: str, tasks: tuple[str, ...], status: str) -> ComponentSpec:
    return ComponentSpec(
        f"{_NEURAL}:shipped_ensemble",
        summary=summary,
        tasks=tasks,
        defaults={"shipped": shipped, "arch": arch},
        positional="checkpoints",
        weights=f"{_STATUS}:{status}",
    )


@hookimpl
def bench_add_drivers() -> dict[str, ComponentSpec]:
    return {
        "static": ComponentSpec(
            f"{_BASE}.baselines:StaticDriver",
            summary="repeats the first frame's coefficients: the zero-motion baseline",
            tasks=("talking", "listening"),
        ),
        "gt": ComponentSpec(
            f"{_BASE}.baselines:GroundTruthDriver",
            summary="ground-truth coefficients: the renderer's upper bound",
            tasks=("talking", "listening"),
        ),
        "lstm": _neural(
            "lstm",
            "Megvii regularised driver: Linear+BatchNorm+4-layer BiLSTM, residual to frame 0",
            _TALK,
            "status_lstm",
        ),
        "lstm-nobn": _neural("lstm_nobn", "ablation: lstm without BatchNorm", _TALK, "status_lstm_nobn"),
        "lstm-nores": _neural(
            "lstm_nores", "ablation: lstm without the residual to frame 0", _TALK, "status_lstm_nores"
        ),
        "lstm-nodrop": _neural("lstm_nodrop", "ablation: lstm without dropout", _TALK, "status_lstm_nodrop"),
        "vico-speaker": _neural(
            "vico_speaker",
            "ViCo baseline speaker: LayerNorm+Tanh+4-layer BiLSTM (official checkpoint: checkpoint=PATH)",
            _TALK,
            "status_vico_speaker",
        ),
        "vico-listener": _neural(
            "vico_listener",
            "ViCo baseline listener: causal LSTM from frame 0 + speaker motion (attitude=True optional)",
            _LISTEN,
            "status_vico_listener",
        ),
        "ensemble": ComponentSpec(
            f"{_NEURAL}:EnsembleDriver",
            summary="mean of any drivers' predictions in normalised space (members=a,b,...)",
            positional="members",
        ),
        "lstm-self3": _ensemble(
            "lstm-self3", "lstm", "self-ensemble: 3 best epochs of one lstm run", _TALK, "status_lstm_self3"
        ),
        "lstm-ens5": _ensemble(
            "lstm-ens5",
            "lstm",
            "cross-ensemble: the 5 best of 10 seeded lstm runs by validation loss (paper's final)",
            _TALK,
            "status_lstm_ens5",
        ),
        "listener-ens3": _ensemble(
            "listener-ens3",
            "vico-listener",
            "listening-track ensemble: 3 seeded vico-listener runs",
            _LISTEN,
            "status_listener_ens3",
        ),
    }
