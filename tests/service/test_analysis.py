"""Specification of the analysis stage (service/analysis/analyser.py): uploads and live windows take one path, so
the same audio gives the same record whichever way it came in, and uploads are cut like live windows."""

from __future__ import annotations

import numpy as np
import pytest

from daemon_support import wav_bytes  # tests/service/ is on sys.path (pytest rootdir-relative import)
from encoder.audio import AudioError
from encoder.windows import WindowSpec
from service.analysis.analyser import Analyser
from service.capture.windowing import Window

RATE = 16000


def test_an_upload_gives_the_record_a_new_microphone_gets_for_the_same_audio(bundle, speech: np.ndarray) -> None:
    (upload,) = Analyser(bundle).analyse_audio(wav_bytes(speech))
    (live,), changes = Analyser(bundle).analyse([Window("upload", speech, RATE, 0.0, 10.0, False)])
    assert upload == live.result  # label, probabilities, health state, reasons, scores and level
    np.testing.assert_array_equal(upload.embedding, live.result.embedding)
    assert {"drift", "drift_ready"} <= set(upload.health_scores)  # uploads are judged with drift, like live windows
    assert [c.kind for c in changes] == ["activity_changed", "health_changed"]


def test_uploads_are_cut_with_the_pipeline_window_length(bundle, speech: np.ndarray) -> None:
    results = Analyser(bundle, windows=WindowSpec(4.0)).analyse_audio(wav_bytes(speech))
    assert [(r.start_unix_ms, r.end_unix_ms) for r in results] == [(0, 4000), (4000, 8000), (8000, 10000)]
    assert Analyser(bundle, windows=WindowSpec(4.0)).embed_audio_bytes(wav_bytes(speech)).shape == (3, bundle.embedding_dim)


def test_an_upload_never_touches_the_live_microphones_drift_or_state(bundle, speech: np.ndarray) -> None:
    analyser = Analyser(bundle)
    analyser.analyse([Window("kitchen", speech, RATE, 0.0, 10.0, True)])
    before = analyser.drift_state()
    analyser.analyse_audio(wav_bytes(speech))
    assert analyser.drift_state() == before and set(before) == {"kitchen"}


def test_an_upload_shorter_than_a_second_is_an_audio_error(bundle) -> None:
    with pytest.raises(AudioError, match="shorter than the 1 s minimum window"):
        Analyser(bundle).analyse_audio(wav_bytes(np.zeros((1, RATE // 2), np.float32)))


@pytest.mark.parametrize("kind", ["1e30", "random bytes as float"])
def test_a_window_whose_spectrogram_overflows_fails_alone_as_faulty_with_a_reason(bundle, speech, kind) -> None:
    """Issue 15, BROKE 3: one such window used to make the batch's drift check raise, so every microphone's
    windows were lost; now it is faulty (no embedding, no label, never NaN) and its neighbours are untouched."""
    rng = np.random.default_rng(0)
    broken = (np.full((1, 2 * RATE), 1e30, np.float32) if kind == "1e30"
              else np.frombuffer(rng.bytes(2 * RATE * 4), np.float32).reshape(1, -1).copy())
    analyser = Analyser(bundle)
    analysed, changes = analyser.analyse([Window("kitchen", speech, RATE, 0.0, 10.0, True),
                                          Window("garage", broken, RATE, 0.0, 2.0, True)])
    kitchen, garage = (a.result for a in analysed)
    assert kitchen.health_state == "ok" and kitchen.label and np.isfinite(kitchen.embedding).all()
    assert garage.health_state == "faulty" and garage.embedding is None and garage.label is None
    assert garage.probabilities == {} and garage.health_reasons[0].startswith("non_finite: features are not finite")
    assert all(np.isfinite(v) for v in garage.health_scores.values()) and np.isfinite(garage.rms_dbfs)
    assert ("health_changed", "garage", "faulty") in {(c.kind, c.mic_id, c.current) for c in changes}
    assert set(analyser.drift_state()) <= {"kitchen", "garage"}
    assert analyser.drift_state().get("garage", {}).get("count", 0) == 0  # nothing learned from it


def test_classify_of_overflowing_audio_returns_the_fault_never_nan(bundle, speech) -> None:
    loud = np.full((1, 3 * RATE), 1e30, np.float32)
    (window,) = Analyser(bundle).analyse_audio(wav_bytes(loud))
    assert window.health_state == "faulty" and window.probabilities == {} and window.label is None
    with pytest.raises(AudioError, match="features are not finite"):
        Analyser(bundle).embed_audio_bytes(wav_bytes(loud))


def test_a_live_microphones_drift_periods_follow_the_pipeline_hop_and_an_uploads_its_window(bundle, speech) -> None:
    analyser = Analyser(bundle, windows=WindowSpec(10.0, 0.5))
    analyser.analyse([Window("kitchen", speech, RATE, 0.0, 10.0, True)])
    (saved,) = analyser.drift_state().values()
    assert (saved["hop_s"], saved["window_s"]) == (0.5, 10.0)
    (upload,) = analyser.analyse_audio(wav_bytes(speech))
    assert upload.health_scores["drift_ready"] == 0.0  # a new microphone: nothing learned yet
    restored = Analyser(bundle, windows=WindowSpec(10.0, 2.0))
    restored.restore_drift(analyser.drift_state())
    assert restored.drift_state()["kitchen"]["hop_s"] == 2.0  # restored for the hop the daemon runs with now
