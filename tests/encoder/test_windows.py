"""Specification of how recordings are cut into windows (encoder/windows.py)."""

import pytest

from encoder.windows import Span, WindowSpec, window_spans

RATE = 16000


def test_a_ten_second_clip_is_exactly_one_window():
    assert window_spans(10 * RATE, RATE) == [Span(0, 10 * RATE)]


def test_a_long_recording_gives_consecutive_windows_and_a_shorter_tail():
    spans = window_spans(25 * RATE, RATE)
    assert spans == [Span(0, 10 * RATE), Span(10 * RATE, 20 * RATE), Span(20 * RATE, 25 * RATE)]


def test_a_tail_shorter_than_the_minimum_is_dropped():
    assert window_spans(10 * RATE + RATE // 2, RATE) == [Span(0, 10 * RATE)]


def test_a_short_recording_is_one_short_window_and_a_tiny_one_none():
    assert window_spans(3 * RATE, RATE) == [Span(0, 3 * RATE)]
    assert window_spans(RATE // 10, RATE) == []


def test_overlapping_windows_follow_the_hop():
    spans = window_spans(20 * RATE, RATE, WindowSpec(10, 5))
    assert [s.start for s in spans] == [0, 5 * RATE, 10 * RATE]
    assert spans[1].offset_s(RATE) == 5.0


def test_a_window_spec_counts_samples_once_with_the_hop_defaulting_to_the_window():
    assert WindowSpec(10.0).in_samples(16000) == (160000, 160000, 16000)
    assert (WindowSpec(10.0).step_s, WindowSpec(10.0, 2.0).step_s) == (10.0, 2.0)
    assert WindowSpec(4.0, 1.0, min_s=0.5).consecutive() == WindowSpec(4.0, None, 0.5)
    assert WindowSpec(2.5, 0.5, min_s=0.0).in_samples(44100) == (110250, 22050, 1)
    with pytest.raises(ValueError, match="positive"):
        WindowSpec(10.0, 0.0).in_samples(16000)
