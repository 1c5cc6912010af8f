"""A forked worker kernel seen from the pool: a :class:`subprocess.Popen` look-alike.

The fork server's children are the template's children, not this process's:
their exit codes come from the template (see :mod:`nbpool.fork.server`), and
signals go through a pidfd, which names that process and no later one with
the same pid.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time

#: ``returncode`` of a forked worker that ended after its template died (unknowable).
UNKNOWN_EXIT = 255


class ForkedProcess:
    """A forked kernel process with the part of :class:`subprocess.Popen` kernels use.

    ``returncode`` follows Popen (negative: killed by that signal). The
    template reports it; if the template is gone, the end is seen through a
    pidfd and the code is :data:`UNKNOWN_EXIT`.
    """

    stdin = stdout = stderr = None

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._bound_fd: int | None = None
        self._done = threading.Event()
        self._orphaned = False
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # already ended; the template's report follows
            self._pidfd = None

    def _exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        self._done.set()

    def _orphan(self) -> None:
        """The template died: from now on only the pidfd can tell the end."""
        self._orphaned = True
        self._done.set()  # wake waiters to switch to the pidfd

    def _gone(self, timeout: float) -> bool:
        if self._pidfd is None:
            return True
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def wait_bound(self, timeout: float) -> bool:
        """Wait until the kernel's sockets are bound; False if it died first or on timeout.

        Connecting after the bind saves the client ZMQ's reconnect interval
        (100 ms) that a connect to a not yet bound port costs.
        """
        fd, self._bound_fd = self._bound_fd, None
        if fd is None:
            return False
        try:
            return bool(select.select([fd], [], [], timeout)[0]) and os.read(fd, 1) == b"1"
        finally:
            os.close(fd)

    def poll(self) -> int | None:
        if self.returncode is None and self._orphaned and self._gone(0):
            self._exited(UNKNOWN_EXIT)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            if self._orphaned:
                self._gone(left)
            else:
                self._done.wait(left)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return
        if self._pidfd is None:  # it had ended before we could hold it
            return
        try:
            signal.pidfd_send_signal(self._pidfd, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __del__(self) -> None:
        for name in ("_pidfd", "_bound_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def __repr__(self) -> str:
        return f"<ForkedProcess pid={self.pid} returncode={self.returncode}>"
