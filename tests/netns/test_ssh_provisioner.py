"""gateway_provisioners' DistributedProvisioner over SSH to a namespace host running Debian's sshd.

The kernelspec is the one ``jupyter-ssh-spec install`` writes, with two
deployment settings a real cluster also needs: ``argv[0]`` is the host's
Python that has ipykernel (here this venv's), and the provisioner's response
address is the pool side of the link (``GP_RESPONSE_IP``). The tests run as
root, which gateway_provisioners refuses by default
(``GP_UNAUTHORIZED_USERS``), so that list is emptied for them.

gateway_provisioners 0.5 with ipykernel 7.4 leaves the remote kernel process
running after a polite shutdown: jupyter_client asks the provisioner to stop
the kernel's listener, DistributedProvisioner.poll() then finds no listener
and reports the kernel gone, and nothing escalates to a kill. nbpool stops
every kernel it has no process of through the provisioner's kill instead;
the tests check that nothing is left on the host.
"""

from __future__ import annotations

import os
import time

import pytest

import nbpool
from tests.helpers import wait_for
from tests.netns import hosts
from tests.netns.test_provisioned import (
    MARKER,
    MARKER_CODE,
    in_namespace_code,
    kill_a_notebook_process_holding,
)


def test_distributed_provisioner_over_ssh_runs_encrypted_workers_there(ssh_host):
    """DistributedProvisioner workers start over SSH on the host, together and later.

    Each runs in the host's namespace, Curve-encrypted (the launcher returns
    the keys), and nothing readable crosses the link.
    """
    host = ssh_host.host
    with nbpool.Pool(size=2, max_size=3, kernel_name=ssh_host.kernel) as pool:
        with hosts.Capture(host) as capture:
            for session in ("a", "b", "c"):  # "c" starts a third worker, later
                assert pool.execute(in_namespace_code(host), session=session).result == "True"
            res = pool.execute(MARKER_CODE, session="c")
        assert res.stdout == MARKER.decode() + "\n"
        workers = pool.status()["workers"]
        assert len(workers) == 3 and all(w["encrypted"] and w["pid"] is None for w in workers)
        assert MARKER not in capture.data
        assert pool.status()["counters"]["start_failures"] == 0
        assert ssh_host.kernel_pids(), "the kernels run on the host"
    wait_for(lambda: not ssh_host.kernel_pids(), what="the remote kernels stopped at shutdown")


def test_ssh_worker_killed_on_the_host_is_detected_and_replaced(ssh_host):
    """A remote kernel that dies is found by heartbeat; the session continues on a new one."""
    with nbpool.Pool(
        size=1, kernel_name=ssh_host.kernel, heartbeat_interval=0.5, heartbeat_timeout=2.0
    ) as pool:
        pid = int(pool.execute("import os; os.getpid()", session="far").result)
        started = time.monotonic()
        with pool.lease(session="far") as lease:
            os.kill(pid, 9)
            with pytest.raises(nbpool.WorkerDied, match="heartbeats"):
                lease.execute("import time; time.sleep(60)")
        assert time.monotonic() - started <= 2.5
        res = pool.execute("print('again')", session="far")
        assert res.stdout == "again\n" and "state was lost" in res.session_reset
    wait_for(lambda: not ssh_host.kernel_pids(), what="the remote kernels stopped at shutdown")


def test_ssh_workers_are_shut_down_when_the_notebook_process_is_killed(ssh_host):
    """Remote kernels get a shutdown request from the reaper when the pool's process dies."""
    kill_a_notebook_process_holding(ssh_host.kernel, ssh_host.kernel_pids)
