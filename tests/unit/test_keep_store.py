"""The kept-session files (nbpool.kept.store): bounded journals, stale records, the lock.

No kernels: the store is files and flocks; the keeper and real workers are in
``tests/integration/test_keep.py``.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

import nbpool
from nbpool.kept import store as keep
from nbpool.kept.store import KeptPool


@pytest.fixture(autouse=True)
def runtime_dir(kept_runtime_dir):
    return kept_runtime_dir


def test_the_journal_keeps_the_newest_output_and_says_what_it_dropped(monkeypatch):
    """Beyond the limit the oldest outputs go; replay says how much, then the rest in order."""
    monkeypatch.setattr(keep, "JOURNAL_LIMIT", 4000)
    kp = KeptPool("j")
    for i in range(200):
        kp.journal("s", [{"output_type": "stream", "name": "stdout", "text": f"line {i}\n"}])
    assert os.path.getsize(kp.journal_path("s")) <= 4000
    count, size = kp.pending("s")
    outputs = kp.take("s")
    note, *kept = outputs
    assert note["name"] == "stderr" and "was dropped" in note["text"] and "'s'" in note["text"]
    texts = [o["text"] for o in kept]
    assert texts[-1] == "line 199\n" and len(texts) == count
    first = int(texts[0].split()[1])
    assert texts == [f"line {i}\n" for i in range(first, 200)]
    assert kp.take("s") == [] and kp.pending("s") == (0, 0)


def test_records_of_another_boot_are_discarded():
    """A state written before a reboot never pretends its workers exist."""
    kp = KeptPool("b")
    kp.save({"sessions": {"s": {"pid": os.getpid(), "pid_start": 1}}})
    kp.journal("s", [{"output_type": "stream", "name": "stdout", "text": "x"}])
    path = os.path.join(kp.dir, "state.json")
    with open(path) as f:
        state = json.load(f)
    state["boot_id"] = "another-boot"
    with open(path, "w") as f:
        json.dump(state, f)
    assert kp.load() is None
    assert not os.path.exists(path) and kp.pending("s") == (0, 0)


def test_a_reused_pid_is_not_the_kept_worker():
    """A worker counts as alive only if its pid started when the record says."""
    me = {"pid": os.getpid(), "pid_start": keep.process_start(os.getpid())}
    assert keep.alive(me)
    assert not keep.alive({**me, "pid_start": me["pid_start"] - 1})
    assert not keep.alive({"pid": 2**22 + 12345, "pid_start": 0})


def test_files_are_owner_only_and_the_lock_admits_one_pool():
    """0700 directories, 0600 files; a second pool of the name gets PoolInUse."""
    kp = KeptPool("owner/notebook.ipynb")
    kp.lock()
    kp.save({"sessions": {}})
    try:
        for directory in (keep.root(), kp.dir):
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        for entry in os.listdir(kp.dir):
            assert stat.S_IMODE(os.stat(os.path.join(kp.dir, entry)).st_mode) == 0o600
        with pytest.raises(nbpool.PoolInUse, match=f"process {os.getpid()}"):
            KeptPool("owner/notebook.ipynb").lock(patience=0.05)
    finally:
        kp.unlock()
    other = KeptPool("owner/notebook.ipynb")
    other.lock(patience=0.05)
    other.unlock()


def test_a_lax_directory_is_made_private_and_a_foreign_one_refused(monkeypatch):
    """The kept directory is the user's alone."""
    base = keep.root()
    os.chmod(base, 0o755)
    assert stat.S_IMODE(os.stat(keep.root()).st_mode) == 0o700
    with monkeypatch.context() as patch:
        patch.setattr(os, "getuid", lambda: os.stat(base).st_uid + 1)
        with pytest.raises(PermissionError, match="not to you"):
            keep.root()


def test_pool_names_are_checked_like_session_names():
    """An empty or control-character name is InvalidConfig, before anything starts."""
    with pytest.raises(nbpool.InvalidConfig, match="pool name"):
        nbpool.Pool(name=" ", keep_sessions=True, backend=object())
    with pytest.raises(nbpool.InvalidConfig, match="keep_for"):
        nbpool.Pool(keep_for=0, backend=object())
