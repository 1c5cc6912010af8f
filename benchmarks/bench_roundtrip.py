"""a. ``pool.execute("1+1")`` against a raw jupyter_client round trip.

What it measures
----------------
The wall time of one ``pool.execute("1+1")`` on a warm one-worker pool
(lease, ``execute_request``, collect outputs until ``execute_reply`` and
iopub ``idle``, release), against the same round trip done with nothing but
jupyter_client's ``KernelManager`` + ``Session`` on raw sockets
(:class:`benchmarks._harness.RawKernel`).

Why the baseline is fair
------------------------
The "identical" baseline kernel is started from the same kernelspec, with the
same extra kernel arguments (the pool's ``ipykernel_args``, by default
``--HistoryManager.enabled=False --Kernel._execute_sleep=0``), the same
transport and the same CurveZMQ ``transport_encryption`` policy, all read
from the pool's own traits; the encryption state of both kernels is checked
to be equal. Both run in this process, interleaved call by call, so machine
noise hits both alike. The raw client does strictly less work than nbpool
(no output dicts, no liveness checks, no stdin socket, no lease), so the
ratio is nbpool's whole overhead.

The "plain default" row is a kernel started the way jupyter_client does by
default (history database on, the 0.5 ms pre-reply sleep, no transport
encryption): informational, it shows what the tuning buys, not the pool's
overhead.
"""

from __future__ import annotations

import nbpool

from ._harness import Processes, RawKernel, Row, interleaved, median, raw_like

NAME = "roundtrip"
CODE = "1+1"


def run(quick: bool = False) -> list[Row]:
    rounds = 100 if quick else 400
    procs = Processes()
    pool = raw_same = raw_default = None
    try:
        pool = nbpool.Pool(size=1)
        pool.start()
        procs.add_pool(pool)
        raw_same = raw_like(pool, procs)
        raw_default = RawKernel(procs, pool.kernel_name)
        pool_encrypted = pool.status()["workers"][0]["encrypted"]
        if pool_encrypted != raw_same.encrypted:
            raise AssertionError(
                f"unfair baseline: pool worker encrypted={pool_encrypted}, "
                f"raw kernel encrypted={raw_same.encrypted}"
            )

        pool_run = lambda: pool.execute(CODE)  # noqa: E731
        same_run = lambda: raw_same.execute(CODE)  # noqa: E731
        default_run = lambda: raw_default.execute(CODE)  # noqa: E731
        interleaved({"pool": pool_run, "raw": same_run, "default": default_run}, 30)  # warm-up
        assert pool.execute(CODE).result == "2"
        # Pairs only: a third kernel in the rotation (e.g. the default one with its
        # history thread) would add its background work to both sides.
        times = interleaved({"pool": pool_run, "raw": same_run}, rounds)
        default_times = interleaved({"pool": pool_run, "raw": default_run}, rounds // 2)
        with pool.lease() as lease:  # protocol cost alone, without lease/release
            lease_times = interleaved(
                {"lease": lambda: lease.execute(CODE), "raw": same_run}, rounds // 2
            )

        us = 1e6
        pool_med = median(times["pool"]) * us
        raw_med = median(times["raw"]) * us
        default_pool = median(default_times["pool"]) * us
        default_med = median(default_times["raw"]) * us
        ratio = pool_med / raw_med
        enc = "CurveZMQ" if raw_same.encrypted else "no encryption"
        args = " ".join(raw_same.extra_arguments) or "no extra args"
        lease_ratio = median(lease_times["lease"]) / median(lease_times["raw"])
        return [
            Row(
                "a. execute('1+1') vs raw jupyter_client (same args+encryption)",
                pool_med,
                raw_med,
                "us",
                ratio,
                "<= 1.10",
                ratio <= 1.10,
                f"{rounds} interleaved rounds; both kernels: {args}, {enc}",
            ),
            Row(
                "a. execute('1+1') vs raw jupyter_client (plain default kernel)",
                default_pool,
                default_med,
                "us",
                default_pool / default_med,
                "info",
                None,
                "baseline kernel: history on, no encryption (jupyter_client defaults)",
            ),
            Row(
                "a. lease.execute('1+1') inside a held lease vs raw (same)",
                median(lease_times["lease"]) * us,
                median(lease_times["raw"]) * us,
                "us",
                lease_ratio,
                "info",
                None,
                "protocol cost alone, lease/release excluded",
            ),
        ]
    finally:
        for raw in (raw_same, raw_default):
            if raw is not None:
                raw.close()
        if pool is not None:
            pool.shutdown()
        procs.kill_leftovers()


if __name__ == "__main__":
    from .run import main

    main([NAME])
