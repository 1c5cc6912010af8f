"""A kept session's kernel, re-adopted by a later pool (:class:`KeptKernel`)."""

from __future__ import annotations

import signal
import threading

import zmq
from jupyter_client.blocking import BlockingKernelClient

from ..kernels.kernel import Kernel
from ..kernels.processes import kill_group
from .store import alive


class KeptKernel(Kernel):
    """A kept session's kernel that an earlier pool (maybe another process) started.

    nbpool owns it as it owns a :class:`LocalKernel`: ending the session or
    shutting the pool down stops it (its process group, after the start
    time proved the pid is still that kernel). It is not this process's
    child, so death is seen by pid and start time, and the heartbeat.
    """

    def __init__(self, worker_id: str, record: dict, context: zmq.Context) -> None:
        client = BlockingKernelClient(context=context)
        client.load_connection_info(record["connection"])
        super().__init__(worker_id, client, record["kernel_name"])
        self.pid = record["pid"]
        self.started = record.get("started", "spawn")
        self._record = record
        self._control = client.connect_control()
        self._interrupt_lock = threading.Lock()

    def _not_ready(self, timeout: float) -> str:
        return f"kept kernel (pid {self.pid}) did not answer within {timeout:g} s"

    def _asked_socket(self) -> zmq.Socket:
        # The control channel: it answers while a cell an earlier pool started
        # still runs (its shell is busy until then).
        return self._control

    def poll(self) -> str | None:
        return None if alive(self._record) else f"is gone (pid {self.pid})"

    def keep_record(self) -> dict:
        return {**self._record, "client": self.channels.session.session}

    def keep(self) -> None:
        pass  # no reaper of this process ever watched it

    def interrupt(self) -> None:
        with self._interrupt_lock:
            if self._record.get("interrupt_mode", "signal") == "signal":
                kill_group(self.pid, signal.SIGINT)
            else:
                self.channels.session.send(self._control, "interrupt_request", {})

    def let_go(self) -> None:
        super().let_go()
        with self._interrupt_lock:
            self._control.close(linger=0)

    def shutdown(self, now: bool = False, close_channels: bool = True) -> None:
        if close_channels:
            self.channels.close()
        with self._interrupt_lock:
            self._control.close(linger=0)
        if self.poll() is None:
            kill_group(self.pid)
