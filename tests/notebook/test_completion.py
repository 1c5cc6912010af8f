"""Completion and inspection in ``%%pool_exec`` cells come from the session's worker.

A real notebook kernel gets ``complete_request`` / ``inspect_request`` over
jupyter_client exactly as JupyterLab sends them: the whole cell's code and a
cursor position in unicode code points. The names the tests complete exist
only on one side (``worker_only_*`` on the worker, ``notebook_only_*`` in
the notebook), so an answer shows which kernel gave it.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.helpers import wait_for
from tests.notebook.helpers import Kernel, worker_pids

# WARM warms a worker's completer: its first completion loads jedi's view of
# the builtins (0.3-0.4 s on the 2-core machine at load 5, over the 1 s bound
# at load 7: benchmarks/README.md, l); these tests are about where the answer
# comes from and how fast the route is, not about jedi's cold start.
WARM = """
from IPython.core.completer import provisionalcompleter
with provisionalcompleter(): list(get_ipython().Completer.completions("worker_o", 8))
"""
SESSION_SETUP = (
    '''%%pool_exec -s etl
worker_only_value = 41
def worker_only_fn():
    """Docstring only the worker knows."""
'''
    + WARM
)


def ok(kernel: Kernel, code: str) -> None:
    reply = kernel.execute(code)["reply"]
    assert reply["status"] == "ok", (code, reply.get("ename"), reply.get("evalue"))


def ask(kernel: Kernel, kind: str, code: str, cursor_pos: int | None = None, **extra):
    """Send a complete/inspect request; its reply's content and how long it took."""
    cursor_pos = len(code) if cursor_pos is None else cursor_pos
    started = time.monotonic()
    msg = kernel.kc.session.msg(
        f"{kind}_request", {"code": code, "cursor_pos": cursor_pos, **extra}
    )
    msg_id = msg["header"]["msg_id"]
    kernel.kc.shell_channel.send(msg)
    while True:
        reply = kernel.kc.get_shell_msg(timeout=10)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"], time.monotonic() - started


def workers(kernel: Kernel) -> list[dict]:
    """The notebook's pool's workers as ``status()`` shows them."""
    out = kernel.execute(
        "import json as _j\n"
        "_p = get_ipython().magics_manager.registry['PoolMagics'].get_pool()\n"
        "print(_j.dumps([{k: w[k] for k in ('id', 'state', 'session', 'pid')}"
        " for w in _p.status()['workers']]))"
    )["outputs"]
    return json.loads("".join(o.get("text", "") for o in out))


def own_completion(kernel: Kernel, code: str, cursor_pos: int) -> dict:
    """What the notebook kernel's own (unwrapped) do_complete answers."""
    out = kernel.execute(
        "import json as _j\n_k = get_ipython().kernel\n"
        f"print(_j.dumps(type(_k).do_complete(_k, {code!r}, {cursor_pos})))"
    )["outputs"]
    return json.loads("".join(o.get("text", "") for o in out))


def session_worker(kernel: Kernel, session: str) -> dict | None:
    return next((w for w in workers(kernel) if w["session"] == session), None)


@pytest.fixture(scope="module")
def nb():
    """One notebook kernel with a pool and a session ``etl`` that defined worker-only names."""
    k = Kernel()
    try:
        ok(k, "%load_ext nbpool\n%pool start -n 1")
        ok(k, SESSION_SETUP)
        ok(k, "notebook_only_value = 1")
        yield k
    finally:
        k.shutdown()
        wait_for(lambda: not worker_pids(k.pid), timeout=15, what="the kernel's workers to exit")


def test_session_cell_completes_a_worker_only_variable(nb):
    """In a %%pool_exec -s etl cell the worker's names complete, positions moved into the cell."""
    code = "%%pool_exec -s etl\nprint(worker_only_v"
    reply, took = ask(nb, "complete", code)
    assert reply["status"] == "ok"
    assert reply["matches"] == ["worker_only_value"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (code.index("worker_only_v"), len(code))
    types = reply["metadata"]["_jupyter_types_experimental"]
    assert [(t["text"], t["start"], t["end"]) for t in types] == [
        ("worker_only_value", reply["cursor_start"], reply["cursor_end"])
    ]
    assert took < 2


def test_default_session_and_positions_in_code_points(nb):
    """Without -s the cell is the default session's; cursor positions count code points
    (an astral character is one, not two UTF-16 units) and leading blank lines are skipped."""
    ok(nb, "%%pool_exec\nworker_only_default = 2" + WARM)
    code = "\n%%pool_exec -t 30\nlabel = '🐍'; worker_only_d"
    reply, _ = ask(nb, "complete", code)
    assert reply["matches"] == ["worker_only_default"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (code.index("worker_only_d"), len(code))
    # the cursor in the middle of the body, not at its end
    code = "%%pool_exec -s etl\nworker_only_v + 'é🐍'"
    reply, _ = ask(nb, "complete", code, cursor_pos=code.index(" +"))
    assert reply["matches"] == ["worker_only_value"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (
        code.index("worker_only_v"),
        code.index(" +"),
    )


def test_inspection_shows_a_worker_only_docstring(nb):
    """Shift+Tab on a name the worker defined shows the worker's docstring."""
    code = "%%pool_exec -s etl\nworker_only_fn"
    reply, _ = ask(nb, "inspect", code, detail_level=0)
    assert reply["status"] == "ok" and reply["found"] is True
    assert "Docstring only the worker knows." in reply["data"]["text/plain"]
    reply, _ = ask(nb, "inspect", "worker_only_fn", detail_level=0)
    assert reply["found"] is False  # outside the cell: the notebook kernel's, which lacks it


def test_completion_outside_session_cells_is_the_notebook_kernels(nb):
    """Plain cells and --all cells complete from the notebook kernel, as before."""
    reply, _ = ask(nb, "complete", "notebook_only_v")
    assert reply["matches"] == ["notebook_only_value"]
    assert reply == own_completion(nb, "notebook_only_v", len("notebook_only_v"))
    reply, _ = ask(nb, "complete", "worker_only_v")
    assert reply["matches"] == []
    reply, _ = ask(nb, "complete", "%%pool_exec --all\nnotebook_only_v")
    assert reply["matches"] == ["notebook_only_value"]
    reply, _ = ask(nb, "complete", "%%pool_exec -s etl\nnotebook_only_v")
    assert reply["matches"] == []  # the session cell's answer: the worker lacks it


def test_magic_line_itself_keeps_the_notebook_kernels_completion(nb):
    """A cursor on the %%pool_exec line completes magic names there, not worker names."""
    code = "%%pool_exec -s etl\nworker_only_value"
    reply, _ = ask(nb, "complete", code, cursor_pos=len("%%pool_ex"))
    assert "%%pool_exec" in reply["matches"]
    for pos in (len("%%pool_ex"), code.index("\n")):
        reply, _ = ask(nb, "complete", code, cursor_pos=pos)
        assert reply == own_completion(nb, code, pos)
        assert "worker_only_value" not in reply["matches"]


def test_busy_python_worker_still_completes_in_time(kernel):
    """While the session's worker runs a 30 s cell, completion answers within 2 s
    (ipykernel 7: from a subshell, so it even completes)."""
    ok(kernel, "%load_ext nbpool\n%pool start -n 1")
    ok(kernel, SESSION_SETUP)
    ok(kernel, "%%pool_exec -s etl --bg\nimport time; time.sleep(30)")
    wait_for(lambda: (session_worker(kernel, "etl") or {}).get("state") == "busy", timeout=15)
    reply, took = ask(kernel, "complete", "%%pool_exec -s etl\nworker_only_v")
    assert took < 2
    assert reply["matches"] == ["worker_only_value"]
    reply, took = ask(kernel, "inspect", "%%pool_exec -s etl\nworker_only_fn", detail_level=0)
    assert took < 2 and reply["found"] is True


def test_bash_worker_completes_and_a_busy_one_gives_nothing_in_time(kernel):
    """A non-python worker answers on a shell connection of our own; busy, it gives no
    completions within the bound instead of queueing the notebook behind its cell."""
    ok(kernel, "%load_ext nbpool\n%pool start -n 1")
    ok(kernel, "%%pool_exec -s sh --kernel bash\nexport WORKER_ONLY_VAR=1")
    code = "%%pool_exec -s sh\necho $WORKER_ONLY_V"
    reply, _ = ask(kernel, "complete", code)
    assert reply["matches"] == ["$WORKER_ONLY_VAR"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (code.index("$WORKER"), len(code))
    ok(kernel, "%%pool_exec -s sh --bg\nsleep 30")
    wait_for(lambda: (session_worker(kernel, "sh") or {}).get("state") == "busy", timeout=15)
    reply, took = ask(kernel, "complete", code)
    assert took < 2
    assert reply == {
        "matches": [],
        "cursor_start": len(code),
        "cursor_end": len(code),
        "metadata": {},
        "status": "ok",
    }
    reply, _ = ask(kernel, "complete", "notebook_only_v")  # the notebook kernel is not held up
    assert reply["status"] == "ok"


def test_dead_or_missing_worker_gives_no_completions_at_once(kernel):
    """A session whose worker was killed, or that does not exist, gets an empty answer at
    once; asking never creates a session."""
    ok(kernel, "%load_ext nbpool")
    reply, took = ask(kernel, "complete", "%%pool_exec -s etl\nworker_only_v")
    assert reply["matches"] == [] and took < 0.5  # no pool yet: none is started
    ok(kernel, "%pool start -n 1")
    ok(kernel, SESSION_SETUP)
    reply, took = ask(kernel, "complete", "%%pool_exec -s nosuch\nworker_only_v")
    assert reply["matches"] == [] and took < 0.5
    assert session_worker(kernel, "nosuch") is None
    pid = session_worker(kernel, "etl")["pid"]
    os.kill(pid, signal.SIGKILL)
    reply, took = ask(kernel, "complete", "%%pool_exec -s etl\nworker_only_v")
    assert reply["matches"] == [] and took < 2  # the pool may not have noticed yet
    wait_for(lambda: session_worker(kernel, "etl") is None, timeout=15, what="the death noticed")
    reply, took = ask(kernel, "complete", "%%pool_exec -s etl\nworker_only_v")
    assert reply["matches"] == [] and took < 0.5
    reply, took = ask(kernel, "inspect", "%%pool_exec -s etl\nworker_only_fn", detail_level=0)
    assert reply["found"] is False and took < 0.5


def test_unload_gives_the_kernel_its_own_completion_back(kernel):
    """%unload_ext nbpool restores the kernel's do_complete and do_inspect."""
    probe = "print(sorted(set(vars(get_ipython().kernel)) & {'do_complete', 'do_inspect'}))"
    ok(kernel, "%load_ext nbpool")
    out = kernel.execute(probe)["outputs"]
    assert out[0]["text"].strip() == "['do_complete', 'do_inspect']"
    ok(kernel, "%unload_ext nbpool")
    out = kernel.execute(probe)["outputs"]
    assert out[0]["text"].strip() == "[]"
    reply, _ = ask(kernel, "complete", "%%pool_exec -s etl\nprin")
    assert "print" in reply["matches"]  # the notebook kernel's own answer again
