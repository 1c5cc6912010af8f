"""Jobs in a real notebook kernel: ``%pool jobs``, ``%pool reattach``, the comm's
``follow``, the output bounds, and headless runs (nbclient) of ``--bg`` cells.

A "second client" is another jupyter_client connection to the same kernel:
it has its own session id, as a reloaded page or a second browser has.
"""

from __future__ import annotations

import queue
import time
import uuid

from jupyter_client.session import Session

LOAD = "%load_ext nbpool\n%config Pool.size = 1"

#: A bg job that prints 12 lines, one every 0.1 s after the flag file exists.
TWELVE = (
    "%%pool_exec --bg -s a -o job\n"
    "import os, time\n"
    "deadline = time.monotonic() + 30\n"
    "for i in range(12):\n"
    "    if i == 3:\n"
    "        while not os.path.exists({flag!r}) and time.monotonic() < deadline:\n"
    "            time.sleep(0.01)\n"
    "    print(f'line {{i}}', flush=True)\n"
    "    time.sleep(0.1)\n"
)
LINES = "".join(f"line {i}\n" for i in range(12))


def _second_client(kernel):
    """Another client of the kernel, with a session id of its own (as a reloaded page)."""
    own = kernel.km.session
    kc = kernel.km.client(session=Session(key=own.key, signature_scheme=own.signature_scheme))
    kc.start_channels()
    kc.wait_for_ready(timeout=30)
    return kc


def _run(kc, code: str, timeout: float = 60) -> tuple[dict, list[dict]]:
    """Execute ``code`` from client ``kc``; its reply and its iopub messages, until idle."""
    msg_id = kc.execute(code)
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"no idle within {timeout} s for {code!r}"
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        if msg["msg_type"] not in ("status", "execute_input"):
            messages.append(msg)
    reply = kc.get_shell_msg(timeout=timeout)
    return reply["content"], messages


def _stdout(messages: list[dict]) -> str:
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )


def _wait_for_line(kernel, text: str) -> None:
    """Read the first client's iopub until a stream with ``text`` went by."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = kernel._next_iopub(0.05)
        if msg is not None and text in msg["content"].get("text", ""):
            return
    raise AssertionError(f"no {text!r} within 30 s")


def test_reattach_from_a_second_client_shows_every_line_once_then_the_rest_live(kernel, tmp_path):
    """%pool reattach JOB in another client: the lines so far, then the rest live, each once,
    in order, ending with the handle line's final state; it returns when the job ends."""
    flag = tmp_path / "go"
    kernel.execute(LOAD)
    bg = kernel.execute(TWELVE.format(flag=str(flag)), cell_id="cell-1")
    assert "job 1" in bg["outputs"][0]["data"]["text/plain"]
    _wait_for_line(kernel, "line 2")
    other = _second_client(kernel)
    try:
        flag.touch()
        reply, messages = _run(other, "%pool reattach 1")
    finally:
        other.stop_channels()
    assert reply["status"] == "ok", reply
    assert _stdout(messages) == LINES
    kinds = [m["msg_type"] for m in messages]
    assert kinds[0] == "display_data" and kinds[-1] == "update_display_data", kinds
    assert "job 1: started at" in messages[0]["content"]["data"]["text/plain"]
    assert "job 1: done after" in messages[-1]["content"]["data"]["text/plain"]
    assert messages[0]["content"]["transient"] == messages[-1]["content"]["transient"]


def test_interrupting_a_reattach_stops_following_not_the_job(kernel, tmp_path):
    """Ctrl-C (a kernel interrupt) in a %pool reattach cell ends that cell with one line;
    the job runs to its end, and reattaching again shows all of it."""
    flag = tmp_path / "go"
    kernel.execute(LOAD)
    kernel.execute(TWELVE.format(flag=str(flag)), cell_id="cell-1")
    _wait_for_line(kernel, "line 2")
    interrupted = []

    def interrupt(outputs) -> None:
        if not interrupted and any("line 2" in o.get("text", "") for o in outputs):
            interrupted.append(True)
            kernel.km.interrupt_kernel()

    cut = kernel.execute("%pool reattach 1", during=interrupt)
    assert cut["reply"]["status"] == "ok", cut["reply"]
    notice = cut["outputs"][-1]
    assert notice["name"] == "stderr" and notice["text"] == (
        "nbpool: stopped following job 1; it runs on (`%pool reattach 1` shows it again)\n"
    )
    flag.touch()
    assert kernel.execute("job.result(30).ok")["outputs"][0]["data"]["text/plain"] == "True"
    again = kernel.execute("%pool reattach 1")["outputs"]
    assert "".join(o.get("text", "") for o in again if o.get("name") == "stdout") == LINES


def test_reattach_to_an_unknown_or_foreground_job_is_one_clear_line(kernel):
    """A job number that was never given, or a foreground job, is a one-line UsageError."""
    kernel.execute(LOAD)
    kernel.execute("%%pool_exec -s a\nx = 1")
    for line, expected in [
        ("%pool reattach 9", "UsageError: no job 9 (jobs: 1-1)\n"),
        ("%pool reattach", "UsageError: %pool reattach needs a JOB number (see `%pool jobs`)"),
        ("%pool reattach 1", "UsageError: job 1 ran in the foreground: its output is in its own"),
    ]:
        outputs = kernel.execute(line)["outputs"]
        text = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
        assert text.startswith(expected) and text.count("\n") == 1, (line, text)


def test_pool_jobs_lists_a_running_bg_cell(kernel, tmp_path):
    """%pool jobs: number, session, worker, state, start, duration, output size."""
    flag = tmp_path / "go"
    kernel.execute(LOAD)
    kernel.execute("%%pool_exec -s a\nx = 1")
    kernel.execute(TWELVE.format(flag=str(flag)), cell_id="cell-1")
    _wait_for_line(kernel, "line 2")
    outputs = kernel.execute("%pool jobs")["outputs"]
    flag.touch()
    lines = "".join(o.get("text", "") for o in outputs).splitlines()
    assert lines[0].split() == [
        "job",
        "session",
        "worker",
        "state",
        "started",
        "duration",
        "output",
    ]
    fg, bg = (line.split() for line in lines[1:])
    assert fg[:4] == ["1", "a", "w1", "done"], fg
    assert bg[:5] == ["2", "(bg)", "a", "w1", "running"], bg
    assert bg[-1] == "MB" and float(bg[-2]) >= 0.0, bg
    assert kernel.execute("job.result(30).ok")["outputs"][0]["data"]["text/plain"] == "True"


def test_output_beyond_the_bound_drops_the_oldest_with_a_notice(kernel):
    """A job over job_output_limit keeps its newest output; the restored output starts
    (after the handle line) with one stderr line saying how much was dropped."""
    kernel.execute(LOAD + "\n%config PoolMagics.job_output_limit = 2000")
    code = (
        "%%pool_exec --bg -s a -o job\n"
        "from IPython.display import display\n"
        "for i in range(40):\n"
        "    print(f'{i:03d}' + 'x' * 96, flush=True)\n"
        "    if i % 10 == 9:\n"
        "        display({'text/plain': f'display {i}'}, raw=True)\n"
    )
    kernel.execute(code, cell_id="cell-1")
    kernel.execute("job.result(30)")
    outputs = kernel.execute("%pool reattach 1")["outputs"]
    handle, notice, *rest = outputs
    assert "job 1" in handle["data"]["text/plain"]
    assert notice["name"] == "stderr"
    assert notice["text"].startswith("nbpool: ") and notice["text"].count("\n") == 1
    assert " of job 1 (" in notice["text"] and "keeps its last 0.0 MB (%config" in notice["text"]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in rest)
    assert len(text) <= 2000 and text.endswith("display 39")
    assert "039" + "x" * 96 in text and "000x" not in text


class _Follower:
    """The frontend side of the nbpool.status comm on a second client."""

    def __init__(self, kc) -> None:
        self.kc = kc
        self.comm_id = uuid.uuid4().hex
        self.messages: list[dict] = []
        self._send(
            "comm_open",
            {"comm_id": self.comm_id, "target_name": "nbpool.status", "data": {"version": 1}},
        )

    def _send(self, msg_type: str, content: dict) -> None:
        self.kc.shell_channel.send(self.kc.session.msg(msg_type, content))

    def request(self, **data) -> str:
        data.setdefault("request", uuid.uuid4().hex)
        self._send("comm_msg", {"comm_id": self.comm_id, "data": data})
        return data["request"]

    def read(self, until, timeout: float = 30) -> list[dict]:
        """Comm payloads (in order) until ``until(payloads)`` holds."""
        deadline = time.monotonic() + timeout
        while not until(self.messages):
            assert time.monotonic() < deadline, self.messages[-5:]
            try:
                msg = self.kc.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                continue
            if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == self.comm_id:
                self.messages.append(msg["content"]["data"])
        return self.messages


def _replay(outputs: list[dict], events: list[dict]) -> list[dict]:
    """Apply ``job`` events to a cell's outputs as the frontend does."""
    outputs = [dict(o) for o in outputs]
    for e in events:
        op = e["op"]
        if op == "append":
            outputs.append(dict(e["output"]))
        elif op == "stream":
            outputs[e["index"]]["text"] += e["text"]
        elif op == "set":
            outputs[e["index"]] = dict(e["output"])
        elif op == "clear":
            outputs = []
    return outputs


def test_follow_from_a_second_client_gives_every_line_once_then_end(kernel, tmp_path):
    """The comm's follow of a running 12-line job from another client: its reply plus the
    events after its seq hold every line once, in order, then end; cells lists the job
    with the cellId of the request that ran it, and the client that sent it."""
    flag = tmp_path / "go"
    kernel.execute(LOAD)
    kernel.execute(TWELVE.format(flag=str(flag)), cell_id="cell-1")
    _wait_for_line(kernel, "line 2")
    other = _second_client(kernel)
    try:
        f = _Follower(other)
        f.read(lambda ms: any(m["kind"] == "cells" and m["cells"] for m in ms))
        (cell,) = next(m for m in f.messages if m["kind"] == "cells")["cells"]
        assert cell["job"] == 1 and cell["cell_id"] == "cell-1" and cell["background"]
        assert cell["client"] == kernel.kc.session.session != other.session.session
        assert cell["state"] == "running" and cell["session"] == "a"
        request = f.request(action="follow", job=1)
        flag.touch()
        f.read(lambda ms: any(m["kind"] == "job" and m["event"]["op"] == "end" for m in ms))
    finally:
        other.stop_channels()
    (reply,) = [m for m in f.messages if m.get("request") == request]
    assert reply["ok"] and reply["state"] == "running", reply
    events = [m for m in f.messages if m["kind"] == "job"]
    seqs = [m["seq"] for m in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    later = [m["event"] for m in events if m["seq"] > reply["seq"]]
    assert later[-1] == {"op": "end", "state": "done"}
    outputs = _replay(reply["outputs"], later[:-1])
    assert "job 1: done after" in outputs[0]["data"]["text/plain"]
    assert "".join(o["text"] for o in outputs[1:]) == LINES


def test_headless_bg_cells_each_get_their_own_lines_and_final_handle(run_notebook):
    """nbclient (no cellId): two --bg cells whose output comes while a later cell waits on
    them each end up with their own lines under a handle line in its final state."""
    job = (
        "%%pool_exec --bg -s {s} -o {s}\n"
        "import time\n"
        "for i in range(3):\n"
        "    time.sleep(0.3)\n"
        "    print('{s}', i, flush=True)\n"
    )
    run = run_notebook(
        [
            "%load_ext nbpool\n%config Pool.size = 2\n%pool start",
            job.format(s="left"),
            job.format(s="right"),
            "for h in (left, right):\n    h.result(30)\nprint('both done')",
        ]
    )
    assert run.error is None, run.error
    for index, name in [(1, "left"), (2, "right")]:
        (shown,) = run.outputs(index)
        first, *lines = shown["data"]["text/plain"].splitlines()
        assert f"session={name!r}, job {index}: done after" in first, first
        assert lines == [f"{name} {i}" for i in range(3)]
    assert run.outputs(3) == [{"output_type": "stream", "name": "stdout", "text": "both done\n"}]
