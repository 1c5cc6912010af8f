"""Tab completion and Shift+Tab inspection in ``%%pool_exec`` cells, from the session's worker.

A frontend sends the notebook kernel the whole cell and a cursor position
(in unicode code points, which is what Python's ``str`` indexes). After
``%load_ext nbpool``, :func:`install` wraps the kernel's ``do_complete`` and
``do_inspect``: in a cell whose first line is ``%%pool_exec`` (read by the
magic's own parser: ``-s NAME``, or the default session without it) and with
the cursor below that line, the request is asked of the session's worker
about the cell's body, where the session's variables live, and the positions
in its answer are moved back into the cell. The rest is the notebook
kernel's own answer, unchanged: other cells, ``--all`` cells, a magic line
the magic would refuse, and a cursor on the magic line itself (IPython
completes magic names there).

How the worker is asked, per request (:func:`ask`), all within
:data:`ASK_TIMEOUT`:

1. ``kernel_info_request`` on its control channel (answered while a cell runs).
2. An IPython worker that offers ``kernel subshells`` (ipykernel >= 7):
   ``create_subshell_request`` on control, the request on the shell channel
   addressed to that subshell, which answers while the main shell runs a
   cell (the namespace is shared), then ``delete_subshell_request``.
3. Any other worker (ipykernel 6, bash_kernel, ...): the request on a shell
   connection of our own. A busy worker queues it behind its cell, so the
   deadline answers "no completions". Other kernels never get a subshell,
   even when they offer one: their completion (bash_kernel drives its one
   bash through pexpect) is not safe beside a running cell.

A session with no ready, live worker (none yet, starting, dead, no pool)
gets no completions at once, without asking; a pool is never started here.

Sockets. Each request opens its own DEALER sockets on the worker's ports
(``Pool._connection_for``), on the thread that handles the request (the
notebook kernel's shell handler), and closes them before it returns: no
socket is shared between threads or outlives its request, so nothing is
left behind when a session ends or the pool stops, and the lease holder's
sockets are never touched. The worker's iopub status messages for these
requests carry their own parent, which lease holders ignore.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Callable

import zmq
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.session import Session

#: Seconds a worker has to answer one completion or inspection, all steps included.
ASK_TIMEOUT = 1.0
#: The magic that binds a cell to a session (its first line).
MAGIC = "%%pool_exec"
#: How long a closed socket may still deliver what was sent (the subshell's delete).
LINGER_MS = 1000
#: The completion metadata key whose entries carry positions of their own.
TYPES_KEY = "_jupyter_types_experimental"

_installed: dict[int, "SessionCompletion"] = {}


@dataclass(frozen=True)
class Target:
    """Where a request goes: ``session``, about the cell's code from ``offset`` on."""

    session: str
    offset: int  # code points of the cell before its body (the magic line and its newline)


def target(code: str, cursor_pos: int, session_of: Callable[[str], str | None]) -> Target | None:
    """The session a request at ``cursor_pos`` in ``code`` is for, or None (the notebook's).

    Leading blank lines are skipped, as IPython does before it looks for a cell magic.
    """
    start = 0
    while True:
        end = code.find("\n", start)
        if end < 0 or code[start:end].strip():
            break
        start = end + 1
    line = code[start:end]
    if end < 0 or cursor_pos <= end or not line.startswith(MAGIC):
        return None
    rest = line[len(MAGIC) :]
    if rest and not rest[0].isspace():  # another magic, e.g. %%pool_execute
        return None
    session = session_of(rest)
    return None if session is None else Target(session, end + 1)


def ask(info: dict, msg_type: str, content: dict, timeout: float = ASK_TIMEOUT) -> dict | None:
    """Send ``msg_type`` to the kernel of ``info`` (see the module docstring); its reply's
    content, or None when it gave none within ``timeout``."""
    deadline = time.monotonic() + timeout
    client = BlockingKernelClient(context=zmq.Context.instance())
    client.load_connection_info(info)
    session = Session(key=client.session.key, signature_scheme=client.session.signature_scheme)
    sockets: list[zmq.Socket] = []

    def opened(connect: Callable[..., zmq.Socket]) -> zmq.Socket:
        sockets.append(connect(identity=session.bsession))
        return sockets[-1]

    try:
        control = opened(client.connect_control)
        kernel_info = _request(session, control, "kernel_info_request", {}, deadline)
        if kernel_info is None:
            return None
        if not _subshells(kernel_info):
            return _request(session, opened(client.connect_shell), msg_type, content, deadline)
        created = _request(session, control, "create_subshell_request", {}, deadline)
        subshell = (created or {}).get("subshell_id")
        if subshell is None:
            return None
        try:
            shell = opened(client.connect_shell)
            return _request(session, shell, msg_type, content, deadline, subshell)
        finally:
            # Not waited for: its reply is dropped once our socket is closed.
            session.send(control, "delete_subshell_request", {"subshell_id": subshell})
    finally:
        for sock in sockets:
            sock.close(linger=LINGER_MS)


def _subshells(kernel_info: dict) -> bool:
    return kernel_info.get("implementation") == "ipython" and "kernel subshells" in (
        kernel_info.get("supported_features") or []
    )


def _request(
    session: Session,
    sock: zmq.Socket,
    msg_type: str,
    content: dict,
    deadline: float,
    subshell: str | None = None,
) -> dict | None:
    msg = session.msg(msg_type, content)
    if subshell is not None:
        msg["header"]["subshell_id"] = subshell
    session.send(sock, msg)
    msg_id = msg["header"]["msg_id"]
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(math.ceil(left * 1000)):
            return None
        _, reply = session.recv(sock, mode=zmq.NOBLOCK)
        if reply is not None and reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


def no_completions(cursor_pos: int) -> dict:
    """A ``complete_reply`` with no matches."""
    return {
        "matches": [],
        "cursor_start": cursor_pos,
        "cursor_end": cursor_pos,
        "metadata": {},
        "status": "ok",
    }


def nothing_found() -> dict:
    """An ``inspect_reply`` that found nothing."""
    return {"status": "ok", "data": {}, "metadata": {}, "found": False}


def moved_completions(reply: dict, offset: int) -> dict:
    """A worker's ``complete_reply`` about the body, with its positions moved into the cell.

    Everything else, metadata included, stays as the worker sent it; the
    positions of ``_jupyter_types_experimental`` entries (``start``, ``end``)
    move too, so that frontends that use them (VS Code) replace the right text.
    """
    moved = dict(reply, cursor_start=reply["cursor_start"] + offset)
    moved["cursor_end"] = reply["cursor_end"] + offset
    metadata = reply.get("metadata") or {}
    types = metadata.get(TYPES_KEY)
    if isinstance(types, list):
        entries = [
            dict(t, **{k: t[k] + offset for k in ("start", "end") if isinstance(t.get(k), int)})
            if isinstance(t, dict)
            else t
            for t in types
        ]
        metadata = dict(metadata, **{TYPES_KEY: entries})
    moved["metadata"] = metadata
    return moved


class SessionCompletion:
    """The wrapped ``do_complete`` / ``do_inspect`` of one notebook kernel.

    Parameters
    ----------
    kernel : ipykernel.kernelbase.Kernel
        The notebook kernel; its methods are replaced on the instance and
        restored by :meth:`uninstall`.
    get_pool : callable
        Returns the current :class:`~nbpool.Pool` or None.
    session_of : callable
        The session of a ``%%pool_exec`` line (what follows the magic's name),
        or None: :func:`nbpool.notebook.magics.cell_session`.
    """

    _METHODS = ("do_complete", "do_inspect")

    def __init__(self, kernel, get_pool: Callable[[], object], session_of) -> None:
        self.kernel = kernel
        self.get_pool = get_pool
        self.session_of = session_of
        self._own: dict[str, object] = {}  # what the instance itself had before us
        self._complete = kernel.do_complete
        self._inspect = kernel.do_inspect

    def install(self) -> None:
        """Put the wrappers on the kernel instance (remembering what the instance had)."""
        for name in self._METHODS:
            if name in vars(self.kernel):
                self._own[name] = vars(self.kernel)[name]
        self.kernel.do_complete = self.do_complete
        self.kernel.do_inspect = self.do_inspect

    def uninstall(self) -> None:
        """Give the kernel what it had before :meth:`install`."""
        for name in self._METHODS:
            if name in self._own:
                setattr(self.kernel, name, self._own[name])
            else:
                vars(self.kernel).pop(name, None)

    async def do_complete(self, code: str, cursor_pos: int | None):
        """``complete_request``: from the session's worker in its cells, else the kernel's own."""
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        where = target(code, cursor_pos, self.session_of)
        if where is None:
            return await _result(self._complete(code, cursor_pos))
        content = {"code": code[where.offset :], "cursor_pos": cursor_pos - where.offset}
        reply = self._ask(where, "complete_request", content) or {}
        usable = reply.get("status") == "ok" and all(
            isinstance(reply.get(k), int) for k in ("cursor_start", "cursor_end")
        )
        return moved_completions(reply, where.offset) if usable else no_completions(cursor_pos)

    async def do_inspect(self, code: str, cursor_pos: int | None, *args, **kwargs):
        """``inspect_request``: from the session's worker in its cells, else the kernel's own.

        ``args``/``kwargs`` are ``detail_level`` and ``omit_sections``, as the
        kernel's version passes them.
        """
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        where = target(code, cursor_pos, self.session_of)
        if where is None:
            return await _result(self._inspect(code, cursor_pos, *args, **kwargs))
        detail_level = args[0] if args else kwargs.get("detail_level", 0)
        omit = args[1] if len(args) > 1 else kwargs.get("omit_sections", ())
        content = {
            "code": code[where.offset :],
            "cursor_pos": cursor_pos - where.offset,
            "detail_level": detail_level,
            "omit_sections": sorted(omit),
        }
        reply = self._ask(where, "inspect_request", content)
        if reply is None or reply.get("status") != "ok":
            return nothing_found()
        return reply

    def _ask(self, where: Target, msg_type: str, content: dict) -> dict | None:
        pool = self.get_pool()
        info = pool._connection_for(where.session) if pool is not None else None
        if info is None:
            return None
        try:
            return ask(info, msg_type, content)
        except Exception as exc:  # ZMQError, a reply failing the HMAC check, ...: the
            # frontend still gets an answer ("no completions"), never no reply at all.
            self.kernel.log.warning(
                "nbpool: no %s from session %r: %s", msg_type, where.session, exc
            )
            return None


async def _result(value):
    """The kernel's own answer: ipykernel 7's IPythonKernel returns it, others a coroutine."""
    return await value if inspect.isawaitable(value) else value


def install(shell, get_pool: Callable[[], object], session_of) -> None:
    """Answer completion and inspection in session cells from their worker; idempotent.

    Outside a kernel (terminal IPython) there is no frontend asking, and this
    does nothing. See :class:`SessionCompletion` for the parameters.
    """
    kernel = getattr(shell, "kernel", None)
    if kernel is None or id(shell) in _installed:
        return
    hooks = _installed[id(shell)] = SessionCompletion(kernel, get_pool, session_of)
    hooks.install()


def uninstall(shell) -> None:
    """Give the kernel its own ``do_complete`` / ``do_inspect`` back."""
    hooks = _installed.pop(id(shell), None)
    if hooks is not None:
        hooks.uninstall()
