"""w. Warm workers: a fresh worker ready with a first result, forked vs spawned.

What it measures
----------------
The time from "start a worker" to the first result (``1+1``) on it, the
path every fresh worker takes (after ``end_session``, a crash, recycling,
growth): an AsyncKernelManager with a new connection file and CurveZMQ keys
on the provisioner loop, nbpool's own readiness check
(``Kernel.wait_ready``: a kernel_info reply and live iopub), then one
execution. Workers are launched with the Pool's default ``ipykernel_args``.

- *fork*: :class:`~nbpool.fork_provisioner.ForkingProvisioner` forks the
  worker from a template that has run the preload (the template is made
  before timing starts: that happens once per pool);
- *spawn*: jupyter_client's LocalProvisioner (Popen), then the preload as one
  silent execution (``store_history=False``), as a spawned worker gets it.

Three preloads: none (the floor: fork + kernel init of an empty kernel),
``import numpy``, and ``time.sleep(1.5)`` (an expensive import or data load).
Fork and spawn alternate, each round in the other order; medians.

Also: unique memory (USS, and PSS) per worker with NumPy loaded, three
forked vs three spawned, measured after one execution on each.

Baseline
--------
Spawn, in the same run. Targets (issue 11): fork <= 0.15x spawn with the
1.5 s preload; fork <= 100 ms median with ``import numpy`` preloaded.
"""

from __future__ import annotations

import os
import statistics
import time

import zmq
import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager

from nbpool.fork_provisioner import install, launch_mode
from nbpool.forkserver import ForkServer, memory
from nbpool.pool import Pool
from nbpool.provisioning import Launcher, run_provisioner
from nbpool.worker import LocalKernel

from ._harness import Processes, Row, cpu_seconds, median

NAME = "warm"
PRELOADS = {
    "no preload": "",
    "import numpy": "import numpy",
    "sleep(1.5)": "import time\ntime.sleep(1.5)",
}


class Bench:
    """Starts workers as nbpool would (fork or spawn); keeps what the rows need."""

    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        defaults = Pool.class_traits()["ipykernel_args"].default()  # as the Pool launches
        self.launcher = Launcher(ipykernel_args=list(defaults))
        self.server = ForkServer(self.launcher.runtime_dir, self.launcher.reaper)
        self._n = 0

    def start(self, mode: str, preload: str) -> tuple[LocalKernel, float, float]:
        """A ready worker with ``preload`` done: (kernel, seconds to launched, to first result).

        ``self.cpu`` is then the worker's own CPU seconds up to its first
        result (10 ms ticks): the physical floor, whatever the machine's load.
        """
        self._n += 1
        wid = f"b{self._n}"
        t0 = time.perf_counter()
        conn = os.path.join(self.launcher.runtime_dir, f"kernel-{wid}.json")
        log = os.path.join(self.launcher.runtime_dir, f"kernel-{wid}.log")
        km = AsyncKernelManager(
            kernel_name="python3",
            context=zmq.asyncio.Context.shadow(self.launcher.context.underlying),
            connection_file=conn, transport="tcp", ip="127.0.0.1",
            transport_encryption="auto",
        )
        if mode == "fork":
            install(km, self.server, preload)
        with open(log, "ab") as f:
            extra = self.launcher.extra_arguments(km.kernel_spec.argv)
            run_provisioner(km.start_kernel(stdout=f, stderr=f, extra_arguments=extra))
        launched = time.perf_counter() - t0
        kernel = LocalKernel(self.launcher, wid, km, log)
        self.procs.add(kernel.pid)
        started, reason = launch_mode(km)
        if started != mode:
            kernel.shutdown(now=True)
            raise AssertionError(f"asked to {mode}, got {started}: {reason}")
        kernel.wait_ready(60)
        if mode == "spawn" and preload:
            _execute(kernel, preload, silent=True)
        result = _execute(kernel, "1+1")
        if result != "2":
            raise AssertionError(f"1+1 gave {result!r}")
        total = time.perf_counter() - t0
        self.cpu = cpu_seconds([kernel.pid])
        return kernel, launched, total

    def close(self) -> None:
        for t in self.server.templates():
            self.procs.add(t["pid"])
        self.server.close()
        self.launcher.close()


def _execute(kernel: LocalKernel, code: str, silent: bool = False) -> str | None:
    """One execution on the kernel's own sockets; its text/plain result."""
    ch = kernel.channels
    msg = ch.session.send(ch.shell, "execute_request", {
        "code": code, "silent": silent, "store_history": not silent, "user_expressions": {},
        "allow_stdin": False, "stop_on_error": True,
    })
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
    bench = Bench(procs)
    rows = []
    try:
        for label, preload in PRELOADS.items():
            rounds = (3 if quick else 6) if "sleep" in label else (5 if quick else 12)
            bench.start("fork", preload)[0].shutdown(now=True)  # the template, once per pool
            times = {"fork": [], "spawn": []}
            cpu = {"fork": [], "spawn": []}
            launched = []
            for i in range(rounds):
                for mode in ("fork", "spawn") if i % 2 == 0 else ("spawn", "fork"):
                    kernel, up, total = bench.start(mode, preload)
                    kernel.shutdown(now=True)
                    times[mode].append(total)
                    cpu[mode].append(bench.cpu)
                    if mode == "fork":
                        launched.append(up)
            fork, spawn = median(times["fork"]) * 1e3, median(times["spawn"]) * 1e3
            if label == "sleep(1.5)":
                target, passed = "<= 0.15x", fork / spawn <= 0.15
            elif label == "import numpy":
                target, passed = "<= 100 ms", fork <= 100
            else:
                target, passed = "info (floor)", None
            rows.append(Row(
                f"w. fresh worker ready + 1st result, {label}: fork vs spawn",
                fork, spawn, "ms", fork / spawn, target, passed,
                f"{rounds} rounds; fork: launched (forked, sockets bound) after "
                f"{median(launched) * 1e3:.0f} ms, max {max(times['fork']) * 1e3:.0f} ms; "
                f"spawn max {max(times['spawn']) * 1e3:.0f} ms; the worker's own CPU to its "
                f"1st result: fork {median(cpu['fork']) * 1e3:.0f} ms, spawn "
                f"{median(cpu['spawn']) * 1e3:.0f} ms",
            ))
        rows.append(_memory(bench, 3))
    finally:
        bench.close()
        procs.kill_leftovers()
    return rows


def _memory(bench: Bench, n: int) -> Row:
    """USS (and PSS) of n forked and n spawned workers with NumPy loaded."""
    kernels = {"fork": [], "spawn": []}
    try:
        for _ in range(n):
            for mode, started in kernels.items():
                kernel = bench.start(mode, "import numpy")[0]
                started.append(kernel)
                _execute(kernel, "import numpy; numpy.ones(1000).sum()")
        uss = {m: [memory(k.pid).uss / 2**20 for k in ks] for m, ks in kernels.items()}
        pss = {m: [memory(k.pid).pss / 2**20 for k in ks] for m, ks in kernels.items()}
        template = bench.server.templates()[0]["memory"]
    finally:
        for ks in kernels.values():
            for kernel in ks:
                kernel.shutdown(now=True)
    fork, spawn = statistics.median(uss["fork"]), statistics.median(uss["spawn"])
    return Row(
        "w. unique memory (USS) per worker, numpy loaded: fork vs spawn",
        fork, spawn, "MiB", fork / spawn, "info", None,
        f"{n} workers each; PSS {statistics.median(pss['fork']):.1f} vs "
        f"{statistics.median(pss['spawn']):.1f} MiB; the template: USS "
        f"{template.uss / 2**20:.1f} MiB, shared with its workers",
    )


if __name__ == "__main__":
    from .run import main

    main([NAME])
