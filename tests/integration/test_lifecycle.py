"""Pool lifecycle with real kernels: security of files and transport, no orphans,
bad input, other kernels."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

import nbpool
from nbpool.kernels.kernel import LaunchSettings
from nbpool.launcher import Launcher
from tests.helpers import gone, pids_with, wait_for


def test_connection_files_are_private_loopback_and_unique(tmp_path):
    """Connection files: 0600 in a 0700 dir, bound to 127.0.0.1, a key per worker."""
    with nbpool.Pool(size=2) as pool:
        runtime = pool._launcher.runtime.runtime_dir
        assert stat.S_IMODE(os.stat(runtime).st_mode) & 0o777 == 0o700
        files = sorted(p for p in os.listdir(runtime) if p.endswith(".json"))
        assert len(files) == 2
        infos = []
        for name in files:
            path = os.path.join(runtime, name)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            infos.append(json.load(open(path)))
        assert all(info["ip"] == "127.0.0.1" for info in infos)
        assert infos[0]["key"] != infos[1]["key"]
        assert infos[0]["curve_publickey"] != infos[1]["curve_publickey"]
    assert not os.path.exists(runtime), "the runtime dir is removed at shutdown"


def test_transport_is_encrypted_where_the_kernel_supports_it():
    """ipykernel workers run over CurveZMQ by default; status says so."""
    with nbpool.Pool(size=1) as pool:
        assert pool.status()["workers"][0]["encrypted"] is True
        assert pool.execute("1 + 1").result == "2"
    with nbpool.Pool(size=1, transport_encryption="disabled") as pool:
        assert pool.status()["workers"][0]["encrypted"] is False


def test_status_and_repr_carry_no_secrets():
    """Nothing secret (HMAC keys, Curve keys, connection-file paths) is in status or repr."""
    with nbpool.Pool(size=1) as pool:
        pool.execute("1", session="s")
        info = json.load(open(pool._coordinator.snapshot().workers[0][0].kernel.km.connection_file))
        text = (
            json.dumps(pool.status())
            + repr(pool)
            + repr(pool.status())
            + pool.status()._repr_html_()
        )
        for secret in (
            info["key"],
            info["curve_secretkey"],
            info["curve_publickey"],
            pool._launcher.runtime.runtime_dir,
        ):
            assert secret not in text


def test_ipc_transport_works(tmp_path):
    """Local workers can use the ipc transport (no ports at all)."""
    with nbpool.Pool(size=1, transport="ipc") as pool:
        assert pool.execute("print('over ipc')").stdout == "over ipc\n"


def test_shutdown_is_idempotent_and_stops_every_kernel():
    """shutdown() twice is harmless; afterwards no worker process remains."""
    pool = nbpool.Pool(size=2).start()
    pids = [w["pid"] for w in pool.status()["workers"]]
    pool.shutdown()
    pool.shutdown()
    assert all(gone(pid) for pid in pids)
    with pytest.raises(nbpool.PoolClosed):
        pool.execute("1")
    assert repr(pool) == "<nbpool.Pool closed>"


def test_a_start_in_flight_while_shutdown_runs_leaves_no_process():
    """A worker still starting when shutdown() runs is ended by it: afterwards no
    process of the pool's runtime dir (kernel, template, reaper) is left."""
    pool = nbpool.Pool(size=1, kernel_name="nbpool-test-slow").start(wait=False)
    runtime = pool._launcher.runtime.runtime_dir.encode()
    wait_for(lambda: len(pids_with(runtime)) >= 2, 15, "the reaper and the kernel to run")
    assert pool.status()["workers"][0]["state"] == "starting"
    pool.shutdown()
    assert pids_with(runtime) == [], "a process outlived shutdown()"


@pytest.mark.parametrize("fork_server", ["auto", "never"])
def test_a_launcher_refuses_to_start_once_closed_and_ends_a_kernel_it_cannot_connect(
    fork_server,
):
    """A launched kernel whose sockets cannot be made (its ZMQ context terminated,
    as at close) is ended before the start fails; after close() a start launches
    nothing and says the pool was shut down."""
    launcher = Launcher(LaunchSettings(fork_server=fork_server))
    launcher.open()
    runtime = launcher.runtime.runtime_dir.encode()
    launcher.runtime.context.term()  # no socket yet: returns at once
    with pytest.raises(nbpool.WorkerStartFailed, match="could not be connected to"):
        launcher.start("w1", "python3", 30)
    launcher.close()  # the reaper never learnt of that kernel: its end would not kill it
    assert pids_with(runtime) == [], "the kernel was left running"
    with pytest.raises(nbpool.WorkerStartFailed, match="the pool was shut down"):
        launcher.start("w2", "python3", 30)
    assert pids_with(runtime) == []


UNSTARTED = textwrap.dedent(
    """
    import gc, json, os, sys, tempfile, threading
    import nbpool

    def children():
        found = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == os.getpid():
                found.append(int(entry))
        return sorted(found)

    def descriptors():  # a ZMQ context holds an eventfd; the reaper a pipe; temp files
        held = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                held.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:  # the listing's own descriptor, closed by now
                pass
        return sorted(held)

    def footprint():
        prefix = f"nbpool-{os.getpid()}-"
        return {
            "threads": sorted(t.name for t in threading.enumerate()),
            "native threads": len(os.listdir("/proc/self/task")),  # ZMQ's are native
            "child processes": children(),
            "descriptors": descriptors(),
            "runtime dirs": [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(prefix)],
        }

    before = footprint()
    pool = nbpool.Pool(size=2)
    constructed = footprint()
    if sys.argv[1] == "shutdown":
        pool.shutdown()
        pool.shutdown()
        try:
            pool.execute("1")
        except nbpool.PoolClosed:
            pass
        else:
            raise AssertionError("a shut-down pool ran code")
    else:
        del pool
        gc.collect()
    print(json.dumps({"before": before, "constructed": constructed, "after": footprint()}))
    """
)


@pytest.mark.parametrize("end", ["shutdown", "del"])
def test_a_pool_never_started_acquires_nothing_and_leaves_nothing(end):
    """Pool() acquires no thread, process, descriptor (ZMQ context, pipe) or runtime dir
    before start(); shutdown() of it (twice) or dropping it leaves nothing, and its
    process exits cleanly (nothing left for atexit)."""
    host = subprocess.run(
        [sys.executable, "-c", UNSTARTED, end], capture_output=True, text=True, timeout=60
    )
    assert host.returncode == 0 and "Traceback" not in host.stderr, host.stderr
    seen = json.loads(host.stdout)
    assert seen["constructed"] == seen["before"], "constructing acquired something"
    assert seen["after"] == seen["before"], f"{end} left something behind"


HOST = textwrap.dedent(
    """
    import os, sys, nbpool
    pool = nbpool.Pool(size=2).start()
    pids = " ".join(str(w["pid"]) for w in pool.status()["workers"])
    print(pids, pool._launcher.runtime.runtime_dir, flush=True)
    if sys.argv[1] == "exit":
        sys.exit(0)          # no shutdown(): atexit must do it
    sys.stdin.read()         # wait to be SIGKILLed
    """
)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_no_worker_outlives_its_host_process(how):
    """Workers go away when the host exits without shutdown() or is SIGKILLed (<= 10 s)."""
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        *pids, runtime = host.stdout.readline().split()
        pids = [int(p) for p in pids]
        assert len(pids) == 2 and not any(gone(p) for p in pids)
        if how == "sigkill":
            host.send_signal(signal.SIGKILL)
        host.wait(30)
        assert "Traceback" not in host.stderr.read(), "atexit shutdown must be clean"
        wait_for(lambda: all(gone(p) for p in pids), timeout=10, what="orphaned workers to exit")
        wait_for(lambda: not os.path.exists(runtime), timeout=10, what="runtime dir removed")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": -1}, "size must be a whole number >= 0, got -1"),
        ({"size": 2, "max_size": 1}, "max_size must be >= size"),
        ({"lease_timeout": 0}, "lease_timeout must be a positive number of seconds, got 0"),
        ({"exec_timeout": -5}, "exec_timeout must be a positive number of seconds or None, got -5"),
        ({"heartbeat_timeout": 0.5}, "heartbeat_timeout must exceed"),
        ({"size": "four"}, "invalid Pool setting"),
        ({"transport": "udp"}, "invalid Pool setting"),
        ({"sshkey": "~/.ssh/id_ed25519"}, "set sshserver too"),
        ({"sshserver": "-oProxyCommand=x"}, "sshserver must be"),
    ],
)
def test_bad_settings_raise_value_error_naming_the_value(kwargs, message):
    """A bad constructor value raises ValueError (InvalidConfig) naming it, at once."""
    with pytest.raises(ValueError, match=message) as info:
        nbpool.Pool(**kwargs)
    assert isinstance(info.value, nbpool.NbpoolError)


def test_unknown_kernelspec_lists_the_available_ones():
    """An unknown kernel name is refused with the installed kernelspecs listed."""
    with pytest.raises(
        nbpool.UnknownKernel, match="no kernelspec named 'nope'; available: .*python3"
    ):
        nbpool.Pool(kernel_name="nope")


def test_bad_execute_arguments(shared_pool):
    """Non-string code is a TypeError; bad timeouts and sessions are ValueErrors."""
    with pytest.raises(TypeError, match="code must be a str"):
        shared_pool.execute(42)
    with pytest.raises(ValueError, match="timeout must be a positive"):
        shared_pool.execute("1", timeout=0)
    for bad, match in [
        ("  ", "session name is empty"),
        ("a\nb", "control character '\\\\n'"),
        ("x" * 201, "at most 200"),
        (7, "must be a string"),
    ]:
        with pytest.raises(nbpool.InvalidConfig, match=match):
            shared_pool.execute("1", session=bad)
    assert shared_pool.execute("1", session="  padded ").session == "padded"
    with pytest.raises(nbpool.UnknownKernel):
        shared_pool.execute("1", kernel="nope")


def test_config_through_traitlets():
    """Pool reads traitlets config (c.Pool.size = ...), like ipython_config.py."""
    from traitlets.config import Config

    config = Config()
    config.Pool.size = 0
    config.Pool.max_size = 5
    config.Pool.lease_timeout = 7.5
    pool = nbpool.Pool(config=config)
    try:
        status = pool.status()
        assert (status["size"], status["max_size"], pool.lease_timeout) == (0, 5, 7.5)
    finally:
        pool.shutdown()


def test_end_session_gives_a_fresh_kernel(shared_pool):
    """end_session: the next execution of that name runs in a new process, empty state."""
    shared_pool.execute("x = 1", session="ending")
    pid = shared_pool.execute("import os; os.getpid()", session="ending").result
    assert shared_pool.end_session("ending") is True
    assert shared_pool.end_session("ending") is False
    res = shared_pool.execute("import os; (os.getpid(), 'x' in globals())", session="ending")
    assert res.result != f"({pid}, True)" and res.result.endswith("False)")


def test_bash_kernel_workers(bash_kernel):
    """A kernel nobody here wrote (bash_kernel) works as a worker, with session state."""
    with nbpool.Pool(size=1, kernel_name=bash_kernel) as pool:
        res = pool.execute("X=41; echo hello from bash", session="sh")
        assert res.ok and res.stdout.strip() == "hello from bash"
        assert pool.execute("echo $((X + 1))", session="sh").stdout.strip() == "42"
        assert pool.execute("exit_code_test() { return 3; }; false", session="sh").ok is False


def test_sessions_can_choose_their_kernel(bash_kernel):
    """A session asks for another kernelspec; the pool starts one for it."""
    with nbpool.Pool(size=1, max_size=2) as pool:
        assert pool.execute("1 + 1").result == "2"
        res = pool.execute("echo $0", session="sh", kernel=bash_kernel)
        assert res.ok and "bash" in res.stdout
        kernels = sorted(w["kernel"] for w in pool.status()["workers"])
        assert kernels == ["bash", "python3"]
