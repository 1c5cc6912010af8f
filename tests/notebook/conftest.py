"""Notebook tests: small notebooks built with nbformat, run by nbclient on a real kernel.

Fixtures
--------
run_notebook(cells, allow_errors=False, timeout=60) -> Run
    Builds a notebook of code cells, executes it with
    :class:`nbclient.NotebookClient` on the ``python3`` kernelspec (the venv's
    own Python, so ``%load_ext nbpool`` imports this checkout), records every
    iopub message with its arrival time, and checks after the kernel ended
    that none of its worker kernels outlived it.
kernel
    A notebook kernel driven directly through jupyter_client, for what
    nbclient cannot do: answer ``input()`` and interrupt a running cell.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from tests.conftest import pids_with, wait_for


def worker_pids(kernel_pid: int) -> list[int]:
    """Pids of the worker kernels a notebook kernel started (found by their runtime dir)."""
    return pids_with(f"nbpool-{kernel_pid}-".encode())


@dataclass
class Run:
    """An executed notebook and the iopub messages seen while it ran."""

    nb: nbformat.NotebookNode
    kernel_pid: int
    messages: list[tuple[float, int, dict]] = field(default_factory=list)
    error: Exception | None = None

    def outputs(self, index: int) -> list[dict]:
        return self.nb.cells[index].outputs

    def text(self, index: int, name: str = "stdout") -> str:
        return "".join(
            o["text"]
            for o in self.outputs(index)
            if o["output_type"] == "stream" and o["name"] == name
        )


class _RecordingClient(NotebookClient):
    def __init__(self, nb, run: Run, **kwargs) -> None:
        super().__init__(nb, **kwargs)
        self._run = run

    def process_message(self, msg, cell, cell_index):
        self._run.messages.append((time.monotonic(), cell_index, msg))
        return super().process_message(msg, cell, cell_index)


@pytest.fixture
def run_notebook():
    def run(cells: list[str], *, allow_errors: bool = False, timeout: int = 60) -> Run:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
        result = Run(nb, kernel_pid=0)
        client = _RecordingClient(
            nb,
            result,
            kernel_name="python3",
            timeout=timeout,
            allow_errors=allow_errors,
            store_widget_state=True,
        )

        def started(notebook) -> None:
            result.kernel_pid = client.km.provisioner.pid

        client.on_notebook_start = started
        try:
            client.execute()
        except Exception as exc:  # CellExecutionError: the test inspects it
            result.error = exc
        assert result.kernel_pid, "the notebook kernel never started"
        wait_for(
            lambda: not worker_pids(result.kernel_pid),
            timeout=15,
            what="the notebook kernel's workers to exit with it",
        )
        return result

    return run


class Kernel:
    """One notebook kernel and a blocking client of it."""

    def __init__(self) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel()
        self.pid = self.km.provisioner.pid
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        #: Every iopub message seen by execute() and drain(), with its arrival time.
        self.iopub: list[tuple[float, dict]] = []

    def _next_iopub(self, timeout: float) -> dict | None:
        try:
            msg = self.kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            return None
        self.iopub.append((time.monotonic(), msg))
        return msg

    def drain(self, seconds: float) -> None:
        """Record iopub traffic for ``seconds`` while no cell runs."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._next_iopub(max(0.0, min(0.05, deadline - time.monotonic())))

    def execute(
        self, code: str, *, stdin=None, during=None, timeout: float = 60, cell_id: str | None = None
    ) -> dict:
        """Run ``code``; collect its outputs until idle; return reply and outputs.

        ``stdin(prompt)`` answers input requests; ``during(outputs)`` is called
        as outputs arrive (it may, e.g., interrupt the kernel). ``cell_id`` is
        sent as ``metadata.cellId``, as JupyterLab and VS Code do.
        """
        msg_id = self.send_execute(code, allow_stdin=stdin is not None, cell_id=cell_id)
        outputs: list[dict] = []
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            assert time.monotonic() < deadline, f"no idle within {timeout} s for {code!r}"
            if stdin is not None:
                try:
                    req = self.kc.get_stdin_msg(timeout=0.01)
                except queue.Empty:
                    pass
                else:
                    self.kc.input(stdin(req["content"]["prompt"]))
            msg = self._next_iopub(0.05)
            if msg is None or msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
            elif kind in ("stream", "display_data", "execute_result", "error"):
                outputs.append(dict(msg["content"], output_type=kind))
                if during is not None:
                    during(outputs)
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        return {"reply": reply["content"], "outputs": outputs, "msg_id": msg_id}

    def send_execute(self, code: str, *, allow_stdin: bool = False, cell_id=None) -> str:
        """Send an ``execute_request`` as a frontend does; return its msg_id."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": allow_stdin,
            "stop_on_error": True,
        }
        metadata = {"cellId": cell_id} if cell_id is not None else {}
        msg = self.kc.session.msg("execute_request", content, metadata=metadata)
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


@pytest.fixture
def kernel():
    k = Kernel()
    try:
        yield k
    finally:
        k.shutdown()
        wait_for(lambda: not worker_pids(k.pid), timeout=15, what="the kernel's workers to exit")
