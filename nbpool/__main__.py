"""``python -m nbpool``: the demo, a headless notebook runner, Slurm kernelspecs.

``python -m nbpool demo`` is a short, honest tour of the pool on local
kernels. ``python -m nbpool notebook PATH`` executes a notebook (e.g. the
quickstart) through a real kernel and prints each cell with its outputs, for
machines without a browser (needs nbclient: ``pip install nbpool[demo]``).
``python -m nbpool slurm-spec install --name NAME ...`` writes a kernelspec
whose kernels run as Slurm jobs (:mod:`nbpool.slurm_spec`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from . import ExecutionTimeout, Pool, WorkerDied, slurm_spec


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbpool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="start a pool and show what it does")
    run.add_argument("-n", "--size", type=int, default=4, help="workers (default 4)")
    book = sub.add_parser("notebook", help="execute a notebook headless and print its outputs")
    book.add_argument("path", help="the .ipynb file")
    slurm_spec.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "slurm-spec":
        return args.run(args)
    if args.command == "notebook":
        return run_notebook(args.path)
    if args.size < 1:
        parser.error("--size must be at least 1")
    demo(args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
