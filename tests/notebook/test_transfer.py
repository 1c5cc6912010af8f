"""``%pool_push`` / ``%pool_pull`` in a real notebook kernel."""

from __future__ import annotations

import json
import re
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import extra_jupyter_path

LOAD = "%load_ext nbpool\n%config Pool.size = 1"


def test_push_and_pull_round_trip(run_notebook):
    """Data, notebook-defined functions, lambdas and classes move both ways by name."""
    run = run_notebook(
        [
            LOAD,
            "data = {'rows': [1, 2, 3], 'name': 'x'}\n"
            "double = lambda v: v * 2\n"
            "def total(rows):\n    return sum(rows)\n"
            "class Point:\n    def __init__(self, x): self.x = x\n"
            "p = Point(5)\n"
            "%pool_push data double total Point p -s s",
            "%%pool_exec -s s\n"
            "result = {'total': total(data['rows']), 'doubled': double(p.x), 'q': Point(7).x}",
            "%pool_pull result -s s\nprint(result)",
            "%%pool_exec -s s\nmade_there = lambda: 'remote lambda'",
            "%pool_pull made_there -s s\nprint(made_there())",
        ]
    )
    assert run.error is None, run.error
    assert run.text(3) == "{'total': 6, 'doubled': 10, 'q': 7}\n"
    assert run.text(5) == "remote lambda\n"
    assert all(run.outputs(i) == [] for i in (1, 2))  # transfers print nothing


def test_transfers_do_not_leak_into_the_session(run_notebook):
    """A push defines only the pushed names on the worker, and the payload is not kept in its history."""
    run = run_notebook(
        [
            LOAD,
            "blob = 'x' * 100_000\n%pool_push blob",
            "%%pool_exec\nprint(sorted(k for k in globals() if not k.startswith('_') "
            "and k not in ('In', 'Out', 'get_ipython', 'exit', 'quit', 'open')))\n"
            "print(max(len(c) for c in In) < 10_000)",
        ]
    )
    assert run.error is None, run.error
    assert run.text(2) == "['blob']\nTrue\n"


def test_a_name_that_cannot_move_is_named_in_one_line(run_notebook):
    """Missing or unpicklable names give a one-line UsageError naming them, each way."""
    run = run_notebook(
        [
            LOAD,
            "%pool_push not_defined",
            "gen = (i for i in range(3))\n%pool_push gen",
            "%pool_pull also_missing",
            "%%pool_exec\nimport threading\nlock = threading.Lock()",
            "%pool_pull lock",
        ],
        allow_errors=True,
    )
    expected = {
        1: "UsageError: cannot push 'not_defined': it is not defined in the notebook\n",
        2: "UsageError: cannot push 'gen': TypeError: cannot pickle 'generator' object\n",
        3: "UsageError: cannot pull from session 'default': name 'also_missing' is not defined\n",
        5: "UsageError: cannot pull from session 'default': 'lock' cannot be pickled: "
        "TypeError: cannot pickle '_thread.lock' object\n",
    }
    for index, text in expected.items():
        assert run.text(index, "stderr") == text


@pytest.fixture
def kernel_without_cloudpickle(tmp_path):
    """Kernelspec ``python-no-cloudpickle``: ipykernel on a Python that cannot import cloudpickle.

    Made in a tenth of a second rather than as a venv with ipykernel installed
    (a venv with ``--system-site-packages`` would not do: the base Python of
    this kind of machine has cloudpickle itself). The kernel runs this venv's
    Python with ``-S`` (no site-packages at all) and a PYTHONPATH of one
    directory that links every entry of this venv's site-packages except
    cloudpickle's. cloudpickle is then not on ``sys.path`` at all, as in an
    environment where it was never installed: nothing patches the import.
    """
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp_path / "site-packages-without-cloudpickle"
    farm.mkdir()
    for entry in site.iterdir():
        if not re.match(r"cloudpickle\b", entry.name):
            (farm / entry.name).symlink_to(entry)
    spec_dir = tmp_path / "kernels" / "python-no-cloudpickle"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-S", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python without cloudpickle",
        "language": "python",
        "env": {"PYTHONPATH": str(farm)},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with extra_jupyter_path(tmp_path):
        yield "python-no-cloudpickle"


def test_a_worker_without_cloudpickle_says_what_to_install_there(
    run_notebook, kernel_without_cloudpickle
):
    """Data moves to and from a worker whose Python lacks cloudpickle; what needs it fails in
    one line naming that Python and what to install there (never a function loaded by name)."""
    fix = (
        f"the worker's Python ({sys.executable}) has none; "
        "pip install cloudpickle in that environment"
    )
    run = run_notebook(
        [
            LOAD + "\n%config Pool.max_size = 2",
            f"%%pool_exec -s bare --kernel {kernel_without_cloudpickle}\n"
            "try:\n    import cloudpickle\nexcept ImportError as exc:\n    print('no', exc.name)\n"
            "rows = [1, 2]\nmade_there = lambda: 1\nclass Here:\n    pass\nh = Here()",
            "config = {'k': 1}\ndef scale(v):\n    return v * 2\n%pool_push config -s bare",
            "%pool_push scale -s bare",
            "%pool_pull rows -s bare\nprint(rows)",
            "%pool_pull made_there -s bare",
            "%pool_pull h -s bare",
            "%%pool_exec -s bare\nprint(config, 'scale' in globals())",
        ],
        allow_errors=True,
    )
    assert run.text(1) == "no cloudpickle\n"
    assert run.outputs(2) == []
    assert run.text(3, "stderr") == (
        f"UsageError: cannot push to session 'bare': loading 'scale' needs cloudpickle, and {fix}\n"
    )
    assert run.text(4) == "[1, 2]\n"
    assert run.text(5, "stderr") == (
        "UsageError: cannot pull from session 'bare': 'made_there' holds <lambda>, defined in "
        f"the session: moving it needs cloudpickle, and {fix}\n"
    )
    assert run.text(6, "stderr") == (
        "UsageError: cannot pull from session 'bare': 'h' holds Here, defined in "
        f"the session: moving it needs cloudpickle, and {fix}\n"
    )
    assert run.text(7) == "{'k': 1} False\n"
