"""Task leases (``pool.map``'s requests) on the Coordinator: session-free workers, bound to nothing."""

from __future__ import annotations

from nbpool.errors import LeaseTimeout
from tests.helpers import wait_for


def _tasks(coord, count):
    settled = []
    waiters = coord.request_tasks("python3", count, settled.append)
    return waiters, settled


def test_a_task_lease_binds_no_session_and_skips_session_workers(make):
    """Task requests get only unbound workers; the worker is free again after release."""
    coord = make(size=2, max_size=2)
    held = coord.wait(coord.request("s", "python3"), 5)
    waiters, settled = _tasks(coord, 1)
    assert settled == waiters and waiters[0].lease is not None
    task = waiters[0].lease
    assert task.session is None and task.worker_id != held.worker_id
    assert coord.sessions.bound_to(task.worker_id) is None
    task.release()
    assert coord.snapshot().workers[1][0].state == "idle"
    held.release()


def test_tasks_start_workers_up_to_max_size_and_sessions_come_first(make, backend):
    """With the free workers taken, task requests start more (up to max_size); a new
    session waiting at the same time gets the first worker that is ready."""
    coord = make(size=1, max_size=3)
    backend.gate.clear()  # hold the starts
    waiters, settled = _tasks(coord, 3)
    assert len(settled) == 1  # the warm worker; two more are starting
    session = coord.request("new", "python3")
    assert len(coord.snapshot().workers) == 3  # the session waits for a start too
    backend.gate.set()
    wait_for(lambda: session.lease is not None, 5, "the session to get a started worker")
    wait_for(lambda: len(settled) == 2, 5, "the tasks to get the other one")
    assert len(coord.snapshot().workers) == 3 and not waiters[2].event.is_set()
    session.lease.release()  # the session's worker stays bound to it
    coord.end_session("new")  # its worker is replaced by a fresh, unbound one
    wait_for(lambda: len(settled) == 3, 5, "the last task request")
    for w in waiters:
        w.lease.release()


def test_task_requests_fail_at_once_when_sessions_hold_every_worker(make):
    """Every worker bound to a session and max_size reached: a map's requests fail at once,
    naming the sessions; a worker busy with another map is worth waiting for."""
    coord = make(size=1, max_size=1)
    held = coord.wait(coord.request("only", "python3"), 5)
    held.release()
    waiters, settled = _tasks(coord, 2)
    assert len(settled) == 2 and all(isinstance(w.error, LeaseTimeout) for w in waiters)
    assert "only" in str(waiters[0].error) and "max_size" in str(waiters[0].error)
