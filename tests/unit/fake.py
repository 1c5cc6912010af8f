"""A fake worker backend: deterministic kernels for coordinator bookkeeping tests.

Only the coordinator's bookkeeping is tested with it; everything that claims
to work with kernels is proven against real ones in tests/integration/.
"""

from __future__ import annotations

import itertools
import threading

from nbpool.errors import WorkerStartFailed
from nbpool.status import PoolStatus


def status_of(coord) -> PoolStatus:
    """A coordinator's snapshot as ``Pool.status()`` renders it."""
    return PoolStatus.from_snapshot(coord.snapshot())


class FakeKernel:
    attached = False
    encrypted = False

    def __init__(self, worker_id: str, kernel_name: str, pid: int) -> None:
        self.worker_id = worker_id
        self.kernel_name = kernel_name
        self.pid = pid
        self.dead: str | None = None
        self.stopped = threading.Event()
        self.interrupts = 0

    def poll(self) -> str | None:
        return self.dead

    def interrupt(self) -> None:
        self.interrupts += 1

    def shutdown(self, now: bool = False, close_channels: bool = True) -> None:
        self.stopped.set()


class FakeBackend:
    """A pool backend (``nbpool.Pool(backend=...)``): no processes, no reaper.

    ``open()`` is counted in ``opens``; ``start(worker_id, kernel_name,
    timeout)`` makes a :class:`FakeKernel`; ``fail_with`` makes starts fail;
    ``gate`` (an Event) holds starts until set.
    """

    def __init__(self) -> None:
        self.closing = threading.Event()
        self.opens = 0
        self.started: list[FakeKernel] = []
        self.fail_with: str | None = None
        self.gate = threading.Event()
        self.gate.set()
        self._pids = itertools.count(1000)
        self._lock = threading.Lock()

    def open(self) -> None:
        """Count it: nothing to acquire (a Launcher makes its files, reaper and sockets here)."""
        self.opens += 1

    def start(self, worker_id: str, kernel_name: str, start_timeout: float) -> FakeKernel:
        self.gate.wait(start_timeout)
        if self.fail_with is not None:
            raise WorkerStartFailed(
                f"kernel {kernel_name!r} exited with code 1 while starting", self.fail_with
            )
        with self._lock:
            kernel = FakeKernel(worker_id, kernel_name, next(self._pids))
            self.started.append(kernel)
        return kernel

    def attach(self, *args, **kwargs):
        raise NotImplementedError("the fake backend attaches nothing")

    def close(self) -> None:
        self.closing.set()
