"""Executing code on real ipykernel workers: results, outputs, affinity, order."""

from __future__ import annotations

import threading

import pytest

import nbpool


def test_execute_returns_stdout_result_and_count(shared_pool):
    """A plain execution reports its stdout, its Out value and its execution count."""
    res = shared_pool.execute("print('hello')\n6 * 7", session="basic")
    assert res.ok and res.status == "ok"
    assert res.stdout == "hello\n" and res.stderr == ""
    assert res.result == "42"
    assert res.execution_count >= 1 and res.session == "basic" and res.duration > 0
    assert res.outputs == [
        {"output_type": "stream", "name": "stdout", "text": "hello\n"},
        {
            "output_type": "execute_result",
            "data": {"text/plain": "42"},
            "metadata": {},
            "execution_count": res.execution_count,
        },
    ]


def test_user_error_is_a_result_not_a_pool_error(shared_pool):
    """A user-code exception comes back as ok=False with the remote error filled."""
    res = shared_pool.execute("def f():\n    raise KeyError('missing')\nf()", session="basic")
    assert not res.ok and res.status == "error"
    assert res.error.ename == "KeyError" and "missing" in res.error.evalue
    assert any("f()" in line for line in res.error.traceback)


def test_sessions_keep_state_and_are_isolated(shared_pool):
    """A named session keeps its variables on its worker; another session cannot see them."""
    shared_pool.execute("secret = 'etl-state'", session="etl")
    assert shared_pool.execute("secret", session="etl").result == "'etl-state'"
    other = shared_pool.execute("secret", session="ml")
    assert other.error.ename == "NameError"
    assert (
        shared_pool.execute("import os; os.getpid()", session="etl").result
        != shared_pool.execute("import os; os.getpid()", session="ml").result
    )


def test_first_output_of_a_fresh_worker_is_not_lost():
    """Readiness includes a live iopub subscription: the first print arrives."""
    with nbpool.Pool(size=1) as pool:
        assert pool.execute("print('first')").stdout == "first\n"


def test_four_megabytes_of_output_arrive_whole(shared_pool):
    """A 4 MB stdout output is delivered complete and in order."""
    code = "import sys\nfor i in range(4096): sys.stdout.write(f'{i:07d}' + 'x' * 1016 + '\\n')"
    res = shared_pool.execute(code, session="big", timeout=60)
    lines = res.stdout.splitlines()
    assert len(lines) == 4096 and len(res.stdout) == 4096 * 1024
    assert [int(line[:7]) for line in lines] == list(range(4096))


def test_an_output_limit_keeps_the_newest_text_and_says_what_went(shared_pool):
    """``output_limit`` keeps the last characters a worker printed and starts the
    result with one line on what was dropped; the callback still gets every
    line. Without it (the default) the result holds all 100 kB."""
    code = "for i in range(1000): print(f'{i:05d}' + 'x' * 94)"
    whole = "".join(f"{i:05d}" + "x" * 94 + "\n" for i in range(1000))
    seen: list[str] = []
    res = shared_pool.execute(
        code,
        session="limit",
        timeout=60,
        output_limit=1000,
        on_output=lambda out: seen.append(out.get("text", "")),
    )
    told = "[nbpool: 99.0 kB of earlier output were dropped (output limit 1000 characters)]\n"
    assert res.ok and res.stdout == whole[-1000:] and res.stderr == told
    assert res.outputs == [
        {"output_type": "stream", "name": "stderr", "text": told},
        {"output_type": "stream", "name": "stdout", "text": whole[-1000:]},
    ]
    assert "".join(seen) == whole
    res = shared_pool.execute(code, session="limit", timeout=60)
    assert res.stdout == whole and res.stderr == ""
    assert res.outputs == [{"output_type": "stream", "name": "stdout", "text": whole}]


def test_a_bad_output_limit_is_one_clear_error(shared_pool):
    """A negative or non-integer limit fails at the call, for execute and submit."""
    for bad in (-1, 2.5, "10"):
        with pytest.raises(nbpool.InvalidConfig, match="output_limit must be a whole number"):
            shared_pool.execute("pass", session="limit", output_limit=bad)
        with pytest.raises(nbpool.InvalidConfig, match="output_limit must be a whole number"):
            shared_pool.submit("pass", session="limit", output_limit=bad)


def test_rich_outputs_clear_output_and_display_updates(shared_pool):
    """display_data, update_display (by id) and clear_output are applied in order."""
    code = (
        "from IPython.display import display, HTML, clear_output, update_display\n"
        "print('gone')\n"
        "clear_output()\n"
        "display(HTML('<b>v1</b>'), display_id='d1')\n"
        "update_display(HTML('<b>v2</b>'), display_id='d1')\n"
    )
    seen = []
    res = shared_pool.execute(code, session="rich", on_output=seen.append)
    assert [o["output_type"] for o in res.outputs] == ["display_data"]
    assert res.outputs[0]["data"]["text/html"] == "<b>v2</b>"
    assert res.stdout == "gone\n", "stdout keeps what clear_output removed from outputs"
    kinds = [o["output_type"] for o in seen]
    assert kinds == ["stream", "clear_output", "display_data", "update_display_data"]
    assert seen[2]["transient"]["display_id"] == "d1"


def test_outputs_stream_live_through_the_callback(shared_pool):
    """on_output sees each output while the execution still runs."""
    got_first = threading.Event()
    release = "import time\nprint('tick', flush=True)\nfor _ in range(200):\n    time.sleep(0.05)\n"
    seen = []

    def on_output(out):
        seen.append(out)
        got_first.set()

    def run():
        shared_pool.execute(release, session="live", on_output=on_output)

    thread = threading.Thread(target=run)
    thread.start()
    assert got_first.wait(10), "the first print must arrive before the execution ends"
    assert thread.is_alive()
    shared_pool.status()  # the pool stays responsive meanwhile
    shared_pool.interrupt(
        next(w["id"] for w in shared_pool.status()["workers"] if w["session"] == "live")
    )
    thread.join(20)
    assert seen[0]["text"] == "tick\n"


def test_input_without_handler_errors_instead_of_hanging(shared_pool):
    """input() on a worker with no stdin handler raises there at once."""
    res = shared_pool.execute("input('name? ')", session="stdin", timeout=20)
    assert not res.ok and res.error.ename == "StdinNotImplementedError"


def test_input_with_handler_gets_the_answer(shared_pool):
    """A stdin handler answers input() with the prompt it was given."""
    prompts = []

    def answer(prompt, password):
        prompts.append((prompt, password))
        return "Ada"

    res = shared_pool.execute("print('hi', input('name? '))", session="stdin", stdin=answer)
    assert res.stdout == "hi Ada\n" and prompts == [("name? ", False)]


def test_300_executions_from_6_threads_keep_each_threads_order(shared_pool):
    """Concurrent clients over 3 sessions on 3 workers all complete, each in its own order."""
    sessions = ["o1", "o2", "o3"]
    for s in sessions:
        shared_pool.execute("log = []", session=s)
    errors = []

    def client(tid):
        session = sessions[tid % 3]
        try:
            for i in range(50):
                res = shared_pool.execute(f"log.append(({tid}, {i}))", session=session)
                assert res.ok, res.error
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for s in sessions:
        log = eval(shared_pool.execute("log", session=s).result)
        assert len(log) == 100
        for tid in {t for t, _ in log}:
            assert [i for t, i in log if t == tid] == list(range(50))


def test_submit_runs_sessions_in_parallel_and_one_session_in_order():
    """Futures of different sessions overlap in time; one session's run in order."""
    code = "import time\nt0 = time.time(); time.sleep(0.5); (t0, time.time())"
    with nbpool.Pool(size=2) as pool:
        futures = [pool.submit(code, session=s) for s in ("a", "b")]
        spans = [eval(f.result(30).result) for f in futures]
        assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], "must overlap"
        ordered = [
            pool.submit(f"seq = globals().get('seq', []) + [{i}]", session="a") for i in range(5)
        ]
        for f in ordered:
            f.result(30)
        assert pool.execute("seq", session="a").result == "[0, 1, 2, 3, 4]"


def test_cancel_interrupts_a_running_future():
    """cancel() on a running future interrupts the worker; result() raises CancelledError."""
    from concurrent.futures import CancelledError

    with nbpool.Pool(size=1) as pool:
        started = threading.Event()
        fut = pool.submit(
            "import time\nprint('go', flush=True)\ntime.sleep(60)",
            session="c",
            on_output=lambda out: started.set(),
        )
        assert started.wait(20)
        assert fut.cancel()
        with pytest.raises(CancelledError):
            fut.result(20)
        assert pool.execute("1 + 1", session="c").result == "2"


def test_lease_gives_exclusive_use_until_released(shared_pool):
    """Inside a lease several executions run on the same worker; after it, it refuses."""
    with shared_pool.lease("leased", timeout=10) as lease:
        before = shared_pool.status()
        a = lease.execute("import os; os.getpid()")
        b = lease.execute("os.getpid()")
        assert a.result == b.result and a.worker_id == lease.worker_id
        after = shared_pool.status()  # runs inside a held lease count at once
        assert after["counters"]["executions"] == before["counters"]["executions"] + 2
        row = next(w for w in after["workers"] if w["id"] == lease.worker_id)
        assert (
            row["executions"]
            == next(w for w in before["workers"] if w["id"] == lease.worker_id)["executions"] + 2
        )
    with pytest.raises(nbpool.LeaseReleased):
        lease.execute("1")
