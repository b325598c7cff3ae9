"""What the gRPC servicers need from the running daemon, as a Protocol (the daemon's analysis
module implements it; tests implement a small real one)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from service.records import MicStatus, WindowResult


class BackendUnavailable(RuntimeError):
    """The backend cannot serve right now (model not loaded yet, shutting down); maps to UNAVAILABLE."""


class ServiceBackend(Protocol):
    """Live microphone status and on-demand analysis of uploaded audio."""

    def microphones(self) -> list[MicStatus]:
        """Status of every configured microphone."""
        ...

    def analyse_audio(self, data: bytes) -> list[WindowResult]:
        """Decode an uploaded file, cut it into windows and analyse each like the pipeline does.

        Returned windows have ``mic_id="upload"``, ``start_unix_ms``/``end_unix_ms`` as milliseconds
        from the start of the upload, and the embedding filled. Raises encoder.audio.AudioError for
        undecodable/empty/too-short audio (AudioTooLarge above uploads.MAX_UPLOAD_SAMPLES, checked before decoding)
        and BackendUnavailable when the model is not ready.
        """
        ...

    def embed_audio_bytes(self, data: bytes) -> np.ndarray:
        """Embeddings ``[n_windows, D]`` float32 (L2-normalised) of an uploaded file; errors as above."""
        ...
