"""Network namespaces as test "hosts": each with a veth pair and its own address.

A :class:`Host` is a network namespace joined to this machine's root namespace
by a veth pair. All addresses come from ``10.213.47.0/24``, a private block
nothing else here uses: host *i* gets the /30 ``10.213.47.4i`` — its veth end
in the root namespace is ``.4i+1``, the namespace's own address ``.4i+2``.
Traffic goes only between those two addresses (and each side's loopback): the
namespaces have no default route.

Namespace and interface names carry this process's pid, so a run never
touches another run's hosts; :func:`remove_stale` removes hosts left behind by
a run that was killed (its pid is gone).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

SUBNET = "10.213.47"
#: Namespace names: ``nbpool-t<pid>-<n>``; veth ends: ``nbt<pid><h|n><n>`` (<= 15 chars).
NS_PREFIX = "nbpool-t"


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, no iproute2, no permission)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS``; with ``check``, a failure raises :class:`NetnsUnavailable`."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsUnavailable(
            f"`ip {' '.join(args)}` failed with code {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc


def require() -> None:
    """Raise :class:`NetnsUnavailable` saying what is missing, or return."""
    if shutil.which("ip") is None:
        raise NetnsUnavailable(
            "the network-namespace tests need Debian's iproute2 (`ip`): "
            "apt-get install iproute2 (the test command .ci/test installs it as root)"
        )
    if os.geteuid() != 0:
        raise NetnsUnavailable(
            "the network-namespace tests create namespaces and veth pairs, which needs root "
            "(CI runs as root); run them as root, e.g. `sudo .venv/bin/python -m pytest tests/netns`"
        )


@dataclass
class Host:
    """One namespace "host"; ``address`` is its own IP, ``gateway`` our end of the link."""

    name: str
    index: int
    outer: str  # veth end in the root namespace
    inner: str  # veth end inside the namespace

    @property
    def address(self) -> str:
        return f"{SUBNET}.{4 * self.index + 2}"

    @property
    def gateway(self) -> str:
        return f"{SUBNET}.{4 * self.index + 1}"

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def plug(self) -> None:
        """Create the veth pair and addresses (the namespace must exist)."""
        _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        _ip("link", "set", self.inner, "netns", self.name)
        _ip("addr", "add", f"{self.gateway}/30", "dev", self.outer)
        _ip("-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.inner)
        _ip("-n", self.name, "link", "set", self.inner, "up")
        _ip("link", "set", self.outer, "up")

    def cut(self) -> None:
        """Take our end of the link down: the host is unreachable, its processes live on."""
        _ip("link", "set", self.outer, "down")

    def restore(self) -> None:
        """Bring our end of the link back up (after :meth:`cut`)."""
        _ip("link", "set", self.outer, "up")

    def unplug(self) -> None:
        """Remove the link altogether (both veth ends); :meth:`plug` makes a new one."""
        _ip("link", "del", self.outer)

    def link_up(self) -> bool:
        """True once both ends report the link up (carrier on)."""
        proc = _ip("-o", "link", "show", self.outer, check=False)
        return proc.returncode == 0 and "state UP" in proc.stdout

    def pids(self) -> list[int]:
        """Processes running in the namespace."""
        proc = _ip("netns", "pids", self.name, check=False)
        return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


_counter = 0


def create(label: str = "") -> Host:
    """Create a namespace host on the first free /30 of the subnet.

    Raises
    ------
    NetnsUnavailable
        Not root, no ``ip``, or the kernel refused a namespace or veth pair.
    """
    global _counter
    require()
    used = set(re.findall(rf"inet ({re.escape(SUBNET)}\.\d+)/", _ip("-o", "-4", "addr").stdout))
    index = next(
        (i for i in range(64) if f"{SUBNET}.{4 * i + 1}" not in used),
        None,
    )
    if index is None:
        raise NetnsUnavailable(f"all 64 test subnets of {SUBNET}.0/24 are in use")
    _counter += 1
    pid = os.getpid()
    host = Host(
        name=f"{NS_PREFIX}{pid}-{_counter}{label and '-' + label}",
        index=index,
        outer=f"nbt{pid}h{_counter}",
        inner=f"nbt{pid}n{_counter}",
    )
    _ip("netns", "add", host.name)
    try:
        _ip("-n", host.name, "link", "set", "lo", "up")
        host.plug()
    except BaseException:
        remove(host)
        raise
    return host


def remove(host: Host, timeout: float = 10.0) -> list[int]:
    """Kill what still runs in the namespace (by pid), delete link and namespace.

    Returns the pids that had to be killed (a test may assert there were none).
    """
    leftovers = host.pids()
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while host.pids() and time.monotonic() < deadline:
        time.sleep(0.02)  # reaping of just-killed processes; bounded by the deadline
    _ip("link", "del", host.outer, check=False)
    _ip("netns", "del", host.name, check=False)
    return leftovers


def remove_stale() -> list[str]:
    """Remove test namespaces whose creating process is gone; returns their names."""
    proc = _ip("netns", "list", check=False)
    removed = []
    for line in proc.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{NS_PREFIX}(\d+)-(\d+)(-.*)?", name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            pid, n = match.group(1), match.group(2)
            remove(Host(name, -1, f"nbt{pid}h{n}", f"nbt{pid}n{n}"))
            removed.append(name)
    return removed


class Capture:
    """Every frame crossing a host's link while the ``with`` block runs (AF_PACKET).

    Tests use it to show what an eavesdropper on the link would read:
    ``capture.data`` is the concatenated raw frames.
    """

    def __init__(self, host: Host) -> None:
        self._iface = host.outer
        self._frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Capture":
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        sock.bind((self._iface, 0))
        sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def _run(self, sock: socket.socket) -> None:
        with sock:
            while not self._stop.is_set():
                try:
                    self._frames.append(sock.recv(65535))
                except socket.timeout:
                    continue

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def data(self) -> bytes:
        return b"".join(self._frames)
