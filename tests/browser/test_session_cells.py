"""Cells on a session from the notebook UI (issue 19), in JupyterLab and Notebook 7.

The extension's commands ``nbpool:run-on-session`` / ``nbpool:unbind-cell``
write and remove a cell's first line ``%%pool_exec -s NAME [--bg]``; the
cells then run on real worker kernels of a real pool in the notebook's
kernel. Badges on the cells follow the kernel's per-cell job states. What
ran where is checked from the processes' PIDs and the saved notebook file.
Fixtures and helpers come from ``tests/browser/conftest.py``.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager

from tests.browser.helpers import (
    cell_text,
    open_notebook,
    run_cell,
    screenshot,
    wait_cell_text,
    wait_kernel_idle,
)

#: A cell that prints the PID of the process it runs in.
PID = "import os\nprint('pid', os.getpid())"


def run_command(page, command: str, args: dict | None = None, index: int | None = None) -> None:
    """Run ``command`` (awaiting its promise) with cell ``index`` active."""
    page.evaluate(
        """async ([command, args, index]) => {
            const app = window.jupyterapp;
            if (index !== null) {
                app.shell.currentWidget.content.activeCellIndex = index;
            }
            await app.commands.execute(command, args);
        }""",
        [command, args or {}, index],
    )


def source(page, index: int) -> str:
    return page.evaluate(
        "(i) => window.jupyterapp.shell.currentWidget.content.widgets[i]"
        ".model.sharedModel.getSource()",
        index,
    )


def pid_of(page, index: int) -> int:
    match = re.search(r"pid (\d+)", cell_text(page, index))
    assert match, f"cell {index} printed no pid: {cell_text(page, index)!r}"
    return int(match.group(1))


def badge(page, index: int) -> dict | None:
    """The badge of cell ``index``: its state, session and text, or None."""
    return page.evaluate(
        """(i) => {
            const node = window.jupyterapp.shell.currentWidget.content.widgets[i]
                .node.querySelector(':scope > .jp-nbpool-badge');
            return node && {state: node.dataset.state, session: node.dataset.session,
                            text: node.innerText};
        }""",
        index,
    )


def wait_badge(page, index: int, state: str, timeout: float = 30_000) -> dict:
    """Wait until cell ``index``'s badge is in ``state``; the badge."""
    page.wait_for_function(
        """([i, state]) => {
            const node = window.jupyterapp.shell.currentWidget.content.widgets[i]
                .node.querySelector(':scope > .jp-nbpool-badge');
            return !!node && node.dataset.state === state;
        }""",
        arg=[index, state],
        timeout=timeout,
    )
    return badge(page, index)


def saved_sources(server, name: str) -> list[str]:
    """The cell sources of the notebook file as the server has it."""
    model = server.api(f"/api/contents/{name}?content=1")
    return ["".join(cell["source"]) for cell in model["content"]["cells"]]


def save(page) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")


def test_run_on_session_binds_runs_on_a_worker_and_is_saved(lab_page, lab_server):
    """``nbpool:run-on-session {session: 'x'}`` loads nbpool (the notebook
    never did), writes the first line and runs the cell on a worker; a
    second cell on ``x`` sees the first's variables; the ordinary run
    command runs a bound cell on its session again; the binding is in the
    saved file; ``nbpool:unbind-cell`` removes only the line."""
    page = lab_page
    body = "x = 41\n" + PID
    open_notebook(page, lab_server, "bind.ipynb", [PID, body, "print('x is', x + 1)"])
    assert page.evaluate("() => window.jupyterapp.commands.hasCommand('nbpool:run-on-session')"), (
        "the extension under test is not the one loaded"
    )
    run_cell(page, 0)
    local = pid_of(page, 0)

    run_command(page, "nbpool:run-on-session", {"session": "x"}, index=1)
    assert source(page, 1) == "%%pool_exec -s x\n" + body
    wait_cell_text(page, 1, "pid ")
    worker = pid_of(page, 1)
    assert worker != local
    assert badge(page, 1)["session"] == "x"

    run_command(page, "nbpool:run-on-session", {"session": "x"}, index=2)
    wait_cell_text(page, 2, "x is 42")

    run_cell(page, 1)  # notebook:run-cell: the line sends it to x again
    wait_cell_text(page, 1, "pid ")
    assert pid_of(page, 1) == worker

    save(page)
    saved = saved_sources(lab_server, "bind.ipynb")
    assert saved[1].startswith("%%pool_exec -s x\nx = 41")
    assert saved[2] == "%%pool_exec -s x\nprint('x is', x + 1)"

    # The panel lists the jobs, each with a link to its cell.
    page.evaluate(
        """() => {
            const app = window.jupyterapp;
            app.shell.currentWidget.content.activeCellIndex = 0;
            return app.commands.execute('nbpool:open-panel');
        }"""
    )
    page.locator("#nbpool-panel .jp-nbpool-job[data-job='1'] .jp-nbpool-job-show").click()
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.activeCellIndex === 1"
    )

    run_command(page, "nbpool:unbind-cell", index=2)
    assert source(page, 2) == "print('x is', x + 1)"
    page.wait_for_function(
        "() => !window.jupyterapp.shell.currentWidget.content.widgets[2]"
        ".node.querySelector('.jp-nbpool-badge')"
    )
    assert source(page, 1) == "%%pool_exec -s x\n" + body, "only the active cell is unbound"
    screenshot(page, "session-cells-bound")


def test_session_name_with_spaces_is_quoted(lab_page, lab_server):
    """A session name with a space is written quoted and reaches the kernel
    as that one name; re-binding replaces the line, it never stacks two."""
    page = lab_page
    open_notebook(page, lab_server, "quoted.ipynb", [PID])
    run_command(page, "nbpool:run-on-session", {"session": " my etl "}, index=0)
    assert source(page, 0) == "%%pool_exec -s 'my etl'\n" + PID
    wait_cell_text(page, 0, "pid ")
    run_command(page, "nbpool:run-on-session", {"session": "b", "background": True}, index=0)
    assert source(page, 0) == "%%pool_exec -s b --bg\n" + PID
    wait_cell_text(page, 0, "pid ")
    page.evaluate("() => window.jupyterapp.commands.execute('nbpool:open-panel')")
    page.locator("#nbpool-panel .jp-nbpool-session[data-session='my etl']").wait_for()
    page.locator("#nbpool-panel .jp-nbpool-session[data-session='b']").wait_for()


def test_background_returns_at_once_and_badge_goes_running_then_done(lab_page, lab_server):
    """``{background: true}`` returns at once; the next cell runs while the
    background cell does; the badges show the session, running, queued with
    its place, then done with the duration."""
    page = lab_page
    slow = "import time\nprint('begin')\ntime.sleep(6)\nprint('slept')"
    cells = [slow, "print('second')", "print('next', 6 * 7)", "print('on etl')"]
    open_notebook(page, lab_server, "bg.ipynb", cells)
    started = time.monotonic()
    run_command(page, "nbpool:run-on-session", {"session": "bg", "background": True}, index=0)
    assert source(page, 0).startswith("%%pool_exec -s bg --bg\n")
    running = wait_badge(page, 0, "running")
    assert running["session"] == "bg" and "running" in running["text"]
    run_command(page, "nbpool:run-on-session", {"session": "bg", "background": True}, index=1)
    queued = wait_badge(page, 1, "queued")
    assert "queued #1" in queued["text"]
    run_cell(page, 2)
    wait_cell_text(page, 2, "next 42")
    assert time.monotonic() - started < 6, "the next cell waited for the background cell"
    assert "slept" not in cell_text(page, 0)
    run_command(page, "nbpool:run-on-session", {"session": "etl"}, index=3)
    wait_badge(page, 3, "done")
    page.evaluate("() => window.jupyterapp.commands.execute('application:close-other-tabs')")
    screenshot(page, "session-cells-badges")  # labextension/screenshot-cells.png
    done = wait_badge(page, 0, "done", timeout=60_000)
    assert re.search(r"done in \d", done["text"])
    wait_cell_text(page, 0, "slept")
    wait_badge(page, 1, "done")
    wait_cell_text(page, 1, "second")


def test_interrupt_from_the_badge(lab_page, lab_server):
    """The badge of a running cell interrupts that cell's worker only: the
    cell ends interrupted and its session stays usable."""
    page = lab_page
    open_notebook(
        page, lab_server, "intr.ipynb", ["import time\ntime.sleep(300)", "print('still', 1 + 1)"]
    )
    run_command(page, "nbpool:run-on-session", {"session": "long", "background": True}, index=0)
    wait_badge(page, 0, "running")
    page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.widgets[0]"
        ".node.querySelector('.jp-nbpool-badge-interrupt').click()"
    )
    wait_badge(page, 0, "interrupted")
    wait_cell_text(page, 0, "KeyboardInterrupt")
    run_command(page, "nbpool:run-on-session", {"session": "long"}, index=1)
    wait_cell_text(page, 1, "still 2")


def test_picker_lists_sessions_and_checks_names(lab_page, lab_server):
    """Without a session the command asks: the pool's sessions are listed
    with their worker, a bad name is refused with the reason in the dialog,
    and picking a listed session binds and runs the cell there."""
    page = lab_page
    open_notebook(page, lab_server, "pick.ipynb", ["y = 5\n" + PID, "print('y is', y)"])
    run_command(page, "nbpool:run-on-session", {"session": "etl"}, index=0)
    wait_cell_text(page, 0, "pid ")
    page.evaluate(
        """() => {
            const app = window.jupyterapp;
            app.shell.currentWidget.content.activeCellIndex = 1;
            app.commands.execute('nbpool:run-on-session');
        }"""
    )
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    option = dialog.locator(".jp-nbpool-picker-session[data-session='etl']")
    option.wait_for()
    assert re.search(r"on w\d+, (idle|leased|busy)", option.inner_text())
    dialog.locator("input.jp-nbpool-picker-name").fill("bad\u0007name")
    dialog.locator(".jp-mod-accept").click()
    error = page.locator(".jp-Dialog .jp-nbpool-picker-error")
    error.wait_for()
    assert "control character" in error.inner_text()
    assert source(page, 1) == "print('y is', y)"
    screenshot(page, "session-picker")
    page.locator(".jp-Dialog .jp-nbpool-picker-session[data-session='etl']").click()
    page.locator(".jp-Dialog .jp-mod-accept").click()
    wait_cell_text(page, 1, "y is 5")
    assert source(page, 1) == "%%pool_exec -s etl\nprint('y is', y)"


def test_commands_in_palette_context_menu_and_cell_toolbar(lab_page, lab_server):
    """Both commands are in the command palette, the cell context menu and
    the active cell's toolbar, with their default shortcuts."""
    page = lab_page
    open_notebook(page, lab_server, "menus.ipynb", ["%%pool_exec -s a\n1"])
    keys = page.evaluate(
        """() => window.jupyterapp.commands.keyBindings
            .filter(b => b.command.startsWith('nbpool:'))
            .map(b => b.command + ' ' + b.keys.join(','))"""
    )
    assert sorted(keys) == [
        "nbpool:run-on-session Alt Shift B",
        "nbpool:run-on-session Alt Shift P",
        "nbpool:unbind-cell Alt Shift U",
    ]
    notebook = "#" + page.evaluate("() => window.jupyterapp.shell.currentWidget.id")
    page.locator(f"{notebook} .jp-CodeCell").first.click(button="right")
    menu = page.locator(".lm-Menu")
    menu.get_by_text("Run on a Session…", exact=True).wait_for()
    menu.get_by_text("Unbind from Session", exact=True).wait_for()
    page.keyboard.press("Escape")
    toolbar = page.locator(f"{notebook} .jp-cell-toolbar")
    toolbar.locator("[data-command='nbpool:run-on-session']").wait_for()
    toolbar.locator("[data-command='nbpool:unbind-cell']").wait_for()
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("Run on a Session")
    page.locator(".lm-CommandPalette-item", has_text="Run on a Session").first.wait_for()


def test_notebook7_summary_and_session_cell(notebook7_page, notebook7_server):
    """In Notebook 7 the pool summary shows in the notebook's toolbar, a
    cell runs on a session through the command, with its badge, and the
    side panel opens from the View menu."""
    page = notebook7_page
    open_notebook(page, notebook7_server, "n7.ipynb", [PID, PID], app="notebook")
    run_cell(page, 0)
    local = pid_of(page, 0)
    run_command(page, "nbpool:run-on-session", {"session": "n7"}, index=1)
    wait_cell_text(page, 1, "pid ")
    assert pid_of(page, 1) != local
    summary = page.locator(".jp-NotebookPanel-toolbar .jp-nbpool-status")
    summary.wait_for()
    page.wait_for_function(
        """() => /^nbpool \\d+\\/\\d+ busy/.test(
            document.querySelector('.jp-NotebookPanel-toolbar .jp-nbpool-status').innerText)"""
    )
    assert badge(page, 1)["session"] == "n7"
    screenshot(page, "notebook7-session-cell")
    page.locator(".lm-MenuBar-itemLabel", has_text="View").click()
    page.locator(".lm-Menu-itemLabel", has_text="nbpool Panel").click()
    page.locator("#nbpool-panel .jp-nbpool-session[data-session='n7']").wait_for()
    # The right sidebar lists it by its short caption.
    page.locator(".lm-MenuBar-itemLabel", has_text="View").click()
    page.locator(".lm-Menu-itemLabel", has_text="Right Sidebar").hover()
    page.locator(".lm-Menu-itemLabel", has_text="nbpool pool").wait_for()
    page.keyboard.press("Escape")


@contextmanager
def lab_settings(server, plugin: str, values: dict):
    """User settings of ``plugin`` (``package:name``) for pages loaded meanwhile."""
    package, name = plugin.split(":")
    path = server.base / "settings" / package / f"{name}.jupyterlab-settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    try:
        yield
    finally:
        path.unlink()


def test_badges_survive_a_kernel_restart(lab_page, lab_server):
    """After a kernel restart a bound cell keeps its badge (the session from
    its line, not run yet) and gets live states again."""
    page = lab_page
    open_notebook(page, lab_server, "restart.ipynb", ["%%pool_exec -s r\nprint('ran', 1)"])
    run_command(page, "nbpool:run-on-session", {"session": "r"}, index=0)
    wait_badge(page, 0, "done")
    page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()"
    )
    unknown = wait_badge(page, 0, "unknown")
    assert unknown["session"] == "r" and "not run yet" in unknown["text"]
    wait_kernel_idle(page, "restart.ipynb")
    run_command(page, "nbpool:run-on-session", {"session": "r"}, index=0)
    wait_badge(page, 0, "done")
    wait_cell_text(page, 0, "ran 1")


def test_badges_in_a_windowed_notebook(lab_page, lab_server):
    """With full windowing a bound cell out of view has its badge when it is
    scrolled into view, and still after being scrolled out and in again
    (the badges attach to cells as they are rendered, and follow
    ``inViewportChanged``)."""
    page = lab_page
    filler = [f"# filler {i}" + "\n" * 8 for i in range(40)]
    cells = ["%%pool_exec -s near\n1", *filler, "%%pool_exec -s far\n2"]
    last = len(cells) - 1
    scroll = """(i) => {
        const nb = window.jupyterapp.shell.currentWidget.content;
        return nb.scrollToCell(nb.widgets[i]);
    }"""
    with lab_settings(
        lab_server, "@jupyterlab/notebook-extension:tracker", {"windowingMode": "full"}
    ):
        open_notebook(page, lab_server, "windowed.ipynb", cells)
    assert wait_badge(page, 0, "unknown")["session"] == "near"
    assert not page.evaluate(
        "(i) => window.jupyterapp.shell.currentWidget.content.widgets[i].inViewport", last
    ), "the last cell is in view already"
    page.evaluate(scroll, last)
    assert wait_badge(page, last, "unknown")["session"] == "far"
    page.evaluate(scroll, 0)
    page.evaluate(scroll, last)
    assert wait_badge(page, last, "unknown")["session"] == "far"


def test_badges_off_in_the_settings(lab_page, lab_server):
    """The ``showBadges`` setting off: no badges; the commands still bind and run."""
    page = lab_page
    with lab_settings(lab_server, "nbpool:plugin", {"showBadges": False}):
        open_notebook(page, lab_server, "nobadge.ipynb", [PID])
        run_command(page, "nbpool:run-on-session", {"session": "quiet"}, index=0)
    wait_cell_text(page, 0, "pid ")
    assert source(page, 0).startswith("%%pool_exec -s quiet\n")
    assert badge(page, 0) is None


def test_notification_when_a_long_background_cell_ends(lab_page, lab_server):
    """A ``--bg`` cell that ran at least ``notifyAfter`` seconds ends with a
    notification saying its session and state, with a link to the cell."""
    page = lab_page
    with lab_settings(lab_server, "nbpool:plugin", {"notifyAfter": 1}):
        open_notebook(page, lab_server, "notify.ipynb", ["import time\ntime.sleep(1.5)"])
        run_command(page, "nbpool:run-on-session", {"session": "n", "background": True}, index=0)
    toast = page.locator(".Toastify__toast", has_text="background cell on n done in")
    toast.wait_for(timeout=60_000)
    assert "notify.ipynb" in toast.inner_text()
    toast.get_by_role("button", name="Show cell").wait_for()


def test_bad_session_name_is_one_line_and_changes_nothing(lab_page, lab_server):
    """A session name the magics would refuse (here: empty after stripping
    quotes) gets a one-line error notification; the cell is left as it was
    and nothing runs."""
    page = lab_page
    open_notebook(page, lab_server, "badname.ipynb", [PID])
    run_command(page, "nbpool:run-on-session", {"session": " '' "}, index=0)
    toast = page.locator(".Toastify__toast", has_text="session name is empty")
    toast.wait_for()
    assert "\n" not in toast.locator(".jp-toast-message").inner_text().strip()
    assert source(page, 0) == PID
    assert cell_text(page, 0) == ""
