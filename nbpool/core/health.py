"""Heartbeats: is every ready worker still answering?

Used by the coordinator thread alone, which owns these sockets. A kernel's
heartbeat is answered by a ZMQ device outside its interpreter, so it keeps
answering while user code runs (even code holding the GIL) and stops only
when the process is frozen (SIGSTOP) or cut off by the network.
"""

from __future__ import annotations

import time

import zmq


class Heartbeats:
    """One REQ socket per ready worker, pinged every ``interval`` seconds.

    A worker counts as lost when no echo came for ``timeout`` seconds *and*
    a ping has stayed unanswered for a while as seen by this thread's own
    reads. The second condition keeps the verdict on the kernel, not on how
    long this thread was kept from running: a notebook holding the GIL for
    seconds must not get healthy workers killed.

    Parameters
    ----------
    interval : float
        Seconds between pings.
    timeout : float
        Seconds a ping may stay unanswered before its worker counts as lost.
    """

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._poller = zmq.Poller()
        # worker id -> [socket, last ping, oldest unanswered ping or None, last echo]
        self._entries: dict[str, list] = {}
        self._last_read = 0.0

    def sync(self, ready: dict) -> None:
        """Open and close sockets to match ``ready`` (worker id -> kernel)."""
        for worker_id in list(self._entries):
            if worker_id not in ready:
                self._drop(worker_id)
        for worker_id, kernel in ready.items():
            if worker_id not in self._entries:
                sock = kernel.connect_hb()
                if sock is None:  # a kernel with no heartbeat: its poll() is its health
                    continue
                self._poller.register(sock, zmq.POLLIN)
                self._entries[worker_id] = [sock, 0.0, None, time.monotonic()]

    def wait(self, timeout: float) -> bool:
        """Read answers for up to ``timeout`` seconds, then send due pings.

        Returns False if there is nothing to wait on.
        """
        if not self._entries:
            return False
        for sock, _ in self._poller.poll(timeout * 1000):
            while sock.poll(0):
                sock.recv()
            for entry in self._entries.values():
                if entry[0] is sock:  # any echo proves the kernel alive
                    entry[2], entry[3] = None, time.monotonic()
        now = self._last_read = time.monotonic()
        for entry in self._entries.values():
            if now - entry[1] >= self.interval:
                entry[0].send(b"ping")
                entry[1] = now
                if entry[2] is None:
                    entry[2] = now
        return True

    def lost(self, worker_id: str, now: float) -> str | None:
        """Why ``worker_id`` counts as dead by heartbeat, or None."""
        entry = self._entries.get(worker_id)
        if entry is None or entry[2] is None:
            return None
        silent = self._last_read - entry[3]
        waited = self._last_read - entry[2]  # a healthy kernel echoes in milliseconds
        if silent > self.timeout and waited >= min(1.0, self.timeout / 2):
            return f"stopped answering heartbeats for {silent:.1f} s (frozen or unreachable)"
        return None

    def close(self) -> None:
        for worker_id in list(self._entries):
            self._drop(worker_id)

    def _drop(self, worker_id: str) -> None:
        sock = self._entries.pop(worker_id)[0]
        self._poller.unregister(sock)
        sock.close(linger=0)
