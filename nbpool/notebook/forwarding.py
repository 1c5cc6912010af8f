"""Forwarding a worker's outputs: re-published in the cell that ran it.

A :class:`Forwarder` is the ``on_output`` hook of one ``%%pool_exec``
execution. It is called in the thread that runs the execution: the cell's
own thread, or (``--bg``) a job thread running in a copy of the cell's
context. Everything it publishes goes through the notebook kernel's own
streams and display publisher, which route by context variables (ipykernel
7), so it lands in the cell that started the work, also after that cell
finished and while later cells run.

==================== =====================================================
worker output        published in the notebook kernel as
==================== =====================================================
stream               a write to ``sys.stdout`` / ``sys.stderr``; a stream
                     is flushed before the other one is written, so the
                     worker's interleaving is kept
display_data         ``publish_display_data``; a display id is mapped to
                     ``nbpool-<session>-<id>``, so ids of different
                     sessions never collide and updates from later cells
                     of the session land on the right output
update_display_data  the same, with ``update=True``
clear_output         ``clear_output(wait)``
execute_result       foreground: a :class:`RemoteValue` returned to IPython
                     (shown as this cell's ``Out[n]``, stored in ``_``);
                     background: an ``execute_result`` of the cell
error                foreground: raised as a cell failure (see below);
                     background: an ``error`` output of the cell
==================== =====================================================

Failing a cell. A remote exception must fail the cell (so "Run all" stops)
and look like a local one. :func:`cell_error` builds an exception named like
the remote one (``ZeroDivisionError``) whose ``_render_traceback_`` returns
the worker's traceback, the hook IPython uses to print it; no frame of
nbpool or IPython is shown. Pool errors (timeouts, dead workers) fail the
cell the same way with one line.
"""

from __future__ import annotations

import builtins
import contextvars
import functools
import getpass
import sys
import time
from concurrent.futures import CancelledError
from typing import Callable

from IPython import get_ipython
from IPython.display import clear_output, display, publish_display_data

from ..errors import InvalidConfig, NbpoolError, UnknownKernel
from ..result import ExecutionResult


class RemoteValue:
    """A worker's ``execute_result``: shows as the remote value would."""

    def __init__(self, data: dict, metadata: dict) -> None:
        self.data = data
        self.metadata = metadata

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data, self.metadata

    def __repr__(self) -> str:
        return self.data.get("text/plain", "")


class Forwarder:
    """Re-publishes one execution's outputs in the current cell, live.

    Parameters
    ----------
    session : str
        The session the code runs in (scopes display ids).
    background : bool
        A ``--bg`` cell: its cell has finished, so results and errors are
        published as outputs instead of being returned or raised.
    execution_count : int, optional
        The prompt number of a background cell, for its ``Out[n]``.

    ``before_first`` (settable) is called once, before the first output.

    Attributes
    ----------
    value : RemoteValue or None
        Foreground: the execute_result, for the magic to return.
    errors : list of dict
        Foreground: error outputs, held back to be raised or shown at the end.
    """

    def __init__(
        self, session: str, *, background: bool = False, execution_count: int | None = None
    ) -> None:
        self.session = session
        self.background = background
        self.execution_count = execution_count
        self.value: RemoteValue | None = None
        self.errors: list[dict] = []
        self._stream: str | None = None
        self.before_first: Callable[[], None] | None = None

    def __call__(self, event: dict) -> None:
        if self.before_first is not None:
            first, self.before_first = self.before_first, None
            first()
        kind = event["output_type"]
        if kind == "stream":
            if self._stream not in (None, event["name"]):
                _stream(self._stream).flush()
            self._stream = event["name"]
            _stream(event["name"]).write(event["text"])
        elif kind in ("display_data", "update_display_data"):
            publish_display_data(
                event["data"],
                event["metadata"],
                transient=self._transient(event),
                update=kind == "update_display_data",
            )
        elif kind == "clear_output":
            clear_output(wait=event["wait"])
        elif kind == "execute_result":
            if self.background:
                content = {k: event[k] for k in ("data", "metadata")}
                publish_raw("execute_result", dict(content, execution_count=self.execution_count))
            else:
                self.value = RemoteValue(event["data"], event["metadata"])
        elif kind == "error":
            if self.background:
                publish_raw("error", _error_content(event))
            else:
                self.errors.append(event)

    def _transient(self, event: dict) -> dict | None:
        display_id = event.get("transient", {}).get("display_id")
        return {"display_id": f"nbpool-{self.session}-{display_id}"} if display_id else None


def run_foreground(
    pool, code: str, *, session: str, timeout: float | None, kernel: str | None
) -> tuple[ExecutionResult, RemoteValue | None]:
    """Run a ``%%pool_exec`` cell, forwarding outputs live; fail the cell on error.

    Returns the result and the value to show as ``Out[n]`` (or None).

    Raises
    ------
    Exception
        A :func:`cell_error` named like the remote exception or pool error.
    KeyboardInterrupt
        The cell was interrupted (the worker was interrupted too and the
        session kept its state); shows where the worker was interrupted.
    """
    forward = Forwarder(session)
    if timeout is None:
        timeout = pool.exec_timeout
    try:
        with pool.lease(session, kernel=kernel) as lease:
            if lease.session_reset:  # before the outputs it explains
                print(reset_notice(session, lease.session_reset), file=sys.stderr, flush=True)
            res = lease.execute(code, timeout, on_output=forward, stdin=stdin_handler())
    except KeyboardInterrupt:
        held = forward.errors[-1] if forward.errors else None
        lines = held["traceback"] if held else ["KeyboardInterrupt"]
        raise cell_error("KeyboardInterrupt", "", lines, KeyboardInterrupt) from None
    except (InvalidConfig, UnknownKernel):
        raise  # bad input: the magic turns it into a UsageError
    except NbpoolError as exc:
        raise short_error(exc) from None
    if not res.ok:
        *shown, last = forward.errors or [None]
        for event in shown:
            publish_raw("error", _error_content(event))
        if last is None:
            raise cell_error("ExecutionAborted", f"the worker answered {res.status!r}", [])
        raise cell_error(last["ename"], last["evalue"], last["traceback"]) from None
    for event in forward.errors:  # shown with showtraceback, yet the code went on
        publish_raw("error", _error_content(event))
    return res, forward.value


def run_background(
    pool, code: str, *, session: str, timeout: float | None, kernel: str | None
) -> "BackgroundCell":
    """Start a ``%%pool_exec --bg`` cell; return its handle at once."""
    shell = get_ipython()
    cell = BackgroundCell(session)
    cell._display = display(cell, display_id=True)
    forward = Forwarder(session, background=True, execution_count=shell.execution_count)
    forward.before_first = cell._announce_reset  # as in a foreground cell: before the outputs
    try:
        future = pool.submit(code, session, timeout, kernel=kernel, on_output=forward)
    except BaseException as exc:
        cell._failed_to_submit(exc)
        raise
    cell._attach(future)
    return cell


class BackgroundCell:
    """Handle of a ``%%pool_exec --bg`` cell (``-o NAME`` stores it).

    A thin view of the :class:`~nbpool.pool.ExecutionFuture`: ``result()``
    returns the :class:`~nbpool.result.ExecutionResult`, ``cancel()`` takes
    a queued cell out of the queue or interrupts a running one; ``state``
    and ``repr`` are live. Its display in the cell is a status line that is
    updated when the work ends.
    """

    def __init__(self, session: str) -> None:
        self.session = session
        self.future = None
        self._display = None
        self._submit_error: BaseException | None = None
        self._started = time.monotonic()
        self._ended: float | None = None
        self._announced = False
        # The end may be settled by a pool thread: report it in this cell.
        self._context = contextvars.copy_context()

    def _attach(self, future) -> None:
        self.future = future

        def ended(f) -> None:
            self._context.run(self._ended_with, f)

        future.add_done_callback(ended)

    def _ended_with(self, future) -> None:
        self._ended = time.monotonic()
        exc = None if future.cancelled() else future.exception()
        if exc is not None and not isinstance(exc, CancelledError):
            name = type(exc).__name__  # a pool error: one line, as in a foreground cell
            publish_raw(
                "error", {"ename": name, "evalue": str(exc), "traceback": [f"{name}: {exc}"]}
            )
        elif exc is None and not future.cancelled():
            self._announce_reset(future.result().session_reset)
        self._show()

    def _announce_reset(self, reason: str | None = None) -> None:
        """Say once, in this cell, that the session's state was reset (if it was)."""
        lease = getattr(self.future, "_lease", None)
        reason = reason or (lease.session_reset if lease is not None else None)
        if reason and not self._announced:
            self._announced = True
            print(reset_notice(self.session, reason), file=sys.stderr, flush=True)

    def _failed_to_submit(self, exc: BaseException) -> None:
        self._submit_error, self._ended = exc, time.monotonic()
        self._show()

    def _show(self) -> None:
        if self._display is not None:
            self._display.update(self)

    # -- the Future's interface ----------------------------------------------

    def result(self, timeout: float | None = None) -> ExecutionResult:
        """Wait for the :class:`~nbpool.result.ExecutionResult` (``timeout`` in s)."""
        return self.future.result(timeout)

    def exception(self, timeout: float | None = None):
        return self.future.exception(timeout)

    def done(self) -> bool:
        return self.future is not None and self.future.done()

    def running(self) -> bool:
        return self.future is not None and self.future.running()

    def cancel(self) -> bool:
        """Withdraw the cell if queued, interrupt it if running; False if done."""
        return self.future is not None and self.future.cancel()

    @property
    def state(self) -> str:
        """``queued``, ``running``, ``done``, ``cancelled`` or ``failed: <error name>``."""
        f = self.future
        if f is None:
            error = self._submit_error
            return f"failed: {type(error).__name__}" if error is not None else "queued"
        if not f.done():
            return "running" if f.running() else "queued"
        exc = None if f.cancelled() else f.exception()
        if f.cancelled() or isinstance(exc, CancelledError):
            return "cancelled"
        if exc is not None:
            return f"failed: {type(exc).__name__}"
        res = f.result()
        return "done" if res.ok else f"failed: {res.error.ename if res.error else res.status}"

    def _repr_mimebundle_(self, include=None, exclude=None):
        # The status line in the cell: a snapshot, so no state that goes stale.
        label = f"<pool_exec --bg session={self.session!r}"
        if self._ended is None:
            return {"text/plain": f"{label}: started at {time.strftime('%H:%M:%S')}>"}
        return {"text/plain": f"{label}: {self.state} after {self._ended - self._started:.1f} s>"}

    def __repr__(self) -> str:
        end = self._ended if self._ended is not None else time.monotonic()
        return (
            f"<pool_exec --bg session={self.session!r}: {self.state}, {end - self._started:.1f} s>"
        )


def stdin_handler():
    """Answer ``input()`` on the worker through this cell, if its frontend allows stdin."""
    kernel = getattr(get_ipython(), "kernel", None)
    # ipykernel records per request whether the frontend accepts input_request.
    if kernel is not None and not getattr(kernel, "_allow_stdin", False):
        return None
    return lambda prompt, password: getpass.getpass(prompt) if password else builtins.input(prompt)


def reset_notice(session: str, reason: str) -> str:
    return f"nbpool: session {session!r} starts from a fresh state: {reason}"


def publish_raw(msg_type: str, content: dict) -> None:
    """Publish an ``error`` or ``execute_result`` output in the current cell.

    IPython has no public call for these outside its own displayhook and
    traceback machinery, so this sends on the displayhook's socket as they
    do, with the parent header of the current context. Outside a kernel
    (terminal IPython) it prints.
    """
    hook = getattr(get_ipython(), "displayhook", None)
    session, socket = getattr(hook, "session", None), getattr(hook, "pub_socket", None)
    flush_streams()
    if session is None or socket is None:
        if msg_type == "error":
            print("\n".join(content["traceback"]), file=sys.stderr)
        else:
            print(content["data"].get("text/plain", ""))
        return
    topic = hook.topic.replace(b"execute_result", msg_type.encode()) if hook.topic else None
    session.send(socket, msg_type, content, parent=hook.parent_header, ident=topic)


class _Rendered:
    """Mixin: IPython prints ``_render_traceback_()`` instead of a local traceback."""

    _lines: list[str] = []

    def _render_traceback_(self) -> list[str]:
        return list(self._lines)


@functools.lru_cache(maxsize=256)
def _error_class(name: str, base: type) -> type:
    return type(name, (_Rendered, base), {"__module__": "nbpool.remote", "__qualname__": name})


def cell_error(
    ename: str, evalue: str, traceback: list[str], base: type = Exception
) -> BaseException:
    """An exception that fails the cell and shows ``traceback`` as its traceback.

    Its class is named ``ename`` (so the cell's error reads
    ``ZeroDivisionError: division by zero``) and derives from ``base``.
    """
    exc = _error_class(ename or "RemoteError", base)(evalue)
    exc._lines = list(traceback) or [f"{ename}: {evalue}"]
    return exc


def short_error(exc: NbpoolError) -> BaseException:
    """A pool error as a one-line cell failure (``ExecutionTimeout: ...``)."""
    name = type(exc).__name__
    return cell_error(name, str(exc), [f"{name}: {exc}"])


def _error_content(event: dict) -> dict:
    return {k: event[k] for k in ("ename", "evalue", "traceback")}


def flush_streams() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


def _stream(name: str):
    return sys.stderr if name == "stderr" else sys.stdout
