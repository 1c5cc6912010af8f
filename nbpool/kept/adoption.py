"""A pool's side of kept sessions: re-adopt at start, record while attached, detach.

With ``keep_sessions=True`` a :class:`~nbpool.Pool` owns a :class:`Keeping`,
and its kept-session methods (``detach``, ``replay``, ``readopted``,
``waiting_output``) delegate here. Who keeps what:

- the **pool** (this module) holds the pool lock of its name from
  ``start()`` until ``shutdown()``/``detach()``, re-adopts the kept
  sessions it finds, and writes the record of every session bound to a
  local worker as soon as the binding exists (the lease holder does it,
  before the first execution: a crash right after still finds it); it tells
  its reaper to leave those workers alone;
- the **reaper** (:mod:`nbpool.kernels._reaper`) still stops every other worker
  when the pool's process dies;
- the **keeper** (:mod:`nbpool.kept._keeper`, started by ``start()``, so its
  start-up overlaps the workers') journals the kept sessions' outputs while
  no pool is attached, and stops them ``keep_for`` seconds after the last
  pool left.

No window loses output: a lease holder whose session's binding is new
waits, after writing its record, until the keeper hears that worker (at most
:data:`FOLLOW_WAIT` seconds) before anything runs there. From then on a
crash of this process, even SIGKILL, loses none of the session's output.

The files and the lock are in :mod:`nbpool.kept.store`.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from ..errors import WorkerStartFailed
from .kernel import KeptKernel
from .store import KeptPool, alive, expired, process_start

#: Longest a detach, or a session's first lease, waits for the keeper to hear its workers.
FOLLOW_WAIT = 10.0

if TYPE_CHECKING:
    from ..core.coordinator import Coordinator
    from ..core.lease import Lease


class Keeping:
    """Kept sessions of one pool (see the module docstring).

    Parameters
    ----------
    name : str
        The pool's name: kept sessions are found by it.
    keep_for : float
        Seconds a kept session may sit unattached before it is stopped.
    coordinator : Coordinator
    """

    def __init__(self, name: str, keep_for: float, coordinator: Coordinator) -> None:
        self.store = KeptPool(name)
        self.keep_for = keep_for
        self._coordinator = coordinator
        self._io = threading.Lock()  # one writer of the records at a time
        self._recorded: dict[str, str] = {}  # session -> worker id in the records
        self._attached_at = 0.0  # when this pool took the lock (the keeper's cutoff)
        #: What came back at start(): dicts of session, intact, waiting, reason.
        self.readopted: list[dict] = []

    # -- start ---------------------------------------------------------------

    def adopt(self, timeout: float, context) -> int:
        """Take the pool lock and re-adopt the kept sessions; how many workers came back.

        ``timeout`` is how long each kept kernel has to answer; ``context``
        (the launcher's ZMQ context) makes the sockets of re-adopted kernels.

        Raises
        ------
        PoolInUse
            Another live pool holds these sessions.
        """
        store = self.store
        store.lock()
        self._attached_at = time.time()
        state = store.load()
        if state is not None and expired(state, time.time()):
            store.stop_workers(state)  # the keeper died before it could
            store.remove_files()
            state = None
        store.ensure_keeper()  # now: its start-up must not be a window after the first lease
        entries = []
        for session, record in (state or {}).get("sessions", {}).items():
            kernel, cause = None, None
            if alive(record):
                kernel = KeptKernel("kept", record, context)
                try:
                    kernel.wait_ready(timeout)
                except WorkerStartFailed as exc:
                    kernel.shutdown()
                    kernel = None
                    cause = f"its kept worker (pid {record['pid']}) did not answer: {exc}"
            else:
                cause = f"its kept worker (pid {record['pid']}) ended while no pool was attached"
            entries.append((session, record["kernel_name"], record["generation"], kernel, cause))
            count, size = store.pending(session)
            self.readopted.append(
                {
                    "session": session,
                    "intact": kernel is not None,
                    "waiting": count,
                    "bytes": size,
                    "reason": cause,
                }
            )
        adopted = self._coordinator.adopt(entries)
        self.record()
        return adopted

    # -- while attached ----------------------------------------------------

    def on_lease(self, lease: Lease) -> None:
        """A lease was granted: if its binding is new, record its session and wait
        until the keeper hears its worker (client thread, before anything runs)."""
        if self._recorded.get(lease.session) != lease.worker_id:
            self.record()
            if lease.session in self._recorded:
                self.followed(FOLLOW_WAIT, only=lease.session)

    def record(self, detached_at: float | None = None) -> None:
        """Write the records of the sessions bound to local workers, now."""
        with self._io:  # the snapshot too: a later snapshot is never overwritten by an older one
            sessions, kernels = {}, []
            for w, info in self._coordinator.snapshot().workers:
                if info is None or w.death is not None or w.state not in ("idle", "leased"):
                    continue
                record = w.kernel.keep_record()
                if record is None:
                    continue  # attached, or remote: not nbpool's to keep
                start = process_start(record["pid"])
                sessions[info.name] = {**record, "generation": info.generation, "pid_start": start}
                kernels.append((info.name, w))
            self.store.save(
                {
                    "keep_for": self.keep_for,
                    "detached_at": detached_at,
                    "attached_at": self._attached_at,
                    "owner": os.getpid(),
                    "sessions": sessions,
                }
            )
            for _, w in kernels:
                w.kernel.keep()
            self._recorded = {name: w.id for name, w in kernels}
        if sessions:
            self.store.ensure_keeper()

    @property
    def kept(self) -> frozenset[str]:
        """Names of the sessions whose records exist now."""
        return frozenset(self._recorded)

    def waiting(self, session: str) -> tuple[int, int]:
        """(outputs, bytes) journaled for ``session`` while no pool was attached."""
        return self.store.pending(session)

    def replay(self, session: str) -> list[dict]:
        """The outputs journaled for ``session``, taken out of the journal."""
        return self.store.take(session)

    # -- the end -----------------------------------------------------------

    def followed(self, timeout: float, only: str | None = None) -> bool:
        """Wait until the keeper hears every recorded session, or session ``only``
        (False: not in time)."""
        deadline = time.monotonic() + timeout
        while True:
            following = self.store.following()
            state = self.store.load() or {}
            wanted = {
                name: r["pid"]
                for name, r in state.get("sessions", {}).items()
                if only is None or name == only
            }
            if all(following.get(name) == pid for name, pid in wanted.items()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def detach(self, close) -> None:
        """Detach: ``close()`` the coordinator with ``keep``, record, let go, unlock.

        The keeper must hear every kept session before their lease holders
        let go (up to :data:`FOLLOW_WAIT` seconds): then what a ``--bg`` cell
        prints from the moment they let go on is journaled.
        """
        if self.store.locked:
            self.record()
            self.followed(FOLLOW_WAIT)
        since = time.time()
        kept = close()
        if not self.store.locked:
            return
        self.record(detached_at=since)
        if not self._recorded:
            self.store.remove_files()  # nothing kept: nothing to find later
        for w in kept:
            if w.lease is None:
                w.kernel.let_go()
            else:  # a holder that never let go still owns the sockets
                w.kernel.keep()
        self.store.unlock()

    def shutdown(self) -> None:
        """Every worker was stopped: remove the records and journals, unlock."""
        if self.store.locked:
            self.store.remove_files()
            self.store.unlock()
