"""Attaching a kernel that only SSH can reach, through nbpool's SSH tunnel.

The kernel runs on the namespace host bound to *its* loopback, so nothing on
this side can reach its ports directly; the host's sshd is the only way in.
``pool.attach(file, session, sshserver="root@HOST")`` forwards the five ports
with one OpenSSH client process (see sshhost.py for its configuration).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import nbpool
from tests.helpers import pids_with, wait_for
from tests.netns import hosts
from tests.netns.sshhost import UNKNOWN_ALIAS
from tests.netns.test_provisioned import MARKER, MARKER_CODE, in_namespace_code


@pytest.fixture
def loopback_kernel(ssh_host, tmp_path):
    """An ipykernel on the SSH host listening on the host's own 127.0.0.1 only."""
    path = str(tmp_path / "kernel-behind-ssh.json")
    log = open(tmp_path / "kernel.log", "wb")
    proc = ssh_host.start_loopback_kernel(path, log)
    try:
        yield path, proc
    finally:
        proc.kill()
        proc.wait()
        log.close()


def test_kernel_behind_ssh_is_attached_through_a_tunnel(ssh_host, loopback_kernel):
    """Runs there, interrupts over the tunnelled control port, detaches at shutdown."""
    path, proc = loopback_kernel
    server = f"root@{ssh_host.host.address}"
    with nbpool.Pool(size=0, attach_timeout=30) as pool:
        with hosts.Capture(ssh_host.host) as capture:
            pool.attach(path, session="far", sshserver=server, sshkey=str(ssh_host.key))
            assert pool.execute(in_namespace_code(ssh_host.host), session="far").result == "True"
            res = pool.execute(MARKER_CODE, session="far")
        assert res.stdout == MARKER.decode() + "\n"
        assert len(capture.data) > 1000, "the traffic crossed the namespace link"
        assert MARKER not in capture.data and b"EAVESDROP" not in capture.data
        (row,) = pool.status()["workers"]
        assert row["attached"] is True and row["kernel"].endswith(f"via ssh {server}")

        pool.execute("kept = 1", session="far")
        started = time.monotonic()
        with pytest.raises(nbpool.ExecutionTimeout):
            pool.execute("import time; time.sleep(30)", session="far", timeout=0.5)
        assert time.monotonic() - started < 10
        assert pool.execute("kept", session="far").result == "1"
    assert proc.poll() is None, "shutdown only detaches: the kernel it did not start still runs"


def test_ssh_login_that_fails_is_one_clear_error(ssh_host, loopback_kernel, tmp_path):
    """A key the host does not accept: ssh's own reason, within seconds, pool unaffected."""
    path, _ = loopback_kernel
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    server = f"root@{ssh_host.host.address}"
    with nbpool.Pool(size=1, attach_timeout=30) as pool:
        started = time.monotonic()
        with pytest.raises(nbpool.AttachFailed) as info:
            pool.attach(path, session="far", sshserver=server, sshkey=str(stranger))
        message = str(info.value)
        assert "\n" not in message and path in message
        assert f"ssh to {server} failed: Permission denied" in message
        assert time.monotonic() - started < 10
        with pytest.raises(nbpool.AttachFailed, match="SSH key file .* does not exist"):
            pool.attach(path, session="far", sshserver=server, sshkey=str(tmp_path / "nope"))
        key = str(ssh_host.key)
        with pytest.raises(nbpool.AttachFailed, match="Host key verification failed"):
            pool.attach(path, session="far", sshserver=f"root@{UNKNOWN_ALIAS}", sshkey=key)
        with pytest.raises(nbpool.AttachFailed, match="port 22: Connection refused$"):
            pool.attach(path, session="far", sshserver=f"root@{ssh_host.host.gateway}", sshkey=key)
        assert pool.execute("1 + 1").result == "2"
        assert [w["attached"] for w in pool.status()["workers"]] == [False]


def test_the_tunnel_is_ours_stopped_at_detach_and_its_loss_is_a_death(ssh_host, loopback_kernel):
    """One ssh process per attached kernel; gone after shutdown; if it dies, WorkerDied at once."""
    path, kernel = loopback_kernel
    server = f"root@{ssh_host.host.address}"
    before = set(_tunnel_pids(ssh_host))
    with nbpool.Pool(size=0, attach_timeout=30) as pool:
        pool.attach(path, session="far", sshserver=server, sshkey=str(ssh_host.key))
        assert pool.execute("1 + 1", session="far").result == "2"
        (tunnel,) = set(_tunnel_pids(ssh_host)) - before
        assert len(ssh_host.kernel_pids()) > 1, "the tunnel's session runs on the host"
    assert tunnel not in _tunnel_pids(ssh_host), "shutdown stopped the tunnel"
    wait_for(
        lambda: ssh_host.kernel_pids() == [kernel.pid],
        what="the tunnel's session on the host (sshd child, idle command) to end",
    )
    assert kernel.poll() is None, "and only the tunnel: the kernel still runs"

    with nbpool.Pool(size=0, attach_timeout=30) as pool:
        pool.attach(path, session="far", sshserver=server, sshkey=str(ssh_host.key))
        (tunnel,) = set(_tunnel_pids(ssh_host)) - before
        started = time.monotonic()
        with pool.lease(session="far") as lease:
            os.kill(tunnel, signal.SIGKILL)
            with pytest.raises(nbpool.WorkerDied, match="its SSH tunnel exited"):
                lease.execute("import time; time.sleep(30)")
        assert time.monotonic() - started < 2, "noticed from the process, not by heartbeat"
        with pytest.raises(nbpool.WorkerDied, match="attach it again"):
            pool.execute("1", session="far")


def test_plain_text_beyond_the_ssh_server_is_refused(ssh_host, loopback_kernel, tmp_path):
    """A kernel the SSH server reaches over the network, without Curve: refused, nothing sent."""
    path, _ = loopback_kernel
    info = json.loads(open(path).read())
    elsewhere = tmp_path / "kernel-elsewhere.json"
    elsewhere.write_text(json.dumps({**info, "ip": "192.0.2.10"}))
    with nbpool.Pool(size=0) as pool:
        before = set(_tunnel_pids(ssh_host))
        refused = r"192.0.2.10 \(as seen from root@.*plain text"
        with pytest.raises(nbpool.AttachFailed, match=refused):
            pool.attach(
                str(elsewhere),
                session="far",
                sshserver=f"root@{ssh_host.host.address}",
                sshkey=str(ssh_host.key),
            )
        assert set(_tunnel_pids(ssh_host)) == before, "refused before any ssh was started"


def test_a_local_port_taken_before_ssh_binds_it_is_chosen_again(
    ssh_host, loopback_kernel, monkeypatch
):
    """ssh refuses a forward whose port another program took meanwhile; nbpool picks new ports."""
    import nbpool.kernels.ssh

    path, _ = loopback_kernel
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real = nbpool.kernels.ssh.select_random_ports
        calls = []

        def first_one_taken(n):
            calls.append(n)
            ports = real(n)
            return [taken, *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(nbpool.kernels.ssh, "select_random_ports", first_one_taken)
        with nbpool.Pool(size=0, attach_timeout=30) as pool:
            pool.attach(
                path,
                session="far",
                sshserver=f"root@{ssh_host.host.address}",
                sshkey=str(ssh_host.key),
            )
            assert pool.execute("1 + 1", session="far").result == "2"
        assert len(calls) == 2


NOTEBOOK = """
import sys, nbpool
pool = nbpool.Pool(size=0, attach_timeout=30)
pool.attach(sys.argv[1], session="far", sshserver=sys.argv[2], sshkey=sys.argv[3])
print(pool.execute("1 + 1", session="far").result, flush=True)
sys.stdin.read()  # wait to be SIGKILLed
"""


def test_no_tunnel_outlives_a_killed_notebook_process(ssh_host, loopback_kernel):
    """The reaper stops the tunnel when the process holding the pool is SIGKILLed."""
    path, kernel = loopback_kernel
    before = set(_tunnel_pids(ssh_host))
    notebook = subprocess.Popen(
        [sys.executable, "-c", NOTEBOOK, path, f"root@{ssh_host.host.address}", str(ssh_host.key)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert notebook.stdout.readline().strip() == "2"
        (tunnel,) = set(_tunnel_pids(ssh_host)) - before
        notebook.kill()
        notebook.wait(30)
        wait_for(
            lambda: tunnel not in _tunnel_pids(ssh_host),
            timeout=10,
            what="the orphaned SSH tunnel to be reaped",
        )
        assert kernel.poll() is None, "the attached kernel itself is left alone"
    finally:
        if notebook.poll() is None:
            notebook.kill()
            notebook.wait()


def _tunnel_pids(ssh_host) -> list[int]:
    """Local ``ssh -L`` processes forwarding to this host."""
    address = ssh_host.host.address.encode()
    return [p for p in pids_with(b"ExitOnForwardFailure") if address in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
