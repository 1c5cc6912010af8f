"""(l) Memory of a ``--bg`` job's output record: 200 MB printed, the notebook kernel's RSS.

A real notebook kernel (ipykernel, jupyter_client messages with a
``cellId``, as JupyterLab sends) runs a ``%%pool_exec --bg`` cell that
prints 200 MB (200 x 1 MiB lines) on a one-worker pool, then waits for it
in a later cell. The kernel's peak RSS (``VmHWM``) over its RSS before the
job is the growth; the baseline is the same run in a fresh kernel whose
job keeps almost nothing (``%config PoolMagics.job_output_limit = 1``), so
the difference is what the record costs, compared with its bound
(``job_output_limit``, 10 MB by default). Not a timed test: the rows are
informational (the target is "the record adds at most its bound plus a few
MB"). The growth of both includes what the execution itself collects for
its :class:`~nbpool.result.ExecutionResult` (``res.stdout`` is the whole
output), which is no part of the record; the notes give both numbers.
"""

from __future__ import annotations

import time

from jupyter_client.manager import KernelManager

from ._harness import Processes, Row, descendants

NAME = "jobs"

MIB = 2**20
LIMIT = 10 * MIB
JOB = (
    "%%pool_exec --bg -s big -o job\n"
    "line = 'x' * (2**20 - 1)\n"
    "for _ in range({lines}):\n"
    "    print(line)\n"
)
WAIT = "job.result(600).ok"


def _kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for row in f:
            if row.startswith(key + ":"):
                return int(row.split()[1]) * 1024
    raise KeyError(key)


def _execute(kc, code: str, timeout: float = 600) -> dict:
    """Run ``code`` as a JupyterLab cell (with a cellId); its reply content."""
    content = {
        "code": code,
        "silent": False,
        "store_history": True,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    msg = kc.session.msg("execute_request", content, metadata={"cellId": "bench"})
    kc.shell_channel.send(msg)
    deadline = time.monotonic() + timeout
    while True:
        reply = kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"{code.splitlines()[0]!r} failed: {reply['content']}")
            return reply["content"]


def _growth(procs: Processes, limit: int, lines: int) -> tuple[int, int, int]:
    """(peak growth, growth left after the job, record bytes) of one fresh kernel."""
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    procs.add(km.provisioner.pid)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        _execute(kc, f"%load_ext nbpool\n%config PoolMagics.job_output_limit = {limit}")
        _execute(kc, "%pool start -n 1")
        _execute(kc, "%%pool_exec -s big\npass")
        for pid in descendants(km.provisioner.pid):
            procs.add(pid)
        pid = km.provisioner.pid
        before = _kb(pid, "VmRSS")
        _execute(kc, JOB.format(lines=lines))
        _execute(kc, WAIT)
        peak = _kb(pid, "VmHWM") - before
        _execute(kc, "del job\nimport gc; gc.collect()")
        after = _kb(pid, "VmRSS") - before
        record = _record_bytes(kc)
        _execute(kc, "%pool stop")
        return peak, after, record
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _record_bytes(kc) -> int:
    content = {
        "code": "",
        "silent": True,
        "store_history": False,
        "user_expressions": {
            "b": "get_ipython().magics_manager.registry['PoolMagics'].jobs.get(2).record.size()[1]"
        },
        "allow_stdin": False,
        "stop_on_error": True,
    }
    msg = kc.session.msg("execute_request", content)
    kc.shell_channel.send(msg)
    while True:
        reply = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return int(reply["content"]["user_expressions"]["b"]["data"]["text/plain"])


def run(quick: bool = False) -> list[Row]:
    lines = 50 if quick else 200
    procs = Processes()
    try:
        kept_peak, kept_after, kept = _growth(procs, LIMIT, lines)
        bare_peak, bare_after, _ = _growth(procs, 1, lines)
    finally:
        procs.kill_leftovers()
    extra = kept_peak - bare_peak
    return [
        Row(
            f"l. {lines} MB from a --bg cell: notebook kernel peak RSS growth, record vs none",
            kept_peak / MIB,
            bare_peak / MIB,
            "MiB",
            None,
            "info",
            None,
            f"the record adds {extra / MIB:.1f} MiB at its peak for a {LIMIT / MIB:.0f} MiB "
            f"bound (it holds {kept / MIB:.1f} MiB); left after the job: "
            f"{kept_after / MIB:.1f} vs {bare_after / MIB:.1f} MiB",
        ),
    ]
