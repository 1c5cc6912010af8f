"""Kept sessions: they outlive the pool's process, come back with their state, and
never run beyond keep_for (real kernels, real processes, a private runtime dir)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

import nbpool
from nbpool.kept.store import KeptPool, process_start
from tests.helpers import pids_with, wait_for


@pytest.fixture(autouse=True)
def runtime_dir(kept_runtime_dir):
    return kept_runtime_dir


#: A bg loop that prints once, waits for the file ``go``, then prints on.
LOOP = (
    "import os, time\nprint('tick 0', flush=True)\n"
    "while not os.path.exists({go!r}):\n    time.sleep(0.01)\n"
    "for i in range(1, 40):\n    print('tick', i, flush=True)\nprint('done')"
)


def host(code: str, tmp_path) -> subprocess.Popen:
    """A process hosting a pool (stdout piped, one line per print)."""
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )


def gone(pid: int) -> bool:
    return process_start(pid) is None


def journal_text(name: str, session: str) -> str:
    try:
        with open(KeptPool(name).journal_path(session)) as f:
            return f.read()
    except OSError:
        return ""


def test_detach_in_one_process_readopt_in_another_with_state_and_bg_output(tmp_path):
    """A detached session keeps its state and worker; a --bg loop running at the
    detach keeps running, its later output is journaled and replayed in order."""
    go = tmp_path / "go"
    proc = host(
        f"""
        import time, nbpool
        pool = nbpool.Pool(size=1, name="analysis", keep_sessions=True).start()
        pool.execute("x = 41", session="etl")
        seen = []
        pool.submit({LOOP.format(go=str(go))!r}, session="train", on_output=seen.append)
        while not seen:
            time.sleep(0.01)
        pool.detach()
        print("detached", flush=True)
        """,
        tmp_path,
    )
    assert proc.stdout.readline().strip() == "detached"
    assert proc.wait(timeout=30) == 0
    state = KeptPool("analysis").load()
    pids = {name: r["pid"] for name, r in state["sessions"].items()}
    assert set(pids) == {"etl", "train"} and not any(gone(p) for p in pids.values())
    with nbpool.Pool(size=1, name="analysis", keep_sessions=True) as pool:
        back = {s["session"]: s for s in pool.readopted}
        assert back["etl"]["intact"] and back["train"]["intact"]
        res = pool.execute("x + 1", session="etl")
        assert res.result == "42" and res.session_reset is None
        sessions = {s["name"]: s for s in pool.status()["sessions"]}
        assert sessions["etl"]["generation"] == 0 and sessions["etl"]["kept"]
        assert {w["pid"] for w in pool.status()["workers"] if w["session"]} == set(pids.values())
        # The loop still runs, started by a pool that is gone: no cell shows
        # what it prints now, so the keeper journals it, though a pool is attached.
        go.touch()
        wait_for(lambda: "done" in journal_text("analysis", "train"), 30, "the bg loop")
        assert pool.waiting_output("train")[0] >= 1
        outputs = pool.replay("train")
        text = "".join(o["text"] for o in outputs if o["output_type"] == "stream")
        ticks = [int(line.split()[1]) for line in text.splitlines() if line.startswith("tick")]
        assert ticks == list(range(1, 40)), text  # all it printed after the detach
        assert text.endswith("done\n")
        assert pool.replay("train") == []  # taken
    assert all(gone(p) for p in pids.values())  # shutdown stops kept sessions too


def test_sigkill_of_the_host_keeps_kept_workers_and_stops_the_rest(tmp_path):
    """SIGKILL of the pool's process: the reaper still stops unbound workers; kept
    ones run on and are re-adoptable with their state."""
    proc = host(
        """
        import json, nbpool
        pool = nbpool.Pool(size=2, name="crash", keep_sessions=True).start()
        pool.execute("x = 'kept'", session="s")
        workers = pool.status()["workers"]
        print(json.dumps({w["session"] or "free": w["pid"] for w in workers}), flush=True)
        import time
        time.sleep(600)
        """,
        tmp_path,
    )
    pids = json.loads(proc.stdout.readline())
    kp = KeptPool("crash")
    wait_for(lambda: kp.following().get("s") == pids["s"], timeout=30, what="the keeper")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for(lambda: gone(pids["free"]), timeout=15, what="the reaper to stop the free worker")
    # Of the host's processes (its reaper and workers name its runtime dir),
    # only the kept worker is left.
    marker = f"nbpool-{proc.pid}-".encode()
    wait_for(lambda: set(pids_with(marker)) == {pids["s"]}, 15, "the reaper to finish")
    with nbpool.Pool(size=0, name="crash", keep_sessions=True) as pool:
        assert pool.execute("x", session="s").result == "'kept'"
    assert gone(pids["s"])


def test_sigkill_right_after_start_loses_no_output_of_a_kept_session(tmp_path):
    """SIGKILL as soon as a new pool's first kept session printed, without waiting for
    the keeper: all the session printed from then on is journaled and replayed."""
    go = tmp_path / "go"
    proc = host(
        f"""
        import time, nbpool
        pool = nbpool.Pool(size=1, name="early", keep_sessions=True).start()
        seen = []
        pool.submit({LOOP.format(go=str(go))!r}, session="s", on_output=seen.append)
        while not seen:
            time.sleep(0.01)
        print("running", flush=True)
        time.sleep(600)
        """,
        tmp_path,
    )
    assert proc.stdout.readline().strip() == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    go.touch()  # the loop prints on only now, with no pool attached
    wait_for(lambda: "done" in journal_text("early", "s"), 30, "the bg loop's output journaled")
    with nbpool.Pool(size=0, name="early", keep_sessions=True) as pool:
        (back,) = pool.readopted
        assert back["session"] == "s" and back["intact"]
        text = "".join(o["text"] for o in pool.replay("s") if o["output_type"] == "stream")
    ticks = [int(line.split()[1]) for line in text.splitlines() if line.startswith("tick")]
    # tick 0 reached the killed pool; it may be journaled too (the keeper's cutoff
    # for a pool that died is the last moment it saw it attached).
    assert [t for t in ticks if t] == list(range(1, 40)), text
    assert text.endswith("done\n")


def test_a_worker_that_died_meanwhile_comes_back_as_a_session_reset():
    """A kept worker that ended while detached: the keeper, with nothing left to
    keep, exits; the session comes back reset, told plainly."""
    pool = nbpool.Pool(size=1, name="reset", keep_sessions=True).start()
    pool.execute("x = 1", session="s")
    pid = pool.status()["workers"][0]["pid"]
    pool.detach()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(pid), what="the worker to die")
    kp = KeptPool("reset")
    wait_for(lambda: not pids_with(kp.dir.encode()), 15, "the keeper to exit: nothing left")
    assert kp.load() is not None  # the record stays, to tell the next pool
    with nbpool.Pool(size=1, name="reset", keep_sessions=True) as pool:
        (back,) = pool.readopted
        assert not back["intact"] and "ended while no pool was attached" in back["reason"]
        res = pool.execute("'x' in globals()", session="s")
        assert res.result == "False"
        assert "ended while no pool was attached" in res.session_reset
        assert pool.status()["sessions"][0]["generation"] == 1


def test_two_pools_racing_to_adopt_exactly_one_wins():
    """Two live pools never share kept sessions: the lock lets one in, the other
    gets PoolInUse naming the holder."""
    pool = nbpool.Pool(size=1, name="race", keep_sessions=True).start()
    pool.execute("x = 7", session="s")
    pool.detach()
    rivals = [nbpool.Pool(size=0, name="race", keep_sessions=True) for _ in range(2)]
    barrier = threading.Barrier(2)
    outcome: dict[int, object] = {}

    def adopt(i: int) -> None:
        barrier.wait()
        try:
            rivals[i].start()
            outcome[i] = "won"
        except nbpool.NbpoolError as exc:
            outcome[i] = exc

    threads = [threading.Thread(target=adopt, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(map(str, outcome.values())).count("won") == 1, outcome
        (loser,) = [e for e in outcome.values() if e != "won"]
        assert isinstance(loser, nbpool.PoolInUse)
        assert f"process {os.getpid()}" in str(loser) and "race" in str(loser)
        (winner,) = [rivals[i] for i, e in outcome.items() if e == "won"]
        assert winner.execute("x", session="s").result == "7"
    finally:
        for rival in rivals:
            rival.shutdown()


def test_keep_for_expiry_stops_workers_and_the_keeper(runtime_dir):
    """Unattached for keep_for seconds: the keeper stops the kept workers, removes
    the records and exits."""
    pool = nbpool.Pool(size=1, name="brief", keep_sessions=True, keep_for=1.0).start()
    pool.execute("x = 1", session="s")
    pid = pool.status()["workers"][0]["pid"]
    kp = KeptPool("brief")
    assert pids_with(kp.dir.encode())  # the keeper runs
    pool.detach()
    wait_for(lambda: gone(pid), timeout=15, what="keep_for to stop the worker")
    wait_for(lambda: not pids_with(kp.dir.encode()), timeout=15, what="the keeper to exit")
    assert kp.load() is None


def test_a_kept_session_is_never_stopped_while_attached():
    """keep_for counts only unattached time."""
    with nbpool.Pool(size=1, name="held", keep_sessions=True, keep_for=0.5) as pool:
        pool.execute("x = 1", session="s")
        kp = KeptPool("held")
        wait_for(lambda: kp.following().get("s"), timeout=30, what="the keeper")
        deadline = pool.execute("import time; time.sleep(2); x", session="s")
        assert deadline.result == "1"


def test_cli_lists_and_stops_kept_sessions(tmp_path):
    """`python -m nbpool sessions` and `stop POOL` work with no pool running."""
    pool = nbpool.Pool(size=1, name="cli", keep_sessions=True).start()
    pool.execute("x = 1", session="etl")
    pid = pool.status()["workers"][0]["pid"]

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "nbpool", *args], capture_output=True, text=True, timeout=60
        )

    attached = cli("sessions")
    assert f"attached (process {os.getpid()})" in attached.stdout
    refused = cli("stop", "cli")
    assert refused.returncode == 1 and "attached to process" in refused.stderr
    pool.detach()
    listed = cli("sessions")
    header, row = listed.stdout.splitlines()
    assert header.split() == ["pool", "session", "state", "idle", "for", "pid"]
    assert row.split()[:3] == ["cli", "etl", "detached"] and row.split()[-1] == str(pid)
    unknown = cli("stop", "nope")
    assert unknown.returncode == 1 and "'cli'" in unknown.stderr
    stopped = cli("stop", "cli")
    assert stopped.returncode == 0 and "1 kept worker" in stopped.stdout
    wait_for(lambda: gone(pid), what="the worker to stop")
    assert cli("sessions").stdout.strip() == "no kept sessions"


def test_records_are_owner_only_and_keys_stay_in_them(runtime_dir):
    """Owner-only directory and files; no key in status(), repr, the keeper's argv or env."""
    with nbpool.Pool(size=1, name="secret", keep_sessions=True) as pool:
        pool.execute("x = 1", session="s")
        kp = KeptPool("secret")
        wait_for(lambda: kp.following().get("s"), timeout=30, what="the keeper")
        for directory in (os.path.dirname(kp.dir), kp.dir):
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        for entry in os.listdir(kp.dir):
            mode = stat.S_IMODE(os.stat(os.path.join(kp.dir, entry)).st_mode)
            assert mode == 0o600, (entry, oct(mode))
        key = next(iter(kp.load()["sessions"].values()))["connection"]["key"]
        assert len(key) >= 16
        assert key not in json.dumps(pool.status()) and key not in repr(pool)
        (keeper,) = pids_with(kp.dir.encode())
        for part in ("cmdline", "environ"):
            with open(f"/proc/{keeper}/{part}", "rb") as f:
                assert key.encode() not in f.read()
