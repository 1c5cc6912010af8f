"""``pool.map`` / ``pool.imap`` on real kernels: order, isolation, failures, cancellation."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

import nbpool
from tests.helpers import extra_jupyter_path, wait_for

#: How the workers start: forked from the template, or spawned (the task
#: handler must serve both alike).
STARTS = {"fork": "auto", "spawn": "never"}


@pytest.fixture(scope="module", params=sorted(STARTS))
def start(request):
    return request.param


@pytest.fixture(scope="module")
def mpool(start):
    """A warm pool whose workers the tests here do not break, forked or spawned."""
    with nbpool.Pool(size=2, max_size=4, fork_server=STARTS[start]) as p:
        p.start()
        assert {w["started"] for w in p.status()["workers"]} == {start}
        yield p


def _barrier(path: str, parties: int):
    """A task that records its worker's pid in ``path`` and waits until ``parties`` did."""

    def task(x):
        import os
        import time

        open(os.path.join(path, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 30
        while len(os.listdir(path)) < parties:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {os.listdir(path)} workers took part")
            time.sleep(0.005)
        return os.getpid()

    return task


def _busy(pool) -> list[str]:
    return [w["id"] for w in pool.status()["workers"] if w["state"] in ("busy", "leased")]


def test_results_come_back_in_input_order(mpool):
    """map returns fn(x) for every item in input order, for any chunk size; imap the same."""
    items = list(range(-50, 50))
    assert mpool.map(abs, items) == [abs(x) for x in items]
    assert mpool.map(abs, items, chunksize=1) == [abs(x) for x in items]
    assert mpool.map(abs, items, chunksize=7) == [abs(x) for x in items]
    assert list(mpool.imap(abs, items, chunksize=3)) == [abs(x) for x in items]
    assert mpool.map(abs, []) == [] and list(mpool.imap(abs, iter([]))) == []


def test_lambdas_and_closures_travel_by_value(mpool):
    """A lambda and a closure over a local variable and a local function run on the workers."""
    offset = 100

    def shift(x):
        return x + offset

    assert mpool.map(lambda x: shift(x) * 2, range(5)) == [200, 202, 204, 206, 208]
    assert mpool.map(lambda pair: pair[0] ** pair[1], [(2, 3), (3, 2)]) == [8, 9]


def test_numpy_arrays_round_trip_out_of_band_and_writable(mpool):
    """Arrays go out and come back intact (pickle protocol 5 frames) and are writable."""
    arrays = [np.arange(300_000, dtype=np.float64) * i for i in range(3)]
    out = mpool.map(lambda a: a * 2, arrays)
    for a, b in zip(arrays, out):
        np.testing.assert_array_equal(b, a * 2)
    out[0][0] = 1.0  # not a read-only view on a received frame


def test_tasks_use_several_workers_none_of_them_a_sessions(tmp_path, mpool):
    """With a session bound, a map runs on two session-free workers (one started for it)."""
    mpool.execute("x = 1", session="kept")
    session_pid = next(w["pid"] for w in mpool.status()["workers"] if w["session"] == "kept")
    pids = mpool.map(_barrier(str(tmp_path), 2), range(4), chunksize=1)
    assert len(set(pids)) == 2 and session_pid not in pids
    workers = {w["pid"]: w for w in mpool.status()["workers"]}
    assert all(workers[pid]["session"] is None and workers[pid]["state"] == "idle" for pid in pids)


def test_a_sessions_state_is_untouched_by_a_map(mpool):
    """A session's variables and execution count are the same after a map; its worker
    runs no task; a worker that ran tasks has nothing of them in its user namespace."""
    probe = "sorted(k for k in globals() if not k.startswith('_')), y"
    mpool.execute("y = 41", session="state")
    before = mpool.execute(probe, session="state")
    mpool.map(lambda v: v + 1, range(20))
    after = mpool.execute(probe, session="state")
    assert after.result == before.result and before.result.endswith("'y'], 41)")
    assert after.execution_count == before.execution_count + 1
    # A fresh session on a worker that ran tasks sees a clean namespace.
    mpool.map(lambda v: v, range(8), chunksize=1)
    clean = mpool.execute("sorted(k for k in globals() if not k.startswith('_'))", session="new")
    assert clean.result == "['In', 'Out', 'exit', 'get_ipython', 'open', 'quit']", clean.result
    assert clean.execution_count == 1


def test_a_raising_task_gives_its_index_and_the_remote_traceback(mpool):
    """TaskFailed carries the failing item's index and the worker's traceback; no worker
    stays busy."""

    def inverse(x):
        return 1 / (x - 13)

    with pytest.raises(nbpool.TaskFailed) as info:
        mpool.map(inverse, range(40), chunksize=4)
    failed = info.value
    assert failed.index == 13 and isinstance(failed, nbpool.NbpoolError)
    assert failed.error.ename == "ZeroDivisionError"
    assert "item 13" in str(failed) and "ZeroDivisionError" in str(failed)
    text = "\n".join(failed.error.traceback)
    assert "in inverse" in text and "1 / (x - 13)" in text
    assert _busy(mpool) == []


def test_imap_yields_before_the_end_and_up_to_a_failure(tmp_path, mpool):
    """imap's first result arrives while later tasks still wait; results before a failing
    item are yielded, then TaskFailed."""
    gate = tmp_path / "go"

    def gated(x):
        import os
        import time

        deadline = time.monotonic() + 30
        while x > 0 and not os.path.exists(gate):
            if time.monotonic() > deadline:
                raise TimeoutError("gate never opened")
            time.sleep(0.005)
        return x

    it = mpool.imap(gated, range(6), chunksize=1)
    assert next(it) == 0  # the others are still waiting for the gate
    gate.touch()
    assert list(it) == [1, 2, 3, 4, 5]

    seen = []
    with pytest.raises(nbpool.TaskFailed) as info:
        for value in mpool.imap(lambda x: 10 // (5 - x), range(8), chunksize=2):
            seen.append(value)
    assert info.value.index == 5 and seen == [2, 2, 3, 5, 10]


def test_timeout_interrupts_and_leaves_no_worker_busy(mpool):
    """On expiry the workers are interrupted and ExecutionTimeout is raised once none is busy;
    the workers are reused."""
    t0 = time.monotonic()
    with pytest.raises(nbpool.ExecutionTimeout, match="timeout"):
        mpool.map(lambda s: __import__("time").sleep(s), [30] * 4, timeout=1)
    assert time.monotonic() - t0 < 10
    assert _busy(mpool) == []
    assert mpool.map(abs, [-1, -2]) == [1, 2]


def test_ctrl_c_cancels_the_map_and_interrupts_the_workers(mpool):
    """A KeyboardInterrupt in the calling thread (what a notebook interrupt raises) stops the
    map, interrupts its workers and leaves none busy."""

    def interrupt_when_busy():
        wait_for(lambda: _busy(mpool), 30, "the map's workers to be busy")
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=interrupt_when_busy, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        mpool.map(lambda s: __import__("time").sleep(s), [30] * 4, chunksize=1)
    assert _busy(mpool) == []
    assert mpool.map(abs, [-3]) == [3]


def test_a_task_raising_keyboardinterrupt_or_systemexit_is_a_clear_task_failure(mpool):
    """The handler replies whatever a task raises: KeyboardInterrupt and SystemExit raised by a
    task itself are TaskFailed with its index and traceback, the results before it are kept, and
    the worker serves the next map."""

    def stop(x):
        if x == 6:
            raise KeyboardInterrupt("task gave up")
        if x == 9:
            raise SystemExit(3)
        return x

    for items, index, ename, evalue in (
        (range(8), 6, "KeyboardInterrupt", "task gave up"),
        (range(7, 12), 2, "SystemExit", "3"),  # item 9 is the third
    ):
        seen = []
        with pytest.raises(nbpool.TaskFailed) as info:
            # One chunk: no other chunk is interrupted by the stop (its results would be lost).
            for value in mpool.imap(stop, items, chunksize=len(items)):
                seen.append(value)
        failed = info.value
        assert (failed.index, failed.error.ename, failed.error.evalue) == (index, ename, evalue)
        assert f"item {index} raised {ename}" in str(failed)
        assert "in stop" in "\n".join(failed.error.traceback)
        assert seen == list(items)[:index]
        assert _busy(mpool) == []
    assert mpool.map(abs, [-4, -5], chunksize=1) == [4, 5]


@pytest.mark.parametrize("start", sorted(STARTS))
def test_a_failure_interrupts_the_other_chunks_and_stays_the_error(start):
    """A task that raises stops the map: a slow chunk at a lower index is interrupted, and its
    KeyboardInterrupt neither replaces the failure nor counts as results."""

    def slow_or_failing(x):
        import time

        if x == 0:
            time.sleep(30)
        raise ValueError(f"item {x} is bad")

    with nbpool.Pool(size=2, max_size=2, fork_server=STARTS[start]) as pool:
        pool.start()  # both chunks run at once
        t0 = time.monotonic()
        with pytest.raises(nbpool.TaskFailed) as info:
            list(pool.imap(slow_or_failing, range(2), chunksize=1))
        assert time.monotonic() - t0 < 10
        assert (info.value.index, info.value.error.ename) == (1, "ValueError")
        assert _busy(pool) == []


@pytest.mark.parametrize("start", sorted(STARTS))
def test_cells_on_a_worker_that_ran_tasks_keep_all_their_output(tmp_path, monkeypatch, start):
    """The runner's quick flush applies to task requests only: session cells on workers that
    ran tasks still get their print and their stderr, every time, and C-level output (os.write
    on fd 1) reaches them too.

    C-level output written at the very end of a cell races in ipykernel itself (its pipe
    reader thread against the cell's end: 3-8 % of such cells lost it on spawned workers
    under load, before this runner existed), so it is asserted over the cells, not per cell.
    """
    # ipykernel captures fd 1 and 2 only outside pytest (it looks for this variable).
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    code = (
        "import os, sys\n"
        "print('py out')\n"
        "sys.stderr.write('py err\\n')\n"
        "os.write(1, b'c-level out\\n')\n"
        "os.getpid()"
    )
    c_level = 0
    with nbpool.Pool(size=2, max_size=2, fork_server=STARTS[start]) as pool:
        pids = set(pool.map(_barrier(str(tmp_path), 2), range(2), chunksize=1))
        for n in range(10):
            res = pool.execute(code, session=f"s{n % 2}")
            assert int(res.result) in pids  # a worker that ran tasks
            assert res.stdout.startswith("py out\n") and res.stderr == "py err\n", res
            c_level += res.stdout == "py out\nc-level out\n"
    assert c_level > 0, "no cell got its C-level output"


def test_the_worker_needs_no_nbpool(tmp_path):
    """The runner travels as source: a worker whose Python cannot import nbpool maps, and a
    failing task there still reports its traceback."""
    spec = tmp_path / "kernels" / "no-nbpool"
    spec.mkdir(parents=True)
    launch = (
        "import runpy, sys; sys.modules['nbpool'] = None; "
        "sys.argv = ['ipykernel', '-f', sys.argv[1]]; "
        "runpy.run_module('ipykernel_launcher', run_name='__main__')"
    )
    argv = [sys.executable, "-c", launch, "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "no nbpool", "language": "python"})
    )
    with extra_jupyter_path(tmp_path), nbpool.Pool(size=1, kernel_name="no-nbpool") as pool:
        probe = pool.execute("import nbpool", session="probe")
        assert probe.error is not None and probe.error.ename == "ModuleNotFoundError"
        pool.end_session("probe")
        assert pool.map(lambda x: x * 3, range(10), chunksize=3) == [x * 3 for x in range(10)]
        with pytest.raises(nbpool.TaskFailed) as info:
            pool.map(lambda x: 1 // (x - 2), range(4), chunksize=2)
        assert info.value.index == 2 and info.value.error.ename == "ZeroDivisionError"


@pytest.mark.parametrize("start", sorted(STARTS))
def test_map_on_another_ipykernel(tmp_path, start):
    """The task handler on the ipykernel of another Python (e.g. 6.29 beside this 7.x), forked
    and spawned: results, a task's KeyboardInterrupt, and a timeout's interrupt.

    Runs when NBPOOL_TEST_OTHER_PYTHON names a python with ipykernel and cloudpickle
    (``python -m venv v && v/bin/pip install ipykernel==6.29.5 cloudpickle``).
    """
    python = os.environ.get("NBPOOL_TEST_OTHER_PYTHON")
    if not python:
        pytest.skip("set NBPOOL_TEST_OTHER_PYTHON to a python with another ipykernel")
    spec = tmp_path / "kernels" / "other-ipykernel"
    spec.mkdir(parents=True)
    argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "other", "language": "python"})
    )

    def stop_at_3(x):
        if x == 3:
            raise KeyboardInterrupt
        return x

    with (
        extra_jupyter_path(tmp_path),
        nbpool.Pool(size=2, kernel_name="other-ipykernel", fork_server=STARTS[start]) as pool,
    ):
        pool.start()
        assert {w["started"] for w in pool.status()["workers"]} == {start}
        assert pool.map(abs, range(-5, 5), chunksize=3) == [abs(x) for x in range(-5, 5)]
        with pytest.raises(nbpool.TaskFailed) as info:
            pool.map(stop_at_3, range(6), chunksize=6)
        assert (info.value.index, info.value.error.ename) == (3, "KeyboardInterrupt")
        with pytest.raises(nbpool.ExecutionTimeout):
            pool.map(lambda s: __import__("time").sleep(s), [30] * 2, chunksize=1, timeout=1)
        assert pool.map(abs, [-1, -2]) == [1, 2] and _busy(pool) == []


@pytest.mark.parametrize("start", sorted(STARTS))
def test_a_worker_killed_mid_map_costs_no_result(tmp_path, start):
    """A worker that dies mid-map has its chunk retried once on another worker: every result
    comes back once; a chunk that kills its worker twice fails the map with WorkerDied."""
    marker = str(tmp_path / "killed-once")

    def die_once(x):
        import os
        import signal

        if x == 5 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return x * 10

    with nbpool.Pool(size=2, max_size=3, fork_server=STARTS[start]) as pool:
        assert pool.map(die_once, range(12), chunksize=2) == [x * 10 for x in range(12)]

        def die_always(x):
            import os
            import signal

            if x == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return x

        with pytest.raises(nbpool.WorkerDied, match="items 2-3 lost their worker twice"):
            pool.map(die_always, range(8), chunksize=2)
        assert _busy(pool) == []


def test_no_free_worker_fails_at_once():
    """When every worker is bound to a session and max_size is reached, map says so at once."""
    with nbpool.Pool(size=1, max_size=1) as pool:
        pool.execute("1", session="only")
        t0 = time.monotonic()
        with pytest.raises(nbpool.LeaseTimeout, match="only"):
            pool.map(abs, [1, 2])
        assert time.monotonic() - t0 < 2
