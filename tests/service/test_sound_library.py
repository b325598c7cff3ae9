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
    assert (data["format"], data["version"]) == ("roomtone-sounds", 3)


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


# --- time-local matching, "not this", recalibration ----------------------------------------------------

COLUMN = RATE * 10 // 32  # samples per column of the stand-in map (32 columns per 10 s, as the encoder's)


def spectral_columns(windows):
    """A stand-in column map: the 8-band spectrum of every 0.3125 s column (and its mean, the pooled embedding)."""
    maps = []
    for w in windows:
        parts = [w[i:i + COLUMN] for i in range(0, max(len(w) - COLUMN + 1, 1), COLUMN)]
        maps.append(spectral_embed(parts))
    return np.stack([m.mean(axis=0) for m in maps]), maps


def span_library(path, sha="a" * 64):
    return SoundLibrary(path, sha, spectral_embed, RATE, embedding_dim=8, embed_columns=spectral_columns, column_dim=8)


def window_with(event, at_s, seconds=10.0, seed=3):
    """Pink-ish background noise with ``event`` added ``at_s`` seconds in."""
    rng = np.random.default_rng(seed)
    x = (0.02 * np.cumsum(rng.normal(size=int(seconds * RATE))) / 50).astype(np.float32)
    x -= x.mean()
    start = int(at_s * RATE)
    x[start:start + len(event)] += event
    return x


def detect_in(lib, windows):
    pooled, maps = spectral_columns(windows)
    return lib.detect(pooled, maps, [len(w) / RATE for w in windows])


def test_a_short_sound_is_found_inside_a_long_window_and_located(tmp_path):
    lib = span_library(tmp_path / "s")
    chirp = tone(5000, seconds=0.8)
    examples = [("ring.wav", np.concatenate([np.zeros(RATE // 2, np.float32), tone(5000, 0.8, seed=k),
                                             np.zeros(RATE // 2, np.float32)])) for k in range(3)]
    sound = lib.add("ring", examples, threshold=0.9)
    assert 1 <= sound.span_columns <= 4
    [found], [nothing] = detect_in(lib, [window_with(chirp, 6.0)]), detect_in(lib, [window_with(tone(300, 0.8), 6.0)])
    (match,) = found
    assert match.name == "ring" and match.start_s < 6.9 and match.end_s > 6.0 and match.end_s - match.start_s < 2
    assert nothing == ()


def test_not_this_makes_the_marked_window_stop_matching_and_is_kept(tmp_path):
    lib = span_library(tmp_path / "s")
    lib.add("ring", [("ring.wav", tone(5500, seconds=1.0))], threshold=0.9)
    lookalike = window_with(tone(5500, seconds=1.0) + 0.4 * tone(2500, seconds=1.0), 2.0)  # partly alike
    _, (columns,) = spectral_columns([lookalike])
    assert detect_in(lib, [lookalike])[0]  # a false alarm
    from service.records import WindowMap

    marked = lib.mark_not_this("ring", 42, WindowMap(columns, None, 10.0))
    assert [n.window_id for n in marked.not_this] == [42] and marked.negatives.shape == (1, 8)
    assert detect_in(lib, [lookalike])[0] == ()
    assert detect_in(lib, [window_with(tone(5500, seconds=1.0), 5.0)])[0]  # the sound itself still is
    again = span_library(tmp_path / "s")
    assert [n.window_id for n in again.sounds()[0].not_this] == [42]
    with pytest.raises(SoundError) as twice:
        again.mark_not_this("ring", 42, WindowMap(columns, None, 10.0))
    assert twice.value.reason == "already_exists"


def test_a_version_1_library_is_read_and_its_file_sounds_become_span_sounds(tmp_path):
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
    assert sound.span_columns >= 1 and sound.threshold == 0.9
    assert json.loads(manifest.read_text())["version"] == 3


# --- the column map is wider than the embedding (the encoder's channels x frequency bands) ------------------

def wide_columns(windows):
    """A stand-in whose column map (16 bands per column) is wider than its pooled embedding (8 bands)."""
    maps = []
    for w in windows:
        parts = [w[i:i + COLUMN] for i in range(0, max(len(w) - COLUMN + 1, 1), COLUMN)]
        rows = [np.array([b.sum() for b in np.array_split(np.abs(np.fft.rfft(p)), 16)]) for p in parts]
        maps.append(np.stack([r / max(np.linalg.norm(r), 1e-12) for r in rows]).astype(np.float32))
    return spectral_embed(windows), maps


def wide_library(path):
    return SoundLibrary(path, "a" * 64, spectral_embed, RATE, embedding_dim=8, embed_columns=wide_columns, column_dim=16)


def ring_example(seed=0):
    return np.concatenate([np.zeros(RATE // 2, np.float32), tone(5000, 0.8, seed=seed), np.zeros(RATE // 2, np.float32)])


def test_span_sounds_of_another_column_size_are_re_embedded_from_their_audio_and_window_ones_made_inactive(tmp_path):
    from service.records import WindowMap

    narrow = span_library(tmp_path / "s")  # spans of 8 values per column, as a version-2 library's projected columns
    narrow.add("ring", [("ring.wav", ring_example())], threshold=0.9)
    pooled, (columns,) = spectral_columns([ring_example(1)])
    levels = np.linspace(-40, -20, len(columns))
    narrow.add("knock", window_examples=[(7, WindowMap(columns, levels, 1.8, pooled[0]))], threshold=0.9)
    assert [s.embeddings.shape[1] for s in narrow.sounds()] == [8, 8]
    wide = wide_library(tmp_path / "s")
    knock, ring = wide.sounds()
    assert ring.active and ring.embeddings.shape == (1, 16) and ring.span_columns >= 1
    assert "re-embedded after a change of the column map" in ring.calibration
    assert not knock.active and "roomtone sounds add knock FILE... --replace" in knock.problem
    pooled, maps = wide_columns([window_with(tone(5000, 0.8), 4.0)])
    (match,) = wide.detect(pooled, maps, [10.0])[0]
    assert match.name == "ring" and 3.0 < match.start_s < 4.8


def test_a_sound_taught_from_a_window_without_its_map_matches_pooled_embeddings_beside_wider_maps(tmp_path):
    lib = wide_library(tmp_path / "s")
    hum = tone(300, seconds=10.0)
    sound = lib.add("hum", window_examples=[(3, spectral_embed([hum])[0])], threshold=0.95)
    assert sound.span_columns == 0 and sound.embeddings.shape == (1, 8)
    pooled, maps = wide_columns([tone(300, seconds=10.0, noise=0.0005, seed=4), tone(5000, seconds=10.0)])
    found = lib.detect(pooled, maps, [10.0, 10.0])
    assert [m.name for m in found[0]] == ["hum"] and (found[0][0].start_s, found[0][0].end_s) == (0.0, 10.0)
    assert found[1] == ()


def test_only_background_windows_with_a_column_map_of_its_size_calibrate_a_span_sound(tmp_path):
    from service.analysis.sound_library import Background
    from service.records import WindowMap

    lib = wide_library(tmp_path / "s")
    sound = lib.add("ring", [("a.wav", ring_example(0)), ("b.wav", ring_example(1))])
    rng = np.random.default_rng(0)

    def windows(count, with_map):
        return [WindowMap(rng.random((32, 16), dtype=np.float32) if with_map else rng.random((1, 8), dtype=np.float32),
                          None, 10.0, rng.random(8, dtype=np.float32)) for _ in range(count)]

    mostly_pooled = Background.of(windows(540, with_map=False) + windows(180, with_map=True), hours=2.0)
    assert lib.recalibrate("ring", mostly_pooled).calibration.startswith(("examples", "default"))  # 0.5 h of maps
    mapped = Background.of(windows(180, with_map=False) + windows(540, with_map=True), hours=2.0)
    recalibrated = lib.recalibrate("ring", mapped, alarms_per_hour=1.0)
    assert recalibrated.calibration.startswith("background: 1.5 h")
    scores = np.array([recalibrated.score(m)[0] for m in mapped.chunks()[0]])
    assert np.isnan(scores[:180]).all() and np.sum(scores[180:] >= recalibrated.threshold) <= 1
    assert sound.span_columns >= 1
