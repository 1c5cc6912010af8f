"""The notebook surface in a real JupyterLab (headless Chromium, real kernels and workers).

What nbclient cannot show is checked here: where output of a background
cell lands after its cell finished, how the widget renders and follows the
pool, and the kernel interrupt from the frontend. Screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

from tests.browser.helpers import (
    cell_text,
    interrupt_kernel,
    open_notebook,
    run_cell,
    screenshot,
    wait_cell_text,
)

LOAD = "%load_ext nbpool\n%config Pool.size = 2\n%pool start"


def test_bg_output_lands_only_in_the_cell_that_started_it(lab_page, lab_server):
    """Output and display updates of a --bg cell arrive in its own cell while a later cell runs."""
    _check_bg_output(lab_page, lab_server, "lab")


def test_bg_output_lands_only_in_its_cell_in_notebook_7(notebook7_page, notebook7_server):
    """The same in Jupyter Notebook 7: a --bg cell's output stays in its own cell."""
    _check_bg_output(notebook7_page, notebook7_server, "notebook")


def _check_bg_output(page, server, app: str) -> None:
    open_notebook(
        page,
        server,
        f"bg-{app}.ipynb",
        [
            LOAD,
            "%%pool_exec --bg -s bg -o job\n"
            "import time\n"
            "progress = display('progress 0', display_id=True)\n"
            "for i in range(6):\n"
            "    print(f'bg tick {i}', flush=True)\n"
            "    progress.update(f'progress {i}')\n"
            "    time.sleep(0.4)",
            "import time\n"
            "print('later cell starts', flush=True)\n"
            "while not job.done():\n"
            "    time.sleep(0.1)\n"
            "print('later cell ends')",
        ],
        app=app,
    )
    run_cell(page, 0)
    run_cell(page, 1)
    wait_cell_text(page, 1, "bg tick 0")  # the bg cell has finished; its output keeps coming
    run_cell(page, 2)  # runs until the bg work is done
    wait_cell_text(page, 1, ": done after")  # the status line, updated at the end
    screenshot(page, f"bg-cell-output-{app}")
    bg, later = cell_text(page, 1), cell_text(page, 2)
    assert all(f"bg tick {i}" in bg for i in range(6)), bg
    assert "'progress 5'" in bg and "'progress 0'" not in bg, bg
    assert "later cell" not in bg
    assert later.split() == ["later", "cell", "starts", "later", "cell", "ends"], later
    # Notebook 7.6 itself throws this on loading its settings, also for a plain
    # notebook that never loads nbpool.
    known = "pageerror: Cannot read properties of undefined (reading 'schema')"
    assert not [e for e in page.console_errors if app == "lab" or e != known], page.console_errors


def test_widget_renders_and_follows_the_pool_while_a_bg_cell_runs(lab_page, lab_server):
    """%pool widget renders as a widget (no fallback, no error) and its worker rows turn busy and back."""
    page = lab_page
    open_notebook(
        page,
        lab_server,
        "widget.ipynb",
        [LOAD, "%pool widget", "%%pool_exec --bg -s w\nimport time\ntime.sleep(2)"],
    )
    run_cell(page, 0)
    run_cell(page, 1)
    rows = page.locator(".nbpool-widget tr.nbpool-worker")
    rows.first.wait_for()
    assert rows.count() == 2
    output = cell_text(page, 1)
    assert "Error displaying widget" not in output
    assert "worker  state" not in output and "PoolWidget" not in output  # not the text fallback
    page.wait_for_function(
        "() => [...document.querySelectorAll('.nbpool-widget tr.nbpool-worker')]"
        ".every(r => r.dataset.state === 'idle')"
    )
    run_cell(page, 2)
    busy = page.locator(".nbpool-widget tr.nbpool-worker[data-state='busy']")
    busy.wait_for(timeout=10_000)
    assert "w" in busy.inner_text()  # the busy row names session w
    screenshot(page, "widget-busy")
    busy.wait_for(state="detached", timeout=15_000)  # idle again once the bg cell ended
    assert "executions 1" in page.locator(".nbpool-widget .nbpool-summary").inner_text()
    assert not page.console_errors, page.console_errors


def test_kernel_interrupt_ends_the_cell_and_keeps_the_session(lab_page, lab_server):
    """The stop button during %%pool_exec ends the cell with KeyboardInterrupt; the session survives."""
    page = lab_page
    open_notebook(
        page,
        lab_server,
        "interrupt.ipynb",
        [
            LOAD,
            "%%pool_exec -s k\nkept = 'state survived'",
            "%%pool_exec -s k\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)",
            "%%pool_exec -s k\nprint(kept)",
        ],
    )
    run_cell(page, 0)
    run_cell(page, 1)
    run_cell(page, 2, wait=False)
    wait_cell_text(page, 2, "sleeping")
    interrupt_kernel(page)
    wait_cell_text(page, 2, "KeyboardInterrupt", timeout=15_000)
    screenshot(page, "interrupted-cell")
    assert "nbpool" not in cell_text(page, 2)
    run_cell(page, 3)
    assert cell_text(page, 3).strip() == "state survived", (cell_text(page, 2), cell_text(page, 3))
