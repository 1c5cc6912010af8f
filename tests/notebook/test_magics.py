"""The ``%pool`` magic, configuration, bad input and the extension's lifecycle."""

from __future__ import annotations

import json
import sys
import time
import uuid

import pytest

from tests.helpers import wait_for

LOAD = "%load_ext nbpool\n%config Pool.size = 1"


def _usage_errors(run, indexes) -> dict[int, str]:
    return {i: run.text(i, "stderr") for i in indexes}


def test_bad_input_gives_one_line_usage_errors(run_notebook):
    """Unknown options, missing values, bad timeouts and unknown names: one UsageError line each."""
    cells = [
        LOAD,
        "%%pool_exec --bogus\npass",
        "%%pool_exec -s\npass",
        "%%pool_exec -t 0\npass",
        "%%pool_exec -t -2\npass",
        "%%pool_exec -t soon\npass",
        "%%pool_exec -o 'not a name'\npass",
        "%%pool_exec --kernel no-such-kernel\npass",
        "%pool",
        "%pool frobnicate",
        "%pool end",
        "%pool end nobody",
        "%pool status extra",
        "%pool stop -n 3",
        "%pool start -n -1",
        "%pool_push",
        "%pool start -n 1000000",
    ]
    run = run_notebook(cells, allow_errors=True)
    for index, text in _usage_errors(run, range(1, len(cells))).items():
        assert text.startswith("UsageError: ") and text.count("\n") == 1, (cells[index], text)
        assert run.outputs(index)[0]["output_type"] == "stream", cells[index]
    errors = _usage_errors(run, range(1, len(cells)))
    assert "unrecognized arguments: --bogus" in errors[1]
    assert "expected one argument" in errors[2]
    assert "positive number of seconds, got 0" in errors[3]
    assert "no kernelspec named 'no-such-kernel'; available:" in errors[7]
    assert "invalid choice: 'frobnicate'" in errors[9]
    assert "%pool end needs a SESSION name" in errors[10]
    assert "no session named 'nobody'" in errors[11]
    assert "size must be a whole number >= 0, got -1" in errors[14]
    assert "size 1000000 is above size_limit=" in errors[16]


@pytest.fixture
def kernelspecs(tmp_path, monkeypatch):
    """A JUPYTER_PATH with a broken kernelspec and a second Python one, for the notebook kernel."""
    for name, argv in {
        "broken": [
            sys.executable,
            "-c",
            "import sys; sys.stderr.write('no such module: boom\\n'); sys.exit(3)",
        ],
        "python-other": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    }.items():
        spec = tmp_path / "kernels" / name
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(
            json.dumps({"argv": argv, "display_name": name, "language": "python"})
        )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))


def test_broken_kernelspec_fails_the_cell_in_one_line(run_notebook, kernelspecs):
    """%%pool_exec on a kernelspec that cannot start fails at once with its stderr, never hangs."""
    run = run_notebook(
        [LOAD + "\n%config Pool.max_size = 2", "%%pool_exec -s b --kernel broken\nprint('never')"],
        allow_errors=True,
    )
    (error,) = run.outputs(1)
    assert error["ename"] == "WorkerStartFailed" and len(error["traceback"]) == 1
    assert "exited with code 3" in error["evalue"] and "no such module: boom" in error["evalue"]


def test_kernel_picks_the_kernelspec_of_a_new_session_only(run_notebook, kernelspecs):
    """--kernel starts a new session on that kernelspec; a bound session cannot switch kernels."""
    run = run_notebook(
        [
            LOAD + "\n%config Pool.max_size = 2",
            "%%pool_exec -s other --kernel python-other\nx = 1",
            "%pool sessions",
            "%%pool_exec -s other --kernel python3\nx",
        ],
        allow_errors=True,
    )
    (table,) = run.outputs(2)
    assert "other    w2      python-other" in table["data"]["text/plain"]
    assert "<td>python-other</td>" in table["data"]["text/html"]
    assert run.text(3, "stderr") == (
        "UsageError: session 'other' runs kernel 'python-other'; "
        "end it first (pool.end_session or %pool end other) to run it on 'python3'\n"
    )


def test_configuration_comes_from_ipython_config_and_config_magic(
    run_notebook, tmp_path, monkeypatch
):
    """c.Pool.* in ipython_config.py and %config Pool.* apply to the pool the magics create."""
    profile = tmp_path / "profile_default"
    profile.mkdir()
    (profile / "ipython_config.py").write_text("c.Pool.size = 3\nc.Pool.lease_timeout = 7.0\n")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    run = run_notebook(
        [
            "%load_ext nbpool\n%pool start",
            "pool = get_ipython().magics_manager.registry['PoolMagics'].get_pool()\n"
            "print(len(pool.status()['workers']), pool.lease_timeout)",
            "%pool stop\n%config Pool.size = 2\n%pool start",
            "%pool start -n 5",
        ],
        allow_errors=True,
    )
    assert run.text(1) == "3 7.0\n"
    assert (
        run.text(2)
        == "nbpool: stopped the pool (3 worker(s))\nnbpool: 0/2 busy, 0 queued (2 x python3)\n"
    )
    assert "the pool is already running with size=2" in run.text(3, "stderr")


def test_status_sessions_end_and_widget(run_notebook):
    """%pool status/sessions print tables (with HTML), end replaces the worker, widget renders as a widget."""
    run = run_notebook(
        [
            LOAD,
            "%pool status",
            "%%pool_exec -s etl\nx = 1",
            "%pool status",
            "%pool sessions",
            "%pool widget",
            "%pool end etl",
            "%%pool_exec -s etl\nprint('x' in globals())",
        ]
    )
    assert run.error is None, run.error
    assert run.text(1) == "nbpool: no pool yet; `%pool start` or a %%pool_exec cell starts one\n"
    (status,) = run.outputs(3)
    assert status["data"]["text/plain"].startswith("nbpool: 0/1 busy, 0 queued\nworker")
    assert "<table class='nbpool-workers'>" in status["data"]["text/html"]
    (sessions,) = run.outputs(4)
    assert sessions["data"]["text/plain"].splitlines()[1].split()[:3] == ["etl", "w1", "python3"]
    (widget,) = run.outputs(5)
    assert "application/vnd.jupyter.widget-view+json" in widget["data"]
    assert widget["data"]["text/plain"].startswith("nbpool: ")  # the readable fallback
    state = run.nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    html = " ".join(str(m["state"].get("value", "")) for m in state.values())
    assert "data-worker='w1'" in html and "etl" in html
    assert run.text(6) == "nbpool: ended session 'etl'; its worker is replaced by a fresh one\n"
    assert run.text(7) == "False\n"


def test_unload_shuts_the_pool_down_and_removes_the_magics(run_notebook):
    """%unload_ext nbpool stops every worker and removes the magics."""
    run = run_notebook(
        [
            LOAD + "\n%pool start",
            "magics = get_ipython().magics_manager.registry['PoolMagics']\npool = magics.get_pool()\n"
            "pids = [w['pid'] for w in pool.status()['workers']]",
            "%unload_ext nbpool",
            "import os, time\nt0 = time.time()\n"
            "def alive(pid):\n    try:\n        os.kill(pid, 0)\n        return True\n"
            "    except ProcessLookupError:\n        return False\n"
            "while any(map(alive, pids)) and time.time() - t0 < 10:\n    time.sleep(0.05)\n"
            "print(any(map(alive, pids)), pool.status()['closed'])",
            "%pool status",
        ],
        allow_errors=True,
    )
    assert run.text(3) == "False True\n"
    assert "Line magic function `%pool` not found" in run.text(4, "stderr")


def test_widget_updates_are_rate_limited_and_stay_with_their_cell(kernel):
    """Widget updates: only changes, at most ~4 a second, all parented to the widget's cell."""
    kernel.execute("%load_ext nbpool\n%config Pool.size = 2\n%pool start")
    shown = kernel.execute("w = %pool widget\nw")
    model_ids = {m["content"]["comm_id"] for _, m in kernel.iopub if m["msg_type"] == "comm_open"}
    mark = len(kernel.iopub)
    kernel.drain(1.5)  # nothing runs: only uptimes tick (once a second)
    idle = [m for _, m in kernel.iopub[mark:] if m["msg_type"] == "comm_msg"]
    assert len(idle) <= 3, [m["content"]["data"] for m in idle]
    mark = len(kernel.iopub)
    started = time.monotonic()
    for i in range(6):
        kernel.execute(f"%%pool_exec -s s{i % 2}\nimport time\ntime.sleep(0.15)")
    kernel.drain(0.5)
    elapsed = time.monotonic() - started
    updates = [(t, m) for t, m in kernel.iopub[mark:] if m["msg_type"] == "comm_msg"]
    assert updates, "the widget did not follow the pool"
    assert all(m["content"]["comm_id"] in model_ids for _, m in updates)
    # Parented to the cell that showed the widget, never to the cells running later.
    assert {m["parent_header"]["msg_id"] for _, m in updates} == {shown["msg_id"]}
    rounds = {round(t / 0.25) for t, _ in updates}  # one snapshot per 0.25 s tick at most
    assert len(rounds) <= elapsed / 0.25 + 2
    assert len(updates) <= 4 * len(rounds)  # at most one message per part per snapshot
    print(
        f"{len(idle)} idle messages; {len(updates)} updates in {len(rounds)} rounds, {elapsed:.1f} s"
    )

    def both_idle_shown():
        final = kernel.execute("print(w._workers.value.count(\"data-state='idle'\"))")
        return [o.get("text") for o in final["outputs"]] == ["2\n"]

    wait_for(both_idle_shown, timeout=10, what="the widget to show both workers idle again")


def test_bad_session_names_are_usage_errors_and_create_no_session(run_notebook):
    """Empty, blank, control-character and over-long session names are one-line
    UsageErrors in every magic that takes a session, and create no session;
    quotes around a name are stripped; the default session still gets a worker
    at once afterwards."""
    bad = ["''", "'   '", '""', "' \"\" '", "'" + "x" * 201 + "'"]
    cells = [LOAD + "\n%pool start"]
    for name in bad:
        cells += [f"%%pool_exec -s {name}\npass", f"%pool_push x -s {name}", f"%pool end {name}"]
    cells += [
        "get_ipython().run_cell_magic('pool_exec', '-s \"a\\nb\"', 'pass')",
        "get_ipython().run_cell_magic('pool_exec', '-s \"a\\x07b\"', 'pass')",
        "%%pool_exec -s 'a b'\nname = 'spaced'",
        '%%pool_exec -s "a b"\nprint(name)',
        "pool = get_ipython().find_magic('pool', 'line').__self__.get_pool()\n"
        "with pool.lease(timeout=2):  # the default session gets a worker at once\n"
        "    pass",
        "%%pool_exec\nprint('default ok')",
        "print(sorted(s['name'] for s in pool.status()['sessions']))",
    ]
    run = run_notebook(cells, allow_errors=True)
    first_good = 1 + 3 * len(bad) + 2
    for index in range(1, first_good):
        text = run.text(index, "stderr")
        assert text.startswith("UsageError: ") and text.count("\n") == 1, (cells[index], text)
    assert "session name is empty" in run.text(1, "stderr")
    assert "at most 200" in run.text(first_good - 3, "stderr")
    assert "control character '\\n'" in run.text(first_good - 2, "stderr")
    assert "control character '\\x07'" in run.text(first_good - 1, "stderr")
    assert run.text(first_good + 1) == "spaced\n", "-s 'a b' and -s \"a b\" are one session"
    assert run.text(first_good + 3) == "default ok\n"
    assert not [o for o in run.outputs(first_good + 2) if o["output_type"] == "error"], (
        "the default session waited behind phantom sessions"
    )
    assert run.text(first_good + 4) == "['a b', 'default']\n"


def test_pool_start_preload_warms_every_worker(run_notebook):
    """`%pool start --preload CODE` (quotes stripped) runs CODE on the workers
    before they serve a cell; a raising preload fails `%pool start` in one line."""
    run = run_notebook(
        [
            LOAD,
            "%pool start --preload \"import json; WARM = 'yes'\"",
            "%%pool_exec -s x\nprint(WARM, json.dumps(1))",
            "%pool stop",
            "%pool start --preload 'import no_such_module_here'",
        ],
        allow_errors=True,
    )
    assert run.text(2) == "yes 1\n"
    errors = [o for o in run.outputs(4) if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "WorkerStartFailed"
    assert "preload raised ModuleNotFoundError" in errors[0]["evalue"]


def test_panel_resize_to_an_absurd_size_is_refused_and_the_kernel_answers(kernel):
    """The Lab panel's resize to 10 000 000 gets a one-line error reply naming
    size_limit, the pool keeps its size, and the next cell runs at once."""
    kernel.execute("%load_ext nbpool\n%pool start -n 1")
    comm_id = uuid.uuid4().hex
    for kind, content in [
        ("comm_open", {"comm_id": comm_id, "target_name": "nbpool.status", "data": {"version": 1}}),
        (
            "comm_msg",
            {"comm_id": comm_id, "data": {"request": "r1", "action": "resize", "size": 10_000_000}},
        ),
    ]:
        kernel.kc.shell_channel.send(kernel.kc.session.msg(kind, content))

    def replies():
        kernel.drain(0.05)
        return [
            m["content"]["data"]
            for _, m in kernel.iopub
            if m["msg_type"] == "comm_msg" and m["content"]["data"].get("kind") == "reply"
        ]

    wait_for(replies, timeout=10, what="the resize reply")
    (reply,) = replies()
    assert reply["request"] == "r1" and reply["ok"] is False
    assert "above size_limit=" in reply["error"] and "\n" not in reply["error"]
    started = time.monotonic()
    answer = kernel.execute(
        "pool = get_ipython().magics_manager.registry['PoolMagics'].get_pool()\n"
        "print(pool.status()['size'], len(pool.status()['workers']))",
        timeout=10,
    )
    assert time.monotonic() - started < 5, "the kernel answers the next cell at once"
    assert [o.get("text") for o in answer["outputs"]] == ["1 1\n"]
