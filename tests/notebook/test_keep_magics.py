"""Kept sessions from a real notebook kernel, restarted through jupyter_client."""

from __future__ import annotations

from nbpool.kept.store import KeptPool, process_start
from tests.helpers import wait_for

#: A bg cell that prints once, waits for the file ``go`` (made after the
#: restart), then prints on: what it prints then is journaled.
BG = (
    "%%pool_exec -s bg --bg\nimport os, time\nprint('tick 0', flush=True)\n"
    "while not os.path.exists({go!r}):\n    time.sleep(0.01)\n"
    "for i in range(1, 30):\n    print('tick', i, flush=True)\nprint('done')"
)


def _text(result: dict, name: str = "stdout") -> str:
    """A cell's stream ``name`` (stdout: and its displayed text/plain)."""
    return "".join(
        o.get("text", "") if o["output_type"] == "stream" else o["data"].get("text/plain", "")
        for o in result["outputs"]
        if o.get("name") == name or (name == "stdout" and "data" in o)
    )


def test_restart_kernel_keeps_sessions_and_start_keep_readopts_them(
    kept_runtime_dir, kernel, tmp_path
):
    """%pool start --keep, state, restart_kernel, %pool start --keep: the state is
    there, the start says what came back, the bg output waits for %pool replay."""
    kernel.execute("%load_ext nbpool")
    started = kernel.execute("%pool start --keep --name nb -n 1")
    assert "none were waiting" in _text(started)
    res = kernel.execute("%%pool_exec -s s\nx = 'survived'\nimport os; print(os.getpid())")
    pid = int(_text(res))
    assert "s (kept)" in _text(kernel.execute("%pool sessions"))
    go = tmp_path / "go"
    kernel.execute(BG.format(go=str(go)))
    kp = KeptPool("nb")
    wait_for(lambda: kp.following().get("bg"), timeout=30, what="the keeper to follow bg")
    old = kernel.km.provisioner.pid
    kernel.km.restart_kernel(now=False)
    kernel.kc.wait_for_ready(timeout=60)
    assert kernel.km.provisioner.pid != old
    assert process_start(pid) is not None  # the kept worker outlived its kernel
    go.touch()

    def journal() -> str:
        try:
            with open(kp.journal_path("bg")) as f:
                return f.read()
        except OSError:
            return ""

    wait_for(lambda: "done" in journal(), timeout=30, what="the bg loop to finish")
    kernel.execute("%load_ext nbpool")
    again = _text(kernel.execute("%pool start --keep --name nb"))
    assert "re-adopted 2 kept session(s) of pool 'nb'" in again, again
    assert "s (state intact)" in again and "%pool replay bg" in again
    assert _text(kernel.execute("%%pool_exec -s s\nprint(x)")) == "survived\n"
    told = kernel.execute("%%pool_exec -s bg\npass")
    assert "while no pool was attached: `%pool replay bg` shows them" in _text(told, "stderr")
    replayed = _text(kernel.execute("%pool replay bg"))
    ticks = [line for line in replayed.splitlines() if line.startswith("tick")]
    assert ticks == [f"tick {i}" for i in range(1, 30)] and replayed.endswith("done\n")
    assert "no output" in _text(kernel.execute("%pool replay bg"))
    kernel.execute("%pool stop")
    wait_for(lambda: process_start(pid) is None, timeout=15, what="%pool stop to stop kept workers")


def test_detach_and_start_keep_in_the_same_kernel(kept_runtime_dir, kernel):
    """%pool detach leaves the sessions running (the magics forget the pool);
    %pool start --keep brings them back; without --keep, detach is a UsageError."""
    kernel.execute("%load_ext nbpool\n%pool start -n 1")
    refused = kernel.execute("%pool detach")
    assert refused["reply"]["status"] == "error"
    assert "does not keep sessions" in refused["reply"]["evalue"]
    kernel.execute("%pool stop")
    kernel.execute("%pool start --keep --name same -n 1")
    pid = int(_text(kernel.execute("%%pool_exec -s s\nx = 3\nimport os; print(os.getpid())")))
    detached = _text(kernel.execute("%pool detach"))
    assert "detached pool 'same': 1 session(s) keep running for up to 3600 s" in detached
    assert "`%pool start --keep --name same` re-adopts them" in detached
    assert "no pool yet" in _text(kernel.execute("%pool status"))
    assert process_start(pid) is not None
    again = _text(kernel.execute("%pool start --keep --name same"))
    assert "re-adopted 1 kept session(s) of pool 'same': s (state intact)" in again
    assert _text(kernel.execute("%%pool_exec -s s\nprint(x)")) == "3\n"
    kernel.execute("%pool stop")
    wait_for(lambda: process_start(pid) is None, timeout=15, what="%pool stop to stop kept workers")
