"""Page helpers for the browser tests (the fixtures are in ``conftest.py``).

``open_notebook(page, server, name, cells)`` writes a notebook of code
cells, opens it and waits until its kernel is idle; ``run_cell(page,
index, wait=True)`` runs one cell (``wait=False`` returns at once);
``cell_text(page, index)`` is the text of a cell's outputs;
``wait_cell_text(page, index, text)`` waits until it contains ``text``;
``interrupt_kernel(page)``; ``kernel_eval(page, expression)`` evaluates an
expression in the notebook's kernel and returns its ``text/plain``;
``screenshot(page, name)`` saves ``test-artifacts/<name>.png``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

#: Screenshots and server logs of the browser tests.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def open_notebook(
    page,
    server,
    name: str,
    cells: list[str],
    app: str = "lab",
    *,
    reset: bool = False,
    in_new_tab: bool = False,
) -> None:
    """Write a notebook of ``cells`` under the server root, open it, wait until its kernel is idle.

    ``app="notebook"`` opens it the Notebook 7 way (``/notebooks/<name>``).
    ``reset`` loads JupyterLab with a fresh workspace, so notebooks of earlier
    tests are not reopened with new kernels; ``in_new_tab`` opens it beside
    the current notebook in the same page.
    """
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, server.root / name)
    if in_new_tab:
        page.evaluate(
            "(path) => window.jupyterapp.commands.execute('docmanager:open', {path})", name
        )
    else:
        url = server.page_url(f"/lab/tree/{name}" if app == "lab" else f"/notebooks/{name}")
        page.goto(url + "&reset" if reset else url)
    wait_kernel_idle(page, name)


def wait_kernel_idle(page, name: str, timeout: float = 60_000) -> None:
    page.wait_for_function(
        """(name) => {
            const app = window.jupyterapp;
            const w = app && app.shell.currentWidget;
            const kernel = w && w.sessionContext && w.sessionContext.session
                && w.sessionContext.session.kernel;
            return !!w && w.title.label === name && !!kernel && kernel.status === 'idle'
                && kernel.connectionStatus === 'connected';
        }""",
        arg=name,
        timeout=timeout,
    )


def run_cell(page, index: int, wait: bool = True) -> None:
    """Run cell ``index`` of the current notebook; with ``wait``, until it finished."""
    page.evaluate(
        """async ([index, wait]) => {
            const app = window.jupyterapp;
            app.shell.currentWidget.content.activeCellIndex = index;
            const done = app.commands.execute('notebook:run-cell');
            if (wait) { await done; }
        }""",
        [index, wait],
    )


def cell_text(page, index: int) -> str:
    """The rendered text of cell ``index``'s outputs."""
    return page.evaluate(
        """(index) => window.jupyterapp.shell.currentWidget.content.widgets[index]
            .outputArea.node.innerText""",
        index,
    )


def wait_cell_text(page, index: int, text: str, timeout: float = 30_000) -> None:
    """Wait until the outputs of cell ``index`` contain ``text`` (on timeout, say what they show)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            """([index, text]) => window.jupyterapp.shell.currentWidget.content.widgets[index]
                .outputArea.node.innerText.includes(text)""",
            arg=[index, text],
            timeout=timeout,
        )
    except PlaywrightTimeout:
        screenshot(page, f"timeout-cell-{index}")
        pytest.fail(f"cell {index} never showed {text!r}; it shows: {cell_text(page, index)!r}")


def interrupt_kernel(page) -> None:
    """Interrupt the current notebook's kernel, as its stop button does."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:interrupt-kernel')")


def kernel_eval(page, expression: str) -> str:
    """Evaluate ``expression`` in the current notebook's kernel; its ``text/plain``."""
    return page.evaluate(
        """async (expression) => {
            const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
            const future = kernel.requestExecute({
                code: '', silent: true, store_history: false,
                user_expressions: {value: expression}
            });
            const reply = await future.done;
            const value = reply.content.user_expressions.value;
            if (value.status !== 'ok') {
                return 'ERROR ' + value.ename + ': ' + value.evalue;
            }
            return value.data['text/plain'];
        }""",
        expression,
    )


def screenshot(page, name: str) -> Path:
    """Save a screenshot of the page as ``test-artifacts/<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
