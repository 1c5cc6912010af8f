"""``python -m nbpool``: the demo, a headless notebook runner, Slurm kernelspecs,
kept sessions.

``python -m nbpool demo`` is a short, honest tour of the pool on local
kernels. ``python -m nbpool notebook PATH`` executes a notebook (e.g. the
quickstart) through a real kernel and prints each cell with its outputs, for
machines without a browser (needs nbclient: ``pip install nbpool[demo]``).
``python -m nbpool slurm-spec install --name NAME ...`` writes a kernelspec
whose kernels run as Slurm jobs (:mod:`nbpool.slurm.spec`).
``python -m nbpool sessions`` lists this user's kept sessions and
``python -m nbpool stop POOL`` (or ``--all``) stops them; neither needs a
notebook.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from . import ExecutionTimeout, Pool, WorkerDied
from .slurm import spec as slurm_spec


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def demo(size: int) -> None:
    started = time.monotonic()
    # Each named session keeps its worker: one for "etl", `size` for the jobs.
    with Pool(size=size + 1, max_size=size + 2) as pool:
        _say(f"{size + 1} worker kernels ready in {time.monotonic() - started:.2f} s")
        print(pool.status().table())

        _say("named sessions keep their state on their own worker")
        pool.execute("rows = [1, 2, 3]", session="etl")
        res = pool.execute("rows.append(4); print('etl rows:', rows)", session="etl")
        print(res.stdout.strip(), f"(worker {res.worker_id})")

        _say(f"{size} sessions run in parallel: {size} x sleep(1)")
        code = "import time, os; time.sleep(1); os.getpid()"
        t0 = time.monotonic()
        futures = [pool.submit(code, session=f"job{i}") for i in range(size)]
        pids = [f.result().result for f in futures]
        wall = time.monotonic() - t0
        print(
            f"wall {wall:.2f} s for {size} s of work on {len(set(pids))} workers "
            f"({size / wall:.1f}x speed-up)"
        )

        _say("a runaway cell is interrupted by its timeout; the session survives")
        try:
            pool.execute("while True: pass", session="etl", timeout=1)
        except ExecutionTimeout as exc:
            print(f"ExecutionTimeout: {exc}")
        print("etl still has", pool.execute("rows", session="etl").result)

        _say("a worker killed mid-execution costs only its own session")
        victim = pool.submit("import time; time.sleep(30)", session="doomed")
        while not any(
            w["session"] == "doomed" and w["state"] == "busy" for w in pool.status()["workers"]
        ):
            time.sleep(0.02)
        pid = next(w["pid"] for w in pool.status()["workers"] if w["session"] == "doomed")
        os.kill(pid, signal.SIGKILL)
        try:
            victim.result(timeout=10)
        except WorkerDied as exc:
            print(f"WorkerDied: {exc}")
        print("etl untouched:", pool.execute("rows", session="etl").result)
        res = pool.execute("'fresh start'", session="doomed")
        print(f"doomed runs again on {res.worker_id}; notice: {res.session_reset}")

        _say("pool status")
        print(pool.status().table())
    print("\nall workers stopped; nothing left running.")


def run_notebook(path: str) -> int:
    """Execute ``path`` with nbclient and print every cell and its outputs."""
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError:
        print("running a notebook needs nbclient: pip install 'nbpool[demo]'", file=sys.stderr)
        return 2
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=300, resources={"metadata": {"path": os.path.dirname(path)}}
    )
    failed = None
    try:
        client.execute()
    except CellExecutionError as exc:
        failed = str(exc).strip().splitlines()[-1]
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.execution_count is None:
            continue
        print(f"\nIn [{cell.execution_count}]: " + cell.source.replace("\n", "\n    ..: "))
        for out in cell.outputs:
            text = out.get("text") or out.get("data", {}).get("text/plain")
            if out["output_type"] == "error":
                text = f"{out['ename']}: {out['evalue']}"
            if text:
                print("  " + text.rstrip().replace("\n", "\n  "))
    if failed:
        print(f"\nthe notebook stopped at an error: {failed}", file=sys.stderr)
        return 1
    return 0


def _kept(kp, state: dict, now: float) -> tuple[int | None, bool]:
    """(pid of the attached pool, 0 if unknown, or None; whether it expired and was
    stopped now: the keeper applies keep_for, and this does if the keeper is gone)."""
    from .kept.store import expired

    if not kp.try_lock():
        return kp.holder() or 0, False
    try:
        if expired(state, now):  # its keeper is gone, or about to act: act for it
            kp.stop_workers(state)
            kp.remove_files()
            return None, True
    finally:
        kp.unlock()
    return None, False


def list_sessions() -> int:
    """``python -m nbpool sessions``: one line per kept session."""
    from . import render
    from .kept.store import alive, kept_pools

    rows = [("pool", "session", "state", "idle for", "pid")]
    now = time.time()
    for kp, state in kept_pools():
        holder, gone = _kept(kp, state, now)
        if gone:
            continue
        since = state.get("detached_at")
        for session, record in state.get("sessions", {}).items():
            if not alive(record):
                shown = "ended"
            elif holder is not None:
                shown = f"attached (process {holder})"
            else:
                shown = "detached"
            idle = "-" if holder is not None or since is None else render.duration(now - since)
            rows.append((kp.name, session, shown, idle, str(record["pid"])))
    if len(rows) == 1:
        print("no kept sessions")
    else:
        print("\n".join(render.align(rows)))
    return 0


def stop_sessions(name: str | None) -> int:
    """``python -m nbpool stop POOL|--all``: stop kept sessions no pool is attached to."""
    from .kept.store import kept_pools

    pools = kept_pools()
    chosen = [(kp, st) for kp, st in pools if name is None or kp.name == name]
    if name is not None and not chosen:
        names = ", ".join(repr(kp.name) for kp, _ in pools) or "none"
        print(f"no kept pool named {name!r} (kept pools: {names})", file=sys.stderr)
        return 1
    status = 0
    for kp, _ in chosen:
        if not kp.try_lock():
            print(
                f"pool {kp.name!r} is attached to process {kp.holder() or 'unknown'}: stop it "
                "there (%pool stop or pool.shutdown())",
                file=sys.stderr,
            )
            status = 1
            continue
        try:
            state = kp.load()
            stopped = kp.stop_workers(state)
            kp.remove_files()
        finally:
            kp.unlock()
        print(f"stopped pool {kp.name!r}: {stopped} kept worker(s)")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbpool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="start a pool and show what it does")
    run.add_argument("-n", "--size", type=int, default=4, help="workers (default 4)")
    book = sub.add_parser("notebook", help="execute a notebook headless and print its outputs")
    book.add_argument("path", help="the .ipynb file")
    slurm_spec.add_parser(sub)
    sub.add_parser("sessions", help="list kept sessions (pool, session, state, idle for, pid)")
    stop = sub.add_parser("stop", help="stop the kept sessions of a pool")
    which = stop.add_mutually_exclusive_group(required=True)
    which.add_argument("pool", nargs="?", help="the pool's name (see `sessions`)")
    which.add_argument("--all", action="store_true", help="every kept pool of yours")
    args = parser.parse_args(argv)
    if args.command == "slurm-spec":
        return args.run(args)
    if args.command == "notebook":
        return run_notebook(args.path)
    if args.command == "sessions":
        return list_sessions()
    if args.command == "stop":
        return stop_sessions(None if args.all else args.pool)
    if args.size < 1:
        parser.error("--size must be at least 1")
    demo(args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
