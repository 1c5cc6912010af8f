"""One execution on a leased worker, done on the worker's own sockets.

This is the client side of the Jupyter messaging protocol, run by the thread
that holds the lease (never by the coordinator): send ``execute_request`` on
shell, collect iopub outputs in order until both the ``execute_reply`` and the
iopub ``status: idle`` for the request arrived, answer ``input_request`` on
stdin. A per-output callback lets the notebook layer re-publish outputs live.
A request of a private type that a worker registered a shell handler for
(``pool.map``'s chunks, :mod:`nbpool.mapping.wire`) goes the same way, its
reply carrying the result.

The socket wait is sliced (:data:`SLICE`) so that a worker the coordinator
declared dead is noticed by its lease holder at once, not at its timeout.
"""

from __future__ import annotations

import collections
import hmac
import time
from dataclasses import dataclass
from typing import Callable

import zmq
from jupyter_client.adapter import adapt
from jupyter_client.session import Session

from ..errors import ExecutionTimeout, WorkerDied
from ..result import ExecutionResult, RemoteError

#: Longest single socket wait; bounds how late a lease holder notices death.
SLICE = 0.03

#: Seconds after a first interrupt before it is sent once more (see
#: :meth:`Execution.request_interrupt`); capped at half the interrupt grace.
RESEND = 1.0

#: Seconds an interrupted request's reply may trail its iopub idle.
REPLY_WAIT = 0.1

OutputHook = Callable[[dict], None]
StdinHandler = Callable[[str, bool], str]


@dataclass
class Channels:
    """The sockets of one worker kernel that a lease holder uses.

    Exactly one thread owns them at a time: the starter thread while the
    kernel starts, then each lease holder in turn.
    """

    session: Session
    shell: zmq.Socket
    iopub: zmq.Socket
    stdin: zmq.Socket

    def close(self) -> None:
        for sock in (self.shell, self.iopub, self.stdin):
            sock.close(linger=0)


def receive(session: Session, sock: zmq.Socket) -> dict | None:
    """The next message on ``sock`` (None if there is none), checked as ``Session.recv`` does.

    The signature is verified and recorded against replays, and the parts
    are parsed with ``session.unpack`` (orjson when it is installed), as in
    ``Session.deserialize``, which this skips for its ``extract_dates``: it
    parses every date of header and parent with dateutil, about a third of
    the client's CPU per execution, and nbpool reads no date. ``buffers``
    are bytes.

    Raises
    ------
    ValueError
        The message is unsigned, wrongly signed, or a replay.
    """
    try:
        frames = sock.recv_multipart(zmq.NOBLOCK)
    except zmq.Again:
        return None
    _, frames = session.feed_identities(frames)
    if len(frames) < 5:
        raise ValueError(f"malformed message: {len(frames)} parts, not at least 5")
    signature = frames[0]
    if session.auth is not None:
        if not signature:
            raise ValueError("Unsigned Message")
        history = session.digest_history
        if signature in history:
            raise ValueError(f"Duplicate Signature: {signature!r}")
        if not hmac.compare_digest(signature, session.sign(frames[1:5])):
            raise ValueError(f"Invalid Signature: {signature!r}")
        if session.digest_history_size:
            history.add(signature)
            if len(history) > session.digest_history_size:
                for _ in range(len(history) // 10):  # Session culls 10 % too
                    history.pop()
    unpack = session.unpack
    header = unpack(frames[1])
    msg = {
        "header": header,
        "msg_id": header.get("msg_id"),
        "msg_type": header.get("msg_type"),
        "parent_header": unpack(frames[2]),
        "metadata": unpack(frames[3]),
        "content": unpack(frames[4]),
        "buffers": frames[5:],
    }
    # A kernel of another protocol major version gets Session's adaptation.
    return msg if str(header.get("version", "5")).startswith("5") else adapt(msg)


def to_output(msg_type: str, content: dict) -> dict | None:
    """The nbformat-style output of an iopub message, or None if it is no output.

    ``update_display_data`` and ``clear_output`` keep their message type (the
    caller applies them); a display id stays under ``transient``.
    """
    if msg_type == "stream":
        return {"output_type": "stream", "name": content["name"], "text": content["text"]}
    if msg_type in ("display_data", "update_display_data", "execute_result"):
        out = {
            "output_type": msg_type,
            "data": content.get("data", {}),
            "metadata": content.get("metadata", {}),
        }
        if content.get("transient"):
            out["transient"] = content["transient"]
        if msg_type == "execute_result":
            out["execution_count"] = content.get("execution_count")
        return out
    if msg_type == "error":
        return {
            "output_type": "error",
            "ename": content.get("ename", ""),
            "evalue": content.get("evalue", ""),
            "traceback": content.get("traceback", []),
        }
    if msg_type == "clear_output":
        return {"output_type": "clear_output", "wait": bool(content.get("wait"))}
    return None


class _Outputs:
    """Accumulates iopub content into nbformat outputs, applying clears/updates.

    Stream text is kept as chunks (``stdout``, ``stderr`` and each stream
    item's ``text`` are deques of the strings the kernel sent, shared between
    them) and joined once, by :meth:`finished` and :meth:`text`: appending
    to one growing string would copy it at every chunk.

    ``limit`` bounds the characters of stream text kept (None: no bound).
    Beyond it the oldest text goes first, from ``stdout``/``stderr`` and the
    stream items alike (they hold the same chunks), and :attr:`dropped`
    counts it; :meth:`notice` is the line the result then starts with.
    """

    def __init__(self, hook: OutputHook | None, limit: int | None = None) -> None:
        self.items: list[dict] = []
        self.stdout: collections.deque[str] = collections.deque()
        self.stderr: collections.deque[str] = collections.deque()
        self.result: str | None = None
        self.error: RemoteError | None = None
        self.dropped = 0
        self._hook = hook
        self._clear_pending = False
        self._limit = limit
        self._kept = 0
        # Per kept chunk, oldest first: the stream deque and the item deque holding it.
        self._order: collections.deque[tuple[collections.deque, collections.deque]] = (
            collections.deque()
        )
        self._emptied = 0  # stream items the bound emptied, still in ``items``
        self._joins: dict[str, tuple[tuple, str]] = {}  # per stream: (its state, its text)

    def _append(self, out: dict) -> collections.deque | None:
        """Add ``out`` to the items; for a stream, the chunk deque its text went to."""
        if self._clear_pending:
            self.items.clear()
            self._clear_pending = False
        if out["output_type"] != "stream":
            self.items.append(dict(out))
            return None
        last = self.items[-1] if self.items else None
        if last is not None and last["output_type"] == "stream" and last["name"] == out["name"]:
            last["text"].append(out["text"])
        else:
            self.items.append({**out, "text": collections.deque([out["text"]])})
        return self.items[-1]["text"]

    def add(self, msg_type: str, content: dict) -> None:
        out = to_output(msg_type, content)
        if out is None:
            return
        named = None
        if msg_type == "stream":
            named = self.stdout if content["name"] == "stdout" else self.stderr
            named.append(out["text"])
        elif msg_type == "execute_result":
            self.result = out["data"].get("text/plain")
        elif msg_type == "error":
            self.error = RemoteError(out["ename"], out["evalue"], out["traceback"])
        elif msg_type == "clear_output":
            if out["wait"]:
                self._clear_pending = True
            else:
                self.items.clear()
        if msg_type == "update_display_data":
            self._update(out)
        elif msg_type != "clear_output":
            chunks = self._append(out)
            if named is not None and self._limit is not None:
                self._order.append((named, chunks))
                self._kept += len(out["text"])
                self._trim()
        if self._hook is not None:
            self._hook(out)

    def _trim(self) -> None:
        """Drop the oldest stream text until at most ``limit`` characters are kept."""
        excess = self._kept - self._limit
        while excess > 0:
            named, chunks = self._order[0]
            size = len(named[0])
            if size <= excess:
                self._order.popleft()
                named.popleft()
                chunks.popleft()
                self._emptied += not chunks
            else:  # the oldest kept chunk loses its head: the same string in both deques
                named[0] = chunks[0] = named[0][excess:]
                size = excess
            excess -= size
            self._kept -= size
            self.dropped += size
        if self._emptied > 16 and 2 * self._emptied > len(self.items):
            # Interleaved streams make many small items; the emptied ones go at
            # once, not one list.remove each.
            self.items = [i for i in self.items if i["output_type"] != "stream" or i["text"]]
            self._emptied = 0

    def _update(self, out: dict) -> None:
        display_id = out.get("transient", {}).get("display_id")
        for item in self.items:
            if display_id and item.get("transient", {}).get("display_id") == display_id:
                item["data"], item["metadata"] = out["data"], out["metadata"]

    def notice(self) -> str:
        """The line saying how much stream text the bound dropped ("" if none)."""
        if not self.dropped:
            return ""
        return (
            f"[nbpool: {_amount(self.dropped)} of earlier output were dropped "
            f"(output limit {_amount(self._limit)})]\n"
        )

    def text(self, name: str) -> str:
        """All the kept text of stream ``name``; stderr starts with the :meth:`notice`."""
        return self._joined(name) if name == "stdout" else self.notice() + self._joined(name)

    def _joined(self, name: str, chunks: collections.deque | None = None) -> str:
        """The text of ``chunks`` (default: all of stream ``name``), joined once.

        A stream output that holds every chunk of its stream (the usual case:
        one output per stream) shares the string with ``stdout``/``stderr``
        instead of a second copy of the whole text.
        """
        named = self.stdout if name == "stdout" else self.stderr
        if chunks is not None and len(chunks) != len(named):
            return "".join(chunks)  # an output's chunks are a subsequence of its stream's
        # Same length, first and last chunk: the same chunks (a trim replaces the first).
        key = (len(named), id(named[0]) if named else 0, id(named[-1]) if named else 0)
        cached = self._joins.get(name)
        if cached is None or cached[0] != key:
            cached = self._joins[name] = (key, "".join(named))
        return cached[1]

    def finished(self) -> list[dict]:
        """The outputs as nbformat stores them (no transient keys, stream text joined),
        after the :meth:`notice` as a first stderr output when text was dropped."""
        notice = self.notice()
        outputs = [{"output_type": "stream", "name": "stderr", "text": notice}] if notice else []
        for item in self.items:
            if item["output_type"] == "stream":
                if item["text"]:
                    outputs.append({**item, "text": self._joined(item["name"], item["text"])})
            else:
                outputs.append({k: v for k, v in item.items() if k != "transient"})
        return outputs


def _amount(chars: int) -> str:
    """A number of characters as the notice shows it (MB/kB count 1 character as a byte)."""
    if chars >= 1_000_000:
        return f"{chars / 1e6:.1f} MB"
    if chars >= 10_000:
        return f"{chars / 1e3:.1f} kB"
    return f"{chars} characters"


class Execution:
    """One shell request (:meth:`run`: an ``execute_request``; :meth:`call`: a private
    one) and the collection of everything it produced.

    Parameters
    ----------
    channels : Channels
        The leased worker's sockets; used only from the calling thread.
    check_alive : callable
        Raises :class:`WorkerDied` once the coordinator declared the worker dead.
    interrupt : callable
        Interrupts the worker (signal or control message, per its kernelspec).
    interrupt_grace : float
        How long an interrupted execution may take to wind down before the
        worker counts as unresponsive.

    ``finished`` is True once the reply and the iopub idle both arrived; a
    lease whose execution did not finish hands back a dirty worker.
    """

    def __init__(
        self,
        channels: Channels,
        *,
        check_alive: Callable[[], None],
        interrupt: Callable[[], None],
        interrupt_grace: float,
    ) -> None:
        self._ch = channels
        self._check_alive = check_alive
        self._interrupt = interrupt
        self._grace = interrupt_grace
        self.finished = True
        self._outputs: _Outputs | None = None
        self._interrupt_wanted = False

    def request_interrupt(self) -> None:
        """Ask for an interrupt from any thread; the collecting thread sends it.

        The signal goes out only once the kernel has started this request
        (iopub ``busy``): a SIGINT that lands between requests is swallowed
        by ipykernel and can cost the request its reply. ipykernel publishes
        ``busy`` a moment before it stops ignoring SIGINT, so a first signal
        can still be lost: it is sent again once, :data:`RESEND` later, if
        the execution has neither ended nor raised. An interrupted request
        may also end without a reply (the signal landed in ipykernel's own
        handler); its iopub ``idle`` is then the end. Whatever happens, the
        execution must end within the interrupt grace, or the worker counts
        as unresponsive (:class:`WorkerDied`, and it is replaced).
        """
        self._interrupt_wanted = True

    def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        on_output: OutputHook | None = None,
        stdin: StdinHandler | None = None,
        silent: bool = False,
        output_limit: int | None = None,
    ) -> ExecutionResult:
        """Execute ``code`` and block until its reply and idle status arrived.

        ``output_limit`` bounds the characters of stream text the result
        keeps (see :meth:`nbpool.core.lease.Lease.execute`); ``on_output``
        still gets every output.

        Raises
        ------
        ExecutionTimeout
            ``timeout`` passed; the worker was interrupted and went idle.
        WorkerDied
            The worker died, or did not wind down after an interrupt.
        KeyboardInterrupt
            The calling thread was interrupted; the worker was interrupted too.
        """
        started = time.monotonic()
        content = {
            "code": code,
            "silent": silent,
            "store_history": not silent,
            "user_expressions": {},
            "allow_stdin": stdin is not None,
            "stop_on_error": False,
        }
        self._request("execute_request", content, None, timeout, on_output, stdin, output_limit)
        out = self._outputs
        reply = self._reply["content"] if self._reply else {}
        return ExecutionResult(
            status=reply.get("status", "error"),
            outputs=out.finished(),
            stdout=out.text("stdout"),
            stderr=out.text("stderr"),
            result=out.result,
            error=out.error,
            execution_count=reply.get("execution_count"),
            duration=time.monotonic() - started,
        )

    def call(self, msg_type: str, content: dict, buffers: list) -> dict | None:
        """Send a shell request of a type the worker registered a handler for; wait for it.

        The reply is the ``*_reply`` of ``msg_type``, and it ends the request
        with the iopub idle, as for an execution (interrupts alike). Outputs
        on iopub are not kept.

        Returns
        -------
        dict or None
            The reply message, whole (its ``content`` and its binary
            ``buffers``); None when an interrupt ended the request before the
            handler replied.

        Raises
        ------
        WorkerDied, KeyboardInterrupt
            As :meth:`run`.
        """
        self._request(msg_type, content, buffers, None, None, None)
        return self._reply

    def _request(
        self,
        msg_type: str,
        content: dict,
        buffers: list | None,
        timeout: float | None,
        on_output: OutputHook | None,
        stdin: StdinHandler | None,
        output_limit: int | None = None,
    ) -> None:
        """Send one shell request and collect until it ended; map the ways it can fail."""
        started = time.monotonic()
        self._outputs = _Outputs(on_output, output_limit)
        self._stdin = stdin
        self.finished = False
        msg = self._ch.session.send(self._ch.shell, msg_type, content, buffers=buffers)
        self._msg_id = msg["header"]["msg_id"]
        self._reply_type = msg_type.removesuffix("_request") + "_reply"
        self._reply: dict | None = None
        self._idle = self._started = False
        self._idle_at = 0.0
        self._interrupts_sent = 0
        self._interrupt_deadline: float | None = None
        self._resend_at: float | None = None
        deadline = None if timeout is None else started + timeout
        try:
            self._collect(deadline)
        except KeyboardInterrupt:
            self._interrupt_and_drain()
            raise
        except _Unresponsive:
            raise WorkerDied(
                f"the worker ignored an interrupt for {self._grace:g} s; it is being restarted "
                "and the session's state is lost",
                self._outputs.finished(),
            ) from None
        except _Deadline:
            if self._interrupt_and_drain():
                raise ExecutionTimeout(
                    f"execution exceeded its {timeout:g} s timeout and was interrupted; "
                    "the session kept its state",
                    self._outputs.finished(),
                ) from None
            raise WorkerDied(
                f"execution exceeded its {timeout:g} s timeout and the worker ignored the "
                f"interrupt for {self._grace:g} s; it is being restarted and the session's "
                "state is lost",
                self._outputs.finished(),
            ) from None
        except WorkerDied as exc:
            exc.outputs = self._outputs.finished()
            raise

    def _collect(self, deadline: float | None) -> None:
        ch = self._ch
        poller = zmq.Poller()
        for sock in (ch.shell, ch.iopub, ch.stdin):
            poller.register(sock, zmq.POLLIN)
        next_check = time.monotonic() + SLICE
        while not self._ended():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise _Deadline
            if self._interrupt_wanted:
                self._send_interrupt(now)
            if now >= next_check:
                try:
                    self._check_alive()
                except WorkerDied:
                    self._drain(ch.iopub, self._on_iopub)  # keep what it sent before dying
                    raise
                next_check = now + SLICE
            wait = SLICE if deadline is None else min(SLICE, deadline - now)
            ready = dict(poller.poll(max(wait, 0) * 1000))
            if ch.iopub in ready:
                self._drain(ch.iopub, self._on_iopub)
            if ch.stdin in ready:
                self._drain(ch.stdin, self._on_stdin)
            if ch.shell in ready:
                self._drain(ch.shell, self._on_shell)
        self.finished = True

    def _ended(self) -> bool:
        """The request is over: idle, and its reply arrived or will not come.

        After an interrupt the reply may never come (the signal landed in
        ipykernel's own code); it is then given :data:`REPLY_WAIT` after the
        idle, as reply and idle travel on different sockets.
        """
        if not self._idle or self._reply is not None:
            return self._reply is not None and self._idle
        return self._interrupts_sent > 0 and time.monotonic() >= self._idle_at + REPLY_WAIT

    def _send_interrupt(self, now: float) -> None:
        """Send the wanted interrupt when due (see :meth:`request_interrupt`)."""
        if self._interrupt_deadline is None:
            self._interrupt_deadline = now + self._grace
        taken = self._outputs.error is not None  # it raised KeyboardInterrupt: no resend
        if self._started and (
            self._interrupts_sent == 0
            or (self._interrupts_sent == 1 and now >= self._resend_at and not taken)
        ):
            self._interrupts_sent += 1
            self._resend_at = now + min(RESEND, self._grace / 2)
            self._interrupt()
        if now >= self._interrupt_deadline:
            raise _Unresponsive

    def _drain(self, sock: zmq.Socket, handle: Callable[[dict], None]) -> None:
        while True:
            msg = receive(self._ch.session, sock)
            if msg is None:
                return
            if msg["parent_header"].get("msg_id") == self._msg_id:
                handle(msg)

    def _on_iopub(self, msg: dict) -> None:
        msg_type = msg["header"]["msg_type"]
        if msg_type == "status":
            state = msg["content"].get("execution_state")
            self._idle = state == "idle"
            if self._idle:
                self._idle_at = time.monotonic()
            self._started = self._started or state == "busy"
        else:
            self._outputs.add(msg_type, msg["content"])

    def _on_shell(self, msg: dict) -> None:
        if msg["header"]["msg_type"] == self._reply_type:
            self._reply = msg

    def _on_stdin(self, msg: dict) -> None:
        if msg["header"]["msg_type"] != "input_request" or self._stdin is None:
            return
        content = msg["content"]
        value = self._stdin(content.get("prompt", ""), bool(content.get("password")))
        self._ch.session.send(self._ch.stdin, "input_reply", {"value": value}, parent=msg)

    def _interrupt_and_drain(self) -> bool:
        """Interrupt the worker and wait for the execution to end; True if it did."""
        self.request_interrupt()
        try:
            self._collect(time.monotonic() + self._grace)
        except (_Deadline, _Unresponsive, WorkerDied, KeyboardInterrupt):
            return False
        return True


class _Deadline(Exception):
    """Internal: the collection deadline passed."""


class _Unresponsive(Exception):
    """Internal: an interrupted execution did not end within the grace."""
