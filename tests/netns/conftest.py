"""Namespace hosts, the test provisioner and kernelspecs for workers "on other machines".

Every fixture here that creates a namespace removes it at teardown, also when
the test failed, and kills what still runs in it by pid. A namespace that
cannot be created fails the test with the reason (CI runs as root; locally,
run these tests as root): it is never a skip.
"""

from __future__ import annotations

import os
import sys

import pytest

from tests.helpers import extra_jupyter_path
from tests.netns import hosts, provisioner
from tests.netns.sshhost import SSHD, SshHost


@pytest.fixture(scope="session")
def netns_ok():
    """Namespaces can be made here; stale ones of killed runs are removed first."""
    try:
        hosts.require()
    except hosts.NetnsUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    hosts.remove_stale()


def _make_host(label: str) -> hosts.Host:
    try:
        return hosts.create(label)
    except hosts.NetnsUnavailable as exc:
        pytest.fail(f"could not create network namespace {label!r}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def jupyter_path(tmp_path_factory):
    """A private JUPYTER_PATH directory whose ``kernels/`` the fixtures write specs into."""
    root = tmp_path_factory.mktemp("netns-jupyter-path")
    (root / "kernels").mkdir()
    with extra_jupyter_path(root):
        yield root


@pytest.fixture(scope="session")
def netns_provisioner(tmp_path_factory, jupyter_path):
    """The test provisioner, registered through a ``jupyter_client.kernel_provisioners`` entry point."""
    old = os.environ.get("PYTHONPATH")
    directory = provisioner.register(tmp_path_factory.mktemp("netns-provisioner"))
    yield provisioner.NAME
    provisioner.unregister(directory, old)


class RemoteHost:
    """A namespace host plus the kernelspecs that start kernels on it."""

    def __init__(self, host: hosts.Host, kernels_dir) -> None:
        self.host = host
        self.kernel = provisioner.write_kernelspec(
            kernels_dir, f"netns-{host.name}", host.name, host.address
        )
        self.plain_kernel = provisioner.write_kernelspec(
            kernels_dir, f"netns-{host.name}-plain", host.name, host.address, curve=False
        )

    def __getattr__(self, name):
        return getattr(self.host, name)


def _remote_host(label, jupyter_path):
    host = _make_host(label)
    try:
        yield RemoteHost(host, jupyter_path / "kernels")
    finally:
        hosts.remove(host)


@pytest.fixture(scope="module")
def remote(netns_ok, netns_provisioner, jupyter_path):
    """A namespace host shared by a module's tests that do not break its link."""
    yield from _remote_host("shared", jupyter_path)


@pytest.fixture
def flaky_remote(netns_ok, netns_provisioner, jupyter_path):
    """A fresh namespace host for one test that cuts or removes its link."""
    yield from _remote_host("flaky", jupyter_path)


@pytest.fixture(scope="module")
def ssh_host(netns_ok, jupyter_path, tmp_path_factory):
    """A namespace host with sshd, its SSH kernelspec, and both SSH clients set up for it."""
    if not os.access(SSHD, os.X_OK):
        pytest.fail(
            f"the SSH tests need Debian's sshd at {SSHD}: apt-get install "
            "openssh-server (the test command .ci/test installs it as root)",
            pytrace=False,
        )
    host = _make_host("ssh")
    ssh = None
    try:
        ssh = SshHost(host, tmp_path_factory.mktemp("ssh-host"))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HOME", str(ssh.home))
            mp.setenv("PATH", os.pathsep.join([str(ssh.bin), os.environ["PATH"]]))
            mp.setenv("GP_RESPONSE_IP", host.gateway)
            mp.setenv("GP_KERNEL_LOG_DIR", str(ssh.remote_tmp))
            mp.setenv("GP_UNAUTHORIZED_USERS", "")
            paths = [str(ssh.jupyter_dir), os.environ["JUPYTER_PATH"]]
            mp.setenv("JUPYTER_PATH", os.pathsep.join(paths))
            rm = sys.modules.get("gateway_provisioners.response_manager")
            if rm is not None:  # imported earlier: its response address was read then
                mp.setattr(rm, "response_ip", host.gateway)
            yield ssh
    finally:
        if ssh is not None:
            ssh.close()
        hosts.remove(host)
