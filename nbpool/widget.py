"""The live pool-status widget (``%pool widget``, ``pool.widget()``).

Built from ipywidgets' core widgets only, so it renders wherever ipywidgets
does (JupyterLab, Notebook 7, VS Code). It shows one
:meth:`Pool.status() <nbpool.pool.Pool.status>` snapshot (schema
``nbpool.status/1``, see :mod:`nbpool.status`) in four parts, each an
``HTML`` widget: a summary with the counters, the worker table (one row per
worker: state in colour, session, pid, executions, uptime, memory), the
sessions with their queues, and the last few notable events.

Live updates. A follower thread takes a snapshot every ``interval``
seconds (0.25 by default: at most four updates a second) and applies it. A
part whose rendering did not change is not sent (traitlets only notify on a
change), so an idle pool costs no messages. ipykernel 7 routes a thread's
comm messages by context variables: the follower runs in a copy of the
context of the cell that created the widget, so its updates belong to that
cell, not to whichever cell runs later. It stops when the widget is closed
or the pool is shut down.

The text/plain fallback (what a frontend without widget support, or a saved
notebook without widget state, shows) is the status table.
"""

from __future__ import annotations

import contextvars
import html
import threading
import time

import ipywidgets

from .status import STATE_COLOURS, PoolStatus

#: Event kinds worth showing (routine starts are left out).
NOTABLE = ("died", "restarted", "start failed", "timed out", "recycled", "evicted", "session ended")
#: How many events the widget lists.
EVENTS_SHOWN = 5

_CSS = (
    "<style>.nbpool-widget table{border-collapse:collapse;font-size:12px}"
    ".nbpool-widget th,.nbpool-widget td{padding:1px 8px;text-align:left}"
    ".nbpool-state{display:inline-block;min-width:6em;border-radius:3px;"
    "color:white;padding:0 4px;text-align:center}</style>"
)


class PoolWidget(ipywidgets.VBox):
    """A live view of a pool's status; see the module docstring.

    Parameters
    ----------
    pool : nbpool.Pool
    interval : float
        Seconds between snapshots (the update rate limit).
    """

    def __init__(self, pool, interval: float = 0.25) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self._pool = pool
        self.interval = interval
        self._summary = ipywidgets.HTML()
        self._workers = ipywidgets.HTML()
        self._sessions = ipywidgets.HTML()
        self._events = ipywidgets.HTML()
        super().__init__([self._summary, self._workers, self._sessions, self._events])
        self.add_class("nbpool-widget")
        self._status = pool.status()
        self.apply(self._status)
        self._stop = threading.Event()
        context = contextvars.copy_context()
        self._follower = threading.Thread(
            target=context.run, args=(self._follow,), name="nbpool-widget", daemon=True
        )
        self._follower.start()

    def apply(self, status: PoolStatus) -> None:
        """Show ``status``; only the parts that changed are sent to the frontend."""
        self._status = status
        self._summary.value = _CSS + render_summary(status)
        self._workers.value = render_workers(status)
        self._sessions.value = render_sessions(status)
        self._events.value = render_events(status)

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            status = self._pool.status()
            self.apply(status)
            if status["closed"]:
                return

    def close(self) -> None:
        """Stop following the pool and close the widget's views."""
        self._stop.set()
        for part in self.children:
            part.close()
        super().close()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self._status.table()
        return bundle


def render_summary(status: PoolStatus) -> str:
    """The headline and counters, as HTML."""
    c = status["counters"]
    closed = " (shut down)" if status["closed"] else ""
    return (
        f"<div class='nbpool-summary'><b>nbpool</b> {html.escape(status.summary())}{closed}"
        f" &middot; kernel {html.escape(status['kernel_name'])}, size {status['size']}"
        f" (max {status['max_size']})<br><small>executions {c['executions']} &middot; "
        f"failures {c['failures']} &middot; restarts {c['restarts']} &middot; "
        f"start failures {c['start_failures']} &middot; deaths {c['deaths']} &middot; "
        f"timeouts {c['timeouts']}</small></div>"
    )


def render_workers(status: PoolStatus) -> str:
    """One table row per worker, as HTML (rows carry ``data-worker``/``data-state``)."""
    if not status["workers"]:
        return "<div class='nbpool-workers'><i>no workers yet</i></div>"
    head = "".join(
        f"<th>{h}</th>" for h in ("worker", "state", "session", "pid", "runs", "uptime", "memory")
    )
    rows = []
    for w in status["workers"]:
        state = w["state"]
        colour = STATE_COLOURS.get(state, "#000")
        note = w["last_error"] or w.get("pending_reason")
        title = f" title='{html.escape(note)}'" if note else ""
        rows.append(
            f"<tr class='nbpool-worker' data-worker='{html.escape(w['id'])}' "
            f"data-state='{state}'><td>{html.escape(w['id'])}"
            f"{' (attached)' if w['attached'] else ''}</td>"
            f"<td><span class='nbpool-state' style='background:{colour}'{title}>{state}</span></td>"
            f"<td>{html.escape(w['session'] or '-')}</td><td>{w['pid'] or '-'}</td>"
            f"<td>{w['executions']}</td><td>{_duration(w['uptime'])}</td>"
            f"<td>{_mib(w['memory'])}</td></tr>"
        )
    return (
        f"<table class='nbpool-workers'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def render_sessions(status: PoolStatus) -> str:
    """Sessions (worker, kernel, generation, queue) and the queue length, as HTML."""
    waiting = f"{status['waiting']} request(s) queued"
    if not status["sessions"]:
        return f"<div class='nbpool-sessions'><small>no sessions &middot; {waiting}</small></div>"
    rows = "".join(
        f"<tr><td>{html.escape(s['name'])}</td><td>{html.escape(s['worker'] or '-')}</td>"
        f"<td>{html.escape(s['kernel'])}</td><td>{s['generation']}</td><td>{s['queued']}</td></tr>"
        for s in status["sessions"]
    )
    head = "".join(f"<th>{h}</th>" for h in ("session", "worker", "kernel", "resets", "queued"))
    return (
        f"<table class='nbpool-sessions'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>"
        f"</table><small>{waiting}</small>"
    )


def render_events(status: PoolStatus) -> str:
    """The last few notable events (deaths, restarts, failed starts, timeouts), as HTML."""
    events = [e for e in status["events"] if e["kind"] in NOTABLE][-EVENTS_SHOWN:]
    if not events:
        return ""
    items = "".join(
        f"<li>{time.strftime('%H:%M:%S', time.localtime(e['time']))} "
        f"<b>{html.escape(e['kind'])}</b> {html.escape(e['worker'])}: "
        f"{html.escape(e['message'])}</li>"
        for e in events
    )
    return f"<ul class='nbpool-events'>{items}</ul>"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"
