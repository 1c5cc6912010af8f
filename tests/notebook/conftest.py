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

import time
from dataclasses import dataclass, field

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import wait_for
from tests.notebook.helpers import Kernel, worker_pids


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


@pytest.fixture
def kernel():
    k = Kernel()
    try:
        yield k
    finally:
        k.shutdown()
        wait_for(lambda: not worker_pids(k.pid), timeout=15, what="the kernel's workers to exit")
