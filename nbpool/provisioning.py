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
- a *reaper* process that kills every worker's process group (and stops
  remote workers through their provisioner) when the process hosting the
  pool dies without shutting it down (SIGKILL, OOM);
- an immediate retry when a kernel dies because another process took one of
  its ports between port choice and bind (jupyter_client #487);
- SSH tunnels (:mod:`nbpool.ssh`) for attached kernels only SSH can reach;
- one long-lived event loop per process on which every provisioner call runs
  (:func:`run_provisioner`), as in Jupyter Server: provisioners are async and
  may rely on a loop that keeps running between calls (gateway_provisioners
  receives remote kernels' connection info in a loop callback registered once
  per process). jupyter_client's blocking manager would instead run each call
  on a loop of the calling thread, alive only during that call.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import warnings
from typing import TYPE_CHECKING

import zmq
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.localinterfaces import is_local_ip

from .errors import AttachFailed, UnknownKernel, WorkerStartFailed
from .ssh import SshTunnel

if TYPE_CHECKING:
    from .worker import AttachedKernel

#: Keys a connection file must have to be attached.
CONNECTION_KEYS = ("ip", "key", "transport", "shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")

#: How many times a start is repeated at once when the kernel lost a port race.
PORT_RACE_RETRIES = 3


class Reaper:
    """A helper process that kills our worker kernels if this process dies.

    It reads ``+PGID`` / ``-PGID`` lines on its stdin (and ``=ID JSON`` /
    ``~ID`` for kernels with no process here); at EOF (this process exited,
    however it exited) it kills every process group still registered,
    removes the pool's runtime directory (connection files, kernel logs),
    and stops those remote kernels through their restored provisioner and a
    shutdown request (see :mod:`nbpool._reaper`). The pipe is private
    to the two processes, so connection keys stay out of argv and files.
    """

    def __init__(self, runtime_dir: str) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "nbpool._reaper", runtime_dir],
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

    def watch_remote(self, kernel_id: str, km) -> None:
        """A kernel with no process here: stop it through its provisioner if we die."""
        entry = {
            "kernel_name": km.kernel_name,
            "connection_info": km.get_connection_info(),
            "provisioner_info": run_provisioner(km.provisioner.get_provisioner_info()),
        }
        self._send(f"={kernel_id} {json.dumps(entry, default=_text)}")

    def forget_remote(self, kernel_id: str) -> None:
        self._send(f"~{kernel_id}")

    def close(self) -> None:
        with self._lock:
            if self._proc.stdin and not self._proc.stdin.closed:
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _loopback(ip: str) -> bool:
    """Whether ``ip`` means the machine itself, wherever it is read."""
    return ip.startswith("127.") or ip in ("localhost", "::1", "0.0.0.0", "")


def _text(value) -> str:
    """JSON for what connection and provisioner info may hold besides JSON (key bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


class LaunchCancelled(Exception):
    """A provisioner call ran past its time or its stop event; it was cancelled."""


def run_provisioner(coro, timeout: float | None = None, stop: threading.Event | None = None):
    """Run a KernelManager/provisioner coroutine on the provisioner loop; blocking.

    The loop runs on a daemon thread for the rest of the process (a loop
    callback a provisioner registered stays live for later kernels and pools).
    A provisioner that blocks the loop delays every other provisioner call,
    as it would in Jupyter Server.

    With ``timeout`` (seconds) or ``stop``, the coroutine is cancelled when
    either runs out (a batch job may wait in a queue for hours) and
    :class:`LaunchCancelled` is raised once its own cleanup has run (a
    provisioner cancels its job on ``CancelledError``).
    """
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="nbpool-provisioners", daemon=True).start()
    if timeout is not None or stop is not None:
        coro = _bounded(coro, timeout, stop)
    return asyncio.run_coroutine_threadsafe(coro, _loop).result()


async def _bounded(coro, timeout: float | None, stop: threading.Event | None):
    task = asyncio.ensure_future(coro)
    deadline = None if timeout is None else time.monotonic() + timeout
    while not task.done():
        late = deadline is not None and time.monotonic() >= deadline
        if late or (stop is not None and stop.is_set()):
            task.cancel()
            try:
                return await task  # finished anyway: the caller owns (and stops) what it made
            except asyncio.CancelledError:
                raise LaunchCancelled() from None
        await asyncio.wait({task}, timeout=0.05)
    return task.result()


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
        allow_insecure_transport: bool = False,
    ) -> None:
        self.transport = transport
        self.allow_insecure_transport = allow_insecure_transport
        self.transport_encryption = transport_encryption
        self.ipykernel_args = list(ipykernel_args or [])
        self.context = zmq.Context()
        self.runtime_dir = tempfile.mkdtemp(prefix=f"nbpool-{os.getpid()}-")
        os.chmod(self.runtime_dir, 0o700)
        self.reaper = Reaper(self.runtime_dir)
        self.closing = threading.Event()
        #: worker id -> KernelManager, while its provisioner launches the kernel
        self.launching: dict = {}

    def start(self, worker_id: str, kernel_name: str, start_timeout: float):
        """Start one kernel and wait until it is ready; blocking, any thread.

        Raises
        ------
        WorkerStartFailed
            The kernel exited, or was not ready within ``start_timeout``;
            the message carries the tail of its stderr.
        """
        from .worker import LocalKernel

        for attempt in range(PORT_RACE_RETRIES + 1):
            kernel = LocalKernel.launch(self, worker_id, kernel_name, start_timeout)
            try:
                self.check_transport(kernel.km.ip, kernel.km.transport, kernel.encrypted)
                kernel.wait_ready(start_timeout, self.closing)
                return kernel
            except WorkerStartFailed as exc:
                kernel.shutdown(now=True)
                port_race = "Address already in use" in exc.stderr_tail
                if not port_race or attempt == PORT_RACE_RETRIES:
                    raise
            except BaseException:
                kernel.shutdown(now=True)  # never leak a started process
                raise
        raise AssertionError("unreachable")

    def pending_reason(self, worker_id: str) -> str | None:
        """Why a launching kernel is not running yet, if its provisioner says.

        A provisioner may keep a ``pending_reason`` string attribute (the Slurm
        provisioner: ``"Slurm job 42 is pending (Resources)"``); any thread may read it.
        """
        km = self.launching.get(worker_id)
        return getattr(getattr(km, "provisioner", None), "pending_reason", None)

    def attach(
        self,
        worker_id: str,
        path: str,
        timeout: float,
        allow_insecure: bool,
        sshserver: str | None = None,
        sshkey: str | None = None,
    ) -> "AttachedKernel":
        """Connect to a running kernel through its connection file; blocking.

        With ``sshserver`` (``[user@]host[:port]``), the kernel's ports are first
        forwarded to loopback here through that SSH server (:class:`SshTunnel`).

        Raises
        ------
        AttachFailed
            The file is missing, unreadable, not a connection file, plaintext
            over a network, the SSH login or tunnel failed, or its kernel does
            not answer within ``timeout``.
        """
        from .worker import AttachedKernel

        path = os.path.abspath(os.path.expanduser(str(path)))
        info = _read_connection_file(path)
        client = BlockingKernelClient(connection_file=path, context=self.context)
        client.load_connection_file()
        encrypted = client.curve_publickey is not None
        deadline = time.monotonic() + timeout  # one bound for tunnel and answer together
        label, tunnel = os.path.basename(path), None
        try:
            if sshserver is None:
                self.check_transport(client.ip, client.transport, encrypted, allow_insecure)
            else:
                # The hop from the SSH server on to the kernel is outside the tunnel.
                self.check_transport(
                    info["ip"], info["transport"], encrypted, allow_insecure,
                    local=_loopback(info["ip"]), seen_from=sshserver,
                )
        except WorkerStartFailed as exc:
            raise AttachFailed(f"connection file {path}: {exc}") from None
        if sshserver is not None:
            tunnel = SshTunnel.open(
                f"connection file {path}", info, sshserver, sshkey, timeout, self
            )
            client.ip = "127.0.0.1"
            for key, port in tunnel.ports.items():
                setattr(client, key, port)
            label = f"{label} via ssh {sshserver}"
        kernel = None
        try:
            kernel = AttachedKernel(worker_id, client, label, tunnel)
            kernel.wait_ready(max(0.0, deadline - time.monotonic()), self.closing)
        except BaseException as exc:  # never leave a tunnel or sockets behind
            if kernel is not None:
                kernel.shutdown()
            elif tunnel is not None:
                tunnel.close()
            if isinstance(exc, WorkerStartFailed):
                raise AttachFailed(f"connection file {path}: {exc}") from None
            raise
        return kernel

    def check_transport(
        self,
        ip: str,
        transport: str,
        encrypted: bool,
        allow_insecure: bool | None = None,
        *,
        local: bool | None = None,
        seen_from: str | None = None,
    ) -> None:
        """Refuse plain text to a kernel that is not on loopback or ipc.

        ``local`` overrides the loopback test (for an address as seen from
        the SSH server ``seen_from``).

        Raises
        ------
        WorkerStartFailed
            Unless ``allow_insecure_transport`` is set (then it warns once).
        """
        if local is None:
            local = transport == "ipc" or ip.startswith("127.") or is_local_ip(ip)
        if local or encrypted:
            return
        if allow_insecure is None:
            allow_insecure = self.allow_insecure_transport
        if not allow_insecure:
            where = f"the kernel at {ip}" + (f" (as seen from {seen_from})" if seen_from else "")
            raise WorkerStartFailed(
                f"{where} has no CurveZMQ keys, so code and outputs would cross the "
                "network in plain text; enable transport encryption for it, tunnel it over SSH "
                "to its own host, or set allow_insecure_transport=True"
            )
        _warn_insecure(ip)

    def extra_arguments(self, argv: list[str]) -> list[str]:
        if any("ipykernel" in part for part in argv):
            return list(self.ipykernel_args)
        return []

    def close(self) -> None:
        """Stop the reaper, remove the runtime directory, free the ZMQ context.

        Called after all kernels stopped. The context is terminated on a
        daemon thread: ``term()`` waits for every socket to close, and a
        lease holder that never returned may still own some.
        """
        self.reaper.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        threading.Thread(target=self.context.term, name="nbpool-zmq-term", daemon=True).start()


def kill_group(pgid: int) -> None:
    """SIGKILL a process group if it still exists (a kernel's children too)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_connection_file(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except FileNotFoundError:
        raise AttachFailed(f"connection file {path} does not exist") from None
    except OSError as exc:
        raise AttachFailed(f"connection file {path} is unreadable: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AttachFailed(f"connection file {path} is not JSON: {exc}") from None
    missing = [key for key in CONNECTION_KEYS if not isinstance(info, dict) or key not in info]
    if missing:
        raise AttachFailed(
            f"connection file {path} is not a kernel connection file (missing {', '.join(missing)})"
        )
    return info


_warned_insecure: set[str] = set()


def _warn_insecure(ip: str) -> None:
    if ip not in _warned_insecure:
        _warned_insecure.add(ip)
        warnings.warn(
            f"nbpool: talking to the kernel at {ip} in plain text (allow_insecure_transport=True)",
            stacklevel=4,
        )
