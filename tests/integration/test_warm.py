"""Warm workers: the preload, the workers' environment and working directory."""

from __future__ import annotations

import json
import time

import pytest

import nbpool


def test_preload_is_visible_in_every_session_and_after_end_session():
    """The preload runs on every new python worker before it serves a session,
    silently: its output shows in no cell and it uses no prompt number."""
    with nbpool.Pool(size=2, preload="import json\nprint('preloading')\nWARM = 41") as pool:
        for session in ("a", "b"):
            res = pool.execute("WARM + 1, json.dumps([1])", session=session)
            assert res.result == "(42, '[1]')" and res.stdout == ""
            assert res.execution_count == 1, "the preload took no prompt number"
        first = pool.execute("WARM", session="a").worker_id
        pool.end_session("a")
        res = pool.execute("WARM", session="a")
        assert res.result == "41" and res.worker_id != first


def test_a_failing_preload_fails_the_start_at_once_with_the_traceback():
    """A preload that raises: start() raises WorkerStartFailed within seconds,
    carrying the worker's traceback; the start is not retried and status()
    says why; the pool stays up."""
    pool = nbpool.Pool(size=1, preload="import json\njson.loads('{nope')")
    try:
        started = time.monotonic()
        with pytest.raises(nbpool.WorkerStartFailed) as info:
            pool.start()
        assert time.monotonic() - started < 20
        assert "the preload raised JSONDecodeError" in str(info.value)
        assert "json.loads('{nope')" in info.value.stderr_tail
        assert "\x1b[" not in info.value.stderr_tail, "plain text, no terminal colours"
        with pytest.raises(nbpool.WorkerStartFailed, match="preload raised"):
            pool.execute("1", lease_timeout=30)  # at once: nothing is starting
        status = pool.status()
        assert [w["state"] for w in status["workers"]] == ["failed"]
        assert "preload raised" in status["workers"][0]["last_error"]
        assert status["counters"]["start_failures"] == 1, "a deterministic failure is not retried"
    finally:
        pool.shutdown()


def test_workers_get_the_env_and_cwd(tmp_path):
    """env adds to this process's environment; cwd defaults to this process's
    working directory, so relative paths resolve as in the notebook."""
    (tmp_path / "data.txt").write_text("local data")
    with nbpool.Pool(size=1, env={"NBPOOL_TEST_VAR": "yes"}, cwd=str(tmp_path)) as pool:
        code = "import os; os.environ['NBPOOL_TEST_VAR'], open('data.txt').read(), 'PATH' in os.environ"
        assert pool.execute(code).result == "('yes', 'local data', True)"
    with nbpool.Pool(size=1) as pool:
        import os

        assert pool.execute("import os; os.getcwd()").result == repr(os.getcwd())


def test_a_worker_the_template_refused_is_spawned_and_preloaded_saying_why():
    """A preload that leaves a thread running cannot be forked from: the worker
    is spawned, runs the preload itself, and status() and the events say why."""
    preload = (
        "import threading\nWARM = 41\n"
        "threading.Thread(target=threading.Event().wait, name='poller', daemon=True).start()"
    )
    with nbpool.Pool(size=1, preload=preload) as pool:
        assert pool.execute("WARM + 1").result == "42"
        status = pool.status()
        assert status["workers"][0]["started"] == "spawn"
        [event] = [e for e in status["events"] if e["kind"] == "started"]
        assert (
            "spawned (not forked: the preload started Python threads (poller))"
            in (event["message"])
        )
    with nbpool.Pool(size=1, preload="WARM = 41") as pool:
        assert pool.execute("WARM + 1").result == "42"
        status = pool.status()
        assert status["workers"][0]["started"] == "fork"
        [event] = [e for e in status["events"] if e["kind"] == "started"]
        assert event["message"].endswith(", forked")


def test_a_non_python_kernel_skips_the_preload(bash_kernel):
    """The preload is python code: a bash worker starts without it and works."""
    with nbpool.Pool(size=0, kernel_name=bash_kernel, preload="import json") as pool:
        assert pool.execute("echo $((40 + 2))").stdout.strip() == "42"


# ----------------------------------------------------------------------
# forked and spawned workers look the same (fork_server="auto" | "never")
# ----------------------------------------------------------------------

INLINE = "module://matplotlib_inline.backend_inline"
STARTED = {"auto": "fork", "never": "spawn"}


def _images(res) -> int:
    assert res.ok, res.error and res.error.traceback
    return sum("image/png" in out.get("data", {}) for out in res.outputs)


@pytest.mark.parametrize("fork_server", ["auto", "never"])
@pytest.mark.parametrize("preload", ["import matplotlib", "import matplotlib.pyplot as plt"])
def test_a_matplotlib_preload_gives_inline_plots(fork_server, preload):
    """A matplotlib preload leaves the worker on ipykernel's inline backend, forked
    or spawned: plt.show() and the end of a cell each give one image/png output."""
    with nbpool.Pool(size=1, preload=preload, fork_server=fork_server) as pool:
        res = pool.execute("import matplotlib\nmatplotlib.get_backend()")
        assert res.result == repr(INLINE)
        assert pool.status()["workers"][0]["started"] == STARTED[fork_server]
        assert (
            _images(
                pool.execute("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
            )
            == 1
        )
        assert _images(pool.execute("plt.plot([3, 1]);")) == 1, "shown at the end of the cell"
        assert _images(pool.execute("1 + 1")) == 0, "a shown figure is closed"


#: What a user can see of a worker's setup, as JSON (sys.argv without the
#: connection file, which is each worker's own).
OBSERVED = """
import json, os, sys
import matplotlib, matplotlib.pyplot as plt
ip = get_ipython()
png = ip.display_formatter.formatters["image/png"]
print(json.dumps({
    "backend": matplotlib.get_backend(),
    "interactive": matplotlib.is_interactive(),
    "open figures": plt.get_fignums(),
    "figure as png": any(t.__name__ == "Figure" for t in png.type_printers),
    "formats": ip.display_formatter.active_types,
    "post_execute": [getattr(f, "__name__", repr(f)) for f in ip.events.callbacks["post_execute"]],
    "argv": [sys.argv[0], sys.argv[1], *sys.argv[3:]],
    "path": sys.path,
    "env": {k: v for k, v in os.environ.items() if k != "JPY_PARENT_PID"},
    "cwd": os.getcwd(),
    "from_preload": FROM_PRELOAD,
}, sort_keys=True))
"""


def test_forked_and_spawned_workers_look_the_same(tmp_path):
    """The same preload (a figure, an env change, a chdir) and settings give a forked
    and a spawned worker the same backend, %matplotlib inline behaviour, display
    formatters, sys.argv, sys.path, environment and working directory."""
    (tmp_path / "data").mkdir()
    preload = (
        "import os\nimport matplotlib.pyplot as plt\nplt.figure()\nplt.plot([1, 2])\n"
        "os.environ['NBPOOL_FROM_PRELOAD'] = 'set'\nos.environ.pop('NBPOOL_DROPPED')\n"
        "os.chdir('data')\nFROM_PRELOAD = os.getcwd()\n"
    )
    seen = {}
    for mode in ("auto", "never"):
        env = {"NBPOOL_TEST_VAR": "yes", "NBPOOL_DROPPED": "x", "OMP_NUM_THREADS": "3"}
        with nbpool.Pool(
            size=1, preload=preload, fork_server=mode, env=env, cwd=str(tmp_path)
        ) as pool:
            assert pool.status()["workers"][0]["started"] == STARTED[mode]
            res = pool.execute(OBSERVED)
            assert res.ok, res.error and res.error.traceback
            seen[mode] = json.loads(res.stdout)
            assert _images(pool.execute("%matplotlib inline\nplt.plot([2, 1]);")) == 1
            seen[mode]["after %matplotlib"] = pool.execute("matplotlib.get_backend()").result
    forked, spawned = seen["auto"], seen["never"]
    assert forked == spawned
    assert spawned["backend"] == INLINE and spawned["figure as png"]
    assert spawned["open figures"] == [], "the preload's figure was shown (to no one) and closed"
    assert spawned["cwd"] == str(tmp_path / "data") == spawned["from_preload"]
    env = spawned["env"]
    assert env["NBPOOL_FROM_PRELOAD"] == "set" and "NBPOOL_DROPPED" not in env
    assert (env["NBPOOL_TEST_VAR"], env["OMP_NUM_THREADS"], env["MPLBACKEND"]) == (
        "yes",
        "3",
        INLINE,
    )
