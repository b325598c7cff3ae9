"""The custom-sound library: kept beside the store, versioned, tied to the model's sha256, capped, and
scoring live windows (service/analysis/sound_library.py)."""

import json

import numpy as np
import pytest

from service.analysis.sound_library import MAX_SOUNDS, SoundError, SoundLibrary
from service.config import library_path

RATE = 16000


def spectral_embed(windows):
    """A stand-in model: the magnitude spectrum in 8 bands (real audio in, a unit vector out)."""
    rows = []
    for w in windows:
        spectrum = np.abs(np.fft.rfft(w))
        bands = np.array([b.sum() for b in np.array_split(spectrum, 8)])
        rows.append(bands / max(np.linalg.norm(bands), 1e-12))
    return np.stack(rows).astype(np.float32)


def tone(freq, seconds=1.0, noise=0.0, seed=0):
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.normal(size=t.size)).astype(np.float32)


def library(path, sha="a" * 64, embed=spectral_embed):
    return SoundLibrary(path, sha, embed, RATE, embedding_dim=8)


def test_the_library_sits_beside_the_store(tmp_path):
    assert library_path(tmp_path / "roomtone.db") == tmp_path / "roomtone.sounds"


def test_a_taught_sound_is_detected_in_windows_like_its_examples_and_not_in_others(tmp_path):
    lib = library(tmp_path / "s")
    lib.add("whistle", [("a.wav", tone(6000, seed=1)), ("b.wav", tone(6050, seed=2))], threshold=0.9)
    found = lib.detect(spectral_embed([tone(6020, noise=0.0005), tone(300)]))
    assert [m.name for m in found[0]] == ["whistle"] and found[0][0].score >= 0.9
    assert found[1] == ()


def test_sounds_survive_a_restart_with_their_examples_kept_as_audio(tmp_path):
    lib = library(tmp_path / "s")
    lib.add("whistle", [("a.wav", tone(6000))], threshold=0.8)
    again = library(tmp_path / "s")
    [sound] = again.sounds()
    assert (sound.name, sound.threshold, sound.examples[0].source) == ("whistle", 0.8, "a.wav")
    assert (tmp_path / "s" / "whistle" / "example-0.flac").is_file()
    data = json.loads((tmp_path / "s" / "library.json").read_text())
    assert (data["format"], data["version"]) == ("roomtone-sounds", 4)


def test_a_model_change_re_embeds_sounds_from_their_kept_audio(tmp_path):
    lib = library(tmp_path / "s", sha="a" * 64)
    lib.add("whistle", [("a.wav", tone(6000)), ("b.wav", tone(6100))])
    calls = []

    def new_model(windows):
        calls.append(len(windows))
        return spectral_embed(windows)[:, ::-1].copy()  # another embedding space

    again = library(tmp_path / "s", sha="b" * 64, embed=new_model)
    [sound] = again.sounds()
    assert calls == [2] and sound.active and sound.model_sha256 == "b" * 64
    assert "re-embedded" in sound.calibration
    assert again.detect(new_model([tone(6050)]))[0][0].name == "whistle"
    assert library(tmp_path / "s", sha="b" * 64, embed=new_model).sounds()[0].model_sha256 == "b" * 64


def test_a_sound_taught_from_stored_windows_is_refused_after_a_model_change_saying_what_to_do(tmp_path):
    lib = library(tmp_path / "s", sha="a" * 64)
    lib.add("door", window_examples=[(17, spectral_embed([tone(900)])[0])])
    [sound] = library(tmp_path / "s", sha="b" * 64).sounds()
    assert not sound.active
    assert "roomtone sounds add door FILE... --replace" in sound.problem and "17" in sound.problem
    assert library(tmp_path / "s", sha="b" * 64).detect(spectral_embed([tone(900)])) == [()]


def test_names_duplicates_and_missing_examples_are_refused_with_a_reason(tmp_path):
    lib = library(tmp_path / "s")
    for bad in ("", "Door Bell", "x" * 65, "../etc"):
        with pytest.raises(SoundError) as info:
            lib.add(bad, [("a.wav", tone(500))])
        assert info.value.reason == "invalid_argument"
    lib.add("door", [("a.wav", tone(500))])
    with pytest.raises(SoundError) as info:
        lib.add("door", [("a.wav", tone(700))])
    assert info.value.reason == "already_exists"
    lib.add("door", [("a.wav", tone(700))], replace_existing=True)
    with pytest.raises(SoundError) as info:
        lib.add("empty")
    assert info.value.reason == "invalid_argument"


def test_the_number_of_sounds_is_capped(tmp_path):
    lib = SoundLibrary(tmp_path / "s", "a" * 64, spectral_embed, RATE, embedding_dim=8, max_sounds=2)
    lib.add("one", [("a.wav", tone(500))])
    lib.add("two", [("a.wav", tone(900))])
    with pytest.raises(SoundError) as info:
        lib.add("three", [("a.wav", tone(1500))])
    assert info.value.reason == "resource_exhausted"
    assert SoundLibrary(tmp_path / "t", "a" * 64, spectral_embed, RATE, 8, max_sounds=1000).max_sounds == MAX_SOUNDS


def test_removing_a_sound_forgets_it_and_its_audio(tmp_path):
    lib = library(tmp_path / "s")
    lib.add("door", [("a.wav", tone(500))])
    lib.remove("door")
    assert lib.sounds() == [] and not (tmp_path / "s" / "door").exists()
    assert library(tmp_path / "s").sounds() == []
    with pytest.raises(SoundError) as info:
        lib.remove("door")
    assert info.value.reason == "not_found"


def test_a_read_only_library_re_embeds_in_memory_and_never_writes(tmp_path):
    library(tmp_path / "s", sha="a" * 64).add("whistle", [("a.wav", tone(6000))])
    before = {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    reader = SoundLibrary(tmp_path / "s", "b" * 64, spectral_embed, RATE, 8, read_only=True)
    assert reader.sounds()[0].model_sha256 == "b" * 64
    assert {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()} == before
    with pytest.raises(SoundError) as info:
        reader.add("other", [("a.wav", tone(500))])
    assert info.value.reason == "failed_precondition"


def test_without_history_a_sound_s_threshold_comes_from_its_examples_as_in_the_encoder_s_rule(tmp_path):
    from encoder.few_shot import DEFAULT_THRESHOLD, EXAMPLE_MARGIN, leave_one_out_scores

    lib = library(tmp_path / "s")
    alike = lib.add("whistle", [("a.wav", tone(5500, seed=1)), ("b.wav", tone(5510, seed=2))])
    assert alike.calibration.startswith("examples")
    expected = leave_one_out_scores(alike.embeddings).min() - EXAMPLE_MARGIN
    assert expected > DEFAULT_THRESHOLD and alike.threshold == pytest.approx(expected)
    single = lib.add("hum", [("c.wav", tone(200))])
    assert single.calibration.startswith("default") and single.threshold == DEFAULT_THRESHOLD


def test_only_windows_stored_under_the_loaded_model_calibrate_a_threshold(tmp_path):
    import time as clock

    before = int(clock.time() * 1000)
    first = library(tmp_path / "s", sha="a" * 64)
    assert first.model_since_unix_ms >= before
    assert library(tmp_path / "s", sha="a" * 64).model_since_unix_ms == first.model_since_unix_ms  # same model: kept
    clock.sleep(0.01)
    assert library(tmp_path / "s", sha="b" * 64).model_since_unix_ms > first.model_since_unix_ms  # new model: from now


# --- time-local matching: log-Mel patches, "not this", recalibration ----------------------------------------

class SpectralModel:
    """A stand-in model: the 8-band spectrum as the pooled embedding, beside the real log-Mel (what the daemon's
    backends hand out with `embed_with_features`)."""

    sample_rate = RATE
    embedding_dim = 8

    def __init__(self):
        from encoder.features import LogMelConfig

        self.feature_config = LogMelConfig()

    def embed(self, windows, timings=None):
        return spectral_embed(windows)

    def embed_with_features(self, windows, timings=None):
        import torch

        from encoder.features import log_mel

        return spectral_embed(windows), log_mel(torch.as_tensor(np.stack(windows)), self.feature_config).numpy()


def span_library(path, sha="a" * 64):
    from functools import partial

    from service.analysis.model_runner import column_dim, sound_maps

    model = SpectralModel()
    return SoundLibrary(path, sha, spectral_embed, RATE, embedding_dim=8, embed_columns=partial(sound_maps, model),
                        column_dim=column_dim(model))


def window_with(event, at_s, seconds=10.0, seed=3):
    """Pink-ish background noise with ``event`` added ``at_s`` seconds in."""
    rng = np.random.default_rng(seed)
    x = (0.02 * np.cumsum(rng.normal(size=int(seconds * RATE))) / 50).astype(np.float32)
    x -= x.mean()
    start = int(at_s * RATE)
    x[start:start + len(event)] += event
    return x


def maps_of(windows):
    from service.analysis.model_runner import sound_maps

    pooled, _, maps = sound_maps(SpectralModel(), windows)
    return pooled, maps


def detect_in(lib, windows):
    pooled, maps = maps_of(windows)
    return lib.detect(pooled, maps, [len(w) / RATE for w in windows])


def test_a_window_s_map_for_custom_sounds_is_its_log_mel_in_20_ms_frames_of_64_bands():
    from encoder.patch_matching import pooled_frames
    from service.analysis.model_runner import column_dim, sound_maps

    windows = [tone(500, seconds=10.0), tone(900, seconds=1.8)]
    _, mels, maps = sound_maps(SpectralModel(), windows)
    assert [m.shape for m in maps] == [(500, 64), (90, 64)] and column_dim(SpectralModel()) == 64
    assert np.allclose(maps[1], pooled_frames(mels[1]))


def test_a_short_sound_is_found_inside_a_long_window_and_located(tmp_path):
    lib = span_library(tmp_path / "s")
    chirp = tone(5000, seconds=0.8)
    examples = [("ring.wav", np.concatenate([np.zeros(RATE // 2, np.float32), tone(5000, 0.8, seed=k),
                                             np.zeros(RATE // 2, np.float32)])) for k in range(3)]
    sound = lib.add("ring", examples, threshold=0.9)
    assert sound.patches and 1 <= sound.span_columns <= 25 and sound.embeddings.shape == (3, sound.span_columns, 64)
    [found], [nothing] = detect_in(lib, [window_with(chirp, 6.0)]), detect_in(lib, [window_with(tone(300, 0.8), 6.0)])
    (match,) = found
    assert match.name == "ring" and match.start_s < 6.8 and match.end_s > 6.0 and match.end_s - match.start_s <= 0.5
    assert nothing == ()


def test_not_this_makes_the_marked_window_stop_matching_and_is_kept(tmp_path):
    from service.records import WindowMap

    lib = span_library(tmp_path / "s")
    lib.add("ring", [("ring.wav", window_with(tone(5500, seconds=1.0), 0.5, seconds=2.0))], threshold=0.8)
    lookalike = window_with(tone(5500, seconds=1.0) + tone(2500, seconds=1.0), 2.0)  # partly alike
    _, (frames,) = maps_of([lookalike])
    assert detect_in(lib, [lookalike])[0]  # a false alarm
    marked = lib.mark_not_this("ring", 42, WindowMap(frames, None, 10.0))
    assert [n.window_id for n in marked.not_this] == [42] and marked.negatives.shape == (1, marked.span_columns, 64)
    assert detect_in(lib, [lookalike])[0] == ()
    assert detect_in(lib, [window_with(tone(5500, seconds=1.0), 5.0)])[0]  # the sound itself still is
    again = span_library(tmp_path / "s")
    assert [n.window_id for n in again.sounds()[0].not_this] == [42]
    with pytest.raises(SoundError) as twice:
        again.mark_not_this("ring", 42, WindowMap(frames, None, 10.0))
    assert twice.value.reason == "already_exists"


def test_a_version_1_library_is_read_and_its_file_sounds_become_patch_sounds(tmp_path):
    old = library(tmp_path / "s")  # pooled only, like version 1
    old.add("ring", [("ring.wav", tone(5000, seconds=1.0))], threshold=0.9)
    manifest = tmp_path / "s" / "library.json"
    data = json.loads(manifest.read_text())
    data["version"] = 1
    for entry in data["sounds"]:
        for key in ("span_columns", "not_this", "calibrated_unix_ms"):
            entry.pop(key)
    manifest.write_text(json.dumps(data))
    upgraded = span_library(tmp_path / "s")
    [sound] = upgraded.sounds()
    assert sound.patches and sound.span_columns >= 1 and sound.threshold == 0.9
    assert json.loads(manifest.read_text())["version"] == 4


def ring_example(seed=0):
    return np.concatenate([np.zeros(RATE // 2, np.float32), tone(5000, 0.8, seed=seed), np.zeros(RATE // 2, np.float32)])


def test_version_3_span_sounds_are_re_derived_as_patches_from_their_audio_and_window_ones_made_inactive(tmp_path):
    """A version-3 library held spans of the encoder's column map (512 values per column): sounds with kept audio
    are re-derived as log-Mel patches, those taught from stored windows say how to re-add them."""
    from service.records import WindowMap

    lib = span_library(tmp_path / "s")
    lib.add("ring", [("ring.wav", ring_example())], threshold=0.9)
    pooled, (frames,) = maps_of([ring_example(1)])
    lib.add("knock", window_examples=[(7, WindowMap(frames, None, 1.8, pooled[0]))], threshold=0.9)
    manifest = tmp_path / "s" / "library.json"
    data = json.loads(manifest.read_text())
    data["version"] = 3
    manifest.write_text(json.dumps(data))
    for name in ("ring", "knock"):  # what version 3 kept: spans of the encoder's map, no band weights
        np.save(tmp_path / "s" / name / "embeddings.npy", np.ones((1, 512), np.float32))
        (tmp_path / "s" / name / "weights.npy").unlink()
    knock, ring = span_library(tmp_path / "s").sounds()
    assert ring.active and ring.patches and ring.embeddings.shape == (1, ring.span_columns, 64)
    assert "re-embedded after the change to log-Mel patches; threshold override 0.9 dropped" in ring.calibration
    assert ring.threshold_override is None and ring.threshold == ring.calibrated_threshold  # 0.9 was a cosine of the old map
    assert not knock.active and "roomtone sounds add knock FILE... --replace" in knock.problem
    (match,) = detect_in(span_library(tmp_path / "s"), [window_with(tone(5000, 0.8), 4.0)])[0]
    assert match.name == "ring" and 3.8 < match.start_s < 4.8


def test_a_sound_taught_from_a_window_without_its_map_matches_pooled_embeddings_beside_maps(tmp_path):
    lib = span_library(tmp_path / "s")
    hum = tone(300, seconds=10.0)
    sound = lib.add("hum", window_examples=[(3, spectral_embed([hum])[0])], threshold=0.95)
    assert sound.span_columns == 0 and sound.embeddings.shape == (1, 8)
    found = detect_in(lib, [tone(300, seconds=10.0, noise=0.0005, seed=4), tone(5000, seconds=10.0)])
    assert [m.name for m in found[0]] == ["hum"] and (found[0][0].start_s, found[0][0].end_s) == (0.0, 10.0)
    assert found[1] == ()


def test_only_background_windows_with_a_map_of_its_bands_calibrate_a_patch_sound(tmp_path):
    """Stored windows whose map is missing or of another size (the encoder's column map a version-3 daemon
    kept) are left out of the calibration, and so are the hours they cover."""
    from service.analysis.sound_library import Background
    from service.records import WindowMap

    lib = span_library(tmp_path / "s")
    sound = lib.add("ring", [("a.wav", ring_example(0)), ("b.wav", ring_example(1))])
    rng = np.random.default_rng(0)

    def windows(count, shape):
        return [WindowMap(rng.normal(-60, 10, shape).astype(np.float32), None, 10.0, rng.random(8, dtype=np.float32))
                for _ in range(count)]

    old = windows(360, (1, 8)) + windows(180, (32, 512))
    assert lib.recalibrate("ring", Background.of(old + windows(180, (500, 64)), hours=2.0)).calibration.startswith(
        ("examples", "default"))  # 0.5 h of patch maps
    mapped = Background.of(windows(180, (32, 512)) + windows(540, (500, 64)), hours=2.0)
    recalibrated = lib.recalibrate("ring", mapped, alarms_per_hour=1.0)
    assert recalibrated.calibration.startswith("background: 1.5 h")
    scores = np.array([recalibrated.score(m)[0] for m in mapped.chunks()[0]])
    assert np.isnan(scores[:180]).all() and np.sum(scores[180:] >= recalibrated.threshold) <= 1
    assert sound.span_columns >= 1
