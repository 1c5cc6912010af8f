"""The coordinator thread: health checks and timers, kept apart from the policy.

As jupyter_client keeps its restarter apart from the kernel manager, the
:class:`Monitor` only *watches*: every :data:`TICK` it reads heartbeat echoes
(:mod:`nbpool.core.health`, whose sockets belong to this thread alone) and calls
the ``check`` it was given (:meth:`Coordinator.check
<nbpool.core.coordinator.Coordinator.check>`), which decides under the
coordinator's lock what a death, an expired timer or an idle worker means.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..interfaces import WorkerKernel
from .health import Heartbeats

log = logging.getLogger("nbpool")

#: Period of the coordinator thread: process polls, heartbeats, timers.
TICK = 0.03


class Monitor:
    """The coordinator thread (``nbpool-coordinator``); see the module docstring.

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
        self._thread = threading.Thread(target=self._loop, name="nbpool-coordinator", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Stop health checks and timers (tests use this instead of sleeping)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        """End the thread (it closes its heartbeat sockets) and wait for it."""
        self._stop.set()
        self._thread.join()

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
