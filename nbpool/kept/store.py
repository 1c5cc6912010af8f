"""Kept sessions on disk: the records, the lock and the journal of each kept pool.

A pool with ``keep_sessions=True`` leaves its sessions' workers running
when its process goes (detach, kernel restart, crash). What a later process
needs to find and re-adopt them lives here, readable by the owner only::

    <jupyter_runtime_dir()>/nbpool-kept/     0700, checked to be ours
        <slug>-<hash of the pool name>/      0700, one kept pool
            lock          flock held by the pool attached to these sessions
            keeper.lock   flock held by the pool's keeper process
            state.json    0600: name, boot id, keep_for, detached_at, sessions
            journal-<hash>.jsonl   0600: a session's outputs while unattached

``state.json`` holds each session's worker: its connection info (ports,
HMAC key, CurveZMQ keys), pid and the pid's start time, the session's
generation and kernelspec. The keys never leave these files: not in argv,
not in the environment of another process, not in ``status()``.

The pool lock is the one rule that keeps two live pools from adopting the
same worker: a pool holds it (``flock``, released by the OS if the process
dies) from ``start()`` until ``shutdown()`` or ``detach()``. The keeper
(:mod:`nbpool.kept._keeper`) takes it for a moment each tick to learn that no
pool is attached; it writes ``state.json`` and the journals only while
holding it, and the attached pool only while holding it, so writers never
overlap; a journal is also locked on its own while written or taken. A pool that finds the lock taken retries for :data:`LOCK_PATIENCE`
seconds (the keeper's moment), then raises :class:`~nbpool.errors.PoolInUse`.

Nothing kept survives a reboot pretending to exist: a state written under
another boot id is discarded, and a worker counts as alive only if its pid
runs and started when the record says (a reused pid is not it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time

from ..errors import PoolInUse
from ..kernels.processes import kill_group

#: Bytes of output journaled per session; beyond it the oldest are dropped.
JOURNAL_LIMIT = 10 * 2**20
#: Seconds a pool waits for the pool lock before it is "in use".
LOCK_PATIENCE = 1.0

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def root() -> str:
    """The user's kept-pools directory (created 0700; refused if not the user's)."""
    from jupyter_core.paths import jupyter_runtime_dir

    path = os.path.join(jupyter_runtime_dir(), "nbpool-kept")
    os.makedirs(path, mode=0o700, exist_ok=True)
    _check_private(path)
    return path


def _check_private(path: str) -> None:
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise PermissionError(
            f"{path} belongs to uid {st.st_uid}, not to you: nbpool keeps sessions only in a "
            "directory of your own (remove it, or set JUPYTER_RUNTIME_DIR)"
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def boot_id() -> str:
    """This boot's id (Linux), or "" where there is none."""
    try:
        with open(_BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start(pid: int | None) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None if it is gone.

    A zombie counts as gone. Where there is no /proc, a live pid gives 0.
    """
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    return None if fields[0] == b"Z" else int(fields[19])


def alive(record: dict) -> bool:
    """Whether a session record's worker process still runs (the same process)."""
    start = process_start(record.get("pid"))
    return start is not None and start == record.get("pid_start")


def _slug(name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    tail = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(name.rstrip("/")))[:40]
    return f"{tail or 'pool'}-{digest}"


def _write_private(path: str, data: bytes) -> None:
    """Write ``path`` atomically as an owner-only file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class KeptPool:
    """The kept sessions of one pool name: its directory, lock, state and journals."""

    def __init__(self, name: str, directory: str | None = None) -> None:
        self.name = name
        self.dir = directory or os.path.join(root(), _slug(name))
        self._lock_fd: int | None = None
        self._keeper: subprocess.Popen | None = None  # the keeper this process started

    # -- the pool lock -----------------------------------------------------

    def open_file(self, filename: str) -> int:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        return os.open(os.path.join(self.dir, filename), os.O_RDWR | os.O_CREAT, 0o600)

    def try_lock(self) -> bool:
        """Take the pool lock if it is free now (non-blocking)."""
        fd = self.open_file("lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        self._lock_fd = fd
        return True

    def lock(self, patience: float = LOCK_PATIENCE) -> None:
        """Take the pool lock for this process's pool, or raise PoolInUse."""
        deadline = time.monotonic() + patience
        while not self.try_lock():
            if time.monotonic() >= deadline:
                raise PoolInUse(
                    f"the kept sessions of pool {self.name!r} are attached to another pool "
                    f"(process {self.holder() or 'unknown'}); detach or stop it there "
                    "(%pool detach / %pool stop), or start this pool with another name"
                )
            time.sleep(0.02)
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, str(os.getpid()).encode(), 0)

    def holder(self) -> int | None:
        """The pid that last took the pool lock as a pool (for messages)."""
        try:
            with open(os.path.join(self.dir, "lock")) as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    # -- state -------------------------------------------------------------

    def load(self) -> dict | None:
        """The state, or None if there is none (or it is from another boot: then removed)."""
        try:
            with open(os.path.join(self.dir, "state.json"), encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            return None
        if state.get("boot_id") != boot_id():
            self.remove_files()
            return None
        return state

    def save(self, state: dict) -> None:
        """Write the state (callers hold the pool lock)."""
        state = {**state, "name": self.name, "boot_id": boot_id()}
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        _write_private(os.path.join(self.dir, "state.json"), json.dumps(state).encode())

    def remove_files(self) -> None:
        """Remove the state and the journals (the lock files stay: holders use them)."""
        with contextlib.suppress(OSError):
            for entry in os.listdir(self.dir):
                if entry in ("state.json", "following.json") or entry.startswith("journal-"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.dir, entry))

    def stop_workers(self, state: dict | None) -> int:
        """Kill every live worker of ``state`` (checked by start time); how many."""
        stopped = 0
        for record in (state or {}).get("sessions", {}).values():
            if alive(record):
                kill_group(record["pid"])
                stopped += 1
        return stopped

    def save_following(self, following: dict[str, int]) -> None:
        """The keeper: which sessions' workers (pids) it hears now."""
        _write_private(os.path.join(self.dir, "following.json"), json.dumps(following).encode())

    def following(self) -> dict[str, int]:
        try:
            with open(os.path.join(self.dir, "following.json"), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    # -- journals ----------------------------------------------------------

    def journal_path(self, session: str) -> str:
        digest = hashlib.sha256(session.encode()).hexdigest()[:16]
        return os.path.join(self.dir, f"journal-{digest}.jsonl")

    def journal(self, session: str, outputs: list[dict]) -> None:
        """Append outputs to ``session``'s journal; beyond the limit drop the oldest.

        Journals are locked (``flock``) while written or taken: the keeper
        may append while a pool is attached (output of a cell an earlier
        pool started) just as that pool takes them.
        """
        if not outputs:
            return
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        data = b"".join(json.dumps(o).encode() + b"\n" for o in outputs)
        fd = os.open(self.journal_path(session), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, data)
            if os.fstat(fd).st_size > JOURNAL_LIMIT:
                _trim(fd)
        finally:
            os.close(fd)

    def pending(self, session: str) -> tuple[int, int]:
        """(outputs, bytes) waiting in ``session``'s journal."""
        try:
            with open(self.journal_path(session), "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            return 0, 0
        lines = [line for line in lines if not line.startswith(b'{"dropped":')]
        return len(lines), sum(len(line) for line in lines)

    def take(self, session: str) -> list[dict]:
        """The journaled outputs of ``session`` (nbformat dicts), removed from the journal.

        Dropped output is said first, as a stderr stream.
        """
        try:
            fd = os.open(self.journal_path(session), os.O_RDWR)
        except OSError:
            return []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            lines = _read(fd).splitlines()
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
        outputs = [json.loads(line) for line in lines if line.strip()]
        if outputs and "dropped" in outputs[0]:
            dropped = outputs.pop(0)["dropped"]
            note = (
                f"[nbpool] {dropped / 2**20:.1f} MB of older output of session {session!r} "
                f"was dropped: the journal keeps at most the last {JOURNAL_LIMIT // 2**20} MB\n"
            )
            outputs.insert(0, {"output_type": "stream", "name": "stderr", "text": note})
        return outputs

    # -- the keeper --------------------------------------------------------

    def keeper_running(self) -> bool:
        fd = self.open_file("keeper.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    def ensure_keeper(self) -> None:
        """Start the keeper process of this pool unless one runs.

        Its argv is only this directory; it reads everything else from the
        owner-only files. It runs in a session of its own, so neither a
        Ctrl-C nor the end of the notebook kernel's process group reaches it.
        """
        if self._keeper is not None and self._keeper.poll() is None:
            return  # ours is starting (or running): it takes keeper.lock once imported
        if self.keeper_running():
            return
        with (
            open(os.devnull, "rb") as null_in,
            open(os.path.join(self.dir, "keeper.log"), "ab") as log,
        ):
            os.chmod(log.name, 0o600)
            self._keeper = subprocess.Popen(
                [sys.executable, "-m", "nbpool.kept._keeper", self.dir],
                stdin=null_in,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )


def _read(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _trim(fd: int) -> None:
    """Keep the newest outputs up to 3/4 of the limit, in place; count what was dropped."""
    lines = _read(fd).splitlines(keepends=True)
    dropped = 0
    if lines and lines[0].startswith(b'{"dropped":'):
        dropped = json.loads(lines.pop(0))["dropped"]
    size = sum(len(line) for line in lines)
    while lines and size > JOURNAL_LIMIT * 3 // 4:
        size -= len(lines[0])
        dropped += len(lines.pop(0))
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"dropped": dropped}).encode() + b"\n" + b"".join(lines))


def kept_pools() -> list[tuple[KeptPool, dict]]:
    """Every kept pool of this user with its state (stale ones are cleared)."""
    found = []
    base = root()
    for entry in sorted(os.listdir(base)):
        directory = os.path.join(base, entry)
        try:
            with open(os.path.join(directory, "state.json"), encoding="utf-8") as f:
                name = json.load(f)["name"]
        except (OSError, ValueError, KeyError):
            continue
        kp = KeptPool(name, directory)
        state = kp.load()
        if state is not None:
            found.append((kp, state))
    return found


def expired(state: dict, now: float) -> bool:
    """Whether a detached state sat unattached longer than its keep_for."""
    since = state.get("detached_at")
    return since is not None and now - since >= state.get("keep_for", 3600.0)
