"""Shared test helpers: waiting on conditions with deadlines (never plain sleeps),
finding processes, and private kernelspec directories."""

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
