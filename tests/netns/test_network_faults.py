"""Network faults between the pool and worker hosts: links cut, removed, restored.

The faults are real: the veth link of a namespace host is taken down or
deleted while a worker on it runs code. Heartbeats are the only way nbpool can
tell (the kernel process lives on, and nbpool sees no local process of a
provisioned kernel).
"""

from __future__ import annotations

import threading
import time

import pytest

import nbpool
from tests.helpers import started_kernel, wait_for

HB_INTERVAL, HB_TIMEOUT = 0.5, 2.0
#: The holder learns of a death within the heartbeat timeout plus coordinator
#: ticks and lease poll slices (tens of ms); the rest is slack for a busy CI box.
BOUND = HB_TIMEOUT + 0.5

TICKER = (
    "import time\n"
    "for i in range(60):\n"
    "    print('tick', i, flush=True)\n"
    "    time.sleep(0.05)\n"
    "finished = True"
)


def pool_for(kernel_name: str, **kwargs) -> nbpool.Pool:
    kwargs.setdefault("size", 1)
    kwargs.setdefault("max_size", 4)
    return nbpool.Pool(
        kernel_name=kernel_name,
        heartbeat_interval=HB_INTERVAL,
        heartbeat_timeout=HB_TIMEOUT,
        **kwargs,
    )


class Neighbour:
    """Another session that keeps executing while the fault happens; checks every output."""

    def __init__(self, pool, session: str, kernel: str) -> None:
        self.pool, self.session, self.kernel = pool, session, kernel
        self.results: list = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        pool.execute("n = 0", session=session, kernel=kernel)
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                res = self.pool.execute(
                    "n += 1\nprint(f'{n}-' + 'near')", session=self.session, kernel=self.kernel
                )
                self.results.append(res)
            except BaseException as exc:  # reported by check()
                self.errors.append(exc)
                return

    def check(self) -> int:
        """Stop; assert each execution succeeded with exactly its own output, in order."""
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the neighbouring session hung"
        assert not self.errors, self.errors
        expected = [f"{i}-near\n" for i in range(1, len(self.results) + 1)]
        assert [r.stdout for r in self.results] == expected
        return len(self.results)


def cut_on_first_output(fault):
    """An on_output hook that applies ``fault`` once, at the first output; records when."""
    at: list[float] = []

    def hook(out):
        if not at:
            fault()
            at.append(time.monotonic())

    return hook, at


@pytest.mark.parametrize("fault", ["cut", "unplug"])
def test_host_cut_off_mid_execution(flaky_remote, remote, fault):
    """A host cut off mid-execution: WorkerDied within the heartbeat bound, others go on.

    ``cut`` takes the link down, ``unplug`` deletes it. Sessions on this
    machine and on another host keep running with exactly their own outputs;
    when the link is back, the session's next execution gets a fresh worker on
    that host (and is told its state was reset); the cut-off kernel is stopped.
    """
    host = flaky_remote
    with pool_for(host.kernel) as pool:
        pool.execute("kept = 1", session="far")
        (old_pid,) = host.pids()
        local = Neighbour(pool, "near", "python3")
        other_host = Neighbour(pool, "elsewhere", remote.kernel)
        hook, cut_at = cut_on_first_output(getattr(host, fault))
        with pytest.raises(nbpool.WorkerDied, match="stopped answering heartbeats") as info:
            pool.execute(TICKER, session="far", on_output=hook)
        elapsed = time.monotonic() - cut_at[0]
        assert elapsed <= BOUND, f"WorkerDied {elapsed:.2f} s after the cut"
        assert info.value.outputs and info.value.outputs[0]["text"].startswith("tick 0\n")
        host.restore() if fault == "cut" else host.plug()
        res = pool.execute("print(globals().get('kept'))", session="far", lease_timeout=60)
        assert res.stdout == "None\n" and "state was lost" in res.session_reset
        assert local.check() > 0 and other_host.check() > 0
        wait_for(lambda: old_pid not in host.pids(), what="the cut-off kernel stopped")


def test_attached_host_that_comes_back_sends_nothing_stray(flaky_remote, remote, tmp_path):
    """An attached kernel cut off and back: no duplicate or misrouted output anywhere.

    nbpool gives the holder WorkerDied and never kills the attached kernel.
    The kernel finishes the code it was running while unreachable; once the
    link is back it is attached again, its state is intact, and neither the
    new session's nor a neighbour's outputs contain anything of the old run.
    """
    with started_kernel(
        flaky_remote.kernel, tmp_path / "kernel-ext.json", transport_encryption="auto"
    ) as km:
        with pool_for(remote.kernel, attach_timeout=30) as pool:
            pool.attach(km.connection_file, session="ext")
            pool.execute("state = 'kept'", session="ext")
            other_host = Neighbour(pool, "elsewhere", remote.kernel)
            hook, cut_at = cut_on_first_output(flaky_remote.cut)
            with pytest.raises(nbpool.WorkerDied):
                pool.execute(TICKER, session="ext", on_output=hook)
            assert time.monotonic() - cut_at[0] <= BOUND
            assert km.is_alive(), "nbpool never kills a kernel it attached"
            wait_for(
                lambda: not any(w["attached"] for w in pool.status()["workers"]),
                what="the dead attached worker removed, with no substitute",
            )
            flaky_remote.restore()
            pool.attach(km.connection_file, session="ext")  # waits for the kernel to answer
            res = pool.execute("print(state, finished)", session="ext")
            assert res.stdout == "kept True\n", "same kernel, its run finished, nothing stray"
            assert res.outputs == [
                {"output_type": "stream", "name": "stdout", "text": "kept True\n"}
            ]
            assert other_host.check() > 0
            again = pool.execute("print('once')", session="ext")
            assert again.stdout == "once\n"


def test_shutdown_with_a_cut_off_host_does_not_hang(flaky_remote):
    """pool.shutdown() with a worker host unreachable returns promptly and stops that kernel."""
    with pool_for(flaky_remote.kernel) as pool:
        pool.execute("1", session="far")
        (pid,) = flaky_remote.pids()
        flaky_remote.cut()
        started = time.monotonic()
    took = time.monotonic() - started
    assert took < 15, f"shutdown took {took:.1f} s"
    wait_for(lambda: pid not in flaky_remote.pids(), what="the unreachable kernel stopped")
