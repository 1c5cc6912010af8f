"""The coordinator's records: workers, waiters, settings, and the actions it returns.

Plain data, written only by the coordinator under its lock (see
:mod:`nbpool.core.coordinator` for the lifecycle they follow). The actions are
what the coordinator decides under the lock and runs after releasing it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Callable, Union

if TYPE_CHECKING:
    from ..errors import WorkerStartFailed
    from .lease import Lease

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
    kernel: object = None
    lease: Lease | None = None
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
        return bool(getattr(self.kernel, "attached", False))

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
    lease: Lease | None = None
    error: BaseException | None = None
    since: float = field(default_factory=time.monotonic)
    #: Background requests: called (off the lock) once the waiter is settled.
    on_settled: Callable[[Waiter], None] | None = None
    #: Background requests: the coordinator thread enforces their lease timeout.
    deadline: float | None = None
    task: bool = False


@dataclass
class Settings:
    """The pool settings the coordinator acts on.

    Field names are the :class:`~nbpool.Pool` trait names: :meth:`of` copies
    them, so a new setting is a trait plus a field here.
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


# -- actions: decided under the lock, run outside it -------------------------


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

    lease: Lease


@dataclass(frozen=True)
class Settled:
    """Call a background waiter's ``on_settled``."""

    waiter: Waiter


Action = Union[Start, Stop, Release, Settled]
