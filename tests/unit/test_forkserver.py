"""The fork-server's pure parts: which kernels can be forked, argument handling, memory,
and a ForkedProcess driven as its template drives it (on a plain child process).

The real template and kernels are exercised in tests/integration/test_forkserver.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from nbpool.fork import server as forkserver
from nbpool.fork.server import (
    UNKNOWN_EXIT,
    ForkedProcess,
    ForkUnavailable,
    _connection_file,
    fork_unsupported,
)
from nbpool.kernels.processes import memory

PY = sys.executable


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        ([PY, "-m", "ipykernel_launcher", "-f", "k.json"], None),
        ([PY, "-Xfrozen_modules=off", "-m", "ipykernel", "-f", "k.json"], None),
        (["/usr/bin/bash_kernel", "-f", "k.json"], "does not run `python -m ipykernel_launcher`"),
        ([PY, "-m", "bash_kernel", "-f", "k.json"], "not an ipykernel kernel"),
        (["/opt/R/bin/R", "-m", "ipykernel_launcher"], "does not start a python executable"),
    ],
)
def test_only_python_ipykernel_command_lines_fork(argv, reason):
    """A kernelspec forks only if it runs `python [flags] -m ipykernel[_launcher]`."""
    got = fork_unsupported(argv)
    assert got is None if reason is None else reason in got


def test_other_systems_spawn(monkeypatch):
    """Off Linux the reason names the system (the fork server is Linux-only)."""
    monkeypatch.setattr(sys, "platform", "darwin")
    assert fork_unsupported([PY, "-m", "ipykernel_launcher"]) == (
        "the fork server needs Linux (this is darwin)"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["-f", "/r/k.json", "--x=1"],
        ["--x=1", "--f=/r/k.json"],
        ["-f=/r/k.json", "--x=1"],
        ["--IPKernelApp.connection_file", "/r/k.json", "--x=1"],
    ],
)
def test_connection_file_is_split_from_the_shared_arguments(args):
    """Every child shares the template's arguments; only the connection file differs."""
    assert _connection_file(args) == ("/r/k.json", ["--x=1"])


def test_no_connection_file_means_spawn():
    with pytest.raises(ForkUnavailable, match="no connection file"):
        _connection_file(["--x=1"])


def test_memory_of_this_process():
    """USS <= PSS <= RSS, all nonzero, in bytes; None for a process that is not there."""
    info = memory(os.getpid())
    assert 0 < info.uss <= info.pss <= info.rss
    assert memory(2**22 + 12345) is None


def test_thread_count_follows_the_variables_a_library_reads():
    """The child's BLAS thread count: its first set variable, else one per CPU."""
    import runpy

    template = runpy.run_path(
        os.path.join(os.path.dirname(forkserver.__file__), "_template.py"), run_name="not_main"
    )
    count = template["thread_count"]
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    assert count({"OMP_NUM_THREADS": "3"}, names) == 3
    assert count({"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "3"}, names) == 2
    assert count({"OMP_NUM_THREADS": "4,2"}, names) == 4  # OpenMP's nested form
    assert count({"OMP_NUM_THREADS": "0"}, names) == len(os.sched_getaffinity(0))
    assert count({}, names) == len(os.sched_getaffinity(0))


@pytest.fixture
def sleeper():
    """A child process to stand for a forked worker (ours, so the test reaps it)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


linux = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfds: Linux 5.3")


@linux
def test_a_forked_process_ends_with_the_code_its_template_reports(sleeper):
    """Signals go through the pidfd; the returncode is the template's report."""
    child = ForkedProcess(sleeper.pid, sleeper.args)
    assert child.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(0.1)
    child.kill()
    assert sleeper.wait(10) == -signal.SIGKILL
    assert child.poll() is None, "only the template's report tells the code"
    child.report_exit(-signal.SIGKILL)
    assert child.wait(1) == child.poll() == -signal.SIGKILL
    child.report_exit(0)
    assert child.returncode == -signal.SIGKILL, "the first report stands"


@linux
def test_an_orphaned_forked_process_ends_with_an_unknown_code(sleeper):
    """Once its template died, the pidfd tells the end; the code cannot be known."""
    child = ForkedProcess(sleeper.pid, sleeper.args)
    child.orphan()
    assert child.poll() is None
    sleeper.kill()
    assert child.wait(10) == UNKNOWN_EXIT


@linux
def test_wait_bound_reads_the_childs_pipe_once(sleeper):
    """True once the child wrote "1"; the pipe is then closed, so a second wait is False."""
    r, w = os.pipe()
    child = ForkedProcess(sleeper.pid, sleeper.args, bound_fd=r)
    os.write(w, b"1")
    assert child.wait_bound(1) is True
    assert child.wait_bound(1) is False
    os.close(w)
    r, w = os.pipe()
    os.close(w)  # a child that died before binding: EOF, no "1"
    assert ForkedProcess(sleeper.pid, sleeper.args, bound_fd=r).wait_bound(1) is False
