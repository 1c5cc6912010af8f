"""Helpers the test tiers share: waiting on conditions with deadlines (never plain
sleeps), finding processes, kernels started outside nbpool, private kernelspec
directories.

Imported as ``from tests.helpers import ...``; fixtures live in the conftest
files, which no test imports.
"""

from __future__ import annotations

import contextlib
import os
import time

import pytest


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    """Poll ``condition()`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def pids_with(marker: bytes) -> list[int]:
    """Pids (not this process) whose command line contains ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting for its parent counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, but another user's (a reused pid)
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:  # it was reaped between the two checks
        return True


@contextlib.contextmanager
def started_kernel(kernel_name: str, connection_file, **kwargs):
    """A kernel "someone else" started (its own KernelManager); killed on exit."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=kernel_name, connection_file=str(connection_file), **kwargs)
    km.start_kernel()
    try:
        yield km
    finally:
        km.shutdown_kernel(now=True)


@contextlib.contextmanager
def extra_jupyter_path(root):
    """Put ``root`` first on JUPYTER_PATH (its ``kernels/`` become kernelspecs)."""
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(root), old]))
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH")
        else:
            os.environ["JUPYTER_PATH"] = old


def status_of(coord):
    """A coordinator's snapshot as ``Pool.status()`` renders it (unit tier)."""
    from nbpool.status import PoolStatus

    return PoolStatus.from_snapshot(coord.snapshot())
