"""d. First result in a brand-new session on a warm pool with spare workers.

What it measures
----------------
A pool of 4 workers is started and left idle. Each trial runs
``pool.execute("1+1", session=<never used before>)`` and times it to the
result: the coordinator binds the new session to a spare idle worker and the
client runs its first execution there. Then the session is ended (its worker
is replaced by a fresh kernel, as the contract requires) and the next trial
waits until all 4 workers are idle again, so every trial starts from the
same state: a warm pool with spare workers. That the spare worker is often
a recent replacement is part of the real scenario.

Baseline
--------
The baseline column is, measured in the same run, ``pool.execute("1+1")``
in a session that already has its worker, so the ratio is what being new
costs (issue 21's target: <= 1.5x). The note gives the cold alternative (a
pool started on demand) for perspective. A second, informational row times
the first and the second round trip of freshly started raw kernels (same
launch settings): the difference is ipykernel's own first-execution cost,
which a new session on a recently replaced worker pays.
"""

from __future__ import annotations

import time

import nbpool

from ._harness import Processes, Row, median, raw_like, wait_until

NAME = "new_session"
SIZE = 4


def _settled(pool: nbpool.Pool) -> bool:
    workers = pool.status()["workers"]
    return len(workers) == SIZE and all(w["state"] == "idle" for w in workers)


def run(quick: bool = False) -> list[Row]:
    trials = 6 if quick else 16
    procs = Processes()
    pool = None
    try:
        t0 = time.perf_counter()
        pool = nbpool.Pool(size=SIZE)
        pool.start()
        cold = time.perf_counter() - t0
        procs.add_pool(pool)
        pool.execute("1+1", session="old")  # the existing session of the baseline
        new_t, old_t = [], []
        for i in range(trials):
            wait_until(lambda: _settled(pool), 120, "the pool to have 4 idle workers")
            procs.add_pool(pool)
            for _ in range(3):
                t = time.perf_counter()
                pool.execute("1+1", session="old")
                old_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            res = pool.execute("1+1", session=f"new-{i}")
            new_t.append(time.perf_counter() - t)
            if res.result != "2":
                raise AssertionError(f"unexpected result {res.result!r}")
            pool.end_session(f"new-{i}")
        pool.shutdown()
        first, second = _fresh_kernel_first_runs(procs, pool, 2 if quick else 4)
        ms = 1e3
        new_med, old_med = median(new_t) * ms, median(old_t) * ms
        return [
            Row(
                "d. first result of a new session on a warm pool vs warm execute('1+1')",
                new_med,
                old_med,
                "ms",
                new_med / old_med,
                "<= 1.5x",
                new_med / old_med <= 1.5,
                f"{trials} trials, max {max(new_t) * ms:.1f} ms; baseline: execute in an "
                f"existing session; cold pool start was {cold:.2f} s",
            ),
            Row(
                "d. raw kernel: 1st execute after start vs 2nd (why new costs more)",
                median(first) * ms,
                median(second) * ms,
                "ms",
                median(first) / median(second),
                "info",
                None,
                "same launch settings as the pool; the 1st run_cell of a fresh ipykernel is slow",
            ),
        ]
    finally:
        if pool is not None:
            pool.shutdown()
        procs.kill_leftovers()


def _fresh_kernel_first_runs(procs, pool, kernels: int) -> tuple[list[float], list[float]]:
    """First and second ``1+1`` round trip of freshly started raw kernels."""
    first, second = [], []
    for _ in range(kernels):
        raw = raw_like(pool, procs)
        try:
            for times in (first, second):
                t = time.perf_counter()
                raw.execute("1+1")
                times.append(time.perf_counter() - t)
        finally:
            raw.close()
    return first, second


if __name__ == "__main__":
    from .run import main

    main([NAME])
