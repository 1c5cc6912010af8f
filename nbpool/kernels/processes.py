"""Processes and the provisioner loop: the leaf under every kernel nbpool starts.

- :func:`run_provisioner`: one long-lived event loop per process on which
  every provisioner call runs, as in Jupyter Server (provisioners are async
  and may rely on a loop that keeps running between calls: gateway_provisioners
  receives remote kernels' connection info in a loop callback registered once
  per process). jupyter_client's blocking manager would instead run each
  call on a loop of the calling thread, alive only during that call.
- :func:`kill_group`: SIGKILL a kernel's process group.
- :class:`Reaper`: the hand-off to a helper process that stops every worker
  when the process hosting the pool dies without shutting it down.

It imports nothing else of nbpool, so kernels, SSH tunnels and the launcher
can all build on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import NamedTuple

#: How many times a start is tried when it lost a port race (another process
#: took a port between its choice and its bind; jupyter_client #487).
PORT_RACE_TRIES = 4


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


class LaunchCancelled(Exception):
    """A provisioner call ran past its time or its stop event; it was cancelled."""


def run_provisioner(coro, timeout: float | None = None, stop: threading.Event | None = None):
    """Run a KernelManager/provisioner coroutine on the provisioner loop; blocking.

    The loop runs on a daemon thread for the rest of the process (a loop
    callback a provisioner registered stays live for later kernels and pools).
    A provisioner that blocks the loop delays every other provisioner call,
    as it would in Jupyter Server.

    With ``timeout`` (seconds) or ``stop``, the coroutine is cancelled when
    either runs out (a batch job may wait in a queue for hours) and
    :class:`LaunchCancelled` is raised once its own cleanup has run (a
    provisioner cancels its job on ``CancelledError``).
    """
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(
                target=_loop.run_forever, name="nbpool-provisioners", daemon=True
            ).start()
    if timeout is not None or stop is not None:
        coro = _bounded(coro, timeout, stop)
    return asyncio.run_coroutine_threadsafe(coro, _loop).result()


async def _bounded(coro, timeout: float | None, stop: threading.Event | None):
    task = asyncio.ensure_future(coro)
    deadline = None if timeout is None else time.monotonic() + timeout
    while not task.done():
        late = deadline is not None and time.monotonic() >= deadline
        if late or (stop is not None and stop.is_set()):
            task.cancel()
            try:
                return await task  # finished anyway: the caller owns (and stops) what it made
            except asyncio.CancelledError:
                raise LaunchCancelled() from None
        await asyncio.wait({task}, timeout=0.05)
    return task.result()


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal (SIGKILL) a process group if it still exists (a kernel's children too)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Reaper:
    """A helper process that kills our worker kernels if this process dies.

    It reads ``+PGID`` / ``-PGID`` lines on its stdin (and ``=ID JSON`` /
    ``~ID`` for kernels with no process here); at EOF (this process exited,
    however it exited) it kills every process group still registered,
    removes the pool's runtime directory (connection files, kernel logs),
    and stops those remote kernels through their restored provisioner and a
    shutdown request (see :mod:`nbpool.kernels._reaper`). The pipe is private
    to the two processes, so connection keys stay out of argv and files.
    """

    def __init__(self, runtime_dir: str) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "nbpool.kernels._reaper", runtime_dir],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in a terminal must not reach it
            text=True,
        )

    def _send(self, line: str) -> None:
        with self._lock:
            if self._proc.stdin and not self._proc.stdin.closed:
                self._proc.stdin.write(line + "\n")
                self._proc.stdin.flush()

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def watch_remote(self, kernel_id: str, km) -> None:
        """A kernel with no process here: stop it through its provisioner if we die."""
        entry = {
            "kernel_name": km.kernel_name,
            "connection_info": km.get_connection_info(),
            "provisioner_info": run_provisioner(km.provisioner.get_provisioner_info()),
        }
        self._send(f"={kernel_id} {json.dumps(entry, default=_text)}")

    def forget_remote(self, kernel_id: str) -> None:
        self._send(f"~{kernel_id}")

    def close(self) -> None:
        with self._lock:
            if self._proc.stdin and not self._proc.stdin.closed:
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _text(value) -> str:
    """JSON for what connection and provisioner info may hold besides JSON (key bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


class Memory(NamedTuple):
    """A process's memory in bytes: ``uss`` its own pages, ``pss`` with shared ones split."""

    uss: int
    pss: int
    rss: int


def memory(pid: int) -> Memory | None:
    """USS, PSS and RSS of ``pid`` from ``/proc/PID/smaps_rollup``; None if unreadable.

    USS (private pages) is what ending this worker would free; for a forked
    worker, pages it still shares with its template are not in it.
    """
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if rest.strip().endswith("kB"):
                    fields[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        return None
    if "Pss" not in fields:
        return None
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return Memory(uss=uss, pss=fields["Pss"], rss=fields.get("Rss", 0))
