"""Forwarding a worker's outputs: re-published in the cell that ran it.

A :class:`Forwarder` is the ``on_output`` hook of one ``%%pool_exec``
execution. It is called in the thread that runs the execution: the cell's
own thread, or (``--bg``) a pool job thread. Whichever thread it is, and
whatever context variables that thread has, everything goes to a
:class:`CellOutput` fixed in the cell's own thread when the cell ran: it
sends on the notebook kernel's iopub socket with that cell's parent header
explicitly, so the output lands in the cell that started the work, also
after that cell finished and while later cells run. (ipykernel reads a
thread's parent from context variables, and which contexts count is
changing upstream, ipykernel #1559: nbpool relies on none of it.)

==================== =====================================================
worker output        published in the notebook kernel as
==================== =====================================================
stream               a ``stream`` message, one per worker message, so the
                     worker's interleaving of stdout and stderr is kept
display_data         a ``display_data`` message; a display id is mapped to
                     ``nbpool-<session>-<id>``, so ids of different
                     sessions never collide and updates from later cells
                     of the session land on the right output
update_display_data  the same, with ``update=True``
clear_output         a ``clear_output`` message
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
import queue
import sys
import threading
import time
import uuid
from concurrent.futures import CancelledError
from typing import Callable

from IPython import get_ipython
from IPython.display import clear_output, publish_display_data

from ..errors import InvalidConfig, NbpoolError, UnknownKernel
from ..result import ExecutionResult
from .jobs import ENDED, Job, Record, exception_state, outcome


class RemoteValue:
    """A worker's ``execute_result``: shows as the remote value would."""

    def __init__(self, data: dict, metadata: dict) -> None:
        self.data = data
        self.metadata = metadata

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data, self.metadata

    def __repr__(self) -> str:
        return self.data.get("text/plain", "")


class CellOutput:
    """The outputs of one cell: sent with that cell's parent header, from any thread.

    Make it in the cell's own thread while the cell runs: it keeps the
    notebook kernel's session and iopub socket and the cell's
    ``execute_request`` (``kernel.get_parent()``, ipykernel >= 6). Every
    method may then be called from any thread, in any context: each message
    names the cell as its parent explicitly, as ipykernel's own
    ``send_response`` does. Outside a kernel (terminal IPython, a script) it
    writes to ``sys.stdout`` / ``sys.stderr`` and IPython's display instead.

    With a ``record`` (a ``--bg`` job's :class:`~nbpool.notebook.jobs.Record`)
    every output is applied to the record first and then published. A cell
    whose request carried no ``cellId`` (nbclient, papermill, nbconvert, a
    raw client) is *headless*: those frontends read only the messages of
    the cell they are running now, so late output with this cell's parent
    would be lost. Such a cell shows the handle line and, under it, the
    job's output (:class:`_Mirror`), as one display; each change replaces it
    with ``update_display_data`` parented to the request running *now*,
    which nbclient applies by display id to this cell.

    Output that this process printed itself comes first: the kernel's own
    streams are flushed once, before the first message (ipykernel sends every
    iopub message through one thread, in order).
    """

    def __init__(self, record: Record | None = None) -> None:
        self._shell = get_ipython()
        kernel = getattr(self._shell, "kernel", None)
        self._kernel = kernel
        self._parent = kernel.get_parent() if kernel is not None else None
        self._flushed = False
        self._record = record
        headless = (
            record is not None
            and kernel is not None
            and not (self._parent.get("metadata") or {}).get("cellId")
        )
        self._mirror = (
            _Mirror(record, self._send, lambda: current_parent(kernel)) if headless else None
        )

    def stream(self, name: str, text: str) -> None:
        """Write ``text`` on the cell's ``stdout`` or ``stderr``."""
        if self._record is not None:
            self._record.stream(name, text)
        if self._kernel is None:
            _stream(name).write(text)
        elif self._mirror is not None:
            self._mirror.changed()
        else:
            self._send("stream", {"name": name, "text": text}, f"stream.{name}")

    def display(
        self, data: dict, metadata: dict, transient: dict | None = None, update: bool = False
    ) -> None:
        """Show a mime bundle (``update``: replace the output with ``transient``'s display id)."""
        if self._record is not None:
            self._record.display(data, metadata, (transient or {}).get("display_id"), update)
        if self._mirror is not None:
            self._mirror.changed()
        else:
            self._display(data, metadata, transient, update)

    def show(self, obj, display_id: str, update: bool = False) -> None:
        """Show ``obj`` (the handle line) under ``display_id`` (``update``: in place)."""
        if self._shell is None:
            print(repr(obj))
            return
        data, metadata = self._shell.display_formatter.format(obj)
        if self._record is not None:
            self._record.handle(data, metadata, display_id, update)
        transient = {"display_id": display_id}
        if self._mirror is None:
            self._display(data, metadata, transient, update)
        elif not update:
            self._mirror.show(data.get("text/plain", ""), display_id, self._display)
        else:
            self._mirror.end(data.get("text/plain", ""))

    def clear(self, wait: bool) -> None:
        """Clear the cell's output (``wait``: when the next output arrives)."""
        if self._record is not None:
            self._record.clear(wait)
        if self._kernel is None:
            clear_output(wait=wait)
        elif self._mirror is not None:
            self._mirror.changed()
        else:
            self._send("clear_output", {"wait": wait})

    def error(self, content: dict) -> None:
        """An ``error`` output: ``ename``, ``evalue`` and the ``traceback`` lines."""
        self._output("error", content)

    def result(self, data: dict, metadata: dict, execution_count: int | None) -> None:
        """An ``execute_result`` output (a background cell's ``Out[n]``)."""
        content = {"data": data, "metadata": metadata, "execution_count": execution_count}
        self._output("execute_result", content)

    def _output(self, msg_type: str, content: dict) -> None:
        if self._record is not None:
            self._record.add({"output_type": msg_type, **content})
        if self._kernel is None:
            if msg_type == "error":
                print("\n".join(content["traceback"]), file=sys.stderr)
            else:
                print(content["data"].get("text/plain", ""))
        elif self._mirror is not None:
            self._mirror.changed()
        else:
            self._send(msg_type, content)

    def _display(self, data, metadata, transient, update: bool = False) -> None:
        if self._kernel is None:
            publish_display_data(data, metadata, transient=transient, update=update)
            return
        content = {"data": data, "metadata": metadata, "transient": transient or {}}
        self._send("update_display_data" if update else "display_data", content)

    def _send(
        self, msg_type: str, content: dict, topic: str | None = None, parent: dict | None = None
    ) -> None:
        if not self._flushed:
            self._flushed = True
            flush_streams()
        kernel = self._kernel
        ident = (topic or msg_type).encode()
        kernel.session.send(
            kernel.iopub_socket, msg_type, content, parent=parent or self._parent, ident=ident
        )


class _Mirror:
    """A headless ``--bg`` cell's handle line, followed by its job's output as text.

    One display (see :class:`CellOutput`): ``text/plain`` only, since a
    frontend that drops late output keeps what fits in one display. Changes
    are sent at most every :data:`MIRROR_INTERVAL`, as each one carries the
    whole text (more would cost the square of the output); the last change
    goes by a timer, or at the end by :meth:`end`.
    """

    def __init__(self, record: Record, send: Callable, parent_now: Callable[[], dict]) -> None:
        self._record = record
        self._send = send
        self._parent_now = parent_now
        # _lock guards _line, _dirty, _timer and _last; _sending orders the updates.
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._display_id = ""
        self._line = ""
        self._dirty = False
        self._timer: threading.Timer | None = None
        self._last = 0.0

    def show(self, line: str, display_id: str, display: Callable) -> None:
        """Show the display with ``display``, in the cell (it runs now)."""
        self._line, self._display_id = line, display_id
        display(self._data(), {}, {"display_id": display_id})

    def changed(self) -> None:
        with self._lock:
            self._dirty = True
            if self._timer is not None:
                return
            delay = self._last + MIRROR_INTERVAL - time.monotonic()
            if delay > 0:
                self._timer = threading.Timer(delay, self.flush)
                self._timer.daemon = True
                self._timer.start()
                return
        self.flush()

    def end(self, line: str) -> None:
        """The handle line's final state, with the last output, now."""
        with self._lock:
            self._line, self._dirty = line, True
        self.flush()

    def flush(self) -> None:
        """Send the display now, if it changed since the last update."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._dirty:
                return
            self._dirty, self._last = False, time.monotonic()
        with self._sending:
            transient = {"display_id": self._display_id}
            content = {"data": self._data(), "metadata": {}, "transient": transient}
            self._send("update_display_data", content, parent=self._parent_now())

    def _data(self) -> dict:
        text = self._record.text()
        return {"text/plain": self._line + ("\n" + text.rstrip("\n") if text else "")}


#: Least time between two updates of a headless cell's output display.
MIRROR_INTERVAL = 0.25


def current_parent(kernel) -> dict:
    """The request the notebook kernel runs now (not the one this thread came from).

    ipykernel >= 7 keeps the parent in a context variable and, where a
    context has none, falls back to the parent of the latest request: an
    empty context asks for exactly that. (ipykernel 6 has no context
    variable: ``get_parent`` is the latest request anyway.)
    """
    return contextvars.Context().run(kernel.get_parent)


class Forwarder:
    """Re-publishes one execution's outputs in its cell, live.

    Parameters
    ----------
    session : str
        The session the code runs in (scopes display ids).
    background : bool
        A ``--bg`` cell: its cell has finished, so results and errors are
        published as outputs instead of being returned or raised.
    execution_count : int, optional
        The prompt number of a background cell, for its ``Out[n]``.
    out : CellOutput, optional
        Where the outputs go; by default the cell running now (make the
        Forwarder in the cell's thread, then).

    ``before_first`` (settable) is called once, before the first output.

    Attributes
    ----------
    value : RemoteValue or None
        Foreground: the execute_result, for the magic to return.
    errors : list of dict
        Foreground: error outputs, held back to be raised or shown at the end.
    """

    def __init__(
        self,
        session: str,
        *,
        background: bool = False,
        execution_count: int | None = None,
        out: CellOutput | None = None,
    ) -> None:
        self.session = session
        self.out = out if out is not None else CellOutput()
        self.background = background
        self.execution_count = execution_count
        self.value: RemoteValue | None = None
        self.errors: list[dict] = []
        self.before_first: Callable[[], None] | None = None

    def __call__(self, event: dict) -> None:
        if self.before_first is not None:
            first, self.before_first = self.before_first, None
            first()
        kind = event["output_type"]
        if kind == "stream":
            self.out.stream(event["name"], event["text"])
        elif kind in ("display_data", "update_display_data"):
            self.out.display(
                event["data"],
                event["metadata"],
                self._transient(event),
                update=kind == "update_display_data",
            )
        elif kind == "clear_output":
            self.out.clear(event["wait"])
        elif kind == "execute_result":
            if self.background:
                self.out.result(event["data"], event["metadata"], self.execution_count)
            else:
                self.value = RemoteValue(event["data"], event["metadata"])
        elif kind == "error":
            if self.background:
                self.out.error(_error_content(event))
            else:
                self.errors.append(event)

    def _transient(self, event: dict) -> dict | None:
        display_id = event.get("transient", {}).get("display_id")
        return {"display_id": f"nbpool-{self.session}-{display_id}"} if display_id else None


def run_foreground(
    pool,
    code: str,
    *,
    session: str,
    timeout: float | None,
    kernel: str | None,
    job: Job,
    output_limit: int | None,
) -> tuple[ExecutionResult, RemoteValue | None]:
    """Run a ``%%pool_exec`` cell, forwarding outputs live; fail the cell on error.

    Returns the result and the value to show as ``Out[n]`` (or None).
    ``job`` follows it: running once it has a worker, then how it ended.
    ``output_limit`` bounds the stream text the result keeps (the cell
    shows all of it, live), as ``PoolMagics.job_output_limit`` bounds the job's
    record.

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
            job.running(lease.worker_id)
            if lease.session_reset:  # before the outputs it explains
                forward.out.stream("stderr", reset_notice(session, lease.session_reset) + "\n")
            res = lease.execute(
                code,
                timeout,
                on_output=forward,
                stdin=stdin_handler(),
                output_limit=output_limit,
            )
    except BaseException as exc:
        job.finish(*exception_state(exc))
        if isinstance(exc, KeyboardInterrupt):
            held = forward.errors[-1] if forward.errors else None
            lines = held["traceback"] if held else ["KeyboardInterrupt"]
            raise cell_error("KeyboardInterrupt", "", lines, KeyboardInterrupt) from None
        if isinstance(exc, (InvalidConfig, UnknownKernel)):
            raise  # bad input: the magic turns it into a UsageError
        if isinstance(exc, NbpoolError):
            raise short_error(exc) from None
        raise
    job.finish(*outcome(res))
    if not res.ok:
        *shown, last = forward.errors or [None]
        for event in shown:
            forward.out.error(_error_content(event))
        if last is None:
            raise cell_error("ExecutionAborted", f"the worker answered {res.status!r}", [])
        raise cell_error(last["ename"], last["evalue"], last["traceback"]) from None
    for event in forward.errors:  # shown with showtraceback, yet the code went on
        forward.out.error(_error_content(event))
    return res, forward.value


def run_background(
    pool,
    code: str,
    *,
    session: str,
    timeout: float | None,
    kernel: str | None,
    job: Job,
    output_limit: int | None,
) -> "BackgroundCell":
    """Start a ``%%pool_exec --bg`` cell as ``job``; return its handle at once.

    ``output_limit`` bounds the stream text its result keeps, as for
    :func:`run_foreground`: a long job's result must not hold all it printed.
    """
    shell = get_ipython()
    cell = BackgroundCell(session, CellOutput(job.record), job)
    cell._show()
    forward = Forwarder(
        session, background=True, execution_count=shell.execution_count, out=cell.out
    )
    forward.before_first = cell._announce_reset  # as in a foreground cell: before the outputs
    try:
        future = pool.submit(
            code, session, timeout, kernel=kernel, on_output=forward, output_limit=output_limit
        )
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
    updated when the work ends. Everything it shows goes to ``out``, its
    cell, also from the pool thread that settles the work; ``job`` (its
    :class:`~nbpool.notebook.jobs.Job`) is settled last, once the status
    line shows the end.
    """

    def __init__(self, session: str, out: CellOutput, job: Job) -> None:
        self.session = session
        self.out = out
        self.job = job
        self.future = None
        self._display_id = f"nbpool-bg-{uuid.uuid4().hex}"
        self._shown = False
        self._submit_error: BaseException | None = None
        self._started = time.monotonic()
        self._ended: float | None = None
        self._announced = False
        self._settled = threading.Event()

    def _attach(self, future) -> None:
        self.future = future
        self.job.attach(future)
        future.add_done_callback(self._ended_with)

    def _ended_with(self, future) -> None:
        try:
            self._ended = time.monotonic()
            exc = None if future.cancelled() else future.exception()
            if exc is not None and not isinstance(exc, CancelledError):
                self.out.error(pool_error_content(exc))  # one line, as in a foreground cell
            elif exc is None and not future.cancelled():
                self._announce_reset(future.result().session_reset)
            self._show()
            self.job.settle(future)
        finally:
            self._settled.set()

    def _announce_reset(self, reason: str | None = None) -> None:
        """Say once, in this cell, that the session's state was reset (if it was)."""
        if reason is None and self.future is not None:
            reason = self.future.session_reset
        if reason and not self._announced:
            self._announced = True
            self.out.stream("stderr", reset_notice(self.session, reason) + "\n")

    def _failed_to_submit(self, exc: BaseException) -> None:
        self._submit_error, self._ended = exc, time.monotonic()
        self._show()
        self.job.finish(*exception_state(exc))
        self._settled.set()

    def _show(self) -> None:
        """Show the status line: first in the cell, then in place of it."""
        self.out.show(self, self._display_id, update=self._shown)
        self._shown = True

    # -- the Future's interface ----------------------------------------------

    def result(self, timeout: float | None = None) -> ExecutionResult:
        """Wait for the :class:`~nbpool.result.ExecutionResult` (``timeout`` in s).

        It returns once the cell shows the end too (its status line, its
        last output), so a cell that waits on this one is the cell that
        runs while they are sent: headless runs (nbclient) see them.
        """
        try:
            return self.future.result(timeout)
        finally:
            if self.future.done():
                self._settled.wait(SETTLE_WAIT)

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
        label = f"<pool_exec --bg session={self.session!r}, job {self.job.number}"
        if self._ended is None:
            return {"text/plain": f"{label}: started at {time.strftime('%H:%M:%S')}>"}
        return {"text/plain": f"{label}: {self.state} after {self._ended - self._started:.1f} s>"}

    def __repr__(self) -> str:
        end = self._ended if self._ended is not None else time.monotonic()
        return (
            f"<pool_exec --bg session={self.session!r}: {self.state}, {end - self._started:.1f} s>"
        )


#: Longest a handle's ``result()`` waits, after the work ended, for the cell to show it.
SETTLE_WAIT = 5.0


def reattach(job: Job) -> str:
    """``%pool reattach``: ``job``'s output so far in this cell, then the rest live.

    Returns the job's state once it ended. An interrupt of this cell stops
    following (the job runs on; reattaching again shows it all again).
    """
    events: queue.SimpleQueue = queue.SimpleQueue()

    def send(seq: int, event: dict) -> None:
        events.put(event)

    outputs, _, state = job.follow(send)
    view = _Replica(CellOutput())
    for output in outputs:
        view.apply({"op": "append", "output": output})
    try:
        while state not in ENDED:
            event = events.get()
            if event["op"] == "end":
                state = event["state"]
            else:
                view.apply(event)
    except KeyboardInterrupt:
        job.record.unfollow(send)
        view.out.stream(
            "stderr",
            f"nbpool: stopped following job {job.number}; it runs on "
            f"(`%pool reattach {job.number}` shows it again)\n",
        )
    return state


class _Replica:
    """Re-publishes a record's outputs and events in the cell running now.

    Each display gets a display id of its own, so ``set`` events can replace it.
    """

    def __init__(self, out: CellOutput) -> None:
        self.out = out
        self._prefix = f"nbpool-reattach-{uuid.uuid4().hex[:8]}"
        self._count = 0
        self._ids: list[str | None] = []  # per output: its display id (displays)
        self._names: list[str | None] = []  # per output: its stream name (streams)

    def apply(self, event: dict) -> None:
        op = event["op"]
        if op == "append":
            output = event["output"]
            self._ids.append(self._publish(output))
            self._names.append(output.get("name"))
        elif op == "stream":
            self.out.stream(self._names[event["index"]], event["text"])
        elif op == "set":
            display_id = self._ids[event["index"]]
            output = event["output"]
            if display_id is not None:
                transient = {"display_id": display_id}
                self.out.display(output["data"], output["metadata"], transient, update=True)
        elif op == "clear":
            self.out.clear(False)
            self._ids, self._names = [], []

    def _publish(self, output: dict) -> str | None:
        kind = output["output_type"]
        if kind == "stream":
            self.out.stream(output["name"], output["text"])
        elif kind == "display_data":
            self._count += 1
            display_id = f"{self._prefix}-{self._count}"
            self.out.display(output["data"], output["metadata"], {"display_id": display_id})
            return display_id
        elif kind == "execute_result":
            self.out.result(output["data"], output["metadata"], output.get("execution_count"))
        elif kind == "error":
            self.out.error({k: output[k] for k in ("ename", "evalue", "traceback")})
        return None


def stdin_handler():
    """Answer ``input()`` on the worker through this cell, if its frontend allows stdin."""
    kernel = getattr(get_ipython(), "kernel", None)
    # ipykernel records per request whether the frontend accepts input_request.
    if kernel is not None and not getattr(kernel, "_allow_stdin", False):
        return None
    return lambda prompt, password: getpass.getpass(prompt) if password else builtins.input(prompt)


def reset_notice(session: str, reason: str) -> str:
    return f"nbpool: session {session!r} starts from a fresh state: {reason}"


def pool_error_content(exc: BaseException) -> dict:
    """A pool error as the content of a one-line ``error`` output."""
    name = type(exc).__name__
    return {"ename": name, "evalue": str(exc), "traceback": [f"{name}: {exc}"]}


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
