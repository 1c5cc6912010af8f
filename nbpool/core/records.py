"""The coordinator's records: workers, waiters, settings, and the actions it returns.

Plain data, written only under the coordinator's lock, by its
:class:`~nbpool.core.policy.Policy` (see :mod:`nbpool.core.coordinator` for
the lifecycle they follow). The actions are what the policy decides under
the lock; the coordinator settles waiters (turning a :class:`Grant` into a
:class:`~nbpool.core.lease.Lease`) and runs the rest after releasing it.

Nothing here knows the coordinator or the lease class: a worker's lease is
seen through :class:`Held`, what the bookkeeping reads of one.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Protocol, Union

from ..errors import WorkerStartFailed
from ..interfaces import WorkerKernel
from .sessions import SessionInfo

#: Internal states of a worker that count as part of the pool.
LIVE = ("starting", "idle", "leased")


@dataclass(eq=False)
class Worker:
    """Bookkeeping for one kernel incarnation (a replacement is a new Worker).

    ``state`` is the internal state (``starting | idle | leased | failed |
    stopping``); :meth:`public_state` is what ``status()`` shows.
    """

    id: str
    kernel_name: str
    state: str = "starting"
    kernel: WorkerKernel | None = None  # set once started (or attached, adopted)
    lease: Held | None = None
    replaces: str | None = None  # the worker this one replaces
    retire: str | None = None  # set: replace instead of reuse at release (why)
    death: str | None = None  # set once the kernel is known dead (why)
    executions: int = 0  # counted at release; a held lease counts its own
    failures: int = 0
    retry_at: float | None = None
    last_error: WorkerStartFailed | None = None
    started_at: float = 0.0
    last_used: float = field(default_factory=time.monotonic)

    @property
    def attached(self) -> bool:
        """An attached kernel: never restarted, recycled, evicted or repurposed by nbpool."""
        return self.kernel is not None and self.kernel.attached

    @property
    def counts(self) -> bool:
        """Whether it counts against ``max_size`` (nbpool's own, not stopping)."""
        return (self.state in LIVE or self.state == "failed") and not self.attached

    def public_state(self) -> str:
        """The state ``status()`` shows (the table in :mod:`nbpool.core.coordinator`)."""
        if self.death is not None:
            return "dead"
        if self.state == "leased" and self.lease is not None and self.lease.busy:
            return "busy"
        if self.state == "starting" and self.replaces:
            return "restarting"
        return self.state


class Held(Protocol):
    """What the bookkeeping reads and writes of a granted lease.

    :class:`~nbpool.core.lease.Lease` is the one implementation; the holder
    thread alone writes ``busy`` and ``executions``, the policy ``dirty``
    (a holder thread that died) under the lock.
    """

    worker: Worker
    session: str | None
    executions: int
    busy: bool
    dirty: str | None
    holder: threading.Thread | None


@dataclass(eq=False)
class Waiter:
    """A client waiting for a lease, in the coordinator's FIFO.

    A *task* waiter (``task=True``, ``session`` None) is one of a map's
    requests: it takes any free worker of its kernelspec that holds no
    session, and binds none.
    """

    session: str | None
    kernel_name: str
    event: threading.Event = field(default_factory=threading.Event)
    lease: Held | None = None
    error: BaseException | None = None
    since: float = field(default_factory=time.monotonic)
    #: Background requests: called (off the lock) once the waiter is settled.
    on_settled: Callable[[Waiter], None] | None = None
    #: Background requests: the coordinator thread enforces their lease timeout.
    deadline: float | None = None
    task: bool = False


@dataclass(frozen=True)
class Settings:
    """The pool settings the coordinator and its policy act on; frozen.

    Derived once from the :class:`~nbpool.Pool` traits of the same names
    (:meth:`of`, after the pool validated them) and never changed in place:
    a resize hands the coordinator a new one (``dataclasses.replace``), so
    whoever holds one holds a consistent set. How kernels are launched is the
    launcher's own frozen :class:`~nbpool.kernels.kernel.LaunchSettings`,
    built from the same traits at the same moment. A new setting is a trait
    plus a field here (or there).
    """

    size: int = 1
    min_size: int = 1
    max_size: int = 1
    size_limit: int = 1024
    kernel_name: str = "python3"
    start_timeout: float = 60.0
    interrupt_grace: float = 5.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 3.0
    max_executions: int = 0
    idle_timeout: float = 0.0
    evict_idle_sessions: bool = False

    @classmethod
    def of(cls, source, **resolved) -> Settings:
        """The settings of ``source`` (a Pool), with ``resolved`` values taking precedence."""
        values = {f.name: getattr(source, f.name) for f in fields(cls) if f.name not in resolved}
        return cls(**values, **resolved)


@dataclass
class Snapshot:
    """A consistent copy of the pool's records (:mod:`nbpool.status` renders it)."""

    closed: bool
    workers: list[tuple[Worker, SessionInfo | None]]  # copies, with their session
    sessions: list[SessionInfo]
    queued: collections.Counter = field(default_factory=collections.Counter)
    counters: dict = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)


# -- actions: decided under the lock; waiters settled under it, the rest run outside it --


@dataclass(frozen=True)
class Grant:
    """Lease ``worker`` to ``waiter``: the coordinator makes the :class:`~nbpool.core.lease.Lease`.

    ``session`` is None for a task lease (it binds no session);
    ``generation`` and ``session_reset`` are the session's, for the lease to report.
    """

    waiter: Waiter
    worker: Worker
    session: str | None
    generation: int
    session_reset: str | None


@dataclass(frozen=True)
class Refuse:
    """Settle ``waiter`` with ``error`` (it gets no lease)."""

    waiter: Waiter
    error: BaseException


@dataclass(frozen=True)
class Start:
    """Start ``worker``'s kernel on an I/O thread."""

    worker: Worker


@dataclass(frozen=True)
class Stop:
    """Stop ``worker``'s kernel on an I/O thread."""

    worker: Worker


@dataclass(frozen=True)
class Release:
    """Release ``lease`` (its holder thread died without doing so)."""

    lease: Held


@dataclass(frozen=True)
class Settled:
    """Call a background waiter's ``on_settled`` (made from a settled Grant or Refuse)."""

    waiter: Waiter


Action = Union[Grant, Refuse, Start, Stop, Release, Settled]
