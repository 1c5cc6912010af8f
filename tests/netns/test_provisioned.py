"""Worker kernels on another "host" (network namespace), started through a kernel provisioner.

The kernelspecs name the test provisioner in ``metadata.kernel_provisioner``;
nbpool uses them like any kernelspec. Every byte between the pool and such a
kernel crosses the namespace's veth link, which :class:`hosts.Capture` reads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

import nbpool
import nbpool.kernels._reaper
import nbpool.launcher
from tests.helpers import started_kernel, wait_for
from tests.netns import hosts
from tests.netns.provisioner import NetnsProvisioner

#: Printed by the test code: the string only exists once the kernel ran the code.
MARKER_CODE = "print('NBPOOL-' + 'EAVESDROP-' + 'MARKER')"
MARKER = b"NBPOOL-EAVESDROP-MARKER"


def in_namespace_code(host) -> str:
    """Code that is True only when run inside ``host``'s network namespace."""
    return (
        "import os; os.stat('/proc/self/ns/net').st_ino == "
        f"os.stat('/run/netns/{host.name}').st_ino"
    )


def test_provisioned_kernel_runs_on_the_other_host_encrypted(remote):
    """A provisioner kernelspec works unchanged; its worker is off-host and Curve-encrypted."""
    with nbpool.Pool(size=1, kernel_name=remote.kernel) as pool:
        with hosts.Capture(remote.host) as capture:
            assert pool.execute(in_namespace_code(remote), session="far").result == "True"
            res = pool.execute(MARKER_CODE, session="far")
        assert res.stdout == MARKER.decode() + "\n"
        row = pool.status()["workers"][0]
        assert row["encrypted"] is True and row["attached"] is False
        assert row["pid"] is None, "a provisioned kernel has no local process nbpool could see"
        assert len(capture.data) > 1000, "the traffic crossed the namespace link"
        assert MARKER not in capture.data and b"EAVESDROP" not in capture.data
    wait_for(lambda: not remote.pids(), what="the remote kernel stopped at shutdown")


NOTEBOOK = """
import sys, nbpool
pool = nbpool.Pool(size=2, kernel_name=sys.argv[1]).start()
print(pool.execute("1 + 1").result, flush=True)
sys.stdin.read()  # wait to be SIGKILLed
"""


def kill_a_notebook_process_holding(kernel_name: str, pids_on_host) -> None:
    """SIGKILL a process whose pool has two ``kernel_name`` workers; they must then stop.

    ``pids_on_host()`` lists the kernel processes on the remote host.
    """
    notebook = subprocess.Popen(
        [sys.executable, "-c", NOTEBOOK, kernel_name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert notebook.stdout.readline().strip() == "2"
        assert pids_on_host(), "the workers run on the host"
    finally:
        notebook.kill()
        notebook.wait(30)
    # The reaper's bound: provisioner kills (KILL_TIMEOUT) plus the shutdown
    # requests' grace; gateway_provisioners' kill() alone waits up to 5 s
    # for SIGTERM to work before it sends SIGKILL.
    bound = nbpool.kernels._reaper.KILL_TIMEOUT + nbpool.kernels._reaper.REMOTE_GRACE + 5
    wait_for(
        lambda: not pids_on_host(),
        timeout=bound,
        what="the remote kernels to stop after the SIGKILL",
    )


def test_remote_workers_are_shut_down_when_the_notebook_process_is_killed(remote):
    """The reaper asks kernels it has no process of to shut down when the pool's process dies."""
    kill_a_notebook_process_holding(remote.kernel, remote.pids)


def test_provisioner_calls_share_one_long_lived_event_loop(remote):
    """All provisioner calls run on one event loop that keeps running between calls.

    Workers started together, one started later on whichever I/O thread, and
    their shutdowns: provisioners are written for Jupyter Server's single loop
    and may keep loop callbacks alive between calls (gateway_provisioners does).
    """
    NetnsProvisioner.loops.clear()
    with nbpool.Pool(size=2, max_size=3, kernel_name=remote.kernel) as pool:
        for session in ("a", "b", "c"):  # "c" starts a third worker, later
            pool.execute("1", session=session)
        (loop,) = set(NetnsProvisioner.loops)
        assert loop.is_running(), "the loop runs between provisioner calls"
    assert len(NetnsProvisioner.loops) == 6 and set(NetnsProvisioner.loops) == {loop}


def test_plaintext_remote_kernel_is_refused(remote):
    """A remote kernel without Curve keys is refused before any code is sent to it."""
    with nbpool.Pool(size=0, max_size=1, kernel_name=remote.plain_kernel) as pool:
        with hosts.Capture(remote.host) as capture:
            with pytest.raises(nbpool.WorkerStartFailed, match="plain text"):
                pool.execute(MARKER_CODE, session="far", lease_timeout=30)
        assert b"EAVESDROP" not in capture.data
        assert pool.status()["counters"]["start_failures"] >= 1
    wait_for(lambda: not remote.pids(), what="the refused kernel stopped")


def test_plaintext_is_allowed_with_allow_insecure_transport_and_warns_once(remote, monkeypatch):
    """allow_insecure_transport=True lets plain text through, with one warning per address.

    The capture shows what that means: the code and its output readable on the link.
    """
    monkeypatch.setattr(nbpool.launcher, "_warned_insecure", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with nbpool.Pool(
            size=2, kernel_name=remote.plain_kernel, allow_insecure_transport=True
        ) as pool:
            with hosts.Capture(remote.host) as capture:
                res = pool.execute(MARKER_CODE, session="far")
            assert res.stdout == MARKER.decode() + "\n"
            assert [w["encrypted"] for w in pool.status()["workers"]] == [False, False]
    insecure = [w for w in caught if "plain text" in str(w.message)]
    assert len(insecure) == 1, [str(w.message) for w in caught]
    assert remote.address in str(insecure[0].message)
    assert MARKER in capture.data, "the eavesdropper reads plain-text output"


def test_remote_kernel_killed_mid_execution_is_detected_by_heartbeat(remote):
    """With no local process to poll, a remote kernel's death is found by heartbeat.

    The holder gets WorkerDied within the heartbeat bound (heartbeat_timeout
    plus poll slices), a replacement starts on the same host, and the session
    is told its state was reset.
    """
    timeout = 2.0
    with nbpool.Pool(
        size=1, kernel_name=remote.kernel, heartbeat_interval=0.5, heartbeat_timeout=timeout
    ) as pool:
        pool.execute("x = 1", session="far")
        (pid,) = remote.pids()
        killed_at: list[float] = []

        def kill_once(out):
            if not killed_at:
                os.kill(pid, signal.SIGKILL)
                killed_at.append(time.monotonic())

        with pool.lease(session="far") as lease:
            with pytest.raises(nbpool.WorkerDied, match="stopped answering heartbeats"):
                lease.execute("print('running'); import time; time.sleep(60)", on_output=kill_once)
            elapsed = time.monotonic() - killed_at[0]
        assert elapsed <= timeout + 0.5, f"WorkerDied {elapsed:.2f} s after the kill"
        res = pool.execute("print(globals().get('x'))", session="far")
        assert res.stdout == "None\n" and "state was lost" in res.session_reset
        assert pool.status()["counters"]["deaths"] == 1


def test_provisioner_that_fails_to_start_is_retried_and_reported(
    remote, netns_provisioner, jupyter_path
):
    """A provisioner whose kernel cannot start: WorkerStartFailed with the reason, backoff, pool up."""
    from tests.netns.provisioner import write_kernelspec

    broken = write_kernelspec(
        jupyter_path / "kernels", "netns-missing", "nbpool-no-such-namespace", remote.address
    )
    with nbpool.Pool(size=0, max_size=2, kernel_name=broken) as pool:
        with pytest.raises(nbpool.WorkerStartFailed, match="could not be launched") as info:
            pool.execute("1", session="x", lease_timeout=30)
        assert "nbpool-no-such-namespace" in str(info.value)
        wait_for(
            lambda: pool.status()["counters"]["start_failures"] >= 2,
            timeout=15,
            what="a retry with backoff",
        )
        assert pool.execute("1 + 1", session="local", kernel="python3").result == "2"


def test_attach_a_kernel_running_on_another_host(remote, tmp_path):
    """A kernel someone started on the other host is attached by its connection file (Curve keys in it)."""
    with started_kernel(
        remote.kernel, tmp_path / "kernel-far.json", transport_encryption="auto"
    ) as km:
        with nbpool.Pool(size=0) as pool:
            with hosts.Capture(remote.host) as capture:
                pool.attach(km.connection_file, session="far")
                res = pool.execute(in_namespace_code(remote), session="far")
                marker = pool.execute(MARKER_CODE, session="far")
            assert res.result == "True" and marker.stdout == MARKER.decode() + "\n"
            (row,) = pool.status()["workers"]
            assert row["attached"] is True and row["encrypted"] is True
            assert MARKER not in capture.data
        assert km.is_alive(), "nbpool never stops a kernel it attached"


def test_attaching_a_plaintext_remote_kernel_needs_allow_insecure(remote, tmp_path, monkeypatch):
    """A plain-text kernel on another host is refused by attach unless explicitly allowed."""
    monkeypatch.setattr(nbpool.launcher, "_warned_insecure", set())
    with started_kernel(remote.plain_kernel, tmp_path / "kernel-plain.json") as km:
        with nbpool.Pool(size=0) as pool:
            with pytest.raises(nbpool.AttachFailed, match="kernel-plain.json: .*plain text"):
                pool.attach(km.connection_file, session="far")
        with nbpool.Pool(size=0, allow_insecure_transport=True) as pool:
            with pytest.warns(UserWarning, match="plain text"):
                pool.attach(km.connection_file, session="far")
            assert pool.execute("6 * 7", session="far").result == "42"
