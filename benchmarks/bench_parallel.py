"""c. Parallel sessions: 8 x ``time.sleep(0.25)`` over 4 sessions on 4 workers.

What it measures
----------------
The wall time from the first ``pool.submit`` to the last result of 8 jobs,
two per session, four sessions, on a warm four-worker pool. Each session
runs its two jobs one after the other (session order), the four sessions in
parallel, so the ideal wall time is 2 x 0.25 s = 0.5 s.

The same load is then pushed through :class:`IOCoordinator`, the anti-pattern
of ``shared/seed/nimblepool-fix-plan.md`` written here and only here: one
coordinator thread that takes each request, leases the worker *and does the
execution I/O itself* before it looks at the next request. It serialises
every client: 8 x 0.25 s = 2 s.

Why the comparison is fair
--------------------------
Both run on the same pool, the same four warm workers, the same sessions
and the same protocol code (the anti-pattern uses ``pool.lease`` and
``Lease.execute``); runs alternate between the two. The only difference is
which thread blocks on a worker's sockets: the client's (nbpool) or the
coordinator's (anti-pattern). The first row's baseline is the ideal 0.5 s;
the second row's baseline is nbpool's wall time, so its ratio is the gap
(about N = 4 when the pool coordinates and does not do I/O).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, wait

import nbpool

from ._harness import Processes, Row, median

NAME = "parallel"
SESSIONS = 4
JOBS = 8
SLEEP = 0.25
IDEAL = JOBS // SESSIONS * SLEEP
CODE = f"import time; time.sleep({SLEEP})"


class IOCoordinator:
    """The seed's anti-pattern: a coordinator thread that leases *and* executes."""

    def __init__(self, pool: nbpool.Pool) -> None:
        self._pool = pool
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="io-coordinator", daemon=True)
        self._thread.start()

    def submit(self, code: str, session: str) -> Future:
        future: Future = Future()
        self._queue.put((code, session, future))
        return future

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            code, session, future = item
            try:
                with self._pool.lease(session) as lease:  # the coordinator blocks here...
                    future.set_result(lease.execute(code))  # ...and here, on the I/O
            except BaseException as exc:
                future.set_exception(exc)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


def _load(submit) -> float:
    t0 = time.perf_counter()
    futures = [submit(CODE, f"s{i % SESSIONS}") for i in range(JOBS)]
    done, _ = wait(futures, timeout=60)
    wall = time.perf_counter() - t0
    if len(done) != JOBS or not all(f.result().ok for f in futures):
        raise AssertionError("a job failed or did not finish within 60 s")
    return wall


def run(quick: bool = False) -> list[Row]:
    runs = 2 if quick else 5
    procs = Processes()
    pool = anti = None
    try:
        pool = nbpool.Pool(size=SESSIONS)
        pool.start()
        procs.add_pool(pool)
        anti = IOCoordinator(pool)
        nb_submit = lambda code, session: pool.submit(code, session=session)  # noqa: E731
        # warm-up: binds the four sessions to the four workers
        _load(nb_submit)
        workers = {s["name"]: s["worker"] for s in pool.status()["sessions"]}
        if len(set(workers.values())) != SESSIONS:
            raise AssertionError(f"sessions not spread over {SESSIONS} workers: {workers}")
        nb, io = [], []
        for i in range(runs):
            pair = [(nb, nb_submit), (io, anti.submit)]
            for walls, submit in pair if i % 2 == 0 else reversed(pair):
                walls.append(_load(submit))
        nb_med, io_med = median(nb), median(io)
        return [
            Row(
                f"c. {JOBS} x sleep({SLEEP}) / {SESSIONS} sessions / {SESSIONS} workers: wall vs ideal",
                nb_med,
                IDEAL,
                "s",
                nb_med / IDEAL,
                "<= 1.10",
                nb_med / IDEAL <= 1.10,
                f"{runs} runs, pool.submit; baseline = ideal {IDEAL:g} s",
            ),
            Row(
                "c. same load via a coordinator that does the I/O (anti-pattern)",
                nb_med,
                io_med,
                "s",
                io_med / nb_med,
                f">= {0.9 * SESSIONS:.1f}x gap",
                io_med / nb_med >= 0.9 * SESSIONS,
                f"ratio = anti-pattern / nbpool (N-fold gap, N={SESSIONS}); same pool and workers",
            ),
        ]
    finally:
        if anti is not None:
            anti.close()
        if pool is not None:
            pool.shutdown()
        procs.kill_leftovers()


if __name__ == "__main__":
    from .run import main

    main([NAME])
