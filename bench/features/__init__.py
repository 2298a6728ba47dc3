"""Features computed from raw inputs (the official ViCo audio features)."""

from __future__ import annotations

from .audio import FEATURE_VERSION, audio_features, cached_audio_features, feature_dim

__all__ = ["FEATURE_VERSION", "audio_features", "cached_audio_features", "feature_dim"]
