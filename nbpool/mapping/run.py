"""``pool.map`` / ``pool.imap``: one function over many items, on session-free workers.

How a map runs
--------------
The items are cut into chunks (:func:`chunk_size`). The map asks the
coordinator for up to ``size`` *task leases* (:meth:`Coordinator.request_tasks`:
workers that hold no session; more are started up to ``max_size`` when the
sessions hold the rest). Each granted lease gets a job thread, its *holder*,
which takes chunks from the shared queue and runs each as one private shell
request on its worker (:mod:`nbpool.mapping.wire`), until the queue is empty.
Workers that come late find nothing to do and go back at once. The calling
thread only waits: for the next chunk in order, the timeout, and
``KeyboardInterrupt``, and it updates the progress bar (:mod:`nbpool.mapping.progress`).

Failures
--------
* A task raises: :class:`~nbpool.errors.TaskFailed` with the item's index
  and the worker's error; the map stops (below).
* A worker dies: its chunk goes back to the front of the queue once and a
  replacement lease is requested; a second loss of that chunk stops the map
  with :class:`~nbpool.errors.WorkerDied`. A chunk's results are kept only
  from the execution that completed it, so nothing is lost or duplicated.
* ``timeout`` passes: :class:`~nbpool.errors.ExecutionTimeout`; Ctrl-C
  (``KeyboardInterrupt`` in the calling thread): re-raised.

Stopping withdraws the map's queued requests and interrupts its running
executions, and the error is raised only once every holder has given its
worker back, so no worker stays busy with a cancelled map (one that ignores
the interrupt for ``interrupt_grace`` is replaced, as for any lease).
"""

from __future__ import annotations

import collections
import math
import threading
import time
import uuid
from concurrent.futures import CancelledError, Executor
from dataclasses import replace
from typing import Callable, Iterator

from .. import checks
from ..core.coordinator import Coordinator
from ..core.lease import Lease
from ..core.records import Waiter
from ..errors import ExecutionTimeout, NbpoolError, TaskFailed, TransferError, WorkerDied
from ..result import RemoteError
from . import wire

#: How long the calling thread waits at most between looks at deadline and progress.
SLICE = 0.05
#: Chunks per worker when ``chunksize`` is None: few enough that the
#: per-request cost of the worker kernel (~3 ms) vanishes, enough to balance.
CHUNKS_PER_WORKER = 4


def chunk_size(items: int, workers: int) -> int:
    """Items per chunk for ``chunksize=None``: about :data:`CHUNKS_PER_WORKER` per worker."""
    return max(1, math.ceil(items / (max(1, workers) * CHUNKS_PER_WORKER)))


class MapRun:
    """One map call; iterate :meth:`chunks` in the calling thread.

    Parameters
    ----------
    coordinator : Coordinator
        The pool's: task leases are requested from it and withdrawn.
    jobs : concurrent.futures.Executor
        The pool's job executor: each granted lease's holder runs there
        (None only when ``items`` is empty).
    fn : callable
    items : list
    chunksize : int or None
    timeout : float or None
        Seconds for the whole call.
    progress : callable or None
        Makes the progress display once the arguments are valid: an object
        with ``interval``, ``update(done, total)`` and ``close(ok)``, used
        from the calling thread only (see :mod:`nbpool.mapping.progress`).
    kernel_name : str
        Kernelspec of the task workers.
    interrupt_grace : float
        Seconds an interrupted chunk may take to stop (bounds the wind-down).
    workers : int
        Task leases to ask for at most (the pool's ``size``).
    """

    def __init__(
        self,
        coordinator: Coordinator,
        jobs: Executor | None,
        fn: Callable,
        items: list,
        chunksize,
        timeout,
        progress: Callable | None,
        *,
        kernel_name: str,
        interrupt_grace: float,
        workers: int,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        if chunksize is not None:
            chunksize = checks.size(chunksize, "chunksize", minimum=1)
        self.timeout = checks.timeout(timeout)
        try:
            self._fn_frame = wire.function_frame(fn)
        except Exception as exc:
            raise TransferError(
                f"pool.map cannot pickle {fn!r}: {type(exc).__name__}: {exc}"
            ) from None
        self._coordinator = coordinator
        self._jobs = jobs
        self._kernel_name = kernel_name
        self._grace = interrupt_grace
        self._items = items
        width = max(1, workers)
        self._size = size = chunksize or chunk_size(len(items), width)
        self._bounds = [(i, min(i + size, len(items))) for i in range(0, len(items), size)]
        self._token = uuid.uuid4().hex[:12]
        self._fn = fn
        self._progress = progress() if progress is not None and items else None
        self._cond = threading.Condition()
        # Guarded by _cond:
        self._todo = collections.deque(range(len(self._bounds)))
        self._results: dict[int, list] = {}
        self._lost: set[int] = set()  # chunks already retried once
        self._pending: set[Waiter] = set()
        self._leases: set[Lease] = set()
        self._refused: BaseException | None = None
        self._error: BaseException | None = None
        self._failed_chunk: int | None = None
        self.done = 0
        self._started = time.monotonic()
        self._deadline = None if self.timeout is None else self._started + self.timeout
        if self._bounds:
            self._request(min(width, len(self._bounds)))

    @property
    def total(self) -> int:
        return len(self._items)

    # -- the calling thread ------------------------------------------------

    def chunks(self) -> Iterator[list]:
        """Each chunk's results in order, as soon as they are there; raises the map's error."""
        ok = False
        try:
            for c in range(len(self._bounds)):
                values, error = self._wait_for(c)
                yield values
                if error is not None:
                    raise error
            ok = True
        except BaseException as exc:  # Ctrl-C, a failure, or the consumer stopped early
            self._stop(exc if isinstance(exc, NbpoolError) else CancelledError())
            self._wind_down()
            raise
        finally:
            if self._progress is not None:
                self._progress.update(self.done, self.total)
                self._progress.close(ok)

    def _wait_for(self, c: int) -> tuple[list, BaseException | None]:
        """Chunk ``c``'s results, and the error to raise after them (if it failed)."""
        shown = 0.0
        while True:
            with self._cond:
                if c in self._results:
                    values = self._results.pop(c)
                    return values, (self._error if c == self._failed_chunk else None)
                if self._error is None and not self._leases and not self._pending:
                    self._error = self._refused or NbpoolError(
                        "pool.map lost all its workers and got no new one"
                    )
                if self._error is not None:
                    error = self._error
                    break
                self._cond.wait(self._slice())
            now = time.monotonic()
            if self._deadline is not None and now >= self._deadline:
                self._stop(
                    ExecutionTimeout(
                        f"pool.map exceeded its {self.timeout:g} s timeout with {self.done} of "
                        f"{self.total} items done; its workers were interrupted"
                    )
                )
            if self._progress is not None and now - shown >= self._progress.interval:
                shown = now
                self._progress.update(self.done, self.total)
        self._wind_down()
        raise error

    def _slice(self) -> float:
        if self._deadline is None:
            return SLICE
        return max(0.0, min(SLICE, self._deadline - time.monotonic()))

    def _wind_down(self) -> None:
        """Wait until every holder gave its worker back, interrupting what still runs.

        A lease picked up just before the stop may start its execution after
        the first interrupt, so the running ones are interrupted every slice
        (an interrupt is sent at most twice per execution).
        """
        deadline = time.monotonic() + self._grace + 5.0
        with self._cond:
            while self._leases and time.monotonic() < deadline:
                leases = list(self._leases)
                self._cond.release()
                try:
                    for lease in leases:
                        lease.interrupt()
                finally:
                    self._cond.acquire()
                self._cond.wait(SLICE)

    def _stop(self, error: BaseException) -> None:
        """Record ``error``, withdraw the queued requests, interrupt what runs."""
        with self._cond:
            pending, leases = self._stop_locked(error)
        self._cancel(pending, leases)

    def _stop_locked(self, error: BaseException) -> tuple[list, list]:
        """Under ``_cond``: the first error wins, or a task failure at a lower index."""
        if self._error is None or (
            isinstance(error, TaskFailed)
            and isinstance(self._error, TaskFailed)
            and error.index < self._error.index
        ):
            self._error = error
            if isinstance(error, TaskFailed):
                self._failed_chunk = error.index // self._size
        pending, self._pending = list(self._pending), set()
        self._todo.clear()
        self._cond.notify_all()
        return pending, list(self._leases)

    def _cancel(self, pending: list, leases: list) -> None:
        for waiter in pending:
            self._coordinator.withdraw(waiter, CancelledError())
        for lease in leases:
            lease.interrupt()

    # -- leases and their holder threads -----------------------------------

    def _request(self, count: int) -> None:
        waiters = self._coordinator.request_tasks(self._kernel_name, count, self._settled)
        with self._cond:
            # A request may be settled before this returns (a free worker).
            self._pending.update(w for w in waiters if w.lease is None and w.error is None)

    def _settled(self, waiter: Waiter) -> None:
        """A task request was granted or refused (any thread; never raises)."""
        # Not in _pending: withdrawn by a stop (then _error is set), or granted
        # before _request could list it (a free worker: wanted).
        with self._cond:
            self._pending.discard(waiter)
            if waiter.error is not None:
                self._refused = self._refused or waiter.error
                self._cond.notify_all()
                return
            wanted = self._error is None and bool(self._todo)
            if wanted:
                self._leases.add(waiter.lease)
        if wanted:
            self._jobs.submit(self._hold, waiter.lease)
        else:
            waiter.lease.release()

    def _hold(self, lease: Lease) -> None:
        """A holder: run chunks on ``lease``'s worker until there are none left."""
        lease.holder = threading.current_thread()
        c = None
        try:
            with lease:
                fn_frame = self._fn_frame
                while True:
                    c = self._take()
                    if c is None:
                        return
                    if not wire.booted(lease.worker.kernel):
                        self._boot(lease)
                    self._run_chunk(lease, c, fn_frame)
                    fn_frame, c = b"", None
        except WorkerDied as exc:
            self._lose(c, exc)
        except BaseException as exc:
            self._stop(exc)
        finally:
            with self._cond:
                self._leases.discard(lease)
                self._cond.notify_all()

    def _take(self) -> int | None:
        with self._cond:
            if self._error is not None or not self._todo:
                return None
            return self._todo.popleft()

    def _boot(self, lease: Lease) -> None:
        res = lease.execute(wire.BOOT, silent=True)
        if not res.ok:
            raise TransferError(
                f"pool.map cannot run on worker {lease.worker_id}: "
                f"{res.error.evalue if res.error else res.status}"
            )
        wire.mark_booted(lease.worker.kernel)

    def _run_chunk(self, lease: Lease, c: int, fn_frame: bytes) -> None:
        start, stop = self._bounds[c]
        content, frames = wire.chunk_request(self._token, start, self._items[start:stop], fn_frame)
        reply = lease.call(wire.REQUEST, content, frames)
        if reply is None:  # an interrupt ended it before the handler replied
            if self._error is None:  # not our interrupt
                self._stop(
                    TaskFailed(
                        f"pool.map: items {start}-{stop - 1} were interrupted on worker "
                        f"{lease.worker_id} before they could report",
                        start,
                        RemoteError("KeyboardInterrupt", "", []),
                    )
                )
            return
        values, error, index = wire.decode(reply)
        if error is not None and error.ename == "KeyboardInterrupt" and self._error is not None:
            return  # our interrupt of a stopping map: the chunk did not complete
        if error is not None:
            error = replace(error, traceback=wire.with_sources(error.traceback, self._fn))
        with self._cond:
            self._results[c] = values
            self.done += len(values)
            stopped = None
            if error is not None:
                stopped = self._stop_locked(
                    TaskFailed(
                        f"pool.map: the task of item {index} raised {error.ename}: "
                        f"{error.evalue} (on worker {lease.worker_id}; .error.traceback has "
                        "the worker's traceback)",
                        index,
                        error,
                    )
                )
            self._cond.notify_all()
        if stopped is not None:
            self._cancel(*stopped)

    def _lose(self, c: int | None, exc: WorkerDied) -> None:
        """A holder's worker died: retry its chunk once elsewhere, then give up."""
        with self._cond:
            if c is None or self._error is not None:
                return
            start, stop = self._bounds[c]
            if c in self._lost:
                error = WorkerDied(
                    f"pool.map: items {start}-{stop - 1} lost their worker twice; the map was "
                    f"cancelled (last: {exc})"
                )
            else:
                self._lost.add(c)
                self._todo.appendleft(c)
                error = None
        if error is not None:
            self._stop(error)
        else:
            self._request(1)
