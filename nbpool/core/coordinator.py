"""The pool coordinator: who holds which worker, and who waits for one.

The contract
============

The coordinator *coordinates*; it never does a client's I/O.

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
  would be a dead wait.
* **Tasks.** :meth:`request_tasks` queues a map's background requests for
  workers that hold *no* session: a granted task lease binds none (its
  ``session`` is None), so the worker is free again, and still warm, when
  the map releases it. Sessions are served first; task requests take the
  session-free workers left, start more up to ``max_size`` (never
  repurposing or evicting), and fail at once when no such worker exists or
  can come.
* **Release.** :meth:`release` is asynchronous bookkeeping too. A worker whose
  lease ended abnormally (execution not finished: timeout the interrupt did
  not stop, transport error, ``KeyboardInterrupt`` not wound down, holder
  thread died) is never handed on: it is restarted. So is a worker whose
  session ended: a new process with new keys, before any other session can
  get it.
* **Health.** The coordinator thread (:mod:`nbpool.core.monitor`) polls every
  worker process each tick and pings its heartbeat. A dead or frozen worker
  is marked dead at once; its lease holder gets
  :class:`~nbpool.errors.WorkerDied` within a tick; a replacement starts at once.
* **Starts.** Kernels start, restart and stop on I/O threads
  (:mod:`nbpool.core.runner`), concurrently, never under the lock and never on
  the coordinator thread. A failed start is retried with exponential backoff
  and jitter; waiters that only that start could serve get
  :class:`~nbpool.errors.WorkerStartFailed` with the kernel's stderr at once.

Verbs. Every way a worker goes is a **replace**: it is stopped, its
session (if any) is reset (its next lease is told why, and its generation
counts up), and a fresh kernel starts in its place when one is wanted. The
reasons have names: **restart** (on request, after a dirty lease or a death),
**retire** (its session ended while it was leased: replace at release),
**recycle** (policy: ``max_executions`` reached, or idle beyond
``idle_timeout``), **evict** (free a worker for a new session,
``evict_idle_sessions``), **repurpose** (an unused worker becomes one of
another kernelspec). **Attach** adds a kernel someone else started; nbpool
never replaces such a kernel, only forgets it.

Worker lifecycle (:class:`~nbpool.core.records.Worker`; "shown" is
:meth:`~nbpool.core.records.Worker.public_state`, what ``status()`` reports):

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
   no waiting. Functions that decide such work *return* it as actions
   (:mod:`nbpool.core.records`), which the caller hands to the runner after
   releasing the lock (httpcore's pattern).
"""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from .. import checks
from ..errors import InvalidConfig, LeaseTimeout, PoolClosed, WorkerStartFailed, WorkerUnavailable
from .lease import Lease
from .monitor import Monitor
from .policy import Policy, unbound
from .records import LIVE, Action, Release, Settings, Start, Stop, Waiter, Worker
from .runner import Runner
from .sessions import SessionInfo

#: Start-retry backoff: first delay and cap, in seconds (jitter is added).
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0


@dataclass
class Snapshot:
    """A consistent copy of the coordinator's state (:mod:`nbpool.status` renders it)."""

    closed: bool
    workers: list[tuple[Worker, SessionInfo | None]]  # copies, with their session
    sessions: list[SessionInfo]
    queued: collections.Counter = field(default_factory=collections.Counter)
    counters: dict = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)


class Coordinator(Policy):
    """Owns all pool state; see the module docstring for the contract.

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
        # The state (Policy's records) is guarded by _lock, except what a lease
        # holder writes on its own Lease (busy, executions: see nbpool.core.lease).
        super().__init__(settings)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._runner = Runner(self, start_kernel)
        self.monitor = Monitor(self, settings.heartbeat_interval, settings.heartbeat_timeout)

    # ------------------------------------------------------------------
    # client side: any thread, bookkeeping only
    # ------------------------------------------------------------------

    def start(self, count: int) -> list[Worker]:
        self.monitor.start()
        with self._lock:
            self._check_open()
            new = [self._new_worker(self.settings.kernel_name) for _ in range(count)]
        self._runner.run(Start(w) for w in new)
        return new

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
                if left <= 0 or self.closed:
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
            self._check_open()
            self._waiters.append(waiter)
            actions = self._assign()
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
            self._check_open()
            self._waiters.extend(waiters)
            actions = self._assign()
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
            if waiter.lease is None and waiter.error is None:
                self._waiters.remove(waiter)
                waiter.error = LeaseTimeout(self._explain_wait(waiter, timeout))
        if waiter.error is not None:
            raise waiter.error
        waiter.lease.holder = threading.current_thread()
        return waiter.lease

    def withdraw(self, waiter: Waiter, error: BaseException) -> None:
        """Take a waiter out of the queue; a lease granted meanwhile is released."""
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                waiter.error = waiter.error or error
                waiter.event.set()
                return
        if waiter.lease is not None:
            waiter.lease.release()

    def release(self, lease: Lease) -> None:
        """Take a worker back (bookkeeping only; never blocks on the worker)."""
        with self._lock:
            w = lease.worker
            if w.lease is not lease:
                return
            w.lease = None
            if w.id in self.kept:  # detached: its session stays with its kernel
                w.state = "idle"
                self._changed.notify_all()
                return
            w.executions += lease.executions
            self.counters["executions"] += lease.executions
            w.last_used = time.monotonic()
            actions: list[Action] = []
            limit = self.settings.max_executions
            if w.death is not None:
                actions += self._replace(
                    w, f"worker {w.id} {w.death}; the session's state was lost"
                )
            elif lease.dirty:
                self.counters["failures"] += 1
                self._log("restarted", w, lease.dirty)
                actions += self._replace(w, f"worker {w.id} was restarted: {lease.dirty}")
            elif w.retire is not None:
                actions += self._replace(w, None, retired=True)
            elif limit and w.executions >= limit and not w.attached:
                self._log("recycled", w, f"after {w.executions} executions")
                actions += self._replace(
                    w,
                    f"worker {w.id} was recycled after {w.executions} executions (max_executions)",
                )
            else:
                w.state = "idle"
            actions += self._assign()
            self._changed.notify_all()
        self._runner.run(actions)

    def end_session(self, name: str) -> bool:
        """Unbind ``name``; its worker is replaced by a fresh kernel. False if unknown."""
        with self._lock:
            self._check_open()
            info = self.sessions.get(name)
            if info is None:
                return False
            self.sessions.remove(name)
            actions: list[Action] = []
            w = self._workers.get(info.worker_id or "")
            if w is not None:
                self._log("session ended", w, f"session {name!r} ended")
                if w.state == "leased":
                    w.retire = f"session {name!r} ended"
                else:
                    actions += self._replace(w, None, retired=True)
            actions += self._assign()
        self._runner.run(actions)
        return True

    def restart_worker(self, worker_id: str) -> None:
        """Restart a worker on request; its session's state is lost.

        An idle worker is replaced now. A leased one is marked like a dead
        one: its holder gets :class:`~nbpool.errors.WorkerDied` within a poll
        slice and the release replaces it. A failed one retries its start now.
        """
        with self._lock:
            w = self._usable(worker_id, ": it was stopped or replaced")
            if w.death is not None:
                raise WorkerUnavailable(
                    f"worker {w.id} {w.death}; it is replaced as soon as its holder lets go"
                )
            if w.state == "starting":
                raise WorkerUnavailable(
                    f"worker {w.id} is still starting; restart it once it is ready"
                )
            reason = "was restarted on request"
            self._log("restart requested", w, f"worker {w.id} {reason}")
            actions: list[Action] = []
            if w.state == "failed":
                w.state, w.retry_at = "starting", None
                actions.append(Start(w))
            elif w.state == "leased":
                w.death = reason
            else:
                actions += self._replace(
                    w,
                    f"worker {w.id} {reason}; the session's state was lost",
                    kernel_name=w.kernel_name,
                )
            actions += self._assign()
            self._changed.notify_all()
        self._runner.run(actions)

    def resize(self, size: int, min_size: int, max_size: int, *, start: bool = True) -> None:
        """Adopt new size settings; with ``start``, start or stop workers to match now.

        Growing starts workers at once. Shrinking stops only workers nobody
        holds or is bound to (failed, then starting, then idle ones); a worker
        bound to a session stays until that session ends, when the usual
        ``min_size`` rule does not replace it. A size above ``size_limit`` is
        refused before anything changes (InvalidConfig).
        """
        checks.within_limit(max(size, min_size, max_size), "pool size", self.settings.size_limit)
        if start:
            self.monitor.start()
        with self._lock:
            self._check_open()
            s = self.settings
            s.size, s.min_size, s.max_size = size, min_size, max_size
            actions: list[Action] = []
            if start:
                live = [w for w in self._workers.values() if w.state in LIVE or w.state == "failed"]
                for _ in range(size - len(live)):
                    actions.append(Start(self._new_worker(s.kernel_name)))
                rank = {"failed": 0, "starting": 1, "idle": 2}
                free = sorted(
                    (w for w in live if w.state in rank and w.lease is None and not self._bound(w)),
                    key=lambda w: rank[w.state],
                )
                for w in free[: max(0, len(live) - size)]:
                    w.state = "stopping"
                    self._log("stopped", w, f"worker {w.id} stopped: pool resized to {size}")
                    actions.append(Stop(w))
                actions += self._assign()
            self._changed.notify_all()
        self._runner.run(actions)

    def attach(self, connect: Callable[[str], object], session: str) -> Worker:
        """Add a kernel someone else started, bound to ``session``.

        ``connect(worker_id)`` connects to it and returns a ready kernel; it
        blocks, so it runs in the calling thread, outside the lock.
        """
        self.monitor.start()
        with self._lock:
            self._check_bindable(session)
            worker_id = f"w{next(self._ids)}"
        kernel = connect(worker_id)
        with self._lock:
            try:
                self._check_bindable(session)
            except BaseException as exc:
                refused = exc
            else:
                refused = None
                w = Worker(worker_id, kernel.kernel_name, state="idle", kernel=kernel)
                w.started_at = time.monotonic()
                self._workers[w.id] = w
                self.sessions.bind(session, kernel.kernel_name, w.id, attached=True)
                self._log("attached", w, f"{kernel.kernel_name} attached as session {session!r}")
                actions = self._assign()
        if refused is not None:
            kernel.shutdown()  # only disconnects (attached); outside the lock
            raise refused
        self._runner.run(actions)
        return w

    def adopt(self, kept: list[tuple[str, str, int, object | None, str | None]]) -> int:
        """Take kept sessions back (see :mod:`nbpool.kept.adoption`); how many kernels were adopted.

        Each entry is ``(session, kernel_name, generation, kernel, reason)``.
        A ready ``kernel`` becomes this pool's worker (replaced, recycled and
        stopped like one it started), bound to the session at its
        generation; with ``kernel`` None the session comes back reset, told
        ``reason`` on its next lease.
        """
        self.monitor.start()
        with self._lock:
            self._check_open()
            adopted = self._adopt(kept)
            actions = self._assign()
            self._changed.notify_all()
        self._runner.run(actions)
        return adopted

    def _check_bindable(self, session: str) -> None:
        self._check_open()
        info = self.sessions.get(session)
        if info is not None and info.worker_id is not None:
            raise InvalidConfig(
                f"session {session!r} already has worker {info.worker_id}; "
                "end it first (pool.end_session) or pick another session name"
            )

    def note(self, kind: str, worker: Worker, message: str, counter: str) -> None:
        """Record an event a lease holder saw (e.g. a timeout) for status()."""
        with self._lock:
            self.counters[counter] += 1
            self._log(kind, worker, message)

    def interrupt(self, worker_id: str) -> bool:
        """Interrupt what a worker runs; False if it runs nothing (idle)."""
        with self._lock:
            w = self._usable(worker_id)
            if w.death is not None:
                raise WorkerUnavailable(f"worker {w.id} {w.death}; there is nothing to interrupt")
            lease = w.lease
        return lease is not None and lease.interrupt()  # outside the lock

    def _usable(self, worker_id: str, why: str = "") -> Worker:
        """The live worker ``worker_id``, or WorkerUnavailable (``why``: the likely cause)."""
        self._check_open()
        w = self._workers.get(worker_id)
        if w is None or w.state == "stopping":
            live = ", ".join(x.id for x in self._workers.values() if x.state != "stopping")
            raise WorkerUnavailable(
                f"no worker {worker_id!r} in the pool{why} (workers now: {live or 'none'})"
            )
        return w

    # ------------------------------------------------------------------
    # reports from the runner and the monitor: bookkeeping under the lock
    # ------------------------------------------------------------------

    def started(self, w: Worker, kernel) -> bool:
        """``w``'s kernel is ready; False if it is no longer wanted (stop it)."""
        with self._lock:
            wanted = not self.closed and w.state == "starting"
            actions: list[Action] = []
            if wanted:
                w.kernel, w.state, w.failures, w.last_error = kernel, "idle", 0, None
                w.started_at = w.last_used = time.monotonic()
                how = getattr(kernel, "started", None)
                why = getattr(kernel, "spawn_reason", None)
                self._log(
                    "started",
                    w,
                    f"pid {getattr(kernel, 'pid', None)}"
                    + (f", {how}ed" if how else "")
                    + (f" (not forked: {why})" if why else ""),
                )
                actions = self._assign()
            self._changed.notify_all()
        self._runner.run(actions)
        return wanted

    def start_failed(self, w: Worker, exc: WorkerStartFailed) -> None:
        with self._lock:
            w.failures += 1
            w.last_error = exc
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (w.failures - 1))
            # A failure that would repeat (a preload that raises) is not retried.
            w.retry_at = time.monotonic() + delay * random.uniform(1.0, 1.5) if exc.retry else None
            w.state = "failed"
            self.counters["start_failures"] += 1
            self._log("start failed", w, str(exc))
            actions = self._assign()
            self._changed.notify_all()
        self._runner.run(actions)

    def stopped(self, w: Worker) -> None:
        with self._lock:
            self._workers.pop(w.id, None)
            self._changed.notify_all()

    def ready_kernels(self) -> dict:
        """Worker id -> kernel of every ready, live worker (for the heartbeats)."""
        with self._lock:
            return {
                w.id: w.kernel
                for w in self._workers.values()
                if w.state in ("idle", "leased") and w.death is None
            }

    def check(self, now: float, lost: Callable[[str, float], str | None]) -> None:
        """One tick of the monitor: retries due, deaths, dead holders, timers.

        ``lost(worker_id, now)`` is the heartbeat verdict (why, or None).
        """
        actions: list[Action] = []
        with self._lock:
            if self.closed:
                return
            for w in list(self._workers.values()):
                if w.state == "failed" and w.retry_at is not None and now >= w.retry_at:
                    w.state, w.retry_at = "starting", None
                    actions.append(Start(w))
                if w.state in ("idle", "leased") and w.death is None:
                    reason = w.kernel.poll() or lost(w.id, now)
                    if reason:
                        actions += self._died(w, reason)
                if w.lease is not None and w.lease.holder is not None:
                    if not w.lease.holder.is_alive():
                        w.lease.dirty = "its lease holder thread ended without releasing it"
                        actions.append(Release(w.lease))
                idle_timeout = self.settings.idle_timeout
                if w.state == "idle" and idle_timeout and now - w.last_used > idle_timeout:
                    actions += self._recycle_idle(w)
            for waiter in list(self._waiters):
                if not unbound(self.sessions.get(waiter.session)):
                    continue  # queued behind its own session's work: not starving
                if waiter.deadline is not None and now >= waiter.deadline:
                    timeout = waiter.deadline - waiter.since
                    actions += self._settle(
                        waiter, LeaseTimeout(self._explain_wait(waiter, timeout))
                    )
        self._runner.run(actions)

    # ------------------------------------------------------------------
    # reporting and shutdown
    # ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise PoolClosed("the pool was shut down; create a new nbpool.Pool to run more code")

    def snapshot(self) -> Snapshot:
        """Copies of the records, taken under the lock (:mod:`nbpool.status` renders them)."""
        with self._lock:
            held = sum(w.lease.executions for w in self._workers.values() if w.lease is not None)
            return Snapshot(
                closed=self.closed,
                workers=[
                    (replace(w), self.sessions.bound_to(w.id)) for w in self._workers.values()
                ],
                sessions=self.sessions.all(),
                queued=collections.Counter(x.session for x in self._waiters),
                counters={**self.counters, "executions": self.counters["executions"] + held},
                events=list(self.events)[-10:],
            )

    def close(self, wait: float = 2.0, *, keep: bool = False) -> list[Worker]:
        """Fail waiters, stop every kernel (concurrently), end the thread.

        With ``keep`` (a detach), the live local workers bound to sessions
        are not stopped: their lease holders get :class:`PoolClosed` within
        a poll slice and let go (:attr:`kept`), and they are returned
        (leased still, if a holder did not let go within ``wait``).
        """
        with self._lock:
            if self.closed:
                return []
            self.closed = True
            if keep:
                self.kept = frozenset(
                    w.id
                    for w in self._workers.values()
                    if w.state in ("idle", "leased")
                    and w.death is None
                    and not w.attached
                    and getattr(w.kernel, "pid", None) is not None
                    and self._bound(w)
                )
            settled: list[Action] = []
            for waiter in list(self._waiters):
                error = PoolClosed("the pool was shut down while this request waited")
                settled += self._settle(waiter, error)
            for w in self._workers.values():
                if w.lease is not None and w.id not in self.kept:
                    w.death = w.death or "was stopped because the pool was shut down"
            self._changed.notify_all()
            deadline = time.monotonic() + wait
            while any(w.lease is not None for w in self._workers.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            doomed = [
                w for w in self._workers.values() if w.state != "stopping" and w.id not in self.kept
            ]
            for w in doomed:
                w.state = "stopping"
            kept = [w for w in self._workers.values() if w.id in self.kept]
        self._runner.run(settled)
        self.monitor.stop()
        self._runner.stop_all(doomed)
        return kept
