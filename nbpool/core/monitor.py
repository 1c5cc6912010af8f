"""The coordinator thread: heartbeats and timers, kept apart from the policy.

As jupyter_client keeps its restarter apart from the kernel manager, the
:class:`Monitor` only *watches*: every :data:`TICK` it reads heartbeat echoes
(:class:`Heartbeats`, whose sockets belong to this thread alone) and calls
the ``check`` it was given (:meth:`Coordinator.check
<nbpool.core.coordinator.Coordinator.check>`), which decides under the
coordinator's lock what a death, an expired timer or an idle worker means.

A kernel's heartbeat is answered by a ZMQ device outside its interpreter, so
it keeps answering while user code runs (even code holding the GIL) and stops
only when the process is frozen (SIGSTOP) or cut off by the network.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import zmq

from ..interfaces import WorkerKernel

log = logging.getLogger("nbpool")

#: Period of the coordinator thread: process polls, heartbeats, timers.
TICK = 0.03


class Monitor:
    """The coordinator thread (``nbpool-coordinator``); see the module docstring.

    Constructing it starts nothing: :meth:`start` starts the thread (the
    coordinator's first use does), :meth:`stop` ends it.

    Parameters
    ----------
    ready_kernels : callable
        ``ready_kernels() -> {worker_id: kernel}``: the workers to ping.
    check : callable
        ``check(now, lost)``: one tick's bookkeeping; ``lost(worker_id, now)``
        is the heartbeat verdict.
    heartbeat_interval, heartbeat_timeout : float
    """

    def __init__(
        self,
        ready_kernels: Callable[[], dict[str, WorkerKernel]],
        check: Callable[[float, Callable[[str, float], str | None]], None],
        heartbeat_interval: float,
        heartbeat_timeout: float,
    ) -> None:
        self._ready_kernels, self._check = ready_kernels, check
        self.heartbeats = Heartbeats(heartbeat_interval, heartbeat_timeout)
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards _thread: start and stop may race
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread; idempotent, and a no-op once stopped."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._loop, name="nbpool-coordinator", daemon=True
            )
            self._thread.start()

    def pause(self) -> None:
        """Stop health checks and timers (tests use this instead of sleeping)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        """End the thread (it closes its heartbeat sockets) and wait for it, if it ran."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.heartbeats.sync(self._ready_kernels())
            if not self.heartbeats.wait(TICK):
                self._stop.wait(TICK)
            if self._running.is_set() and not self._stop.is_set():
                try:
                    self._check(time.monotonic(), self.heartbeats.lost)
                except Exception:  # the health checks must outlive any one bug
                    log.exception("nbpool: coordinator check failed")
        self.heartbeats.close()


class Heartbeats:
    """One REQ socket per ready worker, pinged every ``interval`` seconds.

    A worker counts as lost when no echo came for ``timeout`` seconds *and*
    a ping has stayed unanswered for a while as seen by this thread's own
    reads. The second condition keeps the verdict on the kernel, not on how
    long this thread was kept from running: a notebook holding the GIL for
    seconds must not get healthy workers killed.

    Parameters
    ----------
    interval : float
        Seconds between pings.
    timeout : float
        Seconds a ping may stay unanswered before its worker counts as lost.
    """

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._poller = zmq.Poller()
        # worker id -> [socket, last ping, oldest unanswered ping or None, last echo]
        self._entries: dict[str, list] = {}
        self._last_read = 0.0

    def sync(self, ready: dict) -> None:
        """Open and close sockets to match ``ready`` (worker id -> kernel)."""
        for worker_id in list(self._entries):
            if worker_id not in ready:
                self._drop(worker_id)
        for worker_id, kernel in ready.items():
            if worker_id not in self._entries:
                sock = kernel.connect_hb()
                if sock is None:  # a kernel with no heartbeat: its poll() is its health
                    continue
                self._poller.register(sock, zmq.POLLIN)
                self._entries[worker_id] = [sock, 0.0, None, time.monotonic()]

    def wait(self, timeout: float) -> bool:
        """Read answers for up to ``timeout`` seconds, then send due pings.

        Returns False if there is nothing to wait on.
        """
        if not self._entries:
            return False
        for sock, _ in self._poller.poll(timeout * 1000):
            while sock.poll(0):
                sock.recv()
            for entry in self._entries.values():
                if entry[0] is sock:  # any echo proves the kernel alive
                    entry[2], entry[3] = None, time.monotonic()
        now = self._last_read = time.monotonic()
        for entry in self._entries.values():
            if now - entry[1] >= self.interval:
                entry[0].send(b"ping")
                entry[1] = now
                if entry[2] is None:
                    entry[2] = now
        return True

    def lost(self, worker_id: str, now: float) -> str | None:
        """Why ``worker_id`` counts as dead by heartbeat, or None."""
        entry = self._entries.get(worker_id)
        if entry is None or entry[2] is None:
            return None
        silent = self._last_read - entry[3]
        waited = self._last_read - entry[2]  # a healthy kernel echoes in milliseconds
        if silent > self.timeout and waited >= min(1.0, self.timeout / 2):
            return f"stopped answering heartbeats for {silent:.1f} s (frozen or unreachable)"
        return None

    def close(self) -> None:
        for worker_id in list(self._entries):
            self._drop(worker_id)

    def _drop(self, worker_id: str) -> None:
        sock = self._entries.pop(worker_id)[0]
        self._poller.unregister(sock)
        sock.close(linger=0)
