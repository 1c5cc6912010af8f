"""SSH tunnels to attached kernels that only SSH can reach.

One :class:`SshTunnel` is one ``ssh -L`` process forwarding a kernel's five
ports to loopback here; nbpool then talks to the kernel as if it were local
(SSH encrypts the link). The process is nbpool's own: it starts in its own
process group, the reaper kills it if the notebook process dies, it is
stopped when the worker is detached, and if it exits (the link or the SSH
server went away) the worker counts as dead at once, with ssh's own reason.

Why not jupyter_client's ``tunnel_to_kernel``: its OpenSSH path starts one
``ssh -f`` per port under a pexpect pty. The backgrounded ssh is still in the
pty's session when its parent exits, so it can get that session's SIGHUP: on
this machine 5 of 8 such tunnels died within a second. Those processes also
outlive the pool for up to a minute and cannot be stopped by pid, and a login
that needs a password calls ``getpass`` on a terminal a notebook does not
have. The ports are still chosen by jupyter_client's helper, and the login
is ssh's: ``~/.ssh/config`` (aliases, ``ProxyJump``, keys) applies.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import time
from typing import TYPE_CHECKING

from jupyter_client.ssh.tunnel import select_random_ports

from ..errors import AttachFailed, InvalidConfig
from .processes import PORT_RACE_TRIES

if TYPE_CHECKING:
    from .kernel import Runtime

#: A connection file's ports, in the order the tunnel forwards them.
PORT_KEYS = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")

#: The remote command that holds the session open. The session has a
#: terminal (``-tt``) because that is what makes ssh and sshd set
#: TCP_NODELAY: without it, Nagle's algorithm and delayed ACKs held most
#: executions here for 40 ms (median 47 ms instead of 6 ms). sshd hangs the
#: command up when the connection closes.
IDLE_COMMAND = "exec sleep 2147483647"


class SshTunnel:
    """An ``ssh -L ...`` process forwarding one kernel's ports to 127.0.0.1.

    ``ports`` maps each of :data:`PORT_KEYS` to its local port. The reaper
    knows the process from the moment it starts until :meth:`close`.
    """

    def __init__(self, proc: subprocess.Popen, server: str, log_path: str, reaper) -> None:
        self._proc = proc
        self.server = server
        self.ports: dict[str, int] = {}
        self.pid = proc.pid
        self._log_path = log_path
        self._reaper = reaper
        reaper.watch(self.pid)

    @classmethod
    def open(
        cls,
        where: str,
        info: dict,
        server: str,
        sshkey: str | None,
        timeout: float,
        runtime: Runtime,
    ) -> SshTunnel:
        """Log in to ``server`` and forward the kernel's ports; blocking.

        ``where`` names the connection file in messages; ``runtime``
        provides the runtime directory (ssh's log) and the reaper.

        Raises
        ------
        AttachFailed
            Not a tcp kernel, no ssh client, a missing key file, a login that
            fails or needs a prompt (ssh's reason is quoted), or no tunnel
            within ``timeout``.
        """
        if info["transport"] != "tcp":
            raise AttachFailed(
                f"{where}: a kernel on {info['transport']} transport cannot be reached over SSH"
            )
        if sshkey is not None and not os.path.isfile(os.path.expanduser(sshkey)):
            raise AttachFailed(f"{where}: the SSH key file {sshkey} does not exist")
        log_path = os.path.join(runtime.runtime_dir, f"ssh-{os.urandom(4).hex()}.log")
        for attempt in range(1, PORT_RACE_TRIES + 1):
            local = select_random_ports(len(PORT_KEYS))
            forwards = [
                f"127.0.0.1:{lport}:{info['ip']}:{info[key]}"
                for lport, key in zip(local, PORT_KEYS)
            ]
            argv = _argv(server, sshkey, forwards, timeout)
            tunnel = cls._start(where, argv, server, log_path, runtime.reaper)
            tunnel.ports = dict(zip(PORT_KEYS, local))
            try:
                failure = tunnel._wait_listening(timeout)
            except BaseException:  # Ctrl-C in the cell, pool shutdown: never leave ssh behind
                tunnel.close()
                raise
            if failure is None:
                return tunnel
            port_taken = "Address already in use" in tunnel._log_text()  # taken since chosen
            tunnel.close()
            if not port_taken or attempt == PORT_RACE_TRIES:
                raise AttachFailed(f"{where}: ssh to {server} {failure}")
        raise AssertionError("unreachable")

    @classmethod
    def _start(cls, where: str, argv: list[str], server: str, log_path: str, reaper) -> "SshTunnel":
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # its own group: the reaper can kill it by pid
                )
            except FileNotFoundError:
                os.unlink(log_path)
                raise AttachFailed(
                    f"{where}: tunnelling over SSH needs the OpenSSH client `ssh` on PATH "
                    "(e.g. apt-get install openssh-client)"
                ) from None
        return cls(proc, server, log_path, reaper)

    def _wait_listening(self, timeout: float) -> str | None:
        """None once every local port accepts connections, else why not (ssh stopped)."""
        deadline = time.monotonic() + timeout
        pending = list(self.ports.values())
        while pending:
            if self._proc.poll() is not None:
                return f"failed: {self.reason()}"
            if time.monotonic() >= deadline:
                return f"did not log in and forward the kernel's ports within {timeout:g} s"
            with socket.socket() as probe:
                probe.settimeout(0.1)
                if probe.connect_ex(("127.0.0.1", pending[0])) == 0:
                    pending.pop(0)
                    continue
            time.sleep(0.05)  # ssh is still logging in; bounded by the deadline
        # A port another program took answers the probe too; ssh then exits
        # at once (ExitOnForwardFailure) after binding the others.
        if self._proc.poll() is not None:
            return f"failed: {self.reason()}"
        return None

    def _log_text(self) -> str:
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def reason(self) -> str:
        """Why ssh exited, in its own words (the last line it wrote), or its code."""
        lines = [line.strip() for line in self._log_text().splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit code {self._proc.poll()}"
        # ssh says "user@host: Permission denied (publickey)."
        detail = detail.removeprefix(f"{_split(self.server)[0]}: ")
        if "Permission denied" in detail or "verification failed" in detail:
            detail += (
                " (the login must work without prompts: check "
                f"`ssh -o BatchMode=yes {self.server} exit`)"
            )
        return detail

    def poll(self) -> str | None:
        """Why the tunnel is gone, or None while it runs."""
        if self._proc.poll() is None:
            return None
        return f"its SSH tunnel exited: {self.reason()}"

    def close(self) -> None:
        """Stop ssh and remove its log; idempotent, blocking briefly."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reaper.forget(self.pid)
        try:
            os.unlink(self._log_path)
        except OSError:
            pass


def check_server(server) -> None:
    """Raise :class:`InvalidConfig` unless ``server`` reads as ``[user@]host[:port]``."""
    if (
        not isinstance(server, str)
        or not server.strip()
        or server.startswith("-")
        or any(c.isspace() for c in server)
    ):
        raise InvalidConfig(
            f"sshserver must be '[user@]host[:port]' (no spaces, not starting with '-'), "
            f"got {server!r}"
        )


def _split(server: str) -> tuple[str, str]:
    """``(user@host, port)``; an IPv6 address (several colons) has no port part."""
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, port
    return server, ""


def _argv(server: str, sshkey: str | None, forwards: list[str], timeout: float) -> list[str]:
    host, port = _split(server)
    argv = [
        "ssh",
        "-tt",
        "-o",
        "BatchMode=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        f"ConnectTimeout={max(1, math.ceil(timeout))}",
    ]
    argv += ["-i", os.path.expanduser(sshkey)] if sshkey else []
    argv += ["-p", port] if port else []
    for forward in forwards:
        argv += ["-L", forward]
    return [*argv, "--", host, IDLE_COMMAND]
