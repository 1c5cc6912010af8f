"""Fixtures of the example tests.

plain_install -> PlainInstall
    A virtual environment made once per test session with ``pip install
    <this repository>`` alone: nbpool and its declared dependencies, no
    extras (so no numpy, nbclient, bash_kernel or JupyterLab), and a
    kernelspec ``nbpool-plain`` that runs its Python. The examples run on
    that kernel, and their workers on that environment's ``python3``
    kernelspec. nbclient drives the kernel from the test environment, which
    does not leak into it: the kernel gets no PYTHONPATH and an empty Jupyter
    user directory, and its working directory (``examples/``) holds no Python
    package. Building the wheel builds the JupyterLab extension too (about a
    minute, most of the fixture's time): that is what ``pip install .`` does.
bash_kernel_installed
    Fails the test, saying how to install it, when the ``bash`` kernelspec
    (examples/05) is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager

ROOT = Path(__file__).parents[2]
EXAMPLES_DIR = ROOT / "examples"
KERNEL_NAME = "nbpool-plain"

# Run by the plain environment's Python, from examples/, in the kernel's environment.
_PROBE = """
import importlib.util, json
from jupyter_client.kernelspec import KernelSpecManager
import nbpool
print(json.dumps({
    "nbpool": nbpool.__file__,
    "extras": [m for m in ("numpy", "pandas", "nbclient", "bash_kernel", "jupyterlab")
               if importlib.util.find_spec(m)],
    "python3": KernelSpecManager().get_kernel_spec("python3").resource_dir,
}))
"""


@dataclass
class PlainInstall:
    """A venv with ``pip install <repo>`` only, and its notebook kernelspec."""

    venv: Path
    #: Put this on JUPYTER_PATH to see the ``nbpool-plain`` kernelspec.
    jupyter_path: Path
    #: The environment to start its kernel with (merged with JUPYTER_PATH at start).
    env: dict[str, str]
    kernel_name: str = KERNEL_NAME


def _run(argv: list, what: str, **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
        pytest.fail(f"could not {what} (exit {out.returncode}):\n{tail}")
    return out


@pytest.fixture(scope="session")
def plain_install(tmp_path_factory) -> PlainInstall:
    root = tmp_path_factory.mktemp("plain-install")
    venv = root / "venv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["JUPYTER_DATA_DIR"] = str(root / "jupyter-data")  # no user kernelspecs
    _run([sys.executable, "-m", "venv", str(venv)], "make a virtual environment", env=env)
    python = venv / "bin" / "python"
    _run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        f"pip install {ROOT}",
        env=env,
        timeout=540,
    )

    probe = _run([python, "-c", _PROBE], "import nbpool", cwd=EXAMPLES_DIR, env=env)
    probe = json.loads(probe.stdout)
    assert Path(probe["nbpool"]).is_relative_to(venv), probe
    assert probe["extras"] == [], f"the plain install brought extras: {probe['extras']}"
    assert Path(probe["python3"]).is_relative_to(venv), probe  # the workers' kernelspec

    # Its own python3 kernelspec (from ipykernel), pointed at its Python.
    spec = json.loads((venv / "share/jupyter/kernels/python3/kernel.json").read_text())
    spec["argv"][0] = str(python)
    spec["display_name"] = "Python 3 (nbpool, plain install)"
    spec_dir = root / "jupyter-path" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return PlainInstall(venv=venv, jupyter_path=root / "jupyter-path", env=env)


@pytest.fixture(scope="session")
def bash_kernel_installed():
    if "bash" not in KernelSpecManager().find_kernel_specs():
        pytest.fail(
            "the 'bash' kernelspec is missing: `python -m bash_kernel.install --sys-prefix`"
        )
