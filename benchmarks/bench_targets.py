"""t. Issue 21's targets table, and only it, in one run (the ``bench`` extra).

The rows, each measured as its own benchmark does it (see there for the
fairness of each baseline):

1. ``pool.map`` 2000 x ``abs``, ``chunksize=50``, 4 workers vs ipyparallel's
   load-balanced ``map_sync`` with the same chunks (:mod:`.bench_map`);
2. ``pool.execute("1+1")`` vs ipyparallel's ``rc[0].execute("1+1")``
   (:mod:`.bench_ipyparallel`);
3. the first result of a new session on a warm pool vs a warm ``1+1``
   (:mod:`.bench_new_session`);
4. the ``%%pool_exec`` overhead over a local cell vs ``%%px --block``'s
   (:mod:`.bench_magic`).

The fork-server row of the table is ``python -m benchmarks warm`` (k).
To compare two versions of nbpool, run this once per version with
``PYTHONPATH`` pointing at each, alternating (each run has its baseline).
"""

from __future__ import annotations

import traceback

import nbpool

from . import bench_ipyparallel, bench_magic, bench_map, bench_new_session
from ._harness import Processes, Row, skipped

NAME = "targets"


def run(quick: bool = False) -> list[Row]:
    try:
        import ipyparallel as ipp
    except ImportError:
        return [skipped("t. issue 21 targets")]
    rows: list[Row] = []

    def part(name, fn, *args):
        try:
            rows.extend(fn(*args))
        except Exception as exc:
            traceback.print_exc()
            rows.append(Row(f"t. {name} ERROR", None, None, "", None, "", False, repr(exc)))

    procs = Processes()
    pool = cluster = rc = None
    try:
        pool = nbpool.Pool(size=bench_map.WORKERS).start()
        procs.add_pool(pool)
        cluster, rc, _ = bench_ipyparallel._start_cluster(ipp, procs)
        part("map", bench_map._tiny, pool, rc, 5 if quick else 9, (50,))
        part("single", lambda: bench_ipyparallel._single(pool, rc, 100 if quick else 300)[:1])
    finally:
        if pool is not None:
            pool.shutdown()
        bench_ipyparallel._stop_cluster(cluster, rc, procs)
        procs.kill_leftovers()
    part("new session", lambda: bench_new_session.run(quick)[:1])
    part("magic", bench_magic.run, quick)
    return rows


if __name__ == "__main__":
    from .run import main

    main([NAME])
