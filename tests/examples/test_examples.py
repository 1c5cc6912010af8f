"""The example notebooks run top to bottom through a real kernel, and ship clean."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.ipynb"))


def test_there_are_examples():
    """The examples folder holds the six narrated notebooks."""
    assert len(EXAMPLES) == 6


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_committed_notebooks_carry_no_outputs(path):
    """Committed examples have no stale outputs or execution counts."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_top_to_bottom(path, bash_kernel_installed):
    """Each example executes without an unexpected error, and its cells print what they claim."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    text = "\n".join(
        out.get("text", "") + str(out.get("data", {}).get("text/plain", "")) + out.get("ename", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    expected = {
        "01-quickstart": ["step 2 on worker pid", "loaded 3 rows", "[1, 2, 3]", "False"],
        "02-background-and-parallel": ["speed-up on 4 workers", "['first', 'second']"],
        "03-fault-tolerance": [
            "WorkerDied: worker",
            "still here",
            "starts from a fresh state",
            "ExecutionTimeout",
        ],
        "04-data": ["[0, 10, 20, 30, 40]", "[12, 15, 18, 21]", "no_such_variable"],
        "05-other-kernels": ["hello from bash", "42", "and Python"],
        "06-configuration": ["max_executions", "False"],
    }[path.stem]
    for snippet in expected:
        assert snippet in text, f"{path.name}: expected {snippet!r} in its outputs"
