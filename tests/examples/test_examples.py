"""The example notebooks run top to bottom on a plain install, and are committed with
the outputs of such a run (the docs render them)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import extra_jupyter_path

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.ipynb"))


def test_there_are_examples():
    """The examples folder holds the ten narrated notebooks."""
    assert len(EXAMPLES) == 10


#: What each example's outputs must show (in the stored outputs and in a fresh run).
EXPECTED = {
    "01-quickstart": ["step 2 on worker pid", "loaded 3 rows", "[1, 2, 3]", "False"],
    "02-background-and-parallel": [
        "speed-up on 4 workers",
        "['first', 'second']",
        # A headless run shows each --bg cell's output in its handle display (issue 20.4).
        "session='a', job 1: done after",
        "a done",
        "d done",
    ],
    "03-fault-tolerance": [
        "WorkerDied: worker",
        "still here",
        "starts from a fresh state",
        "ExecutionTimeout",
    ],
    "04-data": [
        "[0, 10, 20, 30, 40]",
        "Reading(sensor='b', value=4.0) True",
        "[12, 15, 18, 21]",
        "no_such_variable",
    ],
    "05-other-kernels": ["hello from bash", "42", "and Python"],
    "06-configuration": ["max_executions", "False"],
    "07-map": [
        "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
        "pi is about 3.1",
        "after 2,400,000 darts: pi ~ 3.1",
        "item 3 failed: ZeroDivisionError",
        "etl's total is still 0",
        "hello from left",
        "hello from right",
    ],
    "08-warm-workers": [
        '{"mean": 2.5}',
        "started by fork",
        "started by spawn",
        "per fresh worker",
        "WorkerStartFailed: the preload raised ModuleNotFoundError",
    ],
    "09-sessions-that-outlive-the-kernel": [
        "{'weights': [0.25, 0.5]}",
        "detached while the loop runs: ['training started']",
        "example-09  train    detached",
        "re-adopted: [('train', 'intact')]",
        "model weights: [0.25, 0.5]",
        "epoch 2 done\ntraining finished",
        "no kept sessions",
    ],
    "10-notebook-ui": [
        "loaded 3 rows on the etl session",
        "session='etl', job 2: done after",
        "step 2 of 3",
        "2 (bg)  etl",
        "nbpool: stopped the pool",
    ],
}


def output_text(nb) -> str:
    return "\n".join(
        out.get("text", "") + str(out.get("data", {}).get("text/plain", "")) + out.get("ename", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_committed_notebooks_carry_the_outputs_of_one_whole_run(path):
    """Committed examples hold the outputs of one top-to-bottom run (the docs render
    them): every code cell ran, in order, errors only where a cell is tagged
    ``raises-exception``, and the outputs show what the cells claim.
    ``NBPOOL_STORE_EXAMPLE_OUTPUTS=1`` on the run test below stores them."""
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    for cell in code:
        errors = [out for out in cell.outputs if out.output_type == "error"]
        assert not errors or "raises-exception" in cell.metadata.get("tags", []), cell.source[:60]
    text = output_text(nb)
    for snippet in EXPECTED[path.stem]:
        assert snippet in text, f"{path.name}: expected {snippet!r} in its stored outputs"


# The first one also waits for the plain install (building the wheel included).
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_top_to_bottom_on_a_plain_install(path, plain_install, bash_kernel_installed):
    """Each example executes on ``pip install .`` alone (no extras; 05 also needs the bash
    kernelspec, which it checks for) without an unexpected error, and its cells print what
    they claim."""
    nb = nbformat.read(path, as_version=4)
    metadata = copy.deepcopy(nb.metadata)  # the run names the plain install's kernelspec
    with extra_jupyter_path(plain_install.jupyter_path):
        env = dict(plain_install.env, JUPYTER_PATH=os.environ["JUPYTER_PATH"])
        NotebookClient(
            nb,
            timeout=120,
            kernel_name=plain_install.kernel_name,
            resources={"metadata": {"path": str(path.parent)}},
        ).execute(env=env)
    text = output_text(nb)
    for snippet in EXPECTED[path.stem]:
        assert snippet in text, f"{path.name}: expected {snippet!r} in its outputs"
    if os.environ.get("NBPOOL_STORE_EXAMPLE_OUTPUTS") == "1":
        nb.metadata = metadata
        for cell in nb.cells:
            cell.metadata.pop("execution", None)  # nbclient's timestamps: noise in a diff
        nbformat.write(nb, path)
