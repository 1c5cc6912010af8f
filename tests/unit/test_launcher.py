"""The launcher's fork-or-spawn choice per kernelspec (no kernel is started).

Starting forked and spawned kernels is tests/integration/test_forkserver.py's.
"""

from __future__ import annotations

import json
import sys

import pytest
from jupyter_client.manager import AsyncKernelManager

from nbpool.fork.provisioner import ForkingProvisioner
from nbpool.launcher import _ForkOrSpawn

ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


@pytest.fixture
def kernelspecs(tmp_path, monkeypatch):
    """Kernelspecs naming no provisioner, jupyter_client's local one, and a batch one."""
    for name, provisioner in (
        ("plain", None),
        ("local", "local-provisioner"),
        ("batch", "nbpool-slurm"),
    ):
        spec = {"argv": ARGV, "display_name": name, "language": "python"}
        if provisioner:
            spec["metadata"] = {"kernel_provisioner": {"provisioner_name": provisioner}}
        (tmp_path / "kernels" / name).mkdir(parents=True)
        (tmp_path / "kernels" / name / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))


@pytest.mark.parametrize(("name", "forked"), [("plain", True), ("local", True), ("batch", False)])
def test_only_kernelspecs_without_a_provisioner_of_their_own_get_the_fork_server(
    kernelspecs, name, forked
):
    """A kernelspec naming a remote or batch provisioner keeps it; the others fork."""
    server = object()  # provision only installs: nothing asks the server anything
    km = AsyncKernelManager(kernel_name=name)
    _ForkOrSpawn(server, "x = 1").provision(km)
    if forked:
        assert isinstance(km.provisioner, ForkingProvisioner)
        assert (km.provisioner.fork_server, km.provisioner.preload) == (server, "x = 1")
        assert km.provisioner.origin is None, "no verdict before its launch"
    else:
        assert km.provisioner is None, "jupyter_client makes the kernelspec's at start"
