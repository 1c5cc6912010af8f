"""The JupyterLab extension in a real JupyterLab with a real kernel and pool.

A JupyterLab server from this venv (with nbpool's prebuilt extension as
``pip install`` put it there) and Debian's headless Chromium; every pool is
a real pool of real worker kernels inside the notebook's kernel. What the
panel did is checked from the kernel itself. Screenshots go to
``test-artifacts/``. Fixtures (``lab_server``, ``lab_page``, their Notebook 7
twins) come from ``tests/browser/conftest.py``, helpers from
``tests/browser/helpers.py``. Each test's first notebook opens with a fresh
workspace (``reset=True``), so notebooks of earlier tests are not reopened.
"""

from __future__ import annotations

import re
import time

from playwright.sync_api import Error as PlaywrightError

from tests.browser.helpers import (
    cell_text,
    kernel_eval,
    open_notebook,
    run_cell,
    screenshot,
    wait_kernel_idle,
)

#: Loads nbpool in the notebook's kernel (which registers the status comm
#: target) and names its pool for kernel_eval.
LOAD = "%load_ext nbpool\npool = lambda: get_ipython().magics_manager.registry['PoolMagics'].get_pool()"
ITEM = "#jp-main-statusbar .jp-nbpool-status"
PANEL = "#nbpool-panel"


def extension_errors(page) -> list[str]:
    """Console errors of nbpool's extension or of its comm traffic (not of others)."""
    return [text for text in page.console_errors if re.search(r"nbpool|comm|subshell", text, re.I)]


def item_text(page) -> str:
    return page.locator(ITEM).inner_text() if page.locator(ITEM).count() else ""


def wait_item(page, pattern: str, timeout: float = 30_000) -> None:
    """Wait until the status item shows text matching ``pattern`` (a regex)."""
    page.wait_for_function(
        """([selector, pattern]) => {
            const node = document.querySelector(selector);
            return !!node && node.offsetParent !== null && new RegExp(pattern).test(node.textContent);
        }""",
        arg=[ITEM, pattern],
        timeout=timeout,
    )


def wait_item_hidden(page, timeout: float = 30_000) -> None:
    page.wait_for_function(
        """(selector) => {
            const node = document.querySelector(selector);
            return !node || node.offsetParent === null;
        }""",
        arg=ITEM,
        timeout=timeout,
    )


def open_panel(page) -> None:
    page.locator(ITEM).click()
    page.locator(PANEL).wait_for(state="visible")


def panel_message(page, error: bool, timeout: float = 30_000) -> str:
    """Wait for the panel's answer to an action; its text."""
    selector = (
        f"{PANEL} .jp-nbpool-message{'.jp-nbpool-error' if error else ':not(.jp-nbpool-error)'}"
    )
    page.wait_for_function(
        """(selector) => {
            const node = document.querySelector(selector);
            return !!node && !node.hidden && !node.textContent.includes('waiting for the kernel');
        }""",
        arg=selector,
        timeout=timeout,
    )
    return page.locator(f"{selector} .jp-nbpool-message-text").inner_text()


def workers(page) -> list[str]:
    """Worker ids of the current pool, asked from the kernel."""
    return eval(kernel_eval(page, "[w['id'] for w in pool().status()['workers']]"))


def wait_kernel(page, expression: str, expected: str, timeout: float = 30.0) -> None:
    """Wait until ``expression`` evaluated in the kernel gives ``expected``.

    A request the kernel aborted (it does so for a moment after a cell
    failed) is asked again.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = kernel_eval(page, expression)
        except PlaywrightError as exc:  # aborted: its reply has no user_expressions
            value = f"<{exc.message}>"
        if value == expected:
            return
        if time.monotonic() > deadline:
            status = kernel_eval(page, "pool().status()")
            raise AssertionError(f"kernel: {expression} is {value}, expected {expected}\n{status}")
        page.wait_for_timeout(100)


def test_status_item_appears_and_follows_running_cells(lab_page, lab_server):
    """With a pool, the status item shows busy/total workers and the queue,
    and updates live while cells run on the pool."""
    page = lab_page
    bg = "%%pool_exec -s etl --bg\nimport time; time.sleep(3)"
    open_notebook(
        page, lab_server, "status.ipynb", [LOAD, "%pool start -n 2", bg, bg, bg], reset=True
    )
    run_cell(page, 0)
    run_cell(page, 1)
    wait_item(page, r"^nbpool 0/2 busy · 0 queued$")
    open_panel(page)
    for index in (2, 3, 4):
        run_cell(page, index)  # background cells return at once
    wait_item(page, r"^nbpool 1/2 busy · 2 queued$")
    page.locator(f"{PANEL} .jp-nbpool-session[data-session='etl']", has_text="2 queued").wait_for()
    screenshot(page, "panel-and-status-item")
    wait_item(page, r"^nbpool 1/2 busy · 1 queued$")
    wait_item(page, r"^nbpool 0/2 busy · 0 queued$", timeout=60_000)
    assert "Idle" not in item_text(page)
    assert kernel_eval(page, "pool().status()['counters']['executions']") == "3"


def test_status_item_warns_while_a_worker_is_replaced(lab_page, lab_server):
    """A killed worker turns the item to its warning style for a few seconds,
    though its forked replacement may be up before the next status push, and
    the panel lists it as dead meanwhile."""
    page = lab_page
    kill = "import os, signal\nos.kill(pool().status()['workers'][0]['pid'], signal.SIGKILL)"
    open_notebook(page, lab_server, "warn.ipynb", [LOAD, "%pool start -n 2", kill], reset=True)
    run_cell(page, 0)
    run_cell(page, 1)
    wait_item(page, r"^nbpool 0/2 busy · 0 queued$")
    assert kernel_eval(page, "pool().status()['workers'][0]['started']") == "'fork'"
    open_panel(page)
    run_cell(page, 2)
    page.locator(f"{ITEM}.jp-nbpool-warn").wait_for(timeout=15_000)
    assert "failing/restarting" in item_text(page)
    page.locator(f"{PANEL} .jp-nbpool-worker[data-state='dead']").wait_for()
    screenshot(page, "status-item-warning")
    page.wait_for_function(
        "(s) => { const n = document.querySelector(s); return n && !n.classList.contains('jp-nbpool-warn'); }",
        arg=ITEM,
        timeout=60_000,
    )
    wait_item(page, r"^nbpool 0/2 busy · 0 queued$")


def test_hidden_without_a_pool_and_no_console_errors(lab_page, lab_server):
    """A kernel without nbpool shows no item and causes no console errors;
    the item appears once the kernel has a pool and hides again when the
    pool is stopped."""
    page = lab_page
    open_notebook(
        page,
        lab_server,
        "plain.ipynb",
        ["1 + 1", LOAD, "%pool start -n 1", "%pool stop"],
        reset=True,
    )
    run_cell(page, 0)
    page.locator("#jp-main-statusbar").wait_for()
    assert item_text(page) == "" and page.locator(ITEM).is_hidden()
    page.evaluate("() => window.jupyterapp.commands.execute('nbpool:open-panel')")
    page.locator(PANEL).wait_for(state="visible")
    page.get_by_text("kernel has not loaded nbpool").wait_for()
    screenshot(page, "panel-without-nbpool")
    run_cell(page, 1)
    page.get_by_text("kernel has no pool yet").wait_for()
    wait_item_hidden(page)
    run_cell(page, 2)
    wait_item(page, r"^nbpool 0/1 busy · 0 queued$")
    run_cell(page, 3)
    wait_item_hidden(page)
    page.get_by_text("kernel has no pool yet").wait_for()
    assert extension_errors(page) == []


def test_end_session_from_the_panel_replaces_its_worker(lab_page, lab_server):
    """ "End" on a session ends it in the kernel's pool: its worker is
    stopped and a fresh one takes its place; the session's state is gone."""
    page = lab_page
    open_notebook(
        page,
        lab_server,
        "end.ipynb",
        [
            LOAD,
            "%pool start -n 2",
            "%%pool_exec -s etl\nx = 41",
            "%%pool_exec -s etl\nprint('x' in dir())",
        ],
        reset=True,
    )
    for index in (0, 1, 2):
        run_cell(page, index)
    old = kernel_eval(page, "pool().status()['sessions'][0]['worker']").strip("'")
    open_panel(page)
    session = page.locator(f"{PANEL} .jp-nbpool-session[data-session='etl']")
    session.wait_for()
    screenshot(page, "panel")
    session.get_by_role("button", name="End").click()
    assert "session 'etl' ended" in panel_message(page, error=False)
    session.wait_for(state="detached")
    wait_kernel(page, f"{old!r} in [w['id'] for w in pool().status()['workers']]", "False")
    wait_kernel(page, "sorted(w['state'] for w in pool().status()['workers'])", "['idle', 'idle']")
    assert kernel_eval(page, "pool().status()['sessions']") == "[]"
    run_cell(page, 3)
    assert "False" in cell_text(page, 3)


def test_interrupt_and_restart_a_worker_from_the_panel(lab_page, lab_server):
    """ "Interrupt" stops the code a worker runs, even while that cell keeps
    the notebook kernel busy (the comm is served on a kernel subshell): the
    cell gets KeyboardInterrupt. "Restart" replaces a worker by a fresh kernel."""
    page = lab_page
    open_notebook(
        page,
        lab_server,
        "workers.ipynb",
        [LOAD, "%pool start -n 2", "%%pool_exec -s long\nimport time\ntime.sleep(300)"],
        reset=True,
    )
    run_cell(page, 0)
    run_cell(page, 1)
    run_cell(page, 2, wait=False)  # the notebook kernel's main shell stays busy
    open_panel(page)
    busy = page.locator(f"{PANEL} .jp-nbpool-worker[data-state='busy']")
    busy.wait_for()
    busy_id = busy.get_attribute("data-worker")
    # Locators resolve again at each use: pin rows by worker id, not by state.
    row = page.locator(f"{PANEL} .jp-nbpool-worker[data-worker='{busy_id}']")
    row.get_by_role("button", name="Interrupt").click()
    assert panel_message(page, error=False) == f"interrupted worker {busy_id}"
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.widgets[2]"
        ".outputArea.node.innerText.includes('KeyboardInterrupt')",
        timeout=30_000,
    )
    wait_kernel(page, "[s['name'] for s in pool().status()['sessions']]", "['long']")
    other = next(w for w in workers(page) if w != busy_id)
    row = page.locator(f"{PANEL} .jp-nbpool-worker[data-worker='{other}'][data-state='idle']")
    row.get_by_role("button", name="Restart").click()
    assert panel_message(page, error=False) == f"worker {other} is being replaced by a fresh kernel"
    wait_kernel(page, f"{other!r} in [w['id'] for w in pool().status()['workers']]", "False")
    wait_kernel(page, "sorted(w['state'] for w in pool().status()['workers'])", "['idle', 'idle']")
    assert busy_id in workers(page), "the interrupted worker keeps its session"


def test_resize_from_the_panel_and_bad_input(lab_page, lab_server):
    """Resize changes the kernel's pool; a size of 0, a non-number, and an
    action on a session that was already ended get a clear message in the
    panel and leave the pool unchanged and usable."""
    page = lab_page
    open_notebook(
        page,
        lab_server,
        "resize.ipynb",
        [LOAD, "%pool start -n 1", "%%pool_exec -s etl\nprint('alive', 6 * 7)"],
        reset=True,
    )
    for index in (0, 1, 2):
        run_cell(page, index)
    open_panel(page)
    size = page.locator(f"{PANEL} .jp-nbpool-size-input")
    size.fill("3")
    page.locator(f"{PANEL} button[data-action='resize']").click()
    assert panel_message(page, error=False) == "pool resized to 3"
    wait_item(page, r"^nbpool 0/3 busy · 0 queued$")
    assert kernel_eval(page, "pool().size") == "3"

    for bad, reason in [("0", "got 0; use pool.shutdown() to stop the pool"), ("abc", "got 'abc'")]:
        size.fill(bad)
        size.press("Enter")
        message = panel_message(page, error=True)
        assert message.startswith("pool size must be a whole number >= 1") and reason in message
        screenshot(page, f"panel-resize-{bad}")
        assert kernel_eval(page, "(pool().size, len(pool().status()['workers']))") == "(3, 3)"

    # A stale panel: hold the kernel's pushes, end the session from the
    # kernel, then click the panel's (now stale) End button.
    hold = "import nbpool.notebook.labcomm as c; c._services[id(get_ipython())]._lock.acquire()"
    page.evaluate(
        "(code) => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
        ".requestExecute({code, silent: true}).done",
        hold + "; pool().end_session('etl')",
    )
    page.locator(f"{PANEL} .jp-nbpool-session[data-session='etl'] button").click()
    message = panel_message(page, error=True)
    assert message == "no session 'etl': it was already ended (sessions now: none)"
    kernel_eval(
        page,
        "__import__('nbpool.notebook.labcomm').notebook.labcomm._services[id(get_ipython())]"
        "._lock.release()",
    )
    page.locator(f"{PANEL} .jp-nbpool-session[data-session='etl']").wait_for(state="detached")
    run_cell(page, 2)
    assert "alive 42" in cell_text(page, 2)
    assert kernel_eval(page, "(pool().size, len(pool().status()['workers']))") == "(3, 3)"


def test_survives_page_reload_and_kernel_restart(lab_page, lab_server):
    """After a browser reload the item and panel show the live pool again and
    actions work; after a kernel restart the item hides, and it comes back
    when the new kernel starts a pool."""
    page = lab_page
    open_notebook(page, lab_server, "reload.ipynb", [LOAD, "%pool start -n 2"], reset=True)
    run_cell(page, 0)
    run_cell(page, 1)
    wait_item(page, r"^nbpool 0/2 busy · 0 queued$")
    page.reload()
    wait_kernel_idle(page, "reload.ipynb")
    wait_item(page, r"^nbpool 0/2 busy · 0 queued$")
    open_panel(page)
    page.locator(f"{PANEL} .jp-nbpool-size-input").fill("1")
    page.locator(f"{PANEL} button[data-action='resize']").click()
    assert panel_message(page, error=False) == "pool resized to 1"
    wait_item(page, r"^nbpool 0/1 busy · 0 queued$")
    screenshot(page, "after-reload")

    page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()"
    )
    wait_item_hidden(page)
    wait_kernel_idle(page, "reload.ipynb")
    run_cell(page, 0)
    run_cell(page, 1)
    wait_item(page, r"^nbpool 0/2 busy · 0 queued$")
    assert extension_errors(page) == []


def test_switching_notebooks_switches_the_pool(lab_page, lab_server):
    """The item and the panel show the pool of the notebook in front."""
    page = lab_page
    open_notebook(page, lab_server, "one.ipynb", [LOAD, "%pool start -n 1"], reset=True)
    run_cell(page, 0)
    run_cell(page, 1)
    wait_item(page, r"^nbpool 0/1 busy")
    open_notebook(page, lab_server, "two.ipynb", [LOAD, "%pool start -n 2"], in_new_tab=True)
    run_cell(page, 0)
    run_cell(page, 1)
    wait_item(page, r"^nbpool 0/2 busy")
    open_panel(page)
    page.locator(f"{PANEL} .jp-nbpool-notebook", has_text="two.ipynb").wait_for()
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="one.ipynb").click()
    wait_item(page, r"^nbpool 0/1 busy")
    page.locator(f"{PANEL} .jp-nbpool-notebook", has_text="one.ipynb").wait_for()
    assert page.locator(f"{PANEL} .jp-nbpool-worker").count() == 1
    screenshot(page, "switched-notebook")


def test_panel_works_in_notebook_7(notebook7_page, notebook7_server):
    """In Jupyter Notebook 7 (which has no status bar) the side panel shows the
    notebook's pool and its actions take effect."""
    page = notebook7_page
    open_notebook(page, notebook7_server, "nb7.ipynb", [LOAD, "%pool start -n 1"], app="notebook")
    run_cell(page, 0)
    run_cell(page, 1)
    page.evaluate("() => window.jupyterapp.commands.execute('nbpool:open-panel')")
    page.locator(f"{PANEL} .jp-nbpool-worker[data-state='idle']").wait_for()
    page.locator(f"{PANEL} .jp-nbpool-size-input").fill("2")
    page.locator(f"{PANEL} button[data-action='resize']").click()
    assert panel_message(page, error=False) == "pool resized to 2"
    wait_kernel(page, "len(pool().status()['workers'])", "2")
    page.locator(f"{PANEL} .jp-nbpool-worker").nth(1).wait_for()
    screenshot(page, "notebook7-panel")
    assert extension_errors(page) == []
