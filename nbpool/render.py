"""Rendering a status snapshot as text and HTML: one place for every view.

``%pool status`` and ``repr(pool.status())`` print :func:`text`; the HTML
repr of a status is :func:`html_table`; the live widget
(:mod:`nbpool.notebook.widget`) composes :func:`summary_html`, :func:`workers_html`,
:func:`sessions_html` and :func:`events_html`. Each takes a
:class:`~nbpool.status.PoolStatus` (schema ``nbpool.status/1``). Columns
have one name in every view (a session's ``generation`` shows as
"resets": how many times its state was lost).
"""

from __future__ import annotations

import html
import time

#: Colours of worker states, shared by every HTML view (and labextension/src/types.ts).
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

WORKER_COLUMNS = ("worker", "state", "session", "started", "pid", "runs", "uptime", "memory")
SESSION_COLUMNS = ("session", "worker", "kernel", "resets", "queued")

#: Event kinds worth showing in the widget (routine starts are left out).
NOTABLE = ("died", "restarted", "start failed", "timed out", "recycled", "evicted", "session ended")


def worker_row(w: dict) -> tuple[str, ...]:
    """One worker's cells, as text (the columns of :data:`WORKER_COLUMNS`)."""
    return (
        w["id"] + (" (attached)" if w["attached"] else ""),
        w["state"],
        w["session"] or "-",
        w.get("started") or "-",
        str(w["pid"] or "-"),
        str(w["executions"]),
        duration(w["uptime"]),
        mib(w["memory"]),
    )


def session_row(s: dict) -> tuple[str, ...]:
    """One session's cells, as text (the columns of :data:`SESSION_COLUMNS`)."""
    name = s["name"] + (" (kept)" if s.get("kept") else "")
    return (name, s["worker"] or "-", s["kernel"], str(s["generation"]), str(s["queued"]))


def counters_text(status) -> str:
    c = status["counters"]
    return (
        f"executions {c['executions']}, failures {c['failures']}, restarts {c['restarts']}, "
        f"start failures {c['start_failures']}, deaths {c['deaths']}, timeouts {c['timeouts']}"
    )


# -- text ---------------------------------------------------------------------


def text(status) -> str:
    """Workers, counters and the last events as aligned text (``%pool status``)."""
    lines = [f"nbpool: {status.summary()}" + (" (closed)" if status["closed"] else "")]
    lines += align([WORKER_COLUMNS, *(worker_row(w) for w in status["workers"])])
    lines += [f"  {w['id']}: {w['pending_reason']}" for w in status["workers"] if _pending(w)]
    lines.append(counters_text(status))
    for event in status["events"][-3:]:
        lines.append(f"  {_clock(event['time'])} {event['kind']}: {event['message']}")
    return "\n".join(lines)


def sessions_text(status) -> str:
    """Sessions as aligned text (``%pool sessions``)."""
    if not status["sessions"]:
        return "no sessions yet"
    return "\n".join(align([SESSION_COLUMNS, *(session_row(s) for s in status["sessions"])]))


# -- HTML ---------------------------------------------------------------------


def html_table(status) -> str:
    """The HTML repr of a status: the summary line and the workers."""
    return (
        f"<div class='nbpool-status'><b>nbpool</b>: {html.escape(status.summary())}"
        f"{workers_html(status)}</div>"
    )


def summary_html(status) -> str:
    """The headline and counters."""
    closed = " (shut down)" if status["closed"] else ""
    return (
        f"<div class='nbpool-summary'><b>nbpool</b> {html.escape(status.summary())}{closed}"
        f" &middot; kernel {html.escape(status['kernel_name'])}, size {status['size']}"
        f" (max {status['max_size']})<br><small>"
        f"{counters_text(status).replace(', ', ' &middot; ')}</small></div>"
    )


def workers_html(status) -> str:
    """One table row per worker (rows carry ``data-worker``/``data-state``)."""
    if not status["workers"]:
        return "<div class='nbpool-workers'><i>no workers yet</i></div>"
    rows = []
    for w in status["workers"]:
        cells = [html.escape(cell) for cell in worker_row(w)]
        state = w["state"]
        note = w["last_error"] or _pending(w)
        title = f" title='{html.escape(note)}'" if note else ""
        cells[1] = (
            f"<span class='nbpool-state' style='background:{STATE_COLOURS.get(state, '#000')}'"
            f"{title}>{cells[1]}</span>"
        )
        rows.append(
            f"<tr class='nbpool-worker' data-worker='{html.escape(w['id'])}' "
            f"data-state='{state}'>{_cells(cells)}</tr>"
        )
    return _table("nbpool-workers", WORKER_COLUMNS, rows)


def sessions_html(status) -> str:
    """The sessions with their queues, and the number of queued requests."""
    waiting = f"{status['waiting']} request(s) queued"
    if not status["sessions"]:
        return f"<div class='nbpool-sessions'><small>no sessions &middot; {waiting}</small></div>"
    rows = [
        f"<tr>{_cells(html.escape(cell) for cell in session_row(s))}</tr>"
        for s in status["sessions"]
    ]
    return _table("nbpool-sessions", SESSION_COLUMNS, rows) + f"<small>{waiting}</small>"


def events_html(status, shown: int = 5) -> str:
    """The last ``shown`` notable events (deaths, restarts, failed starts, timeouts)."""
    events = [e for e in status["events"] if e["kind"] in NOTABLE][-shown:]
    if not events:
        return ""
    items = "".join(
        f"<li>{_clock(e['time'])} <b>{html.escape(e['kind'])}</b> {html.escape(e['worker'])}: "
        f"{html.escape(e['message'])}</li>"
        for e in events
    )
    return f"<ul class='nbpool-events'>{items}</ul>"


# -- helpers ------------------------------------------------------------------


def _pending(w: dict) -> str | None:
    """A starting worker's pending reason (older snapshots have none)."""
    return w.get("pending_reason")


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def _cells(cells) -> str:
    return "".join(f"<td>{cell}</td>" for cell in cells)


def _table(css_class: str, columns: tuple[str, ...], rows: list[str]) -> str:
    head = "".join(f"<th>{name}</th>" for name in columns)
    return (
        f"<table class='{css_class}'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def align(rows: list[tuple]) -> list[str]:
    """Rows of text cells as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]
