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
change), so an idle pool costs no messages. The updates are comm messages,
not outputs of a cell: frontends hand them to the widget's views by comm
id, whatever parent header they carry, so the views stay live whichever
cell ipykernel attributes them to. (The follower runs in a copy of the
context of the cell that created the widget, so ipykernel versions that
read a thread's parent from context variables attribute them to that cell;
nothing depends on it, and ipywidgets gives no way to send a comm message
with an explicit parent.) It stops when the widget is closed or the pool is
shut down.

The text/plain fallback (what a frontend without widget support, or a saved
notebook without widget state, shows) is the status table.
"""

from __future__ import annotations

import contextvars
import threading

import ipywidgets

from .. import render
from ..status import PoolStatus

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
        self._summary.value = _CSS + render.summary_html(status)
        self._workers.value = render.workers_html(status)
        self._sessions.value = render.sessions_html(status)
        self._events.value = render.events_html(status, EVENTS_SHOWN)

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
