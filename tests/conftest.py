"""Shared test helpers: waiting on conditions with deadlines (never plain sleeps)."""

from __future__ import annotations

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
