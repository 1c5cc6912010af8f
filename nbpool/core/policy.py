"""The pool's rules: who gets which worker, and what to start or stop.

A :class:`Policy` is the state of one pool (its workers, waiters, sessions,
counters and events) and the rules of :mod:`nbpool.core.coordinator`'s
contract, as plain bookkeeping: no lock, no thread, no I/O, no lease object.
Each public method is one event (a request, a release, a start that
ended, a monitor tick...). It changes the records and *returns* what must
happen next as :mod:`nbpool.core.records` actions: :class:`~.records.Grant`
and :class:`~.records.Refuse` settle a waiter, :class:`~.records.Start` and
:class:`~.records.Stop` are kernel I/O. The
:class:`~nbpool.core.coordinator.Coordinator` owns one policy, calls it with
its lock held, turns each grant into a :class:`~nbpool.core.lease.Lease` and
runs the rest after releasing the lock. So a rule can be read, changed and
tested here alone (``tests/unit/test_policy.py``): this module is where a
new rule goes.

Where each rule of the contract lives:

- *lease, affinity, growth*: :meth:`Policy.request` and :meth:`Policy._assign`
  (a bound session waits for its worker; a new one takes a free worker, or
  :meth:`Policy._grow` starts, repurposes or evicts one, or fails it at once);
- *tasks*: :meth:`Policy.request_tasks` and :meth:`Policy._assign_tasks`;
- *release*: :meth:`Policy.release` (a dirty, retired, recycled or dead
  worker is replaced, never handed on), :meth:`Policy.end_session`;
- *health*: :meth:`Policy.check` (deaths, dead holders, timers, retries due);
- *starts*: :meth:`Policy.started`, :meth:`Policy.start_failed` (backoff);
- *the verbs*: :meth:`Policy._replace` (every way a worker goes),
  :meth:`Policy.restart`, :meth:`Policy.resize`, :meth:`Policy.attached`,
  :meth:`Policy.adopt`, :meth:`Policy.close`.
"""

from __future__ import annotations

import collections
import itertools
import random
import time
from dataclasses import replace
from typing import Callable

from .. import checks
from ..errors import (
    InvalidConfig,
    LeaseTimeout,
    PoolClosed,
    WorkerDied,
    WorkerStartFailed,
    WorkerUnavailable,
)
from ..interfaces import WorkerKernel
from .records import (
    LIVE,
    Action,
    Grant,
    Held,
    Refuse,
    Release,
    Settings,
    Snapshot,
    Start,
    Stop,
    Waiter,
    Worker,
)
from .sessions import SessionInfo, SessionRegistry

#: How many recent events a snapshot reports.
EVENTS_KEPT = 50
#: Start-retry backoff: first delay and cap, in seconds (jitter is added).
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0


class Policy:
    """One pool's state and the rules that change it (see the module docstring).

    Not thread-safe: its owner (the coordinator) calls it under one lock.
    Lock-free readers may read :attr:`sessions` (entries are replaced whole),
    :attr:`closed` and :attr:`kept` (replaced whole, never mutated).

    Parameters
    ----------
    settings : Settings
        Replaced whole by :meth:`resize`, never changed in place.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Worker id -> record, of every worker until its kernel has stopped.
        self.workers: dict[str, Worker] = {}
        #: Clients waiting for a lease, in arrival order.
        self.waiters: collections.deque[Waiter] = collections.deque()
        self.sessions = SessionRegistry()
        self.events: collections.deque[dict] = collections.deque(maxlen=EVENTS_KEPT)
        self.counters = collections.Counter(
            executions=0, failures=0, restarts=0, start_failures=0, deaths=0, timeouts=0
        )
        self.closed = False
        #: Workers left running for their kept sessions at a detach (ids).
        self.kept: frozenset[str] = frozenset()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------
    # events from clients
    # ------------------------------------------------------------------

    def start(self, count: int) -> list[Start]:
        """``count`` new workers of the pool's kernelspec (``Pool.start``)."""
        self._check_open()
        return [Start(self._new_worker(self.settings.kernel_name)) for _ in range(count)]

    def request(self, waiter: Waiter) -> list[Action]:
        """A client asks for a lease: queue it, then serve whoever can be served."""
        self._check_open()
        self.waiters.append(waiter)
        return self._assign()

    def request_tasks(self, waiters: list[Waiter]) -> list[Action]:
        """A map's task requests (``task=True``): queued behind every session's."""
        self._check_open()
        self.waiters.extend(waiters)
        return self._assign()

    def timed_out(self, waiter: Waiter, timeout: float | None) -> Refuse | None:
        """A blocking client stopped waiting after ``timeout``: refuse it, unless settled."""
        if waiter not in self.waiters:
            return None
        self.waiters.remove(waiter)
        return Refuse(waiter, LeaseTimeout(self.explain_wait(waiter, timeout)))

    def withdraw(self, waiter: Waiter, error: BaseException) -> Refuse | None:
        """A client gave up (cancelled, interrupted); None if it was settled already."""
        if waiter not in self.waiters:
            return None
        self.waiters.remove(waiter)
        return Refuse(waiter, error)

    def release(self, lease: Held) -> list[Action]:
        """A lease ended: hand its worker on, or replace it (the *Release* rule).

        A dead, dirty, retired or recycled worker is replaced; a clean one
        goes back to idle. A detached pool's kept worker just goes idle: its
        session stays with its kernel.
        """
        w = lease.worker
        if w.lease is not lease:
            return []
        w.lease = None
        if w.id in self.kept:
            w.state = "idle"
            return []
        w.executions += lease.executions
        self.counters["executions"] += lease.executions
        w.last_used = time.monotonic()
        actions: list[Action] = []
        limit = self.settings.max_executions
        if w.death is not None:
            actions += self._replace(w, f"worker {w.id} {w.death}; the session's state was lost")
        elif lease.dirty:
            self.counters["failures"] += 1
            self._log("restarted", w, lease.dirty)
            actions += self._replace(w, f"worker {w.id} was restarted: {lease.dirty}")
        elif w.retire is not None:
            actions += self._replace(w, None, retired=True)
        elif limit and w.executions >= limit and not w.attached:
            self._log("recycled", w, f"after {w.executions} executions")
            actions += self._replace(
                w, f"worker {w.id} was recycled after {w.executions} executions (max_executions)"
            )
        else:
            w.state = "idle"
        return actions + self._assign()

    def end_session(self, name: str) -> list[Action] | None:
        """Unbind ``name`` (None: no such session); its worker is retired.

        An idle worker is replaced now, a leased one at its release.
        """
        self._check_open()
        info = self.sessions.get(name)
        if info is None:
            return None
        self.sessions.remove(name)
        actions: list[Action] = []
        w = self.workers.get(info.worker_id or "")
        if w is not None:
            self._log("session ended", w, f"session {name!r} ended")
            if w.state == "leased":
                w.retire = f"session {name!r} ended"
            else:
                actions += self._replace(w, None, retired=True)
        return actions + self._assign()

    def restart(self, worker_id: str) -> list[Action]:
        """Restart a worker on request (``Coordinator.restart_worker`` says how)."""
        w = self.usable(worker_id, ": it was stopped or replaced")
        if w.death is not None:
            raise WorkerUnavailable(
                f"worker {w.id} {w.death}; it is replaced as soon as its holder lets go"
            )
        if w.state == "starting":
            raise WorkerUnavailable(f"worker {w.id} is still starting; restart it once it is ready")
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
        return actions + self._assign()

    def resize(self, settings: Settings, *, start: bool = True) -> list[Action]:
        """Adopt ``settings`` (new sizes); with ``start``, start or stop workers to match.

        Refused (InvalidConfig) before anything changes when a size is above
        ``size_limit``. Shrinking stops only workers nobody holds or is bound
        to: failed, then starting, then idle ones.
        """
        biggest = max(settings.size, settings.min_size, settings.max_size)
        checks.within_limit(biggest, "pool size", settings.size_limit)
        self._check_open()
        self.settings = settings
        size = settings.size
        actions: list[Action] = []
        if start:
            live = [w for w in self.workers.values() if w.state in LIVE or w.state == "failed"]
            for _ in range(size - len(live)):
                actions.append(Start(self._new_worker(settings.kernel_name)))
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
        return actions

    def attach_id(self, session: str) -> str:
        """A worker id for a kernel about to be attached to ``session`` (checked bindable)."""
        self.check_bindable(session)
        return f"w{next(self._ids)}"

    def check_bindable(self, session: str) -> None:
        """Refuse (InvalidConfig) a session that already has a worker."""
        self._check_open()
        info = self.sessions.get(session)
        if info is not None and info.worker_id is not None:
            raise InvalidConfig(
                f"session {session!r} already has worker {info.worker_id}; "
                "end it first (pool.end_session) or pick another session name"
            )

    def attached(
        self, worker_id: str, kernel: WorkerKernel, session: str
    ) -> tuple[Worker, list[Action]]:
        """A kernel someone else started is connected: add it, bound to ``session``."""
        self.check_bindable(session)
        w = Worker(worker_id, kernel.kernel_name, state="idle", kernel=kernel)
        w.started_at = time.monotonic()
        self.workers[w.id] = w
        self.sessions.bind(session, kernel.kernel_name, w.id, attached=True)
        self._log("attached", w, f"{kernel.kernel_name} attached as session {session!r}")
        return w, self._assign()

    def adopt(
        self, kept: list[tuple[str, str, int, WorkerKernel | None, str | None]]
    ) -> tuple[int, list[Action]]:
        """Kept sessions come back (``Coordinator.adopt``); how many kernels were adopted."""
        self._check_open()
        adopted = 0
        for session, kernel_name, generation, kernel, reason in kept:
            worker_id = None
            if kernel is not None:
                w = self._new_worker(kernel_name)
                w.state, w.kernel = "idle", kernel
                w.started_at = w.last_used = time.monotonic()
                kernel.worker_id = worker_id = w.id
                self._log("adopted", w, f"kept session {session!r} re-adopted")
                adopted += 1
            else:
                generation += 1  # its state is gone: a reset, like any other
            self.sessions.restore(session, kernel_name, worker_id, generation, reason)
        return adopted, self._assign()

    def note(self, kind: str, worker: Worker, message: str, counter: str) -> None:
        """Record an event a lease holder saw (e.g. a timeout) for status()."""
        self.counters[counter] += 1
        self._log(kind, worker, message)

    def usable(self, worker_id: str, why: str = "") -> Worker:
        """The live worker ``worker_id``, or WorkerUnavailable (``why``: the likely cause)."""
        self._check_open()
        w = self.workers.get(worker_id)
        if w is None or w.state == "stopping":
            live = ", ".join(x.id for x in self.workers.values() if x.state != "stopping")
            raise WorkerUnavailable(
                f"no worker {worker_id!r} in the pool{why} (workers now: {live or 'none'})"
            )
        return w

    # ------------------------------------------------------------------
    # events from the runner and the monitor
    # ------------------------------------------------------------------

    def started(self, w: Worker, kernel: WorkerKernel) -> tuple[bool, list[Action]]:
        """``w``'s kernel is ready; False if it is no longer wanted (stop it)."""
        if self.closed or w.state != "starting":
            return False, []
        w.kernel, w.state, w.failures, w.last_error = kernel, "idle", 0, None
        w.started_at = w.last_used = time.monotonic()
        how = f", {kernel.started}ed" if kernel.started else ""
        why = f" (not forked: {kernel.spawn_reason})" if kernel.spawn_reason else ""
        self._log("started", w, f"pid {kernel.pid}{how}{why}")
        return True, self._assign()

    def start_failed(self, w: Worker, exc: WorkerStartFailed) -> list[Action]:
        """``w``'s start failed: retry after a backoff, unless it would fail again."""
        w.failures += 1
        w.last_error = exc
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (w.failures - 1))
        # A failure that would repeat (a preload that raises) is not retried.
        w.retry_at = time.monotonic() + delay * random.uniform(1.0, 1.5) if exc.retry else None
        w.state = "failed"
        self.counters["start_failures"] += 1
        self._log("start failed", w, str(exc))
        return self._assign()

    def stopped(self, w: Worker) -> None:
        """``w``'s kernel has stopped: its record is dropped."""
        self.workers.pop(w.id, None)

    def ready_kernels(self) -> dict[str, WorkerKernel]:
        """Worker id -> kernel of every ready, live worker (for the heartbeats)."""
        return {
            w.id: w.kernel
            for w in self.workers.values()
            if w.state in ("idle", "leased") and w.death is None
        }

    def check(self, now: float, lost: Callable[[str, float], str | None]) -> list[Action]:
        """One tick of the monitor: retries due, deaths, dead holders, timers.

        ``lost(worker_id, now)`` is the heartbeat verdict (why, or None).
        """
        actions: list[Action] = []
        if self.closed:
            return actions
        for w in list(self.workers.values()):
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
        for waiter in list(self.waiters):
            if not unbound(self.sessions.get(waiter.session)):
                continue  # queued behind its own session's work: not starving
            if waiter.deadline is not None and now >= waiter.deadline:
                timeout = waiter.deadline - waiter.since
                actions += self._refuse(waiter, LeaseTimeout(self.explain_wait(waiter, timeout)))
        return actions

    # ------------------------------------------------------------------
    # reporting and the end
    # ------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Copies of the records (:mod:`nbpool.status` renders them)."""
        held = sum(w.lease.executions for w in self.workers.values() if w.lease is not None)
        return Snapshot(
            closed=self.closed,
            workers=[(replace(w), self.sessions.bound_to(w.id)) for w in self.workers.values()],
            sessions=self.sessions.all(),
            queued=collections.Counter(x.session for x in self.waiters),
            counters={**self.counters, "executions": self.counters["executions"] + held},
            events=list(self.events)[-10:],
        )

    def close(self, *, keep: bool = False) -> list[Action]:
        """The pool closes: refuse every waiter, mark every held worker for its holder.

        With ``keep`` (a detach), the live local workers bound to sessions
        become :attr:`kept`: their holders get PoolClosed and let go, and
        :meth:`closing` leaves them running. Other held workers are marked
        dead, so their holders let go within a poll slice.
        """
        self.closed = True
        if keep:
            self.kept = frozenset(
                w.id
                for w in self.workers.values()
                if w.state in ("idle", "leased")
                and w.death is None
                and not w.attached
                and w.kernel.pid is not None
                and self._bound(w)
            )
        actions: list[Action] = []
        for waiter in list(self.waiters):
            error = PoolClosed("the pool was shut down while this request waited")
            actions += self._refuse(waiter, error)
        for w in self.workers.values():
            if w.lease is not None and w.id not in self.kept:
                w.death = w.death or "was stopped because the pool was shut down"
        return actions

    def closing(self) -> tuple[list[Worker], list[Worker]]:
        """After :meth:`close`: (the workers to stop now, marked stopping; the kept ones)."""
        doomed = [
            w for w in self.workers.values() if w.state != "stopping" and w.id not in self.kept
        ]
        for w in doomed:
            w.state = "stopping"
        return doomed, [w for w in self.workers.values() if w.id in self.kept]

    def _check_open(self) -> None:
        if self.closed:
            raise PoolClosed("the pool was shut down; create a new nbpool.Pool to run more code")

    # ------------------------------------------------------------------
    # the rules
    # ------------------------------------------------------------------

    def _died(self, w: Worker, reason: str) -> list[Action]:
        w.death = reason
        self.counters["deaths"] += 1
        self._log("died", w, f"worker {w.id} {reason}")
        if w.state == "leased":
            return []  # the holder gets WorkerDied and releases; release replaces
        return self._replace(w, f"worker {w.id} {reason}; the session's state was lost")

    def _recycle_idle(self, w: Worker) -> list[Action]:
        if w.attached or (not self._bound(w) and self._live_count() <= self.settings.min_size):
            return []
        self._log("recycled", w, f"idle for {self.settings.idle_timeout:g} s")
        reason = f"worker {w.id} was recycled after {self.settings.idle_timeout:g} s idle"
        return self._replace(w, reason, retired=True)

    def _assign(self) -> list[Action]:
        """Serve waiters in FIFO order; start, repurpose or evict workers for the rest.

        Sessions are served before task waiters (maps), which take what
        session-free workers are left.
        """
        actions: list[Action] = []
        # New sessions still without a worker, per kernelspec, in arrival order:
        # a session needs one worker however many of its requests wait (the
        # others queue behind its first, as for a bound session).
        needed: collections.defaultdict[str, dict[str, None]] = collections.defaultdict(dict)
        tasks: set[str] = set()
        for waiter in list(self.waiters):
            if waiter.task:
                tasks.add(waiter.kernel_name)
                continue
            info = self.sessions.get(waiter.session)
            if not unbound(info):
                w = self.workers[info.worker_id]
                if w.state == "idle":
                    actions += self._grant(waiter, w)
                continue
            if info is not None and info.attached:
                actions += self._refuse(
                    waiter,
                    WorkerDied(
                        f"session {waiter.session!r} ran on an attached kernel that is gone "
                        f"({info.reset_reason or 'disconnected'}); attach it again with "
                        "pool.attach(...), or end the session to reuse its name"
                    ),
                )
            elif (w := self._find(waiter.kernel_name, same_kernel=True)) is not None:
                actions += self._grant(waiter, w)
            elif self.settings.max_size == 0:
                actions += self._refuse(
                    waiter,
                    LeaseTimeout(
                        f"session {waiter.session!r} has no worker and this pool starts none "
                        "(max_size=0): attach a kernel for it (pool.attach) or raise max_size"
                    ),
                )
            else:
                needed[waiter.kernel_name][waiter.session] = None
        for kernel_name, sessions in needed.items():
            actions += self._grow(kernel_name, list(sessions))
        for kernel_name in tasks:
            actions += self._assign_tasks(kernel_name, len(needed.get(kernel_name, ())))
        return actions

    def _assign_tasks(self, kernel_name: str, for_sessions: int) -> list[Action]:
        """Grant free session-less workers to task waiters; start more up to ``max_size``.

        ``for_sessions``: new sessions of this kernelspec still waiting, who
        get the workers now starting first. Task waiters never repurpose or
        evict. With nothing free, starting or coming free, they fail at once.
        """
        actions: list[Action] = []
        waiting = [x for x in self.waiters if x.task and x.kernel_name == kernel_name]
        while waiting and (w := self._find(kernel_name, same_kernel=True)) is not None:
            actions += self._grant(waiting.pop(0), w)
        if not waiting:
            return actions
        unbound_workers = [
            w for w in self.workers.values() if w.kernel_name == kernel_name and not self._bound(w)
        ]
        starting = sum(1 for w in unbound_workers if w.state == "starting")
        if not starting and any(w.state == "failed" for w in unbound_workers):
            failed = next(w for w in unbound_workers if w.state == "failed")
            return actions + self._fail_unbound(kernel_name, failed)
        spare = max(0, starting - for_sessions)
        room = self.settings.max_size - self._live_count()
        for _ in range(max(0, min(len(waiting) - spare, room))):
            actions.append(Start(self._new_worker(kernel_name)))
            spare += 1
        busy = any(w.state == "leased" for w in unbound_workers)  # other maps' workers
        if not spare and not busy and not self._coming_free():
            held = ", ".join(i.name for i in self.sessions.all() if i.worker_id) or "none"
            error = LeaseTimeout(
                f"no worker free of sessions for pool.map: all {self._live_count()} workers are "
                f"bound to sessions ({held}) and max_size={self.settings.max_size} is reached; "
                "end a session (pool.end_session(NAME)) or raise max_size"
            )
            for waiter in waiting:
                actions += self._refuse(waiter, error)
        return actions

    def _grow(self, kernel_name: str, sessions: list[str]) -> list[Action]:
        """Find one worker each for the new ``sessions`` of ``kernel_name`` (in arrival order).

        Workers already starting serve the first in line. When no worker can
        come for the last ones, every request of those sessions fails at once.
        """
        pending = [
            w
            for w in self.workers.values()
            if w.kernel_name == kernel_name
            and w.state in ("starting", "failed")
            and not self._bound(w)
        ]
        if not any(w.state == "starting" for w in pending):
            failed = next((w for w in pending if w.state == "failed"), None)
            if failed is not None:
                return self._fail_unbound(kernel_name, failed)
        actions: list[Action] = []
        hopeless = 0
        for _ in range(len(sessions) - len(pending)):
            spare = self._find(kernel_name, same_kernel=False)
            if self._live_count() < self.settings.max_size:
                actions.append(Start(self._new_worker(kernel_name)))
            elif spare is not None:
                self._log("repurposed", spare, f"replaced by a {kernel_name!r} worker")
                actions += self._replace(spare, None, retired=True, kernel_name=kernel_name)
            elif self.settings.evict_idle_sessions:
                actions += self._evict_one(kernel_name)
            elif not self._coming_free():
                hopeless += 1
        if hopeless:  # fail the last ones in line at once: only the user can free a worker
            doomed = set(sessions[-hopeless:])
            for waiter in [
                x
                for x in self.waiters
                if x.kernel_name == kernel_name and not x.task and x.session in doomed
            ]:
                actions += self._refuse(waiter, LeaseTimeout(self.explain_wait(waiter, None)))
        return actions

    def _find(self, kernel_name: str, *, same_kernel: bool) -> Worker | None:
        """An idle, unbound worker of ``kernel_name`` (or, to repurpose, of another one)."""
        for w in self.workers.values():
            if (
                w.state == "idle"
                and not self._bound(w)
                and (w.kernel_name == kernel_name) == same_kernel
            ):
                if same_kernel or not w.attached:
                    return w
        return None

    def _coming_free(self) -> bool:
        """Whether a worker frees up without the user (a retiring or dead one, or a map's).

        A map's worker is a leased one bound to no session that is not
        retiring (a retiring one's session ended while it was leased).
        """
        return any(
            ((w.retire is not None or w.death is not None) and w.counts)
            or (w.state == "leased" and w.retire is None and not self._bound(w))
            for w in self.workers.values()
        )

    def _grant(self, waiter: Waiter, w: Worker) -> list[Action]:
        """Lease ``w`` to ``waiter``: a new session is bound to it, a task binds nothing."""
        self.waiters.remove(waiter)
        w.state = "leased"
        if waiter.task:  # binds no session: nothing to touch, nothing to reset
            return [Grant(waiter, w, None, generation=0, session_reset=None)]
        info = self.sessions.get(waiter.session)
        if unbound(info):
            info = self.sessions.bind(waiter.session, waiter.kernel_name, w.id)
        self.sessions.touch(waiter.session)
        return [
            Grant(
                waiter,
                w,
                waiter.session,
                generation=info.generation,
                session_reset=info.reset_reason,
            )
        ]

    def _refuse(self, waiter: Waiter, error: BaseException) -> list[Action]:
        """Take a waiter out of the queue, refused with ``error``."""
        self.waiters.remove(waiter)
        return [Refuse(waiter, error)]

    def _fail_unbound(self, kernel_name: str, failed: Worker) -> list[Action]:
        error = failed.last_error
        if failed.retry_at is None:  # not retried: the message says what to fix
            message = str(error)
        else:
            retry = max(0.0, failed.retry_at - time.monotonic())
            message = f"{error} (failed {failed.failures} time(s); nbpool retries in {retry:.1f} s)"
        actions: list[Action] = []
        for waiter in list(self.waiters):
            if waiter.kernel_name == kernel_name and unbound(self.sessions.get(waiter.session)):
                tail = error.stderr_tail if error else ""
                actions += self._refuse(waiter, WorkerStartFailed(message, tail))
        return actions

    def _evict_one(self, kernel_name: str) -> list[Action]:
        idle_bound = [
            (info.last_used, info, self.workers[info.worker_id])
            for info in self.sessions.all()
            if info.worker_id is not None
            and self.workers[info.worker_id].state == "idle"
            and not self.workers[info.worker_id].attached
        ]
        if not idle_bound:
            return []
        _, info, w = min(idle_bound, key=lambda item: item[0])
        self._log("evicted", w, f"session {info.name!r} evicted (least recently used)")
        return self._replace(
            w,
            f"session {info.name!r} was evicted as the least recently used idle session "
            "(evict_idle_sessions=True) to make room for another session",
            kernel_name=kernel_name,
        )

    def _replace(
        self,
        w: Worker,
        reason: str | None,
        *,
        retired: bool = False,
        kernel_name: str | None = None,
    ) -> list[Action]:
        """Stop ``w`` (reset its session) and start a fresh kernel in its place if wanted."""
        info = self.sessions.bound_to(w.id)
        if info is not None:
            self.sessions.reset(info.name, reason)
        actions: list[Action] = [Stop(w)]
        w.state = "stopping"
        if w.attached:
            return actions  # not ours to restart: its session is told it is gone
        wanted = kernel_name is not None or self._live_count() < self.settings.min_size
        if wanted and not self.closed:
            actions.append(Start(self._new_worker(kernel_name or w.kernel_name, replaces=w.id)))
            if not retired:
                self.counters["restarts"] += 1
        return actions

    def _new_worker(self, kernel_name: str, replaces: str | None = None) -> Worker:
        w = Worker(f"w{next(self._ids)}", kernel_name, replaces=replaces)
        self.workers[w.id] = w
        return w

    def _bound(self, w: Worker) -> bool:
        return self.sessions.bound_to(w.id) is not None

    def _live_count(self) -> int:
        """Workers nbpool started that count against max_size (attached ones don't)."""
        return sum(1 for w in self.workers.values() if w.counts)

    def _log(self, kind: str, w: Worker, message: str) -> None:
        self.events.append({"time": time.time(), "kind": kind, "worker": w.id, "message": message})

    # ------------------------------------------------------------------
    # messages
    # ------------------------------------------------------------------

    def explain_wait(self, waiter: Waiter, timeout: float | None) -> str:
        """Why ``waiter`` has no worker, and how to free one (``timeout`` None: at once).

        For a new session it names what holds the workers: sessions bound to
        them, starts under way and for whom, maps' task leases, failed starts.
        """
        info = self.sessions.get(waiter.session)
        within = "" if timeout is None else f" within {timeout:g} s"
        head = f"no worker for session {waiter.session!r}{within}: "
        mine = sum(1 for x in self.waiters if x.session == waiter.session and x is not waiter)
        if not unbound(info):
            return head + (
                f"its worker {info.worker_id} is still busy with an earlier execution of "
                f"this session ({mine} more queued); wait longer (lease timeout) or "
                "interrupt it"
            )
        return head + self._holders(waiter) + self._advice(waiter, mine)

    def _holders(self, waiter: Waiter) -> str:
        """What holds the workers a new session's ``waiter`` could have used."""
        bound = [i.name for i in self.sessions.all() if i.worker_id is not None]
        free = [w for w in self.workers.values() if w.counts and not self._bound(w)]
        starting = sum(1 for w in free if w.state == "starting")
        failed = sum(1 for w in free if w.state == "failed")
        tasks = sum(1 for w in free if w.state == "leased")
        others = list(
            dict.fromkeys(
                x.session
                for x in self.waiters
                if not x.task
                and x.session != waiter.session
                and unbound(self.sessions.get(x.session))
            )
        )
        held = [f"bound to sessions {', '.join(bound)}"] if bound else []
        if starting:
            whom = f" for new sessions {', '.join(others)}" if others else ""
            held.append(f"{starting} starting{whom}")
        if tasks:
            held.append(f"{tasks} running pool.map tasks")
        if failed:
            held.append(f"{failed} failed to start")
        return f"all {self._live_count()} workers taken ({'; '.join(held) or 'stopping'}); "

    def _advice(self, waiter: Waiter, mine: int) -> str:
        """The queue behind a new session's ``waiter`` and how to get a worker."""
        others = sum(1 for x in self.waiters if x is not waiter) - mine
        queued = f"{mine} more request(s) of this session and {others} other(s) waiting; "
        if self._live_count() < self.settings.max_size:
            return queued + "a worker is still starting for it: wait longer (lease timeout)"
        return queued + (
            f"max_size={self.settings.max_size} reached - end a session (pool.end_session(NAME) "
            "or %pool end NAME) or raise max_size"
            + ("" if self.settings.evict_idle_sessions else ", or set evict_idle_sessions=True")
        )


def unbound(info: SessionInfo | None) -> bool:
    """A session with no worker (new, or its worker was lost)."""
    return info is None or info.worker_id is None
