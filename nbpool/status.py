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
          "memory": 54001664 | null,   # resident bytes, local workers only
          "attached": false, "encrypted": true,
          "last_error": null | "kernel 'x' exited with code 1 while starting; ...",
          "pending_reason": null | "Slurm job 42 is pending (Resources)"
                                       # why a starting worker is not running yet
      }],
      "sessions": [{"name": "etl", "worker": "w1" | null, "kernel": "python3",
                    "generation": 0, "queued": 0}],
      "waiting": 0,                    # lease requests queued
      "counters": {"executions": 0, "failures": 0, "restarts": 0,
                   "start_failures": 0, "deaths": 0, "timeouts": 0},
      "events": [{"time": ..., "kind": "died", "worker": "w2", "message": "..."}]
    }
"""

from __future__ import annotations

import html
import os
import time

SCHEMA = "nbpool.status/1"

#: Colours of worker states, shared by the HTML repr and the widget.
STATE_COLOURS = {
    "starting": "#9e9e9e",
    "restarting": "#ff9800",
    "idle": "#4caf50",
    "leased": "#2196f3",
    "busy": "#3f51b5",
    "failed": "#f44336",
    "dead": "#b71c1c",
    "stopping": "#757575",
}

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a local process, or None (not local, gone, no /proc)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class PoolStatus(dict):
    """A status snapshot (a plain dict of the schema above) that prints well."""

    @classmethod
    def from_snapshot(cls, snap: dict) -> "PoolStatus":
        status = cls(schema=SCHEMA, time=time.time(), **snap)
        for worker in status["workers"]:
            worker["memory"] = None if worker["attached"] else rss_bytes(worker["pid"])
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
        """Workers and sessions as aligned text (``%pool status``)."""
        rows = [("worker", "state", "session", "pid", "runs", "uptime", "memory")]
        for w in self["workers"]:
            rows.append(
                (
                    w["id"] + (" (attached)" if w["attached"] else ""),
                    w["state"],
                    w["session"] or "-",
                    str(w["pid"] or "-"),
                    str(w["executions"]),
                    f"{w['uptime']:.0f}s",
                    _mib(w["memory"]),
                )
            )
        lines = [f"nbpool: {self.summary()}" + (" (closed)" if self["closed"] else "")]
        lines += _align(rows)
        lines += [
            f"  {w['id']}: {w['pending_reason']}" for w in self["workers"] if w.get("pending_reason")
        ]
        c = self["counters"]
        lines.append(
            f"executions {c['executions']}, failures {c['failures']}, restarts {c['restarts']}, "
            f"start failures {c['start_failures']}, deaths {c['deaths']}, timeouts {c['timeouts']}"
        )
        for event in self["events"][-3:]:
            lines.append(f"  {time.strftime('%H:%M:%S', time.localtime(event['time']))} "
                         f"{event['kind']}: {event['message']}")
        return "\n".join(lines)

    def sessions_table(self) -> str:
        """Sessions as aligned text (``%pool sessions``)."""
        rows = [("session", "worker", "kernel", "generation", "queued")]
        for s in self["sessions"]:
            rows.append((s["name"], s["worker"] or "-", s["kernel"], str(s["generation"]), str(s["queued"])))
        return "\n".join(_align(rows)) if len(rows) > 1 else "no sessions yet"

    def __repr__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("worker", "state", "session", "pid", "runs", "memory"))
        body = ""
        for w in self["workers"]:
            colour = STATE_COLOURS.get(w["state"], "#000")
            body += (
                f"<tr><td>{html.escape(w['id'])}</td>"
                f"<td style='color:{colour};font-weight:bold'>{w['state']}</td>"
                f"<td>{html.escape(w['session'] or '-')}</td><td>{w['pid'] or '-'}</td>"
                f"<td>{w['executions']}</td><td>{_mib(w['memory'])}</td></tr>"
            )
        return (
            f"<div class='nbpool-status'><b>nbpool</b>: {html.escape(self.summary())}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def _align(rows: list[tuple]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
