"""h. Kept sessions: what re-adoption, detach and keeping cost.

What it measures
----------------
A pool with ``keep_sessions=True`` and two sessions holding state is
detached; then a new ``Pool(name=..., keep_sessions=True)`` re-adopts them
and runs ``x`` in one: the time from constructing the pool to that result
is the re-adoption row. The detach itself (record, wait for the keeper to
follow, let go) is timed too. A second row times the first result in a
brand-new session on a warm keep pool (the lease holder writes the session's
record before running it) against the same on a plain pool.

Baseline
--------
Re-adoption: a plain ``Pool(size=2)`` started cold to its first result, in
the same run, interleaved: what a restarted notebook pays without kept
sessions (and it has lost the state). New session: the same first execution
on a plain pool of the same size, interleaved. Records and keepers go to a
private ``JUPYTER_RUNTIME_DIR``; every process is killed by pid at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import nbpool

from ._harness import Processes, Row, median, wait_until

NAME = "keep"


def _settled(pool: nbpool.Pool, size: int) -> bool:
    workers = pool.status()["workers"]
    return len(workers) == size and all(w["state"] == "idle" for w in workers)


def _keepers(directory: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if directory.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def run(quick: bool = False) -> list[Row]:
    trials = 3 if quick else 6
    procs = Processes()
    old_env = os.environ.get("JUPYTER_RUNTIME_DIR")
    runtime = tempfile.mkdtemp(prefix="nbpool-bench-keep-")
    os.environ["JUPYTER_RUNTIME_DIR"] = runtime
    pools: list[nbpool.Pool] = []
    try:
        readopt, cold, detach = [], [], []
        for i in range(trials):
            keep = nbpool.Pool(size=2, name="bench", keep_sessions=True).start()
            pools.append(keep)
            keep.execute("x = 1", session="a")
            keep.execute("y = 2", session="b")
            procs.add_pool(keep)
            t = time.perf_counter()
            keep.detach()
            detach.append(time.perf_counter() - t)

            def readopted() -> float:
                t = time.perf_counter()
                pool = nbpool.Pool(size=2, name="bench", keep_sessions=True)
                pools.append(pool)
                pool.start()
                assert pool.execute("x", session="a").result == "1"
                elapsed = time.perf_counter() - t
                procs.add_pool(pool)
                pool.shutdown()
                return elapsed

            def fresh() -> float:
                t = time.perf_counter()
                pool = nbpool.Pool(size=2)
                pools.append(pool)
                pool.start()
                pool.execute("x = 1", session="a")
                elapsed = time.perf_counter() - t
                procs.add_pool(pool)
                pool.shutdown()
                return elapsed

            for name, fn in [("keep", readopted), ("cold", fresh)][:: 1 if i % 2 else -1]:
                (readopt if name == "keep" else cold).append(fn())
        new_keep, new_plain = [], []
        keep = nbpool.Pool(size=2, name="bench-new", keep_sessions=True).start()
        plain = nbpool.Pool(size=2).start()
        pools += [keep, plain]
        for i in range(trials * 2):
            for pool, times in [(keep, new_keep), (plain, new_plain)][:: 1 if i % 2 else -1]:
                wait_until(lambda: _settled(pool, 2), 120, "two idle workers")
                procs.add_pool(pool)
                t = time.perf_counter()
                pool.execute("1+1", session=f"new-{i}")
                times.append(time.perf_counter() - t)
                pool.end_session(f"new-{i}")
        ms = 1e3
        return [
            Row(
                "h. restarted notebook: re-adopt 2 kept sessions to 1st result",
                median(readopt),
                median(cold),
                "s",
                median(readopt) / median(cold),
                "info",
                None,
                f"{trials} trials; baseline: a cold Pool(size=2) to its 1st result (state lost); "
                f"detach took {median(detach) * ms:.0f} ms (median)",
            ),
            Row(
                "h. 1st result in a new session, keep pool vs plain pool",
                median(new_keep) * ms,
                median(new_plain) * ms,
                "ms",
                median(new_keep) / median(new_plain),
                "info",
                None,
                f"{trials * 2} trials each, interleaved; the keep pool writes the session's "
                "record before it runs",
            ),
        ]
    finally:
        for pool in pools:
            pool.shutdown()
        procs.kill_leftovers()
        for pid in _keepers(runtime):
            os.kill(pid, 9)
        shutil.rmtree(runtime, ignore_errors=True)
        if old_env is None:
            os.environ.pop("JUPYTER_RUNTIME_DIR", None)
        else:
            os.environ["JUPYTER_RUNTIME_DIR"] = old_env


if __name__ == "__main__":
    from .run import main

    main([NAME])
