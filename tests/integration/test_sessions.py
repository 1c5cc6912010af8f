"""Sessions as people open them: more sessions than warm workers, no dead waits."""

from __future__ import annotations

import os
import signal
import time

import pytest

import nbpool
from tests.helpers import wait_for


def test_a_size_2_pool_serves_5_sessions():
    """size is what is kept warm, not a cap: five sessions each get a worker of their own."""
    with nbpool.Pool(size=2) as pool:
        assert pool.status()["max_size"] == 8
        names = [f"s{i}" for i in range(5)]
        for name in names:
            pool.execute(f"mine = {name!r}", session=name, lease_timeout=30)
        for name in names:
            assert pool.execute("mine", session=name).result == repr(name)
        workers = {s["worker"] for s in pool.status()["sessions"]}
        assert len(workers) == 5


def test_an_extra_session_fails_at_once_when_every_worker_is_bound():
    """At max_size with every worker bound to an idle session, a new session gets
    LeaseTimeout at once despite lease_timeout=30, naming the holders."""
    with nbpool.Pool(size=2, max_size=2, lease_timeout=30) as pool:
        pool.execute("1", session="etl")
        pool.execute("1", session="plots")
        t0 = time.monotonic()
        with pytest.raises(nbpool.LeaseTimeout) as info:
            pool.execute("1", session="typo")
        assert time.monotonic() - t0 < 2
        message = str(info.value)
        assert "sessions etl, plots" in message and "end_session" in message
        assert "\n" not in message
        pool.end_session("plots")  # freeing one lets the new session in
        assert pool.execute("2", session="typo", lease_timeout=30).result == "2"


def test_a_session_waiting_while_a_worker_is_replaced_gets_it():
    """A worker killed at max_size is replaced; a new session that asks meanwhile
    waits for the replacement instead of failing."""
    with nbpool.Pool(size=1, max_size=1, lease_timeout=30, heartbeat_timeout=2.0) as pool:
        pool.execute("1", session="old")
        pid = pool.status()["workers"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: any(w["state"] in ("dead", "restarting") for w in pool.status()["workers"]),
            what="the death to be seen",
        )
        res = pool.execute("'fresh'", session="new")
        assert res.result == "'fresh'" and res.worker_id != "w1"


def test_concurrent_requests_of_one_new_session_share_one_worker():
    """At max_size, three requests of a new session made while the only worker
    is replaced are one session: all succeed, on one worker, none fails at once."""
    with nbpool.Pool(size=1, max_size=1, lease_timeout=60) as pool:
        pool.execute("1", session="a")
        pool.end_session("a")
        futures = [pool.submit(f"n = {i}\nn", session="b") for i in range(3)]
        results = [f.result(timeout=90) for f in futures]
        assert [r.result for r in results] == ["0", "1", "2"], "served in order"
        assert len({r.worker_id for r in results}) == 1
        assert pool.status()["counters"]["deaths"] == 0


def test_a_lazy_start_with_one_sessions_concurrent_requests_starts_one_worker():
    """A pool started by its first requests, four of one session at once, starts
    one worker: a duplicate request of a session is not another session."""
    pool = nbpool.Pool(size=1, lease_timeout=60)
    try:
        futures = [pool.submit("import os; os.getpid()", session="s") for _ in range(4)]
        results = [f.result(timeout=90) for f in futures]
        assert len({r.result for r in results}) == 1
        assert len(pool.status()["workers"]) == 1
    finally:
        pool.shutdown()
