"""The main job: `python -m nbpool demo` and the headless notebook runner work."""

from __future__ import annotations

import subprocess
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_notebook


def test_demo_shows_parallelism_timeouts_and_crash_recovery():
    """The demo runs on local kernels with no configuration and prints what happened."""
    out = subprocess.run(
        [sys.executable, "-m", "nbpool", "demo", "-n", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for line in (
        "worker kernels ready",
        "speed-up",
        "ExecutionTimeout:",
        "WorkerDied:",
        "etl untouched: [1, 2, 3, 4]",
        "nothing left running",
    ):
        assert line in out.stdout


def test_headless_notebook_runner_prints_cells_and_fails_on_errors(tmp_path):
    """`python -m nbpool notebook` prints outputs and exits 1 at a cell error."""
    path = tmp_path / "nb.ipynb"
    nbformat.write(
        new_notebook(cells=[new_code_cell("print('hello')"), new_code_cell("1/0")]), path
    )
    out = subprocess.run(
        [sys.executable, "-m", "nbpool", "notebook", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "In [1]: print('hello')\n  hello" in out.stdout
    assert "ZeroDivisionError" in out.stderr
