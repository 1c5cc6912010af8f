"""Running what the coordinator decided: kernel starts and stops, off its lock.

The coordinator decides under its lock and *returns* actions
(:mod:`nbpool.core.records`); a :class:`Runner` carries them out after the lock
is released: starts and stops on I/O threads, concurrently, never on the
coordinator thread; releases and background-request callbacks in the
calling thread. When an I/O action ends it reports back through the
callables it was given (the coordinator's ``started``, ``start_failed``,
``stopped``), which take the lock again. Waiters are settled under the lock
already: a runner never sees a :class:`~nbpool.core.records.Grant`.

At close, :meth:`Runner.stop_all` waits for every start in flight, and a start
that reaches the runner after it (decided before the close) is dropped: no
kernel starts once the pool closed, so the backend may then close.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

from ..errors import WorkerStartFailed
from ..interfaces import WorkerKernel
from .records import Action, Held, Release, Settled, Start, Stop, Worker

log = logging.getLogger("nbpool")


class Runner:
    """Carries out a coordinator's actions.

    Parameters
    ----------
    start_kernel : callable
        ``start_kernel(worker_id, kernel_name) -> kernel``; blocking, raises
        :class:`WorkerStartFailed` (the backend's ``start``, with the pool's
        ``start_timeout``).
    started : callable
        ``started(worker, kernel) -> bool``: a kernel is ready; False if it
        is no longer wanted (it is then stopped).
    start_failed : callable
        ``start_failed(worker, exc)``: a start failed.
    stopped : callable
        ``stopped(worker)``: a kernel stopped; its record may go.
    release : callable
        ``release(lease)``: the coordinator's release (for :class:`Release`).
    closed : callable
        ``closed() -> bool``: the pool is closing (stops are then polite).
    """

    def __init__(
        self,
        start_kernel: Callable[[str, str], WorkerKernel],
        *,
        started: Callable[[Worker, WorkerKernel], bool],
        start_failed: Callable[[Worker, WorkerStartFailed], None],
        stopped: Callable[[Worker], None],
        release: Callable[[Held], None],
        closed: Callable[[], bool],
    ) -> None:
        self._start_kernel = start_kernel
        self._started, self._start_failed, self._stopped = started, start_failed, stopped
        self._release, self._pool_closing = release, closed
        self._lock = threading.Lock()  # guards _io, _done and _starting
        self._io: ThreadPoolExecutor | None = None  # made by the first start or stop
        self._done = False  # stop_all ran: no executor any more, no start begins
        self._starting = 0  # starts in flight, on the executor or on exit threads
        self._no_starts = threading.Condition(self._lock)  # notified as _starting drops

    def run(self, actions: Iterable[Action]) -> None:
        """Run actions decided under the lock; one failing never drops the rest."""
        for action in actions:
            try:
                if isinstance(action, Start):
                    self._submit(self._start, action.worker)
                elif isinstance(action, Stop):
                    self._submit(self.stop, action.worker)
                elif isinstance(action, Release):
                    self._release(action.lease)
                elif isinstance(action, Settled):
                    action.waiter.on_settled(action.waiter)
            except Exception:
                log.exception("nbpool: %r failed", action)

    def _submit(self, fn: Callable[[Worker], None], w: Worker) -> None:
        with self._lock:
            if self._io is None and not self._done:
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
        with self._lock:
            if self._done:
                # Decided before the close but run after stop_all (actions are run
                # off the coordinator's lock): its backend is closing or closed, and
                # nothing would stop a kernel started now. The record just goes.
                refused = True
            else:
                refused, self._starting = False, self._starting + 1
        if refused:
            self._stopped(w)
            return
        try:
            self._start_and_report(w)
        finally:
            with self._lock:
                self._starting -= 1
                self._no_starts.notify_all()

    def _start_and_report(self, w: Worker) -> None:
        try:
            kernel = self._start_kernel(w.id, w.kernel_name)
        except WorkerStartFailed as exc:
            self._start_failed(w, exc)
            return
        except Exception as exc:  # a provisioner bug must not kill the pool
            self._start_failed(w, WorkerStartFailed(f"kernel {w.kernel_name!r}: {exc}"))
            return
        if not self._started(w, kernel):
            kernel.shutdown(now=True)  # the pool closed or moved on meanwhile

    def stop(self, w: Worker) -> None:
        """Stop ``w``'s kernel (blocking), then drop its record."""
        try:
            if w.kernel is not None:
                # A holder that never released still owns the sockets: leave them be.
                w.kernel.shutdown(
                    now=not self._pool_closing() or w.death is not None,
                    close_channels=w.lease is None,
                )
        finally:
            self._stopped(w)

    def stop_all(self, workers: list[Worker]) -> None:
        """Stop ``workers`` concurrently and wait (at close; plain threads, not the
        executor: at interpreter exit Python's executors already refuse new work).

        It returns only once every start in flight has ended (its kernel stopped
        by :meth:`_start`: the pool is closed, so ``started`` says False), and no
        start begins after it: the backend may then give back what kernels need
        (its reaper, its ZMQ context) with no kernel left to outlive it.
        """
        stoppers = [threading.Thread(target=self.stop, args=(w,)) for w in workers]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        with self._lock:
            self._done, io = True, self._io
            # Starts on exit threads are no executor's: wait for them here. A
            # start gives up at once on the backend's ``closing`` (set before).
            while self._starting:
                self._no_starts.wait()
        if io is not None:
            io.shutdown(wait=True)
