"""The kernel side of the JupyterLab extension: pool status and actions over a comm.

The notebook kernel registers the comm target ``nbpool.status``; the
JupyterLab extension opens a comm to it on every kernel connection (so it
works again after a browser reload or a kernel restart) and the kernel serves
that comm the same ``nbpool.status/1`` snapshots as ``Pool.status()`` and the
widget (schema in :mod:`nbpool.status`).

Protocol (every payload is a JSON object; none has a top-level ``state`` key,
which nbclient would take for widget state)::

    frontend -> kernel
      comm_open   {"version": 1}
      comm_msg    {"request": ID, "action": "interrupt",   "worker": "w1"}
                  {"request": ID, "action": "restart",     "worker": "w1"}
                  {"request": ID, "action": "end_session", "session": "etl"}
                  {"request": ID, "action": "resize",      "size": 3}
                  {"request": ID, "action": "detach"}    (keep_sessions pools)
                  {"request": ID, "action": "stop"}
                  {"request": ID, "action": "refresh"}
                  {"request": ID, "action": "follow",        "job": 7}
                  {"request": ID, "action": "unfollow",      "job": 7}
                  {"request": ID, "action": "interrupt_job", "job": 7}
    kernel -> frontend
      comm_msg    {"kind": "status", "status": SNAPSHOT or null}   (null: no pool)
                  {"kind": "cells", "cells": [CELL, ...]}   this kernel's jobs
                  {"kind": "job", "job": 7, "seq": 42, "event": EVENT}
                  {"kind": "reply", "request": ID, "ok": true,  "message": "..."}
                  {"kind": "reply", "request": ID, "ok": false, "error": "one line"}

Jobs (:mod:`nbpool.notebook.jobs`). ``cells`` lists the last jobs (every
``%%pool_exec`` run), newest last, as ``CELL`` objects: ``job``,
``cell_id`` (the request's ``metadata.cellId`` or null), ``client`` (its
``parent_header.session``), ``session``, ``worker``, ``background``,
``state`` (queued running done failed died interrupted cancelled),
``position`` (in the session's queue), ``started``/``began``/``ended``
(epoch s), ``error``, ``outputs``/``bytes``/``seq`` (a ``--bg`` job's
record), ``superseded`` (a later run of the same cell exists). It is pushed
right after ``comm_open`` and whenever it changed, with the status pushes.
``follow`` is answered ``{"outputs": [...], "seq": 41, "state": ...}``: the
``--bg`` job's record as its cell's output list; from then on this comm
gets that job's events with a greater ``seq``, in order, until ``end``
(EVENT: see the jobs module). The reply may arrive after the first of
them: a frontend buffers those. ``interrupt_job`` interrupts that job's
worker only (a queued job is withdrawn). A page whose client id is a job's
``client`` got its output live and never follows it.
      comm_open   {"kind": "hello"}, closed at once: sent by :func:`register`
                  so that frontends which found no target earlier open a comm now.

Threads. Actions run on the thread that handles the comm message: with
ipykernel 7 and JupyterLab >= 4.4 that is a kernel *subshell* (comms over
subshells), so "interrupt" works while a cell runs. Status pushes come from
one thread per kernel, at most every :data:`PUSH_INTERVAL` and only when the
snapshot changed (uptime aside, memory to the MiB); a worker's death stays in
them for a few seconds (:class:`~nbpool.status.DeathsShown`), so the status
item shows it even when the worker was replaced between two pushes. Each
push runs in a copy of the context of its comm's ``comm_open`` handler:
ipykernel 7 takes the parent of an IOPub message from context variables, so
a push is a reply to that ``comm_open`` and is never attributed to whatever
cell is running.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
import uuid
from typing import Callable

from ..errors import NbpoolError
from ..status import DeathsShown
from .jobs import Job, Jobs

#: The comm target name, shared with the frontend (labextension/src/comm.ts).
TARGET = "nbpool.status"
#: Least time between two status pushes (at most ~4 per second).
PUSH_INTERVAL = 0.25
#: Comms served per kernel; a reloaded page leaves its old comm open, so the
#: oldest beyond this are closed.
MAX_COMMS = 16

_services: dict[int, "StatusService"] = {}


def register(shell, get_pool: Callable[[], object], jobs: Jobs | None = None) -> None:
    """Serve pool status to JupyterLab from this kernel; idempotent.

    Parameters
    ----------
    shell : InteractiveShell
        The shell of an ipykernel kernel; outside a kernel (terminal IPython)
        there is no frontend to serve and this does nothing.
    get_pool : callable
        Returns the current :class:`~nbpool.Pool` or None; called for every
        snapshot and action, so a pool started or stopped later is picked up.
    jobs : Jobs, optional
        This kernel's jobs (the magics' registry), listed and followed here.
    """
    kernel = getattr(shell, "kernel", None)
    manager = getattr(kernel, "comm_manager", None)
    if manager is None:
        return
    service = _services.get(id(shell))
    jobs = jobs if jobs is not None else Jobs()
    if service is None:
        service = _services[id(shell)] = StatusService(kernel, manager, get_pool, jobs)
    else:
        service.get_pool, service.jobs = get_pool, jobs
    service.announce()


def unregister(shell) -> None:
    """Stop serving: close the comms (frontends hide the pool) and the target."""
    service = _services.pop(id(shell), None)
    if service is not None:
        service.close()


class _Refused(Exception):
    """An action the frontend asked for that cannot be done; the message says why."""


class _Client:
    """One open comm: the comm, the context its pushes run in, what it last got."""

    def __init__(self, comm, context: contextvars.Context) -> None:
        self.comm = comm
        self.context = context
        self.sent: str | None = None
        self.cells_sent: str | None = None
        #: The jobs it follows: job number -> the record's send callback.
        self.following: dict[int, Callable[[int, dict], None]] = {}

    def send(self, payload: dict) -> None:
        """Send on the comm in the context of its ``comm_open`` (see the module docstring).

        A copy per send: pushes and job events go from several threads at
        once, and one context cannot be entered twice at the same time.
        """
        self.context.copy().run(self.comm.send, payload)


class StatusService:
    """The ``nbpool.status`` comm target of one kernel and its push thread."""

    def __init__(self, kernel, manager, get_pool: Callable[[], object], jobs: Jobs) -> None:
        self.kernel = kernel
        self.get_pool = get_pool
        self.jobs = jobs
        self._manager = manager
        # _clients is shared by the shell threads (open, close) and the push
        # thread; _lock guards it, never any I/O.
        self._lock = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._wake = threading.Event()
        self._urgent = False  # a job changed state: push without waiting out the interval
        self._stop = threading.Event()
        self._failed = False
        self._deaths = DeathsShown()  # the push thread's alone
        jobs.changed = self._job_changed
        manager.register_target(TARGET, self._on_open)
        self._thread = threading.Thread(target=self._loop, name="nbpool-status", daemon=True)
        self._thread.start()

    # -- comm handlers (shell or subshell thread) ---------------------------

    def _on_open(self, comm, msg: dict) -> None:
        client = _Client(comm, contextvars.copy_context())
        comm.on_msg(lambda m: self._on_msg(client, m))
        comm.on_close(lambda m: self._drop(client))
        with self._lock:
            self._clients[comm.comm_id] = client
            evicted = list(self._clients.values())[:-MAX_COMMS]
        for old in evicted:
            self._drop(old)
            old.comm.close()
        self._wake.set()

    def _on_msg(self, client: _Client, msg: dict) -> None:
        data = msg["content"].get("data") or {}
        request = data.get("request")
        try:
            done = self._act(client, data)
            reply = {"ok": True, **(done if isinstance(done, dict) else {"message": done})}
        except (NbpoolError, _Refused) as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must reach the panel, not kill the kernel
            self.kernel.log.exception("nbpool: action %r failed", data.get("action"))
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        client.comm.send({"kind": "reply", "request": request, **reply})
        self._wake.set()

    def _drop(self, client: _Client) -> None:
        with self._lock:
            self._clients.pop(client.comm.comm_id, None)
            following, client.following = client.following, {}
        for number, send in following.items():
            self._unfollow(number, send)

    # -- actions ------------------------------------------------------------

    def _act(self, client: _Client, data: dict) -> str | dict:
        action = data.get("action")
        if action == "refresh":
            client.sent = client.cells_sent = None
            return "refreshed"
        if action in ("follow", "unfollow"):
            handler = self._follow if action == "follow" else self._let_go
            return handler(client, data)
        pool = self.get_pool()
        if pool is None:
            raise _Refused("this kernel has no pool: run %pool start first")
        if action == "interrupt":
            worker = _name(data, "worker", action)
            if not pool.interrupt(worker):  # WorkerUnavailable: unknown or dead
                return f"worker {worker} was not running anything"
            return f"interrupted worker {worker}"
        if action == "restart":
            worker = _name(data, "worker", action)
            pool.restart_worker(worker)
            return f"worker {worker} is being replaced by a fresh kernel"
        if action == "end_session":
            session = _name(data, "session", action)
            if not pool.end_session(session):
                names = ", ".join(s["name"] for s in pool.status()["sessions"]) or "none"
                raise _Refused(
                    f"no session {session!r}: it was already ended (sessions now: {names})"
                )
            return f"session {session!r} ended; its worker is replaced by a fresh kernel"
        if action == "resize":
            size = data.get("size")
            if isinstance(size, str):
                try:
                    size = int(size.strip())
                except ValueError:
                    pass
            pool.resize(size)
            bound = sum(1 for w in pool.status()["workers"] if w["session"] is not None)
            extra = (
                f"; {bound} workers bound to sessions stay until they end" if bound > size else ""
            )
            return f"pool resized to {size}{extra}"
        if action == "detach":
            kept = sum(1 for s in pool.status()["sessions"] if s["kept"])
            pool.detach()  # InvalidConfig (a refusal) if it keeps no sessions
            return (
                f"pool {pool.name!r} detached: {kept} kept session(s) run on; "
                "%pool start --keep re-adopts them"
            )
        if action == "stop":
            workers = len(pool.status()["workers"])
            pool.shutdown()
            return f"pool stopped ({workers} worker(s), kept sessions' too)"
        if action == "interrupt_job":
            try:
                return self._job(data, action).interrupt(pool)
            except ValueError as exc:
                raise _Refused(str(exc)) from None
        raise _Refused(
            f"unknown action {action!r}: expected interrupt, restart, end_session, resize, "
            "detach, stop, refresh, follow, unfollow or interrupt_job"
        )

    def _job(self, data: dict, action: str) -> Job:
        try:
            return self.jobs.get(data.get("job"))
        except KeyError as exc:
            raise _Refused(f"{action}: {exc.args[0]}") from None

    def _follow(self, client: _Client, data: dict) -> dict:
        job = self._job(data, "follow")
        if job.record is None:
            raise _Refused(f"job {job.number} ran in the foreground: it has no output to follow")
        number = job.number

        def send(seq: int, event: dict) -> None:
            client.send({"kind": "job", "job": number, "seq": seq, "event": event})

        with self._lock:
            old = client.following.pop(number, None)
        if old is not None:  # following again: the new reply replaces everything
            job.record.unfollow(old)
        outputs, seq, state = job.follow(send)
        with self._lock:
            client.following[number] = send
        return {
            "message": f"following job {number}",
            "outputs": outputs,
            "seq": seq,
            "state": state,
        }

    def _let_go(self, client: _Client, data: dict) -> str:
        job = self._job(data, "unfollow")
        with self._lock:
            send = client.following.pop(job.number, None)
        if send is not None:
            self._unfollow(job.number, send)
        return f"not following job {job.number}"

    def _unfollow(self, number: int, send) -> None:
        try:
            record = self.jobs.get(number).record
        except KeyError:  # no longer kept: nothing to let go of
            return
        if record is not None:
            record.unfollow(send)

    # -- pushes (the nbpool-status thread) -------------------------------------

    def _job_changed(self) -> None:
        """A job started or ended (any thread): its badge should not wait for the next tick."""
        self._urgent = True
        self._wake.set()

    def _loop(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            with self._lock:
                idle = not self._clients
            self._wake.wait(None if idle else PUSH_INTERVAL)
            self._wake.clear()
            # A job's start or end goes out at once (a few per job); anything
            # else at most once per interval.
            urgent, self._urgent = self._urgent, False
            delay = 0 if urgent else last + PUSH_INTERVAL - time.monotonic()
            if self._stop.wait(max(delay, 0)):
                return
            self._publish()
            last = time.monotonic()

    def _publish(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
        if not clients:
            return
        status = self._status()
        if status is False:
            return
        payload = {"kind": "status", "status": status}
        signature = _signature(status)
        cells = self.jobs.cells(status)
        cells_signature = json.dumps(cells, sort_keys=True)
        for client in clients:
            try:
                if client.sent != signature:
                    client.sent = signature
                    client.send(payload)
                if client.cells_sent != cells_signature:
                    client.cells_sent = cells_signature
                    client.send({"kind": "cells", "cells": cells})
            except Exception:  # closed under us: forget it
                self._drop(client)

    def _status(self) -> dict | None | bool:
        """The snapshot (recent deaths kept), None without a pool, False if taking it failed."""
        try:
            pool = self.get_pool()
            return self._deaths.show(None if pool is None else dict(pool.status()))
        except Exception:
            if not self._failed:  # once: this runs four times a second
                self._failed = True
                self.kernel.log.exception("nbpool: could not take a pool status snapshot")
            return False

    # -- lifecycle ------------------------------------------------------------

    def announce(self) -> None:
        """Tell every frontend of this kernel that it serves pool status now.

        A comm_open/comm_close pair with no parent header, sent straight to
        IOPub: no kernel-side comm object is left behind, and nbclient, which
        only reads messages whose parent is its current cell, ignores it.
        """
        comm_id = uuid.uuid4().hex
        topic = f"comm-{comm_id}".encode()
        session, iopub = self.kernel.session, self.kernel.iopub_socket
        content = {"comm_id": comm_id, "target_name": TARGET, "data": {"kind": "hello"}}
        session.send(iopub, "comm_open", content, ident=topic)
        session.send(iopub, "comm_close", {"comm_id": comm_id, "data": {}}, ident=topic)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2)
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.comm.close()
            except Exception:  # already closed by its frontend
                pass
        self._manager.unregister_target(TARGET, self._on_open)


def _name(data: dict, key: str, action: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _Refused(f"action {action!r} needs a {key} name, got {value!r}")
    return value


def _signature(status: dict | None) -> str:
    """What counts as a change: everything but the clock, uptimes and memory below a MiB."""
    if status is None:
        return "null"
    workers = [
        {**w, "uptime": None, "memory": None if w.get("memory") is None else w["memory"] >> 20}
        for w in status["workers"]
    ]
    return json.dumps({**status, "time": None, "workers": workers}, sort_keys=True, default=str)
