"""A fake backend for tests: a pool whose kernels are bookkeeping only.

``nbpool.Pool(backend=FakeBackend())`` is a real pool (its coordinator,
leases, sessions, queue, status) whose workers are :class:`FakeKernel`\\ s:
no process, no socket, no kernelspec lookup beyond the pool's own check. It
lets code that drives a pool (leases, sessions, ``status()``, ``resize``,
restarts, deaths) be tested fast and deterministically, as httpcore ships
``MockBackend`` for code built on its pool::

    from nbpool.testing import FakeBackend

    backend = FakeBackend()
    with nbpool.Pool(size=1, backend=backend) as pool:
        with pool.lease("etl") as lease:
            backend.started[0].dead = "was killed by signal 9"  # the worker dies
            ...                                                 # WorkerDied follows

A fake kernel runs no code: ``Lease.execute`` on it raises
``NotImplementedError``. What runs code is proven against real kernels.

Both classes implement the protocols of :mod:`nbpool.interfaces` fully
(``tests/unit/test_interfaces.py`` checks it).
"""

from __future__ import annotations

import itertools
import threading

from .errors import WorkerStartFailed
from .kernels.execution import Channels

__all__ = ["FakeBackend", "FakeKernel"]


class FakeKernel:
    """A :class:`~nbpool.interfaces.WorkerKernel` that is only bookkeeping.

    Set ``dead`` to a reason (``"exited with code 1"``) and the pool sees it
    die at its next health check. ``stopped`` is set once the pool stopped
    it; ``interrupts`` counts interrupts.
    """

    worker_id: str
    kernel_name: str
    pid: int | None
    attached = False
    encrypted = False
    started: str | None = None  # no process began: neither forked nor spawned
    spawn_reason: str | None = None

    def __init__(self, worker_id: str, kernel_name: str, pid: int) -> None:
        self.worker_id = worker_id
        self.kernel_name = kernel_name
        self.pid: int | None = pid
        self.dead: str | None = None
        self.stopped = threading.Event()
        self.interrupts = 0
        self.kept = False

    @property
    def channels(self) -> Channels:
        raise NotImplementedError(
            "nbpool.testing.FakeKernel runs no code; test execution against a real kernel"
        )

    def poll(self) -> str | None:
        return self.dead

    def interrupt(self) -> None:
        self.interrupts += 1

    def shutdown(self, now: bool = False, close_channels: bool = True) -> None:
        self.stopped.set()

    def connect_hb(self) -> None:
        return None  # no heartbeat: ``dead`` is its health

    def keep_record(self) -> dict | None:
        return None  # no process to keep

    def keep(self) -> None:
        self.kept = True

    def let_go(self) -> None:
        self.kept = True

    def connection_info(self) -> None:
        return None  # no sockets: nothing to connect to


class FakeBackend:
    """A :class:`~nbpool.interfaces.Backend` of :class:`FakeKernel`\\ s: no processes, no reaper.

    Attributes
    ----------
    started : list of FakeKernel
        Every kernel it started, in order.
    fail_with : str or None
        Set: starts fail with :class:`~nbpool.errors.WorkerStartFailed`,
        this being the kernel's stderr.
    gate : threading.Event
        Starts wait until it is set (it is, at first): clear it to hold
        starts, set it to let them finish.
    pending : str or None
        What :meth:`pending_reason` says of a kernel being started.
    opens : int
        How often :meth:`open` was called (the pool opens its backend once,
        on first use; constructing a pool does not).
    """

    closing: threading.Event

    def __init__(self) -> None:
        self.closing = threading.Event()
        self.started: list[FakeKernel] = []
        self.fail_with: str | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.pending: str | None = None
        self._pids = itertools.count(1000)
        self._lock = threading.Lock()
        self.opens = 0

    def open(self) -> None:
        """Counted in :attr:`opens`: nothing to acquire."""
        self.opens += 1

    def start(self, worker_id: str, kernel_name: str, start_timeout: float) -> FakeKernel:
        if self.closing.is_set():
            raise WorkerStartFailed("the pool was shut down; no worker is started")
        self.gate.wait(start_timeout)
        if self.closing.is_set():  # as a real launch, given up when the pool closes
            raise WorkerStartFailed("the pool was shut down while this kernel started")
        if self.fail_with is not None:
            raise WorkerStartFailed(
                f"kernel {kernel_name!r} exited with code 1 while starting", self.fail_with
            )
        with self._lock:
            kernel = FakeKernel(worker_id, kernel_name, next(self._pids))
            self.started.append(kernel)
        return kernel

    def attach(
        self,
        worker_id: str,
        path: str,
        timeout: float,
        allow_insecure: bool,
        sshserver: str | None = None,
        sshkey: str | None = None,
    ) -> FakeKernel:
        raise NotImplementedError("the fake backend attaches nothing")

    def pending_reason(self, worker_id: str) -> str | None:
        return self.pending

    def close(self) -> None:
        self.closing.set()
