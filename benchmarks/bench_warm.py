"""k. Warm workers: a fresh worker ready with a first result, forked vs spawned.

What it measures
----------------
The time from "start a worker" to the first result (``1+1``) on it: the
path every fresh worker takes (after ``end_session``, a crash, recycling,
growth). ``Launcher.start`` as the pool calls it (AsyncKernelManager, a new
connection file and CurveZMQ keys, nbpool's readiness check, the preload),
then one execution on the kernel's sockets. Two launchers with the Pool's
default ``ipykernel_args`` and the same preload:

- *fork* (``fork_server="auto"``): forked from a template that ran the
  preload (the template is made before timing starts: once per pool);
- *spawn* (``fork_server="never"``): a new kernel process, then the preload
  as one silent execution.

Three preloads: none (the floor: fork + kernel init of an empty kernel),
``import numpy``, and ``time.sleep(1.5)`` (an expensive import or data load).
Fork and spawn alternate, each round in the other order; medians. The note
gives the worker's own CPU time to its first result, which does not depend
on the machine's load.

Then the same through a Pool at ``max_size`` (no spare worker):
``end_session`` and the first cell of a new session, which waits for the
ended session's fresh replacement. And the unique memory (USS, and PSS) per
worker with NumPy loaded, three forked vs three spawned.

Baseline
--------
Spawn, in the same run. Targets (issue 11): fork <= 0.15x spawn with the
1.5 s preload; fork <= 100 ms median with ``import numpy`` preloaded.
"""

from __future__ import annotations

import statistics
import time

import zmq

import nbpool

# One worker's start as the pool does it, without the pool's threads: only the launcher shows it.
from nbpool.kernels.kernel import LaunchSettings, LocalKernel
from nbpool.kernels.processes import memory  # USS of these bare workers (no Pool.status() here)
from nbpool.launcher import Launcher

from ._harness import Processes, Row, cpu_seconds, median

NAME = "warm"
PRELOADS = {
    "no preload": "",
    "import numpy": "import numpy",
    "sleep(1.5)": "import time\ntime.sleep(1.5)",
}
#: The Pool's default ipykernel_args: workers launched as the pool launches them.
POOL_ARGS = tuple(nbpool.Pool.class_traits()["ipykernel_args"].default())


class Starter:
    """A Launcher that forks or spawns workers with one preload; keeps what rows need."""

    def __init__(self, procs: Processes, preload: str, mode: str) -> None:
        self.procs, self.mode, self._n = procs, mode, 0
        settings = LaunchSettings(
            ipykernel_args=POOL_ARGS,
            preload=preload,
            fork_server="auto" if mode == "fork" else "never",
        )
        self.launcher = Launcher(settings)
        self.launcher.open()

    def start(self) -> tuple[LocalKernel, float, float]:
        """A ready worker with the preload done: (kernel, seconds to first result, its CPU)."""
        self._n += 1
        t0 = time.perf_counter()
        kernel = self.launcher.start(f"{self.mode}{self._n}", "python3", 120)
        self.procs.add(kernel.pid)
        if kernel.started != self.mode:
            kernel.shutdown(now=True)
            raise AssertionError(
                f"asked to {self.mode}, got {kernel.started}: {kernel.spawn_reason}"
            )
        if _execute(kernel, "1+1") != "2":
            raise AssertionError("1+1 did not give 2")
        return kernel, time.perf_counter() - t0, cpu_seconds([kernel.pid])

    def close(self) -> None:
        server = self.launcher.fork_server
        for template in server.templates() if server is not None else []:
            self.procs.add(template["pid"])
        self.launcher.close()


def _execute(kernel: LocalKernel, code: str) -> str | None:
    """One execution on the kernel's own sockets; its text/plain result."""
    ch = kernel.channels
    msg = ch.session.send(
        ch.shell,
        "execute_request",
        {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
    )
    msg_id = msg["header"]["msg_id"]
    poller = zmq.Poller()
    poller.register(ch.shell, zmq.POLLIN)
    poller.register(ch.iopub, zmq.POLLIN)
    reply = result = None
    idle = False
    while reply is None or not idle:
        if not poller.poll(60_000):
            raise TimeoutError(f"no answer to {code!r} in 60 s")
        for sock in (ch.shell, ch.iopub):
            while True:
                _, m = ch.session.recv(sock, mode=zmq.NOBLOCK)
                if m is None:
                    break
                if m["parent_header"].get("msg_id") != msg_id:
                    continue
                if m["msg_type"] == "execute_reply":
                    reply = m["content"]
                elif m["msg_type"] == "execute_result":
                    result = m["content"]["data"].get("text/plain")
                elif m["msg_type"] == "status":
                    idle = m["content"]["execution_state"] == "idle"
    if reply["status"] != "ok":
        raise AssertionError(f"{code!r} failed: {reply.get('ename')}: {reply.get('evalue')}")
    return result


def run(quick: bool = False) -> list[Row]:
    procs = Processes()
    rows = []
    try:
        for label, preload in PRELOADS.items():
            rounds = (3 if quick else 6) if "sleep" in label else (5 if quick else 12)
            rows.append(_fresh_worker(procs, label, preload, rounds))
        rows.append(_new_session_at_max_size(procs, 3 if quick else 8))
        rows.append(_memory(procs, 3))
    finally:
        procs.kill_leftovers()
    return rows


def _fresh_worker(procs: Processes, label: str, preload: str, rounds: int) -> Row:
    starters = {mode: Starter(procs, preload, mode) for mode in ("fork", "spawn")}
    times = {"fork": [], "spawn": []}
    cpu = {"fork": [], "spawn": []}
    try:
        starters["fork"].start()[0].shutdown(now=True)  # the template, once per pool
        for i in range(rounds):
            for mode in ("fork", "spawn") if i % 2 == 0 else ("spawn", "fork"):
                kernel, seconds, cpu_s = starters[mode].start()
                kernel.shutdown(now=True)
                times[mode].append(seconds)
                cpu[mode].append(cpu_s)
    finally:
        for starter in starters.values():
            starter.close()
    fork, spawn = median(times["fork"]) * 1e3, median(times["spawn"]) * 1e3
    if label == "sleep(1.5)":
        target, passed = "<= 0.15x", fork / spawn <= 0.15
    elif label == "import numpy":
        target, passed = "<= 100 ms", fork <= 100
    else:
        target, passed = "info (floor)", None
    return Row(
        f"k. fresh worker ready + 1st result, {label}: fork vs spawn",
        fork,
        spawn,
        "ms",
        fork / spawn,
        target,
        passed,
        f"{rounds} rounds; max {max(times['fork']) * 1e3:.0f} vs "
        f"{max(times['spawn']) * 1e3:.0f} ms; the worker's own CPU to its 1st result: "
        f"{median(cpu['fork']) * 1e3:.0f} vs {median(cpu['spawn']) * 1e3:.0f} ms",
    )


def _new_session_at_max_size(procs: Processes, rounds: int) -> Row:
    """end_session + the first cell of a new session on a full pool, numpy preloaded."""
    pools = {
        mode: nbpool.Pool(
            size=1, max_size=1, preload="import numpy", fork_server=mode_setting
        ).start()
        for mode, mode_setting in (("fork", "auto"), ("spawn", "never"))
    }
    times = {"fork": [], "spawn": []}
    try:
        for mode, pool in pools.items():
            pool.execute("1", session="s0")
            procs.add_pool(pool)
        for i in range(rounds):
            for mode in ("fork", "spawn") if i % 2 == 0 else ("spawn", "fork"):
                pool = pools[mode]
                t0 = time.perf_counter()
                pool.end_session(f"s{i}")
                res = pool.execute(
                    "float(numpy.ones(3).sum())", session=f"s{i + 1}", lease_timeout=120
                )
                times[mode].append(time.perf_counter() - t0)
                procs.add_pool(pool)
                if res.result != "3.0":
                    raise AssertionError(f"unexpected result {res.result!r}")
        started = {m: {w["started"] for w in p.status()["workers"]} for m, p in pools.items()}
    finally:
        for pool in pools.values():
            pool.shutdown()
    if started != {"fork": {"fork"}, "spawn": {"spawn"}}:
        raise AssertionError(f"workers started as {started}")
    fork, spawn = median(times["fork"]) * 1e3, median(times["spawn"]) * 1e3
    return Row(
        "k. end_session + 1st cell of a new session, pool at max_size, numpy: fork vs spawn",
        fork,
        spawn,
        "ms",
        fork / spawn,
        "info",
        None,
        f"{rounds} rounds; Pool(size=1, max_size=1, preload='import numpy')",
    )


def _memory(procs: Processes, n: int) -> Row:
    """USS (and PSS) of n forked and n spawned workers with NumPy loaded."""
    starters = {mode: Starter(procs, "import numpy", mode) for mode in ("fork", "spawn")}
    kernels = {"fork": [], "spawn": []}
    try:
        for _ in range(n):
            for mode, started in kernels.items():
                kernel = starters[mode].start()[0]
                started.append(kernel)
                _execute(kernel, "import numpy; numpy.ones(1000).sum()")
        uss = {m: [memory(k.pid).uss / 2**20 for k in ks] for m, ks in kernels.items()}
        pss = {m: [memory(k.pid).pss / 2**20 for k in ks] for m, ks in kernels.items()}
        template = starters["fork"].launcher.fork_server.templates()[0]["memory"]
    finally:
        for ks in kernels.values():
            for kernel in ks:
                kernel.shutdown(now=True)
        for starter in starters.values():
            starter.close()
    fork, spawn = statistics.median(uss["fork"]), statistics.median(uss["spawn"])
    return Row(
        "k. unique memory (USS) per worker, numpy loaded: fork vs spawn",
        fork,
        spawn,
        "MiB",
        fork / spawn,
        "info",
        None,
        f"{n} workers each; PSS {statistics.median(pss['fork']):.1f} vs "
        f"{statistics.median(pss['spawn']):.1f} MiB; the template: USS "
        f"{template.uss / 2**20:.1f} MiB, shared with its workers",
    )


if __name__ == "__main__":
    from .run import main

    main([NAME])
