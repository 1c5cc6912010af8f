"""Pool actions a UI calls: restart a worker, resize the pool.

Bookkeeping only, on a fake kernel backend (no processes); the same actions
against real kernels are in ``tests/integration/test_pool_actions.py``.
"""

from __future__ import annotations

import pytest

import nbpool
from nbpool.core.coordinator import Coordinator
from nbpool.core.records import Settings
from tests.helpers import status_of, wait_for


def states(coord: Coordinator) -> dict[str, str]:
    return {w["id"]: w["state"] for w in status_of(coord)["workers"]}


def ready(coord: Coordinator, n: int) -> bool:
    s = states(coord)
    return len(s) == n and all(state == "idle" for state in s.values())


@pytest.fixture
def coord(make):
    """A coordinator of two ready workers on this test's fake backend."""
    return make(size=2, max_size=2)


@pytest.fixture
def pool(backend):
    """A real Pool whose kernels come from this test's fake backend."""
    p = nbpool.Pool(size=2, backend=backend)
    p.start()
    yield p
    p.shutdown()


def test_restart_idle_worker_replaces_it_and_resets_its_session(coord):
    """Restarting an idle bound worker stops it, starts a fresh one, and the
    session's next lease is told its state was reset."""
    with coord.wait(coord.request("etl", "python3"), 5) as lease:
        old = lease.worker_id
        old_kernel = lease.worker.kernel
    coord.restart_worker(old)
    wait_for(lambda: old not in states(coord) and ready(coord, 2))
    assert old_kernel.stopped.is_set()
    session = next(s for s in status_of(coord)["sessions"] if s["name"] == "etl")
    assert session["worker"] is None and session["generation"] == 1
    with coord.wait(coord.request("etl", "python3"), 5) as lease:
        assert lease.worker_id != old
        assert "restarted on request" in lease.session_reset
    assert coord.events[-1]["kind"] != "died"
    assert any(e["kind"] == "restart requested" for e in coord.events)


def test_restart_leased_worker_fails_its_holder_then_replaces_it(coord):
    """A worker restarted while leased is never used again: its holder gets
    WorkerDied naming the restart, and releasing it starts a replacement."""
    lease = coord.wait(coord.request("etl", "python3"), 5)
    coord.restart_worker(lease.worker_id)
    assert states(coord)[lease.worker_id] == "dead"
    with pytest.raises(nbpool.WorkerDied, match="restarted on request while running session 'etl'"):
        lease.execute("1")
    lease.release()
    wait_for(lambda: lease.worker_id not in states(coord) and ready(coord, 2))


def test_restart_unknown_or_replaced_worker_is_a_clear_error(coord):
    """Restarting a worker id that is not (or no longer) in the pool raises
    WorkerUnavailable naming the current workers; nothing changes."""
    before = states(coord)
    with pytest.raises(
        nbpool.WorkerUnavailable, match=r"no worker 'w9' in the pool.*workers now: w1, w2"
    ):
        coord.restart_worker("w9")
    lease = coord.wait(coord.request("etl", "python3"), 5)
    coord.restart_worker(lease.worker_id)
    with pytest.raises(nbpool.WorkerUnavailable, match="is replaced as soon as its holder lets go"):
        coord.restart_worker(lease.worker_id)
    lease.release()
    wait_for(lambda: lease.worker_id not in states(coord))
    with pytest.raises(nbpool.WorkerUnavailable, match="stopped or replaced"):
        coord.restart_worker(lease.worker_id)
    assert len(before) == 2


def test_restart_failed_worker_retries_its_start_now(backend):
    """A worker whose start failed is retried at once on restart, not after its backoff."""
    calls = []

    def flaky(worker_id, kernel_name, start_timeout):
        calls.append(worker_id)
        if len(calls) == 1:
            raise nbpool.WorkerStartFailed("boom")
        return backend.start(worker_id, kernel_name, start_timeout)

    c = Coordinator(Settings(size=1, min_size=1, max_size=1), flaky)
    try:
        c.monitor.pause()  # no timer-driven retry: only the restart may retry
        c.start(1)
        wait_for(lambda: states(c) == {"w1": "failed"})
        c.restart_worker("w1")
        wait_for(lambda: states(c) == {"w1": "idle"})
        assert calls == ["w1", "w1"]
    finally:
        c.close()


def test_resize_grows_and_shrinks_free_workers(coord):
    """Growing starts workers at once; shrinking stops free workers and keeps
    workers bound to sessions."""
    coord.resize(4, 4, 4)
    wait_for(lambda: ready(coord, 4))
    with coord.wait(coord.request("etl", "python3"), 5) as lease:
        bound = lease.worker_id
    coord.resize(1, 1, 4)
    wait_for(lambda: len(states(coord)) == 1)
    assert list(states(coord)) == [bound]
    assert (coord.settings.size, coord.settings.min_size, coord.settings.max_size) == (1, 1, 4)


def test_resize_below_bound_workers_shrinks_as_sessions_end(coord):
    """Workers bound to sessions survive a shrink; when their session ends the
    worker is stopped, not replaced, because the pool is above its size."""
    leases = [coord.wait(coord.request(name, "python3"), 5) for name in ("a", "b")]
    for lease in leases:
        lease.release()
    coord.resize(1, 1, 2)
    assert len(states(coord)) == 2
    coord.end_session("a")
    wait_for(lambda: len(states(coord)) == 1)
    assert list(states(coord)) == [leases[1].worker_id]


def test_pool_resize_validates_and_leaves_the_pool_unchanged(pool):
    """Pool.resize refuses 0, negative, bool and non-numbers with a one-line
    InvalidConfig, and the pool keeps its workers and settings."""
    before = pool.status()
    for bad, match in [
        (0, r"whole number >= 1, got 0; use pool.shutdown\(\)"),
        (-1, "got -1"),
        ("3", "got '3'"),
        ("abc", "got 'abc'"),
        (2.5, "got 2.5"),
        (True, "got True"),
        (None, "got None"),
    ]:
        with pytest.raises(nbpool.InvalidConfig, match=match) as info:
            pool.resize(bad)
        assert "\n" not in str(info.value)
    after = pool.status()
    assert [w["id"] for w in after["workers"]] == [w["id"] for w in before["workers"]]
    settings = ("size", "min_size", "max_size")
    assert [after[k] for k in settings] == [before[k] for k in settings] == [2, 2, 8]


def test_sizes_above_size_limit_are_refused_at_once_naming_the_trait(pool, backend):
    """size, min_size and max_size above Pool.size_limit fail at construction,
    and a resize above it fails with the pool unchanged: one line naming
    size_limit, never millions of records."""
    assert pool.size_limit >= 16
    for kwargs, what in [
        ({"size": 10**6}, "size 1000000"),
        ({"size": 1, "max_size": 10**7}, "max_size 10000000"),
        ({"size": 1, "min_size": 10**7}, "min_size 10000000"),
        ({"size": 5, "size_limit": 4}, "size 5"),
    ]:
        with pytest.raises(nbpool.InvalidConfig, match=f"{what} is above size_limit=") as info:
            nbpool.Pool(backend=backend, **kwargs)
        assert "raise Pool.size_limit" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(nbpool.InvalidConfig, match="size_limit must be a whole number >= 1"):
        nbpool.Pool(backend=backend, size_limit=0)
    assert nbpool.Pool(backend=backend, size=1, size_limit=4).status()["max_size"] == 4
    before = pool.status()
    with pytest.raises(nbpool.InvalidConfig, match="pool size 10000000 is above size_limit="):
        pool.resize(10**7)
    after = pool.status()
    assert [w["id"] for w in after["workers"]] == [w["id"] for w in before["workers"]]
    assert [after[k] for k in ("size", "min_size", "max_size")] == [2, 2, 8]


def test_coordinator_resize_above_size_limit_changes_nothing(coord):
    """The coordinator itself refuses a size above its size_limit before it
    touches any record."""
    before = states(coord)
    with pytest.raises(nbpool.InvalidConfig, match="above size_limit=1024"):
        coord.resize(10**7, 10**7, 10**7)
    assert states(coord) == before and coord.settings.size == 2


def test_pool_resize_updates_status_and_runs(pool):
    """After Pool.resize the status reports the new size and the pool serves
    leases from the new workers."""
    pool.resize(3)
    wait_for(lambda: sum(w["state"] == "idle" for w in pool.status()["workers"]) == 3)
    st = pool.status()
    assert (st["size"], st["min_size"], st["max_size"]) == (3, 3, 8)  # max: max(size, 8)
    pool.resize(1)
    wait_for(lambda: len(pool.status()["workers"]) == 1)
    assert pool.status()["size"] == 1 and pool.size == 1


def test_pool_resize_before_start_only_changes_settings(backend):
    """Resizing a pool that was never started starts nothing; start() then
    starts the new size."""
    p = nbpool.Pool(size=1, backend=backend)
    try:
        p.resize(3)
        assert p.status()["workers"] == []
        p.start()
        assert len(p.status()["workers"]) == 3
    finally:
        p.shutdown()


def test_pool_restart_worker_and_closed_pool(pool):
    """Pool.restart_worker replaces a worker; after shutdown every action
    raises PoolClosed."""
    first = pool.status()["workers"][0]["id"]
    pool.restart_worker(first)
    wait_for(lambda: first not in {w["id"] for w in pool.status()["workers"]})
    with pytest.raises(nbpool.WorkerUnavailable):
        pool.restart_worker(first)
    pool.shutdown()
    with pytest.raises(nbpool.PoolClosed):
        pool.restart_worker("w2")
    with pytest.raises(nbpool.PoolClosed):
        pool.resize(2)


def test_interrupt_of_an_unknown_or_idle_worker_is_clear(backend):
    """Pool-level interrupt: an unknown worker is WorkerUnavailable; an idle one returns False."""
    from nbpool.errors import WorkerUnavailable

    coord = Coordinator(Settings(size=1, min_size=1, max_size=1), backend.start)
    try:
        coord.wait_started(coord.start(1), 5)
        with pytest.raises(
            WorkerUnavailable, match=r"no worker 'w9' in the pool \(workers now: w1\)"
        ):
            coord.interrupt("w9")
        assert coord.interrupt("w1") is False
        lease = coord.wait(coord.request("s", "python3"), 5)
        assert coord.interrupt("w1") is False, "leased but running nothing"
        assert backend.started[0].interrupts == 0, "no stray SIGINT between requests"
        lease.release()
    finally:
        coord.close()
