"""The timeline's summary of a span: per microphone, runs of windows with the same activity, at most one run
per time bucket, so the page's 7-day view reads a few thousand rows instead of every window of the week.

`timeline_runs` turns the store's per-bucket label counts (`EventStore.label_buckets`) into runs: each bucket
shows its most frequent label, and consecutive buckets of one microphone with the same label, whose windows
lie at most ``max_gap_ms`` apart, are one run. With buckets no longer than the hop every bucket holds at most
one window, and the runs are exactly the runs of consecutive windows with the same label.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from service.store.event_store import LabelBucket


@dataclass(frozen=True)
class TimelineRun:
    """Consecutive windows of one microphone shown as one activity on the timeline."""

    mic_id: str
    label: str | None  # the most frequent label of each of its buckets
    start_unix_ms: int
    end_unix_ms: int
    first_window_id: int  # the first window with that label in its first bucket
    windows: int  # every window in its buckets, whatever their label


def bucket_ms_for(since_unix_ms: int, until_unix_ms: int, buckets: int) -> int:
    """The bucket length that cuts ``[since, until)`` into at most ``buckets`` buckets (at least 1 ms)."""
    return max(1, -(-(until_unix_ms - since_unix_ms) // buckets))


def timeline_runs(buckets: Iterable[LabelBucket], max_gap_ms: int) -> list[TimelineRun]:
    """Runs per microphone (microphones by name, runs oldest first) of label counts per bucket: each bucket's
    most frequent label (ties: the label seen first), consecutive buckets merged while the label stays and
    the next bucket's first window starts at most ``max_gap_ms`` after the run's last window ends."""
    cells: dict[tuple[str, int], list[LabelBucket]] = {}
    for bucket in buckets:
        cells.setdefault((bucket.mic_id, bucket.bucket), []).append(bucket)
    runs: list[TimelineRun] = []
    for (mic_id, _), labels in sorted(cells.items()):
        shown = max(labels, key=lambda b: (b.windows, -b.first_window_id))
        start = min(b.start_unix_ms for b in labels)
        end = max(b.end_unix_ms for b in labels)
        windows = sum(b.windows for b in labels)
        last = runs[-1] if runs else None
        if last and last.mic_id == mic_id and last.label == shown.label and start - last.end_unix_ms <= max_gap_ms:
            runs[-1] = TimelineRun(mic_id, last.label, last.start_unix_ms, max(end, last.end_unix_ms),
                                   last.first_window_id, last.windows + windows)
        else:
            runs.append(TimelineRun(mic_id, shown.label, start, end, shown.first_window_id, windows))
    return runs
