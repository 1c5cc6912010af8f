"""The reaper process: stops worker kernels whose pool host died.

Run as ``python -m nbpool.kernels._reaper RUNTIME_DIR`` by
:class:`nbpool.launcher.Reaper`. It reads lines from stdin:

- ``+PGID`` / ``-PGID``: a local process group to kill, or no longer;
- ``=ID JSON`` / ``~ID``: a kernel with no process here (a remote
  provisioner's) to stop, or no longer. JSON has its ``kernel_name``, its
  ``connection_info`` and its provisioner's ``provisioner_info``.

Stdin reaches EOF when the pool's process exits, however it exits (even
SIGKILL). Then every local process group gets SIGTERM, and SIGKILL a
second later if still alive; the runtime directory is removed; and every
remote kernel still registered is killed by its provisioner, made again
from the kernelspec and restored with ``load_provisioner_info``
(jupyter_client's API for handing a kernel's provisioner to another
process), and is sent a ``shutdown_request`` on its control channel (the
signed, encrypted message jupyter_client sends).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time

#: Seconds remote kernels have to acknowledge their shutdown request.
REMOTE_GRACE = 2.0
#: Seconds all provisioner kills together may take.
KILL_TIMEOUT = 20.0


def _signal_all(groups: set[int], sig: int) -> set[int]:
    alive = set()
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            alive.add(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    return alive


def _stop_remote(kernels: dict[str, dict]) -> None:
    """Have each remote kernel's provisioner kill it; then ask each to shut down.

    The kill comes first: gateway_provisioners' launcher stops answering its
    provisioner once its kernel was shut down, so a kill after that would
    find nothing. The shutdown request covers provisioners that cannot be
    restored in another process.
    """
    if not kernels:
        return
    try:
        asyncio.run(asyncio.wait_for(_kill_all(kernels.values()), KILL_TIMEOUT))
    except Exception:  # best effort: the shutdown requests and local cleanup still follow
        pass
    from jupyter_client.blocking import BlockingKernelClient  # only when needed

    clients = []
    for entry in kernels.values():
        try:
            client = BlockingKernelClient()
            client.load_connection_info(entry["connection_info"])
            client.control_channel.start()
            client.shutdown()  # sends shutdown_request on control
            clients.append(client)
        except Exception:  # a kernel we cannot reach any more is gone for us
            continue
    deadline = time.monotonic() + REMOTE_GRACE
    for client in clients:
        try:
            client.control_channel.get_msg(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:  # no reply in time: killed already, or gone
            pass
        client.control_channel.stop()


async def _kill_all(entries) -> None:
    await asyncio.gather(*(_kill(entry) for entry in entries), return_exceptions=True)


async def _kill(entry: dict) -> None:
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_client.provisioning import KernelProvisionerFactory

    info = entry["provisioner_info"]
    km = AsyncKernelManager(kernel_name=entry["kernel_name"])
    provisioner = KernelProvisionerFactory.instance(parent=km.parent).create_provisioner_instance(
        info["kernel_id"], km.kernel_spec, parent=km
    )
    await provisioner.load_provisioner_info(info)
    # The notebook is gone: nothing to wind down. The calls a shutdown makes,
    # forceful first: SIGKILL through the provisioner (gateway_provisioners'
    # kill() starts with SIGTERM, which its launcher may survive while its
    # listener stops, and then poll() reports it gone); shutdown_requested()
    # so the provisioner's own helpers on the host exit (that listener runs
    # in a process of its own); kill() for provisioners whose signals need
    # state we do not have; cleanup().
    await provisioner.send_signal(signal.SIGKILL)
    await provisioner.shutdown_requested()
    await provisioner.kill()
    await provisioner.cleanup()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    remote: dict[str, dict] = {}
    for line in sys.stdin:
        line = line.strip()
        kind, rest = line[:1], line[1:]
        try:
            if kind == "+":
                groups.add(int(rest))
            elif kind == "-":
                groups.discard(int(rest))
            elif kind == "=":
                kernel_id, _, info = rest.partition(" ")
                remote[kernel_id] = json.loads(info)
            elif kind == "~":
                remote.pop(rest, None)
        except ValueError:  # a garbled line must not cost the others their cleanup
            continue
    # Local first: it takes at most a second; remote kills may take longer.
    alive = _signal_all(groups, signal.SIGTERM)
    deadline = time.monotonic() + 1.0
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = _signal_all(alive, 0)
    _signal_all(alive, signal.SIGKILL)
    shutil.rmtree(sys.argv[1], ignore_errors=True)
    _stop_remote(remote)


if __name__ == "__main__":
    main()
