"""Running what the coordinator decided: kernel starts and stops, off its lock.

The coordinator decides under its lock and *returns* actions
(:mod:`nbpool.core.records`); a :class:`Runner` carries them out after the lock
is released: starts and stops on I/O threads, concurrently, never on the
coordinator thread; releases and background-request callbacks in the
calling thread. When an I/O action ends it reports back through the
coordinator's bookkeeping methods (``started``, ``start_failed``,
``stopped``), which take the lock again.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import WorkerStartFailed
from .records import Action, Release, Settled, Start, Stop, Worker

if TYPE_CHECKING:
    from .coordinator import Coordinator

log = logging.getLogger("nbpool")


class Runner:
    """Carries out a coordinator's actions.

    Parameters
    ----------
    coordinator : Coordinator
    start_kernel : callable
        ``start_kernel(worker_id, kernel_name, start_timeout) -> kernel``;
        blocking, raises :class:`WorkerStartFailed` (the backend's ``start``).
    """

    def __init__(self, coordinator: Coordinator, start_kernel: Callable) -> None:
        self._coordinator = coordinator
        self._start_kernel = start_kernel
        self._lock = threading.Lock()  # guards _io and _closed
        self._io: ThreadPoolExecutor | None = None  # made by the first start or stop
        self._closed = False

    def run(self, actions: Iterable[Action]) -> None:
        """Run actions decided under the lock; one failing never drops the rest."""
        for action in actions:
            try:
                if isinstance(action, Start):
                    self._submit(self._start, action.worker)
                elif isinstance(action, Stop):
                    self._submit(self.stop, action.worker)
                elif isinstance(action, Release):
                    self._coordinator.release(action.lease)
                elif isinstance(action, Settled):
                    action.waiter.on_settled(action.waiter)
            except Exception:
                log.exception("nbpool: %r failed", action)

    def _submit(self, fn: Callable[[Worker], None], w: Worker) -> None:
        with self._lock:
            if self._io is None and not self._closed:
                # Threads are made lazily; generous so resize() never queues starts.
                self._io = ThreadPoolExecutor(max_workers=64, thread_name_prefix="nbpool-io")
            io = self._io
        if io is not None:
            try:
                io.submit(fn, w)
                return
            except RuntimeError:  # interpreter exit or stopped: executors refuse new work
                pass
        threading.Thread(target=fn, args=(w,), name="nbpool-io-exit").start()

    def _start(self, w: Worker) -> None:
        try:
            kernel = self._start_kernel(
                w.id, w.kernel_name, self._coordinator.settings.start_timeout
            )
        except WorkerStartFailed as exc:
            self._coordinator.start_failed(w, exc)
            return
        except Exception as exc:  # a provisioner bug must not kill the pool
            self._coordinator.start_failed(w, WorkerStartFailed(f"kernel {w.kernel_name!r}: {exc}"))
            return
        if not self._coordinator.started(w, kernel):
            kernel.shutdown(now=True)  # the pool closed or moved on meanwhile

    def stop(self, w: Worker) -> None:
        """Stop ``w``'s kernel (blocking), then drop its record."""
        try:
            if w.kernel is not None:
                # A holder that never released still owns the sockets: leave them be.
                w.kernel.shutdown(
                    now=not self._coordinator.closed or w.death is not None,
                    close_channels=w.lease is None,
                )
        finally:
            self._coordinator.stopped(w)

    def stop_all(self, workers: list[Worker]) -> None:
        """Stop ``workers`` concurrently and wait (at close; plain threads, not the
        executor: at interpreter exit Python's executors already refuse new work)."""
        stoppers = [threading.Thread(target=self.stop, args=(w,)) for w in workers]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        with self._lock:
            self._closed, io = True, self._io
        if io is not None:
            io.shutdown(wait=True)
