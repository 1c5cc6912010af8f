"""(g) What ``%%pool_exec`` adds to a notebook cell, vs ipyparallel's ``%%px``.

A real notebook kernel (ipykernel, driven by a bare jupyter_client round
trip: execute_request -> execute_reply + iopub idle) runs three cells,
interleaved: a local ``pass``, ``%%pool_exec`` of ``pass`` (one nbpool
worker), and ``%%px --block`` of ``pass`` (one ipyparallel engine, its
controller started from the same kernel). The overhead of each remote cell
is its median minus the local cell's median; the ratio compares the two
overheads (target: nbpool <= 0.5x of ``%%px``). Both sides wait for the
remote code to finish and show its output in the cell; ``%%px`` without
``--block`` returns before the engine ran anything, so it is not comparable.
"""

from __future__ import annotations

import importlib.util

from ._harness import Processes, RawKernel, Row, descendants, interleaved, median, skipped

NAME = "magic"

SETUP = """
%load_ext nbpool
%pool start -n 1
import logging, ipyparallel as ipp
cluster = ipp.Cluster(n=1, controller_ip="127.0.0.1", log_level=logging.WARNING)
rc = cluster.start_and_connect_sync()
rc.activate()
"""
TEARDOWN = "cluster.stop_cluster_sync()\n%pool stop"
CELLS = {
    "local": "pass",
    "pool_exec": "%%pool_exec\npass",
    "px": "%%px --block\npass",
}


def run(quick: bool = False) -> list[Row]:
    if importlib.util.find_spec("ipyparallel") is None:  # the kernel imports it
        return [skipped("g. %%pool_exec vs %%px")]
    procs = Processes()
    kernel = RawKernel(procs)
    try:
        for code in (SETUP, *CELLS.values()):
            reply = kernel.execute(code)
            if reply.get("status") != "ok":
                raise RuntimeError(
                    f"setup cell failed: {reply.get('ename')}: {reply.get('evalue')}"
                )
        for pid in descendants(kernel.pid):
            procs.add(pid)
        rounds = 100 if quick else 300
        fns = {name: (lambda code=code: kernel.execute(code)) for name, code in CELLS.items()}
        interleaved(fns, 10)
        t = {name: median(v) * 1000 for name, v in interleaved(fns, rounds).items()}
        ours, theirs = t["pool_exec"] - t["local"], t["px"] - t["local"]
        ratio = ours / theirs
        return [
            Row(
                "g. %%pool_exec overhead over a local cell vs %%px --block",
                ours,
                theirs,
                "ms",
                ratio,
                "<= 0.50",
                ratio <= 0.50,
                f"{rounds} interleaved rounds; cells: local {t['local']:.2f} ms, "
                f"%%pool_exec {t['pool_exec']:.2f} ms, %%px --block {t['px']:.2f} ms",
            ),
        ]
    finally:
        try:
            kernel.execute(TEARDOWN)
        finally:
            kernel.close()
            procs.kill_leftovers()
