"""Pool-level API bookkeeping on the fake backend (futures, cancellation, opening)."""

from __future__ import annotations

import concurrent.futures

import nbpool
from nbpool.testing import FakeBackend


def test_cancelled_queued_future_is_seen_by_wait_and_as_completed():
    """cancel() of a queued submit wakes concurrent.futures.wait()/as_completed()."""
    pool = nbpool.Pool(size=1, backend=FakeBackend())
    try:
        pool.start()
        held = pool.lease("s")  # the session's worker is busy: the submit queues
        queued = pool.submit("1", session="s")
        assert queued.cancel()
        done, _ = concurrent.futures.wait([queued], timeout=5)
        assert queued in done and queued.cancelled()
        assert list(concurrent.futures.as_completed([queued], timeout=5)) == [queued]
        held.release()
    finally:
        pool.shutdown()


def test_the_backend_is_opened_by_the_first_use_once_never_by_the_constructor():
    """Constructing a pool opens nothing; a lease on a pool never started (a lazy
    start) opens its backend, once; shutdown() of a pool never used opens nothing."""
    unused = FakeBackend()
    nbpool.Pool(size=1, backend=unused).shutdown()
    assert unused.opens == 0 and not unused.started
    backend = FakeBackend()
    pool = nbpool.Pool(size=1, backend=backend)
    try:
        assert backend.opens == 0 and pool.status()["workers"] == []
        with pool.lease("s"):
            pass
        with pool.lease("t", timeout=5):
            pass
        assert backend.opens == 1 and len(backend.started) >= 1
    finally:
        pool.shutdown()
    assert backend.closing.is_set()
