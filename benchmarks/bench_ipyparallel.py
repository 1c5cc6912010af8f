"""e. nbpool side by side with ipyparallel 9 (the ``bench`` extra).

What it measures, and how fair each comparison is
-------------------------------------------------
1. **Single execution**: ``pool.execute("1+1")`` vs
   ``rc[0].execute("1+1", block=True)``, interleaved call by call. ipyparallel
   goes client -> controller -> engine -> controller -> client (two extra
   hops), nbpool goes straight to the worker. Unfair to nbpool in two ways,
   both shown in extra rows: ipyparallel's ``execute`` is ``silent=True`` by
   default (no displayhook, no result sent back; the ``silent=False`` row
   does the same work as nbpool), and ipyparallel runs without transport
   encryption by default while nbpool's workers use CurveZMQ.
2. **4 workers ready**: ``nbpool.Pool(size=4).start()`` (returns when all 4
   workers answered ``kernel_info`` and their iopub is live) vs
   ``ipp.Cluster(n=4).start_and_connect_sync()`` (returns when 4 engines
   registered), each from nothing, alternating. Both start 4 kernels;
   ipyparallel also starts its controller and one nanny per engine.
3. **Throughput**: 2000 tiny executions on 4 workers: ``pool.submit(str(i))``
   over 4 sessions (the result is the value ``i``) vs a load-balanced
   ``view.map_async(lambda x: x, range(2000))`` (returns ``i`` too). Work per
   task is not identical: nbpool runs a code cell (IPython ``run_cell``:
   transform, compile, displayhook), ipyparallel calls a pickled function
   (``apply_request``), which is cheaper on the worker. The note gives CPU
   per task on each side, from /proc.
4. **Failure detection**: a worker running a long ``time.sleep`` is
   SIGSTOPped (frozen); while that is being noticed, other busy workers are
   SIGKILLed one at a time (3 trials). The time from the signal until the
   caller's future fails (nbpool ``WorkerDied``, ipyparallel ``EngineError``)
   is the time to notice. Both with default settings (nbpool: process poll
   every 30 ms + 1 s heartbeats, 3 s timeout; ipyparallel: a nanny process
   per engine + 3 s heartbeats, 10 misses allowed).

Everything binds to 127.0.0.1 (``controller_ip``); the ipyparallel profile
lives in the run's throw-away IPYTHONDIR; every process started here
(controller, engines, nannies, kernels) is recorded and killed by pid at the
end, also on failure.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from concurrent.futures import wait

import nbpool

from ._harness import (
    Processes,
    Row,
    cpu_seconds,
    descendants,
    interleaved,
    median,
    own_cpu_seconds,
    skipped,
    wait_until,
)

NAME = "ipyparallel"
WORKERS = 4


def run(quick: bool = False) -> list[Row]:
    try:
        import ipyparallel as ipp
    except ImportError:
        return [skipped("e. ipyparallel comparison")]
    procs = Processes()
    rows: list[Row] = []

    def part(name, fn, *args):
        """Run one comparison; a failure becomes an ERROR row, the others still run."""
        try:
            rows.extend(fn(*args))
        except Exception as exc:
            traceback.print_exc()
            rows.append(Row(f"e. {name} ERROR", None, None, "", None, "", False, repr(exc)))

    cluster = rc = pool = None
    try:
        part("ready", _ready, ipp, procs, 1 if quick else 3)
        pool = nbpool.Pool(size=WORKERS)
        pool.start()
        procs.add_pool(pool)
        cluster, rc, _ = _start_cluster(ipp, procs)
        part("single", _single, pool, rc, 100 if quick else 300)
        part("throughput", _throughput, pool, rc, 500 if quick else 2000, 1 if quick else 3)
        part("detection", _detection, pool, rc, 1 if quick else 3)
        return rows
    finally:
        if pool is not None:
            pool.shutdown()
        _stop_cluster(cluster, rc, procs)
        procs.kill_leftovers()


# ----------------------------------------------------------------------


def _start_cluster(ipp, procs: Processes):
    """Start a 4-engine cluster on 127.0.0.1; returns (cluster, client, seconds)."""
    t0 = time.perf_counter()
    cluster = ipp.Cluster(n=WORKERS, controller_ip="127.0.0.1", log_level=logging.WARNING)
    try:
        rc = cluster.start_and_connect_sync()
    except BaseException:
        _record(procs)
        _stop_cluster(cluster, None, procs)
        raise
    elapsed = time.perf_counter() - t0
    _record(procs)
    return cluster, rc, elapsed


def _record(procs: Processes) -> None:
    for pid in descendants(os.getpid()):
        procs.add(pid)


def _stop_cluster(cluster, rc, procs: Processes) -> None:
    if cluster is None:
        return
    for pid in procs.alive():  # a SIGSTOPped engine would ignore the TERM
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    if rc is not None:
        try:
            rc.close()
        except Exception:
            pass
    try:
        cluster.stop_cluster_sync()
    except Exception:
        pass


def _ready(ipp, procs: Processes, reps: int) -> list[Row]:
    nb, ip = [], []

    def nbpool_ready() -> None:
        t0 = time.perf_counter()
        pool = nbpool.Pool(size=WORKERS)
        try:
            pool.start()
            nb.append(time.perf_counter() - t0)
            procs.add_pool(pool)
        finally:
            pool.shutdown()

    def ipp_ready() -> None:
        cluster, rc, elapsed = _start_cluster(ipp, procs)
        ip.append(elapsed)
        _stop_cluster(cluster, rc, procs)

    for i in range(reps):
        pair = [nbpool_ready, ipp_ready]
        for fn in pair if i % 2 == 0 else reversed(pair):
            fn()
    ratio = median(nb) / median(ip)
    return [
        Row(
            f"e. {WORKERS} workers ready: Pool.start() vs Cluster(n={WORKERS}).start_and_connect_sync()",
            median(nb),
            median(ip),
            "s",
            ratio,
            "<= 0.30",
            ratio <= 0.30,
            f"{reps} alternating runs each, from nothing",
        )
    ]


def _single(pool, rc, rounds: int) -> list[Row]:
    engine = rc[0]
    fns = {
        "pool": lambda: pool.execute("1+1", session="t0"),
        "ipp": lambda: engine.execute("1+1", block=True),
        "ipp_loud": lambda: engine.execute("1+1", silent=False, block=True),
    }
    interleaved(fns, 20)  # warm-up
    t = {k: median(v) * 1e6 for k, v in interleaved(fns, rounds).items()}
    ratio = t["pool"] / t["ipp"]
    return [
        Row(
            "e. single execute('1+1') vs rc[0].execute('1+1', block=True)",
            t["pool"],
            t["ipp"],
            "us",
            ratio,
            "<= 0.80",
            ratio <= 0.80,
            f"{rounds} interleaved rounds; ipyparallel default silent=True, no encryption",
        ),
        Row(
            "e. single execute('1+1') vs rc[0].execute(silent=False)",
            t["pool"],
            t["ipp_loud"],
            "us",
            t["pool"] / t["ipp_loud"],
            "info",
            None,
            "same work on both sides (result computed and sent back)",
        ),
    ]


def _throughput(pool, rc, n: int, reps: int) -> list[Row]:
    sessions = [f"t{i}" for i in range(WORKERS)]
    for s in sessions:
        pool.execute("0", session=s)
    workers = {w["session"]: w["pid"] for w in pool.status()["workers"]}
    if len({workers.get(s) for s in sessions}) != WORKERS:
        raise AssertionError(f"throughput sessions not on {WORKERS} distinct workers: {workers}")
    worker_pids = [workers[s] for s in sessions]
    view = rc.load_balanced_view()
    engine_pids = rc[:].apply_sync(os.getpid)
    ipp_others = [
        p for p in descendants(os.getpid()) if p not in engine_pids
    ]  # controller, nannies

    def nbpool_batch() -> None:
        futures = [pool.submit(str(i), session=sessions[i % WORKERS]) for i in range(n)]
        done, _ = wait(futures, timeout=120)
        if len(done) != n or any(f.result().result != str(i) for i, f in enumerate(futures)):
            raise AssertionError("nbpool batch: a task failed or returned a wrong value")

    def ipp_batch() -> None:
        result = view.map_async(_identity, range(n)).get(timeout=120)
        if list(result) != list(range(n)):
            raise AssertionError("ipyparallel batch returned wrong values")

    view.map_async(_identity, range(100)).get(timeout=60)  # warm-up
    rates = {"nbpool": [], "ipp": []}
    cpu = {"nbpool": [0.0, 0.0, 0.0], "ipp": [0.0, 0.0, 0.0]}
    sides = [("nbpool", nbpool_batch, worker_pids, []), ("ipp", ipp_batch, engine_pids, ipp_others)]
    for i in range(reps):
        for name, fn, pids, others in sides if i % 2 == 0 else reversed(sides):
            c0, w0, o0 = own_cpu_seconds(), cpu_seconds(pids), cpu_seconds(others)
            t0 = time.perf_counter()
            fn()
            rates[name].append(n / (time.perf_counter() - t0))
            for j, v in enumerate(
                (own_cpu_seconds() - c0, cpu_seconds(pids) - w0, cpu_seconds(others) - o0)
            ):
                cpu[name][j] += v * 1e3 / (n * reps)
    nb, ip = median(rates["nbpool"]), median(rates["ipp"])
    c, e = cpu["nbpool"], cpu["ipp"]
    return [
        Row(
            f"e. {n} tiny executions on {WORKERS} workers: throughput (submit vs map_async)",
            nb,
            ip,
            "exec/s",
            nb / ip,
            ">= 1.50x",
            nb / ip >= 1.5,
            f"{reps} alternating runs; CPU ms/task: nbpool client {c[0]:.2f} + workers {c[1]:.2f}; "
            f"ipyparallel client {e[0]:.2f} + engines {e[1]:.2f} + controller/nannies {e[2]:.2f}",
        )
    ]


def _identity(x):
    return x


def _detection(pool, rc, kills: int) -> list[Row]:
    """Freeze one busy worker, kill others one at a time; time until each caller is told."""
    sleep = "import time; time.sleep(120)"

    def busy_pid(session: str):
        for w in pool.status()["workers"]:
            if w["session"] == session and w["state"] == "busy":
                return w["pid"]
        return None

    # nbpool: freeze session t1's worker; meanwhile kill session t0's worker `kills` times
    frozen = pool.submit(sleep, session="t1")
    wait_until(lambda: busy_pid("t1") is not None, 30, "session t1 to be busy")
    nb_frozen = _Failure(frozen, busy_pid("t1"), signal.SIGSTOP)
    nb_kill = []
    for _ in range(kills):
        fut = pool.submit(sleep, session="t0")
        wait_until(lambda: busy_pid("t0") is not None, 60, "session t0 to be busy")
        nb_kill.append(_Failure(fut, busy_pid("t0"), signal.SIGKILL).wait(20))
    nb_stop = nb_frozen.wait(20)
    wait_until(  # replacements ready: let the machine calm down before ipyparallel's turn
        lambda: [w["state"] for w in pool.status()["workers"]] == ["idle"] * WORKERS,
        90,
        "nbpool to replace its killed and frozen workers",
    )

    # ipyparallel: freeze engine 1; meanwhile kill engines 0, 2, 3 one at a time
    engine_pids = dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))

    def started(eid: int, ar):
        wait_until(
            lambda: rc.queue_status(targets=[eid])[eid]["queue"] >= 1,
            30,
            f"the sleep to reach engine {eid}",
        )
        return ar

    ipp_frozen = _Failure(
        started(1, rc[1].execute(sleep, block=False)), engine_pids[1], signal.SIGSTOP
    )
    ipp_kill = [
        _Failure(
            started(eid, rc[eid].execute(sleep, block=False)), engine_pids[eid], signal.SIGKILL
        ).wait(30)
        for eid in [0, 2, 3][:kills]
    ]
    ipp_stop = ipp_frozen.wait(60)

    def ms(values):
        values = [v for v in values if v is not None]
        return median(values) * 1e3 if values else None

    nk, ik = ms(nb_kill), ms(ipp_kill)
    ns, is_ = ms([nb_stop]), ms([ipp_stop])
    shown = lambda vs: ", ".join("-" if v is None else f"{v * 1e3:.0f}" for v in vs)  # noqa: E731
    return [
        Row(
            "e. notice a killed worker (SIGKILL), caller told",
            nk,
            ik,
            "ms",
            None if nk is None or ik is None else nk / ik,
            "<= 100 ms",
            nk is not None and None not in nb_kill and max(nb_kill) <= 0.1,
            f"median of {kills}; nbpool [{shown(nb_kill)}] ms, ipyparallel [{shown(ipp_kill)}] "
            "ms; PASS needs every nbpool trial <= 100 ms",
        ),
        Row(
            "e. notice a frozen worker (SIGSTOP), caller told",
            ns,
            is_,
            "ms",
            None if ns is None or is_ is None else ns / is_,
            "<= 5 s",
            ns is not None and ns <= 5000,
            "nbpool WorkerDied vs ipyparallel EngineError; defaults on both sides"
            + ("" if is_ is not None else "; ipyparallel did not notice within 60 s"),
        ),
    ]


class _Failure:
    """Signal a worker's process and time until its caller's future fails."""

    def __init__(self, future, pid: int, sig: int) -> None:
        self.future, self.pid, self.sig = future, pid, sig
        self.seconds: float | None = None
        self._t0 = time.monotonic()
        os.kill(pid, sig)
        future.add_done_callback(self._done)

    def _done(self, future) -> None:
        if future.exception() is not None:
            self.seconds = time.monotonic() - self._t0

    def wait(self, cap: float) -> float | None:
        wait([self.future], timeout=cap)
        if self.sig == signal.SIGSTOP:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        return self.seconds


if __name__ == "__main__":
    from .run import main

    main([NAME])
