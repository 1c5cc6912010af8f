"""A namespace host running Debian's sshd, and an SSH client configured for it.

The host gets its own host key and one authorized client key. Two kinds of
SSH client use it: paramiko (gateway_provisioners) finds the key and
``known_hosts`` under ``$HOME``; the OpenSSH client (nbpool's SSH tunnels)
reads ``~/.ssh`` from the real home directory, which tests must not touch, so
an ``ssh`` first on ``PATH`` adds ``-F`` with a config naming the known_hosts
file, as a user's ``~/.ssh/config`` could; the tests pass the key themselves.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.netns import hosts

SSHD = "/usr/sbin/sshd"
#: An ssh config alias for the host whose host key is not in its known_hosts.
UNKNOWN_ALIAS = "unknown-host-key"


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class SshHost:
    """A namespace host with sshd on its address and an SSH kernelspec for it."""

    def __init__(self, host: hosts.Host, root: Path) -> None:
        self.host, self.root = host, root
        self.home, self.remote_tmp, etc = root / "home", root / "remote-tmp", root / "sshd"
        self.remote_home = root / "remote-home"
        for d in (self.home / ".ssh", self.remote_tmp, self.remote_home, etc):
            d.mkdir(parents=True, mode=0o700)
        _keygen(etc / "host_key")
        self.key = self.home / ".ssh" / "id_ed25519"  # paramiko finds it under $HOME
        _keygen(self.key)
        (etc / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        kind, key = (etc / "host_key.pub").read_text().split()[:2]
        self.known_hosts = self.home / ".ssh" / "known_hosts"
        self.known_hosts.write_text(f"{host.address} {kind} {key}\n")
        self.bin = self._openssh_client(root)
        (etc / "sshd_config").write_text(
            f"ListenAddress {host.address}\nPort 22\nHostKey {etc}/host_key\n"
            f"AuthorizedKeysFile {etc}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            # The "remote" account's HOME is its own: bash run by sshd reads
            # ~/.bashrc, and this machine's runs `pyenv init` (see the root conftest).
            f"StrictModes no\nPidFile none\n"
            f"SetEnv TMPDIR={self.remote_tmp} HOME={self.remote_home}\n"
        )
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        self._log = open(root / "sshd.log", "wb")
        self.sshd = subprocess.Popen(
            host.argv([SSHD, "-D", "-e", "-f", str(etc / "sshd_config")]),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._listening, timeout=15, what=f"sshd listening on {host.address}:22")
        self.kernel = self._kernelspec()

    def _openssh_client(self, root: Path) -> Path:
        """A directory with an ``ssh`` that uses this host's keys and known_hosts."""
        config = root / "ssh_config"
        config.write_text(
            f"Host {self.host.address}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
            # the same sshd under a name whose host key nobody recorded
            f"Host {UNKNOWN_ALIAS}\n  HostName {self.host.address}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {root / 'no_known_hosts'}\n  StrictHostKeyChecking yes\n"
        )
        bin_dir = root / "bin"
        bin_dir.mkdir()
        wrapper = bin_dir / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {config} "$@"\n')
        wrapper.chmod(0o755)
        return bin_dir

    def _listening(self) -> bool:
        if self.sshd.poll() is not None:
            pytest.fail(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex((self.host.address, 22)) == 0

    def _kernelspec(self) -> str:
        name = f"ssh-{self.host.name}"
        prefix = self.root / "prefix"
        tool = Path(sys.executable).parent / "jupyter-ssh-spec"
        subprocess.run(
            [
                str(tool),
                "install",
                f"--prefix={prefix}",
                f"--kernel-name={name}",
                f"--remote-hosts={self.host.address}",
            ],
            check=True,
            capture_output=True,
        )
        self.jupyter_dir = prefix / "share" / "jupyter"
        spec_file = self.jupyter_dir / "kernels" / name / "kernel.json"
        spec = json.loads(spec_file.read_text())
        spec["argv"][0] = sys.executable  # the host's Python with ipykernel
        spec_file.write_text(json.dumps(spec))
        return name

    def start_loopback_kernel(
        self, path: Path, log, args: tuple[str, ...] | list[str] = ()
    ) -> subprocess.Popen:
        """An ipykernel on this host bound to the host's own 127.0.0.1 only.

        Writes the connection file at ``path`` (a fresh key); ``ip netns exec``
        execs the kernel, so the returned process's pid is the kernel's.
        """
        from jupyter_client.connect import write_connection_file

        write_connection_file(str(path), ip="127.0.0.1", key=os.urandom(16).hex().encode())
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", str(path), *args]
        return subprocess.Popen(self.host.argv(argv), stdout=log, stderr=subprocess.STDOUT)

    def kernel_pids(self) -> list[int]:
        """Processes on the host other than sshd (kernels, their listeners)."""
        return [p for p in self.host.pids() if p != self.sshd.pid]

    def close(self) -> None:
        self.sshd.kill()
        self.sshd.wait()
        self._log.close()
