"""Which completion requests go to a session's worker, and how its answer's positions move.

Pure functions of the cell's code (the routing itself is proven against real
kernels in tests/notebook/test_completion.py); the magic line is read by the
magic's own parser (:func:`nbpool.notebook.magics.cell_session`).
"""

from __future__ import annotations

import pytest

from nbpool.checks import DEFAULT_SESSION
from nbpool.notebook.completion import Target, moved_completions, target
from nbpool.notebook.magics import cell_session


def where(code: str, cursor_pos: int | None = None) -> Target | None:
    return target(code, len(code) if cursor_pos is None else cursor_pos, cell_session)


@pytest.mark.parametrize(
    "line, session",
    [
        ("%%pool_exec -s etl", "etl"),
        ("%%pool_exec --session=etl --bg -t 5", "etl"),
        ("%%pool_exec -s 'a b'", "a b"),  # quotes stripped as the magic strips them
        ("%%pool_exec", DEFAULT_SESSION),
        ("%%pool_exec --bg", DEFAULT_SESSION),
    ],
)
def test_the_magic_line_names_the_session(line, session):
    """-s NAME (or the default session without it) is where the body's requests go."""
    code = f"{line}\nx"
    assert where(code) == Target(session, len(line) + 1)


@pytest.mark.parametrize(
    "code",
    [
        "x = 1\nx",  # no magic
        "%%pool_execute -s etl\nx",  # another name
        "%pool_exec -s etl\nx",  # a line magic
        "%%pool_exec --all\nx",  # no single session
        "%%pool_exec -s a,b --all\nx",
        "%%pool_exec -t soon\nx",  # the magic would refuse it
        "%%pool_exec -s 'unbalanced\nx",
        "%%pool_exec -s ''\nx",  # an empty session name
        "%%pool_exec -s etl",  # the magic line only
        "x\n%%pool_exec -s etl\nx",  # not the first line
    ],
)
def test_other_cells_keep_the_notebook_kernels_answer(code):
    assert where(code) is None


def test_a_cursor_on_the_magic_line_is_the_notebook_kernels():
    code = "%%pool_exec -s etl\nx"
    assert where(code, code.index("\n")) is None
    assert where(code, code.index("\n") + 1) == Target("etl", code.index("\n") + 1)


def test_leading_blank_lines_are_skipped_as_ipython_does():
    code = "\n  \n%%pool_exec -s etl\nx"
    assert where(code) == Target("etl", len(code) - 1)
    assert where(code, 1) is None


def test_positions_move_back_into_the_cell_metadata_included():
    reply = {
        "status": "ok",
        "matches": ["value"],
        "cursor_start": 2,
        "cursor_end": 4,
        "metadata": {
            "_jupyter_types_experimental": [
                {"start": 2, "end": 4, "text": "value", "type": "instance", "signature": ""}
            ],
            "other": {"start": 1},
        },
    }
    moved = moved_completions(reply, 10)
    assert (moved["cursor_start"], moved["cursor_end"]) == (12, 14)
    assert moved["metadata"] == {
        "_jupyter_types_experimental": [
            {"start": 12, "end": 14, "text": "value", "type": "instance", "signature": ""}
        ],
        "other": {"start": 1},  # not ours to interpret
    }
    assert reply["cursor_start"] == 2  # the worker's reply is not modified
    assert reply["metadata"]["_jupyter_types_experimental"][0]["start"] == 2
