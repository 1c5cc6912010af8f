"""``%%pool_exec --bg`` in a real notebook kernel: handles, parallelism, ordering, cancel.

nbclient drops output that arrives for a cell after it finished, so most of
these tests look at results through the handle (tests/notebook/test_jobs.py
has the headless display that carries a bg cell's output there); tests/browser
checks where the live output of a background cell lands.
"""

from __future__ import annotations

LOAD = "%load_ext nbpool\n%config Pool.size = 2"


def test_bg_returns_at_once_with_a_handle(run_notebook):
    """--bg returns before the code ran; -o stores a handle whose result() is the ExecutionResult."""
    run = run_notebook(
        [
            LOAD + "\n%pool start",
            "%%pool_exec --bg -s a -o job\nimport time\ntime.sleep(1)\nprint('done')\n6 * 7",
            "print(job.done(), job.state)",
            "res = job.result(timeout=30)\nprint(res.ok, repr(res.stdout), res.result, job.state)",
            "print(repr(job))",
        ]
    )
    assert run.error is None, run.error
    (line,) = run.outputs(1)
    assert "pool_exec --bg session='a'" in line["data"]["text/plain"]
    assert run.text(2) == "False running\n"
    assert run.text(3) == "True 'done\\n' 42 done\n"
    assert run.text(4).startswith("<pool_exec --bg session='a': done, 1.")


def test_bg_cells_on_different_sessions_run_in_parallel(run_notebook):
    """Two 1.5 s --bg cells on two sessions (two workers) finish in well under 3 s together."""
    sleep = "%%pool_exec --bg -s {s} -o {s}\nimport time\nt0 = time.time(); time.sleep(1.5); (t0, time.time())"
    run = run_notebook(
        [
            LOAD + "\n%pool start",
            sleep.format(s="a"),
            sleep.format(s="b"),
            "import ast\n(s1, e1), (s2, e2) = (ast.literal_eval(h.result(30).result) for h in (a, b))\n"
            "print(max(e1, e2) - min(s1, s2) < 2.6, max(s1, s2) < min(e1, e2))",
        ]
    )
    assert run.error is None, run.error
    assert run.text(3) == "True True\n"


def test_bg_cell_on_a_busy_session_queues_behind_it_in_order(run_notebook):
    """--bg cells of one session run one after another, in submission order."""
    run = run_notebook(
        [
            LOAD,
            "%%pool_exec -s a\nlog = []",
            *(
                f"%%pool_exec --bg -s a -o h{i}\nimport time\ntime.sleep(0.2)\nlog.append({i})"
                for i in range(3)
            ),
            "print(h0.state in ('running', 'queued'), h2.state)",
            "for h in (h0, h1, h2):\n    h.result(30)",
            "%%pool_exec -s a\nprint(log)",
        ]
    )
    assert run.error is None, run.error
    assert run.text(5) == "True queued\n"
    assert run.text(7) == "[0, 1, 2]\n"


def test_cancel_interrupts_a_running_bg_cell_and_withdraws_a_queued_one(run_notebook, tmp_path):
    """cancel() interrupts the running cell (session kept) and takes a queued one out of the queue."""
    marker = tmp_path / "started"
    run = run_notebook(
        [
            LOAD,
            "%%pool_exec -s a\nkept = 'state'",
            f"%%pool_exec --bg -s a -o running\nimport pathlib, time\n"
            f"pathlib.Path({str(marker)!r}).touch()\ntime.sleep(30)",
            "%%pool_exec --bg -s a -o queued\nkept = 'overwritten'",
            f"import os, time\nt0 = time.time()\n"
            f"while not os.path.exists({str(marker)!r}) and time.time() - t0 < 10:\n    time.sleep(0.02)\n"
            "print(queued.cancel(), running.cancel())",
            "while not (running.done() and queued.done()) and time.time() - t0 < 15:\n"
            "    time.sleep(0.02)\n"
            "print(running.state, queued.state, time.time() - t0 < 10)",
            "%%pool_exec -s a\nprint(kept)",
        ]
    )
    assert run.error is None, run.error
    assert run.text(4) == "True True\n"
    assert run.text(5) == "cancelled cancelled True\n"
    assert run.text(6) == "state\n"


def test_bg_failure_is_reported_by_the_handle(run_notebook):
    """A --bg cell whose code raises ends 'failed: <ename>'; result() carries the remote error."""
    run = run_notebook(
        [
            LOAD,
            "%%pool_exec --bg -o job\nraise ValueError('bad input')",
            "res = job.result(30)\nprint(res.ok, res.error, '|', job.state)",
        ]
    )
    assert run.error is None, run.error
    assert run.text(2) == "False ValueError: bad input | failed: ValueError\n"


def test_a_bg_cell_says_its_session_was_reset_before_its_outputs(kernel):
    """As in a foreground cell, the reset notice comes first in the bg cell's own output
    (a cell with a cellId, as JupyterLab runs it: live stream messages)."""
    kernel.execute(LOAD)
    kernel.execute("%%pool_exec -s a\nx = 1")
    kernel.execute("%%pool_exec -s a\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    bg = kernel.execute("%%pool_exec --bg -s a -o job\nprint('after the reset')", cell_id="bg")
    assert kernel.execute("job.result(30).stdout")["reply"]["status"] == "ok"
    kernel.drain(0.5)
    streams = [
        (m["content"]["name"], m["content"]["text"])
        for _, m in kernel.iopub
        if m["parent_header"].get("msg_id") == bg["msg_id"] and m["msg_type"] == "stream"
    ]
    assert [name for name, _ in streams] == ["stderr", "stdout"], streams
    assert streams[0][1].startswith("nbpool: session 'a' starts from a fresh state:")
    assert streams[1][1] == "after the reset\n"


#: Makes the pool run --bg work in a fresh ``contextvars.Context()`` instead of a copy
#: of the cell's: the thread then inherits nothing of the cell (as with ipykernel
#: #1559, which stops routing by an inherited context), so only an explicit parent
#: header can put its output in the right cell.
FRESH_CONTEXT = (
    "import contextvars, types, nbpool.pool\n"
    "nbpool.pool.contextvars = types.SimpleNamespace(copy_context=contextvars.Context)"
)

#: A --bg cell whose outputs come only once the next cell runs (it creates the flag).
LATE_OUTPUT = (
    "%%pool_exec --bg -s a -o job\n"
    "import os, time\n"
    "deadline = time.monotonic() + 30\n"
    "while not os.path.exists({flag!r}) and time.monotonic() < deadline:\n"
    "    time.sleep(0.01)\n"
    "print('from the bg cell')\n"
    "from IPython.display import display\n"
    "display({{'text/plain': 'shown by the bg cell'}}, raw=True)\n"
    "42"
)


def test_bg_output_lands_in_its_cell_without_the_cells_context(kernel, tmp_path):
    """Output of a --bg cell whose job thread has a fresh context still names its own cell
    (a cell with a cellId, as JupyterLab runs it: live messages with the cell's parent)."""
    flag = str(tmp_path / "next-cell-runs")
    kernel.execute(LOAD)
    kernel.execute(FRESH_CONTEXT)
    bg = kernel.execute(LATE_OUTPUT.format(flag=flag), cell_id="bg")
    later = kernel.execute(f"open({flag!r}, 'w').close()\njob.result(30).ok")
    assert later["outputs"][-1]["data"]["text/plain"] == "True"
    kernel.drain(0.5)

    def parents_of(wanted: str) -> list[str]:
        found = []
        for _, msg in kernel.iopub:
            content = msg["content"]
            text = content.get("text") or content.get("data", {}).get("text/plain", "")
            if wanted in text:
                found.append(msg["parent_header"].get("msg_id"))
        return found

    assert parents_of("from the bg cell") == [bg["msg_id"]]
    assert parents_of("shown by the bg cell") == [bg["msg_id"]]
    assert parents_of("42") == [bg["msg_id"]]
    updates = [m for _, m in kernel.iopub if m["msg_type"] == "update_display_data"]
    assert [m["parent_header"]["msg_id"] for m in updates] == [bg["msg_id"]]
    assert "done after" in updates[0]["content"]["data"]["text/plain"]


def test_bg_output_without_the_cells_context_stays_out_of_the_next_cell(run_notebook, tmp_path):
    """nbclient: the late output of such a --bg cell is not recorded in the cell running then."""
    flag = str(tmp_path / "next-cell-runs")
    run = run_notebook(
        [
            LOAD,
            FRESH_CONTEXT,
            LATE_OUTPUT.format(flag=flag),
            f"open({flag!r}, 'w').close()\nprint(job.result(30).stdout, end='')",
        ]
    )
    assert run.error is None, run.error
    assert run.outputs(3) == [
        {"output_type": "stream", "name": "stdout", "text": "from the bg cell\n"}
    ]
