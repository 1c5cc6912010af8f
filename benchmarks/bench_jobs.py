"""(m) Memory of a ``--bg`` job's output: 200 MB printed, the notebook kernel's RSS.

A real notebook kernel (ipykernel, jupyter_client messages with a
``cellId``, as JupyterLab sends) runs a ``%%pool_exec --bg`` cell that
prints 200 MB (200 x 1 MiB lines) on a one-worker pool, then waits for it
in a later cell. The kernel's peak RSS (``VmHWM``) over its RSS before the
job is the growth, set against issue 20's target: the bound
(``PoolMagics.job_output_limit``, 10 MiB here, which bounds the job's
record and the execution's result alike) plus :data:`SLACK`. The baseline
is the same run in a fresh kernel whose job keeps almost nothing
(``%config PoolMagics.job_output_limit = 1``): the difference is what
the record and the result cost.

Three ways to print it. ``paced``: ``print(line, flush=True)`` every
20 ms, one 1 MiB iopub message at a time, slower than the notebook kernel
forwards them (a long job's output). ``lines``: the same without the
pause: the worker sends faster than the notebook kernel forwards, and the
messages it has not read yet wait in its receive queue (iopub has no flow
control). ``burst``: plain ``print``, which the worker's ipykernel sends as
one message per 0.2 s flush interval, here one of 200 MB: the notebook
kernel then holds that message whole (the received frame, its decoded
text, the copy it re-publishes to the notebook), whatever the bound. Not a
timed test.
"""

from __future__ import annotations

import time

from jupyter_client.manager import KernelManager

from ._harness import Processes, Row, descendants

NAME = "jobs"

MIB = 2**20
LIMIT = 10 * MIB
#: The "few MB" over the bound that issue 20 allows.
SLACK = 8 * MIB
JOB = (
    "%%pool_exec --bg -s big -o job\n"
    "line = 'x' * (2**20 - 1)\n"
    "for _ in range({lines}):\n"
    "    print(line{flush})\n"
)
#: How each variant prints: one message per line, or all in one flush interval.
PRINTS = {
    "paced": ", flush=True); __import__('time').sleep(0.02",
    "lines": ", flush=True",
    "burst": "",
}
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


def _growth(procs: Processes, limit: int, job: str) -> tuple[int, int, int]:
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
        _execute(kc, job)
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
    rows = []
    try:
        for how, flush in PRINTS.items():
            job = JOB.format(lines=lines, flush=flush)
            kept_peak, kept_after, kept = _growth(procs, LIMIT, job)
            bare_peak, bare_after, _ = _growth(procs, 1, job)
            over = kept_peak - LIMIT
            rows.append(
                Row(
                    f"m. {lines} MB from a --bg cell ({how}): notebook kernel peak RSS growth, "
                    "10 MiB bound vs 1 byte",
                    kept_peak / MIB,
                    bare_peak / MIB,
                    "MiB",
                    None,
                    f"<= {LIMIT / MIB:.0f}+{SLACK / MIB:.0f} MiB",
                    kept_peak <= LIMIT + SLACK,
                    f"{over / MIB:+.1f} MiB over the bound (target: +{SLACK / MIB:.0f}); the "
                    f"record holds {kept / MIB:.1f} MiB; left after the job: "
                    f"{kept_after / MIB:.1f} vs {bare_after / MIB:.1f} MiB",
                )
            )
    finally:
        procs.kill_leftovers()
    return rows
