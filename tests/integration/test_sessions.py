"""Sessions as people open them: more sessions than warm workers, no dead waits."""

from __future__ import annotations

import os
import signal
import time

import pytest

import nbpool

from ..conftest import wait_for


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
