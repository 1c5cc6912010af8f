"""Data-parallel work in a real notebook kernel: ``%%pool_exec --all`` and map's progress bar."""

from __future__ import annotations

import re

LOAD = "%load_ext nbpool\n%config Pool.size = 2"


def _labels_and_text(outputs) -> list[str]:
    shown = []
    for o in outputs:
        if o["output_type"] == "stream":
            shown.append(o["text"])
        elif o["output_type"] == "display_data":  # the label, without its worker id
            shown.append(re.sub(r" on w\d+\]$", "]", o["data"]["text/plain"]))
        elif o["output_type"] == "error":
            shown.append(f"{o['ename']}: {o['evalue']}")
    return shown


def test_pool_exec_all_runs_on_every_session_one_block_each(run_notebook):
    """--all runs the cell on both sessions, one labelled block per session in name order;
    -s b,a picks and orders them; a failing session fails the cell after the others
    finished, naming it."""
    run = run_notebook(
        [
            LOAD,
            "%%pool_exec -s b\nx = 'B'",
            "%%pool_exec -s a\nx = 'A'",
            "%%pool_exec --all\nimport time\ntime.sleep(0.2 if x == 'A' else 0)\nprint('x is', x)",
            "%%pool_exec --all -s b,a\nprint(x)",
            "%%pool_exec --all\nif x == 'A':\n    raise ValueError('bad ' + x)\nprint('fine', x)",
            "print('not reached')",
        ],
        allow_errors=True,
    )
    assert _labels_and_text(run.outputs(3)) == [
        "[session 'a']",
        "x is A\n",
        "[session 'b']",
        "x is B\n",
    ]
    assert _labels_and_text(run.outputs(4)) == [
        "[session 'b']",
        "B\n",
        "[session 'a']",
        "A\n",
    ]
    shown = _labels_and_text(run.outputs(5))
    assert shown[:2] == ["[session 'a']", "ValueError: bad A"]
    assert shown[2:4] == ["[session 'b']", "fine B\n"]
    assert shown[-1].startswith("SessionsFailed: 1 of 2 sessions failed (a: ValueError: bad A)")


def test_map_shows_a_progress_bar_in_the_notebook(run_notebook):
    """pool.map in a notebook shows an ipywidgets bar whose saved state says all items done."""
    run = run_notebook(
        [
            LOAD,
            "import nbpool\npool = nbpool.Pool(size=2).start()\n"
            "squares = pool.map(lambda x: x * x, range(300), chunksize=10)\nprint(sum(squares))",
            "pool.shutdown()",
        ]
    )
    assert run.error is None, run.error
    assert run.text(1) == f"{sum(x * x for x in range(300))}\n"
    state = run.nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [m["state"] for m in state.values() if m["model_name"] == "IntProgressModel"]
    assert len(bars) == 1 and bars[0]["value"] == bars[0]["max"] == 300
    assert bars[0]["bar_style"] == "success"
    labels = [m["state"]["value"] for m in state.values() if m["model_name"] == "HTMLModel"]
    assert any(label.startswith("300/300 items") for label in labels), labels
