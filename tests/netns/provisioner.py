"""A jupyter_client kernel provisioner that starts kernels on a namespace "host".

Tests only. It plays the part of a remote provisioner (SSH, Kubernetes, ...)
as faithfully as one machine allows:

- the kernel runs in another network namespace (``ip netns exec NS``), bound
  to that namespace's own address, so every byte between nbpool and the
  kernel crosses a veth link that a test can cut;
- the kernel binds ports of its own choosing and the provisioner reads the
  connection info back (from the connection file the kernel completes), the
  way a remote launcher reports its ports;
- CurveZMQ keys are made per the KernelManager's ``transport_encryption``
  policy and the kernelspec's ``supported_encryption``, as jupyter_client's
  LocalProvisioner does;
- nbpool sees no local process (no ``process`` attribute), as with a kernel
  on another machine: it learns of the kernel's death through heartbeats only.
  Signals and kill go through the provisioner API, also from another process
  after ``load_provisioner_info`` (as the reaper does).

It is registered the way any provisioner package is: an entry point in the
``jupyter_client.kernel_provisioners`` group, from a small dist-info
directory put on ``sys.path`` (:func:`register`); a kernelspec names it in
``metadata.kernel_provisioner`` (:func:`write_kernelspec`).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.connect import port_names
from jupyter_client.launcher import launch_kernel
from jupyter_client.provisioning import KernelProvisionerBase, KernelProvisionerFactory
from traitlets import Float, Unicode

#: The entry-point name kernelspecs use in ``metadata.kernel_provisioner``.
NAME = "nbpool-test-netns"
DIST = "nbpool_test_netns_provisioner-0.dist-info"


class NetnsProvisioner(KernelProvisionerBase):
    """Starts the kernelspec's argv inside network namespace ``namespace``, bound to ``ip``."""

    namespace = Unicode(config=True, help="Network namespace the kernel runs in.")
    ip = Unicode(config=True, help="The namespace's own address; the kernel binds to it.")
    report_timeout = Float(
        30.0, config=True, help="Seconds the kernel has to bind its ports and report them."
    )

    _popen = None
    _pgid: int | None = None  # set by load_provisioner_info in another process
    #: The event loop of every pre_launch and cleanup call, in order (tests read it).
    loops: list = []

    @property
    def has_process(self) -> bool:
        return self._popen is not None

    async def poll(self) -> int | None:
        return 0 if self._popen is None else self._popen.poll()

    async def wait(self) -> int | None:
        if self._popen is None:
            return 0
        while self._popen.poll() is None:
            await asyncio.sleep(0.05)
        code = self._popen.wait()
        self._popen = None
        return code

    async def send_signal(self, signum: int) -> None:
        if self._popen is not None and self._popen.poll() is None:
            try:
                os.killpg(self._popen.pid, signum)  # launch_kernel made it a group leader
            except ProcessLookupError:
                pass

    async def kill(self, restart: bool = False) -> None:
        if self._popen is None and self._pgid is not None:  # restored in another process
            try:
                os.killpg(self._pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await self.send_signal(signal.SIGKILL)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info["pgid"] = None if self._popen is None else self._popen.pid
        return info

    async def load_provisioner_info(self, provisioner_info: dict) -> None:
        await super().load_provisioner_info(provisioner_info)
        self._pgid = provisioner_info.get("pgid")

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        NetnsProvisioner.loops.append(asyncio.get_running_loop())
        km = self.parent
        policy = km._transport_encryption_policy(
            kwargs.pop("transport_encryption", km.transport_encryption)
        )
        if policy == "required" or (policy == "auto" and km._kernel_supports_curve_encryption()):
            if km.curve_publickey is None:
                km.curve_publickey, km.curve_secretkey = zmq.curve_keypair()
        km.transport, km.ip = "tcp", self.ip
        for name in port_names:
            setattr(km, name, 0)  # the kernel binds its own ports over there
        self._write_request(km)
        extra = kwargs.pop("extra_arguments", [])
        cmd = ["ip", "netns", "exec", self.namespace, *km.format_kernel_cmd(extra_arguments=extra)]
        return await super().pre_launch(cmd=cmd, **kwargs)

    def _write_request(self, km) -> None:
        """The connection file the kernel starts from: address, key, Curve keys, ports 0."""
        info: dict[str, Any] = {
            "ip": self.ip,
            "transport": "tcp",
            **{name: 0 for name in port_names},
            "key": km.session.key.decode(),
            "signature_scheme": km.session.signature_scheme,
            "kernel_name": km.kernel_name,
        }
        if km.curve_publickey is not None:
            info["curve_publickey"] = km.curve_publickey.decode()
            info["curve_secretkey"] = km.curve_secretkey.decode()
        fd = os.open(km.connection_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict:
        kwargs = {
            k: v
            for k, v in kwargs.items()
            if k not in ("extra_arguments", "kernel_id", "independent")
        }
        # independent: no JPY_PARENT_PID, so the kernel does not end with this
        # process by itself, as a kernel on another machine would not.
        self._popen = launch_kernel(cmd, independent=True, **kwargs)
        info = await self._reported_ports()
        km = self.parent
        km.load_connection_info(info)
        self.connection_info = km.get_connection_info()
        return self.connection_info

    async def _reported_ports(self) -> dict:
        """Wait until the kernel has written the ports it bound into its connection file."""
        path = self.parent.connection_file
        deadline = time.monotonic() + self.report_timeout
        while True:
            code = self._popen.poll()
            if code is not None:
                raise RuntimeError(
                    f"the kernel in namespace {self.namespace} exited with code {code} "
                    "before reporting its ports"
                )
            try:
                with open(path, encoding="utf-8") as f:
                    info = json.load(f)
                if all(info.get(name) for name in port_names):
                    return info
            except (OSError, ValueError):  # being rewritten right now
                pass
            if time.monotonic() > deadline:
                await self.kill()
                raise TimeoutError(
                    f"the kernel in namespace {self.namespace} did not report its ports "
                    f"within {self.report_timeout:g} s"
                )
            await asyncio.sleep(0.02)

    async def cleanup(self, restart: bool = False) -> None:
        NetnsProvisioner.loops.append(asyncio.get_running_loop())
        if self._popen is not None and self._popen.poll() is not None:
            self._popen.wait()
            self._popen = None


def register(directory: Path) -> Path:
    """Make the provisioner discoverable through its entry point; returns the sys.path entry.

    Writes ``<DIST>/METADATA`` and ``entry_points.txt`` under ``directory`` and
    puts ``directory`` on ``sys.path`` (and ``PYTHONPATH``, for child processes
    that start kernels).
    """
    dist = directory / DIST
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nbpool-test-netns-provisioner\nVersion: 0\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[jupyter_client.kernel_provisioners]\n{NAME} = {__name__}:NetnsProvisioner\n"
    )
    root = str(Path(__file__).resolve().parents[2])  # so children can import tests.netns
    sys.path.insert(0, str(directory))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(directory), root, os.environ.get("PYTHONPATH")])
    )
    importlib.invalidate_caches()
    return directory


def unregister(directory: Path, old_pythonpath: str | None) -> None:
    """Undo :func:`register`."""
    if str(directory) in sys.path:
        sys.path.remove(str(directory))
    if old_pythonpath is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old_pythonpath
    KernelProvisionerFactory.provisioners.pop(NAME, None)
    importlib.invalidate_caches()


def write_kernelspec(
    kernels_dir: Path, name: str, namespace: str, ip: str, *, curve: bool = True
) -> str:
    """An ipykernel kernelspec that runs on ``namespace`` through the provisioner.

    ``curve=False`` leaves out ``supported_encryption``: such kernels talk plain text.
    """
    metadata: dict[str, Any] = {
        "kernel_provisioner": {
            "provisioner_name": NAME,
            "config": {"namespace": namespace, "ip": ip},
        }
    }
    if curve:
        metadata["supported_encryption"] = ["curve"]
    spec = kernels_dir / name
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"Python on {namespace}",
                "language": "python",
                "metadata": metadata,
            }
        )
    )
    return name
