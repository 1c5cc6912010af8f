"""The jobs of this notebook kernel: every ``%%pool_exec`` run, and each ``--bg`` run's output.

Every ``%%pool_exec`` run (foreground and ``--bg``) is a :class:`Job` with a
number (from 1, per notebook kernel: the ``--bg`` handle line says
"job 7"), the id of the cell that ran it (the ``execute_request``'s
``metadata.cellId``, which JupyterLab, Notebook 7 and VS Code send; None
from nbclient, papermill, nbconvert and raw clients), the client that sent
it (``parent_header.session``: a reloaded page is a new client), its
session, worker, state and times. A ``--bg`` job also has a
:class:`Record`: its outputs as the cell shows them, so a page that was not
there (reloaded, reopened, another browser) or ``%pool reattach`` can show
them again and then follow the rest live.

Data flows one way: a worker's event goes to the cell's
:class:`~nbpool.notebook.forwarding.CellOutput`, which applies it to the
record (here, under the record's lock, also sending it to every follower in
``seq`` order) and only then publishes it to the notebook. A follower asks
for the record and registers under the same lock, so the outputs it gets
and the events after them hold every output exactly once.

The record, as the cell's nbformat output list::

    [handle line]            the --bg status line (a display), pinned first
    [dropped notice]         one stderr stream, when older output was dropped
    output, output, ...      stream text coalesced per name (as Jupyter does),
                             display_data, execute_result, error;
                             update_display_data applied by display id;
                             clear_output clears (wait=True: at the next output)

Bounds. A record keeps at most ``limit`` bytes (``PoolMagics.job_output_limit``,
10 MB): beyond it the oldest outputs are dropped (the oldest text of a
single huge stream is cut), and the restored output says how much went. The
registry keeps the last ``keep`` jobs (``PoolMagics.jobs_kept``, 50); older
ones leave ``%pool jobs`` and can no longer be followed (a running one goes
on and still shows in its cell). Jobs live as long as this notebook kernel.

Events (``{"op": ...}``, the ``nbpool.status`` comm's ``job`` messages; see
:mod:`nbpool.notebook.labcomm`)::

    {"op": "append", "output": OUTPUT}       a new output at the end
    {"op": "stream", "index": i, "text": s}  text appended to stream output i
    {"op": "set", "index": i, "output": O}   output i replaced
    {"op": "clear"}                          every output removed
    {"op": "end", "state": "done"}           the job ended; nothing follows

Indices are the follower's own: positions in the list it got, which the
record's later drops do not change.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from concurrent.futures import CancelledError
from typing import Callable

from .. import render
from ..errors import WorkerDied

#: States of a job that has ended.
ENDED = ("done", "failed", "died", "interrupted", "cancelled")
#: Default bounds (the traits on PoolMagics default to these).
OUTPUT_LIMIT = 10 * 2**20
JOBS_KEPT = 50

Send = Callable[[int, dict], None]


class _Stream:
    """A coalesced stream output: its text kept as chunks (appending never copies)."""

    __slots__ = ("name", "chunks", "size")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.chunks: collections.deque[str] = collections.deque([text])
        self.size = len(text)

    def output(self) -> dict:
        text = "".join(self.chunks)
        self.chunks = collections.deque([text])
        return {"output_type": "stream", "name": self.name, "text": text}

    def cut(self, size: int) -> int:
        """Drop the oldest text down to ``size`` characters; return how many went."""
        cut = self.size - size
        left = cut
        while left > 0:
            head = self.chunks[0]
            if len(head) <= left:
                self.chunks.popleft()
                left -= len(head)
            else:
                self.chunks[0] = head[left:]
                left = 0
        self.size = size
        return cut


class _Follower:
    """Where one follower's events go, and how record positions map to its list."""

    def __init__(self, send: Send, handle: bool, base: int, first: int) -> None:
        self.send = send
        self.handle = handle  # its list starts with the handle line
        self.base = base  # its index of record position p is base + p ...
        self.first = first  # ... for p >= first (what it has)


class Record:
    """The output of one ``--bg`` job, bounded; see the module docstring.

    Every method may be called from any thread. ``lock`` guards all state;
    followers' ``send`` is called under it, so each gets events in ``seq``
    order (sending queues an IOPub message and never blocks).
    """

    def __init__(self, job: int, limit: int = OUTPUT_LIMIT) -> None:
        self.job = job
        self.limit = limit
        self.lock = threading.Lock()
        self.seq = 0
        self.state = "queued"
        self._handle: dict | None = None
        self._handle_id: str | None = None
        self._kept: list[dict | _Stream] = []
        self._sizes: list[int] = []
        self._first = 0  # record position of _kept[0]
        self._displays: dict[str, list[int]] = {}  # display id -> positions
        self._bytes = 0
        self._dropped = 0
        self._dropped_bytes = 0
        self._clear_pending = False
        self._followers: list[_Follower] = []

    # -- applying events ---------------------------------------------------

    def stream(self, name: str, text: str) -> None:
        with self.lock:
            self._before_output()
            last = self._kept[-1] if self._kept else None
            if isinstance(last, _Stream) and last.name == name:
                last.chunks.append(text)
                last.size += len(text)
                self._sizes[-1] += len(text)
                self._bytes += len(text)
                pos = self._first + len(self._kept) - 1
                self._emit({"op": "stream", "text": text}, pos)
            else:
                self._append(_Stream(name, text), len(text))
            self._bound()

    def display(self, data: dict, metadata: dict, display_id: str | None, update: bool) -> None:
        """A display (``update``: replace every output shown under ``display_id``)."""
        with self.lock:
            self._display(data, metadata, display_id, update)

    def add(self, output: dict) -> None:
        """An ``execute_result`` or ``error`` output."""
        with self.lock:
            self._before_output()
            self._append(output, _size(output))
            self._bound()

    def handle(self, data: dict, metadata: dict, display_id: str, update: bool) -> None:
        """The ``--bg`` handle line: shown first, replaced by its final state at the end."""
        output = {"output_type": "display_data", "data": data, "metadata": metadata}
        with self.lock:
            if not update and (self._kept or self._handle is not None):
                self._display(data, metadata, display_id, update)  # not first: as any display
            elif not update:
                self._handle, self._handle_id = output, display_id
                for f in self._followers:  # it goes before what they have (nothing)
                    f.handle, f.base = True, f.base + 1
                self._emit({"op": "append", "output": output})
            elif self._handle is not None and display_id == self._handle_id:
                self._handle = output
                self.seq += 1
                for f in list(self._followers):
                    if f.handle:
                        self._send(f, {"op": "set", "index": 0, "output": output})

    def clear(self, wait: bool) -> None:
        with self.lock:
            if wait:
                self._clear_pending = True
            else:
                self._clear()

    def end(self, state: str) -> None:
        """The job ended in ``state``: followers get ``end`` and are let go."""
        with self.lock:
            self.state = state
            self._emit({"op": "end", "state": state})
            self._followers.clear()

    # -- following -------------------------------------------------------------

    def follow(self, send: Send | None) -> tuple[list[dict], int, str]:
        """The outputs so far, their ``seq`` and the state; ``send`` gets what follows.

        ``send(seq, event)`` is called for every later event until ``end``
        (not at all when the job has ended already, or when ``send`` is None).
        """
        with self.lock:
            outputs = self._outputs()
            if send is not None and self.state not in ENDED:
                base = len(outputs) - len(self._kept) - self._first
                f = _Follower(send, self._handle is not None, base, self._first)
                self._followers.append(f)
            return outputs, self.seq, self.state

    def unfollow(self, send: Send) -> None:
        with self.lock:
            self._followers = [f for f in self._followers if f.send is not send]

    def size(self) -> tuple[int, int]:
        """(outputs, bytes) kept."""
        with self.lock:
            return len(self._kept) + (self._handle is not None), self._bytes

    def text(self) -> str:
        """The outputs but the handle line, as plain text (see forwarding's headless cells)."""
        with self.lock:
            outputs = self._outputs()[self._handle is not None :]
        return "".join(_text(o) for o in outputs)

    # -- under the lock ----------------------------------------------------------

    def _outputs(self) -> list[dict]:
        outputs = [self._handle] if self._handle is not None else []
        if self._dropped_bytes:
            outputs.append({"output_type": "stream", "name": "stderr", "text": self._notice()})
        outputs += [o.output() if isinstance(o, _Stream) else o for o in self._kept]
        return outputs

    def _notice(self) -> str:
        what = f"{self._dropped} earlier output(s)" if self._dropped else "the oldest text"
        return (
            f"nbpool: {what} of job {self.job} ({_mb(self._dropped_bytes)}) "
            f"dropped: a job keeps its last {_mb(self.limit)} "
            "(%config PoolMagics.job_output_limit)\n"
        )

    def _display(self, data: dict, metadata: dict, display_id: str | None, update: bool) -> None:
        output = {"output_type": "display_data", "data": data, "metadata": metadata}
        if update:
            self._update(display_id, output)
            return
        self._before_output()
        if display_id:
            self._displays.setdefault(display_id, []).append(self._first + len(self._kept))
        self._append(output, _size(output))
        self._bound()

    def _before_output(self) -> None:
        if self._clear_pending:
            self._clear_pending = False
            self._clear()

    def _clear(self) -> None:
        nxt = self._first + len(self._kept)
        self._handle = None
        self._kept, self._sizes, self._displays = [], [], {}
        self._first = nxt
        self._bytes = self._dropped = self._dropped_bytes = 0
        for f in self._followers:
            f.handle, f.base, f.first = False, -nxt, nxt
        self._emit({"op": "clear"})

    def _append(self, entry: dict | _Stream, size: int) -> None:
        self._kept.append(entry)
        self._sizes.append(size)
        self._bytes += size
        output = entry.output() if isinstance(entry, _Stream) else entry
        self._emit({"op": "append", "output": output})

    def _update(self, display_id: str | None, output: dict) -> None:
        positions = self._displays.get(display_id or "", [])
        for pos in positions:
            i = pos - self._first
            if i >= 0:
                self._bytes += _size(output) - self._sizes[i]
                self._kept[i], self._sizes[i] = output, _size(output)
            self._emit({"op": "set", "output": output}, pos)
        self._bound()

    def _bound(self) -> None:
        while self._bytes > self.limit and len(self._kept) > 1:
            self._kept.pop(0)
            size = self._sizes.pop(0)
            self._first += 1
            self._bytes -= size
            self._dropped += 1
            self._dropped_bytes += size
        last = self._kept[-1] if self._kept else None
        if self._bytes > self.limit and isinstance(last, _Stream):
            cut = last.cut(self.limit)
            self._sizes[-1] -= cut
            self._bytes -= cut
            self._dropped_bytes += cut
        if self._displays and self._dropped:
            # Positions no follower has and the record dropped are no use any more.
            keep = min([self._first, *(f.first for f in self._followers)])
            for key, positions in list(self._displays.items()):
                self._displays[key] = [p for p in positions if p >= keep]

    def _emit(self, event: dict, pos: int | None = None) -> None:
        """Send ``event`` (about record position ``pos``, if any) to every follower."""
        self.seq += 1
        for f in list(self._followers):  # _send may let one go
            if pos is None:
                self._send(f, event)
            elif pos >= f.first:
                self._send(f, {**event, "index": f.base + pos})

    def _send(self, f: _Follower, event: dict) -> None:
        try:
            f.send(self.seq, event)
        except Exception:  # a follower whose channel closed: let it go
            self._followers.remove(f)


class Job:
    """One ``%%pool_exec`` run: who ran it from which cell, where, and how it went.

    ``state`` moves ``queued`` -> ``running`` -> one of :data:`ENDED`;
    times are epoch seconds. A foreground job is updated by the magic that
    runs it; a ``--bg`` job is settled from its future by its handle, once the
    handle line shows the end (so ``end`` is a follower's last event).
    """

    def __init__(
        self,
        number: int,
        *,
        session: str,
        background: bool,
        parent: dict | None,
        limit: int = OUTPUT_LIMIT,
        changed: Callable[[], None] | None = None,
    ) -> None:
        parent = parent or {}
        self._changed = changed
        self.number = number
        self.session = session
        self.background = background
        self.cell_id: str | None = (parent.get("metadata") or {}).get("cellId")
        self.client: str | None = (parent.get("header") or {}).get("session")
        self.worker: str | None = None
        self.state = "queued"
        self.started = time.time()
        self.began: float | None = None
        self.ended: float | None = None
        self.error: str | None = None
        self.superseded = False
        self.record = Record(number, limit) if background else None
        self._future = None
        self._lock = threading.Lock()  # orders state changes from the job and push threads

    # -- driven by the magics -------------------------------------------------

    def running(self, worker: str | None = None) -> None:
        with self._lock:
            if self.state == "queued":
                self.state, self.began = "running", time.time()
                if self.record is not None:
                    self.record.state = "running"
            self.worker = worker or self.worker
        self._tell()

    def finish(self, state: str, error: str | None = None, worker: str | None = None) -> None:
        with self._lock:
            if self.began is None:
                self.began = self.started
            self.state, self.error, self.ended = state, error, time.time()
            self.worker = worker or self.worker
        if self.record is not None:
            self.record.end(state)
        self._tell()

    def _tell(self) -> None:
        """Tell the status comm a state changed, so badges follow at once, not a push later."""
        if self._changed is not None:
            self._changed()

    def attach(self, future) -> None:
        """The ``--bg`` job's :class:`~nbpool.pool.ExecutionFuture` (for its state, interrupts)."""
        self._future = future

    def settle(self, future) -> None:
        """The ``--bg`` job's future is done: its end state (last: followers get ``end``).

        The future is let go: its result holds as much output again as the record.
        """
        if future.cancelled():  # withdrawn while queued
            self.finish("cancelled")
        elif future.exception() is None:
            res = future.result()
            if self.began is None:
                self.began = time.time() - res.duration
            self.finish(*outcome(res), worker=res.worker_id)
        elif isinstance(future.exception(), CancelledError):  # interrupted while it ran
            self.finish("interrupted", "interrupted on request")
        else:
            self.finish(*exception_state(future.exception()))
        self._future = None

    def observe(self) -> None:
        """Notice that a queued ``--bg`` job got its worker (futures tell no one)."""
        f = self._future
        if self.state == "queued" and f is not None and f.running():
            self.running()

    def follow(self, send: Send | None) -> tuple[list[dict], int, str]:
        """A ``--bg`` job's :meth:`Record.follow`, with its state up to date."""
        self.observe()
        return self.record.follow(send)

    def interrupt(self, pool) -> str:
        """Interrupt this job's worker (queued: withdraw it); what happened, as a line."""
        self.observe()
        if self.state in ENDED:
            return f"job {self.number} already ended ({self.state})"
        if self._future is not None:
            queued = self.state == "queued"
            self._future.cancel()
            return f"job {self.number} " + ("withdrawn" if queued else "interrupted")
        if self.worker is None:
            raise ValueError(
                f"job {self.number} is a foreground cell still waiting for a worker: "
                "interrupt the kernel to stop waiting"
            )
        pool.interrupt(self.worker)
        return f"job {self.number} interrupted (worker {self.worker})"

    # -- views ---------------------------------------------------------------------

    def cell(self, position: int | None = None) -> dict:
        """This job as a ``cells`` entry of the ``nbpool.status`` comm."""
        outputs, size = self.record.size() if self.record is not None else (0, 0)
        return {
            "job": self.number,
            "cell_id": self.cell_id,
            "client": self.client,
            "session": self.session,
            "worker": self.worker,
            "background": self.background,
            "state": self.state,
            "position": position,
            "started": self.started,
            "began": self.began,
            "ended": self.ended,
            "error": self.error,
            "outputs": outputs,
            "bytes": size,
            "seq": self.record.seq if self.record is not None else 0,
            "superseded": self.superseded,
        }


class Jobs:
    """The jobs of one notebook kernel, newest last; the last ``keep`` are kept."""

    def __init__(self, keep: int = JOBS_KEPT) -> None:
        self.keep = keep
        #: Called (no arguments, no lock held) when a job is new, starts running or ends;
        #: the status comm sets it to push ``cells`` at once.
        self.changed: Callable[[], None] | None = None
        self._lock = threading.Lock()  # guards _jobs and _count; no I/O under it
        self._jobs: dict[int, Job] = {}
        self._count = 0

    def new(
        self,
        session: str,
        *,
        background: bool,
        parent: dict | None,
        limit: int = OUTPUT_LIMIT,
        keep: int | None = None,
    ) -> Job:
        """Number and keep a new job; an earlier run of the same cell is superseded.

        ``limit`` bounds its record; ``keep`` (default: as before) how many jobs stay.
        """
        with self._lock:
            self.keep = keep if keep is not None else self.keep
            self._count += 1
            job = Job(
                self._count,
                session=session,
                background=background,
                parent=parent,
                limit=limit,
                changed=self._tell,
            )
            for old in self._jobs.values():
                if job.cell_id is not None and old.cell_id == job.cell_id:
                    old.superseded = True
            self._jobs[job.number] = job
            for number in list(self._jobs)[: max(0, len(self._jobs) - self.keep)]:
                del self._jobs[number]
        self._tell()
        return job

    def _tell(self) -> None:
        changed = self.changed
        if changed is not None:
            changed()

    def get(self, number: object) -> Job:
        """The job numbered ``number``; KeyError with a one-line reason if none."""
        with self._lock:
            job = self._jobs.get(number) if isinstance(number, int) else None
            known = list(self._jobs)
        if job is None:
            if not known:
                raise KeyError(f"no job {number!r}: no %%pool_exec cell ran in this kernel yet")
            if isinstance(number, int) and 0 < number < known[0]:
                raise KeyError(
                    f"job {number} is no longer kept (the last {self.keep} jobs are: "
                    f"{known[0]}-{known[-1]})"
                )
            raise KeyError(f"no job {number!r} (jobs: {known[0]}-{known[-1]})")
        return job

    def all(self) -> list[Job]:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.observe()
        return jobs

    def cells(self, status=None) -> list[dict]:
        """Every kept job as a ``cells`` entry, newest last.

        ``status`` (a pool status snapshot) names the worker of a running
        job's session until the job itself knows it.
        """
        workers = {s["name"]: s["worker"] for s in (status or {}).get("sessions", ())}
        cells, ahead = [], collections.Counter()
        for job in self.all():
            position = None
            if job.state == "queued":
                ahead[job.session] += 1
                position = ahead[job.session]
            cell = job.cell(position)
            if job.state == "running" and cell["worker"] is None:
                cell["worker"] = workers.get(job.session)
            cells.append(cell)
        return cells

    def table(self, status=None) -> str:
        """The jobs as aligned text (``%pool jobs``)."""
        cells = self.cells(status)
        if not cells:
            return "no jobs yet: %%pool_exec cells are jobs (--bg ones keep their output)"
        now = time.time()
        rows = [JOB_COLUMNS]
        for c in cells:
            state = c["state"] + (f" #{c['position']}" if c["position"] else "")
            if c["error"]:
                state += f": {c['error']}"
            began = c["began"] if c["began"] is not None else now
            took = "-" if c["state"] == "queued" else render.duration((c["ended"] or now) - began)
            size = _mb(c["bytes"]) if c["background"] else "-"
            rows.append(
                (
                    str(c["job"]) + (" (bg)" if c["background"] else ""),
                    c["session"],
                    c["worker"] or "-",
                    state,
                    time.strftime("%H:%M:%S", time.localtime(c["started"])),
                    took,
                    size,
                )
            )
        return "\n".join(render.align(rows))


JOB_COLUMNS = ("job", "session", "worker", "state", "started", "duration", "output")


def outcome(res) -> tuple[str, str | None]:
    """The end state of a finished execution and its error line."""
    if res.ok:
        return "done", None
    if res.error is None:
        return "failed", f"the worker answered {res.status!r}"
    if res.error.ename == "KeyboardInterrupt":
        return "interrupted", "KeyboardInterrupt"
    return "failed", f"{res.error.ename}: {res.error.evalue}".splitlines()[0]


def exception_state(exc: BaseException) -> tuple[str, str]:
    """The end state of an execution that raised ``exc``, and its line."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "KeyboardInterrupt"
    return ("died" if isinstance(exc, WorkerDied) else "failed"), _line(exc)


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _size(output: dict) -> int:
    return len(json.dumps(output, default=str))


def _text(output: dict) -> str:
    kind = output["output_type"]
    if kind == "stream":
        return output["text"]
    if kind == "error":
        return "\n".join(output["traceback"]) + "\n"
    text = output.get("data", {}).get("text/plain", "")
    return text + "\n" if text else ""
