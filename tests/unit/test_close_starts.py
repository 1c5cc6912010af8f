"""Starts that meet a pool's close: none begins after it, none outlives it.

Bookkeeping on the fake backend (its ``gate`` holds a start across the
close); the same against real kernel processes is in
``tests/integration/test_lifecycle.py``.
"""

from __future__ import annotations

import threading

import nbpool
from nbpool.core.records import Start, Worker
from nbpool.core.runner import Runner
from nbpool.errors import WorkerStartFailed
from tests.helpers import wait_for


class Reports:
    """The callables a Runner reports to, recording what it said, in order."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str]] = []
        self.any = threading.Event()

    def _note(self, what: str, w: Worker) -> None:
        self.said.append((what, w.id))
        self.any.set()

    def started(self, w: Worker, kernel) -> bool:
        self._note("started", w)
        return False  # the pool closed: the runner stops the kernel

    def start_failed(self, w: Worker, exc: WorkerStartFailed) -> None:
        self._note("start failed", w)

    def stopped(self, w: Worker) -> None:
        self._note("stopped", w)


def runner(backend, reports: Reports) -> Runner:
    return Runner(
        lambda worker_id, kernel_name: backend.start(worker_id, kernel_name, 5.0),
        started=reports.started,
        start_failed=reports.start_failed,
        stopped=reports.stopped,
        release=lambda lease: None,
        closed=lambda: True,
    )


def test_a_start_decided_before_the_close_but_run_after_it_starts_nothing(backend):
    """Actions run off the coordinator's lock: a Start may reach the runner after
    stop_all, when the backend is closing. It is dropped, never started."""
    reports = Reports()
    r = runner(backend, reports)
    r.stop_all([])
    r.run([Start(Worker("w9", "python3"))])
    wait_for(reports.any.is_set, 5, "the runner to report on the late start")
    assert backend.started == [], "a kernel was started after the pool closed"
    assert reports.said == [("stopped", "w9")], "its record must go"


def test_stop_all_returns_only_after_the_start_in_flight_stopped_its_kernel(backend):
    """A start held across stop_all is waited for, and its kernel is stopped."""
    reports = Reports()
    r = runner(backend, reports)
    backend.gate.clear()
    r.run([Start(Worker("w1", "python3"))])

    def stop_all() -> None:
        r.stop_all([])
        reports.said.append(("stop_all returned", ""))

    closer = threading.Thread(target=stop_all)
    closer.start()
    backend.gate.set()
    closer.join(10)
    assert not closer.is_alive(), "stop_all did not return"
    assert reports.said == [("started", "w1"), ("stop_all returned", "")]
    assert backend.started[0].stopped.is_set(), "the late kernel was not stopped"


def test_a_start_held_across_shutdown_leaves_no_kernel_running(backend):
    """Pool level: a worker starting while shutdown() runs ends stopped or never
    started, and shutdown() does not return before its start ended."""
    pool = nbpool.Pool(size=1, max_size=2, backend=backend)
    pool.start()
    backend.gate.clear()
    pool.resize(2)  # a second worker's start, held at the gate
    wait_for(lambda: len(pool.status()["workers"]) == 2, 5, "the second worker's record")
    done = threading.Event()
    closer = threading.Thread(target=lambda: (pool.shutdown(), done.set()))
    closer.start()
    wait_for(backend.closing.is_set, 5, "shutdown to set closing")
    backend.gate.set()
    closer.join(10)
    assert done.is_set(), "shutdown did not return"
    assert all(k.stopped.is_set() for k in backend.started), "a kernel outlived shutdown()"
    assert len(backend.started) == 1, "the held start went on to start a kernel after close"
