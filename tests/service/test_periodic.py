"""Specification of the one periodic-thread loop (service/periodic.py): calls at its interval, outlives a
failing call, runs its start-up step on its own thread, and stops without another call."""

from __future__ import annotations

import logging
import threading
import time

from service.periodic import PeriodicThread


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_failing_call_goes_to_on_error_and_the_loop_goes_on():
    calls, errors = [], []

    def work():
        calls.append(1)
        raise OSError("disk I/O error")

    loop = PeriodicThread("test-loop", work, 0.01, on_error=errors.append)
    loop.start()
    assert wait_until(lambda: len(calls) >= 5)
    assert loop.is_alive()
    loop.stop()
    assert not loop.is_alive()
    assert len(errors) == len(calls) and all(isinstance(e, OSError) for e in errors)


def test_without_on_error_a_failure_is_logged_with_its_traceback(caplog):
    def work():
        raise ValueError("bad")

    loop = PeriodicThread("test-loop", work, 0.01)
    with caplog.at_level(logging.ERROR, logger="roomtone.daemon"):
        loop.start()
        assert wait_until(lambda: any(r.getMessage().startswith("test-loop failed") for r in caplog.records))
        loop.stop()
    assert caplog.records[0].exc_info is not None


def test_at_start_calls_at_once_and_otherwise_only_after_one_interval():
    at_once, later = [], []
    first = PeriodicThread("at-once", lambda: at_once.append(1), 3600, at_start=True)
    second = PeriodicThread("later", lambda: later.append(1), 3600)
    first.start(), second.start()
    assert wait_until(lambda: at_once == [1])
    time.sleep(0.05)
    first.stop(), second.stop()
    assert at_once == [1] and later == []


def test_the_start_up_step_runs_once_on_the_loops_own_thread():
    threads = []
    loop = PeriodicThread("own-thread", lambda: None, 0.01, on_thread_start=lambda: threads.append(threading.current_thread().name))
    loop.start()
    assert wait_until(lambda: threads)
    time.sleep(0.05)
    loop.stop()
    assert threads == ["own-thread"]


def test_stop_waits_for_a_call_in_progress_and_no_call_follows():
    started, finished, calls = threading.Event(), threading.Event(), []

    def work():
        calls.append(1)
        started.set()
        time.sleep(0.2)
        finished.set()

    loop = PeriodicThread("slow", work, 0.01, at_start=True)
    loop.start()
    assert started.wait(10)
    loop.stop()
    assert finished.is_set() and not loop.is_alive()
    time.sleep(0.05)
    assert calls == [1]
