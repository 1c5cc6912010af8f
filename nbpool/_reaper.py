"""The reaper process: kills worker kernels whose pool host died.

Run as ``python -m nbpool._reaper RUNTIME_DIR`` by
:class:`nbpool.provisioning.Reaper`. It reads ``+PGID`` and ``-PGID`` lines
from stdin. Stdin reaches EOF when the pool's process exits, however it
exits (even SIGKILL); then every process group still registered gets
SIGTERM, SIGKILL a second later, and the runtime directory is removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time


def _signal_all(groups: set[int], sig: int) -> set[int]:
    alive = set()
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            alive.add(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    return alive


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin:
        line = line.strip()
        if line[:1] == "+":
            groups.add(int(line[1:]))
        elif line[:1] == "-":
            groups.discard(int(line[1:]))
    alive = _signal_all(groups, signal.SIGTERM)
    deadline = time.monotonic() + 1.0
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = _signal_all(alive, 0)
    _signal_all(alive, signal.SIGKILL)
    shutil.rmtree(sys.argv[1], ignore_errors=True)


if __name__ == "__main__":
    main()
