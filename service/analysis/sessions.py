"""Activity sessions: consecutive windows of one activity merged into "cooking 18:02-18:25" with hysteresis.

A label must hold for ``min_duration_s`` before its session starts (one stray window never starts one),
and an open session survives interruptions (other labels, quiet, a faulty window) shorter than
``gap_tolerance_s``: it ends when no window of its activity has been seen for longer than that, or when
another activity has held for ``min_duration_s``. A microphone has at most one open session.

`SessionTracker` is pure state over window records (no clock, no I/O): the daemon feeds it every stored
window and stores, streams and publishes the `SessionEvent`s it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.config import SessionConfig
from service.records import WindowResult
from service.daemon_vocabulary import SESSION_ENDED, SESSION_EVENT_KINDS, SESSION_STARTED  # noqa: F401 (re-exported)

@dataclass(frozen=True)
class ActivitySession:
    """One stretch of one activity on one microphone."""

    mic_id: str
    activity: str
    start_unix_ms: int  # start of its first window
    end_unix_ms: int | None  # end of its last window; None while the session is open
    windows: int  # windows labelled with the activity (interruptions not counted)
    mean_probability: float  # mean head probability of the activity over those windows
    last_seen_unix_ms: int = 0  # end of the latest window of the activity (the end once closed)
    session_id: int | None = None  # assigned by the store

    @property
    def is_open(self) -> bool:
        """True until the session has ended."""
        return self.end_unix_ms is None


@dataclass(frozen=True)
class SessionEvent:
    """A session started (``end_unix_ms`` None) or ended; ``time_unix_ms`` is when, in window time."""

    kind: str  # one of SESSION_EVENT_KINDS
    session: ActivitySession
    time_unix_ms: int  # session start for session_started, session end for session_ended

    @property
    def mic_id(self) -> str:
        """The session's microphone (so filters treat it like every other live item)."""
        return self.session.mic_id

    @property
    def activity(self) -> str:
        """The session's activity (what a label filter matches)."""
        return self.session.activity


@dataclass
class _Run:
    """Windows of one label seen so far (an open session or a candidate for one)."""

    mic_id: str
    activity: str
    start_ms: int
    last_end_ms: int
    windows: int = 1
    probability_sum: float = 0.0
    session_id: int | None = None

    def session(self, end_ms: int | None) -> ActivitySession:
        return ActivitySession(self.mic_id, self.activity, self.start_ms, end_ms, self.windows,
                               round(self.probability_sum / max(self.windows, 1), 4), self.last_end_ms, self.session_id)


class SessionTracker:
    """Per-microphone session state; `update` with each stored window returns the session events it causes."""

    def __init__(self, config: SessionConfig = SessionConfig()) -> None:
        self.config = config
        self._min_ms = int(round(config.min_duration_s * 1000))
        self._gap_ms = int(round(config.gap_tolerance_s * 1000))
        self._open: dict[str, _Run] = {}
        self._candidate: dict[str, _Run] = {}

    def _activity_of(self, window: WindowResult) -> str | None:
        """The label that counts for sessions: none for ignored labels and faulty windows."""
        if not window.label or window.label in self.config.ignored_labels or window.health_state == "faulty":
            return None
        return window.label

    def update(self, window: WindowResult) -> list[SessionEvent]:
        """Feed one window (windows of a microphone in time order); returns ended/started events, in order."""
        mic = window.mic_id
        activity = self._activity_of(window)
        events: list[SessionEvent] = []
        run = self._open.get(mic)
        if run is not None:
            same = activity == run.activity
            if (window.start_unix_ms if same else window.end_unix_ms) - run.last_end_ms > self._gap_ms:
                events.append(self._end(mic))
                run = None
        if activity is None:
            candidate = self._candidate.get(mic)
            if candidate is not None and window.end_unix_ms - candidate.last_end_ms > self._gap_ms:
                del self._candidate[mic]
            return events
        probability = float(window.probabilities.get(activity, 0.0))
        if run is not None and activity == run.activity:
            run.last_end_ms = window.end_unix_ms
            run.windows += 1
            run.probability_sum += probability
            self._candidate.pop(mic, None)
            return events
        candidate = self._candidate.get(mic)
        if (candidate is not None and candidate.activity == activity
                and window.start_unix_ms - candidate.last_end_ms <= self._gap_ms):
            candidate.last_end_ms = window.end_unix_ms
            candidate.windows += 1
            candidate.probability_sum += probability
        else:
            candidate = self._candidate[mic] = _Run(mic, activity, window.start_unix_ms, window.end_unix_ms, 1,
                                                     probability)
        if candidate.last_end_ms - candidate.start_ms >= self._min_ms:
            if run is not None:
                events.append(self._end(mic))
            del self._candidate[mic]
            self._open[mic] = candidate
            events.append(SessionEvent(SESSION_STARTED, candidate.session(None), candidate.start_ms))
        return events

    def _end(self, mic: str) -> SessionEvent:
        run = self._open.pop(mic)
        return SessionEvent(SESSION_ENDED, run.session(run.last_end_ms), run.last_end_ms)

    def close_idle(self, now_unix_ms: int, mic_ids: set[str] | None = None) -> list[SessionEvent]:
        """End the sessions (of ``mic_ids``, or all) with no window of their activity for longer than the gap
        tolerance before ``now_unix_ms`` (a microphone that stopped delivering windows)."""
        return [self._end(mic) for mic, run in list(self._open.items())
                if (mic_ids is None or mic in mic_ids) and now_unix_ms - run.last_end_ms > self._gap_ms]

    def close_all(self) -> list[SessionEvent]:
        """End every open session at its last window (the daemon stops listening)."""
        self._candidate.clear()
        return [self._end(mic) for mic in list(self._open)]

    def set_session_id(self, mic_id: str, session_id: int) -> None:
        """Remember the store id of a microphone's open session (so its end event carries it)."""
        if mic_id in self._open:
            self._open[mic_id].session_id = session_id

    def open_session(self, mic_id: str) -> ActivitySession | None:
        """The microphone's open session, or None."""
        run = self._open.get(mic_id)
        return run.session(None) if run is not None else None
