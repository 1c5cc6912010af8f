"""The coordinator's decisions: who gets which worker, and what to start or stop.

:class:`Policy` is the state of a pool and the rules of
:mod:`nbpool.core.coordinator`'s contract, as plain bookkeeping: no lock, no
thread, no I/O. Its methods are called by the :class:`~nbpool.core.coordinator.Coordinator`
with its lock held; they change the records and *return* what must be done
outside the lock (:mod:`nbpool.core.records` actions). Keeping the decisions
apart from the locking makes each easy to read and to change: this module is
where a new rule goes.
"""

from __future__ import annotations

import collections
import itertools
import time

from ..errors import LeaseTimeout, WorkerDied, WorkerStartFailed
from .lease import Lease
from .records import Action, Settings, Settled, Start, Stop, Waiter, Worker
from .sessions import SessionInfo, SessionRegistry

#: How many recent events a snapshot reports.
EVENTS_KEPT = 50


class Policy:
    """Pool state and the rules that change it (the coordinator's lock guards both)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._workers: dict[str, Worker] = {}
        self._waiters: collections.deque[Waiter] = collections.deque()
        self.sessions = SessionRegistry()
        self.events: collections.deque[dict] = collections.deque(maxlen=EVENTS_KEPT)
        self.counters = collections.Counter(
            executions=0, failures=0, restarts=0, start_failures=0, deaths=0, timeouts=0
        )
        self.closed = False
        #: Workers left running for their kept sessions at a detach (ids).
        self.kept: frozenset[str] = frozenset()
        self._ids = itertools.count(1)

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
        for waiter in list(self._waiters):
            if waiter.task:
                tasks.add(waiter.kernel_name)
                continue
            info = self.sessions.get(waiter.session)
            if not unbound(info):
                w = self._workers[info.worker_id]
                if w.state == "idle":
                    actions += self._grant(waiter, w)
                continue
            if info is not None and info.attached:
                actions += self._settle(
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
                actions += self._settle(
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
        waiting = [x for x in self._waiters if x.task and x.kernel_name == kernel_name]
        while waiting and (w := self._find(kernel_name, same_kernel=True)) is not None:
            actions += self._grant(waiting.pop(0), w)
        if not waiting:
            return actions
        unbound_workers = [
            w for w in self._workers.values() if w.kernel_name == kernel_name and not self._bound(w)
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
                actions += self._settle(waiter, error)
        return actions

    def _adopt(self, kept: list[tuple[str, str, int, object | None, str | None]]) -> int:
        """Kept sessions come back (``Coordinator.adopt``); how many kernels were adopted."""
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
        return adopted

    def _grow(self, kernel_name: str, sessions: list[str]) -> list[Action]:
        """Find one worker each for the new ``sessions`` of ``kernel_name`` (in arrival order).

        Workers already starting serve the first in line. When no worker can
        come for the last ones, every request of those sessions fails at once.
        """
        pending = [
            w
            for w in self._workers.values()
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
                for x in self._waiters
                if x.kernel_name == kernel_name and not x.task and x.session in doomed
            ]:
                actions += self._settle(waiter, LeaseTimeout(self._explain_wait(waiter, None)))
        return actions

    def _find(self, kernel_name: str, *, same_kernel: bool) -> Worker | None:
        """An idle, unbound worker of ``kernel_name`` (or, to repurpose, of another one)."""
        for w in self._workers.values():
            if (
                w.state == "idle"
                and not self._bound(w)
                and (w.kernel_name == kernel_name) == same_kernel
            ):
                if same_kernel or not w.attached:
                    return w
        return None

    def _coming_free(self) -> bool:
        """Whether a worker frees up without the user (a retiring or dead one, or a map's)."""
        return any(
            ((w.retire is not None or w.death is not None) and w.counts)
            or (w.lease is not None and w.lease.session is None)
            for w in self._workers.values()
        )

    def _grant(self, waiter: Waiter, w: Worker) -> list[Action]:
        if waiter.task:  # binds no session: nothing to touch, nothing to reset
            w.state = "leased"
            w.lease = Lease(
                self,
                w,
                None,
                generation=0,
                session_reset=None,
                interrupt_grace=self.settings.interrupt_grace,
            )
            waiter.lease = w.lease
            return self._settle(waiter)
        info = self.sessions.get(waiter.session)
        if unbound(info):
            info = self.sessions.bind(waiter.session, waiter.kernel_name, w.id)
        self.sessions.touch(waiter.session)
        w.state = "leased"
        w.lease = Lease(
            self,
            w,
            waiter.session,
            generation=info.generation,
            session_reset=info.reset_reason,
            interrupt_grace=self.settings.interrupt_grace,
        )
        waiter.lease = w.lease
        return self._settle(waiter)

    def _settle(self, waiter: Waiter, error: BaseException | None = None) -> list[Action]:
        """Take a waiter out of the queue (granted, or failed with ``error``)."""
        self._waiters.remove(waiter)
        waiter.error = error
        waiter.event.set()
        return [Settled(waiter)] if waiter.on_settled is not None else []

    def _fail_unbound(self, kernel_name: str, failed: Worker) -> list[Action]:
        error = failed.last_error
        if failed.retry_at is None:  # not retried: the message says what to fix
            message = str(error)
        else:
            retry = max(0.0, failed.retry_at - time.monotonic())
            message = f"{error} (failed {failed.failures} time(s); nbpool retries in {retry:.1f} s)"
        actions: list[Action] = []
        for waiter in list(self._waiters):
            if waiter.kernel_name == kernel_name and unbound(self.sessions.get(waiter.session)):
                tail = error.stderr_tail if error else ""
                actions += self._settle(waiter, WorkerStartFailed(message, tail))
        return actions

    def _evict_one(self, kernel_name: str) -> list[Action]:
        idle_bound = [
            (info.last_used, info, self._workers[info.worker_id])
            for info in self.sessions.all()
            if info.worker_id is not None
            and self._workers[info.worker_id].state == "idle"
            and not self._workers[info.worker_id].attached
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
        self._workers[w.id] = w
        return w

    def _bound(self, w: Worker) -> bool:
        return self.sessions.bound_to(w.id) is not None

    def _live_count(self) -> int:
        """Workers nbpool started that count against max_size (attached ones don't)."""
        return sum(1 for w in self._workers.values() if w.counts)

    def _log(self, kind: str, w: Worker, message: str) -> None:
        self.events.append({"time": time.time(), "kind": kind, "worker": w.id, "message": message})

    def _explain_wait(self, waiter: Waiter, timeout: float | None) -> str:
        """Why ``waiter`` has no worker, and how to free one (``timeout`` None: at once).

        For a new session it names what holds the workers: sessions bound to
        them, starts under way and for whom, maps' task leases, failed starts.
        """
        info = self.sessions.get(waiter.session)
        within = "" if timeout is None else f" within {timeout:g} s"
        head = f"no worker for session {waiter.session!r}{within}: "
        mine = sum(1 for x in self._waiters if x.session == waiter.session and x is not waiter)
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
        free = [w for w in self._workers.values() if w.counts and not self._bound(w)]
        starting = sum(1 for w in free if w.state == "starting")
        failed = sum(1 for w in free if w.state == "failed")
        tasks = sum(1 for w in free if w.lease is not None)
        others = list(
            dict.fromkeys(
                x.session
                for x in self._waiters
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
        others = sum(1 for x in self._waiters if x is not waiter) - mine
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
