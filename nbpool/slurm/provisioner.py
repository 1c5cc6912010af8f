"""Worker kernels as Slurm jobs: the ``nbpool-slurm`` kernel provisioner.

A kernelspec whose ``metadata.kernel_provisioner`` names ``nbpool-slurm``
(``python -m nbpool slurm-spec install`` writes one) runs its kernel as a
Slurm job. It is a plain jupyter_client provisioner: nbpool, Jupyter Server
or a bare KernelManager can start it.

How a kernel gets onto a node, and its address back
---------------------------------------------------
1. :meth:`~SlurmProvisioner.pre_launch` makes a private directory (0700) for
   the kernel under ``shared_dir``, a directory the compute nodes see under
   the same path (the home directory, on most clusters), and writes there the
   kernel's connection file (0600: HMAC key, CurveZMQ keys, ports 0, address
   still ``@node@``) and a job script.
2. :meth:`~SlurmProvisioner.launch_kernel` submits the script with
   ``sbatch --parsable`` (one job per kernel) or, with ``jobid`` set, runs it
   as a step of that existing allocation with ``srun --jobid=ID --overlap``
   (*packing*: many kernels, one queue wait, one job against the site's
   per-user job limits).
3. On the node the script puts the address to bind into the connection file
   (``ip``, by default the address Slurm itself reaches the node at: its
   ``NodeAddr``; ``0.0.0.0`` only when ``ip`` says so), notes the node, job and
   step in ``node``, and ``exec``\\ s the kernel, which binds ports of its
   own choosing and writes them into the connection file.
4. ``launch_kernel`` returns the completed connection info.

The keys travel in a file, not in the job's script or environment: Slurm
keeps those in slurmctld's state (and at many sites in the accounting
database), where administrators read them. Nor does the node call back: the
notebook host must reach the nodes anyway (it connects to the kernel's
ports), while the reverse is often blocked.

Job state
---------
One :class:`~nbpool.slurm.jobs.JobWatch` per event loop asks ``squeue`` about all watched jobs
in one call every ``poll_interval`` seconds (``sacct`` about jobs squeue
has forgotten), so slurmctld gets one query per interval per notebook, not
one per kernel. Two plain attributes report what it learns; any thread may
read them without blocking:

``pending_reason``
    While the job waits in the queue: ``"Slurm job 42 is pending
    (Resources)"``; else None. nbpool's ``status()`` shows it for the worker.
``end_reason``
    Once the job (or packed step) ended: ``"ended with its Slurm job 42:
    CANCELLED"``, or for a packed worker ``"... Slurm step 42.3: ..."``
    (seen by its ``srun``, which stays on this host); else None. nbpool's worker ``poll()`` reports it, so the
    lease holder's :class:`~nbpool.errors.WorkerDied` names job and state.

A job pending for a reason that never clears (it asks more than the
partition allows: ``PartitionConfig``, ``PartitionTimeLimit``, ...) is
cancelled and the start fails with that reason. ``kill`` and ``terminate``
are ``scancel`` (waiting until the job left the queue), and
``get_provisioner_info`` / ``load_provisioner_info`` carry the job id, so
another process (nbpool's reaper) can cancel it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import time
from typing import Any

import zmq
from jupyter_client.connect import port_names
from jupyter_client.provisioning import KernelProvisionerBase
from jupyter_core.paths import jupyter_data_dir
from traitlets import Float, Integer, List, Unicode, default

from .jobs import FINAL_STATES, JobState, JobWatch, SlurmError, slurm

#: Pending reasons that never clear by waiting: the request exceeds a fixed limit.
NEVER_STARTS = frozenset(
    {
        "AccountNotAllowed",
        "BadConstraints",
        "DependencyNeverSatisfied",
        "InvalidAccount",
        "InvalidQOS",
        "PartitionConfig",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "QOSNotAllowed",
    }
)
#: Seconds ``kill`` waits for a cancelled job to leave the queue.
CANCEL_WAIT = 15.0
#: The connection file's address until the job script fills it in.
PLACEHOLDER = "@node@"

SCRIPT = """\
#!/bin/sh
# Written by nbpool's Slurm provisioner: run one Jupyter kernel on this node.
dir={dir}
ip={ip}
node_ip=$ip
if [ -z "$ip" ] || [ "$ip" = 0.0.0.0 ]; then
  addr=$(scontrol show node "$SLURMD_NODENAME" -o 2>/dev/null | sed -n 's/.* NodeAddr=\\([^ ]*\\).*/\\1/p')
  node_ip=$(getent ahostsv4 "${{addr:-$SLURMD_NODENAME}}" | {{ read -r a _; echo "$a"; }})
fi
if [ -z "$node_ip" ]; then
  echo "nbpool-slurm: no IPv4 address for node $SLURMD_NODENAME; set the provisioner's ip" >&2
  exit 1
fi
sed -i "s/{placeholder}/${{ip:-$node_ip}}/" "$dir/kernel.json"
echo "$SLURMD_NODENAME $node_ip $SLURM_JOB_ID ${{SLURM_STEP_ID:-batch}}" > "$dir/node.tmp"
mv "$dir/node.tmp" "$dir/node"
exec {command}
"""


class SlurmProvisioner(KernelProvisionerBase):
    """Runs a kernelspec's kernel as a Slurm batch job, or as a step of an allocation.

    Configured in the kernelspec's ``metadata.kernel_provisioner.config``.
    """

    partition = Unicode("", config=True, help="Slurm partition (sbatch --partition).")
    time = Unicode("", config=True, help="Time limit in any Slurm format; '60' is 60 minutes.")
    cpus = Integer(0, config=True, help="CPUs per kernel (--cpus-per-task); 0: Slurm's default.")
    mem = Integer(0, config=True, help="Memory in MB (--mem); 0: Slurm's default.")
    account = Unicode("", config=True, help="Account charged (sbatch --account).")
    extra_args = List(Unicode(), config=True, help="More sbatch (or srun, when packing) arguments.")
    jobid = Unicode(
        "",
        config=True,
        help="Run kernels as steps of this existing allocation (srun --jobid --overlap).",
    )
    ip = Unicode(
        "",
        config=True,
        help="Address the kernel binds on its node; default: the node's NodeAddr. "
        "0.0.0.0 binds every interface.",
    )
    shared_dir = Unicode(
        config=True,
        help="A directory the compute nodes see under the same path, for the connection files.",
    )
    poll_interval = Float(1.0, config=True, help="Seconds between squeue calls.")

    @default("shared_dir")
    def _default_shared_dir(self) -> str:
        return os.path.join(jupyter_data_dir(), "nbpool-slurm")

    job_id: str | None = None  # the batch job, or the allocation when packing
    step: str | None = None  # the step id when packing, once the script ran
    node: str | None = None  # where the kernel runs, once it runs
    pending_reason: str | None = None
    _final: JobState | None = None  # the job's final state, once seen
    _watching = False  # this provisioner counts as a user of the JobWatch
    _dir: str | None = None
    _srun: asyncio.subprocess.Process | None = None
    _srun_end: str | None = None
    _watch: JobWatch | None = None

    # -- state -------------------------------------------------------------

    @property
    def has_process(self) -> bool:
        return self.job_id is not None

    @property
    def end_reason(self) -> str | None:
        """Why the kernel's job is known to have ended (a phrase after "worker w1"), or None."""
        if self._srun_end is not None:
            return self._srun_end
        state = self._final
        if state is None and self._watch is not None and self.job_id is not None:
            state = self._watch.states.get(self.job_id)
            if state is None or state.state not in FINAL_STATES | {"GONE"}:
                return None
            self._final = state
        if state is None:
            return None
        what = "allocation" if self.jobid else "job"
        return f"ended with its Slurm {what} {self.job_id}: {_describe(state)}"

    async def poll(self) -> int | None:
        return None if self.has_process and self.end_reason is None else 0

    async def wait(self) -> int | None:
        while await self.poll() is None:
            await asyncio.sleep(0.1)
        return 0

    # -- launch ------------------------------------------------------------

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km = self.parent
        policy = km._transport_encryption_policy(
            kwargs.pop("transport_encryption", km.transport_encryption)
        )
        if policy == "required" or (policy == "auto" and km._kernel_supports_curve_encryption()):
            if km.curve_publickey is None:
                km.curve_publickey, km.curve_secretkey = zmq.curve_keypair()
        km.transport = "tcp"
        for name in port_names:
            setattr(km, name, 0)  # the kernel binds its own ports on its node
        os.makedirs(self.shared_dir, mode=0o700, exist_ok=True)
        self._dir = os.path.join(self.shared_dir, self.kernel_id)
        os.makedirs(self._dir, mode=0o700)
        info: dict[str, Any] = {
            "ip": PLACEHOLDER,
            "transport": "tcp",
            **{name: 0 for name in port_names},
            "key": km.session.key.decode(),
            "signature_scheme": km.session.signature_scheme,
            "kernel_name": km.kernel_name,
        }
        if km.curve_publickey is not None:
            info["curve_publickey"] = km.curve_publickey.decode()
            info["curve_secretkey"] = km.curve_secretkey.decode()
        _write_private(self._path("kernel.json"), json.dumps(info))
        local_file = os.path.realpath(km.connection_file)
        cmd = [
            arg.replace(local_file, self._path("kernel.json"))
            for arg in km.format_kernel_cmd(extra_arguments=kwargs.pop("extra_arguments", []))
        ]
        _write_private(
            self._path("job.sh"),
            SCRIPT.format(
                dir=shlex.quote(self._dir),
                ip=shlex.quote(self.ip),
                placeholder=PLACEHOLDER,
                command=shlex.join(cmd),
            ),
        )
        return await super().pre_launch(cmd=cmd, **kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict:
        env = _submission_env(kwargs.get("env") or os.environ)
        self._watch = JobWatch.for_this_loop()
        try:
            if self.jobid:
                await self._start_step(env, kwargs.get("cwd"))
            else:
                out = await slurm(*self._sbatch_args(), env=env, cwd=kwargs.get("cwd"))
                self.job_id = out.strip().split(";")[0]
            self._watch.add(self.job_id, self.poll_interval)
            self._watching = True
            info = await self._reported()
        except BaseException:  # failed, or cancelled by the caller's timeout: leave nothing
            await self._cancel()
            await self.cleanup()
            raise
        self.pending_reason = None
        km = self.parent
        km.load_connection_info(info)
        self.connection_info = km.get_connection_info()
        return self.connection_info

    def _sbatch_args(self) -> list[str]:
        args = [
            "sbatch",
            "--parsable",
            "--export=ALL",
            "--no-requeue",
            "--nodes=1",
            "--ntasks=1",
            f"--job-name=nbpool-{self.kernel_id[:8]}",
            f"--output={self._path('job.log')}",
        ]
        args += [f"--partition={self.partition}"] * bool(self.partition)
        args += [f"--time={self.time}"] * bool(self.time)
        args += [f"--account={self.account}"] * bool(self.account)
        return args + self._resource_args() + [self._path("job.sh")]

    def _resource_args(self) -> list[str]:
        args = [f"--cpus-per-task={self.cpus}"] * bool(self.cpus)
        return args + [f"--mem={self.mem}M"] * bool(self.mem) + list(self.extra_args)

    async def _start_step(self, env: dict, cwd: str | None) -> None:
        """Packing: the script as one step of allocation ``jobid``; srun stays here."""
        self.job_id = self.jobid
        args = [
            "srun",
            f"--jobid={self.jobid}",
            "--overlap",
            "--nodes=1",
            "--ntasks=1",
            f"--job-name=nbpool-{self.kernel_id[:8]}",
            *self._resource_args(),
            "/bin/sh",
            self._path("job.sh"),
        ]
        with open(self._path("job.log"), "ab") as log:
            self._srun = await asyncio.create_subprocess_exec(
                *args,
                env=env,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a terminal's Ctrl-C is not for it
            )
        asyncio.get_running_loop().create_task(self._watch_srun(self._srun))

    async def _watch_srun(self, srun) -> None:
        code = await srun.wait()
        found = re.findall(r"\*\*\* STEP (\S+) ON \S+ (\w+)", self._log_tail())
        where = f"Slurm allocation {self.job_id}"
        if self.step:
            where = f"Slurm step {self.job_id}.{self.step}"
        self._srun_end = (
            f"ended with its {where}: {found[-1][1]}"
            if found
            else f"ended with its {where}: srun exited with code {code}"
        )

    async def _reported(self) -> dict:
        """Wait until the job runs and the kernel wrote its ports; fail with Slurm's reason."""
        while True:
            info = self._read_ports()
            if info is not None:
                return info
            if self.end_reason is not None:
                tail = _last_line(self._log_tail())
                raise SlurmError(
                    f"the kernel {self.end_reason} before it was ready"
                    + (f"; its output ends with: {tail}" if tail else "")
                )
            state = self._watch.states.get(self.job_id) if self._watch else None
            if state is not None and state.state == "PENDING":
                what = "allocation" if self.jobid else "job"
                why = state.reason or "queued"
                self.pending_reason = f"Slurm {what} {self.job_id} is pending ({why})"
                if _never_starts(state.reason):
                    raise SlurmError(
                        f"Slurm job {self.job_id} can never start: {state.reason} (it asks for "
                        "more than the partition or account allows; see `scontrol show "
                        "partition`); it was cancelled"
                    )
            else:
                self.pending_reason = None
            await asyncio.sleep(0.05)

    def _read_ports(self) -> dict | None:
        try:
            with open(self._path("kernel.json"), encoding="utf-8") as f:
                info = json.load(f)
            with open(self._path("node"), encoding="utf-8") as f:
                node, node_ip, _, step = f.read().split()
        except (OSError, ValueError):  # not there yet, or being rewritten right now
            return None
        if info.get("ip") == PLACEHOLDER or not all(info.get(name) for name in port_names):
            return None
        if step != "batch":
            self.step = step
        if info["ip"] == "0.0.0.0":  # bound everywhere: reach it at the node's address
            info["ip"] = node_ip
        self.node = node
        return info

    # -- stop --------------------------------------------------------------

    def _target(self) -> str | None:
        """What scancel cancels: the job, or our step of the allocation."""
        if not self.jobid:
            return self.job_id
        return f"{self.job_id}.{self.step}" if self.step else None

    async def _cancel(self, signame: str | None = None) -> None:
        target = self._target()
        if target is not None and self.end_reason is None:
            try:
                signal_args = [f"--signal={signame}", "--full"] if signame else []
                await slurm("scancel", *signal_args, target)
            except SlurmError:  # gone already, or slurmctld unreachable: nothing more to do here
                pass
        if self._srun is not None and self._srun.returncode is None:
            if target is None:  # the step has no id yet: ending srun ends the request
                self._srun.terminate()
            try:
                await asyncio.wait_for(self._srun.wait(), CANCEL_WAIT)
            except asyncio.TimeoutError:
                self._srun.kill()
        elif target is not None and not self.jobid and not signame:
            await self._wait_gone()

    async def _wait_gone(self) -> None:
        """Wait (bounded) until the cancelled job is in a final state: no job is left behind."""
        watch = self._watch = self._watch or JobWatch.for_this_loop()
        watch.add(self.job_id, self.poll_interval)
        try:
            deadline = time.monotonic() + CANCEL_WAIT
            while self.end_reason is None and time.monotonic() < deadline:
                try:
                    await watch.refresh()
                except SlurmError:
                    return
                if self.end_reason is None:
                    await asyncio.sleep(0.1)
        finally:
            watch.discard(self.job_id, self.poll_interval)

    async def send_signal(self, signum: int) -> None:
        if signum in (signal.SIGKILL, signal.SIGTERM):
            await self._cancel()
        elif not self.jobid:  # --full: the batch step is the kernel itself (exec)
            await self._cancel(signal.Signals(signum).name[3:])
        elif self._target() is not None:
            await slurm("scancel", f"--signal={signal.Signals(signum).name[3:]}", self._target())

    async def kill(self, restart: bool = False) -> None:
        await self._cancel()

    async def terminate(self, restart: bool = False) -> None:
        await self._cancel()

    async def cleanup(self, restart: bool = False) -> None:
        if self._watching:
            self._watch.discard(self.job_id, self.poll_interval)
            self._watching = False
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(job_id=self.job_id, step=self.step, job_dir=self._dir)
        return info

    async def load_provisioner_info(self, provisioner_info: dict) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.job_id = provisioner_info.get("job_id")
        self.step = provisioner_info.get("step")
        self._dir = provisioner_info.get("job_dir")

    # -- files -------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self._dir, name)

    def _log_tail(self) -> str:
        try:
            with open(self._path("job.log"), "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 2000))
                return f.read().decode(errors="replace")
        except (OSError, TypeError):
            return ""


def _describe(state: JobState) -> str:
    return state.state + (f" ({state.reason})" if state.reason else "")


def _never_starts(reason: str) -> bool:
    return reason in NEVER_STARTS or bool(re.fullmatch(r"(QOS|Assoc)Max\w*PerJob\w*", reason))


def _submission_env(env) -> dict[str, str]:
    """The kernel's environment, as sbatch/srun exports it to the job.

    Without the notebook's own job variables (a notebook that itself runs in
    a Slurm job would hand them on as options) and without JPY_PARENT_PID
    (the kernel's parent on its node is slurmstepd, not us).
    """
    return {
        key: value
        for key, value in env.items()
        if key != "JPY_PARENT_PID" and (not key.startswith("SLURM_") or key == "SLURM_CONF")
    }


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
