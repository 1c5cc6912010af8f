"""The magics' arguments: shared groups, the ``%pool`` action table, one source of help.

Parsing only (no shell, no pool): what the magics do with real kernels is in
``tests/notebook``.
"""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring

from nbpool.notebook import magics
from nbpool.notebook.magics import PoolMagics

MAGICS = ("pool", "pool_exec", "pool_push", "pool_pull")


def test_an_unknown_action_is_a_usage_error_listing_every_action():
    """``%pool frobnicate`` fails in one line naming the actions of the table."""
    with pytest.raises(UsageError) as info:
        parse_argstring(PoolMagics.pool, "frobnicate")
    message = str(info.value)
    assert "invalid choice: 'frobnicate'" in message and "\n" not in message
    assert message.endswith("(choose from " + ", ".join(map(repr, PoolMagics.ACTIONS)) + ")")


def test_every_action_has_its_handler_and_its_line_of_help():
    """Each action of the table runs a method of the magics, and ``%pool?``
    lists it with the first line of that method's docstring."""
    help_text = PoolMagics.pool.__doc__
    for action, handler in PoolMagics.ACTIONS.items():
        assert getattr(PoolMagics, handler.__name__) is handler
        usage = (
            f"{action} {PoolMagics.ARGUMENTS[action]}" if action in PoolMagics.ARGUMENTS else action
        )
        line = next(ln for ln in help_text.splitlines() if ln.strip().startswith(usage + " "))
        assert line.split(None, len(usage.split()))[-1] == handler.__doc__.splitlines()[0]


def test_the_session_option_is_one_declaration():
    """-s/--session reads the same in every magic that takes a session."""
    blocks = set()
    for name in ("pool_exec", "pool_push", "pool_pull"):
        lines = getattr(PoolMagics, name).__doc__.splitlines()
        start = lines.index("  -s SESSION, --session SESSION")
        rest = range(start + 1, len(lines))
        end = next((i for i in rest if not lines[i].startswith(" " * 4)), len(lines))
        blocks.add(tuple(lines[start:end]))
    assert len(blocks) == 1, blocks


@pytest.mark.parametrize("line", ["-o 'not a name'", "--all -o 'not a name'", "-o 1x --bg"])
def test_output_name_is_checked_while_parsing(line):
    """-o NAME must be an identifier, with or without --all: one UsageError line."""
    with pytest.raises(UsageError, match=r"^argument -o/--output: needs a variable name, got "):
        parse_argstring(PoolMagics.pool_exec, line)


def test_a_valid_output_name_and_session_parse():
    args = parse_argstring(PoolMagics.pool_exec, "-s 'a b' -o job --bg -t 2")
    assert (args.session, args.output, args.bg, args.timeout) == ("'a b'", "job", True, 2.0)
    assert magics._session(args.session) == "a b"


def test_the_module_help_is_the_magics_own_help():
    """The module docstring holds each magic's help, usage line included."""
    for name in MAGICS:
        assert getattr(PoolMagics, name).__doc__.strip() in magics.__doc__
    assert "%%pool_exec [-s SESSION]" in magics.__doc__


@pytest.mark.parametrize("magic", MAGICS)
def test_an_unclosed_quote_is_a_one_line_usage_error(magic):
    """``-s 'x`` (a quote never closed) is a UsageError of one line, not shlex's ValueError."""
    with pytest.raises(UsageError) as info:
        magics.parse_argstring(getattr(PoolMagics, magic), "-s 'x")
    assert "No closing quotation" in str(info.value) and "\n" not in str(info.value)
