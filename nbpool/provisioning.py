"""Where worker kernels come from: kernelspecs, launch settings, private files.

A :class:`Launcher` turns a kernelspec name into a running, ready
:class:`~nbpool.worker.Kernel`. It uses jupyter_client's machinery as it is
meant to be used: :class:`~jupyter_client.KernelManager` with its
provisioner (so any kernelspec naming a kernel provisioner works unchanged),
its connection-file writing, and its CurveZMQ ``transport_encryption``.

What nbpool adds around it:

- a private runtime directory (mode 0700) for the connection files and the
  kernels' own stdout/stderr logs, removed at shutdown;
- loopback-only binding, unique keys per kernel (a new KernelManager for every
  start: a replacement never reuses keys or ports);
- a *reaper* process that kills every worker's process group when the
  process hosting the pool dies without shutting it down (SIGKILL, OOM);
- an immediate retry when a kernel dies because another process took one of
  its ports between port choice and bind (jupyter_client #487).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import zmq
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from .errors import UnknownKernel, WorkerStartFailed

#: How many times a start is repeated at once when the kernel lost a port race.
PORT_RACE_RETRIES = 3


class Reaper:
    """A helper process that kills our worker kernels if this process dies.

    It reads ``+PGID`` / ``-PGID`` lines on its stdin; at EOF (this process
    exited, however it exited) it kills every process group still registered.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "nbpool._reaper"],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in a terminal must not reach it
            text=True,
        )

    def _send(self, line: str) -> None:
        with self._lock:
            if self._proc.stdin and not self._proc.stdin.closed:
                self._proc.stdin.write(line + "\n")
                self._proc.stdin.flush()

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def close(self) -> None:
        with self._lock:
            if self._proc.stdin and not self._proc.stdin.closed:
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def kernel_names() -> list[str]:
    """Names of the installed kernelspecs, sorted."""
    return sorted(KernelSpecManager().find_kernel_specs())


def check_kernel_name(name: str) -> None:
    """Raise :class:`UnknownKernel` listing the installed kernelspecs."""
    if not isinstance(name, str) or not name:
        raise UnknownKernel(f"kernel name must be a non-empty string, got {name!r}")
    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        available = ", ".join(kernel_names()) or "none"
        raise UnknownKernel(
            f"no kernelspec named {name!r}; available: {available} "
            "(see `jupyter kernelspec list`)"
        ) from None


class Launcher:
    """Starts worker kernels; owns their runtime directory and the reaper.

    Parameters
    ----------
    transport : {"tcp", "ipc"}
        ZMQ transport of local kernels.
    transport_encryption : {"auto", "required", "disabled"}
        jupyter_client's CurveZMQ policy; ``auto`` encrypts every kernel whose
        kernelspec declares ``supported_encryption: ["curve"]``.
    ipykernel_args : list of str
        Extra command-line arguments for ipykernel-based kernelspecs (tuning).
    """

    def __init__(
        self,
        *,
        transport: str = "tcp",
        transport_encryption: str = "auto",
        ipykernel_args: list[str] | None = None,
    ) -> None:
        self.transport = transport
        self.transport_encryption = transport_encryption
        self.ipykernel_args = list(ipykernel_args or [])
        self.context = zmq.Context()
        self.runtime_dir = tempfile.mkdtemp(prefix=f"nbpool-{os.getpid()}-")
        os.chmod(self.runtime_dir, 0o700)
        self.reaper = Reaper()
        self.closing = threading.Event()

    def start(self, worker_id: str, kernel_name: str, start_timeout: float):
        """Start one kernel and wait until it is ready; blocking, any thread.

        Raises
        ------
        WorkerStartFailed
            The kernel exited, or was not ready within ``start_timeout``;
            the message carries the tail of its stderr.
        """
        from .worker import Kernel

        for attempt in range(PORT_RACE_RETRIES + 1):
            kernel = Kernel.launch(self, worker_id, kernel_name)
            try:
                kernel.wait_ready(start_timeout)
                return kernel
            except WorkerStartFailed as exc:
                kernel.shutdown(now=True)
                port_race = "Address already in use" in exc.stderr_tail
                if not port_race or attempt == PORT_RACE_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def extra_arguments(self, argv: list[str]) -> list[str]:
        if any("ipykernel" in part for part in argv):
            return list(self.ipykernel_args)
        return []

    def close(self) -> None:
        """Stop the reaper and remove the runtime directory (after all kernels)."""
        self.reaper.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def kill_group(pgid: int) -> None:
    """SIGKILL a process group if it still exists (a kernel's children too)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
