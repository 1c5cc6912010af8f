"""The Slurm kernelspec installer and the provisioner's pure helpers (no cluster needed)."""

from __future__ import annotations

import asyncio
import json
import sys
import threading

import pytest

from nbpool.__main__ import main
from nbpool.kernels.processes import LaunchCancelled, run_provisioner
from nbpool.slurm.provisioner import _never_starts, _submission_env


def test_slurm_spec_install_writes_a_provisioned_kernelspec(tmp_path, capsys):
    """The kernelspec names nbpool-slurm with the settings given; Curve on; message interrupts."""
    argv = [
        "slurm-spec",
        "install",
        "--name",
        "slurm_py",
        "--prefix",
        str(tmp_path),
        "--partition",
        "gpu",
        "--time",
        "90",
        "--cpus",
        "4",
        "--mem",
        "8000",
        "--account",
        "proj1",
        "--sbatch-arg=--qos=debug",
        "--python",
        sys.executable,
    ]
    assert main(argv) == 0
    path = tmp_path / "share" / "jupyter" / "kernels" / "slurm_py" / "kernel.json"
    spec = json.loads(path.read_text())
    assert spec["argv"] == [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert spec["interrupt_mode"] == "message"
    assert spec["metadata"]["supported_encryption"] == ["curve"]
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "nbpool-slurm",
        "config": {
            "partition": "gpu",
            "time": "90",
            "cpus": 4,
            "mem": 8000,
            "account": "proj1",
            "extra_args": ["--qos=debug"],
        },
    }
    assert "installed kernelspec slurm_py" in capsys.readouterr().out


def test_slurm_spec_install_says_when_it_cannot_check_curve(tmp_path, capsys):
    """A Python that cannot run here: no Curve declared, and a note saying how to declare it."""
    argv = [
        "slurm-spec",
        "install",
        "--name",
        "far",
        "--prefix",
        str(tmp_path),
        "--python",
        "/nonexistent/bin/python",
    ]
    assert main(argv) == 0
    spec = json.loads((tmp_path / "share/jupyter/kernels/far/kernel.json").read_text())
    assert "supported_encryption" not in spec["metadata"]
    assert "pass --curve" in capsys.readouterr().err


def test_slurm_spec_install_rejects_two_places(tmp_path):
    with pytest.raises(SystemExit):
        main(["slurm-spec", "install", "--name", "x", "--user", "--prefix", str(tmp_path)])


@pytest.mark.parametrize(
    "reason, never",
    [
        ("PartitionConfig", True),
        ("PartitionTimeLimit", True),
        ("QOSMaxCpuPerJobLimit", True),
        ("Resources", False),
        ("Priority", False),
        ("QOSMaxJobsPerUserLimit", False),
        ("", False),
    ],
)
def test_pending_reasons_that_never_clear(reason, never):
    """Per-job limits can never be met; queue position and per-user limits clear by waiting."""
    assert _never_starts(reason) is never


def test_submission_env_drops_the_notebooks_own_job_variables():
    env = {
        "PATH": "/bin",
        "SLURM_JOB_ID": "7",
        "SLURM_CPUS_PER_TASK": "2",
        "SLURM_CONF": "/etc/slurm.conf",
        "JPY_PARENT_PID": "1",
    }
    assert _submission_env(env) == {"PATH": "/bin", "SLURM_CONF": "/etc/slurm.conf"}


def test_bounded_provisioner_call_is_cancelled_and_cleans_up_first():
    """Past its timeout (or at its stop event) the call is cancelled; its cleanup ran first."""
    cleaned, started = [], threading.Event()

    async def queued():
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself awaits (an scancel)
            cleaned.append(True)

    with pytest.raises(LaunchCancelled):
        run_provisioner(queued(), timeout=0.1)
    assert cleaned == [True]
    started.clear()
    stop = threading.Event()
    threading.Thread(target=lambda: started.wait(10) and stop.set()).start()
    with pytest.raises(LaunchCancelled):
        run_provisioner(queued(), stop=stop)
    assert cleaned == [True, True]
    assert run_provisioner(asyncio.sleep(0, "done"), timeout=5) == "done"
