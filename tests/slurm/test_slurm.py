"""Workers as Slurm jobs (provisioner ``nbpool-slurm``) against a real slurmctld and slurmd.

Every test checks that it leaves no job in the queue (``no_jobs_left``): a
kernel nbpool started is never left running on the cluster.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

import nbpool
import nbpool.kernels._reaper
from tests.helpers import wait_for
from tests.netns import hosts
from tests.netns.test_provisioned import MARKER, MARKER_CODE, in_namespace_code

JOB_ID = "import os; os.environ['SLURM_JOB_ID']"
STEP_ID = "import os; os.environ['SLURM_JOB_ID'] + '.' + os.environ['SLURM_STEP_ID']"


def test_worker_runs_as_a_slurm_job_that_shutdown_cancels(slurm, slurm_py, no_jobs_left):
    """The worker's kernel runs in a job squeue lists, encrypted; shutdown leaves no job."""
    with nbpool.Pool(size=1, kernel_name=slurm_py) as pool:
        job = pool.execute(JOB_ID, session="a").result.strip("'")
        assert slurm.jobs() == {job: "RUNNING"}
        (worker,) = pool.status()["workers"]
        assert worker["encrypted"] is True and worker["pid"] is None
        assert worker["pending_reason"] is None
        with pytest.raises(nbpool.ExecutionTimeout):  # interrupted by a control message
            pool.execute("while True: pass", session="a", timeout=1)
        assert pool.execute(JOB_ID, session="a").result.strip("'") == job, "the session survived"
    assert slurm.jobs() == {}, "shutdown returned with the job still in the queue"


def test_worker_on_another_node_binds_its_address_and_talks_curve(slurm, specs, no_jobs_left):
    """A job on node ``far`` (another network namespace): the kernel runs there, bound to the
    node's NodeAddr, and nothing readable crosses the link."""
    far = specs.install("slurm_far", "--partition", "far", "--time", "10")
    host = slurm.far
    with nbpool.Pool(size=1, kernel_name=far) as pool:
        with hosts.Capture(host) as capture:
            assert pool.execute(in_namespace_code(host), session="far").result == "True"
            res = pool.execute(MARKER_CODE, session="far")
        assert res.stdout == MARKER.decode() + "\n"
        assert (
            pool.execute(
                "import json, ipykernel.kernelapp as k; k.IPKernelApp.instance().ip", session="far"
            ).result.strip("'")
            == host.address
        )
        (worker,) = pool.status()["workers"]
        assert worker["encrypted"] is True
        assert len(capture.data) > 1000 and MARKER not in capture.data


def test_end_session_cancels_its_job(slurm, slurm_py, no_jobs_left):
    """An ended session's worker is replaced: its job is cancelled, the other one stays."""
    with nbpool.Pool(size=1, max_size=2, kernel_name=slurm_py) as pool:
        a = pool.execute(JOB_ID, session="a").result.strip("'")
        b = pool.execute(JOB_ID, session="b").result.strip("'")
        assert set(slurm.jobs()) == {a, b}
        pool.end_session("a")
        wait_for(lambda: a not in slurm.jobs(), what=f"job {a} cancelled after end_session")
        assert b in slurm.jobs()


def test_scancel_of_a_workers_job_gives_worker_died_naming_it(slurm, slurm_py, no_jobs_left):
    """A job cancelled under a running execution: WorkerDied names job and state, in time.
    So does a job that ended because its kernel exited."""
    with nbpool.Pool(size=1, kernel_name=slurm_py, heartbeat_timeout=3.0) as pool:
        with pool.lease(session="x") as lease:
            job = lease.execute(JOB_ID).result.strip("'")
            cancelled = []
            cancel = threading.Thread(
                target=lambda: (
                    wait_for(lambda: pool.status()["workers"][0]["state"] == "busy", what="busy"),
                    slurm.run("scancel", job),
                    cancelled.append(time.monotonic()),
                )
            )
            cancel.start()
            with pytest.raises(nbpool.WorkerDied, match=f"Slurm job {job}: CANCELLED"):
                lease.execute("import time; time.sleep(60)")
            cancel.join()
            assert time.monotonic() - cancelled[0] < 3.0, "not within the heartbeat timeout"
        res = pool.execute(JOB_ID, session="x")
        second = res.result.strip("'")
        assert second != job and "state was lost" in res.session_reset
        # A kernel that exits ends its batch job too (exec'd by the job script).
        with pytest.raises(nbpool.WorkerDied, match=f"Slurm job {second}: FAILED"):
            pool.execute("import os; os._exit(3)", session="x")


def test_impossible_request_fails_with_slurms_reason_and_leaves_no_job(specs, no_jobs_left):
    """Too many CPUs pend forever (PartitionConfig); too much memory is refused at submit."""
    too_many = specs.install("slurm_too_many_cpus", "--cpus", "512")
    too_much = specs.install("slurm_too_much_mem", "--mem", "99999999")
    for name, reason in (
        (too_many, "can never start: PartitionConfig"),
        (too_much, "Memory specification can not be satisfied"),
    ):
        pool = nbpool.Pool(size=1, kernel_name=name)
        try:
            with pytest.raises(nbpool.WorkerStartFailed, match=reason):
                pool.start()
        finally:
            pool.shutdown()


def test_pending_job_shows_starting_with_slurms_reason(slurm, specs, no_jobs_left):
    """A queued job: the worker is 'starting' with Slurm's reason; shutdown cancels it at once."""
    later = specs.install("slurm_later", "--sbatch-arg=--begin=now+1hour")
    pool = nbpool.Pool(size=1, kernel_name=later, start_timeout=600).start(wait=False)
    try:
        worker = wait_for(
            lambda: next((w for w in pool.status()["workers"] if w["pending_reason"]), None),
            what="a pending reason in status()",
        )
        assert worker["state"] == "starting"
        assert worker["pending_reason"].endswith("is pending (BeginTime)")
        assert "BeginTime" in pool.status().table()
        assert list(slurm.jobs().values()) == ["PENDING"]
    finally:
        started = time.monotonic()
        pool.shutdown()
    assert time.monotonic() - started < 10, "shutdown waited for the queued job"


def test_start_timeout_covers_the_queue_wait(specs, no_jobs_left):
    """A job still queued after start_timeout: the start fails with Slurm's reason."""
    later = specs.install("slurm_later", "--sbatch-arg=--begin=now+1hour")
    pool = nbpool.Pool(size=1, kernel_name=later, start_timeout=2)
    try:
        with pytest.raises(nbpool.WorkerStartFailed, match=r"not running within 2 s: .*BeginTime"):
            pool.start()
    finally:
        pool.shutdown()


NOTEBOOK = """
import sys, nbpool
pool = nbpool.Pool(size=2, kernel_name=sys.argv[1]).start()
print(*sorted(pool.execute(sys.argv[2], session=s).result.strip("'") for s in "ab"), flush=True)
sys.stdin.read()  # wait to be SIGKILLed
"""


def test_reaper_cancels_the_jobs_of_a_killed_notebook(slurm, slurm_py, no_jobs_left):
    """SIGKILL of the process hosting a pool: its reaper scancels the workers' jobs."""
    notebook = subprocess.Popen(
        [sys.executable, "-c", NOTEBOOK, slurm_py, JOB_ID],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        jobs = notebook.stdout.readline().split()
        assert len(jobs) == 2 and set(jobs) <= set(slurm.jobs())
    finally:
        notebook.kill()
        notebook.wait(30)
    bound = nbpool.kernels._reaper.KILL_TIMEOUT + nbpool.kernels._reaper.REMOTE_GRACE
    wait_for(
        lambda: not set(jobs) & set(slurm.jobs()),
        timeout=bound,
        what="the reaper to cancel the jobs",
    )
    wait_for(
        lambda: not list(slurm.shared.iterdir()),
        timeout=bound,
        what="the reaper to remove the kernels' files",
    )


@pytest.fixture
def allocation(slurm):
    """An allocation (a job that only holds its node) for packed workers; cancelled after."""
    job = slurm.run(
        "sbatch", "--parsable", "--time=10", "--output=/dev/null", "--wrap=exec sleep 600"
    ).strip()
    wait_for(lambda: slurm.jobs().get(job) == "RUNNING", what=f"allocation {job} running")
    yield job
    slurm.run("scancel", job)
    wait_for(lambda: job not in slurm.jobs(), what=f"allocation {job} cancelled")


def test_packed_workers_run_as_steps_of_one_allocation(slurm, specs, no_jobs_left, allocation):
    """With --jobid, three workers are three steps of one job; shutdown ends only the steps."""
    packed = specs.install(f"slurm_packed_{allocation}", "--jobid", allocation)
    with nbpool.Pool(size=3, kernel_name=packed) as pool:
        steps = {pool.execute(STEP_ID, session=s).result.strip("'") for s in "abc"}
        assert len(steps) == 3 and {s.split(".")[0] for s in steps} == {allocation}
        assert set(slurm.steps(allocation)) >= steps
        assert list(slurm.jobs()) == [allocation], "no job besides the allocation"
        assert all(w["encrypted"] for w in pool.status()["workers"])
        (victim, *_) = sorted(steps)
        with pool.lease(
            session=next(
                s for s in "abc" if pool.execute(STEP_ID, session=s).result.strip("'") == victim
            )
        ) as lease:
            slurm.run("scancel", victim)
            with pytest.raises(nbpool.WorkerDied, match=f"Slurm step {victim}: CANCELLED"):
                lease.execute("import time; time.sleep(60)")
    assert not set(slurm.steps(allocation)) & steps, "shutdown left steps running"
    assert slurm.jobs() == {allocation: "RUNNING"}
