"""The bookkeeping of bench/live_accuracy.py (P3) on a made-up track: where each clip lies, finding the
track in daemon time from window levels, and picking for each clip a window that holds only that clip."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from bench.live_accuracy import RATE, align, track_rms_dbfs, window_of_each_clip

PLAYED = 1_700_000_000.0


def made_up_track(gap_s: float = 2.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Three 10 s noise clips at -20, -35 and -28 dBFS, each after ``gap_s`` of silence."""
    rng = np.random.default_rng(0)
    gap = np.zeros(int(gap_s * RATE), np.float32)
    parts, spans, position = [gap], [], len(gap)
    for level_db in (-20, -35, -28):
        clip = (rng.standard_normal(10 * RATE) * 10 ** (level_db / 20)).astype(np.float32)
        spans.append((position / RATE, (position + len(clip)) / RATE))
        parts += [clip, gap]
        position += len(clip) + len(gap)
    return np.concatenate(parts), spans


def daemon_windows(track: np.ndarray, latency_s: float, hop_s: float = 1.0) -> list[dict]:
    """10 s windows every ``hop_s`` as a daemon that hears the track ``latency_s`` after it was started."""
    windows = []
    for k in range(int(len(track) / RATE / hop_s) + 3):
        start = PLAYED + latency_s - 5 + k * hop_s
        track_start = start - PLAYED - latency_s
        windows.append({"start_s": start, "end_s": start + 10, "label": f"w{k}",
                        "rms_dbfs": track_rms_dbfs(track, track_start, 10.0)})
    return windows


@pytest.mark.parametrize("latency_s", [0.0, 0.73, 2.4])
def test_alignment_finds_how_late_the_daemon_heard_the_track_from_window_levels(latency_s):
    track, _ = made_up_track()
    offset, error = align(daemon_windows(track, latency_s), track, PLAYED)
    assert offset == pytest.approx(-latency_s, abs=0.011)
    assert error < 0.1


def test_every_clip_gets_a_window_holding_only_that_clip_and_silence():
    track, spans = made_up_track(gap_s=2.0)
    windows = daemon_windows(track, 0.73)
    chosen = window_of_each_clip(spans, windows, PLAYED, -0.73, min_overlap_s=9.0)
    for (start, end), (overlap, window) in zip(spans, chosen):
        assert overlap >= 9.5  # a 1 s hop puts some window within half a second of the clip
        a, b = window["start_s"] - PLAYED - 0.73, window["end_s"] - PLAYED - 0.73
        assert start - 2.0 < a and b < end + 2.0  # never reaches into a neighbouring clip


def test_a_clip_without_a_window_that_overlaps_enough_gets_none():
    _, spans = made_up_track()
    sparse = [{"start_s": PLAYED + 6.0, "end_s": PLAYED + 16.0, "label": "x", "rms_dbfs": -30.0}]
    assert [window for _, window in window_of_each_clip(spans, sparse, PLAYED, 0.0, 9.0)] == [None, None, None]


def _sinks() -> str:
    return subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True).stdout


def _defaults() -> list[str]:
    return [subprocess.run(["pactl", f"get-default-{kind}"], capture_output=True, text=True).stdout for kind in ("sink", "source")]


@pytest.mark.audio
def test_the_bench_sink_is_unloaded_and_the_defaults_restored_even_when_the_run_fails():
    from tests.service.daemon_support import null_sink_scope, pulseaudio_scope

    with pulseaudio_scope() as reason:
        if reason:
            pytest.skip(reason)
        before = _defaults()
        with pytest.raises(RuntimeError):
            with null_sink_scope("roomtone_p3_spec"):
                assert "roomtone_p3_spec" in _sinks()
                raise RuntimeError("the run failed")
        assert "roomtone_p3_spec" not in _sinks()
        assert _defaults() == before
