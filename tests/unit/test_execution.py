"""One execution on a worker's sockets (:class:`nbpool.kernels.execution.Execution`),
against a scripted kernel: real Jupyter messages, no kernel process.

The kernel end is a thread that owns the other ends of in-process ZMQ sockets
and speaks through its own :class:`jupyter_client.session.Session` with the
client's key, so every message is signed, framed and checked as on a real
worker's sockets. It waits for the ``execute_request`` and plays a script
against it; the rules below are about what the client makes of that.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import zmq
from jupyter_client.session import Session

from nbpool.errors import ExecutionTimeout, WorkerDied
from nbpool.kernels.execution import Channels, Execution, _Outputs

KEY = b"nbpool-test-key"


class ScriptedKernel(threading.Thread):
    """The kernel end of one worker's shell, iopub and stdin sockets.

    It waits for one ``execute_request`` and calls ``script(self)``, which
    answers with :meth:`iopub`, :meth:`reply`, :meth:`ask`. ``interrupts``
    counts the client's interrupts and ``interrupted`` is set by the first;
    ``release`` ends a script that waits forever (the test's teardown sets it).
    """

    def __init__(self, context: zmq.Context, endpoints: dict[str, str], script) -> None:
        super().__init__(daemon=True)
        self._context = context
        self._endpoints = endpoints
        self._script = script
        self.session = Session(key=KEY, username="kernel")
        self.connected = threading.Event()
        self.interrupted = threading.Event()
        self.release = threading.Event()
        self.interrupts = 0
        self.request: dict | None = None
        self.error: BaseException | None = None

    def interrupt(self) -> None:
        """The client's interrupt (a signal, for a real kernel)."""
        self.interrupts += 1
        self.interrupted.set()

    def run(self) -> None:
        sockets = {name: self._context.socket(zmq.PAIR) for name in self._endpoints}
        try:
            for name, sock in sockets.items():
                sock.connect(self._endpoints[name])
            self._shell, self._iopub, self._stdin = (
                sockets[n] for n in ("shell", "iopub", "stdin")
            )
            self.connected.set()
            self.request = self._receive(self._shell, "execute_request")
            self._script(self)
        except BaseException as exc:  # reported by the test's teardown
            self.error = exc
        finally:
            for sock in sockets.values():
                sock.close(linger=0)

    def _receive(self, sock: zmq.Socket, msg_type: str) -> dict:
        if not sock.poll(10_000):
            raise AssertionError(f"the client sent no {msg_type} within 10 s")
        _, msg = self.session.recv(sock)
        assert msg["header"]["msg_type"] == msg_type, msg["header"]
        return msg

    def iopub(self, msg_type: str, content: dict, parent: dict | None = None) -> None:
        """Publish on iopub, as a reply to the request unless ``parent`` says otherwise."""
        self.session.send(self._iopub, msg_type, content, parent=parent or self.request)

    def status(self, state: str) -> None:
        self.iopub("status", {"execution_state": state})

    def stream(self, name: str, text: str) -> None:
        self.iopub("stream", {"name": name, "text": text})

    def display(self, msg_type: str, text: str, display_id: str) -> None:
        """A ``display_data`` or ``update_display_data`` of ``text`` with that display id."""
        content = {"data": {"text/plain": text}, "metadata": {}}
        self.iopub(msg_type, {**content, "transient": {"display_id": display_id}})

    def reply(self, status: str = "ok", execution_count: int = 1, **content) -> None:
        """The ``execute_reply`` on shell."""
        content = {"status": status, "execution_count": execution_count, **content}
        self.session.send(self._shell, "execute_reply", content, parent=self.request)

    def ask(self, prompt: str, password: bool = False) -> str:
        """An ``input_request`` on stdin; the value of the client's ``input_reply``."""
        content = {"prompt": prompt, "password": password}
        self.session.send(self._stdin, "input_request", content, parent=self.request)
        return self._receive(self._stdin, "input_reply")["content"]["value"]

    def wait(self, event: threading.Event, what: str) -> None:
        if not event.wait(10):
            raise AssertionError(f"the kernel waited 10 s for {what}")


@pytest.fixture
def play():
    """play(script, check_alive=..., interrupt_grace=5) -> (Execution, ScriptedKernel)."""
    context = zmq.Context()
    opened: list[tuple[Channels, ScriptedKernel]] = []

    def play(script, *, check_alive=lambda: None, interrupt_grace: float = 5.0):
        endpoints = {name: f"inproc://{uuid.uuid4()}" for name in ("shell", "iopub", "stdin")}
        sockets = {name: context.socket(zmq.PAIR) for name in endpoints}
        for name, sock in sockets.items():
            sock.bind(endpoints[name])
        channels = Channels(Session(key=KEY, username="client"), **sockets)
        kernel = ScriptedKernel(context, endpoints, script)
        opened.append((channels, kernel))
        kernel.start()
        # A PAIR socket without its peer blocks the send: start once the kernel is there.
        assert kernel.connected.wait(10), "the scripted kernel never connected"
        execution = Execution(
            channels,
            check_alive=check_alive,
            interrupt=kernel.interrupt,
            interrupt_grace=interrupt_grace,
        )
        return execution, kernel

    yield play
    for channels, kernel in opened:
        kernel.release.set()
        kernel.join(10)
        channels.close()
    context.term()
    for _, kernel in opened:
        assert not kernel.is_alive(), "the scripted kernel did not end"
        if kernel.error is not None:
            raise kernel.error


def test_stream_result_reply_and_idle_end_the_run(play):
    """Busy, a stream, an execute_result, the reply and idle: the run returns an ok
    result with the stream, the value and the reply's execution count."""

    def script(k):
        k.status("busy")
        k.stream("stdout", "hi\n")
        k.iopub(
            "execute_result", {"data": {"text/plain": "42"}, "metadata": {}, "execution_count": 3}
        )
        k.reply(execution_count=3)
        k.status("idle")

    execution, kernel = play(script)
    res = execution.run("print('hi'); 42")
    assert kernel.request["content"]["code"] == "print('hi'); 42"
    assert res.ok and res.status == "ok" and execution.finished
    assert res.stdout == "hi\n" and res.stderr == "" and res.result == "42"
    assert res.execution_count == 3 and res.error is None
    assert res.outputs == [
        {"output_type": "stream", "name": "stdout", "text": "hi\n"},
        {
            "output_type": "execute_result",
            "data": {"text/plain": "42"},
            "metadata": {},
            "execution_count": 3,
        },
    ]


def test_idle_before_the_reply_waits_for_the_reply(play):
    """Reply and idle travel on different sockets: an idle that overtakes the reply
    does not end the run; the reply's status and count are in the result."""
    idle_sent, collecting = threading.Event(), threading.Event()
    checks_after_idle = []

    def check_alive():
        # Two liveness checks after the idle went out: the client read the idle
        # (its poll ran between them) and still collects.
        if idle_sent.is_set():
            checks_after_idle.append(None)
            if len(checks_after_idle) == 2:
                collecting.set()

    def script(k):
        k.status("busy")
        k.status("idle")
        idle_sent.set()
        k.wait(collecting, "the client to go on collecting after the idle")
        k.reply(execution_count=7)

    execution, _ = play(script, check_alive=check_alive)
    res = execution.run("pass")
    assert res.status == "ok" and res.execution_count == 7


def test_an_error_reply_is_a_result_not_an_exception(play):
    """User code that raises: an ``error`` output and an error reply give a result
    with ``ok`` False and the remote error's name, value and traceback."""
    traceback = ["Traceback (most recent call last):", "ZeroDivisionError: division by zero"]

    def script(k):
        k.status("busy")
        k.stream("stdout", "before\n")
        error = {"ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": traceback}
        k.iopub("error", error)
        k.reply("error", execution_count=2, **error)
        k.status("idle")

    execution, _ = play(script)
    res = execution.run("print('before'); 1 / 0")
    assert not res.ok and res.status == "error" and execution.finished
    assert (res.error.ename, res.error.evalue, res.error.traceback) == (
        "ZeroDivisionError",
        "division by zero",
        traceback,
    )
    assert [o["output_type"] for o in res.outputs] == ["stream", "error"]
    assert res.stdout == "before\n"


def test_outputs_keep_the_kernels_order_and_apply_clears_and_updates(play):
    """Outputs come back (and reach the hook) in the order the kernel sent them:
    stdout and stderr stay interleaved, adjacent text of one stream is joined,
    a display update changes the output it names, clear_output(wait=True)
    clears when the next output arrives. Messages of another request are ignored."""

    def script(k):
        k.iopub("stream", {"name": "stdout", "text": "stale\n"}, parent={"msg_id": "earlier"})
        k.status("busy")
        k.stream("stdout", "a")
        k.stream("stdout", "b\n")
        k.stream("stderr", "warn\n")
        k.stream("stdout", "c\n")
        k.display("display_data", "v1", "d1")
        k.display("update_display_data", "v2", "d1")
        k.iopub("clear_output", {"wait": True})
        k.stream("stdout", "after clear\n")
        k.reply()
        k.status("idle")

    seen: list[dict] = []
    execution, _ = play(script)
    res = execution.run("...", on_output=seen.append)
    assert [
        (o["output_type"], o.get("name") or o.get("data", {}).get("text/plain")) for o in seen
    ] == [
        ("stream", "stdout"),
        ("stream", "stdout"),
        ("stream", "stderr"),
        ("stream", "stdout"),
        ("display_data", "v1"),
        ("update_display_data", "v2"),
        ("clear_output", None),
        ("stream", "stdout"),
    ]
    assert res.stdout == "ab\nc\nafter clear\n" and res.stderr == "warn\n"
    assert res.outputs == [{"output_type": "stream", "name": "stdout", "text": "after clear\n"}]


def test_display_update_changes_the_output_it_names(play):
    """Without a clear, an update_display_data replaces the data of the display
    with its id, in place; the transient id is not kept in the outputs."""

    def script(k):
        k.status("busy")
        k.display("display_data", "v1", "d")
        k.display("update_display_data", "v2", "d")
        k.stream("stdout", "end\n")
        k.reply()
        k.status("idle")

    execution, _ = play(script)
    res = execution.run("...")
    assert res.outputs == [
        {"output_type": "display_data", "data": {"text/plain": "v2"}, "metadata": {}},
        {"output_type": "stream", "name": "stdout", "text": "end\n"},
    ]


def test_input_requests_are_answered_on_stdin(play):
    """An input_request is answered by the stdin handler with its prompt and
    password flag; the kernel gets the value in an input_reply."""
    asked = []

    def script(k):
        k.status("busy")
        k.stream("stdout", f"got {k.ask('name? ')} and {k.ask('pin: ', password=True)}\n")
        k.reply()
        k.status("idle")

    def stdin(prompt, password):
        asked.append((prompt, password))
        return "secret" if password else "ada"

    execution, kernel = play(script)
    res = execution.run("input()", stdin=stdin)
    assert kernel.request["content"]["allow_stdin"] is True
    assert asked == [("name? ", False), ("pin: ", True)]
    assert res.stdout == "got ada and secret\n"


def test_timeout_interrupts_and_raises_execution_timeout_with_the_outputs(play):
    """At its timeout the run interrupts the worker; once the interrupted request
    ended (error reply, idle) it raises ExecutionTimeout carrying the outputs so
    far, and the execution counts as finished (the session keeps its state)."""

    def script(k):
        k.status("busy")
        k.stream("stdout", "working\n")
        k.wait(k.interrupted, "the interrupt")
        error = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": ["KeyboardInterrupt"]}
        k.iopub("error", error)
        k.reply("error", **error)
        k.status("idle")

    execution, kernel = play(script)
    with pytest.raises(
        ExecutionTimeout, match="exceeded its 0.2 s timeout and was interrupted"
    ) as info:
        execution.run("while True: pass", timeout=0.2)
    assert kernel.interrupts == 1 and execution.finished
    assert [o["output_type"] for o in info.value.outputs] == ["stream", "error"]
    assert info.value.outputs[0]["text"] == "working\n"


def test_no_interrupt_reaches_a_kernel_before_it_started_the_request(play):
    """A timeout that passes before the kernel said ``busy`` holds the interrupt
    back (a signal between requests would be swallowed) and sends it once the
    kernel started the request."""
    deadline: list[float] = []
    late_checks: list[None] = []
    past_deadline = threading.Event()
    interrupts_before_busy: list[int] = []

    def check_alive():
        if deadline and time.monotonic() > deadline[0]:
            late_checks.append(None)
            if len(late_checks) == 3:  # the client looped on with the interrupt wanted
                past_deadline.set()

    def script(k):
        k.wait(past_deadline, "the client's timeout to pass")
        interrupts_before_busy.append(k.interrupts)
        k.status("busy")
        k.wait(k.interrupted, "the interrupt")
        error = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": []}
        k.reply("error", **error)
        k.status("idle")

    execution, kernel = play(script, check_alive=check_alive)
    deadline.append(time.monotonic() + 0.2)
    with pytest.raises(ExecutionTimeout):
        execution.run("while True: pass", timeout=0.2)
    assert interrupts_before_busy == [0] and kernel.interrupts == 1


def test_an_interrupted_request_may_end_without_a_reply(play):
    """An interrupt that lands in the kernel's own code can cost the request its
    reply: after an interrupt, the idle alone ends it, and the timeout is still an
    ExecutionTimeout, not a dead worker."""

    def script(k):
        k.status("busy")
        k.wait(k.interrupted, "the interrupt")
        k.status("idle")
        k.wait(k.release, "the end of the test")  # no reply, ever

    execution, _ = play(script)
    with pytest.raises(ExecutionTimeout, match="was interrupted; the session kept its state"):
        execution.run("while True: pass", timeout=0.2)
    assert execution.finished


def test_a_worker_that_ignores_the_interrupt_is_declared_dead(play):
    """A worker that does not end within the interrupt grace after the timeout's
    interrupt is WorkerDied (it will be replaced), with what it printed; the
    execution did not finish, so the lease hands back a dirty worker."""

    def script(k):
        k.status("busy")
        k.stream("stdout", "stuck\n")
        k.wait(k.release, "the end of the test")

    execution, kernel = play(script, interrupt_grace=0.5)
    with pytest.raises(WorkerDied, match="ignored the interrupt for 0.5 s") as info:
        execution.run("while True: pass", timeout=0.2)
    assert kernel.interrupts >= 1 and not execution.finished
    assert info.value.outputs == [{"output_type": "stream", "name": "stdout", "text": "stuck\n"}]


def test_a_worker_declared_dead_ends_the_run_with_what_it_sent(play):
    """When the coordinator declares the worker dead mid-run, the holder gets
    WorkerDied at its next check, with every output the worker sent before,
    also those still unread on the socket."""
    go, sent = threading.Event(), threading.Event()

    def check_alive():  # the coordinator's verdict, once the last words are on the socket
        go.set()
        assert sent.wait(10), "the kernel never sent its last words"
        raise WorkerDied("worker w1 was killed by signal 9")

    def script(k):
        k.status("busy")
        k.stream("stdout", "early\n")
        k.wait(go, "the client's liveness check")
        k.stream("stdout", "last words\n")
        sent.set()
        k.wait(k.release, "the end of the test")

    execution, _ = play(script, check_alive=check_alive)
    with pytest.raises(WorkerDied, match="killed by signal 9") as info:
        execution.run("crash()")
    assert info.value.outputs == [
        {"output_type": "stream", "name": "stdout", "text": "early\nlast words\n"}
    ]
    assert not execution.finished


def streams(outputs: list[dict]) -> list[tuple[str, str]]:
    """(name, text) of each output; a display's text/plain under its type."""
    return [
        (o.get("name") or o["output_type"], o.get("text") or o["data"]["text/plain"])
        for o in outputs
    ]


def notice(dropped: str, limit: str) -> str:
    return f"[nbpool: {dropped} of earlier output were dropped (output limit {limit})]\n"


def test_an_output_limit_keeps_the_newest_stream_text_and_says_what_went(play):
    """Beyond ``output_limit`` characters the oldest stream text goes first, across
    stdout and stderr (a chunk partly): outputs keep their order, an emptied stream
    output disappears, a display keeps its place and takes its update, and the result
    starts with the notice (in stderr and as the first output). The hook still gets
    every output whole."""

    def script(k):
        k.status("busy")
        k.stream("stdout", "aaaa")
        k.display("display_data", "v1", "d")
        k.stream("stderr", "bbbb")
        k.stream("stdout", "cccc")
        k.display("update_display_data", "v2", "d")
        k.reply()
        k.status("idle")

    seen: list[dict] = []
    execution, _ = play(script)
    res = execution.run("...", on_output=seen.append, output_limit=6)
    told = notice("6 characters", "6 characters")
    assert streams(res.outputs) == [
        ("stderr", told),
        ("display_data", "v2"),
        ("stderr", "bb"),
        ("stdout", "cccc"),
    ]
    assert res.stdout == "cccc" and res.stderr == told + "bb"
    assert [o.get("text") for o in seen if o["output_type"] == "stream"] == ["aaaa", "bbbb", "cccc"]


def test_the_limit_counts_cleared_text_and_keeps_the_clear():
    """Text a clear_output removed from the outputs is still in ``stdout`` and still
    counts; the clear (also wait=True, at the next output) applies as without a limit."""
    out = _Outputs(None, 6)
    out.add("stream", {"name": "stdout", "text": "one\n"})
    out.add("clear_output", {"wait": True})
    out.add("stream", {"name": "stdout", "text": "two\n"})
    told = notice("2 characters", "6 characters")
    assert streams(out.finished()) == [("stderr", told), ("stdout", "two\n")]
    assert out.text("stdout") == "e\ntwo\n" and out.text("stderr") == told
    out.add("clear_output", {"wait": False})
    assert out.finished() == [{"output_type": "stream", "name": "stderr", "text": told}]


def test_one_chunk_larger_than_the_limit_keeps_its_tail():
    """A single chunk over the limit keeps its last ``limit`` characters; the notice
    counts in kB and MB once the amounts are large."""
    out = _Outputs(None, 3)
    out.add("stream", {"name": "stdout", "text": "0123456789"})
    assert out.text("stdout") == "789" and out.dropped == 7
    big = _Outputs(None, 1_000_000)
    big.add("stream", {"name": "stderr", "text": "x" * 3_000_000 + "end"})
    told = notice("2.0 MB", "1.0 MB")
    assert big.text("stderr") == told + "x" * 999_997 + "end"
    small = _Outputs(None, 20_000)
    small.add("stream", {"name": "stdout", "text": "y" * 32_500})
    assert small.notice() == notice("12.5 kB", "20.0 kB")


def test_interleaved_streams_under_a_limit_keep_only_the_newest_outputs():
    """Alternating stdout and stderr make one output per chunk; under a limit the
    outputs whose text went are gone, the newest stay in order, and what each stream
    keeps is its share of the newest text."""
    out = _Outputs(None, 10)
    for i in range(200):
        out.add("stream", {"name": "stdout" if i % 2 == 0 else "stderr", "text": f"{i % 10}\n"})
    told = notice("390 characters", "10 characters")
    newest = [("stderr", "5\n"), ("stdout", "6\n"), ("stderr", "7\n"), ("stdout", "8\n")]
    assert streams(out.finished()) == [("stderr", told), *newest, ("stderr", "9\n")]
    assert out.text("stdout") == "6\n8\n" and out.text("stderr") == told + "5\n7\n9\n"
    assert len(out.items) < 30  # emptied outputs do not pile up


def test_no_limit_or_a_limit_not_reached_keeps_everything():
    """``None`` keeps every character; a limit that the text only reaches drops
    nothing and adds no notice. Adjacent text of one stream is one output, whose
    text is the very string of ``stdout``."""
    chunks = [f"line {i}\n" for i in range(1000)]
    whole = "".join(chunks)
    for limit in (None, len(whole)):
        out = _Outputs(None, limit)
        for chunk in chunks:
            out.add("stream", {"name": "stdout", "text": chunk})
        out.add("stream", {"name": "stderr", "text": ""})
        assert out.finished() == [
            {"output_type": "stream", "name": "stdout", "text": whole},
            {"output_type": "stream", "name": "stderr", "text": ""},
        ]
        assert out.text("stdout") == whole and out.text("stderr") == "" and out.dropped == 0
        # The one stdout output and ``stdout`` share the text: one copy, not two.
        assert out.finished()[0]["text"] is out.text("stdout")
