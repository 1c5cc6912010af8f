"""The pool coordinator: who holds which worker, and who waits for one.

The contract
============

The coordinator *coordinates*; it never does a client's I/O. It owns the
lock, the condition clients wait on, the :class:`~nbpool.core.runner.Runner`
and the :class:`~nbpool.core.monitor.Monitor`; the rules below are its
:class:`~nbpool.core.policy.Policy`'s, each documented on the policy method
that carries it out (the policy's module docstring lists where).

* **Lease.** :meth:`Coordinator.request` registers a client in the FIFO of
  waiters and, if a worker is free for it, grants a :class:`~nbpool.core.lease.Lease`
  at once; :meth:`Coordinator.wait` blocks the *calling* thread until then.
  Both are bookkeeping under one lock and take microseconds. The lease
  timeout covers only this wait; on expiry the client gets
  :class:`~nbpool.errors.LeaseTimeout` whose message says what the pool is
  doing and how to free a worker.
* **Affinity.** A session is bound to one worker until
  :meth:`end_session`, eviction or the worker's death. A session whose worker
  is busy waits for *that* worker, in arrival order; it never moves.
* **Growth.** A session with no worker takes a free unbound worker of its
  kernelspec; it needs one worker however many of its requests wait (the
  others queue behind its first, in order, as for a bound session). With
  none free, the pool starts another (up to ``max_size``),
  or repurposes an unused worker of another kernelspec, or, with
  ``evict_idle_sessions``, evicts the least recently used idle session. When
  none of that is possible and no worker is coming free (every worker bound
  to another session, none starting, being replaced or retiring), the client
  gets :class:`~nbpool.errors.LeaseTimeout` at once, every request of that
  session, naming what holds the workers (bound sessions, starts and the
  sessions they are for, maps): only the user can free a worker, so waiting
  would be a dead wait (:meth:`Policy._grow <nbpool.core.policy.Policy._grow>`).
* **Tasks.** :meth:`request_tasks` queues a map's background requests for
  workers that hold *no* session: a granted task lease binds none (its
  ``session`` is None), so the worker is free again, and still warm, when
  the map releases it. Sessions are served first; task requests take the
  session-free workers left, start more up to ``max_size`` (never
  repurposing or evicting), and fail at once when no such worker exists or
  can come (:meth:`Policy._assign_tasks <nbpool.core.policy.Policy._assign_tasks>`).
* **Release.** :meth:`release` is asynchronous bookkeeping too. A worker whose
  lease ended abnormally (execution not finished: timeout the interrupt did
  not stop, transport error, ``KeyboardInterrupt`` not wound down, holder
  thread died) is never handed on: it is restarted. So is a worker whose
  session ended: a new process with new keys, before any other session can
  get it (:meth:`Policy.release <nbpool.core.policy.Policy.release>`).
* **Health.** The coordinator thread (:mod:`nbpool.core.monitor`) polls every
  worker process each tick and pings its heartbeat. A dead or frozen worker
  is marked dead at once; its lease holder gets
  :class:`~nbpool.errors.WorkerDied` within a tick; a replacement starts at once
  (:meth:`Policy.check <nbpool.core.policy.Policy.check>`).
* **Starts.** Kernels start, restart and stop on I/O threads
  (:mod:`nbpool.core.runner`), concurrently, never under the lock and never on
  the coordinator thread. A failed start is retried with exponential backoff
  and jitter; waiters that only that start could serve get
  :class:`~nbpool.errors.WorkerStartFailed` with the kernel's stderr at once
  (:meth:`Policy.start_failed <nbpool.core.policy.Policy.start_failed>`).

Verbs. Every way a worker goes is a **replace**: it is stopped, its
session (if any) is reset (its next lease is told why, and its generation
counts up), and a fresh kernel starts in its place when one is wanted. The
reasons have names: **restart** (on request, after a dirty lease or a death),
**retire** (its session ended while it was leased: replace at release),
**recycle** (policy: ``max_executions`` reached, or idle beyond
``idle_timeout``), **evict** (free a worker for a new session,
``evict_idle_sessions``), **repurpose** (an unused worker becomes one of
another kernelspec). **Attach** adds a kernel someone else started; nbpool
never replaces such a kernel, only forgets it. (:meth:`Policy._replace
<nbpool.core.policy.Policy._replace>` is every replace.)

Worker lifecycle (:class:`~nbpool.core.records.Worker`; "shown" is
:meth:`~nbpool.core.records.Worker.public_state`, what ``status()`` reports;
``tests/unit/test_policy.py`` has one test per arrow):

============ ============ ========================================= =================================
state        shown        meaning                                   goes to
============ ============ ========================================= =================================
starting     starting,    its kernel starts on an I/O thread        idle (started), failed (start
             restarting   (restarting: it replaces another)         failed), stopping (closed)
idle         idle         ready, not leased; bound to a session or  leased (granted), stopping
                          free                                      (replace, resize, death)
leased       leased, busy a client holds it (busy: executing): a    idle (clean release), stopping
                          session's lease, or a task lease (a map;  (dirty, retired, recycled, dead)
                          only a free worker, and it stays free)
failed       failed       its start failed; retried at ``retry_at`` starting (retry due, restart),
                                                                    stopping (resized away)
stopping     stopping     its kernel is being stopped               (record dropped)
(any)+death  dead         its kernel is known dead; a leased one    stopping (now, or at release)
                          stays until its holder releases it
============ ============ ========================================= =================================

.. warning::
   Nothing under ``self._lock`` may block: no ZMQ, no process start or kill,
   no waiting. The policy's methods *return* such work as actions
   (:mod:`nbpool.core.records`); the coordinator settles waiters under the
   lock (a grant becomes a :class:`~nbpool.core.lease.Lease`) and hands the
   rest to the runner after releasing it (httpcore's pattern).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable

from ..errors import PoolClosed, WorkerStartFailed, WorkerUnavailable
from ..interfaces import WorkerKernel
from .lease import Lease
from .monitor import Monitor
from .policy import Policy
from .records import Action, Grant, Held, Refuse, Settings, Settled, Snapshot, Waiter, Worker
from .runner import Runner
from .sessions import SessionRegistry


class Coordinator:
    """The pool's one lock around its policy; see the module docstring for the contract.

    It owns the :class:`~nbpool.core.policy.Policy` (all pool state and the
    rules), the lock and condition that guard it, the runner that carries
    out its actions and the monitor thread; it makes each granted lease.

    Parameters
    ----------
    settings : Settings
    start_kernel : callable
        ``start_kernel(worker_id, kernel_name, start_timeout) -> kernel``;
        blocking, raises :class:`WorkerStartFailed` (a backend's ``start``).

    Constructing it starts nothing: its monitor thread starts with its first
    use (a start, request, resize, attach or adoption), its I/O threads with
    the first kernel start.
    """

    def __init__(self, settings: Settings, start_kernel: Callable) -> None:
        # The policy's records are guarded by _lock, except what a lease holder
        # writes on its own Lease (busy, executions: see nbpool.core.lease).
        self._policy = Policy(settings)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._runner = Runner(
            lambda worker_id, kernel_name: start_kernel(
                worker_id, kernel_name, self._policy.settings.start_timeout
            ),
            started=self.started,
            start_failed=self.start_failed,
            stopped=self.stopped,
            release=self.release,
            closed=lambda: self._policy.closed,
        )
        self.monitor = Monitor(
            self.ready_kernels, self.check, settings.heartbeat_interval, settings.heartbeat_timeout
        )

    @property
    def settings(self) -> Settings:
        """The settings in force (frozen; :meth:`resize` replaces them)."""
        return self._policy.settings

    @property
    def sessions(self) -> SessionRegistry:
        """The session registry; any thread may read it without the lock."""
        return self._policy.sessions

    @property
    def events(self) -> list[dict]:
        """The recent events (a copy)."""
        with self._lock:
            return list(self._policy.events)

    def _settle(self, actions: list[Action]) -> list[Action]:
        """Settle the waiters ``actions`` grant or refuse (under the lock); the rest to run.

        A grant becomes a :class:`Lease` here, before its waiter wakes up, so
        the worker's record names its lease from the moment it is leased.
        """
        rest: list[Action] = []
        for action in actions:
            if isinstance(action, Grant):
                lease = Lease(
                    action.worker,
                    action.session,
                    generation=action.generation,
                    session_reset=action.session_reset,
                    interrupt_grace=self._policy.settings.interrupt_grace,
                    release=self.release,
                    note=self.note,
                    closed=lambda: self._policy.closed,
                    detached=lambda worker_id: worker_id in self._policy.kept,
                )
                action.worker.lease = action.waiter.lease = lease
            elif isinstance(action, Refuse):
                action.waiter.error = action.error
            else:
                rest.append(action)
                continue
            action.waiter.event.set()
            if action.waiter.on_settled is not None:
                rest.append(Settled(action.waiter))
        return rest

    # ------------------------------------------------------------------
    # client side: any thread, bookkeeping only
    # ------------------------------------------------------------------

    def start(self, count: int) -> list[Worker]:
        self.monitor.start()
        with self._lock:
            actions = self._policy.start(count)
        self._runner.run(actions)
        return [action.worker for action in actions]

    def wait_started(self, workers: list[Worker], timeout: float) -> None:
        """Block until ``workers`` are ready; raise the first start failure."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                failed = [w for w in workers if w.last_error is not None]
                if failed:
                    raise failed[0].last_error
                if all(w.state != "starting" for w in workers):
                    return
                left = deadline - time.monotonic()
                if left <= 0 or self._policy.closed:
                    self._check_open()
                    raise WorkerStartFailed(f"workers not ready within {timeout:g} s")
                self._changed.wait(left)

    def request(
        self,
        session: str,
        kernel_name: str,
        on_settled: Callable[[Waiter], None] | None = None,
        timeout: float | None = None,
    ) -> Waiter:
        """Queue a lease request; it may be granted (or refused) before this returns.

        Without ``on_settled`` the caller then blocks in :meth:`wait`. With
        it, the request is a background one: ``on_settled(waiter)`` is called
        from whichever thread settles it (grant, failure, ``timeout``), so no
        thread blocks while it queues.
        """
        waiter = Waiter(session, kernel_name, on_settled=on_settled)
        if timeout is not None and on_settled is not None:
            waiter.deadline = waiter.since + timeout
        self.monitor.start()
        with self._lock:
            actions = self._settle(self._policy.request(waiter))
        self._runner.run(actions)
        return waiter

    def request_tasks(
        self, kernel_name: str, count: int, on_settled: Callable[[Waiter], None]
    ) -> list[Waiter]:
        """Queue ``count`` background task requests (a map's); see *Tasks* above.

        Each is settled through ``on_settled`` like a background :meth:`request`;
        a granted lease binds no session. :meth:`withdraw` takes back the ones
        a map no longer needs.
        """
        waiters = [
            Waiter(None, kernel_name, on_settled=on_settled, task=True) for _ in range(count)
        ]
        self.monitor.start()
        with self._lock:
            actions = self._settle(self._policy.request_tasks(waiters))
        self._runner.run(actions)
        return waiters

    def wait(self, waiter: Waiter, timeout: float | None) -> Lease:
        """Block until ``waiter`` is granted a lease (or fails, or times out)."""
        try:
            waiter.event.wait(timeout)
        except BaseException as exc:
            self.withdraw(waiter, exc)
            raise
        with self._lock:
            refused = self._policy.timed_out(waiter, timeout)
            if refused is not None:
                self._settle([refused])
        if waiter.error is not None:
            raise waiter.error
        waiter.lease.holder = threading.current_thread()
        return waiter.lease

    def withdraw(self, waiter: Waiter, error: BaseException) -> None:
        """Take a waiter out of the queue; a lease granted meanwhile is released."""
        with self._lock:
            refused = self._policy.withdraw(waiter, waiter.error or error)
            if refused is not None:
                self._settle([refused])  # a background waiter's on_settled is not called
                return
        if waiter.lease is not None:
            waiter.lease.release()

    def release(self, lease: Held) -> None:
        """Take a worker back (bookkeeping only; never blocks on the worker)."""
        with self._lock:
            actions = self._settle(self._policy.release(lease))
            self._changed.notify_all()
        self._runner.run(actions)

    def end_session(self, name: str) -> bool:
        """Unbind ``name``; its worker is replaced by a fresh kernel. False if unknown."""
        with self._lock:
            actions = self._policy.end_session(name)
            if actions is None:
                return False
            actions = self._settle(actions)
        self._runner.run(actions)
        return True

    def restart_worker(self, worker_id: str) -> None:
        """Restart a worker on request; its session's state is lost.

        An idle worker is replaced now. A leased one is marked like a dead
        one: its holder gets :class:`~nbpool.errors.WorkerDied` within a poll
        slice and the release replaces it. A failed one retries its start now.
        """
        with self._lock:
            actions = self._settle(self._policy.restart(worker_id))
            self._changed.notify_all()
        self._runner.run(actions)

    def resize(self, size: int, min_size: int, max_size: int, *, start: bool = True) -> None:
        """Adopt new size settings; with ``start``, start or stop workers to match now.

        The settings are replaced (``dataclasses.replace``), never changed in
        place. Growing starts workers at once. Shrinking stops only workers
        nobody holds or is bound to (failed, then starting, then idle ones); a
        worker bound to a session stays until that session ends, when the usual
        ``min_size`` rule does not replace it. A size above ``size_limit`` is
        refused before anything changes (InvalidConfig).
        """
        if start:
            self.monitor.start()
        with self._lock:
            settings = replace(
                self._policy.settings, size=size, min_size=min_size, max_size=max_size
            )
            actions = self._settle(self._policy.resize(settings, start=start))
            self._changed.notify_all()
        self._runner.run(actions)

    def attach(self, connect: Callable[[str], WorkerKernel], session: str) -> Worker:
        """Add a kernel someone else started, bound to ``session``.

        ``connect(worker_id)`` connects to it and returns a ready kernel; it
        blocks, so it runs in the calling thread, outside the lock.
        """
        self.monitor.start()
        with self._lock:
            worker_id = self._policy.attach_id(session)
        kernel = connect(worker_id)
        try:
            with self._lock:
                w, actions = self._policy.attached(worker_id, kernel, session)
                actions = self._settle(actions)
        except BaseException:
            kernel.shutdown()  # only disconnects (attached); outside the lock
            raise
        self._runner.run(actions)
        return w

    def adopt(self, kept: list[tuple[str, str, int, WorkerKernel | None, str | None]]) -> int:
        """Take kept sessions back (see :mod:`nbpool.kept.adoption`); how many kernels were adopted.

        Each entry is ``(session, kernel_name, generation, kernel, reason)``.
        A ready ``kernel`` becomes this pool's worker (replaced, recycled and
        stopped like one it started), bound to the session at its
        generation; with ``kernel`` None the session comes back reset, told
        ``reason`` on its next lease.
        """
        self.monitor.start()
        with self._lock:
            adopted, actions = self._policy.adopt(kept)
            actions = self._settle(actions)
            self._changed.notify_all()
        self._runner.run(actions)
        return adopted

    def note(self, kind: str, worker: Worker, message: str, counter: str) -> None:
        """Record an event a lease holder saw (e.g. a timeout) for status()."""
        with self._lock:
            self._policy.note(kind, worker, message, counter)

    def interrupt(self, worker_id: str) -> bool:
        """Interrupt what a worker runs; False if it runs nothing (idle)."""
        with self._lock:
            w = self._policy.usable(worker_id)
            if w.death is not None:
                raise WorkerUnavailable(f"worker {w.id} {w.death}; there is nothing to interrupt")
            lease = w.lease
        return lease is not None and lease.interrupt()  # outside the lock

    # ------------------------------------------------------------------
    # reports from the runner and the monitor: bookkeeping under the lock
    # ------------------------------------------------------------------

    def started(self, w: Worker, kernel: WorkerKernel) -> bool:
        """``w``'s kernel is ready; False if it is no longer wanted (stop it)."""
        with self._lock:
            wanted, actions = self._policy.started(w, kernel)
            actions = self._settle(actions)
            self._changed.notify_all()
        self._runner.run(actions)
        return wanted

    def start_failed(self, w: Worker, exc: WorkerStartFailed) -> None:
        with self._lock:
            actions = self._settle(self._policy.start_failed(w, exc))
            self._changed.notify_all()
        self._runner.run(actions)

    def stopped(self, w: Worker) -> None:
        with self._lock:
            self._policy.stopped(w)
            self._changed.notify_all()

    def ready_kernels(self) -> dict[str, WorkerKernel]:
        """Worker id -> kernel of every ready, live worker (for the heartbeats)."""
        with self._lock:
            return self._policy.ready_kernels()

    def check(self, now: float, lost: Callable[[str, float], str | None]) -> None:
        """One tick of the monitor: retries due, deaths, dead holders, timers.

        ``lost(worker_id, now)`` is the heartbeat verdict (why, or None).
        """
        with self._lock:
            actions = self._settle(self._policy.check(now, lost))
        self._runner.run(actions)

    # ------------------------------------------------------------------
    # reporting and shutdown
    # ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._policy.closed:
            raise PoolClosed("the pool was shut down; create a new nbpool.Pool to run more code")

    def snapshot(self) -> Snapshot:
        """Copies of the records, taken under the lock (:mod:`nbpool.status` renders them)."""
        with self._lock:
            return self._policy.snapshot()

    def close(self, wait: float = 2.0, *, keep: bool = False) -> list[Worker]:
        """Fail waiters, stop every kernel (concurrently), end the thread.

        With ``keep`` (a detach), the live local workers bound to sessions
        are not stopped: their lease holders get :class:`PoolClosed` within
        a poll slice and let go (the policy's ``kept``), and they are returned
        (leased still, if a holder did not let go within ``wait``).
        """
        with self._lock:
            if self._policy.closed:
                return []
            settled = self._settle(self._policy.close(keep=keep))
            self._changed.notify_all()
            deadline = time.monotonic() + wait
            while any(w.lease is not None for w in self._policy.workers.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            doomed, kept = self._policy.closing()
        self._runner.run(settled)
        self.monitor.stop()
        self._runner.stop_all(doomed)
        return kept
