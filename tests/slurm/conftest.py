"""A real Slurm cluster for the Slurm tests, the ``nbpool-slurm`` provisioner and its kernelspecs.

The cluster (munged, slurmctld, slurmd; :mod:`.cluster`) is started once and
stopped by pid at the end, also when tests failed. Its second node runs in a
network namespace (:mod:`tests.netns.hosts`), so a worker can run on another
"host". A machine without Slurm, munge, iproute2 or root fails these tests
with the reason (CI runs as root and ``.ci/test`` installs the packages):
they are never skipped.
"""

from __future__ import annotations

import os
import sys

import pytest

from nbpool.__main__ import main as nbpool_main
from tests.helpers import extra_jupyter_path
from tests.netns import hosts
from tests.slurm.cluster import SlurmCluster, SlurmUnavailable, entry_point_dir, source_root


@pytest.fixture(scope="module")
def slurm():
    """The running cluster; its SLURM_CONF is in this process's environment meanwhile.

    Its second node ``far`` (partition ``far``) runs in a network namespace.
    """
    try:
        hosts.require()
        hosts.remove_stale()
        far = hosts.create("slurm")
    except hosts.NetnsUnavailable as exc:
        pytest.fail(f"the Slurm tests' second node: {exc}", pytrace=False)
    try:
        try:
            cluster = SlurmCluster(far)
        except SlurmUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            cluster.start()
        except SlurmUnavailable as exc:
            cluster.stop()  # the daemons that did start
            pytest.fail(str(exc), pytrace=False)
        try:
            with pytest.MonkeyPatch.context() as mp:
                for key, value in cluster.env().items():
                    mp.setenv(key, value)
                yield cluster
        finally:
            cluster.stop()
    finally:
        hosts.remove(far)


@pytest.fixture(scope="module")
def slurm_provisioner(tmp_path_factory):
    """``nbpool-slurm`` discoverable as an entry point, also by child processes."""
    root = entry_point_dir(tmp_path_factory.mktemp("slurm-entry-point"))
    if root is None:  # an installed nbpool registers it
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        paths = [str(root), source_root(), os.environ.get("PYTHONPATH", "")]
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
        yield


class Specs:
    """Installs kernelspecs with ``python -m nbpool slurm-spec install`` into a private prefix."""

    def __init__(self, prefix, shared) -> None:
        self.prefix, self.shared = prefix, shared

    def install(self, name: str, *args: str) -> str:
        argv = [
            "slurm-spec",
            "install",
            "--name",
            name,
            "--prefix",
            str(self.prefix),
            "--python",
            sys.executable,
            "--shared-dir",
            str(self.shared),
            *args,
        ]
        assert nbpool_main(argv) == 0
        return name


@pytest.fixture(scope="module")
def specs(slurm, slurm_provisioner, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("slurm-kernelspecs")
    with extra_jupyter_path(prefix / "share" / "jupyter"):
        yield Specs(prefix, slurm.shared)


@pytest.fixture(scope="module")
def slurm_py(specs):
    """A kernelspec with one batch job per kernel, on the test partition."""
    return specs.install("slurm_py", "--partition", "debug", "--time", "10")


@pytest.fixture
def no_jobs_left(slurm):
    """Checks after the test that it left no job in the queue and no kernel files."""
    yield
    assert slurm.jobs() == {}, "a test left jobs in the queue"
    assert list(slurm.shared.iterdir()) == [], "a test left kernel directories behind"
