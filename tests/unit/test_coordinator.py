"""Coordinator bookkeeping, driven with a fake backend (no kernels, no sleeps)."""

from __future__ import annotations

import threading

import pytest

from nbpool.errors import LeaseTimeout, PoolClosed, WorkerDied, WorkerStartFailed
from tests.helpers import status_of, wait_for


def lease(coord, session, timeout=5.0, kernel="python3"):
    return coord.wait(coord.request(session, kernel), timeout)


def test_waiters_of_a_session_are_served_in_arrival_order(make):
    """Requests queued for a busy session's worker are granted strictly FIFO."""
    coord = make(size=1)
    first = lease(coord, "s")
    waiters = [coord.request("s", "python3") for _ in range(3)]
    assert not any(w.event.is_set() for w in waiters)
    first.release()
    for i, waiter in enumerate(waiters):
        assert waiter.event.is_set() and waiter.lease is not None, f"waiter {i} not served"
        assert not any(w.event.is_set() for w in waiters[i + 1 :]), "a later waiter overtook"
        waiter.lease.release()


def test_new_sessions_are_served_in_arrival_order(make):
    """With the pool full and a slot coming free, unbound sessions queue FIFO;
    once nothing more can come free, the rest fail at once."""
    coord = make(size=1, evict_idle_sessions=False)
    held = lease(coord, "a")
    coord.end_session("a")  # in flight: its worker is replaced when released
    b, c = coord.request("b", "python3"), coord.request("c", "python3")
    assert not b.event.is_set() and not c.event.is_set(), "a slot is coming free: both wait"
    held.release()
    wait_for(lambda: b.event.is_set(), what="b granted")
    assert b.lease is not None, "the first in line gets the fresh worker"
    assert c.event.is_set() and isinstance(c.error, LeaseTimeout), "c cannot be helped now"
    b.lease.release()


def test_a_session_never_moves_to_another_worker(make):
    """A session whose worker is busy waits for that worker even if another is idle."""
    coord = make(size=2)
    first = lease(coord, "etl")
    waiter = coord.request("etl", "python3")
    assert not waiter.event.is_set(), "it must not take the idle second worker"
    first.release()
    assert waiter.lease.worker_id == first.worker_id
    waiter.lease.release()


def test_default_session_binds_like_any_other(make):
    """The default session (None -> 'default') keeps its worker between leases."""
    coord = make(size=2)
    with lease(coord, "default") as one:
        pass
    with lease(coord, "default") as two:
        pass
    assert one.worker_id == two.worker_id


def test_pool_grows_to_max_size_then_times_out_naming_sessions(make, backend):
    """New sessions start workers up to max_size; beyond, LeaseTimeout names the holders."""
    coord = make(size=1, max_size=3)
    leases = [lease(coord, name) for name in ("a", "b", "c")]
    assert len(backend.started) == 3
    with pytest.raises(LeaseTimeout) as info:
        lease(coord, "d", timeout=0.05)
    message = str(info.value)
    assert "sessions a, b, c" in message and "max_size=3" in message
    assert "\n" not in message
    for held in leases:
        held.release()


def test_new_session_fails_at_once_when_waiting_cannot_help(make):
    """Every worker bound to an idle session, none starting, no eviction: a new
    session gets LeaseTimeout at once (not after its lease timeout), saying how
    to free a worker."""
    coord = make(size=2, max_size=2)
    for name in ("a", "b"):
        lease(coord, name).release()
    waiter = coord.request("c", "python3")
    assert waiter.event.is_set(), "decided in the request itself"
    assert isinstance(waiter.error, LeaseTimeout)
    message = str(waiter.error)
    assert "within" not in message and "sessions a, b" in message and "end_session" in message


def test_new_session_waits_while_a_replacement_starts(make, backend):
    """A worker being replaced may serve a new session: it waits and gets it."""
    coord = make(size=1, max_size=1)
    lease(coord, "a").release()
    backend.gate.clear()  # hold the replacement's start
    coord.end_session("a")
    waiter = coord.request("b", "python3")
    assert not waiter.event.is_set(), "a fresh worker is starting: waiting can help"
    backend.gate.set()
    wait_for(lambda: waiter.event.is_set(), what="b granted")
    assert waiter.lease is not None
    waiter.lease.release()


def test_requests_of_one_new_session_need_one_worker(make, backend):
    """Three requests of one new session while the only slot's replacement
    starts are one session: none fails at once; the first gets the fresh worker
    and the others follow it there, in arrival order."""
    coord = make(size=1, max_size=1)
    lease(coord, "a").release()
    backend.gate.clear()  # hold the replacement's start
    coord.end_session("a")
    waiters = [coord.request("b", "python3") for _ in range(3)]
    assert not any(w.event.is_set() for w in waiters), [str(w.error) for w in waiters]
    backend.gate.set()
    wait_for(lambda: waiters[0].event.is_set(), what="b granted")
    worker = waiters[0].lease.worker_id
    for i, waiter in enumerate(waiters):
        assert waiter.lease is not None and waiter.lease.worker_id == worker, f"request {i}"
        assert not any(w.event.is_set() for w in waiters[i + 1 :]), "a later request overtook"
        waiter.lease.release()
    assert len(backend.started) == 2, "the first worker and its one replacement"


def test_a_lazy_start_starts_one_worker_for_one_new_sessions_requests(make, backend):
    """Four requests of one new session while the first worker starts start no more."""
    coord = make(size=0, max_size=4)
    backend.gate.clear()
    coord.start(1)
    waiters = [coord.request("s", "python3") for _ in range(4)]
    assert len(status_of(coord)["workers"]) == 1, "no worker per duplicate request"
    backend.gate.set()
    for waiter in waiters:
        wait_for(lambda w=waiter: w.event.is_set(), what="request granted")
        waiter.lease.release()
    assert len(backend.started) == 1


def test_hopeless_new_session_fails_all_its_requests_naming_the_holders(make, backend):
    """A new session that cannot get a worker fails every one of its requests at
    once, and the message names what holds the workers: the session waiting
    ahead for the one starting, never "sessions none"."""
    coord = make(size=1, max_size=1)
    lease(coord, "a").release()
    backend.gate.clear()
    coord.end_session("a")
    first = [coord.request("b", "python3") for _ in range(2)]
    late = [coord.request("c", "python3") for _ in range(2)]
    assert not any(w.event.is_set() for w in first), "b is first in line for the fresh worker"
    assert all(isinstance(w.error, LeaseTimeout) for w in late)
    message = str(late[0].error)
    assert "1 starting for new sessions b" in message, message
    assert "none" not in message and "max_size=1 reached" in message
    backend.gate.set()
    for waiter in first:
        wait_for(lambda w=waiter: w.event.is_set(), what="b granted")
        waiter.lease.release()


def test_lease_timeout_for_a_busy_session_says_its_worker_is_busy(make):
    """A session queued behind its own work is told its worker is still busy."""
    coord = make(size=1)
    held = lease(coord, "s")
    with pytest.raises(LeaseTimeout, match="still busy with an earlier execution"):
        lease(coord, "s", timeout=0.05)
    held.release()


def test_eviction_ends_least_recently_used_idle_session(make, backend):
    """With evict_idle_sessions, a new session evicts the LRU idle one, which is told."""
    coord = make(size=1, evict_idle_sessions=True)
    old = lease(coord, "old")
    old.release()
    new = lease(coord, "new")
    assert new.worker_id != old.worker_id, "the evicted worker must be replaced, not reused"
    assert backend.started[0].stopped.wait(5)
    new.release()
    coord.end_session("new")
    again = lease(coord, "old")
    assert again.generation == 1
    assert "evicted" in again.session_reset
    again.release()


def test_end_session_replaces_the_worker_before_anyone_else_gets_it(make, backend):
    """After end_session, the next session gets a fresh kernel, never the used one."""
    coord = make(size=1)
    with lease(coord, "a") as first:
        pass
    coord.end_session("a")
    with lease(coord, "b") as second:
        pass
    assert second.worker_id != first.worker_id
    assert backend.started[0].stopped.is_set()
    assert coord.sessions.get("a") is None


def test_dirty_release_restarts_the_worker_and_resets_the_session(make, backend):
    """A lease that ended abnormally is never handed on: the worker is replaced."""
    coord = make(size=1)
    held = lease(coord, "s")
    held.dirty = "an execution was abandoned before it finished"
    held.release()
    again = lease(coord, "s")
    assert again.worker_id != held.worker_id
    assert again.generation == 1 and "abandoned" in again.session_reset
    assert status_of(coord)["counters"]["restarts"] == 1
    again.release()


def test_release_is_idempotent_and_a_released_lease_refuses_work(make):
    """release() twice is harmless; execute after release raises LeaseReleased."""
    from nbpool.errors import LeaseReleased

    coord = make(size=1)
    held = lease(coord, "s")
    held.release()
    held.release()
    with pytest.raises(LeaseReleased):
        held.execute("1")
    with lease(coord, "s"):
        pass


def test_start_failure_reaches_waiter_at_once_with_stderr(make, backend):
    """A waiter only a failing start could serve gets WorkerStartFailed, not a timeout."""
    backend.fail_with = "Traceback...\nModuleNotFoundError: No module named 'nope'\n"
    coord = make(size=0, max_size=1)
    with pytest.raises(WorkerStartFailed) as info:
        lease(coord, "s", timeout=30)
    assert "nope" in info.value.stderr_tail
    assert "retries in" in str(info.value)
    snap = status_of(coord)
    assert snap["workers"][0]["state"] == "failed"
    assert snap["counters"]["start_failures"] == 1


def test_failed_start_is_retried_with_backoff_and_the_pool_recovers(make, backend):
    """The pool stays up after a start failure and retries until the kernel starts."""
    backend.fail_with = "boom"
    coord = make(size=0, max_size=1)
    with pytest.raises(WorkerStartFailed):
        lease(coord, "s")
    backend.fail_with = None
    wait_for(lambda: status_of(coord)["workers"][0]["state"] == "idle", what="retried start")
    with lease(coord, "s"):
        pass


def test_dead_worker_fails_its_holder_and_is_replaced(make, backend):
    """A worker found dead makes its lease holder raise WorkerDied; a new one starts."""
    coord = make(size=1)
    held = lease(coord, "s")
    backend.started[0].dead = "was killed by signal 9"
    with pytest.raises(WorkerDied, match="killed by signal 9"):
        wait_for(lambda: held._check_alive() or False, what="death noticed")
    held.release()
    again = lease(coord, "s")
    assert again.worker_id != held.worker_id and "killed by signal 9" in again.session_reset
    again.release()


def test_idle_dead_worker_is_replaced_at_once(make, backend):
    """An idle worker that dies is replaced without anyone asking for it."""
    coord = make(size=1)
    backend.started[0].dead = "exited with code 1"
    wait_for(lambda: len(backend.started) == 2, what="replacement start")
    assert status_of(coord)["counters"]["deaths"] == 1


def test_lease_of_a_dead_holder_thread_is_reclaimed(make):
    """A lease whose holder thread ended without releasing is reclaimed (dirty)."""
    coord = make(size=1)
    thread = threading.Thread(target=lambda: lease(coord, "s"))
    thread.start()
    thread.join()
    with lease(coord, "s") as again:
        assert "holder thread ended" in again.session_reset


def test_pause_holds_health_checks(make, backend):
    """pause() stops the coordinator thread's checks; resume() runs them again."""
    coord = make(size=1)
    coord.monitor.pause()
    backend.started[0].dead = "exited with code 1"
    assert status_of(coord)["counters"]["deaths"] == 0
    coord.monitor.resume()
    wait_for(lambda: status_of(coord)["counters"]["deaths"] == 1, what="death after resume")


def test_background_request_times_out_only_while_it_has_no_worker(make):
    """A background request's lease timeout applies to a session with no worker."""
    coord = make(size=1)
    held = lease(coord, "a")
    settled = threading.Event()
    waiter = coord.request("b", "python3", on_settled=lambda w: settled.set(), timeout=0.1)
    assert settled.wait(5)
    assert isinstance(waiter.error, LeaseTimeout)
    queued = coord.request("a", "python3", on_settled=lambda w: None, timeout=0.1)
    held.release()
    assert queued.lease is not None, "queueing behind its own session is not cut short"
    queued.lease.release()


def test_close_fails_waiters_and_refuses_new_requests(make):
    """After close(), waiters get PoolClosed and new requests are refused."""
    coord = make(size=1)
    held = lease(coord, "s")
    waiter = coord.request("s", "python3")
    closer = threading.Thread(target=coord.close, kwargs={"wait": 0.2})
    closer.start()
    wait_for(lambda: waiter.event.is_set(), what="waiter failed")
    assert isinstance(waiter.error, PoolClosed)
    closer.join()
    with pytest.raises(PoolClosed):
        coord.request("s", "python3")
    with pytest.raises(PoolClosed):
        held._check_alive()


def test_snapshot_reports_states_sessions_and_queue(make):
    """snapshot() shows per-worker state, bound sessions and queued requests."""
    coord = make(size=2)
    held = lease(coord, "etl")
    coord.request("etl", "python3")
    snap = status_of(coord)
    states = {w["session"]: w["state"] for w in snap["workers"]}
    assert states == {"etl": "leased", None: "idle"}
    assert snap["waiting"] == 1
    assert snap["sessions"] == [
        {
            "name": "etl",
            "worker": held.worker_id,
            "kernel": "python3",
            "generation": 0,
            "queued": 1,
            "kept": False,
        }
    ]
    held.release()


def test_idle_timeout_recycles_a_bound_worker_and_culls_above_min_size(make, backend):
    """idle_timeout: an idle bound worker is recycled (session told); extra ones culled."""
    coord = make(size=1, min_size=1, max_size=2, idle_timeout=0.2)
    with lease(coord, "a"):
        with lease(coord, "b"):
            pass
    assert len(backend.started) == 2
    wait_for(lambda: all(k.stopped.is_set() for k in backend.started[:2]), what="recycling")
    wait_for(lambda: len(status_of(coord)["workers"]) == 1, what="culled down to min_size")
    coord.monitor.pause()
    with lease(coord, "a") as again:
        assert again.generation == 1 and "idle" in again.session_reset


def test_full_pool_repurposes_an_unused_worker_of_another_kernelspec(make, backend):
    """At max_size, a new session of kernel B replaces an idle unbound worker of kernel A."""
    coord = make(size=2, max_size=2)
    with lease(coord, "py") as py:
        pass
    with lease(coord, "sh", kernel="bash") as sh:
        assert sh.worker.kernel_name == "bash"
    assert [k.kernel_name for k in backend.started] == ["python3", "python3", "bash"]
    spare = next(k for k in backend.started[:2] if k is not py.worker.kernel)
    assert spare.stopped.wait(5) and not py.worker.kernel.stopped.is_set()
