"""Attaching kernels someone else started, through their connection files."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from jupyter_client.manager import KernelManager

import nbpool
from tests.helpers import gone, wait_for


@pytest.fixture
def outside_kernel(tmp_path):
    """A kernel started by 'someone else' (its own KernelManager, not nbpool)."""
    km = KernelManager(kernel_name="python3", connection_file=str(tmp_path / "kernel-1234.json"))
    km.start_kernel(extra_arguments=["--HistoryManager.enabled=False"])
    yield km
    if km.has_kernel:
        km.shutdown_kernel(now=True)


def test_attached_kernel_runs_its_session_and_survives_shutdown(outside_kernel):
    """attach() binds the kernel to its session; shutdown detaches, never kills it."""
    pool = nbpool.Pool(size=0)
    try:
        worker_id = pool.attach(outside_kernel.connection_file, session="gpu-box")
        res = pool.execute("import os; os.getpid()", session="gpu-box")
        assert res.worker_id == worker_id
        assert int(res.result) == outside_kernel.provisioner.process.pid
        row = next(w for w in pool.status()["workers"] if w["id"] == worker_id)
        assert row["attached"] is True and row["session"] == "gpu-box"
    finally:
        pool.shutdown()
    assert outside_kernel.is_alive(), "nbpool must never kill what it did not start"


def test_end_session_of_an_attached_kernel_detaches_it(outside_kernel):
    """Ending an attached session disconnects; the kernel keeps running."""
    with nbpool.Pool(size=0) as pool:
        pool.attach(outside_kernel.connection_file, session="ext")
        pool.execute("x = 5", session="ext")
        pool.end_session("ext")
        wait_for(lambda: not pool.status()["workers"], what="attached worker removed")
        assert outside_kernel.is_alive()


def test_attached_kernel_death_is_reported_and_not_restarted(outside_kernel):
    """A dead attached kernel fails its holder with WorkerDied; nbpool starts no substitute."""
    with nbpool.Pool(size=0, heartbeat_timeout=2.0) as pool:
        pool.attach(outside_kernel.connection_file, session="ext")
        pool.execute("1", session="ext")
        os.kill(outside_kernel.provisioner.process.pid, signal.SIGKILL)
        wait_for(lambda: pool.status()["counters"]["deaths"] == 1, timeout=10, what="death seen")
        assert all(w["kernel"] != "python3" for w in pool.status()["workers"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "is not JSON"),
        ('{"ip": "127.0.0.1"}', r"is not a kernel connection file \(missing key, transport"),
    ],
)
def test_bad_connection_files_fail_clearly(tmp_path, content, message):
    """A missing, non-JSON or incomplete connection file: AttachFailed naming file and cause."""
    path = tmp_path / "kernel-bad.json"
    if content is not None:
        path.write_text(content)
    with nbpool.Pool(size=0) as pool:
        with pytest.raises(nbpool.AttachFailed, match=message) as info:
            pool.attach(str(path), session="x")
        assert str(path) in str(info.value)
        assert pool.status()["workers"] == []


def test_unreadable_connection_file(tmp_path):
    """A connection file that cannot be read is named with the OS's reason."""
    path = tmp_path / "kernel-locked.json"
    path.mkdir()  # reading a directory fails even for root
    with nbpool.Pool(size=0) as pool, pytest.raises(nbpool.AttachFailed, match="is unreadable"):
        pool.attach(str(path), session="x")


def test_dead_kernel_or_wrong_key_fails_within_the_attach_timeout(outside_kernel, tmp_path):
    """A file whose kernel is gone, or whose key is wrong, fails within attach_timeout."""
    info = json.loads(open(outside_kernel.connection_file).read())
    info["key"] = "not-the-key"
    wrong = tmp_path / "kernel-wrong-key.json"
    wrong.write_text(json.dumps(info))
    with nbpool.Pool(size=0, max_size=1, attach_timeout=2) as pool:
        started = time.monotonic()
        with pytest.raises(
            nbpool.AttachFailed, match="kernel-wrong-key.json: .*not the kernel's key"
        ):
            pool.attach(str(wrong), session="x")
        assert time.monotonic() - started < 10
        pid = outside_kernel.provisioner.process.pid
        stale = open(outside_kernel.connection_file).read()
        outside_kernel.shutdown_kernel(now=True)  # also removes its connection file
        wait_for(lambda: gone(pid), what="kernel gone")
        (tmp_path / "kernel-stale.json").write_text(stale)
        with pytest.raises(nbpool.AttachFailed, match="kernel-stale.json: no answer"):
            pool.attach(str(tmp_path / "kernel-stale.json"), session="x")
        assert pool.execute("1 + 1", session="local").result == "2", "pool unaffected"


def test_attach_only_pool_refuses_unattached_sessions_at_once():
    """With max_size=0 a session without an attached kernel fails at once, saying why."""
    with nbpool.Pool(size=0, max_size=0) as pool:  # size=0 alone is a lazy pool
        with pytest.raises(nbpool.LeaseTimeout, match="starts none"):
            pool.execute("1", session="nowhere", lease_timeout=60)


def test_plaintext_kernel_off_this_machine_is_refused(tmp_path):
    """A non-loopback kernel without Curve keys is refused (no traffic is sent)."""
    path = tmp_path / "kernel-remote.json"
    path.write_text(
        json.dumps(
            {
                "ip": "192.0.2.10",
                "key": "k",
                "transport": "tcp",
                "signature_scheme": "hmac-sha256",
                "shell_port": 1,
                "iopub_port": 2,
                "stdin_port": 3,
                "hb_port": 4,
                "control_port": 5,
            }
        )
    )
    with nbpool.Pool(size=0) as pool:
        with pytest.raises(nbpool.AttachFailed, match="plain text"):
            pool.attach(str(path), session="remote")


def test_bad_ssh_settings_fail_at_once_naming_the_cause(outside_kernel, tmp_path, monkeypatch):
    """Bad sshserver/sshkey values, an ipc kernel, no ssh client: one line each, no wait.

    The SSH path itself is tested against a real sshd in tests/netns/test_ssh_tunnel.py.
    """
    path = outside_kernel.connection_file
    ipc = tmp_path / "kernel-ipc.json"
    ipc.write_text(json.dumps({**json.loads(open(path).read()), "transport": "ipc"}))
    with nbpool.Pool(size=0) as pool:
        for bad in ("", "-oProxyCommand=touch /tmp/x", "me @box", 3):
            with pytest.raises(ValueError, match=r"sshserver must be '\[user@\]host\[:port\]'"):
                pool.attach(path, session="x", sshserver=bad)
        with pytest.raises(ValueError, match="sshkey must be a key file path"):
            pool.attach(path, session="x", sshserver="me@box", sshkey=3)
        with pytest.raises(ValueError, match="pass sshserver too"):
            pool.attach(path, session="x", sshkey="~/.ssh/id_ed25519")
        with pytest.raises(nbpool.AttachFailed, match="ipc transport cannot be reached over SSH"):
            pool.attach(str(ipc), session="x", sshserver="me@box")
        with pytest.raises(nbpool.AttachFailed, match="SSH key file .*nokey does not exist"):
            pool.attach(path, session="x", sshserver="me@box", sshkey=str(tmp_path / "nokey"))
        monkeypatch.setenv("PATH", str(tmp_path))  # no ssh here
        with pytest.raises(nbpool.AttachFailed, match="needs the OpenSSH client `ssh` on PATH"):
            pool.attach(path, session="x", sshserver="me@box")
        assert pool.status()["workers"] == []


def test_attach_to_a_bound_session_is_refused(outside_kernel):
    """A session that already has a worker cannot take a second one."""
    with nbpool.Pool(size=1) as pool:
        pool.execute("1", session="busy")
        with pytest.raises(ValueError, match="already has worker"):
            pool.attach(outside_kernel.connection_file, session="busy")


def test_session_of_a_dead_attached_kernel_is_not_moved_to_a_local_worker(outside_kernel):
    """After its attached kernel died, a session is refused until attached again."""
    with nbpool.Pool(size=1, heartbeat_timeout=2.0) as pool:
        pool.attach(outside_kernel.connection_file, session="ext")
        os.kill(outside_kernel.provisioner.process.pid, signal.SIGKILL)
        wait_for(lambda: pool.status()["counters"]["deaths"] == 1, timeout=10, what="death seen")
        with pytest.raises(nbpool.WorkerDied, match="attach it again"):
            pool.execute("1", session="ext")
        assert pool.end_session("ext")
        assert pool.execute("1 + 1", session="ext").result == "2", "a fresh local session now"


def test_attached_sessions_are_never_evicted(outside_kernel):
    """evict_idle_sessions never picks a session whose kernel nbpool did not start."""
    with nbpool.Pool(size=1, evict_idle_sessions=True, lease_timeout=3) as pool:
        pool.attach(outside_kernel.connection_file, session="ext")
        pool.execute("x = 1", session="ext")
        pool.execute("1", session="a")
        pool.execute("1", session="b")  # evicts 'a', not 'ext'
        assert pool.execute("x", session="ext").result == "1"
