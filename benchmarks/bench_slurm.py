"""h. Workers as Slurm jobs (provisioner ``nbpool-slurm``) against local workers.

What it measures
----------------
On a real one-node Slurm cluster started for the run (munged, slurmctld,
slurmd on this host, as in ``tests/slurm``), interleaved with the same
measurement on local workers:

- start to ready: ``Pool(size=1, kernel_name=SPEC).start()`` for a kernelspec
  written by ``python -m nbpool slurm-spec install`` (one ``sbatch`` job per
  kernel), for a packed one (a step of an existing allocation, ``srun
  --overlap``), and for ``python3`` (a local spawn);
- round trip: ``pool.execute("1+1")`` in a session on a Slurm worker and in
  one on a local worker of the same pool;
- with ipyparallel installed (``pip install '.[bench]'``): one worker ready,
  ``Pool(size=1, kernel_name=SPEC).start()`` against
  ``ipp.Cluster(n=1, engines="slurm").start_and_connect_sync()`` (its
  controller here, its engine an sbatch job running ``srun ipengine``).

Why the comparison is fair
--------------------------
Same pool code, same ipykernel and Python (the kernelspec's ``--python`` is
this interpreter), CurveZMQ on both workers (checked). The Slurm numbers are
what Slurm adds on an idle cluster: scheduling, slurmstepd, the job script,
the kernel start on the node and nbpool's squeue polling. A busy cluster
adds its queue wait; a real network adds its latency to every execution.

Against ipyparallel, each side's time includes what it starts locally
first: nbpool's pool (its reaper process), ipyparallel's controller.

Needs root (slurmd) and Debian's slurm-wlm and munge.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbpool
from nbpool.__main__ import main as nbpool_main  # `python -m nbpool slurm-spec`, in-process

from ._harness import Processes, Row, descendants, interleaved, median, wait_until

NAME = "slurm"


def run(quick: bool = False) -> list[Row]:
    from tests.slurm.cluster import SlurmCluster, entry_point_dir, source_root

    starts = 4 if quick else 10
    rounds = 100 if quick else 400
    tmp = Path(tempfile.mkdtemp(prefix="nbpool-bench-slurm-"))
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "PYTHONPATH", "SLURM_CONF")}
    cluster = SlurmCluster()
    pool = None
    try:
        cluster.start()
        os.environ.update(cluster.env())
        root = entry_point_dir(tmp / "entry-point")
        if root is not None:
            sys.path.insert(0, str(root))
            os.environ["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(root), source_root(), saved["PYTHONPATH"]])
            )
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            filter(None, [str(tmp / "share" / "jupyter"), saved["JUPYTER_PATH"]])
        )
        common = [
            "--prefix",
            str(tmp),
            "--python",
            sys.executable,
            "--shared-dir",
            str(cluster.shared),
            "--partition",
            "debug",
            "--time",
            "30",
        ]
        nbpool_main(["slurm-spec", "install", "--name", "bench_slurm", *common])
        alloc = cluster.run(
            "sbatch", "--parsable", "--time=30", "--output=/dev/null", "--wrap=exec sleep 3600"
        ).strip()
        wait_until(lambda: cluster.jobs().get(alloc) == "RUNNING", 30, "the allocation")
        nbpool_main(["slurm-spec", "install", "--name", "bench_packed", "--jobid", alloc, *common])

        def start(kernel_name):
            def go():
                t0 = time.perf_counter()
                with nbpool.Pool(size=1, kernel_name=kernel_name) as p:
                    p.start()
                    go.times.append(time.perf_counter() - t0)

            go.times = []
            return go

        fns = {name: start(name) for name in ("bench_slurm", "bench_packed", "python3")}
        interleaved(fns, 1)  # warm-up: imports, page cache
        for fn in fns.values():
            fn.times.clear()
        interleaved(fns, starts)
        t_job, t_step, t_local = (
            median(fns[n].times) for n in ("bench_slurm", "bench_packed", "python3")
        )

        pool = nbpool.Pool(size=1, max_size=2, kernel_name="bench_slurm").start()
        pool.execute("1", session="slurm")
        pool.execute("1", session="local", kernel="python3")
        workers = {w["session"]: w for w in pool.status()["workers"]}
        if not (workers["slurm"]["encrypted"] and workers["local"]["encrypted"]):
            raise AssertionError(f"unfair: encryption differs: {workers}")

        def rt(session):
            return lambda: pool.execute("1+1", session=session)

        interleaved({"slurm": rt("slurm"), "local": rt("local")}, 30)  # warm-up
        times = interleaved({"slurm": rt("slurm"), "local": rt("local")}, rounds)
        pool.shutdown()
        pool = None
        us = 1e6
        rt_slurm, rt_local = median(times["slurm"]) * us, median(times["local"]) * us
        where = "one-node Slurm 22.05 on this host, idle queue"
        return _against_ipyparallel(cluster, tmp, 2 if quick else 5, alloc) + [
            Row(
                "h. start to ready: Slurm job (sbatch) vs local spawn",
                t_job,
                t_local,
                "s",
                t_job / t_local,
                "info",
                None,
                f"{starts} interleaved starts; {where}",
            ),
            Row(
                "h. start to ready: step in an allocation (srun --overlap) vs local spawn",
                t_step,
                t_local,
                "s",
                t_step / t_local,
                "info",
                None,
                f"{starts} interleaved starts; {where}",
            ),
            Row(
                "h. execute('1+1'): Slurm worker vs local",
                rt_slurm,
                rt_local,
                "us",
                rt_slurm / rt_local,
                "info",
                None,
                f"{rounds} interleaved rounds; CurveZMQ on both; {where}",
            ),
        ]
    finally:
        if pool is not None:
            pool.shutdown()
        cluster.stop()  # cancels what is left (the allocation), stops the daemons by pid
        shutil.rmtree(tmp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _against_ipyparallel(cluster, tmp: Path, rounds: int, alloc: str) -> list[Row]:
    """One worker ready through Slurm: nbpool vs ipyparallel's Slurm launcher (if installed)."""
    try:
        import ipyparallel as ipp
    except ImportError:
        return []
    procs = Processes()

    def slurm_side() -> set[int]:
        """The Slurm daemons and what runs under them: our children too, never "leftovers"."""
        daemons = {p.pid for p in cluster.procs.values()}
        return daemons | {pid for d in daemons for pid in descendants(d)}

    def nbpool_ready():
        t0 = time.perf_counter()
        with nbpool.Pool(size=1, kernel_name="bench_slurm") as p:
            p.start()
            nbpool_ready.times.append(time.perf_counter() - t0)

    def ipp_ready():
        here = os.getcwd()
        os.chdir(tmp)  # its Slurm launcher writes its batch script into the working directory
        try:
            t0 = time.perf_counter()
            c = ipp.Cluster(
                n=1,
                engines="slurm",
                controller_ip="127.0.0.1",
                profile_dir=str(tmp / "ipython"),
                log_level=logging.WARNING,
            )
            try:
                rc = c.start_and_connect_sync()
                ipp_ready.times.append(time.perf_counter() - t0)
                job = rc[0].apply_sync(lambda: __import__("os").environ.get("SLURM_JOB_ID"))
                assert job in cluster.jobs(), "the engine runs in a Slurm job"
                rc.close()
            finally:
                for pid in set(descendants(os.getpid())) - slurm_side():  # its controller
                    procs.add(pid)
                c.stop_cluster_sync()
        finally:
            os.chdir(here)

    nbpool_ready.times, ipp_ready.times = [], []
    try:
        interleaved({"nbpool": nbpool_ready, "ipyparallel": ipp_ready}, rounds)
    finally:
        procs.kill_leftovers()
    wait_until(lambda: set(cluster.jobs()) <= {alloc}, 30, "ipyparallel's engine jobs to end")
    nb, ip = median(nbpool_ready.times), median(ipp_ready.times)
    return [
        Row(
            "h. 1 worker ready through Slurm: Pool.start() vs ipp.Cluster(engines='slurm')",
            nb,
            ip,
            "s",
            nb / ip,
            "info",
            None,
            f"{rounds} interleaved starts; ipyparallel {ipp.__version__}",
        )
    ]
