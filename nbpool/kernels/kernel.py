"""The kernels workers run on: their process, sockets, readiness and end.

A :class:`LocalKernel` wraps one jupyter_client
:class:`~jupyter_client.AsyncKernelManager`, whose lifecycle calls run on the
provisioner loop (:func:`~nbpool.kernels.processes.run_provisioner`); an
:class:`AttachedKernel` only a running kernel's connection info. Both talk to
their kernel through a blocking client's sockets. Either is
created and made ready on a starter thread, then handed to the coordinator. Its
:class:`~nbpool.kernels.execution.Channels` belong to whoever holds the lease; its
heartbeat socket belongs to the coordinator thread, which creates it.

How a kernel is launched is its launcher's: :meth:`LocalKernel.launch` takes a
:class:`Provisioning` (the launcher's fork server) that may give the
KernelManager another provisioner, and says how the kernel came to be, an
:class:`Origin`. This module knows no fork server.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import dataclass, fields
from typing import Literal, Protocol

import zmq
import zmq.asyncio
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from jupyter_client.session import Session

from ..errors import ExecutionTimeout, WorkerDied, WorkerStartFailed
from .execution import Channels, Execution
from .processes import LaunchCancelled, Reaper, kill_group, run_provisioner

#: How long to wait for iopub traffic before nudging with another kernel_info.
NUDGE_INTERVAL = 0.2
#: Bytes of a kernel's own stderr log quoted in a start failure.
STDERR_TAIL = 2000


@dataclass(frozen=True)
class LaunchSettings:
    """How kernels are launched: the :class:`~nbpool.Pool` traits of the same names."""

    transport: str = "tcp"
    transport_encryption: str = "auto"
    ipykernel_args: tuple[str, ...] = ()
    allow_insecure_transport: bool = False
    preload: str = ""  # run on every new python worker before it counts as ready
    env: tuple[tuple[str, str], ...] = ()  # added to this process's environment
    cwd: str | None = None  # None: this process's working directory
    fork_server: str = "auto"
    keep_sessions: bool = False  # kernels must outlive this process when their session is kept

    @classmethod
    def of(cls, source) -> LaunchSettings:
        """The launch settings of ``source`` (a Pool)."""
        values = {f.name: getattr(source, f.name) for f in fields(cls)}
        values["ipykernel_args"] = tuple(values["ipykernel_args"])
        values["env"] = tuple(sorted(values["env"].items()))
        return cls(**values)

    def environment(self) -> dict[str, str]:
        """A worker's environment: this process's, plus ``env``.

        A worker that may be kept does not inherit ``JPY_PARENT_PID`` (set
        when this process is itself a kernel): ipykernel would exit once its
        parent changed, i.e. when the notebook kernel goes.
        """
        env = {**os.environ, **dict(self.env)}
        if self.keep_sessions:
            env.pop("JPY_PARENT_PID", None)
        return env

    def extra_arguments(self, argv: list[str]) -> list[str]:
        """The tuning arguments for a kernelspec's ``argv`` (ipykernel ones only)."""
        return list(self.ipykernel_args) if any("ipykernel" in part for part in argv) else []


@dataclass(frozen=True)
class Runtime:
    """What a launcher owns for its kernels: files, sockets' context, reaper."""

    runtime_dir: str  # private (0700): connection files, kernel logs
    context: zmq.Context
    reaper: Reaper


@dataclass(frozen=True)
class Origin:
    """How a local kernel's process came to be (``status()``'s ``started``)."""

    #: ``"spawn"``: a new process from the kernelspec's argv; ``"fork"``: from a
    #: fork-server template, which ran the preload already.
    started: Literal["spawn", "fork"] = "spawn"
    #: Why a fork server that was asked to fork it could not (None: forked, or not asked).
    reason: str | None = None

    @property
    def forked(self) -> bool:
        """Whether the kernel's template ran the preload before it was forked."""
        return self.started == "fork"


class Provisioning(Protocol):
    """Another way to launch kernels, around a KernelManager's start (the launcher's
    fork server: :class:`~nbpool.launcher.Launcher`)."""

    def provision(self, km: AsyncKernelManager) -> None:
        """Give ``km`` its provisioner before its start (or leave it the kernelspec's)."""

    def origin(self, km: AsyncKernelManager) -> Origin:
        """How ``km``'s kernel came to be, once it started."""


def preload_failed(error: str, traceback: str) -> WorkerStartFailed:
    """The start failure of a preload that raised ``error`` (``"NameError: name 'x' ..."``),
    wherever it ran: on a spawned kernel or in a fork-server template."""
    return WorkerStartFailed(
        f"the preload raised {error} (the pool does not retry it: fix the preload and start "
        "the pool again)",
        traceback,
        retry=False,
    )


class Kernel:
    """A ready kernel's sockets, readiness check and heartbeat (base class).

    Every subclass is a whole :class:`nbpool.interfaces.WorkerKernel` (the
    attributes below, and the methods). ``conn`` is jupyter_client's
    connection machinery (a KernelManager or a KernelClient, both
    ConnectionFileMixin): it knows the ports, the HMAC key and the CurveZMQ
    keys, and makes correctly secured sockets.
    """

    worker_id: str
    kernel_name: str
    pid: int | None
    encrypted: bool
    channels: Channels
    attached = False
    #: How its process came to be (``"fork"``, ``"spawn"``); None: not nbpool's doing.
    started: str | None = None
    #: Why a fork server could not fork it, if one was asked to.
    spawn_reason: str | None = None

    def __init__(self, worker_id: str, conn, kernel_name: str) -> None:
        self.worker_id = worker_id
        self.kernel_name = kernel_name
        self.pid: int | None = None
        self._conn = conn
        self.encrypted = conn.curve_publickey is not None
        session = Session(key=conn.session.key, signature_scheme=conn.session.signature_scheme)
        ident = session.bsession  # shell and stdin share it: input_request finds us
        self.channels = Channels(
            session=session,
            shell=conn.connect_shell(identity=ident),
            iopub=conn.connect_iopub(),
            stdin=conn.connect_stdin(identity=ident),
        )

    # -- readiness ---------------------------------------------------------

    def wait_ready(
        self,
        timeout: float,
        closing: threading.Event | None = None,
        *,
        allowed: float | None = None,
    ) -> None:
        """Block until a kernel_info_reply arrived *and* iopub carries traffic.

        The second condition proves our iopub subscription is live (ZMQ's
        slow joiner), so the first execution's first output is not lost.
        ``timeout`` may be what is left of a longer allowance (the whole
        ``start_timeout``): ``allowed`` is then that allowance, for the message.
        """
        ch = self.channels
        asked = self._asked_socket()
        poller = zmq.Poller()
        poller.register(asked, zmq.POLLIN)
        poller.register(ch.iopub, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        replied = iopub_seen = False
        next_nudge = 0.0
        while not (replied and iopub_seen):
            now = time.monotonic()
            if closing is not None and closing.is_set():
                raise WorkerStartFailed("the pool was shut down while this kernel started")
            reason = self.poll()
            if reason:
                raise self._start_failure(f"kernel {self.kernel_name!r} {reason} while starting")
            if now >= deadline:
                raise self._start_failure(self._not_ready(timeout if allowed is None else allowed))
            if now >= next_nudge and not iopub_seen:
                ch.session.send(asked, "kernel_info_request", {})
                next_nudge = now + NUDGE_INTERVAL
            for sock in dict(poller.poll(50)):
                while True:
                    try:
                        _, msg = ch.session.recv(sock, mode=zmq.NOBLOCK)
                    except ValueError:  # jupyter_client: "Invalid Signature"
                        raise self._start_failure(
                            "its messages fail the HMAC signature check: the key is not the "
                            "kernel's key"
                        ) from None
                    if msg is None:
                        break
                    if sock is asked:
                        replied = replied or msg["msg_type"] == "kernel_info_reply"
                    else:
                        iopub_seen = True
        self._drain_iopub()

    def run_preload(self, code: str, timeout: float, *, allowed: float | None = None) -> None:
        """Run ``code`` silently (no history, no prompt number) before the kernel counts
        as ready; its outputs are dropped. ``timeout`` may be what is left of
        ``allowed``, the whole ``start_timeout`` (named in the message).

        Raises
        ------
        WorkerStartFailed
            The code raised (``retry=False``: it would raise again; the
            worker's traceback is the ``stderr_tail``), did not finish within
            ``timeout``, or the kernel died.
        """
        execution = Execution(
            self.channels,
            check_alive=self._check_started,
            interrupt=self.interrupt,
            interrupt_grace=2.0,
        )
        try:
            res = execution.run(code, timeout=timeout, silent=True)
        except ExecutionTimeout:
            raise self._start_failure(
                f"kernel {self.kernel_name!r}: its preload did not finish within the "
                f"{timeout if allowed is None else allowed:g} s of start_timeout "
                "(raise start_timeout if it is just slow)"
            ) from None
        except WorkerDied as exc:
            raise self._start_failure(
                f"kernel {self.kernel_name!r}: its preload did not finish: {exc}"
            )
        if res.error is not None:
            raise preload_failed(f"{res.error.ename}: {res.error.evalue}", res.error.text())

    def _check_started(self) -> None:
        reason = self.poll()
        if reason:
            raise WorkerDied(f"kernel {self.kernel_name!r} {reason} while running its preload")

    def _drain_iopub(self) -> None:
        """Drop the readiness chatter so the first lease starts clean."""
        ch = self.channels
        deadline = time.monotonic() + 1.0  # a chatty kernel must not hold us here
        while ch.iopub.poll(20) and time.monotonic() < deadline:
            ch.session.recv(ch.iopub, mode=zmq.NOBLOCK)
        asked = self._asked_socket()
        while asked.poll(0):
            ch.session.recv(asked, mode=zmq.NOBLOCK)

    def _asked_socket(self) -> zmq.Socket:
        """Where readiness is asked (kernel_info): the shell channel."""
        return self.channels.shell

    def _not_ready(self, timeout: float) -> str:
        return (
            f"kernel {self.kernel_name!r} was not ready within {timeout:g} s "
            "(raise start_timeout if it is just slow)"
        )

    def _start_failure(self, message: str) -> WorkerStartFailed:
        return WorkerStartFailed(message)

    def connection_info(self) -> dict | None:
        """Its ports, transport, HMAC key and CurveZMQ keys, for sockets of another owner.

        A lease's :attr:`channels` belong to its holder; whoever else must talk
        to the kernel (completion from a session cell) opens its own sockets
        from this (as jupyter_client's ``load_connection_info`` reads it).
        """
        return dict(self._conn.get_connection_info())

    # -- health ------------------------------------------------------------

    def poll(self) -> str | None:
        """Why the kernel is known gone (``"exited with code 1"``), or None."""
        return None

    def let_go(self) -> None:
        """Close our sockets and leave the kernel running (its session is kept)."""
        self.channels.close()

    def keep_record(self) -> dict | None:
        """What a later process needs to re-adopt this kernel (None: it cannot be kept)."""
        return None

    def keep(self) -> None:
        """Its session is kept: nothing of this process may stop it with this process."""

    def connect_hb(self) -> zmq.Socket | None:
        """A heartbeat socket for the coordinator thread (call it there)."""
        sock = self._conn.connect_hb()
        # Ping again without waiting for the last answer; a late echo of an
        # earlier ping still counts (so no REQ_CORRELATE).
        sock.setsockopt(zmq.REQ_RELAXED, 1)
        return sock


class LocalKernel(Kernel):
    """A kernel nbpool started (through a KernelManager and its provisioner)."""

    def __init__(
        self,
        runtime: Runtime,
        worker_id: str,
        km: AsyncKernelManager,
        log_path: str,
        origin: Origin = Origin(),
    ) -> None:
        # The manager's own sockets are asyncio ones for the provisioner loop;
        # nbpool's threads use plain sockets made from the same connection info.
        conn = BlockingKernelClient(context=runtime.context)
        conn.load_connection_info(km.get_connection_info())
        super().__init__(worker_id, conn, km.kernel_name)
        self.km = km
        #: How its process came to be (forked or spawned, and why not forked).
        self.origin = origin
        self._reaper = runtime.reaper
        self._log_path = log_path
        self._interrupt_lock = threading.Lock()
        self._provisioner = km.provisioner
        self._process = getattr(km.provisioner, "process", None)
        if self._process is not None:
            self.pid = self._process.pid
            self._reaper.watch(self.pid)
        else:
            try:
                self._reaper.watch_remote(worker_id, km)
            except Exception as exc:  # usable all the same; only not stopped if we are killed
                warnings.warn(
                    f"nbpool: the provisioner of {km.kernel_name!r} could not describe its "
                    f"kernel ({exc}); if this process is killed, that kernel is not stopped",
                    stacklevel=2,
                )

    @property
    def started(self) -> str:
        """``"fork"`` or ``"spawn"``: :attr:`Origin.started` of :attr:`origin`."""
        return self.origin.started

    @property
    def spawn_reason(self) -> str | None:
        """Why a fork server could not fork it, if one was asked to."""
        return self.origin.reason

    @classmethod
    def launch(
        cls,
        settings: LaunchSettings,
        runtime: Runtime,
        worker_id: str,
        kernel_name: str,
        *,
        provisioning: Provisioning | None = None,
        timeout: float | None = None,
        allowed: float | None = None,
        closing: threading.Event | None = None,
        launching: dict | None = None,
    ) -> LocalKernel:
        """Start the kernel process (not yet ready); raises WorkerStartFailed.

        ``provisioning`` (None: the kernelspec's own provisioner, a spawn) may
        launch it another way, and says how it did (:attr:`origin`). ``timeout`` bounds the provisioner's launch (a batch job's queue wait),
        and ``closing`` being set cancels it. ``allowed``, when ``timeout`` is
        what is left of it, is the allowance the message names. While it runs, ``launching``
        maps ``worker_id`` to the KernelManager (its provisioner may say why
        the kernel is not running yet: ``pending_reason``).
        """
        conn = os.path.join(runtime.runtime_dir, f"kernel-{worker_id}.json")
        log_path = os.path.join(runtime.runtime_dir, f"kernel-{worker_id}.log")
        km = AsyncKernelManager(
            kernel_name=kernel_name,
            context=zmq.asyncio.Context.shadow(runtime.context.underlying),
            connection_file=conn,
            transport=settings.transport,
            ip="127.0.0.1" if settings.transport == "tcp" else conn[:-5] + "-ipc",
            transport_encryption=settings.transport_encryption,
        )
        if provisioning is not None:
            provisioning.provision(km)
        extra = settings.extra_arguments(km.kernel_spec.argv)
        launching = {} if launching is None else launching
        launching[worker_id] = km
        with open(log_path, "ab") as log:
            try:
                start = km.start_kernel(
                    stdout=log,
                    stderr=log,
                    extra_arguments=extra,
                    env=settings.environment(),
                    cwd=settings.cwd or os.getcwd(),
                    # Not ipykernel's parent poller: a kept worker must outlive
                    # this process (the reaper and the keeper bound its life).
                    independent=settings.keep_sessions,
                )
                run_provisioner(start, timeout, closing)
            except WorkerStartFailed:  # the provisioning's own (a template's preload raised)
                raise
            except LaunchCancelled:
                _end_late_launch(km)
                if closing is not None and closing.is_set():
                    raise WorkerStartFailed(
                        "the pool was shut down while this kernel started"
                    ) from None
                why = getattr(km.provisioner, "pending_reason", None)
                raise WorkerStartFailed(
                    f"kernel {kernel_name!r} was not running within "
                    f"{timeout if allowed is None else allowed:g} s"
                    + (f": {why}" if why else "")
                    + " (raise start_timeout if it is just slow)"
                ) from None
            except Exception as exc:  # a bad argv, a provisioner that refused
                raise WorkerStartFailed(
                    f"kernel {kernel_name!r} could not be launched: {exc}", _tail(log_path)
                ) from None
            finally:
                launching.pop(worker_id, None)
        # From here the process runs and only ``km`` knows it (the reaper learns of
        # it in __init__): whatever ends this start ends that process first.
        if closing is not None and closing.is_set():
            # The launch finished as the pool closed: its context and reaper may be
            # going, so this kernel is not made usable.
            _end_late_launch(km)
            raise WorkerStartFailed("the pool was shut down while this kernel started")
        try:
            origin = Origin() if provisioning is None else provisioning.origin(km)
            return cls(runtime, worker_id, km, log_path, origin)
        except Exception as exc:  # its sockets could not be made (a context being terminated)
            _end_late_launch(km)
            raise WorkerStartFailed(
                f"kernel {kernel_name!r} was launched but could not be connected to: {exc}",
                _tail(log_path),
            ) from None

    def _start_failure(self, message: str) -> WorkerStartFailed:
        tail = _tail(self._log_path)
        detail = f"; its stderr ends with: {_last_line(tail)}" if tail.strip() else ""
        return WorkerStartFailed(message + detail, tail)

    def poll(self) -> str | None:
        if self._process is None:
            # No process here: a provisioner that watches its kernel remotely may
            # say why it ended (the Slurm provisioner's ``end_reason``). A plain
            # attribute read: this runs under the coordinator's lock.
            return getattr(self._provisioner, "end_reason", None)
        code = self._process.poll()
        if code is None:
            return None
        if code < 0:
            return f"was killed by signal {-code}"
        return f"exited with code {code}"

    def interrupt(self) -> None:
        """Interrupt the running code (signal or control message per kernelspec)."""
        with self._interrupt_lock:
            if self.poll() is None:
                run_provisioner(self.km.interrupt_kernel())

    def keep_record(self) -> dict | None:
        """What a later process needs to re-adopt this kernel (None: it cannot be kept).

        Only a local process can be kept: its pid (and start time) let a
        later pool tell it is still the same process, and stop it.
        """
        if self.pid is None:
            return None
        info = dict(self.km.get_connection_info())
        info["key"] = _text(info.get("key", b""))
        return {
            "kernel_name": self.kernel_name,
            "pid": self.pid,
            "connection": info,
            "interrupt_mode": self.km.kernel_spec.interrupt_mode,
            "started": self.started,
            "client": self.channels.session.session,  # whose requests' output the pool shows
        }

    def keep(self) -> None:
        """The kernel's session is kept: the reaper no longer stops it with this process."""
        if self.pid is not None:
            self._reaper.forget(self.pid)

    def let_go(self) -> None:
        self.keep()
        self.channels.close()

    def shutdown(self, now: bool = False, close_channels: bool = True) -> None:
        """Stop the kernel and its process group; close our sockets; blocking.

        A kernel with no process here (a remote provisioner's) is always
        stopped through its provisioner's kill: nbpool cannot see whether a
        polite shutdown ended it, and gateway_provisioners 0.5 leaves the
        remote process running after one.
        """
        now = now or self._process is None
        if close_channels:
            self.channels.close()
        try:
            if self.poll() is None:
                run_provisioner(self.km.shutdown_kernel(now=now))
            else:
                run_provisioner(self.km.cleanup_resources())
        except Exception:  # the kernel is going away either way; make sure of it
            pass
        if self.pid is not None:
            kill_group(self.pid)
            self._reaper.forget(self.pid)
        else:
            self._reaper.forget_remote(self.worker_id)
        for path in (self.km.connection_file, self._log_path):
            try:
                os.unlink(path)
            except OSError:
                pass


class AttachedKernel(Kernel):
    """A kernel someone else started, used through its connection file.

    nbpool never stops or signals it: ``shutdown`` only closes our sockets
    (and our SSH tunnel to it, if any), and ``interrupt`` sends an
    ``interrupt_request`` on its control channel.
    """

    attached = True

    def __init__(self, worker_id: str, client, label: str, tunnel=None) -> None:
        super().__init__(worker_id, client, label)
        self._control = client.connect_control()
        self._interrupt_lock = threading.Lock()
        self._tunnel = tunnel

    def _not_ready(self, timeout: float) -> str:
        return (
            f"no answer from the kernel of {self.kernel_name} within {timeout:g} s: "
            "is it running and reachable, and is the file's key the kernel's key?"
        )

    def poll(self) -> str | None:
        return None if self._tunnel is None else self._tunnel.poll()

    def interrupt(self) -> None:
        with self._interrupt_lock:
            self.channels.session.send(self._control, "interrupt_request", {})

    def shutdown(self, now: bool = False, close_channels: bool = True) -> None:
        if close_channels:
            self.channels.close()
        with self._interrupt_lock:
            self._control.close(linger=0)
        if self._tunnel is not None:
            self._tunnel.close()


def _end_late_launch(km: AsyncKernelManager) -> None:
    """Stop the kernel a start launched but does not hand over (its launch was
    cancelled, the pool closed as it finished, or its sockets could not be made).

    A cancel can land after the provisioner's ``launch_kernel`` returned:
    jupyter_client's ``start_kernel`` awaits once more after the launch
    (``in_pending_state``: ``asyncio.sleep(0.01)``), where no provisioner
    cleanup runs. The kernel is then up and known to nothing but ``km``; a
    forked one, in its own process group with no parent poller, would even
    outlive this process.
    """
    provisioner = km.provisioner
    if provisioner is None or not provisioner.has_process:
        return
    # A local (or forking) provisioner's process group; other provisioners (a
    # Slurm job) are ended by their own shutdown. Read before: cleanup_resources
    # may drop the provisioner.
    pid = provisioner.pid if isinstance(provisioner, LocalProvisioner) else None
    try:
        run_provisioner(km.shutdown_kernel(now=True))
    except Exception:  # going away either way; the group kill makes sure of it
        pass
    if pid:
        kill_group(pid)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - STDERR_TAIL))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
