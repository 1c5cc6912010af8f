"""Where worker kernels come from: kernelspecs, launch settings, private files.

A :class:`Launcher` turns a kernelspec name into a running, ready
:class:`~nbpool.kernels.kernel.Kernel`. It uses jupyter_client's machinery as it is
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
- warm workers: fork or spawn is decided here, end to end. With
  ``fork_server="auto"`` the launcher owns a :class:`~nbpool.fork.server.ForkServer`
  and gives each local kernel its :class:`~nbpool.fork.provisioner.ForkingProvisioner`
  (:class:`_ForkOrSpawn`; a kernelspec naming a provisioner of its own keeps it).
  The fork server and template refuse what they cannot fork safely (an argv that
  is not ``python -m ipykernel_launcher``, a preload that started threads), the
  provisioner turns a refusal into the kernel's :class:`~nbpool.kernels.kernel.Origin`,
  and, once the kernel is ready, :func:`warm_up` runs the preload on a spawned
  python kernel (a forked one's template ran it);
- SSH tunnels (:mod:`nbpool.kernels.ssh`) for attached kernels only SSH can reach.

Layering, one way as in jupyter_client: this module uses :mod:`nbpool.kernels.kernel`
(one kernel's lifecycle), :mod:`nbpool.kernels.ssh` and :mod:`nbpool.fork`, which
all build on :mod:`nbpool.kernels.processes` (provisioner loop, process groups, reaper).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings

import zmq
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.localinterfaces import is_local_ip
from jupyter_client.provisioning import LocalProvisioner

from .errors import AttachFailed, PoolClosed, UnknownKernel, WorkerStartFailed
from .fork.provisioner import ForkingProvisioner, install
from .fork.server import ForkServer
from .kernels.kernel import AttachedKernel, LaunchSettings, LocalKernel, Origin, Runtime
from .kernels.processes import PORT_RACE_TRIES, Reaper
from .kernels.ssh import SshTunnel

#: Keys a connection file must have to be attached.
CONNECTION_KEYS = (
    "ip",
    "key",
    "transport",
    "shell_port",
    "iopub_port",
    "stdin_port",
    "hb_port",
    "control_port",
)
#: Provisioner names that mean "a local process" (the ones a fork server may stand in for).
LOCAL_PROVISIONERS = ("local-provisioner",)
#: Seconds :meth:`Launcher.close` waits for starts in flight (they give up on ``closing``).
START_DRAIN = 10.0


def _loopback(ip: str) -> bool:
    """Whether ``ip`` means the machine itself, wherever it is read."""
    return ip.startswith("127.") or ip in ("localhost", "::1", "0.0.0.0", "")


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
            f"no kernelspec named {name!r}; available: {available} (see `jupyter kernelspec list`)"
        ) from None


class Launcher:
    """Starts worker kernels; owns their runtime directory, ZMQ context, reaper and
    fork server.

    This is the pool's real :class:`~nbpool.interfaces.Backend` (see
    ``backend`` in :class:`~nbpool.Pool`): ``open``, ``start``, ``attach``,
    ``pending_reason``, ``closing`` and ``close``. Constructing it acquires
    nothing; :meth:`open` makes the runtime directory, the ZMQ context, the
    reaper process and the fork server (:attr:`runtime`, :attr:`fork_server`),
    and :meth:`close` gives them back.

    Parameters
    ----------
    settings : LaunchSettings
        Transport, CurveZMQ policy (``auto`` encrypts every kernel whose
        kernelspec declares ``supported_encryption: ["curve"]``), ipykernel
        tuning arguments, whether plain text to remote kernels is allowed, the
        preload and whether python workers are forked (``fork_server``).
    """

    #: Set when the pool starts closing: launches in flight give up.
    closing: threading.Event

    def __init__(self, settings: LaunchSettings = LaunchSettings()) -> None:
        self.settings = settings
        #: What :meth:`open` acquired; None before it.
        self.runtime: Runtime | None = None
        #: Forks python workers from preloaded templates, from :meth:`open` on;
        #: None before it and with ``fork_server="never"`` (every kernel is spawned).
        self.fork_server: ForkServer | None = None
        self._fork_or_spawn: _ForkOrSpawn | None = None
        #: Set when the pool closes: launches in progress give up, no open() follows.
        self.closing = threading.Event()
        #: worker id -> KernelManager, while its provisioner launches the kernel
        self.launching: dict = {}
        self._lock = threading.Lock()  # open() against close() and start(): never one half-done
        self._closed = False  # close() ran: the runtime is given back once
        self._starts = 0  # start() calls in flight: close() gives nothing back before they end
        self._no_starts = threading.Condition(self._lock)  # notified as _starts drops

    def open(self) -> None:
        """Make the runtime directory, ZMQ context, reaper and fork server; idempotent.

        Raises
        ------
        PoolClosed
            :attr:`closing` is set: the pool was shut down.
        """
        with self._lock:
            if self.closing.is_set():
                raise PoolClosed(
                    "the pool was shut down; create a new nbpool.Pool to run more code"
                )
            if self.runtime is not None:
                return
            runtime_dir = tempfile.mkdtemp(prefix=f"nbpool-{os.getpid()}-")
            os.chmod(runtime_dir, 0o700)
            reaper = Reaper(runtime_dir)
            if self.settings.fork_server == "auto":
                self.fork_server = ForkServer(runtime_dir, reaper)
                self._fork_or_spawn = _ForkOrSpawn(self.fork_server, self.settings.preload)
            self.runtime = Runtime(runtime_dir, zmq.Context(), reaper)

    def start(self, worker_id: str, kernel_name: str, start_timeout: float):
        """Start one kernel and wait until it is ready; blocking, any thread.

        ``start_timeout`` covers the whole start, one deadline for all of it:
        the provisioner's launch (a batch job's queue wait, a fork server's
        template), the kernel becoming ready and its preload, and a relaunch
        after a port race.

        A start in flight when :meth:`close` runs ends its kernel before it
        returns (``closing`` cancels the launch and the wait for readiness), and
        :meth:`close` waits for it: no kernel outlives the runtime it was started in.

        Raises
        ------
        WorkerStartFailed
            The kernel exited, or was not ready within ``start_timeout``;
            the message carries the tail of its stderr. Or the pool was shut
            down (:attr:`closing` is set): nothing is started.
        """
        with self._lock:
            if self.closing.is_set():
                raise WorkerStartFailed("the pool was shut down; no worker is started")
            self._starts += 1
        try:
            return self._start(worker_id, kernel_name, start_timeout)
        finally:
            with self._lock:
                self._starts -= 1
                self._no_starts.notify_all()

    def _start(self, worker_id: str, kernel_name: str, start_timeout: float) -> LocalKernel:
        deadline = time.monotonic() + start_timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        for attempt in range(1, PORT_RACE_TRIES + 1):
            kernel = LocalKernel.launch(
                self.settings,
                self.runtime,
                worker_id,
                kernel_name,
                provisioning=self._fork_or_spawn,
                timeout=left(),
                allowed=start_timeout,
                closing=self.closing,
                launching=self.launching,
            )
            try:
                self.check_transport(kernel.km.ip, kernel.km.transport, kernel.encrypted)
                kernel.wait_ready(left(), self.closing, allowed=start_timeout)
                warm_up(kernel, self.settings.preload, max(0.1, left()), allowed=start_timeout)
                return kernel
            except WorkerStartFailed as exc:
                kernel.shutdown(now=True)
                port_race = "Address already in use" in exc.stderr_tail
                if not port_race or attempt == PORT_RACE_TRIES:
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
    ) -> AttachedKernel:
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
        path = os.path.abspath(os.path.expanduser(str(path)))
        info = _read_connection_file(path)
        client = BlockingKernelClient(connection_file=path, context=self.runtime.context)
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
                    info["ip"],
                    info["transport"],
                    encrypted,
                    allow_insecure,
                    local=_loopback(info["ip"]),
                    seen_from=sshserver,
                )
        except WorkerStartFailed as exc:
            raise AttachFailed(f"connection file {path}: {exc}") from None
        if sshserver is not None:
            tunnel = SshTunnel.open(
                f"connection file {path}", info, sshserver, sshkey, timeout, self.runtime
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
            allow_insecure = self.settings.allow_insecure_transport
        if not allow_insecure:
            where = f"the kernel at {ip}" + (f" (as seen from {seen_from})" if seen_from else "")
            raise WorkerStartFailed(
                f"{where} has no CurveZMQ keys, so code and outputs would cross the "
                "network in plain text; enable transport encryption for it, tunnel it over SSH "
                "to its own host, or set allow_insecure_transport=True"
            )
        _warn_insecure(ip)

    def close(self) -> None:
        """Stop the reaper, remove the runtime directory, free the ZMQ context.

        Called after all kernels stopped; idempotent. It sets :attr:`closing`
        (no open() or start() after it) and does nothing more if :meth:`open`
        never ran. It first waits (up to :data:`START_DRAIN` seconds) for the
        starts in flight: each ends its kernel, which needs the context, and
        a kernel launched but not yet watched by the reaper would outlive it.
        Past that wait (a preload that does not finish), the reaper's end
        still kills every kernel it watches. The context is terminated on a
        daemon thread: ``term()`` waits for every socket to close, and a
        lease holder that never returned may still own some.
        """
        with self._lock:
            self.closing.set()
            runtime = None if self._closed else self.runtime
            self._closed = True
            deadline = time.monotonic() + START_DRAIN
            while self._starts and (left := deadline - time.monotonic()) > 0:
                self._no_starts.wait(left)
        if runtime is None:
            return
        if self.fork_server is not None:
            self.fork_server.close()  # templates only: their workers were stopped
        runtime.reaper.close()
        shutil.rmtree(runtime.runtime_dir, ignore_errors=True)
        threading.Thread(target=runtime.context.term, name="nbpool-zmq-term", daemon=True).start()


def warm_up(kernel: LocalKernel, preload: str, timeout: float, *, allowed: float) -> None:
    """Make a ready kernel a warm worker: run ``preload`` on it unless that is done.

    A forked kernel's template ran it before the fork; a spawned python kernel
    runs it now, as one silent execution; a kernel of another language never
    does (the preload is Python). ``timeout`` is what is left of ``allowed``,
    the whole ``start_timeout``.

    Raises
    ------
    WorkerStartFailed
        The preload raised (``retry=False``), did not finish in time, or the
        kernel died (see :meth:`~nbpool.kernels.kernel.Kernel.run_preload`).
    """
    if not preload or kernel.origin.forked or kernel.km.kernel_spec.language != "python":
        return
    kernel.run_preload(preload, timeout, allowed=allowed)


class _ForkOrSpawn:
    """Which local kernels the fork server launches, and how each one came to be.

    The :class:`~nbpool.kernels.kernel.Provisioning` a :class:`Launcher` with a
    fork server gives :meth:`LocalKernel.launch <nbpool.kernels.kernel.LocalKernel.launch>`.
    """

    def __init__(self, server: ForkServer, preload: str) -> None:
        self._server = server
        self._preload = preload

    def provision(self, km) -> None:
        """Fork ``km``'s kernel, unless its kernelspec names a provisioner of its own
        (a remote or batch one): that kernel is never forked."""
        spec = km.kernel_spec
        named = ((spec.metadata or {}).get("kernel_provisioner") or {}).get("provisioner_name")
        if not named or named in LOCAL_PROVISIONERS:
            install(km, self._server, self._preload)

    def origin(self, km) -> Origin:
        """The forking provisioner's verdict, or why ``km`` had none."""
        prov = km.provisioner
        if isinstance(prov, ForkingProvisioner):
            return prov.origin  # set by its launch_kernel, which has just run
        name = type(prov).__name__ if prov is not None else "none"
        if sys.platform.startswith("linux") and not isinstance(prov, LocalProvisioner):
            return Origin(
                "spawn", f"the kernelspec {km.kernel_name!r} has a provisioner of its own ({name})"
            )
        return Origin("spawn", "the fork server is not used for this kernel")


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
