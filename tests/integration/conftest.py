"""Real kernels for integration tests: ipykernel, bash_kernel and bad kernelspecs.

The bad kernelspecs are written to a private JUPYTER_PATH directory for the
test session, so jupyter_client finds them like any installed kernelspec.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager

import nbpool
from tests.helpers import extra_jupyter_path

KERNELS = Path(__file__).parent / "kernels"

BAD_SPECS = {
    "nbpool-test-exits": [
        sys.executable,
        "-c",
        "import sys; sys.stderr.write('fatal: cannot load libfoo.so.1\\n'); sys.exit(3)",
        "{connection_file}",
    ],
    "nbpool-test-slow": [
        sys.executable,
        "-c",
        "import runpy, sys, time; time.sleep(2); sys.argv = ['ipykernel', '-f', sys.argv[1]]; "
        "runpy.run_module('ipykernel_launcher', run_name='__main__')",
        "{connection_file}",
    ],
    "nbpool-test-hang": [
        sys.executable,
        str(KERNELS / "badkernel.py"),
        "hang",
        "-f",
        "{connection_file}",
    ],
    "nbpool-test-segfault": [
        sys.executable,
        str(KERNELS / "badkernel.py"),
        "segfault",
        "-f",
        "{connection_file}",
    ],
    "nbpool-test-exit": [
        sys.executable,
        str(KERNELS / "badkernel.py"),
        "exit",
        "-f",
        "{connection_file}",
    ],
}


@pytest.fixture(scope="session", autouse=True)
def bad_kernelspecs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jupyter-path")
    for name, argv in BAD_SPECS.items():
        spec = root / "kernels" / name
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(
            json.dumps({"argv": argv, "display_name": name, "language": "python"})
        )
    with extra_jupyter_path(root):
        yield root


@pytest.fixture(scope="session")
def bash_kernel():
    if "bash" not in KernelSpecManager().find_kernel_specs():
        pytest.fail(
            "the 'bash' kernelspec is missing: install it with "
            "`python -m bash_kernel.install --sys-prefix` (the test command does)"
        )
    return "bash"


@pytest.fixture
def pool():
    with nbpool.Pool(size=1, max_size=3, heartbeat_timeout=2.0) as p:
        yield p


@pytest.fixture(scope="module")
def shared_pool():
    """A warm pool for tests that do not break workers."""
    with nbpool.Pool(size=3, max_size=12) as p:
        yield p
