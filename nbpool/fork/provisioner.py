"""A jupyter_client kernel provisioner that forks kernels from a fork-server template.

:class:`ForkingProvisioner` is a :class:`~jupyter_client.provisioning.LocalProvisioner`
whose ``launch_kernel`` asks a :class:`~nbpool.fork.server.ForkServer` for a
forked child instead of calling Popen. Everything else stays jupyter_client's:
the KernelManager picks ports, writes the connection file with a fresh HMAC
key and CurveZMQ keys, and drives restart, interrupt and shutdown through
``poll``/``wait``/``send_signal``/``kill`` on :class:`~nbpool.fork.server.ForkedProcess`.
When the fork server says no (:class:`~nbpool.fork.server.ForkUnavailable`),
it launches with Popen like LocalProvisioner and records why.

Use (before ``start_kernel``)::

    provisioner = install(km, fork_server, preload="import numpy as np")
    await km.start_kernel(stdout=log, stderr=log, env=env, cwd=cwd)
    provisioner.origin        # Origin("fork") or Origin("spawn", "why")

Which kernels get one is the launcher's choice (:class:`~nbpool.launcher.Launcher`).
A spawned worker has *not* run the preload: the launcher's ``warm_up`` runs it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import uuid

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Any, Instance, Unicode

from ..kernels.kernel import Origin
from .server import ForkServer, ForkUnavailable

#: Seconds launch_kernel waits for a forked kernel to bind its sockets.
BOUND_TIMEOUT = 10.0


class ForkingProvisioner(LocalProvisioner):
    """Launch by forking a preloaded template; fall back to Popen with a reason.

    After a launch, ``origin`` says which it was, and why a spawn was needed:
    the one place a fork server's or template's refusal
    (:class:`~nbpool.fork.server.ForkUnavailable`) becomes a verdict.
    """

    fork_server = Any(help="the nbpool.fork.server.ForkServer that forks this kernel")
    preload = Unicode("", help="code the template ran; the forked kernel starts with its names")
    origin = Instance(Origin, allow_none=True, help="how its last launch went (None: none yet)")

    async def launch_kernel(self, cmd: list[str], **kwargs) -> dict:
        try:
            process = await self._fork(cmd, kwargs)
        except ForkUnavailable as exc:
            self.origin = Origin("spawn", str(exc))
            self.log.info("nbpool: spawning kernel %s: %s", self.kernel_id, exc)
            return await super().launch_kernel(cmd, **kwargs)
        self.origin = Origin("fork")
        self.process = process
        self.pid = self.pgid = process.pid  # the child called setsid()
        self.cwd = kwargs["cwd"]
        return self.connection_info

    async def _fork(self, cmd: list[str], kwargs: dict):
        if self.fork_server is None:
            raise ForkUnavailable("no fork server")
        if kwargs.get("stdin") not in (None, subprocess.DEVNULL):
            raise ForkUnavailable("a kernel with a stdin pipe must be spawned")
        env = dict(kwargs.get("env") or os.environ)
        if not kwargs.get("independent"):  # as jupyter_client's launch_kernel does
            env["JPY_PARENT_PID"] = str(os.getpid())
        kwargs["cwd"] = os.path.abspath(kwargs.get("cwd") or os.getcwd())
        cmd = [os.path.expanduser(part) for part in cmd]
        # Our own descriptors, now: the caller may close its files once we return.
        fds = [_descriptor(kwargs.get("stdout"), 1, "stdout")]
        try:
            fds.append(_descriptor(kwargs.get("stderr"), 2, "stderr"))
        except BaseException:
            os.close(fds[0])
            raise
        loop = asyncio.get_running_loop()
        call = functools.partial(
            _fork, self.fork_server, cmd, env, kwargs["cwd"], self.preload, *fds
        )
        forking = loop.run_in_executor(None, call)
        try:
            process = await asyncio.shield(forking)
        except asyncio.CancelledError:  # a launch given up (closing, timeout)
            forking.add_done_callback(_kill_forked)
            raise
        try:
            # Return once the kernel's sockets are bound and it has rewritten
            # the connection file (~60 ms after the fork): KernelManager reads
            # that file next (it must not catch it half-written), and a client
            # that connected earlier would wait out ZMQ's 100 ms reconnect
            # interval. A kernel that dies or is slow is the readiness check's.
            await loop.run_in_executor(None, process.wait_bound, BOUND_TIMEOUT)
        except BaseException:
            process.kill()
            raise
        return process


def _fork(server: ForkServer, cmd, env, cwd, preload, stdout: int, stderr: int):
    """``server.fork`` on an executor thread; it owns (and closes) the two descriptors."""
    try:
        return server.fork(cmd, env, cwd, preload, stdout, stderr)
    finally:
        os.close(stdout)
        os.close(stderr)


def _kill_forked(forking) -> None:
    """A fork that completes after its launch was given up: end that child."""
    if not forking.cancelled() and forking.exception() is None:
        forking.result().kill()


def _descriptor(target, default: int, name: str) -> int:
    """A descriptor of our own for a Popen-style stdout/stderr argument (closed by the caller)."""
    if target is None:
        return os.dup(default)
    if target == subprocess.DEVNULL:
        return os.open(os.devnull, os.O_WRONLY)
    if isinstance(target, int) and target >= 0:
        return os.dup(target)
    if hasattr(target, "fileno"):
        return os.dup(target.fileno())
    raise ForkUnavailable(f"a kernel whose {name} is {target!r} must be spawned")


def install(km, fork_server: ForkServer, preload: str = "") -> ForkingProvisioner:
    """Make ``km`` launch through ``fork_server``; call before its first start."""
    km.kernel_id = km.kernel_id or str(uuid.uuid4())
    km.provisioner = ForkingProvisioner(
        kernel_id=km.kernel_id,
        kernel_spec=km.kernel_spec,
        parent=km,
        fork_server=fork_server,
        preload=preload,
    )
    return km.provisioner
