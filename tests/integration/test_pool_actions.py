"""The UI actions (Pool.restart_worker, Pool.resize) on real kernels."""

from __future__ import annotations

import os
import time

import pytest

import nbpool
from tests.helpers import wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_restart_a_busy_worker_fails_the_running_code_and_resets_the_session():
    """Restarting a worker that runs code ends that execution with WorkerDied
    at once; the kernel process goes, a fresh worker replaces it, and the
    session's next execution is told its state was reset."""
    with nbpool.Pool(size=1) as pool:
        pool.execute("x = 1", session="etl")
        old = pool.status()["workers"][0]
        future = pool.submit("import time; time.sleep(60)", session="etl")
        wait_for(lambda: pool.status()["workers"][0]["state"] == "busy", what="the worker to run")
        pool.restart_worker(old["id"])
        with pytest.raises(
            nbpool.WorkerDied, match="restarted on request while running session 'etl'"
        ):
            future.result(timeout=10)
        wait_for(lambda: not _alive(old["pid"]), timeout=15, what="the old kernel process to end")
        res = pool.execute("'x' in dir()", session="etl")
        assert res.result == "False" and "restarted on request" in res.session_reset
        assert res.worker_id != old["id"]


def test_resize_starts_and_stops_real_kernels():
    """Growing starts real kernels that serve sessions; shrinking stops the
    free ones at once and a bound one when its session ends, never the
    worker of a live session."""
    with nbpool.Pool(size=1) as pool:
        pool.execute("y = 2", session="keep")
        pool.resize(3)
        wait_for(
            lambda: [w["state"] for w in pool.status()["workers"]] == ["idle"] * 3,
            timeout=60,
            what="three ready workers",
        )
        assert pool.execute("1 + 1", session="other").result == "2"
        free = [w for w in pool.status()["workers"] if w["session"] is None]
        pool.resize(1)
        wait_for(
            lambda: len(pool.status()["workers"]) == 2, timeout=30, what="the free worker to stop"
        )
        assert sorted(w["session"] for w in pool.status()["workers"]) == ["keep", "other"]
        pool.end_session("other")
        wait_for(lambda: len(pool.status()["workers"]) == 1, timeout=30, what="the shrink to 1")
        assert pool.status()["workers"][0]["session"] == "keep"
        assert pool.execute("y", session="keep").result == "2"
        wait_for(
            lambda: not any(_alive(w["pid"]) for w in free),
            timeout=15,
            what="stopped kernels to exit",
        )


def test_an_absurd_resize_fails_at_once_and_leaves_the_pool_unchanged():
    """resize(10**7) on a started pool is a one-line InvalidConfig naming
    size_limit within 2 s; workers, sizes and sessions are as before."""
    with nbpool.Pool(size=1) as pool:
        pool.execute("x = 1", session="etl")
        before = pool.status()
        started = time.monotonic()
        with pytest.raises(nbpool.InvalidConfig, match="above size_limit=.*raise Pool.size_limit"):
            pool.resize(10**7)
        assert time.monotonic() - started < 2
        after = pool.status()

        def workers(status):
            return [(w["id"], w["pid"], w["state"], w["session"]) for w in status["workers"]]

        assert workers(after) == workers(before)
        sizes = ("size", "min_size", "max_size")
        assert [after[k] for k in sizes] == [before[k] for k in sizes] == [1, 1, 8]
        assert pool.execute("x", session="etl").result == "1"
