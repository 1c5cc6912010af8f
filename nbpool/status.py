"""The pool status snapshot: one schema for ``status()``, the widget and JupyterLab.

Schema ``nbpool.status/1`` (a JSON-safe dict; no keys, tokens or paths)::

    {
      "schema": "nbpool.status/1",
      "time": 1764241200.0,            # epoch seconds of the snapshot
      "closed": false,
      "kernel_name": "python3", "size": 4, "min_size": 4, "max_size": 4,
      "workers": [{
          "id": "w1", "kernel": "python3",
          "state": "starting|restarting|idle|leased|busy|failed|dead|stopping",
          "session": "etl" | null, "pid": 1234 | null, "executions": 12,
          "uptime": 83.2,              # seconds since ready
          "memory": 54001664 | null,   # unique bytes (USS), local workers only
          "attached": false, "encrypted": true,
          "started": "fork" | "spawn" | null,   # how its process began (null: attached)
          "last_error": null | "kernel 'x' exited with code 1 while starting; ...",
          "pending_reason": null | "Slurm job 42 is pending (Resources)"
                                       # why a starting worker is not running yet
      }],
      "sessions": [{"name": "etl", "worker": "w1" | null, "kernel": "python3",
                    "generation": 0, "queued": 0,
                    "kept": false}],   # outlives this process (keep_sessions)
      "keep_sessions": false,
      "waiting": 0,                    # lease requests queued
      "counters": {"executions": 0, "failures": 0, "restarts": 0,
                   "start_failures": 0, "deaths": 0, "timeouts": 0},
      "events": [{"time": ..., "kind": "died", "worker": "w2", "message": "..."}],
      "summary": "1/4 busy, 0 queued"   # the one-line summary every view shows
    }

``Pool.status()`` shows the present. The JupyterLab views (:mod:`nbpool.notebook.labcomm`)
sample it at most every 0.25 s, and a dead worker may be stopped and replaced
(a forked one in ~0.2 s) between two samples: :class:`DeathsShown` keeps each
death in the snapshots they are sent for :data:`DEATH_SHOWN` seconds.
"""

from __future__ import annotations

import time

from . import render
from .kernels.processes import memory

SCHEMA = "nbpool.status/1"
#: Seconds a worker's death stays in the snapshots the live views are sent.
DEATH_SHOWN = 5.0


class PoolStatus(dict):
    """A status snapshot (a plain dict of the schema above) that prints well."""

    @classmethod
    def from_snapshot(
        cls, snap, pending_reason=None, *, kept=frozenset(), **settings
    ) -> "PoolStatus":
        """Render a :class:`~nbpool.core.records.Snapshot` (plus the pool's ``settings``).

        ``pending_reason(worker_id)``, if given, says why a starting worker is
        not running yet (its provisioner's word: a Slurm job's queue reason);
        ``kept``: names of the sessions kept beyond this process.
        """
        now = time.monotonic()
        workers = []
        for w, info in snap.workers:
            lease, kernel = w.lease, w.kernel  # no kernel yet while it starts
            pid = kernel.pid if kernel is not None else None
            workers.append(
                {
                    "id": w.id,
                    "state": w.public_state(),
                    "kernel": w.kernel_name,
                    "session": info.name if info else None,
                    "pid": pid,
                    "executions": w.executions + (lease.executions if lease else 0),
                    "uptime": round(now - w.started_at, 1) if kernel is not None else 0.0,
                    "memory": None if w.attached else _unique(pid),
                    "attached": w.attached,
                    "started": kernel.started if kernel is not None else None,
                    "encrypted": kernel is not None and kernel.encrypted,
                    "last_error": str(w.last_error) if w.last_error else None,
                    "pending_reason": (
                        pending_reason(w.id)
                        if pending_reason and w.public_state() in ("starting", "restarting")
                        else None
                    ),
                }
            )
        sessions = [
            {
                "name": i.name,
                "worker": i.worker_id,
                "kernel": i.kernel_name,
                "generation": i.generation,
                "queued": snap.queued.get(i.name, 0),
                "kept": i.name in kept,
            }
            for i in snap.sessions
        ]
        status = cls(
            schema=SCHEMA,
            time=time.time(),
            closed=snap.closed,
            **settings,
            workers=workers,
            sessions=sessions,
            waiting=sum(snap.queued.values()),
            counters=snap.counters,
            events=snap.events,
        )
        status["summary"] = status.summary()
        return status

    def summary(self) -> str:
        """``"3/4 busy, 2 queued"`` style one-liner."""
        workers = self["workers"]
        live = [w for w in workers if w["state"] not in ("stopping", "dead")]
        busy = sum(1 for w in live if w["state"] in ("busy", "leased"))
        text = f"{busy}/{len(live)} busy, {self['waiting']} queued"
        troubled = sum(1 for w in workers if w["state"] in ("failed", "dead", "restarting"))
        return text + (f", {troubled} failing/restarting" if troubled else "")

    def table(self) -> str:
        """Workers, counters and recent events as aligned text (``%pool status``)."""
        return render.text(self)

    def sessions_table(self) -> str:
        """Sessions as aligned text (``%pool sessions``)."""
        return render.sessions_text(self)

    def __repr__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        return render.html_table(self)


class DeathsShown:
    """Keeps each worker's death in the snapshots a sampling view is sent.

    Fed every snapshot such a view gets, in order, it puts each worker that
    died less than ``shown`` seconds ago (its ``died`` event) and is gone
    from the snapshot back into ``workers``: as it last looked, with state
    ``"dead"`` and its death as ``last_error``; the summary counts it. So
    the status item turns to its warning style and the panel lists the dead
    worker even if it was replaced before the next sample, and both clear
    ``shown`` seconds after the death. One per view; not thread-safe.
    """

    def __init__(self, shown: float = DEATH_SHOWN) -> None:
        self.shown = shown
        self._seen: dict[str, dict] = {}  # worker id -> its row in the previous snapshot
        self._dead: dict[str, tuple[dict, float]] = {}  # worker id -> (row, shown until)

    def show(self, status: dict | None) -> dict | None:
        """``status`` with the recent deaths kept (None: no pool, passed on)."""
        if status is None or status["closed"]:
            self._seen, self._dead = {}, {}
            return status
        now = status["time"]
        rows = {w["id"]: w for w in status["workers"]}
        for event in status["events"]:
            until = event["time"] + self.shown
            if event["kind"] == "died" and until > now and event["worker"] not in self._dead:
                wid = event["worker"]
                last = rows.get(wid) or self._seen.get(wid) or _unseen(wid, status)
                row = {**last, "state": "dead", "memory": None, "last_error": event["message"]}
                self._dead[wid] = (row, until)
        self._dead = {wid: entry for wid, entry in self._dead.items() if entry[1] > now}
        self._seen = rows
        kept = [row for wid, (row, _) in self._dead.items() if wid not in rows]
        if not kept:
            return status
        shown = PoolStatus({**status, "workers": [*status["workers"], *kept]})
        shown["summary"] = shown.summary()
        return shown


def _unseen(worker_id: str, status: dict) -> dict:
    """The row of a worker that started and died between two snapshots."""
    return {
        "id": worker_id,
        "kernel": status["kernel_name"],
        "session": None,
        "pid": None,
        "executions": 0,
        "uptime": 0.0,
        "attached": False,
        "encrypted": False,
        "started": None,
        "pending_reason": None,
    }


def _unique(pid: int | None) -> int | None:
    """A local worker's unique memory (USS: what ending it would free), or None."""
    info = memory(pid) if pid else None
    return None if info is None else info.uss
