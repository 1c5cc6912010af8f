"""A real JupyterLab server and a headless Chromium page on it, for browser tests.

Fixtures (import them into a test module)
-----------------------------------------
lab_server (session)
    ``jupyter lab`` from this venv on a free loopback port, every Jupyter
    and IPython directory private to the test session, the news popup off,
    ``window.jupyterapp`` exposed. Ended by its pid (SIGTERM, then SIGKILL)
    at the end of the session; its kernels go with it.
browser (session)
    Debian's Chromium (``/usr/bin/chromium``) driven by Playwright; no
    browser is downloaded.
lab_page
    A fresh browser context and page for one test; ``page.console_errors``
    collects console errors and uncaught page errors as ``(text, url)``;
    ``extension_errors(page)`` keeps those of nbpool's extension.

Helpers
-------
``open_notebook(page, server, name, cells)`` writes a notebook of code
cells, opens it and waits until its kernel is idle; ``run_cell`` runs one
cell (optionally without waiting); ``kernel_eval`` evaluates a Python
expression in the notebook's kernel and returns its ``text/plain``;
``screenshot`` saves a PNG under ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class LabServer:
    url: str
    token: str
    root: Path
    proc: subprocess.Popen
    log: Path

    def page_url(self, path: str) -> str:
        return f"{self.url}{path}?token={self.token}"

    def api(self, path: str, method: str = "GET") -> object:
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every notebook session (and so its kernel and its pool) through the REST API."""
        for session in self.api("/api/sessions"):
            self.api(f"/api/sessions/{session['id']}", method="DELETE")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("lab")
    env = dict(os.environ)
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("IPYTHONDIR", "ipython"),
    ]:
        (base / sub).mkdir()
        env[var] = str(base / sub)
    notification = base / "settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    root = base / "notebooks"
    root.mkdir()
    port, token = _free_port(), "nbpool-test-token"
    log = base / "server.log"
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(bin_dir / "jupyter-lab"),
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--IdentityProvider.token={token}",
                "--allow-root",
                "--LabApp.expose_app_in_browser=True",
                f"--ServerApp.root_dir={root}",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LabServer(f"http://127.0.0.1:{port}", token, root, proc, log)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            server.api("/api/status")
            return True
        except OSError:
            return False

    try:
        _wait(up, 60, "jupyter lab to answer /api/status")
        yield server
    finally:
        _stop(proc)
        if ARTIFACTS.exists():
            shutil.copy(log, ARTIFACTS / "labextension-server.log")


def _stop(proc: subprocess.Popen) -> None:
    """End the server by its pid: SIGTERM (it shuts its kernels down), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def lab_page(browser, lab_server):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.console_errors = []
    page.on(
        "console",
        lambda msg: page.console_errors.append((msg.text, msg.location.get("url", "")))
        if msg.type == "error"
        else None,
    )
    page.on("pageerror", lambda exc: page.console_errors.append((f"pageerror: {exc}", exc.stack or "")))
    try:
        yield page
    finally:
        context.close()
        lab_server.shutdown_kernels()


# -- helpers ------------------------------------------------------------------


def extension_errors(page) -> list[tuple[str, str]]:
    """Console errors from nbpool's extension or from its comm traffic.

    Errors of the browser's own networking (``ERR_NETWORK_CHANGED`` and the
    like) or of other extensions are not the extension's.
    """
    words = re.compile(r"nbpool|comm|subshell", re.IGNORECASE)
    return [
        (text, url)
        for text, url in page.console_errors
        if "/labextensions/nbpool/" in url or words.search(text)
    ]


def open_notebook(page, server: LabServer, name: str, cells: list[str], in_new_tab: bool = False) -> None:
    """Write a notebook of ``cells``, open it, wait until its kernel is idle.

    The first notebook loads JupyterLab at its URL; ``in_new_tab`` opens
    another one beside it in the same page.
    """
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, server.root / name)
    if in_new_tab:
        page.evaluate("(path) => window.jupyterapp.commands.execute('docmanager:open', {path})", name)
    else:
        # reset: a fresh workspace, so notebooks of earlier tests (whose
        # kernels were shut down) are not reopened with new kernels.
        page.goto(server.page_url(f"/lab/tree/{name}") + "&reset")
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
    script = """async ([index, wait]) => {
        const app = window.jupyterapp;
        const panel = app.shell.currentWidget;
        panel.content.activeCellIndex = index;
        const done = app.commands.execute('notebook:run-cell');
        if (wait) { await done; }
    }"""
    page.evaluate(script, [index, wait])


def cell_text(page, index: int) -> str:
    """The text of cell ``index``'s outputs."""
    return page.evaluate(
        """(index) => {
            const panel = window.jupyterapp.shell.currentWidget;
            return panel.content.widgets[index].outputArea.node.innerText;
        }""",
        index,
    )


def kernel_eval(page, expression: str, timeout: float = 30_000) -> str:
    """Evaluate ``expression`` in the current notebook's kernel; its text/plain."""
    return page.evaluate(
        """async (expression) => {
            const panel = window.jupyterapp.shell.currentWidget;
            const kernel = panel.sessionContext.session.kernel;
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
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
