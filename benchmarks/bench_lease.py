"""b. Lease + release on a warm pool: ``with pool.lease("s"): pass``.

What it measures
----------------
The wall time of taking the worker bound to session ``s`` and giving it back,
with no execution in between, on a warm two-worker pool whose coordinator
thread is running its health ticks and heartbeats as usual. This is the
coordinator's bookkeeping cost per execution (DESIGN.md: checkout and checkin
are microseconds).

Baseline
--------
The target is absolute (<= 50 us). To put the number in perspective the row
also shows, measured in the same run and interleaved, one ZMQ heartbeat
ping-pong over loopback TCP to a kernel started with the pool's own launch
settings (CurveZMQ included): the cheapest message round trip any client of
a kernel can make. The ratio says what fraction of one such round trip a
lease costs; it is informational, not the target.
"""

from __future__ import annotations

import time

import nbpool

from ._harness import Processes, Row, median, quantile, raw_like

NAME = "lease"


def run(quick: bool = False) -> list[Row]:
    rounds = 2000 if quick else 10000
    procs = Processes()
    pool = raw = hb = None
    try:
        pool = nbpool.Pool(size=2)
        pool.start()
        procs.add_pool(pool)
        raw = raw_like(pool, procs)
        hb = raw.connect_hb()
        hb.RCVTIMEO = 5000

        def ping() -> None:
            hb.send(b"ping")
            hb.recv()

        def lease() -> None:
            with pool.lease("s"):
                pass

        lease_t: list[float] = []
        ping_t: list[float] = []
        clock = time.perf_counter
        for i in range(rounds + 200):  # the first 200 are warm-up
            keep = i >= 200
            t0 = clock()
            lease()
            t1 = clock()
            if i % 10 == 0:  # a ping per 10 leases: the pings only give perspective
                ping()
                t2 = clock()
                if keep:
                    ping_t.append(t2 - t1)
            if keep:
                lease_t.append(t1 - t0)
        us = 1e6
        med = median(lease_t) * us
        ping_med = median(ping_t) * us
        return [
            Row(
                "b. lease + release, warm pool, session bound",
                med,
                ping_med,
                "us",
                med / ping_med,
                "<= 50 us",
                med <= 50,
                f"{rounds} rounds; p90 {quantile(lease_t, 0.9) * us:.1f} us; "
                "baseline: one ZMQ heartbeat ping-pong (info)",
            )
        ]
    finally:
        if hb is not None:
            hb.close(linger=0)
        if raw is not None:
            raw.close()
        if pool is not None:
            pool.shutdown()
        procs.kill_leftovers()


if __name__ == "__main__":
    from .run import main

    main([NAME])
