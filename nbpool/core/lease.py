"""A lease: exclusive use of one worker by one client thread.

While a lease is held its worker's sockets belong to the holder; nobody else
touches them. The holder runs code with :meth:`Lease.execute` (blocking in
*its* thread) and gives the worker back with :meth:`Lease.release` or by
leaving the ``with`` block. A lease ends *dirty* when an execution did not
finish cleanly; the coordinator then replaces the worker instead of handing
it on.

A lease knows no coordinator: it is given the few things it needs of the
pool (how to give the worker back, where to report a timeout, whether the
pool closed or detached it) as callables.
"""

from __future__ import annotations

import threading
from typing import Callable

from .. import checks
from ..errors import ExecutionTimeout, LeaseReleased, PoolClosed, WorkerDied
from ..kernels.execution import Execution, OutputHook, StdinHandler
from ..result import ExecutionResult
from .records import Worker


class Lease:
    """Exclusive use of one worker; valid until released.

    Parameters
    ----------
    worker : Worker
    session, generation, session_reset
        As the attributes below (the :class:`~nbpool.core.records.Grant`'s).
    interrupt_grace : float
        Seconds an interrupted execution may take before the worker is given up.
    release : callable
        ``release(lease)``: give the worker back (the coordinator's bookkeeping).
    note : callable
        ``note(kind, worker, message, counter)``: record an event for ``status()``.
    closed : callable
        ``closed() -> bool``: the pool was shut down or detached.
    detached : callable
        ``detached(worker_id) -> bool``: the pool was detached and left this
        worker running for its kept session.

    Attributes
    ----------
    worker_id : str
    session : str or None
        The session this lease serves (its state lives on this worker); None
        for a task lease (:meth:`~nbpool.core.coordinator.Coordinator.request_tasks`), which binds no
        session.
    generation : int
        How many times this session's state was lost before this lease.
    session_reset : str or None
        Why the session's earlier state is gone, if it is; reported once, on
        the first execution of this lease.
    busy : bool
        An execution is running now.
    executions : int
        Executions run under this lease.

    ``busy`` and ``executions`` are written by the holder thread alone and
    read by the coordinator's snapshot without a lock (a bool and an int:
    a reader sees the old or the new value, never a torn one).
    """

    def __init__(
        self,
        worker: Worker,
        session: str | None,
        *,
        generation: int,
        session_reset: str | None,
        interrupt_grace: float,
        release: Callable[[Lease], None],
        note: Callable[[str, Worker, str, str], None],
        closed: Callable[[], bool],
        detached: Callable[[str], bool],
    ) -> None:
        self._give_back, self._note = release, note
        self._closed, self._detached = closed, detached
        self.worker = worker
        self.worker_id = worker.id
        self.session = session
        self.generation = generation
        self.session_reset = session_reset
        self._grace = interrupt_grace
        self.executions = 0
        self.busy = False
        self.dirty: str | None = None
        self.released = False
        self.holder: threading.Thread | None = None
        self._execution: Execution | None = None

    def execute(
        self,
        code: str,
        timeout: float | None = None,
        *,
        on_output: OutputHook | None = None,
        stdin: StdinHandler | None = None,
        silent: bool = False,
        output_limit: int | None = None,
    ) -> ExecutionResult:
        """Run ``code`` on the leased worker and wait for it (in this thread).

        Parameters
        ----------
        code : str
        timeout : float, optional
            Exec timeout in seconds; on expiry the worker is interrupted.
        on_output : callable, optional
            Called with each output dict as it arrives (live streaming).
        stdin : callable, optional
            ``stdin(prompt, password) -> str`` answers ``input()`` on the
            worker; without it ``input()`` raises there at once.
        silent : bool
            Jupyter's ``silent``: no displayed result, no history, no
            execution count (how :mod:`nbpool.mapping.run` boots a worker).
        output_limit : int, optional
            Characters of stream text the result keeps (its ``stdout``,
            ``stderr`` and stream outputs); beyond it the oldest text is
            dropped and the result starts with a line saying how much (first
            in ``stderr`` and as the first output). None (the default) keeps
            everything. ``on_output`` gets every output either way.

        Raises
        ------
        ExecutionTimeout, WorkerDied, LeaseReleased, PoolClosed
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        timeout = checks.timeout(timeout)
        if output_limit is not None:
            output_limit = checks.size(output_limit, "output_limit")
        execution = self._start_execution()
        try:
            result = execution.run(
                code,
                timeout=timeout,
                on_output=on_output,
                stdin=stdin,
                silent=silent,
                output_limit=output_limit,
            )
        except ExecutionTimeout as exc:
            self._note("timed out", self.worker, str(exc), "timeouts")
            raise
        finally:
            self._end_execution(execution)
        result.worker_id, result.session = self.worker_id, self.session
        result.session_reset, self.session_reset = self.session_reset, None
        return result

    def call(self, msg_type: str, content: dict, buffers: list) -> dict | None:
        """Send a private shell request to the leased worker and wait for its reply.

        The worker must have a handler for ``msg_type`` (registered by code
        it ran, e.g. :data:`nbpool.mapping.wire.BOOT`); see
        :meth:`Execution.call`. Interrupts and worker deaths are handled as
        for :meth:`execute`.

        Returns
        -------
        dict or None
            The reply message, or None when an interrupt ended the request first.

        Raises
        ------
        WorkerDied, LeaseReleased, PoolClosed
        """
        execution = self._start_execution()
        try:
            return execution.call(msg_type, content, buffers)
        finally:
            self._end_execution(execution)

    def _start_execution(self) -> Execution:
        if self.released:
            raise LeaseReleased(
                f"this lease of worker {self.worker_id} was released; "
                "take a new one with pool.lease(...)"
            )
        if self.dirty:
            raise WorkerDied(f"worker {self.worker_id} is unusable: {self.dirty}")
        self._check_alive()
        execution = Execution(
            self.worker.kernel.channels,
            check_alive=self._check_alive,
            interrupt=self.worker.kernel.interrupt,
            interrupt_grace=self._grace,
        )
        self._execution = execution
        self.busy = True
        return execution

    def _end_execution(self, execution: Execution) -> None:
        self.busy = False
        self.executions += 1
        if not execution.finished:
            self.dirty = self.dirty or "an execution was abandoned before it finished"

    def _check_alive(self) -> None:
        if self._detached(self.worker.id):
            raise PoolClosed(
                f"the pool was detached while session {self.session!r} ran: the code keeps "
                "running on its worker, and what it prints from now on is kept for "
                f"pool.replay({self.session!r}) / %pool replay {self.session} in the pool that "
                "re-adopts the session"
            )
        death = self.worker.death
        if death is None:
            return
        if self._closed():
            raise PoolClosed(f"the pool was shut down while {self._serving} ran")
        if self.worker.attached:
            after = "nbpool does not restart kernels it did not start: attach it again"
        else:
            after = "a fresh worker takes its place on the session's next execution"
        if self.session is None:
            raise WorkerDied(f"worker {self.worker_id} {death} while running mapped tasks")
        raise WorkerDied(
            f"worker {self.worker_id} {death} while running {self._serving}; "
            f"the session's state is lost; {after}"
        )

    @property
    def _serving(self) -> str:
        return "mapped tasks" if self.session is None else f"session {self.session!r}"

    def interrupt(self) -> bool:
        """Interrupt the running execution (any thread may call this).

        Returns False when nothing runs. The execution then ends with the
        worker's ``KeyboardInterrupt`` error; a worker that ignores the
        interrupt for ``interrupt_grace`` seconds is replaced (the executing
        thread gets :class:`WorkerDied`).
        """
        execution = self._execution
        if execution is None or execution.finished or self.worker.death is not None:
            return False
        execution.request_interrupt()
        return True

    def release(self) -> None:
        """Give the worker back; idempotent."""
        if not self.released:
            self.released = True
            self._give_back(self)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else ("dirty" if self.dirty else "held")
        return f"<Lease {state} worker={self.worker_id} session={self.session!r}>"
