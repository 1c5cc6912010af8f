"""The pool coordinator: who holds which worker, and who waits for one.

The contract
============

The coordinator *coordinates*; it never does a client's I/O.

* **Lease.** :meth:`Coordinator.request` registers a client in the FIFO of
  waiters and, if a worker is free for it, grants a :class:`~nbpool.lease.Lease`
  at once; :meth:`Coordinator.wait` blocks the *calling* thread until then.
  Both are bookkeeping under one lock and take microseconds. The lease
  timeout covers only this wait; on expiry the client gets
  :class:`~nbpool.errors.LeaseTimeout` whose message says what the pool is
  doing and how to free a worker.
* **Affinity.** A session is bound to one worker until
  :meth:`end_session`, eviction or the worker's death. A session whose worker
  is busy waits for *that* worker, in arrival order; it never moves.
* **Growth.** A session with no worker takes a free unbound worker of its
  kernelspec. With none free, the pool starts another (up to ``max_size``);
  beyond that it waits, or, with ``evict_idle_sessions``, ends the least
  recently used idle session, whose next execution is told its state was reset.
* **Release.** :meth:`release` is asynchronous bookkeeping too. A worker whose
  lease ended abnormally (execution not finished: timeout the interrupt did
  not stop, transport error, ``KeyboardInterrupt`` not wound down, holder
  thread died) is never handed on: it is replaced by a fresh kernel. So is a
  worker whose session ended: a new process with new keys, before any other
  session can get it.
* **Health.** The coordinator thread polls every worker process each
  :data:`TICK` and pings its heartbeat. A dead or frozen worker is marked dead
  at once; its lease holder gets :class:`~nbpool.errors.WorkerDied` within a
  tick; a replacement starts at once.
* **Starts.** Kernels start, restart and stop on I/O threads, concurrently,
  never under the lock and never on the coordinator thread. A failed start is
  retried with exponential backoff and jitter; waiters that only that start
  could serve get :class:`~nbpool.errors.WorkerStartFailed` with the kernel's
  stderr at once.

.. warning::
   Nothing under ``self._lock`` may block: no ZMQ, no process start or kill,
   no waiting. Functions that decide such work *return* it as actions, which
   the caller runs after releasing the lock (httpcore's pattern).
"""

from __future__ import annotations

import collections
import itertools
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from .errors import (
    InvalidConfig,
    LeaseTimeout,
    PoolClosed,
    WorkerDied,
    WorkerStartFailed,
    WorkerUnavailable,
)
from .health import Heartbeats
from .lease import Lease
from .sessions import SessionRegistry

log = logging.getLogger("nbpool")

#: Period of the coordinator thread: process polls, heartbeats, timers.
TICK = 0.03
#: Start-retry backoff: first delay and cap, in seconds (jitter is added).
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
#: How many recent events :meth:`Coordinator.snapshot` reports.
EVENTS_KEPT = 50

LIVE = ("starting", "idle", "leased")


@dataclass(eq=False)
class Worker:
    """Bookkeeping for one kernel incarnation (a restart makes a new Worker)."""

    id: str
    kernel_name: str
    state: str = "starting"  # starting | idle | leased | failed | stopping
    kernel: object = None
    lease: Lease | None = None
    replaces: str | None = None
    retire: str | None = None  # set: stop instead of reuse at release (why)
    death: str | None = None  # set once the kernel is known dead (why)
    busy: bool = False  # a lease holder is executing right now
    executions: int = 0
    failures: int = 0
    retry_at: float | None = None
    last_error: WorkerStartFailed | None = None
    started_at: float = 0.0
    last_used: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Waiter:
    session: str
    kernel_name: str
    event: threading.Event = field(default_factory=threading.Event)
    lease: Lease | None = None
    error: BaseException | None = None
    since: float = field(default_factory=time.monotonic)
    #: Background requests: called (off the lock) once the waiter is settled.
    on_settled: Callable[["Waiter"], None] | None = None
    #: Background requests: the coordinator thread enforces their lease timeout.
    deadline: float | None = None


@dataclass
class Settings:
    """The pool settings the coordinator acts on (validated by Pool)."""

    size: int = 1
    min_size: int = 1
    max_size: int = 1
    kernel_name: str = "python3"
    start_timeout: float = 60.0
    interrupt_grace: float = 5.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 3.0
    max_executions: int = 0
    idle_timeout: float = 0.0
    evict_idle_sessions: bool = False


class Coordinator:
    """Owns all pool state; see the module docstring for the contract.

    Parameters
    ----------
    settings : Settings
    start_kernel : callable
        ``start_kernel(worker_id, kernel_name, start_timeout) -> kernel``;
        blocking, raises :class:`WorkerStartFailed`. Real pools pass
        :meth:`Launcher.start`; bookkeeping tests pass a fake.
    """

    def __init__(self, settings: Settings, start_kernel: Callable) -> None:
        self.settings = settings
        self._start_kernel = start_kernel
        # All mutable state below is guarded by _lock (the heartbeat sockets
        # belong to the coordinator thread alone).
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._workers: dict[str, Worker] = {}
        self._waiters: collections.deque[Waiter] = collections.deque()
        self.sessions = SessionRegistry()
        self.events: collections.deque[dict] = collections.deque(maxlen=EVENTS_KEPT)
        self.counters = collections.Counter(
            executions=0, failures=0, restarts=0, start_failures=0, deaths=0, timeouts=0
        )
        self.closed = False
        self._ids = itertools.count(1)
        self._io = ThreadPoolExecutor(
            # Threads are made lazily; generous so resize() never queues starts.
            max_workers=64,
            thread_name_prefix="nbpool-io",
        )
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._heartbeats = Heartbeats(settings.heartbeat_interval, settings.heartbeat_timeout)
        self._thread = threading.Thread(target=self._loop, name="nbpool-coordinator", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------
    # client side: any thread, bookkeeping only
    # ------------------------------------------------------------------

    def start(self, count: int) -> list[Worker]:
        with self._lock:
            self._check_open()
            new = [self._new_worker(self.settings.kernel_name) for _ in range(count)]
        self._run([("start", w) for w in new])
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
        """Queue a lease request; it may be granted before this returns.

        Without ``on_settled`` the caller then blocks in :meth:`wait`. With
        it, the request is a background one: ``on_settled(waiter)`` is called
        from whichever thread settles it (grant, failure, ``timeout``), so no
        thread blocks while it queues.
        """
        waiter = Waiter(session, kernel_name, on_settled=on_settled)
        if timeout is not None and on_settled is not None:
            waiter.deadline = waiter.since + timeout
        with self._lock:
            self._check_open()
            self._waiters.append(waiter)
            actions = self._assign()
        self._run(actions)
        return waiter

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
            w.lease, w.busy = None, False
            w.executions += lease.executions
            self.counters["executions"] += lease.executions
            w.last_used = time.monotonic()
            actions: list = []
            limit = self.settings.max_executions
            if w.death is not None:
                actions += self._replace(w, f"worker {w.id} {w.death}; the session's state was lost")
            elif lease.dirty:
                self.counters["failures"] += 1
                self._log("restarted", w, lease.dirty)
                actions += self._replace(w, f"worker {w.id} was restarted: {lease.dirty}")
            elif w.retire is not None:
                actions += self._replace(w, None, retired=True)
            elif limit and w.executions >= limit and not _attached(w):
                self._log("recycled", w, f"after {w.executions} executions")
                actions += self._replace(
                    w, f"worker {w.id} was recycled after {w.executions} executions (max_executions)"
                )
            else:
                w.state = "idle"
            actions += self._assign()
            self._changed.notify_all()
        self._run(actions)

    def end_session(self, name: str) -> bool:
        """Unbind ``name``; its worker is replaced by a fresh kernel. False if unknown."""
        with self._lock:
            self._check_open()
            info = self.sessions.get(name)
            if info is None:
                return False
            self.sessions.remove(name)
            actions: list = []
            w = self._workers.get(info.worker_id or "")
            if w is not None:
                self._log("session ended", w, f"session {name!r} ended")
                if w.state == "leased":
                    w.retire = f"session {name!r} ended"
                else:
                    actions += self._replace(w, None, retired=True)
            actions += self._assign()
        self._run(actions)
        return True

    def restart_worker(self, worker_id: str) -> None:
        """Replace a worker by a fresh kernel on request; its session's state is lost.

        An idle worker is stopped and replaced now. A leased one is marked like
        a dead one: its holder gets :class:`~nbpool.errors.WorkerDied` within
        a poll slice and the release replaces it. A failed one retries its
        start now.
        """
        with self._lock:
            self._check_open()
            w = self._workers.get(worker_id)
            if w is None or w.state == "stopping":
                live = ", ".join(x.id for x in self._workers.values() if x.state != "stopping")
                raise WorkerUnavailable(
                    f"no worker {worker_id!r} in the pool: it was stopped or replaced "
                    f"(workers now: {live or 'none'})"
                )
            if w.death is not None:
                raise WorkerUnavailable(
                    f"worker {w.id} {w.death}; it is replaced as soon as its holder lets go"
                )
            if w.state == "starting":
                raise WorkerUnavailable(f"worker {w.id} is still starting; restart it once it is ready")
            reason = "was restarted on request"
            self._log("restart requested", w, f"worker {w.id} {reason}")
            if w.state == "failed":
                w.state, w.retry_at = "starting", None
                actions: list = [("start", w)]
            elif w.state == "leased":
                w.death = reason
                actions = []
            else:
                actions = self._replace(
                    w, f"worker {w.id} {reason}; the session's state was lost", kernel_name=w.kernel_name
                )
            actions += self._assign()
            self._changed.notify_all()
        self._run(actions)

    def resize(self, size: int, min_size: int, max_size: int, *, start: bool = True) -> None:
        """Adopt new size settings; with ``start``, start or stop workers to match now.

        Growing starts workers at once. Shrinking stops only workers nobody
        holds or is bound to (failed, then starting, then idle ones); a worker
        bound to a session stays until that session ends, when the usual
        ``min_size`` rule does not replace it.
        """
        with self._lock:
            self._check_open()
            s = self.settings
            s.size, s.min_size, s.max_size = size, min_size, max_size
            actions: list = []
            if start:
                live = [w for w in self._workers.values() if w.state in LIVE or w.state == "failed"]
                for _ in range(size - len(live)):
                    actions.append(("start", self._new_worker(s.kernel_name)))
                rank = {"failed": 0, "starting": 1, "idle": 2}
                free = sorted(
                    (
                        w
                        for w in live
                        if w.state in rank and w.lease is None and self.sessions.bound_to(w.id) is None
                    ),
                    key=lambda w: rank[w.state],
                )
                for w in free[: max(0, len(live) - size)]:
                    w.state = "stopping"
                    self._log("stopped", w, f"worker {w.id} stopped: pool resized to {size}")
                    actions.append(("stop", w))
                actions += self._assign()
            self._changed.notify_all()
        self._run(actions)

    def adopt(self, connect: Callable[[str], object], session: str) -> Worker:
        """Add a kernel someone else started, bound to ``session``.

        ``connect(worker_id)`` connects to it and returns a ready kernel; it
        blocks, so it runs in the calling thread, outside the lock.
        """
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
        self._run(actions)
        return w

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
            w = self._workers.get(worker_id)
            if w is None or w.state == "stopping":
                live = ", ".join(x.id for x in self._workers.values() if x.state != "stopping")
                raise WorkerUnavailable(
                    f"no worker {worker_id!r} in the pool (workers now: {live or 'none'})"
                )
            if w.death is not None:
                raise WorkerUnavailable(f"worker {w.id} {w.death}; there is nothing to interrupt")
            lease = w.lease
        return lease is not None and lease.interrupt()  # outside the lock

    # ------------------------------------------------------------------
    # assignment: under the lock; returns actions for outside the lock
    # ------------------------------------------------------------------

    def _assign(self) -> list:
        """Serve waiters in FIFO order; start or evict workers for the rest."""
        actions: list = []
        needed: collections.Counter = collections.Counter()
        for waiter in list(self._waiters):
            info = self.sessions.get(waiter.session)
            if info is not None and info.worker_id is not None:
                w = self._workers[info.worker_id]
                if w.state == "idle":
                    actions += self._grant(waiter, w)
                continue
            if info is not None and info.attached:
                actions += self._settle(waiter, WorkerDied(
                    f"session {waiter.session!r} ran on an attached kernel that is gone "
                    f"({info.reset_reason or 'disconnected'}); attach it again with "
                    "pool.attach(...), or end the session to reuse its name"
                ))
            elif (w := self._free_worker(waiter.kernel_name)) is not None:
                actions += self._grant(waiter, w)
            elif self.settings.max_size == 0:
                actions += self._settle(waiter, LeaseTimeout(
                    f"session {waiter.session!r} has no worker and this pool starts none "
                    "(max_size=0): attach a kernel for it (pool.attach) or raise max_size"
                ))
            else:
                needed[waiter.kernel_name] += 1
        for kernel_name, count in needed.items():
            pending = [
                w
                for w in self._workers.values()
                if w.kernel_name == kernel_name
                and w.state in ("starting", "failed")
                and self.sessions.bound_to(w.id) is None
            ]
            if not any(w.state == "starting" for w in pending):
                failed = next((w for w in pending if w.state == "failed"), None)
                if failed is not None:
                    actions += self._fail_unbound(kernel_name, failed)
                    continue
            hopeless = 0
            for _ in range(count - len(pending)):
                spare = self._spare_worker(kernel_name)
                if self._live_count() < self.settings.max_size:
                    w = self._new_worker(kernel_name)
                    actions.append(("start", w))
                elif spare is not None:  # full, but an unused worker of another kernelspec
                    self._log("repurposed", spare, f"replaced by a {kernel_name!r} worker")
                    actions += self._replace(spare, None, retired=True, kernel_name=kernel_name)
                elif self.settings.evict_idle_sessions:
                    actions += self._evict_one(kernel_name)
                elif not self._coming_free():
                    hopeless += 1
            if hopeless:
                actions += self._fail_hopeless(kernel_name, hopeless)
        return actions

    def _coming_free(self) -> bool:
        """Whether a worker slot will free up without the user (a session ending, a death)."""
        return any(
            (w.retire is not None or w.death is not None) and not _attached(w)
            for w in self._workers.values()
            if w.state != "stopping"
        )

    def _fail_hopeless(self, kernel_name: str, count: int) -> list:
        """Fail the last ``count`` new-session waiters of ``kernel_name`` at once.

        Every worker is bound to another session, none is starting or being
        replaced, and no eviction may free one: only the user can, so waiting
        out the lease timeout would be a dead wait.
        """
        doomed = [
            waiter
            for waiter in self._waiters
            if waiter.kernel_name == kernel_name and _unbound(self.sessions.get(waiter.session))
        ][-count:]
        actions: list = []
        for waiter in doomed:
            actions += self._settle(waiter, LeaseTimeout(self._explain_wait(waiter, None)))
        return actions

    def _free_worker(self, kernel_name: str) -> Worker | None:
        for w in self._workers.values():
            if (
                w.state == "idle"
                and w.kernel_name == kernel_name
                and self.sessions.bound_to(w.id) is None
            ):
                return w
        return None

    def _spare_worker(self, kernel_name: str) -> Worker | None:
        """An idle, unbound worker of another kernelspec (it holds no state)."""
        for w in self._workers.values():
            if (
                w.state == "idle"
                and w.kernel_name != kernel_name
                and not _attached(w)
                and self.sessions.bound_to(w.id) is None
            ):
                return w
        return None

    def _grant(self, waiter: Waiter, w: Worker) -> list:
        info = self.sessions.get(waiter.session)
        if info is None or info.worker_id is None:
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

    def _settle(self, waiter: Waiter, error: BaseException | None = None) -> list:
        """Take a waiter out of the queue (granted, or failed with ``error``)."""
        self._waiters.remove(waiter)
        waiter.error = error
        waiter.event.set()
        return [("settled", waiter)] if waiter.on_settled is not None else []

    def _fail_unbound(self, kernel_name: str, failed: Worker) -> list:
        error = failed.last_error
        retry = max(0.0, (failed.retry_at or 0) - time.monotonic())
        message = (
            f"{error} (failed {failed.failures} time(s); nbpool retries in {retry:.1f} s)"
        )
        actions = []
        for waiter in list(self._waiters):
            info = self.sessions.get(waiter.session)
            if waiter.kernel_name == kernel_name and (info is None or info.worker_id is None):
                tail = error.stderr_tail if error else ""
                actions += self._settle(waiter, WorkerStartFailed(message, tail))
        return actions

    def _evict_one(self, kernel_name: str) -> list:
        idle_bound = [
            (info.last_used, info, self._workers[info.worker_id])
            for info in self.sessions.all()
            if info.worker_id is not None
            and self._workers[info.worker_id].state == "idle"
            and not _attached(self._workers[info.worker_id])
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
        self, w: Worker, reason: str | None, *, retired: bool = False, kernel_name: str | None = None
    ) -> list:
        """Retire ``w`` (reset its session) and start a fresh kernel in its place."""
        info = self.sessions.bound_to(w.id)
        if info is not None:
            self.sessions.reset(info.name, reason)
        actions = [("stop", w)]
        w.state = "stopping"
        if _attached(w):
            return actions  # not ours to restart: its session is told it is gone
        wanted = kernel_name is not None or self._live_count() < self.settings.min_size
        if wanted and not self.closed:
            fresh = self._new_worker(kernel_name or w.kernel_name, replaces=w.id)
            actions.append(("start", fresh))
            if not retired:
                self.counters["restarts"] += 1
        return actions

    def _new_worker(self, kernel_name: str, replaces: str | None = None) -> Worker:
        w = Worker(f"w{next(self._ids)}", kernel_name, replaces=replaces)
        self._workers[w.id] = w
        return w

    def _live_count(self) -> int:
        """Workers nbpool started that count against max_size (attached ones don't)."""
        return sum(
            1
            for w in self._workers.values()
            if (w.state in LIVE or w.state == "failed") and not _attached(w)
        )

    # ------------------------------------------------------------------
    # I/O: run outside the lock, on I/O threads
    # ------------------------------------------------------------------

    def _run(self, actions: list) -> None:
        """Run actions decided under the lock; one failing never drops the rest."""
        for verb, obj in actions:
            try:
                if verb == "start":
                    self._submit(self._do_start, obj)
                elif verb == "stop":
                    self._submit(self._do_stop, obj)
                elif verb == "release":
                    self.release(obj)
                else:  # "settled": a background request's callback
                    obj.on_settled(obj)
            except Exception:
                log.exception("nbpool: %s of %r failed", verb, getattr(obj, "id", obj))

    def _submit(self, fn: Callable[[Worker], None], w: Worker) -> None:
        try:
            self._io.submit(fn, w)
        except RuntimeError:  # interpreter exit: executors refuse new work
            threading.Thread(target=fn, args=(w,), name="nbpool-io-exit").start()

    def _do_start(self, w: Worker) -> None:
        try:
            kernel = self._start_kernel(w.id, w.kernel_name, self.settings.start_timeout)
        except WorkerStartFailed as exc:
            self._start_failed(w, exc)
            return
        except Exception as exc:  # a provisioner bug must not kill the pool
            self._start_failed(w, WorkerStartFailed(f"kernel {w.kernel_name!r}: {exc}"))
            return
        with self._lock:
            if self.closed or w.state != "starting":
                stale = True
            else:
                stale = False
                w.kernel, w.state, w.failures, w.last_error = kernel, "idle", 0, None
                w.started_at = w.last_used = time.monotonic()
                self._log("started", w, f"pid {getattr(kernel, 'pid', None)}")
                actions = self._assign()
            self._changed.notify_all()
        if stale:
            kernel.shutdown(now=True)
        else:
            self._run(actions)

    def _start_failed(self, w: Worker, exc: WorkerStartFailed) -> None:
        with self._lock:
            w.failures += 1
            w.last_error = exc
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (w.failures - 1))
            w.retry_at = time.monotonic() + delay * random.uniform(1.0, 1.5)
            w.state = "failed"
            self.counters["start_failures"] += 1
            self._log("start failed", w, str(exc))
            actions = self._assign()
            self._changed.notify_all()
        self._run(actions)

    def _do_stop(self, w: Worker) -> None:
        try:
            if w.kernel is not None:
                # A holder that never released still owns the sockets: leave them be.
                w.kernel.shutdown(
                    now=not self.closed or w.death is not None, close_channels=w.lease is None
                )
        finally:
            with self._lock:
                self._workers.pop(w.id, None)
                self._changed.notify_all()

    # ------------------------------------------------------------------
    # the coordinator thread: health, heartbeats, timers
    # ------------------------------------------------------------------

    def pause(self) -> None:
        """Stop health checks and timers (tests use this instead of sleeping)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ready = {
                    w.id: w.kernel
                    for w in self._workers.values()
                    if w.state in ("idle", "leased") and w.death is None
                }
            self._heartbeats.sync(ready)
            if not self._heartbeats.wait(TICK):
                self._stop.wait(TICK)
            if self._running.is_set() and not self._stop.is_set():
                try:
                    self._tick()
                except Exception:  # the health checks must outlive any one bug
                    log.exception("nbpool: coordinator tick failed")
        self._heartbeats.close()

    def _tick(self) -> None:
        now = time.monotonic()
        actions: list = []
        with self._lock:
            if self.closed:
                return
            for w in list(self._workers.values()):
                if w.state == "failed" and w.retry_at is not None and now >= w.retry_at:
                    w.state, w.retry_at = "starting", None
                    actions.append(("start", w))
                if w.state in ("idle", "leased") and w.death is None:
                    reason = w.kernel.poll() or self._heartbeats.lost(w.id, now)
                    if reason:
                        actions += self._died(w, reason)
                if w.lease is not None and w.lease.holder is not None:
                    if not w.lease.holder.is_alive():
                        w.lease.dirty = "its lease holder thread ended without releasing it"
                        actions.append(("release", w.lease))
                if w.state == "idle" and self.settings.idle_timeout:
                    if now - w.last_used > self.settings.idle_timeout:
                        actions += self._cull(w)
            for waiter in list(self._waiters):
                info = self.sessions.get(waiter.session)
                if info is not None and info.worker_id is not None:
                    continue  # queued behind its own session's work: not starving
                if waiter.deadline is not None and now >= waiter.deadline:
                    timeout = waiter.deadline - waiter.since
                    error = LeaseTimeout(self._explain_wait(waiter, timeout))
                    actions += self._settle(waiter, error)
        self._run(actions)

    def _died(self, w: Worker, reason: str) -> list:
        w.death = reason
        self.counters["deaths"] += 1
        self._log("died", w, f"worker {w.id} {reason}")
        if w.state == "leased":
            return []  # the holder gets WorkerDied and releases; release replaces
        return self._replace(w, f"worker {w.id} {reason}; the session's state was lost")

    def _cull(self, w: Worker) -> list:
        info = self.sessions.bound_to(w.id)
        if _attached(w) or (info is None and self._live_count() <= self.settings.min_size):
            return []
        self._log("recycled", w, f"idle for {self.settings.idle_timeout:g} s")
        reason = f"worker {w.id} was recycled after {self.settings.idle_timeout:g} s idle"
        return self._replace(w, reason, retired=True)

    # ------------------------------------------------------------------
    # reporting and shutdown
    # ------------------------------------------------------------------

    def _log(self, kind: str, w: Worker, message: str) -> None:
        self.events.append(
            {"time": time.time(), "kind": kind, "worker": w.id, "message": message}
        )

    def _check_open(self) -> None:
        if self.closed:
            raise PoolClosed("the pool was shut down; create a new nbpool.Pool to run more code")

    def _explain_wait(self, waiter: Waiter, timeout: float | None) -> str:
        info = self.sessions.get(waiter.session)
        within = "" if timeout is None else f" within {timeout:g} s"  # None: failed at once
        head = f"no worker for session {waiter.session!r}{within}: "
        if info is not None and info.worker_id is not None:
            ahead = sum(1 for x in self._waiters if x.session == waiter.session)
            return head + (
                f"its worker {info.worker_id} is still busy with an earlier execution of "
                f"this session ({ahead} more queued); wait longer (lease timeout) or "
                "interrupt it"
            )
        bound = [i.name for i in self.sessions.all() if i.worker_id is not None]
        live = self._live_count()
        return head + (
            f"all {live} workers busy or bound (sessions {', '.join(bound) or 'none'}); "
            f"{sum(1 for x in self._waiters if x is not waiter)} other request(s) waiting; "
            f"max_size={self.settings.max_size} reached - end a session (pool.end_session(NAME) "
            "or %pool end NAME) or raise max_size"
            + ("" if self.settings.evict_idle_sessions else ", or set evict_idle_sessions=True")
        )

    def snapshot(self) -> dict:
        """A consistent copy of the state, for :mod:`nbpool.status`."""
        with self._lock:
            now = time.monotonic()
            workers = []
            for w in self._workers.values():
                state = w.state
                if w.death is not None:
                    state = "dead"
                elif state == "leased" and w.busy:
                    state = "busy"
                elif state == "starting" and w.replaces:
                    state = "restarting"
                info = self.sessions.bound_to(w.id)
                workers.append(
                    {
                        "id": w.id,
                        "state": state,
                        "kernel": w.kernel_name,
                        "session": info.name if info else None,
                        "pid": getattr(w.kernel, "pid", None),
                        # counted at release; a held lease's runs count at once
                        "executions": w.executions + (w.lease.executions if w.lease else 0),
                        "uptime": round(now - w.started_at, 1) if w.kernel is not None else 0.0,
                        "attached": _attached(w),
                        "encrypted": bool(getattr(w.kernel, "encrypted", False)),
                        "last_error": str(w.last_error) if w.last_error else None,
                    }
                )
            queued = collections.Counter(x.session for x in self._waiters)
            sessions = [
                {
                    "name": i.name,
                    "worker": i.worker_id,
                    "kernel": i.kernel_name,
                    "generation": i.generation,
                    "queued": queued.get(i.name, 0),
                }
                for i in self.sessions.all()
            ]
            return {
                "closed": self.closed,
                "workers": workers,
                "sessions": sessions,
                "waiting": len(self._waiters),
                "counters": {**self.counters, "executions": self.counters["executions"] + sum(
                    w.lease.executions for w in self._workers.values() if w.lease is not None
                )},
                "events": list(self.events)[-10:],
            }

    def close(self, wait: float = 2.0) -> None:
        """Fail waiters, stop every kernel (concurrently), end the thread."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            settled = []
            for waiter in list(self._waiters):
                error = PoolClosed("the pool was shut down while this request waited")
                settled += self._settle(waiter, error)
            for w in self._workers.values():
                if w.lease is not None:
                    w.death = w.death or "was stopped because the pool was shut down"
            self._changed.notify_all()
            deadline = time.monotonic() + wait
            while any(w.lease is not None for w in self._workers.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            doomed = [w for w in self._workers.values() if w.state != "stopping"]
            for w in doomed:
                w.state = "stopping"
        self._run(settled)
        self._stop.set()
        self._thread.join()
        # Plain threads, not the executor: at interpreter exit (atexit) Python's
        # executors already refuse new work.
        stoppers = [threading.Thread(target=self._do_stop, args=(w,)) for w in doomed]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        self._io.shutdown(wait=True)


def _unbound(info) -> bool:
    """A session with no worker (new, or its worker was lost)."""
    return info is None or info.worker_id is None


def _attached(w: Worker) -> bool:
    """An adopted kernel: never recycled, culled, evicted or restarted by nbpool."""
    return bool(getattr(w.kernel, "attached", False))
