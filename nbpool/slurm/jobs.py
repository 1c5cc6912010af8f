"""Talking to Slurm: its commands, and one ``squeue`` per interval for all watched jobs.

Used by the ``nbpool-slurm`` provisioner (:mod:`nbpool.slurm.provisioner`). Slurm's
client commands are run as subprocesses on the event loop (never blocking
it); their errors become one-line :class:`SlurmError` messages with Slurm's
own words.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import NamedTuple

#: Job states after which a job never runs again (squeue ``%T``, sacct ``State``).
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
#: Seconds a Slurm command may take before we give up on it.
COMMAND_TIMEOUT = 30.0


class SlurmError(RuntimeError):
    """A Slurm command failed, or the kernel's job cannot run."""


class JobState(NamedTuple):
    state: str  # PENDING, RUNNING, CANCELLED, ...
    reason: str  # Slurm's reason code, "" for none


async def slurm(*argv: str, env: dict | None = None, cwd: str | None = None) -> str:
    """Run a Slurm command; its stdout, or :class:`SlurmError` with its stderr."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise SlurmError(
            f"{argv[0]} not found: run on a Slurm submit host, with Slurm's commands on PATH"
        ) from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    except BaseException as exc:  # timed out or cancelled: the command must not outlive us
        proc.kill()
        await proc.wait()
        if isinstance(exc, asyncio.TimeoutError):
            raise SlurmError(f"{argv[0]} did not answer within {COMMAND_TIMEOUT:g} s") from None
        raise
    if proc.returncode != 0:
        text = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
        lines = [line.split(" error: ", 1)[-1].strip() for line in text.splitlines()]
        lines = [line for line in lines if line]
        raise SlurmError(f"{argv[0]} failed: {'; '.join(lines) or f'exit code {proc.returncode}'}")
    return out.decode(errors="replace")


class JobWatch:
    """The last known state of every watched job, refreshed by one ``squeue`` per interval."""

    def __init__(self) -> None:
        self.states: dict[str, JobState] = {}
        self._users: dict[str, int] = {}
        self._intervals: list[float] = []
        self._task: asyncio.Task | None = None

    @classmethod
    def for_this_loop(cls) -> "JobWatch":
        loop = asyncio.get_running_loop()
        watch = _watches.get(loop)
        if watch is None:
            watch = _watches[loop] = cls()
        return watch

    def add(self, job_id: str, interval: float) -> None:
        self._users[job_id] = self._users.get(job_id, 0) + 1
        self._intervals.append(interval)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, job_id: str, interval: float) -> None:
        left = self._users.get(job_id, 0) - 1
        if left > 0:
            self._users[job_id] = left
        else:
            self._users.pop(job_id, None)
            self.states.pop(job_id, None)
        if interval in self._intervals:
            self._intervals.remove(interval)

    async def _run(self) -> None:
        while self._users:
            try:
                await self.refresh()
            except (SlurmError, OSError):  # slurmctld busy or restarting: keep the last states
                pass
            await asyncio.sleep(min(self._intervals, default=1.0))

    async def refresh(self) -> None:
        """Ask squeue (then sacct, for jobs squeue no longer lists) about every watched job."""
        ids = sorted(self._users)
        if not ids:
            return
        try:
            out = await slurm(
                "squeue",
                "--noheader",
                "--states=all",
                f"--jobs={','.join(ids)}",
                "--format=%i|%T|%r",
            )
        except SlurmError as exc:  # squeue fails when the only job asked about is forgotten
            if "Invalid job id" not in str(exc):
                raise
            out = ""
        seen = {}
        for line in out.splitlines():
            job, _, rest = line.strip().partition("|")
            state, _, reason = rest.partition("|")
            seen[job] = JobState(state, "" if reason in ("None", "(null)") else reason)
        for job in ids:
            if job not in seen:
                seen[job] = await _sacct_state(job)
        self.states.update((job, state) for job, state in seen.items() if job in self._users)


_watches: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, JobWatch]" = (
    weakref.WeakKeyDictionary()
)


async def _sacct_state(job: str) -> JobState:
    """A job squeue no longer lists: its final state from accounting, if the site keeps it."""
    try:
        out = await slurm(
            "sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={job}", "--format=State"
        )
    except SlurmError:
        return JobState("GONE", "no longer in squeue, and sacct has no record")
    states = [line.split()[0] for line in out.splitlines() if line.strip()]
    return JobState(states[0], "") if states else JobState("GONE", "no longer in squeue")
