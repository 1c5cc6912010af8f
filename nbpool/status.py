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
"""

from __future__ import annotations

import time

from . import render
from .kernels.processes import memory

SCHEMA = "nbpool.status/1"


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


def _unique(pid: int | None) -> int | None:
    """A local worker's unique memory (USS: what ending it would free), or None."""
    info = memory(pid) if pid else None
    return None if info is None else info.uss
