"""Fixtures for every tier: a private runtime dir for kept sessions, and a
``bash`` kernelspec with a clean HOME; the markers of the tiers. Helpers are
in :mod:`tests.helpers`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import extra_jupyter_path, pids_with, wait_for

#: The markers every test of a tier gets, by the tier's directory under tests/
#: (registered in pyproject.toml). They are there to deselect tiers
#: (``pytest -m "not needs_root and not browser"``); a tier that is selected
#: but cannot run here fails saying why, it is never skipped.
TIER_MARKERS = {
    "netns": ("network", "needs_root"),
    "slurm": ("slurm", "needs_root"),
    "browser": ("browser",),
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items) -> None:
    """Mark every test of a tier in :data:`TIER_MARKERS` with that tier's markers."""
    root = Path(__file__).parent
    for item in items:
        if root in item.path.parents:
            for name in TIER_MARKERS.get(item.path.relative_to(root).parts[0], ()):
                item.add_marker(name)


@pytest.fixture
def kept_runtime_dir(tmp_path, monkeypatch):
    """A private Jupyter runtime dir for kept sessions (keepers and kernels started
    from here inherit it); nothing kept may outlive the test."""
    from nbpool.kept.store import kept_pools, process_start

    path = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(path))
    yield path
    leftovers = []
    for kp, state in kept_pools():
        leftovers += [r["pid"] for r in state["sessions"].values() if process_start(r["pid"])]
        kp.stop_workers(state)
        kp.remove_files()
    wait_for(lambda: not pids_with(str(path).encode()), 15, "the keepers of this test to exit")
    assert not leftovers, f"the test left kept workers running: {leftovers}"


@pytest.fixture(scope="session", autouse=True)
def bash_kernel_with_a_clean_home(tmp_path_factory):
    """The ``bash`` kernelspec, shadowed by a copy whose kernels get an empty HOME.

    bash_kernel starts an interactive bash that reads ``~/.bashrc``. On this
    kind of machine that runs ``pyenv init``, whose ``pyenv rehash`` takes a
    lock file; a bash worker killed at that moment (tests stop pools while
    workers start) leaves the lock behind, and every later bash start then
    waits 60 s for it and fails bash_kernel's 30 s prompt timeout. The tests
    are about nbpool, not the machine's shell setup.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("bash")
    except NoSuchKernel:  # the tests that need it fail saying how to install it
        yield
        return
    root = tmp_path_factory.mktemp("bash-kernelspec")
    home = root / "home"
    home.mkdir()
    (root / "kernels" / "bash").mkdir(parents=True)
    shadow = spec.to_dict()
    shadow["env"] = {**shadow.get("env", {}), "HOME": str(home)}
    (root / "kernels" / "bash" / "kernel.json").write_text(json.dumps(shadow))
    with extra_jupyter_path(root):
        yield
