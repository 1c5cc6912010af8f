"""A real JupyterLab and a headless Chromium page on it, for browser tests.

Fixtures
--------
lab_server (session)
    ``jupyter lab`` from this venv on a free loopback port with token auth;
    every Jupyter and IPython directory (``JUPYTER_CONFIG_DIR``,
    ``JUPYTER_RUNTIME_DIR``, ``JUPYTER_DATA_DIR``,
    ``JUPYTERLAB_SETTINGS_DIR``, ``JUPYTERLAB_WORKSPACES_DIR``,
    ``IPYTHONDIR``) private to the test session; the news popup off;
    ``window.jupyterapp`` exposed (``--LabApp.expose_app_in_browser``).
    A :class:`LabServer`: ``url``, ``token``, ``root`` (where notebooks go),
    ``page_url(path)``, ``api(path, method)`` (REST, authenticated).
    At the end of the session the server is ended by its pid (SIGTERM, which
    shuts its kernels down, then SIGKILL), and the session fails if any of
    its kernels, or any worker kernel those started, is still alive.
notebook7_server (session)
    The same for Jupyter Notebook 7 (``jupyter notebook``); notebooks open
    at ``/notebooks/<name>`` (``helpers.open_notebook(..., app="notebook")``), and
    the other helpers work there too.
browser (session)
    Debian's Chromium (``/usr/bin/chromium``, never a downloaded browser),
    headless, started by pid and driven by Playwright over CDP; ended by its
    pid at the end of the session.
lab_page, notebook7_page
    A fresh browser context and page for one test, on that server. ``page.console_errors``
    collects console errors (but Chromium's ``ERR_NETWORK_CHANGED``) and
    uncaught page errors. At its end every
    kernel of the server is shut down through the REST API.

The page helpers (``open_notebook``, ``run_cell``, ``cell_text``, ...) are in
:mod:`tests.browser.helpers`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.browser.helpers import ARTIFACTS
from tests.helpers import gone, pids_with, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
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
    base: Path
    proc: subprocess.Popen
    #: Pids of every kernel seen, and of the workers they started.
    seen: set = field(default_factory=set)

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
        """Shut every kernel down (its pool goes with it) through the REST API."""
        self.record()
        for kernel in self.api("/api/kernels"):
            self.api(f"/api/kernels/{kernel['id']}", method="DELETE")

    def kernel_pids(self) -> list[int]:
        """Pids of this server's kernels (their connection files are in its runtime dir)."""
        return pids_with(str(self.base / "runtime").encode())

    def record(self) -> None:
        """Remember the running kernels and their nbpool workers, to check they end."""
        for pid in self.kernel_pids():
            self.seen.add(pid)
            self.seen.update(pids_with(f"nbpool-{pid}-".encode()))

    def leftovers(self) -> set[int]:
        return {pid for pid in self.seen if not gone(pid)} | set(self.kernel_pids())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _end(proc: subprocess.Popen, grace: float = 20) -> None:
    """End a process we started, by pid: SIGTERM, then SIGKILL of its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: children go too
    except ProcessLookupError:
        pass
    proc.wait()


def _serve(base: Path, app: str):
    """Run ``jupyter <app>`` with private dirs under ``base``; yield a LabServer; end it by pid."""
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
    settings = base / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    root = base / "notebooks"
    root.mkdir()
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    port, token = _free_port(), "nbpool-test-token"
    expose = {"lab": "LabApp", "notebook": "JupyterNotebookApp"}[app]
    log = base / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(bin_dir / f"jupyter-{app}"),
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--IdentityProvider.token={token}",
                "--allow-root",
                f"--{expose}.expose_app_in_browser=True",
                f"--ServerApp.root_dir={root}",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LabServer(f"http://127.0.0.1:{port}", token, root, base, proc)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"jupyter {app} exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            server.api("/api/status")
            return True
        except OSError:
            return False

    try:
        wait_for(up, timeout=60, what=f"jupyter {app} to answer /api/status")
        yield server
        server.record()
    finally:
        _end(proc)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"{app}-server.log").write_bytes(log.read_bytes())
    try:
        wait_for(
            lambda: not server.leftovers(),
            timeout=15,
            what="the server's kernels and their workers to exit",
        )
    finally:
        for pid in server.leftovers():  # fail above, but leave nothing behind
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    yield from _serve(tmp_path_factory.mktemp("lab"), "lab")


@pytest.fixture(scope="session")
def notebook7_server(tmp_path_factory):
    yield from _serve(tmp_path_factory.mktemp("nb7"), "notebook")


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        )
    profile = tmp_path_factory.mktemp("chromium")
    proc = subprocess.Popen(
        [
            CHROMIUM,
            *CHROMIUM_ARGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        wait_for(
            lambda: port_file.exists() and port_file.read_text().strip(),
            timeout=30,
            what="chromium to open its DevTools port",
        )
        port = port_file.read_text().split()[0]
        with sync_playwright() as pw:
            b = pw.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
            try:
                yield b
            finally:
                b.close()
    finally:
        _end(proc, grace=5)


@pytest.fixture
def lab_page(browser, lab_server):
    yield from _page(browser, lab_server)


@pytest.fixture
def notebook7_page(browser, notebook7_server):
    yield from _page(browser, notebook7_server)


def _page(browser, server: LabServer):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.console_errors = []

    def console(msg) -> None:
        # Chromium logs ERR_NETWORK_CHANGED when the host's interfaces change
        # (e.g. network-namespace tests running meanwhile): not the page's fault.
        if msg.type == "error" and "ERR_NETWORK_CHANGED" not in msg.text:
            page.console_errors.append(msg.text)

    page.on("console", console)
    page.on("pageerror", lambda exc: page.console_errors.append(f"pageerror: {exc}"))
    try:
        yield page
    finally:
        context.close()
        server.shutdown_kernels()
