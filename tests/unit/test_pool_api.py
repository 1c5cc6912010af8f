"""Pool-level API bookkeeping on the fake backend (futures, cancellation)."""

from __future__ import annotations

import concurrent.futures

import nbpool
from tests.unit.fake import FakeBackend


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
