"""``%%pool_exec --bg`` in a real notebook kernel: handles, parallelism, ordering, cancel.

nbclient drops output that arrives for a cell after it finished, so these
tests look at results through the handle; tests/browser checks where the
live output of a background cell lands.
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
    """As in a foreground cell, the reset notice comes first in the bg cell's own output."""
    kernel.execute(LOAD)
    kernel.execute("%%pool_exec -s a\nx = 1")
    kernel.execute("%%pool_exec -s a\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    bg = kernel.execute("%%pool_exec --bg -s a -o job\nprint('after the reset')")
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
