"""The gRPC `ServiceBackend` of a running daemon: uploads go to its `Analyser`, microphone status to the
daemon's `mic_status` rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from service.analysis.analyser import Analyser
from service.records import MicStatus, WindowResult


@dataclass
class DaemonBackend:
    """ServiceBackend over an Analyser and a function that reports every microphone's status."""

    analyser: Analyser
    status: Callable[[], list[MicStatus]] = field(default=lambda: [])

    def microphones(self) -> list[MicStatus]:
        """Every configured microphone with its capture state and last health."""
        return self.status()

    def analyse_audio(self, data: bytes) -> list[WindowResult]:
        """See `Analyser.analyse_audio`."""
        return self.analyser.analyse_audio(data)

    def embed_audio_bytes(self, data: bytes) -> np.ndarray:
        """See `Analyser.embed_audio_bytes`."""
        return self.analyser.embed_audio_bytes(data)
