"""Bounded versions of the load and soak benches (bench/api_load.py, bench/soak.py; their full-length
figures are in docs/reliability.md): 50 StreamEvents followers and 20 ListEvents hammers cost the pipeline
no window and every follower sees every window; 600 windows leave no file descriptor behind and
barely move the resident memory."""

from __future__ import annotations

from bench.api_load import api_load
from bench.soak import soak


def test_fifty_followers_and_twenty_listers_cost_the_pipeline_no_window(small_model):
    result = api_load(seconds=15, streams=50, listers=20, model=str(small_model), window_s=1.0, hop_s=0.5)
    print(result)
    assert result["exit_code"] == 0
    assert result["windows_dropped"] == 0 and result["stream_items_dropped"] == 0
    assert result["windows_stored"] >= 15 * 2 * 0.8  # two windows a second at real time
    assert result["stream_errors"] == [] and result["stream_gaps"] == 0 and result["stream_windows_missing"] == 0
    assert result["windows_every_stream_saw"] >= result["windows_stored"] - 2
    assert result["list_events"]["errors"] == 0 and result["list_events"]["calls"] > 100
    assert result["stream_latency_ms"]["p99"] is not None and result["list_events"]["p99_ms"] is not None


def test_six_hundred_windows_leave_no_file_descriptor_behind_and_rss_flat(small_model, clip):
    result = soak(windows=600, model=str(small_model), clip=str(clip), window_s=1.0, hop_s=0.5)
    print(result)
    assert result["exit_code"] == 0 and result["windows_at_last_sample"] >= 540
    # one descriptor of slack: a /metrics connection may still be closing when /proc is read; a leak per
    # window would show hundreds
    assert result["fds"]["end"] <= result["fds"]["warm"] + 1 and result["fds"]["max"] <= result["fds"]["warm"] + 2
    assert result["rss_mib"]["end"] - result["rss_mib"]["warm"] < 25
