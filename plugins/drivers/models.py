"""Torch modules of the drivers, with the official state-dict key layouts.

Every module here works in *normalised* space (z-scored audio features and
coefficients, SPEC section 2) and follows the official alignment: the output at
step ``t`` is the prediction of frame ``t+1`` (frame 0 is the given first frame).
The driver wrappers in :mod:`bench_plugins.drivers.neural` do the normalisation
and the shift.

Layouts (key names and shapes are checked against ``golden/state_dicts``):

* :class:`RegularisedLSTM` - Megvii's speaker driver (``megvii_speaker``):
  ``[audio F | init 73] -> Linear(F+73,192) -> BatchNorm1d(192) over all N*T rows
  -> BiLSTM(192, 96, 4 layers, bias=False, dropout) -> Linear(192,73) -> + init``.
* :class:`VicoSpeaker` - the ViCo baseline speaker (``vico_baseline_speaker``):
  ``LayerNorm(F) -> Linear(F,192) -> Tanh -> BiLSTM(192,96,4) -> Linear(192,73)``.
* :class:`VicoListener` - the ViCo baseline listener (``vico_baseline_listener``),
  causal: the first frame sets the initial LSTM state, then each step reads
  ``[audio F | speaker 73]``. Optionally (``residual=True``, not official) the
  first frame is added to every output, as in the Megvii speaker, and
  (``speaker_motion=True``, not official) the speaker enters as its motion since
  its first frame; neither adds parameters, so the key layout stays the official one.
"""

from __future__ import annotations

import torch
from torch import nn

N_COEFFS = 73
ATTITUDES: tuple[str, ...] = ("positive", "neutral", "negative")


class _RegularisedAudioToFace(nn.Module):
    """The ``audio_to_face`` sub-module of the Megvii driver (keys ``audio_to_face.*``)."""

    def __init__(
        self, audio_dim: int, width: int, hidden: int, layers: int, dropout: float, batch_norm: bool
    ) -> None:
        super().__init__()
        self.fusion = nn.Sequential(nn.Linear(audio_dim + N_COEFFS, width))
        # The ablation without batch norm simply has no `bn` keys.
        self.bn = nn.BatchNorm1d(width) if batch_norm else None
        self.lstm_layers = nn.LSTM(
            width, hidden, layers, bias=False, batch_first=True, dropout=dropout, bidirectional=True
        )

    def forward(self, audio: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
        steps = audio.shape[1]
        x = torch.cat([audio, init[:, None, :].expand(-1, steps, -1)], dim=-1)
        x = self.fusion(x)
        if self.bn is not None:
            # Normalise over every frame of every clip (N*T rows), as the official model does.
            n, t, c = x.shape
            x = self.bn(x.reshape(n * t, c)).reshape(n, t, c)
        out, _ = self.lstm_layers(x)
        return out


class RegularisedLSTM(nn.Module):
    """Megvii's regularised speaker driver (official layout ``megvii_speaker``).

    Args:
        audio_dim: F, the audio feature size (45 at 44.1 kHz, 43 at 16 kHz).
        batch_norm: keep the BatchNorm after the input projection (``lstm-nobn`` drops it).
        residual: add the first frame to every output (``lstm-nores`` drops it).
        dropout: dropout between LSTM layers (``lstm-nodrop`` sets 0).
    """

    layout = "megvii_speaker"

    def __init__(
        self,
        audio_dim: int = 45,
        *,
        batch_norm: bool = True,
        residual: bool = True,
        dropout: float = 0.1,
        width: int = 192,
        hidden: int = 96,
        layers: int = 4,
    ) -> None:
        super().__init__()
        self.audio_dim = audio_dim
        self.residual = residual
        self.audio_to_face = _RegularisedAudioToFace(audio_dim, width, hidden, layers, dropout, batch_norm)
        self.dynam_3dmm_fc = nn.Linear(2 * hidden, N_COEFFS)

    def forward(
        self,
        audio: torch.Tensor,
        init: torch.Tensor,
        speaker: torch.Tensor | None = None,
        attitude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B,T,F) normalised audio, (B,73) normalised first frame -> (B,T,73) normalised.

        Output step ``t`` predicts frame ``t+1``. ``speaker`` and ``attitude`` are ignored.
        """
        out = self.dynam_3dmm_fc(self.audio_to_face(audio, init))
        if self.residual:
            out = out + init[:, None, :]
        return out


class _VicoAudioToFace(nn.Module):
    def __init__(self, audio_dim: int, width: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(audio_dim)
        self.fusion = nn.Sequential(nn.Linear(audio_dim, width), nn.Tanh())
        self.lstm_layers = nn.LSTM(
            width, hidden, layers, bias=False, batch_first=True, dropout=dropout, bidirectional=True
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm_layers(self.fusion(self.layernorm(audio)))
        return out


class VicoSpeaker(nn.Module):
    """The ViCo baseline speaker (official layout ``vico_baseline_speaker``).

    Audio only: the first frame is not an input (the driver copies it to frame 0).
    """

    layout = "vico_baseline_speaker"

    def __init__(
        self,
        audio_dim: int = 45,
        *,
        dropout: float = 0.1,
        width: int = 192,
        hidden: int = 96,
        layers: int = 4,
    ) -> None:
        super().__init__()
        self.audio_dim = audio_dim
        self.audio_to_face = _VicoAudioToFace(audio_dim, width, hidden, layers, dropout)
        self.dynam_3dmm_fc = nn.Linear(2 * hidden, N_COEFFS)

    def forward(
        self,
        audio: torch.Tensor,
        init: torch.Tensor,
        speaker: torch.Tensor | None = None,
        attitude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B,T,F) normalised audio -> (B,T,73) normalised; step ``t`` predicts frame ``t+1``."""
        return self.dynam_3dmm_fc(self.audio_to_face(audio))


class _StepwiseFusion(nn.Module):
    """The listener's ``fusion`` sub-module: initial state from frame 0, causal LSTM."""

    def __init__(
        self, audio_dim: int, width: int, hidden: int, layers: int, dropout: float, attitude: bool
    ) -> None:
        super().__init__()
        driven = audio_dim + N_COEFFS
        self.layernorm_init = nn.LayerNorm(N_COEFFS)
        self.layernorm_driven = nn.LayerNorm(driven)
        self.get_initial_state = nn.Sequential(
            nn.Linear(N_COEFFS, N_COEFFS), nn.Tanh(), nn.Linear(N_COEFFS, 2 * layers * hidden)
        )
        self.fusion = nn.Sequential(nn.Linear(driven, width), nn.Tanh())
        self.lstm_layers = nn.LSTM(
            width, hidden, layers, bias=False, batch_first=True, dropout=dropout, bidirectional=False
        )
        self.layers = layers
        self.hidden = hidden
        # Optional (not in the official model): an offset of the initial state per
        # attitude, zero-initialised so an untrained embedding changes nothing.
        self.attitude_embedding: nn.Embedding | None = None
        if attitude:
            self.attitude_embedding = nn.Embedding(len(ATTITUDES) + 1, 2 * layers * hidden)
            nn.init.zeros_(self.attitude_embedding.weight)

    def forward(
        self, driven: torch.Tensor, init: torch.Tensor, attitude: torch.Tensor | None
    ) -> torch.Tensor:
        state = self.get_initial_state(self.layernorm_init(init))  # (B, 2*L*H)
        if self.attitude_embedding is not None:
            if attitude is None:
                attitude = torch.full((init.shape[0],), len(ATTITUDES), dtype=torch.long, device=init.device)
            state = state + self.attitude_embedding(attitude)
        # The official split: (B, 2, L, H) -> (2, L, B, H); index 0 is h0, 1 is c0.
        h0c0 = state.view(-1, 2, self.layers, self.hidden).permute(1, 2, 0, 3).contiguous()
        x = self.fusion(self.layernorm_driven(driven))
        out, _ = self.lstm_layers(x, (h0c0[0], h0c0[1]))
        return out


class VicoListener(nn.Module):
    """The ViCo baseline listener (official layout ``vico_baseline_listener``), causal.

    Args:
        audio_dim: F, the audio feature size.
        attitude: add a learned per-attitude offset of the initial LSTM state (the
            paper's task has the attitude; the official model drops it). Adds the key
            ``fusion.attitude_embedding.weight``; without it the layout is the official one.
        residual: add the (normalised) first frame to every output, so the network
            predicts the motion away from the listener's own first frame instead of
            rebuilding that person's resting coefficients from a LayerNorm-ed copy of
            them (which a small dataset does not teach). No parameters, official keys;
            False (the default) is the official model.
        speaker_motion: feed the speaker's coefficients minus the speaker's first frame
            (normalised space) instead of the coefficients themselves. The absolute
            coefficients say *who* is talking; with few conversation pairs the model
            learns "this speaker -> that listener's face" from them, which fails on new
            pairs. The motion keeps what the listener reacts to. Causal (frame 0 is
            known from the start); no parameters, official keys; False is official.
    """

    layout = "vico_baseline_listener"

    def __init__(
        self,
        audio_dim: int = 45,
        *,
        attitude: bool = False,
        residual: bool = False,
        speaker_motion: bool = False,
        dropout: float = 0.1,
        width: int = 192,
        hidden: int = 96,
        layers: int = 2,
    ) -> None:
        super().__init__()
        self.audio_dim = audio_dim
        self.residual = residual
        self.speaker_motion = speaker_motion
        self.fusion = _StepwiseFusion(audio_dim, width, hidden, layers, dropout, attitude)
        self.dynam_3dmm_fc = nn.Linear(hidden, N_COEFFS)

    def forward(
        self,
        audio: torch.Tensor,
        init: torch.Tensor,
        speaker: torch.Tensor | None = None,
        attitude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B,T,F) audio, (B,73) first listener frame, (B,T,73) speaker, all normalised.

        Returns (B,T,73) normalised; step ``t`` (having seen inputs up to ``t``)
        predicts listener frame ``t+1``. ``attitude`` is a (B,) index into
        :data:`ATTITUDES` (``len(ATTITUDES)`` = unknown), used only if enabled.
        """
        if speaker is None:
            raise ValueError("the listener needs the speaker's coefficients")
        if self.speaker_motion:
            speaker = speaker - speaker[:, :1]
        driven = torch.cat([audio, speaker], dim=-1)
        out = self.dynam_3dmm_fc(self.fusion(driven, init, attitude))
        if self.residual:
            out = out + init[:, None, :]
        return out


def attitude_index(attitudes: list[str | None] | tuple[str | None, ...], batch: int) -> torch.Tensor:
    """Attitude names (or None) -> (B,) long indices; unknown/missing map to ``len(ATTITUDES)``."""
    names = list(attitudes) if attitudes else [None] * batch
    return torch.tensor(
        [ATTITUDES.index(a) if a in ATTITUDES else len(ATTITUDES) for a in names], dtype=torch.long
    )
