"""A real one-node Slurm cluster for the tests and the benchmark: munged, slurmctld, slurmd.

Everything lives in one temporary directory (munge key, slurm.conf, state,
logs, the kernels' shared directory); the daemons run in the foreground as
our children, so they are stopped by pid. The node is named after this host
and reached at 127.0.0.1; slurmctld and slurmd listen on ports chosen free
at start. Client commands find the cluster through ``SLURM_CONF``
(:meth:`SlurmCluster.env`).

Needs root (slurmd runs jobs as their user) and Debian's ``slurm-wlm`` and
``munge`` (the test command ``.ci/test`` installs them).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MUNGED = "/usr/sbin/munged"
SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"

#: Seconds the daemons have to bring the node up.
START_TIMEOUT = 30.0

CONF = """\
ClusterName=nbpooltest
SlurmctldHost={host}({ctld_addr})
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
KillWait=2
MinJobAge=300
InactiveLimit=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=60 State=UP OverSubscribe=FORCE:32
"""
#: A second node, ``far``, whose slurmd runs in a network namespace (another "host").
FAR_NODE = """NodeName=far NodeAddr={address} CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=far Nodes=far MaxTime=60 State=UP OverSubscribe=FORCE:32
"""


ENTRY_POINT_GROUP = "jupyter_client.kernel_provisioners"


def entry_point_dir(root: Path) -> Path | None:
    """Make ``nbpool-slurm`` discoverable from a source checkout; the directory to put on sys.path.

    An installed nbpool (``pip install .``, as .ci/test does) registers the
    entry point itself: then nothing is written and None is returned.
    Otherwise a small dist-info directory under ``root`` declares the same
    entry point; put ``root`` on ``sys.path`` and ``PYTHONPATH`` (the reaper
    restores provisioners in a child process).
    """
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if "nbpool-slurm" in names:
        return None
    dist = root / "nbpool_slurm_entry_point-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nbpool-slurm-entry-point\nVersion: 0\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nnbpool-slurm = nbpool.slurm:SlurmProvisioner\n"
    )
    importlib.invalidate_caches()
    return root


def source_root() -> str:
    """The checkout holding this nbpool (children import it from there)."""
    return str(Path(__file__).resolve().parents[2])


class SlurmUnavailable(RuntimeError):
    """Slurm or munge is missing here, or the daemons did not come up."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """munged + slurmctld + slurmd for one node, in a private directory.

    With ``far`` (a :class:`tests.netns.hosts.Host`), a second node ``far``
    (partition ``far``) runs its slurmd in that network namespace: its jobs
    run on another "host", reached over the veth link. slurmctld is then
    addressed at our end of that link, which both nodes reach.
    """

    def __init__(self, far=None) -> None:
        self.far = far
        missing = [p for p in (MUNGED, SLURMCTLD, SLURMD) if not os.access(p, os.X_OK)]
        if missing or not shutil.which("sbatch"):
            raise SlurmUnavailable(
                f"the Slurm tests need Debian's slurm-wlm and munge (missing: "
                f"{', '.join(missing) or 'sbatch'}); apt-get install slurm-wlm munge "
                "(the test command .ci/test installs them as root)"
            )
        if os.geteuid() != 0:
            raise SlurmUnavailable("the Slurm tests need root (slurmd runs jobs as their user)")
        self.host = socket.gethostname().split(".")[0]
        # munged wants every directory above its socket searchable by all.
        self.root = Path(tempfile.mkdtemp(prefix="nbpool-slurm-"))
        self.root.chmod(0o711)
        self.shared = self.root / "shared"  # the kernels' "shared filesystem"
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self) -> dict[str, str]:
        """Variables that point Slurm's client commands at this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> "SlurmCluster":
        """Start the daemons and wait until the node is idle; raises SlurmUnavailable."""
        root = self.root
        for name, mode in (
            ("munge", 0o755),
            ("keys", 0o700),
            ("state", 0o700),
            ("spool", 0o700),
            ("log", 0o700),
            ("shared", 0o700),
        ):
            (root / name).mkdir(mode=mode)
            (root / name).chmod(mode)
        nodes = [self.host] + ["far"] * (self.far is not None)
        for node in nodes:
            (root / "spool" / node).mkdir(mode=0o700)
        key = root / "keys" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        cpus = os.cpu_count() or 1
        conf = CONF.format(
            host=self.host,
            root=root,
            ctld_port=_free_port(),
            d_port=_free_port(),
            cpus=cpus,
            ctld_addr="127.0.0.1" if self.far is None else self.far.gateway,
        )
        if self.far is not None:
            conf += FAR_NODE.format(address=self.far.address, cpus=cpus)
        self.conf.write_text(conf)
        env = {**os.environ, **self.env()}
        log = root / "log"
        self._spawn(
            "munged",
            [
                MUNGED,
                "--foreground",
                f"--socket={root}/munge/munge.socket",
                f"--key-file={key}",
                f"--pid-file={root}/munge/munged.pid",
                f"--seed-file={root}/keys/munged.seed",
                f"--log-file={log}/munged.log",
            ],
            env,
        )
        self._wait(lambda: (root / "munge" / "munge.socket").exists(), "munged's socket")
        self._spawn("slurmctld", [SLURMCTLD, "-D", "-i"], env)
        self._spawn("slurmd", [SLURMD, "-D", "-N", self.host], env)
        if self.far is not None:
            # nsenter, not `ip netns exec`: that mounts a fresh /sys without the
            # cgroup filesystem, and slurmd will not start without it.
            netns = f"--net=/run/netns/{self.far.name}"
            self._spawn("slurmd-far", ["nsenter", netns, SLURMD, "-D", "-N", "far"], env)
        self._wait(self.node_idle, "sinfo to show the nodes idle")
        return self

    def _spawn(self, name: str, argv: list[str], env: dict) -> None:
        with open(self.root / "log" / f"{name}.out", "wb") as out:
            self.procs[name] = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait(self, condition, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not condition():
            dead = [name for name, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"no {what} in {START_TIMEOUT:g} s"
                raise SlurmUnavailable(
                    f"the test Slurm cluster did not start: {why}; {self.logs()}"
                )
            time.sleep(0.05)

    def run(self, *argv: str, check: bool = True) -> str:
        """A Slurm client command against this cluster; its stdout."""
        done = subprocess.run(
            argv, env={**os.environ, **self.env()}, capture_output=True, text=True, timeout=30
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def node_idle(self) -> bool:
        """Every node is idle (none allocated, completing, down or not yet registered)."""
        out = self.run("sinfo", "--noheader", "--Node", "--format=%T", check=False).split()
        return len(out) == 1 + (self.far is not None) and set(out) == {"idle"}

    def jobs(self) -> dict[str, str]:
        """Jobs in the queue (pending, running, completing): id -> state."""
        out = self.run("squeue", "--noheader", "--format=%i %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def steps(self, job_id: str) -> list[str]:
        """The ids of the running steps of ``job_id`` ("42.0", ...)."""
        out = self.run("squeue", "--noheader", "--steps", f"--jobs={job_id}", "--format=%i")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def logs(self) -> str:
        parts = []
        for name in ("munged.out", "slurmctld.out", "slurmd.out", "slurmd-far.out"):
            path = self.root / "log" / name
            if not path.exists():
                continue
            text = path.read_text(errors="replace")
            lines = [line for line in text.splitlines() if "error" in line.lower()]
            parts.append(f"{name}: {lines[-1] if lines else 'no errors'}")
        return "; ".join(parts)

    def stop(self) -> None:
        """Cancel every job, wait for the node to drain, stop the daemons by pid, remove files."""
        if self.procs.get("slurmctld") is not None and self.procs["slurmctld"].poll() is None:
            try:
                if self.jobs():
                    self.run("scancel", "--user=root", check=False)
                    deadline = time.monotonic() + 20
                    while (self.jobs() or not self.node_idle()) and time.monotonic() < deadline:
                        time.sleep(0.1)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        for name in ("slurmd-far", "slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
