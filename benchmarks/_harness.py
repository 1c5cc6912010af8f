"""Shared tools of the benchmarks: result rows, timing, a raw kernel client, cleanup.

Rules every benchmark follows (the machine has 2 cores and other work on it):

* a baseline is measured in the same run as nbpool, interleaved with it
  (alternating which goes first), and the row reports the ratio of medians;
* everything binds to 127.0.0.1;
* every process a benchmark starts is registered with :class:`Processes`
  and killed by pid when the benchmark ends, also when it fails.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import zmq
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session


@dataclass
class Row:
    """One line of the results table.

    ``nbpool`` and ``baseline`` are medians in ``unit``; ``ratio`` is
    nbpool / baseline unless the benchmark says otherwise (``ratio_label``);
    ``passed`` is None for informational rows (no target).
    """

    name: str
    nbpool: float | None
    baseline: float | None
    unit: str
    ratio: float | None
    target: str
    passed: bool | None
    note: str = ""


def skipped(label: str, why: str = "ipyparallel not installed (pip install -e '.[bench]')") -> Row:
    """The row of a benchmark that could not run here, saying why."""
    return Row(label, None, None, "", None, "", None, f"skipped: {why}")


def median(values) -> float:
    return statistics.median(values)


def quantile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time each callable ``rounds`` times, alternating their order each round.

    Returns seconds per call, per name. Alternating the order cancels the
    bias of "always first after a pause" or "always right after the other".
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    items = list(fns.items())
    for i in range(rounds):
        for name, fn in items if i % 2 == 0 else reversed(items):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.01
) -> None:
    """Wait on a condition with a deadline (never "sleep enough")."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


# ----------------------------------------------------------------------
# processes: kill by pid on every path
# ----------------------------------------------------------------------


def _start_ticks(pid: int) -> str | None:
    """The process start time from /proc (guards against pid reuse)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Processes:
    """The pids a benchmark started; :meth:`kill_leftovers` ends those still alive.

    Each pid is recorded with its start time, so a pid reused by an unrelated
    process later is never signalled.
    """

    def __init__(self) -> None:
        self._pids: dict[int, str | None] = {}
        self._what: dict[int, str] = {}

    def add(self, pid: int | None) -> None:
        if pid and pid not in self._pids:
            self._pids[pid] = _start_ticks(pid)
            self._what[pid] = _cmdline(pid)

    def add_pool(self, pool) -> None:
        for worker in pool.status()["workers"]:
            self.add(worker["pid"])

    def alive(self) -> list[int]:
        return [
            pid
            for pid, ticks in self._pids.items()
            if ticks is not None and _start_ticks(pid) == ticks and not _zombie(pid)
        ]

    def kill_leftovers(self) -> list[int]:
        """SIGCONT + SIGKILL every recorded process still running; returns their pids."""
        left = self.alive()
        if left:
            what = "; ".join(f"{pid} ({self._what.get(pid, '?')})" for pid in left)
            print(f"    note: killed leftover processes: {what}", file=sys.stderr, flush=True)
        for pid in left:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        return left


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:100]
    except OSError:
        return "?"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ----------------------------------------------------------------------
# the raw jupyter_client baseline
# ----------------------------------------------------------------------


def raw_like(pool, procs: "Processes") -> "RawKernel":
    """A raw baseline kernel launched exactly as the pool launches its workers.

    nbpool passes ``ipykernel_args`` only to ipykernel-based kernelspecs, binds
    to 127.0.0.1 over ``transport`` and applies ``transport_encryption``.
    """
    return RawKernel(
        procs,
        pool.kernel_name,
        list(pool.ipykernel_args),
        transport_encryption=pool.transport_encryption,
        transport=pool.transport,
    )


class RawKernel:
    """One kernel driven with jupyter_client's own pieces and nothing else.

    ``KernelManager`` starts it; a ``Session`` on the manager's shell and
    iopub sockets does the round trip: send ``execute_request``, read until
    the ``execute_reply`` and the iopub ``status: idle`` of that request
    arrived. No output collection, no liveness checks, no lease: the leanest
    correct client, i.e. the floor nbpool is compared against.
    """

    def __init__(
        self,
        processes: Processes,
        kernel_name: str = "python3",
        extra_arguments: list[str] | None = None,
        transport_encryption: str = "disabled",
        transport: str = "tcp",
    ) -> None:
        self._dir = tempfile.mkdtemp(prefix="nbpool-bench-raw-")
        conn = os.path.join(self._dir, "kernel.json")
        self.context = zmq.Context()
        self.km = KernelManager(
            kernel_name=kernel_name,
            context=self.context,
            connection_file=conn,
            transport=transport,
            ip="127.0.0.1" if transport == "tcp" else conn[:-5] + "-ipc",
            transport_encryption=transport_encryption,
        )
        argv = self.km.kernel_spec.argv
        extra = list(extra_arguments or []) if any("ipykernel" in p for p in argv) else []
        self.extra_arguments = extra
        self._log = open(os.path.join(self._dir, "kernel.log"), "ab")
        self.km.start_kernel(stdout=self._log, stderr=self._log, extra_arguments=extra)
        self.pid = self.km.provisioner.process.pid
        processes.add(self.pid)
        self.encrypted = self.km.curve_publickey is not None
        self.session = Session(
            key=self.km.session.key, signature_scheme=self.km.session.signature_scheme
        )
        self.shell = self.km.connect_shell(identity=self.session.bsession)
        self.iopub = self.km.connect_iopub()
        self._poller = zmq.Poller()
        self._poller.register(self.shell, zmq.POLLIN)
        self._poller.register(self.iopub, zmq.POLLIN)
        self._wait_ready(60.0)

    def _wait_ready(self, timeout: float) -> None:
        """kernel_info_reply received and iopub traffic seen (ZMQ slow joiner)."""
        deadline = time.monotonic() + timeout
        replied = iopub_seen = False
        next_nudge = 0.0
        while not (replied and iopub_seen):
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError("raw baseline kernel not ready")
            if now >= next_nudge and not iopub_seen:
                self.session.send(self.shell, "kernel_info_request", {})
                next_nudge = now + 0.2
            for sock, _ in self._poller.poll(50):
                while True:
                    _, msg = self.session.recv(sock, mode=zmq.NOBLOCK)
                    if msg is None:
                        break
                    if sock is self.shell:
                        replied = replied or msg["msg_type"] == "kernel_info_reply"
                    else:
                        iopub_seen = True
        while self.iopub.poll(20):
            self.session.recv(self.iopub, mode=zmq.NOBLOCK)

    def execute(self, code: str) -> dict:
        """One round trip: execute_request -> execute_reply + iopub idle; the reply content."""
        msg = self.session.send(
            self.shell,
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": False,
            },
        )
        msg_id = msg["header"]["msg_id"]
        reply, idle = None, False
        while not (reply and idle):
            ready = self._poller.poll(10_000)
            if not ready:
                raise TimeoutError("raw baseline kernel did not answer within 10 s")
            for sock, _ in ready:
                while True:
                    _, m = self.session.recv(sock, mode=zmq.NOBLOCK)
                    if m is None:
                        break
                    if m["parent_header"].get("msg_id") != msg_id:
                        continue
                    if sock is self.shell:
                        if m["msg_type"] == "execute_reply":
                            reply = m["content"]
                    elif m["msg_type"] == "status":
                        idle = m["content"].get("execution_state") == "idle"
        return reply

    def request(self, msg_type: str, content: dict, timeout: float = 10.0) -> dict:
        """One shell round trip (``complete_request`` -> ``complete_reply``); the reply content."""
        msg_id = self.session.send(self.shell, msg_type, content)["header"]["msg_id"]
        deadline = time.monotonic() + timeout
        while True:
            if not self.shell.poll(max(0, int((deadline - time.monotonic()) * 1000))):
                raise TimeoutError(f"no reply to {msg_type} within {timeout:g} s")
            _, m = self.session.recv(self.shell, mode=zmq.NOBLOCK)
            if m is not None and m["parent_header"].get("msg_id") == msg_id:
                return m["content"]

    def connect_hb(self) -> zmq.Socket:
        return self.km.connect_hb()

    def close(self) -> None:
        for sock in (self.shell, self.iopub):
            sock.close(linger=0)
        try:
            self.km.shutdown_kernel(now=True)
        finally:
            self._log.close()
            for name in os.listdir(self._dir):
                try:
                    os.unlink(os.path.join(self._dir, name))
                except OSError:
                    pass
            try:
                os.rmdir(self._dir)
            except OSError:
                pass
            self.context.destroy(linger=0)


# ----------------------------------------------------------------------
# CPU accounting (to explain throughput numbers)
# ----------------------------------------------------------------------


def cpu_seconds(pids) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (gone ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def descendants(root: int) -> list[int]:
    """Pids of all processes below ``root`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
