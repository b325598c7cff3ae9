"""Uploaded audio (gRPC Classify, FindSimilar by audio) as analysis windows: decoded at the model's rate and
cut with the pipeline's window length, so an upload is judged exactly like a microphone's windows."""

from __future__ import annotations

from encoder.audio import AudioError, decode_samples
from encoder.windows import WindowSpec, window_spans
from service.daemon_vocabulary import UPLOAD_MIC_ID
from service.capture.windowing import Window

#: Most samples (frames x channels, at the file's rate and after resampling to the model's) one upload may
#: decode to: 32 Mi float32 samples = 128 MiB, e.g. 11 min of 48 kHz mono or 17 min of 16 kHz stereo. A 3.4 MB
#: FLAC can claim 600 s x 8 channels x 655,350 Hz (11.7 GiB); backends pass this to encoder.audio's max_samples.
MAX_UPLOAD_SAMPLES = 32 * 2**20


def upload_windows(data: bytes, sample_rate: int, spec: WindowSpec) -> list[Window]:
    """The consecutive windows of an uploaded file (mic ``upload``, times in seconds from its start);
    AudioError when it cannot be decoded or is shorter than the 1 s minimum window, AudioTooLarge (from the
    header, before decoding) when it would decode to more than MAX_UPLOAD_SAMPLES samples."""
    samples, _ = decode_samples(data, sample_rate, name="uploaded audio", max_samples=MAX_UPLOAD_SAMPLES)
    spans = window_spans(samples.shape[1], sample_rate, spec.consecutive())
    if not spans:
        raise AudioError(f"uploaded audio: {samples.shape[1] / sample_rate:.2f} s is shorter than "
                         "the 1 s minimum window")
    return [Window(UPLOAD_MIC_ID, samples[:, s.start:s.end], sample_rate, s.start / sample_rate, s.end / sample_rate,
                   realtime=False) for s in spans]
