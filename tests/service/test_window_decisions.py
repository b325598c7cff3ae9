"""What a live window's record says when there is nothing to label or the head is unsure, and custom
sounds detected beside the head (service/analysis/analyser.py with service/analysis/activity.py and the sound library)."""

from __future__ import annotations


import numpy as np
import pytest

from daemon_support import wav_bytes  # tests/service/ is on sys.path
from service.analysis.analyser import Analyser
from service.config import ActivityConfig
from service.analysis.sound_library import SoundLibrary
from service.analysis.result_builder import rms_dbfs
from service.capture.windowing import Window

RATE = 16000


def live(analyser: Analyser, samples: np.ndarray, mic: str = "kitchen"):
    (analysed,), changes = analyser.analyse([Window(mic, samples, RATE, 0.0, 10.0, True)])
    return analysed.result, changes


def test_digital_silence_is_no_activity_with_the_faulty_microphone_as_the_reason(bundle) -> None:
    result, changes = live(Analyser(bundle), np.zeros((1, 10 * RATE), np.float32))
    assert result.health_state == "faulty" and result.label is None
    assert any("dead_channel" in r for r in result.health_reasons)
    assert [c.kind for c in changes] == ["health_changed"]  # no activity_changed to a made-up class


def test_a_quiet_room_is_quiet_not_a_class(bundle) -> None:
    noise = (10 ** (-60 / 20) * np.random.default_rng(0).normal(size=(1, 10 * RATE))).astype(np.float32)
    result, changes = live(Analyser(bundle), noise)
    assert result.health_state != "faulty" and result.rms_dbfs < -45
    assert result.label == "quiet" and ("activity_changed", "quiet") in [(c.kind, c.current) for c in changes]


def test_an_unsure_head_gives_unknown_with_its_probabilities_kept(bundle, speech) -> None:
    result, _ = live(Analyser(bundle, activity=ActivityConfig(unknown_below=1.0)), speech)
    assert result.label == "unknown" and result.probabilities and max(result.probabilities.values()) < 1.0
    sure, _ = live(Analyser(bundle, activity=ActivityConfig(unknown_below=0.0)), speech)
    assert sure.label in bundle.class_names


def test_a_head_with_a_reserved_class_name_is_refused(bundle) -> None:
    import dataclasses

    head = dict(bundle.head, class_names=["quiet", "water"])
    with pytest.raises(ValueError, match="reserves"):
        Analyser(dataclasses.replace(bundle, head=head))


def test_a_custom_sound_is_detected_on_live_windows_and_becomes_an_event(bundle, speech, tmp_path) -> None:
    analyser = Analyser(bundle)
    library = SoundLibrary(tmp_path / "sounds", "a" * 64, analyser.runner.embedder.embed, RATE,
                           bundle.embedding_dim)
    library.add("chatter", [("speech.flac", speech[0])], threshold=0.95)
    analyser.sounds = library
    result, changes = live(analyser, speech)
    assert [m.name for m in result.sounds] == ["chatter"] and result.sounds[0].score > 0.99
    [event] = [c for c in changes if c.kind == "sound_detected"]
    assert (event.current, event.mic_id, event.time_unix_ms) == ("chatter", "kitchen", 0)
    assert event.score == pytest.approx(result.sounds[0].score)
    silent, changes = live(analyser, np.zeros((1, 10 * RATE), np.float32), mic="hall")
    assert silent.sounds == () and not [c for c in changes if c.kind == "sound_detected"]
    (upload,) = analyser.analyse_audio(wav_bytes(speech))
    assert [m.name for m in upload.sounds] == ["chatter"]  # Classify reports them too


def plain_rms_dbfs(samples: np.ndarray) -> float:
    """The record's level as first written: RMS of the finite samples of the float64 mono mix, -120 floor."""
    mono = np.asarray(samples, dtype=np.float64).mean(axis=0)
    finite = mono[np.isfinite(mono)]
    rms = float(np.sqrt(np.mean(finite * finite))) if finite.size else 0.0
    return max(-120.0, 20.0 * np.log10(rms)) if rms > 0 else -120.0


@pytest.mark.parametrize("case", ["noise", "stereo", "NaN/Inf", "all NaN", "silence", "empty"])
def test_the_record_level_is_the_rms_of_the_finite_mono_mix(case):
    rng = np.random.default_rng(5)
    x = rng.normal(0, 0.05, (1, 10 * RATE)).astype(np.float32)
    broken = x.copy()
    broken[0, ::501], broken[0, 7] = np.nan, np.inf
    samples = {"noise": x, "stereo": np.concatenate([x, 0.1 * x]), "NaN/Inf": broken,
               "all NaN": np.full((1, 100), np.nan, np.float32), "silence": np.zeros((1, RATE), np.float32),
               "empty": np.zeros((1, 0), np.float32)}[case]
    assert rms_dbfs(samples) == plain_rms_dbfs(samples)
    assert (rms_dbfs(samples) == -120.0) == (case in ("all NaN", "silence", "empty"))
