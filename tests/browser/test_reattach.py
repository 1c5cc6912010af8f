"""Background output that outlives the tab (issue 20), in JupyterLab and Notebook 7.

A ``%%pool_exec --bg`` cell prints twelve numbered lines on a real worker
while the page is reloaded, closed and opened again; the extension
reattaches on open (the kernel's job record, then its live events) and every
line must land in its own cell exactly once, in order, ending with the
handle line's final state, and be in the saved notebook. Fixtures and
helpers come from ``tests/browser/conftest.py``.
"""

from __future__ import annotations

import re

import pytest

from tests.browser.helpers import (
    cell_text,
    open_notebook,
    run_cell,
    wait_cell_text,
    wait_kernel_idle,
)
from tests.helpers import wait_for

LOAD = "%load_ext nbpool"
LINES = 12


def twelve_lines(marker: str) -> str:
    """A --bg cell: twelve lines, half a second apart, then a marker file."""
    return (
        "%%pool_exec -s bg --bg\n"
        "import time, pathlib\n"
        f"for i in range({LINES}):\n"
        "    print('line', i, flush=True)\n"
        "    time.sleep(0.5)\n"
        f"pathlib.Path({marker!r}).write_text('ended')"
    )


def lines_of(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^line (\d+)$", text, re.M)]


def assert_complete(text: str) -> None:
    """Every line once, in order, and the handle line in its final state."""
    assert lines_of(text) == list(range(LINES)), text
    assert re.search(r"job \d+: done after", text), text


def wait_complete(page, index: int, timeout: float = 60_000) -> None:
    wait_cell_text(page, index, f"line {LINES - 1}", timeout=timeout)
    wait_cell_text(page, index, "done after", timeout=timeout)
    assert_complete(cell_text(page, index))


def saved_outputs(server, name: str, index: int) -> str:
    """The text of cell ``index``'s outputs in the saved file."""
    model = server.api(f"/api/contents/{name}?content=1")
    parts = []
    for output in model["content"]["cells"][index]["outputs"]:
        if output["output_type"] == "stream":
            parts.append("".join(output["text"]))
        elif "text/plain" in output.get("data", {}):
            parts.append("".join(output["data"]["text/plain"]) + "\n")
    return "".join(parts)


def save(page) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")


def url(server, name: str, app: str) -> str:
    return server.page_url(f"/lab/tree/{name}" if app == "lab" else f"/notebooks/{name}")


@pytest.fixture(params=["lab", "notebook"])
def app(request):
    """Each test runs in JupyterLab and in Notebook 7."""
    server = request.getfixturevalue("lab_server" if request.param == "lab" else "notebook7_server")
    page = request.getfixturevalue("lab_page" if request.param == "lab" else "notebook7_page")
    return request.param, server, page


def nbpool_errors(page) -> list[str]:
    return [t for t in page.console_errors if re.search(r"nbpool|comm|reattach", t, re.I)]


def test_reload_during_a_background_cell(app, tmp_path):
    """Reloaded after three lines, the page gets every line back once, in
    order, then the rest live, then the final handle line; saved with it."""
    kind, server, page = app
    name = f"reload-{kind}.ipynb"
    marker = tmp_path / "ended"
    open_notebook(page, server, name, [LOAD, twelve_lines(str(marker))], app=kind)
    run_cell(page, 0)
    run_cell(page, 1)
    wait_cell_text(page, 1, "line 2")
    save(page)  # what an autosave stores must not come back doubled
    page.reload()
    wait_kernel_idle(page, name)
    wait_complete(page, 1)
    save(page)
    page.wait_for_function(
        "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000
    )
    assert_complete(saved_outputs(server, name, 1))
    assert nbpool_errors(page) == []


def test_closed_tab_reopened_after_the_job_ended(app, tmp_path):
    """The tab is closed, the job finishes with no page open, a new page
    opens the notebook: all the lines are in the cell."""
    kind, server, page = app
    name = f"closed-{kind}.ipynb"
    marker = tmp_path / "ended"
    open_notebook(page, server, name, [LOAD, twelve_lines(str(marker))], app=kind)
    run_cell(page, 0)
    run_cell(page, 1)
    wait_cell_text(page, 1, "line 0")
    context = page.context
    page.close()
    wait_for(marker.exists, timeout=60, what="the background job to end with no page open")
    again = context.new_page()
    again.console_errors = []
    again.on("console", lambda m: m.type == "error" and again.console_errors.append(m.text))
    again.goto(url(server, name, kind))
    wait_kernel_idle(again, name)
    wait_complete(again, 1)
    assert nbpool_errors(again) == []


def test_page_open_throughout_sees_each_line_once(app, browser, tmp_path):
    """A page that stays open gets the output live through JupyterLab's own
    routing and never follows its own job, while a second page that opens
    the notebook mid-run reattaches: each shows every line once."""
    kind, server, page = app
    name = f"open-{kind}.ipynb"
    open_notebook(page, server, name, [LOAD, twelve_lines(str(tmp_path / "ended"))], app=kind)
    run_cell(page, 0)
    run_cell(page, 1)
    wait_cell_text(page, 1, "line 2")
    second = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        other = second.new_page()
        other.goto(url(server, name, kind))
        wait_kernel_idle(other, name)
        wait_complete(other, 1)
        wait_complete(page, 1)
    finally:
        second.close()
    assert_complete(cell_text(page, 1))


def test_cell_deleted_while_away(app, tmp_path):
    """A job whose cell was deleted is skipped without an error, and stays
    listed in ``%pool jobs``."""
    kind, server, page = app
    name = f"deleted-{kind}.ipynb"
    marker = tmp_path / "ended"
    open_notebook(page, server, name, [LOAD, twelve_lines(str(marker)), "1 + 1"], app=kind)
    run_cell(page, 0)
    run_cell(page, 1)
    wait_cell_text(page, 1, "line 0")
    page.evaluate(
        """() => {
            const app = window.jupyterapp;
            app.shell.currentWidget.content.activeCellIndex = 1;
            return app.commands.execute('notebook:delete-cell');
        }"""
    )
    save(page)
    page.wait_for_function(
        "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000
    )
    page.reload()
    wait_kernel_idle(page, name)
    wait_for(marker.exists, timeout=60, what="the background job to end")
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.widgets.length === 2"
    )
    listed = run_and_read(page, 1, "%pool jobs")
    assert re.search(r"\bbg\b", listed) and "done" in listed, listed
    page.evaluate("() => window.jupyterapp.commands.execute('nbpool:open-panel')")
    page.locator("#nbpool-panel .jp-nbpool-job", has_text="cell not in this notebook").wait_for()
    assert "line" not in cell_text(page, 0)
    assert nbpool_errors(page) == []


def run_and_read(page, index: int, code: str) -> str:
    """Put ``code`` in cell ``index``, run it, return its output text."""
    page.evaluate(
        """([index, code]) => window.jupyterapp.shell.currentWidget.content.widgets[index]
            .model.sharedModel.setSource(code)""",
        [index, code],
    )
    run_cell(page, index)
    return cell_text(page, index)
