"""``python -m nbpool slurm-spec install``: a kernelspec whose kernels run as Slurm jobs.

Writes an ipykernel kernelspec whose ``metadata.kernel_provisioner`` names
``nbpool-slurm`` (:mod:`nbpool.slurm.provisioner`) with the job's settings, through
jupyter_client's :class:`~jupyter_client.kernelspec.KernelSpecManager`, as
gateway_provisioners' ``jupyter-ssh-spec install`` does for SSH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from jupyter_client.kernelspec import KernelSpecManager

#: Run with the kernel's Python: does its ipykernel take CurveZMQ keys (7.3+)?
CURVE_PROBE = "import ipykernel.kernelapp as k; print(hasattr(k.IPKernelApp, 'curve_secretkey'))"


def kernelspec(
    python: str,
    *,
    display_name: str,
    curve: bool,
    **config,
) -> dict:
    """The kernel.json of a Slurm kernelspec; ``config`` holds the provisioner's settings.

    Settings that are empty or zero are left out (Slurm's defaults apply).
    """
    metadata: dict = {
        "kernel_provisioner": {
            "provisioner_name": "nbpool-slurm",
            "config": {key: value for key, value in config.items() if value},
        },
    }
    if curve:
        metadata["supported_encryption"] = ["curve"]
    return {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        # An interrupt is a control message, not a signal through slurmctld.
        "interrupt_mode": "message",
        "metadata": metadata,
    }


def supports_curve(python: str) -> bool | None:
    """Whether ``python``'s ipykernel supports CurveZMQ; None if it cannot be run here."""
    try:
        out = subprocess.run(
            [python, "-c", CURVE_PROBE], capture_output=True, text=True, timeout=120, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip() == "True"


def install(args) -> int:
    """Install the kernelspec the parsed ``slurm-spec install`` arguments describe."""
    python = os.path.abspath(args.python) if os.sep in args.python else args.python
    curve = True if args.curve else supports_curve(python)
    if curve is None:
        print(
            f"note: could not run {python} here to check its ipykernel, so the kernelspec "
            "declares no CurveZMQ support; pass --curve if its ipykernel is 7.3 or newer",
            file=sys.stderr,
        )
    elif not curve:
        print(
            f"note: the ipykernel of {python} takes no CurveZMQ keys (7.3 or newer does); "
            "nbpool refuses its kernels off loopback unless allow_insecure_transport=True",
            file=sys.stderr,
        )
    where = args.partition or "default partition"
    spec = kernelspec(
        python,
        display_name=args.display_name or f"Python on Slurm ({where})",
        curve=bool(curve),
        partition=args.partition,
        time=str(args.time) if args.time else "",
        cpus=args.cpus,
        mem=args.mem,
        account=args.account,
        jobid=args.jobid,
        ip=args.ip,
        shared_dir=os.path.abspath(os.path.expanduser(args.shared_dir)) if args.shared_dir else "",
        extra_args=args.sbatch_arg,
    )
    prefix = sys.prefix if args.sys_prefix else args.prefix
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "kernel.json"), "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=1)
        path = KernelSpecManager().install_kernel_spec(
            tmp, kernel_name=args.name, user=not prefix, prefix=prefix
        )
    print(f"installed kernelspec {args.name} in {path}")
    return 0


def add_parser(sub) -> None:
    """The ``slurm-spec`` subcommand of ``python -m nbpool``."""
    spec = sub.add_parser("slurm-spec", help="kernelspecs whose kernels run as Slurm jobs")
    actions = spec.add_subparsers(dest="action", required=True)
    p = actions.add_parser(
        "install",
        help="write a kernelspec that runs its kernels as Slurm jobs",
        description="Write a kernelspec whose kernels run as Slurm jobs (provisioner "
        "nbpool-slurm). "
        "Use it as Pool(kernel_name=NAME, start_timeout=600): start_timeout covers the queue wait.",
    )
    p.add_argument("--name", required=True, help="kernelspec name, e.g. slurm_py")
    p.add_argument("--display-name", help="name shown in Jupyter")
    p.add_argument("--partition", default="", help="Slurm partition (default: the cluster's)")
    p.add_argument("--time", type=int, default=0, metavar="MIN", help="time limit in minutes")
    p.add_argument("--cpus", type=int, default=0, metavar="N", help="CPUs per kernel")
    p.add_argument("--mem", type=int, default=0, metavar="MB", help="memory per kernel, in MB")
    p.add_argument("--account", default="", help="account to charge")
    p.add_argument(
        "--python",
        default=sys.executable,
        help="the Python with ipykernel on the compute nodes (default: this one)",
    )
    p.add_argument(
        "--jobid",
        default="",
        help="pack kernels into this existing allocation (srun --overlap) instead of one job each",
    )
    p.add_argument(
        "--ip",
        default="",
        help="address kernels bind on their node (default: the node's NodeAddr; "
        "0.0.0.0: every interface)",
    )
    p.add_argument(
        "--shared-dir",
        default="",
        help="directory the nodes see under the same path, for connection files "
        "(default: ~/.local/share/jupyter/nbpool-slurm)",
    )
    p.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more sbatch argument, e.g. --sbatch-arg=--qos=debug (repeatable)",
    )
    p.add_argument(
        "--curve",
        action="store_true",
        help="declare CurveZMQ support without checking the kernel's ipykernel",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for this user (the default)")
    where.add_argument("--sys-prefix", action="store_true", help="in this Python's prefix")
    where.add_argument("--prefix", metavar="DIR", help="under DIR/share/jupyter/kernels")
    p.set_defaults(run=install)
