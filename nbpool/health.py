"""Heartbeats: is every ready worker still answering?

Used by the coordinator thread alone, which owns these sockets. A kernel's
heartbeat is answered by a ZMQ device outside its interpreter, so it keeps
answering while user code runs (even code holding the GIL) and stops only
when the process is frozen (SIGSTOP), hung in C, or cut off by the network.
"""

from __future__ import annotations

import time

import zmq


class Heartbeats:
    """One REQ socket per ready worker, pinged every ``interval`` seconds.

    Parameters
    ----------
    interval : float
        Seconds between pings.
    timeout : float
        Seconds without any answer after which a worker counts as lost.
    """

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._poller = zmq.Poller()
        # worker id -> [socket, last answer, last ping] (monotonic seconds)
        self._entries: dict[str, list] = {}

    def sync(self, ready: dict) -> None:
        """Match sockets to ``ready`` (worker id -> kernel) and send due pings."""
        for worker_id in list(self._entries):
            if worker_id not in ready:
                self._drop(worker_id)
        now = time.monotonic()
        for worker_id, kernel in ready.items():
            entry = self._entries.get(worker_id)
            if entry is None:
                connect = getattr(kernel, "connect_hb", None)
                if connect is None:  # a kernel without a heartbeat (test doubles)
                    continue
                sock = connect()
                self._poller.register(sock, zmq.POLLIN)
                entry = self._entries[worker_id] = [sock, now, now]
                sock.send(b"ping")
            elif now - entry[2] >= self.interval:
                entry[0].send(b"ping")
                entry[2] = now

    def wait(self, timeout: float) -> bool:
        """Collect answers for up to ``timeout`` seconds; False if nothing to wait on."""
        if not self._entries:
            return False
        for sock, _ in self._poller.poll(timeout * 1000):
            while sock.poll(0):
                sock.recv()
            for entry in self._entries.values():
                if entry[0] is sock:
                    entry[1] = time.monotonic()
        return True

    def lost(self, worker_id: str, now: float) -> str | None:
        """Why ``worker_id`` counts as dead by heartbeat, or None."""
        entry = self._entries.get(worker_id)
        if entry is not None and now - entry[1] > self.timeout:
            return f"stopped answering heartbeats for {now - entry[1]:.1f} s (frozen or unreachable)"
        return None

    def close(self) -> None:
        for worker_id in list(self._entries):
            self._drop(worker_id)

    def _drop(self, worker_id: str) -> None:
        sock = self._entries.pop(worker_id)[0]
        self._poller.unregister(sock)
        sock.close(linger=0)
