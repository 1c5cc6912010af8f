"""``%%pool_exec`` in a real notebook kernel: output as if the cell ran locally."""

from __future__ import annotations

import re

LOAD = "%load_ext nbpool\n%config Pool.size = 1"


def test_outputs_land_in_the_cell_that_ran_them(run_notebook):
    """Streams, rich display, display-id updates and Out[n] land in their own cell, in order."""
    run = run_notebook(
        [
            LOAD,
            "%%pool_exec -s a\nprint('one')\nimport sys; print('two', file=sys.stderr)\n21 * 2",
            "local = 1",
            "%%pool_exec -s a\n"
            "from IPython.display import display, HTML, Markdown, Latex, JSON, Image\n"
            "import base64\n"
            "display(HTML('<b>bold</b>'), Markdown('*md*'), Latex('$x^2$'), JSON({'k': 1}))\n"
            "png = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==')\n"
            "display(Image(png))\n"
            "h = display('draft', display_id=True)",
            "%%pool_exec -s a\nh.update('final')\nprint('later cell')",
            "%%pool_exec -s a\nfrom IPython.display import clear_output\n"
            "print('gone'); clear_output(); print('kept')",
        ]
    )
    assert run.error is None, run.error
    first = run.outputs(1)
    assert [o["output_type"] for o in first] == ["stream", "stream", "execute_result"]
    assert run.text(1) == "one\n" and run.text(1, "stderr") == "two\n"
    assert first[2]["data"]["text/plain"] == "42"
    assert first[2]["execution_count"] == run.nb.cells[1].execution_count  # the notebook's Out[n]
    assert run.outputs(2) == []
    mimes = [next(k for k in o["data"] if k != "text/plain") for o in run.outputs(3)[:5]]
    assert mimes == ["text/html", "text/markdown", "text/latex", "application/json", "image/png"]
    # update_display from a later cell replaced the earlier cell's output in place.
    assert run.outputs(3)[5]["data"]["text/plain"] == "'final'"
    assert run.text(4) == "later cell\n" and len(run.outputs(4)) == 1
    assert run.text(5) == "kept\n"


def test_streams_arrive_while_the_cell_runs(run_notebook):
    """A loop printing every 0.3 s reaches the notebook progressively, not at the end."""
    run = run_notebook(
        [
            LOAD,
            "%%pool_exec\nimport time\nfor i in range(4):\n    print(i, flush=True); time.sleep(0.3)",
        ]
    )
    assert run.error is None, run.error
    assert run.text(1) == "0\n1\n2\n3\n"
    times = [t for t, cell, m in run.messages if cell == 1 and m["msg_type"] == "stream"]
    idle = next(
        t
        for t, cell, m in run.messages
        if cell == 1 and m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
    )
    assert len(times) >= 3, "the prints arrived in one batch"
    assert idle - times[0] > 0.6, "the first print arrived only when the cell ended"


def test_remote_exception_fails_the_cell_like_a_local_one(run_notebook):
    """A worker exception fails the cell with the worker's traceback, no nbpool frames, and Run All stops."""
    run = run_notebook(
        [LOAD, "%%pool_exec -s a\ndef f():\n    return 1 / 0\nf()", "print('not reached')"]
    )
    assert run.error is not None and "ZeroDivisionError" in str(run.error)
    (error,) = [o for o in run.outputs(1) if o["output_type"] == "error"]
    assert error["ename"] == "ZeroDivisionError" and error["evalue"] == "division by zero"
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))
    assert "return 1 / 0" in text and "f()" in text
    assert "nbpool" not in text and "IPython/core" not in text
    assert run.outputs(2) == []


def test_timeout_interrupts_says_so_and_the_session_survives(run_notebook):
    """-t interrupts the worker, fails the cell with one line, and the session keeps its state."""
    run = run_notebook(
        [
            LOAD,
            "%%pool_exec -s a\nkept = 'state'",
            "%%pool_exec -s a -t 1\nimport time\nprint('started', flush=True)\ntime.sleep(30)",
            "%%pool_exec -s a\nprint(kept)",
        ],
        allow_errors=True,
    )
    assert run.text(2) == "started\n"
    (error,) = [o for o in run.outputs(2) if o["output_type"] == "error"]
    assert error["ename"] == "ExecutionTimeout"
    assert error["traceback"] == [f"ExecutionTimeout: {error['evalue']}"]
    assert "1 s timeout" in error["evalue"] and "interrupted" in error["evalue"]
    assert run.text(3) == "state\n"


def test_a_lost_session_is_told_its_state_was_reset(run_notebook):
    """When a session's worker dies, the cell fails in one line and the next cell says the state is new."""
    run = run_notebook(
        [
            LOAD,
            "%%pool_exec -s a\nx = 1",
            "%%pool_exec -s a\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
            "%%pool_exec -s a\nprint('x' in globals())",
        ],
        allow_errors=True,
    )
    (died,) = [o for o in run.outputs(2) if o["output_type"] == "error"]
    assert died["ename"] == "WorkerDied" and len(died["traceback"]) == 1
    assert run.text(3) == "False\n"
    notice = run.text(3, "stderr")
    assert (
        notice.startswith("nbpool: session 'a' starts from a fresh state:")
        and notice.count("\n") == 1
    )


def test_input_on_the_worker_prompts_in_the_notebook(kernel):
    """input() on the worker becomes an input request of the notebook cell when stdin is allowed."""
    kernel.execute("%load_ext nbpool\n%config Pool.size = 1")
    prompts = []
    out = kernel.execute(
        "%%pool_exec\nname = input('name? ')\nprint('hello', name)",
        stdin=lambda prompt: prompts.append(prompt) or "ada",
    )
    assert out["reply"]["status"] == "ok"
    assert prompts == ["name? "]
    assert "hello ada\n" in [o.get("text") for o in out["outputs"]]
    # Without stdin the worker's input() fails at once, as it would locally.
    out = kernel.execute("%%pool_exec\ninput('x')")
    assert out["reply"]["status"] == "error" and out["reply"]["ename"] == "StdinNotImplementedError"


def test_kernel_interrupt_ends_the_cell_and_the_session_survives(kernel):
    """Interrupting the notebook kernel during %%pool_exec interrupts the worker; the session keeps its state."""
    kernel.execute("%load_ext nbpool\n%config Pool.size = 1")
    kernel.execute("%%pool_exec -s a\nkept = 'state'")

    def interrupt_once_running(outputs) -> None:
        if len(outputs) == 1:
            kernel.km.interrupt_kernel()

    out = kernel.execute(
        "%%pool_exec -s a\nimport time\nprint('running', flush=True)\ntime.sleep(30)",
        during=interrupt_once_running,
        timeout=20,
    )
    assert out["reply"]["status"] == "error" and out["reply"]["ename"] == "KeyboardInterrupt"
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out["reply"]["traceback"]))
    assert "time.sleep(30)" in text and "nbpool" not in text  # where the worker was
    out = kernel.execute("%%pool_exec -s a\nprint(kept)")
    assert [o.get("text") for o in out["outputs"]] == ["state\n"]
