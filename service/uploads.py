"""Uploaded audio (gRPC Classify, FindSimilar by audio) as analysis windows: decoded at the model's rate and
cut with the pipeline's window length, so an upload is judged exactly like a microphone's windows."""

from __future__ import annotations

from encoder.audio import AudioError, decode_samples
from encoder.windows import window_spans
from service.backend import MAX_UPLOAD_SAMPLES
from service.vocabulary import UPLOAD_MIC_ID
from service.windowing import Window


def upload_windows(data: bytes, sample_rate: int, window_s: float) -> list[Window]:
    """The consecutive windows of an uploaded file (mic ``upload``, times in seconds from its start);
    AudioError when it cannot be decoded or is shorter than the 1 s minimum window, AudioTooLarge (from the
    header, before decoding) when it would decode to more than MAX_UPLOAD_SAMPLES samples."""
    samples, _ = decode_samples(data, sample_rate, name="uploaded audio", max_samples=MAX_UPLOAD_SAMPLES)
    spans = window_spans(samples.shape[1], sample_rate, window_s)
    if not spans:
        raise AudioError(f"uploaded audio: {samples.shape[1] / sample_rate:.2f} s is shorter than "
                         "the 1 s minimum window")
    return [Window(UPLOAD_MIC_ID, samples[:, s.start:s.end], sample_rate, s.start / sample_rate, s.end / sample_rate,
                   realtime=False) for s in spans]
