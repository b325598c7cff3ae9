"""The gRPC `ServiceBackend` of a running daemon: uploads go to its `Analyzer`, microphone status to the
daemon's `mic_status` rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from service.analysis.analyser import Analyzer
from service.records import MicStatus, WindowResult


@dataclass
class DaemonBackend:
    """ServiceBackend over an Analyzer and a function that reports every microphone's status."""

    analyzer: Analyzer
    status: Callable[[], list[MicStatus]] = field(default=lambda: [])

    def microphones(self) -> list[MicStatus]:
        """Every configured microphone with its capture state and last health."""
        return self.status()

    def analyze_audio(self, data: bytes) -> list[WindowResult]:
        """See `Analyzer.analyze_audio`."""
        return self.analyzer.analyze_audio(data)

    def embed_audio_bytes(self, data: bytes) -> np.ndarray:
        """See `Analyzer.embed_audio_bytes`."""
        return self.analyzer.embed_audio_bytes(data)
