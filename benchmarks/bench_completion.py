"""(l) Tab completion in a ``%%pool_exec`` cell, answered by the session's worker.

A real notebook kernel (ipykernel, bare jupyter_client round trips:
``complete_request`` -> ``complete_reply``, as JupyterLab sends them: the
whole cell and the cursor at its end) answers three requests, interleaved:

* ``notebook_only_v`` in a plain cell: the notebook kernel's own completion
  (the baseline: the same IPython completer, no worker in the way);
* ``worker_only_v`` in a ``%%pool_exec -s idle`` cell: asked of an idle
  worker (kernel_info on its control channel, a subshell created, the
  request on the subshell, the subshell deleted: :mod:`nbpool.notebook.completion`);
* the same in a ``%%pool_exec -s busy`` cell whose worker runs ``time.sleep``
  in a ``--bg`` cell: the subshell answers beside the running cell.

Both completers are warmed first (a fresh worker's first completion loads
jedi's view of the builtins); the last row measures that cold start on a
fresh worker. The contract: an answer (or "no completions") within 1 s.
"""

from __future__ import annotations

import time

import zmq
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.session import Session

from ._harness import (
    Processes,
    RawKernel,
    Row,
    descendants,
    interleaved,
    median,
    quantile,
    wait_until,
)

NAME = "completion"

SETUP = """
%load_ext nbpool
%pool start -n 2
notebook_only_value = 1
"""
SESSION = "%%pool_exec -s {name}\nworker_only_value = 1"
BUSY = "%%pool_exec -s busy --bg\nimport time; time.sleep(3600)"
CELLS = {
    "notebook": "notebook_only_v",
    "idle": "%%pool_exec -s idle\nworker_only_v",
    "busy": "%%pool_exec -s busy\nworker_only_v",
}
EXPECTED = {"notebook": ["notebook_only_value"], "idle": ["worker_only_value"]}
EXPECTED["busy"] = EXPECTED["idle"]
TEARDOWN = "%pool stop"


def run(quick: bool = False) -> list[Row]:
    return _in_notebook(quick) + [_routes(quick)]


def _routes(quick: bool) -> Row:
    """The two ways to reach an idle worker, from this process: nbpool's (kernel_info,
    create subshell, request on it, delete) vs a plain second shell connection (one
    round trip; a busy worker would queue it behind its cell)."""
    import nbpool
    from nbpool.notebook.completion import ask

    procs = Processes()
    content = {"code": "worker_only_v", "cursor_pos": len("worker_only_v")}
    with nbpool.Pool(size=1) as pool:
        procs.add_pool(pool)
        pool.execute("worker_only_value = 1", session="s")
        info = pool._connection_for("s")
        client = BlockingKernelClient(context=zmq.Context.instance())
        client.load_connection_info(info)
        session = Session(key=client.session.key, signature_scheme=client.session.signature_scheme)
        shell = client.connect_shell(identity=session.bsession)

        def plain() -> list[str]:
            msg_id = session.send(shell, "complete_request", content)["header"]["msg_id"]
            while True:
                _, m = session.recv(shell, mode=0)
                if m["parent_header"].get("msg_id") == msg_id:
                    return m["content"]["matches"]

        try:
            fns = {"subshell": lambda: ask(info, "complete_request", content, timeout=10)}
            fns["shell"] = plain
            wait_until(lambda: plain() == ["worker_only_value"], 30, "the worker's completion")
            times = interleaved(fns, 30 if quick else 100)
        finally:
            shell.close(linger=0)
    procs.kill_leftovers()
    ms = {name: median(v) * 1000 for name, v in times.items()}
    return Row(
        "l. route to an idle worker: subshell per request vs a second shell connection",
        ms["subshell"],
        ms["shell"],
        "ms",
        ms["subshell"] / ms["shell"],
        "info",
        None,
        "from the benchmark process, no notebook kernel in between",
    )


def _in_notebook(quick: bool) -> list[Row]:
    procs = Processes()
    kernel = RawKernel(procs)

    def complete(code: str) -> list[str]:
        return kernel.request("complete_request", {"code": code, "cursor_pos": len(code)})[
            "matches"
        ]

    try:
        for code in (SETUP, SESSION.format(name="idle"), SESSION.format(name="busy"), BUSY):
            reply = kernel.execute(code)
            if reply.get("status") != "ok":
                raise RuntimeError(
                    f"setup cell failed: {reply.get('ename')}: {reply.get('evalue')}"
                )
        for pid in descendants(kernel.pid):
            procs.add(pid)
        for name, code in CELLS.items():  # warm each completer (it may take more than 1 s)
            wait_until(lambda: complete(code) == EXPECTED[name], 30, f"{name}'s completion")
        rounds = 30 if quick else 100
        fns = {name: (lambda code=code: complete(code)) for name, code in CELLS.items()}
        times = interleaved(fns, rounds)
        ms = {name: median(v) * 1000 for name, v in times.items()}
        p95 = {name: quantile(v, 0.95) * 1000 for name, v in times.items()}

        cold, answered = [], 0
        for i in range(1 if quick else 3):
            kernel.execute(SESSION.format(name=f"cold{i}"))
            for pid in descendants(kernel.pid):
                procs.add(pid)
            code = f"%%pool_exec -s cold{i}\nworker_only_v"
            t0 = time.perf_counter()
            found = complete(code)  # [] when jedi's start took the whole 1 s
            cold.append((time.perf_counter() - t0) * 1000)
            answered += found == EXPECTED["idle"]
            kernel.execute(f"%pool end cold{i}")
        note = f"{rounds} interleaved rounds; p95: " + ", ".join(
            f"{k} {v:.1f} ms" for k, v in p95.items()
        )
        return [
            Row(
                "l. completion in a session cell, idle worker vs the notebook kernel's own",
                ms["idle"],
                ms["notebook"],
                "ms",
                ms["idle"] / ms["notebook"],
                "p95 < 1000 ms",
                p95["idle"] < 1000,
                note,
            ),
            Row(
                "l. same, the worker running a cell (answered by a subshell) vs idle",
                ms["busy"],
                ms["idle"],
                "ms",
                ms["busy"] / ms["idle"],
                "p95 < 1000 ms",
                p95["busy"] < 1000,
            ),
            Row(
                "l. first completion on a fresh worker (cold jedi) vs warm",
                median(cold),
                ms["idle"],
                "ms",
                median(cold) / ms["idle"],
                "info",
                None,
                f"{len(cold)} fresh worker(s): "
                + ", ".join(f"{c:.0f} ms" for c in cold)
                + f"; {answered} answered in time",
            ),
        ]
    finally:
        try:
            kernel.execute(TEARDOWN)
        finally:
            kernel.close()
            procs.kill_leftovers()
