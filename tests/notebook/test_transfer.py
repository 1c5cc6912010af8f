"""``%pool_push`` / ``%pool_pull`` in a real notebook kernel."""

from __future__ import annotations

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
