"""Warm workers: the preload, the workers' environment and working directory."""

from __future__ import annotations

import time

import pytest

import nbpool


def test_preload_is_visible_in_every_session_and_after_end_session():
    """The preload runs on every new python worker before it serves a session,
    silently: its output shows in no cell and it uses no prompt number."""
    with nbpool.Pool(size=2, preload="import json\nprint('preloading')\nWARM = 41") as pool:
        for session in ("a", "b"):
            res = pool.execute("WARM + 1, json.dumps([1])", session=session)
            assert res.result == "(42, '[1]')" and res.stdout == ""
            assert res.execution_count == 1, "the preload took no prompt number"
        first = pool.execute("WARM", session="a").worker_id
        pool.end_session("a")
        res = pool.execute("WARM", session="a")
        assert res.result == "41" and res.worker_id != first


def test_a_failing_preload_fails_the_start_at_once_with_the_traceback():
    """A preload that raises: start() raises WorkerStartFailed within seconds,
    carrying the worker's traceback; the start is not retried and status()
    says why; the pool stays up."""
    pool = nbpool.Pool(size=1, preload="import json\njson.loads('{nope')")
    try:
        started = time.monotonic()
        with pytest.raises(nbpool.WorkerStartFailed) as info:
            pool.start()
        assert time.monotonic() - started < 20
        assert "the preload raised JSONDecodeError" in str(info.value)
        assert "json.loads('{nope')" in info.value.stderr_tail
        assert "\x1b[" not in info.value.stderr_tail, "plain text, no terminal colours"
        with pytest.raises(nbpool.WorkerStartFailed, match="preload raised"):
            pool.execute("1", lease_timeout=30)  # at once: nothing is starting
        status = pool.status()
        assert [w["state"] for w in status["workers"]] == ["failed"]
        assert "preload raised" in status["workers"][0]["last_error"]
        assert status["counters"]["start_failures"] == 1, "a deterministic failure is not retried"
    finally:
        pool.shutdown()


def test_workers_get_the_env_and_cwd(tmp_path):
    """env adds to this process's environment; cwd defaults to this process's
    working directory, so relative paths resolve as in the notebook."""
    (tmp_path / "data.txt").write_text("local data")
    with nbpool.Pool(size=1, env={"NBPOOL_TEST_VAR": "yes"}, cwd=str(tmp_path)) as pool:
        code = "import os; os.environ['NBPOOL_TEST_VAR'], open('data.txt').read(), 'PATH' in os.environ"
        assert pool.execute(code).result == "('yes', 'local data', True)"
    with nbpool.Pool(size=1) as pool:
        import os

        assert pool.execute("import os; os.getcwd()").result == repr(os.getcwd())


def test_a_non_python_kernel_skips_the_preload(bash_kernel):
    """The preload is python code: a bash worker starts without it and works."""
    with nbpool.Pool(size=0, kernel_name=bash_kernel, preload="import json") as pool:
        assert pool.execute("echo $((40 + 2))").stdout.strip() == "42"
