"""Run the nbpool benchmarks and print one table.

Usage::

    python -m benchmarks                  # everything (~4 minutes on 2 cores)
    python -m benchmarks --quick          # fewer rounds (~1.5 minutes)
    python -m benchmarks lease roundtrip  # a selection, by name or letter (a-m, t)
    python -m benchmarks --json out.json  # also write the rows as JSON

Each benchmark measures its baseline in the same run, interleaved with
nbpool, and reports medians and their ratio; see each module's docstring for
what is measured and why the baseline is fair. Nothing here is part of the
test suite.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict

from ._harness import Row

#: name -> (letter, module); the order is the run order.
BENCHMARKS = {
    "roundtrip": ("a", "benchmarks.bench_roundtrip"),
    "lease": ("b", "benchmarks.bench_lease"),
    "parallel": ("c", "benchmarks.bench_parallel"),
    "new_session": ("d", "benchmarks.bench_new_session"),
    "ipyparallel": ("e", "benchmarks.bench_ipyparallel"),
    "remote": ("f", "benchmarks.bench_remote"),
    "magic": ("g", "benchmarks.bench_magic"),
    "map": ("h", "benchmarks.bench_map"),
    "slurm": ("i", "benchmarks.bench_slurm"),
    "keep": ("j", "benchmarks.bench_keep"),
    "warm": ("k", "benchmarks.bench_warm"),
    "completion": ("l", "benchmarks.bench_completion"),
    "jobs": ("m", "benchmarks.bench_jobs"),
    "targets": ("t", "benchmarks.bench_targets"),
}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "us" and value >= 1000:
        return f"{value / 1000:.2f} ms"
    if unit == "us":
        return f"{value:.1f} us"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:.0f} {unit}"


def table(rows: list[Row]) -> str:
    head = ("benchmark", "nbpool", "baseline", "ratio", "target", "result")
    lines = []
    for r in rows:
        result = "info" if r.passed is None else ("PASS" if r.passed else "MISS")
        if r.name.endswith("ERROR"):
            result = "ERROR"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        lines.append(
            (r.name, _fmt(r.nbpool, r.unit), _fmt(r.baseline, r.unit), ratio, r.target, result)
        )
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head))]
    out = []
    for i, line in enumerate([head, *lines]):
        cells = [
            str(c).ljust(w) if j == 0 else str(c).rjust(w)
            for j, (c, w) in enumerate(zip(line, widths))
        ]
        out.append("  ".join(cells))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def environment() -> str:
    import ipykernel
    import jupyter_client
    import zmq

    try:
        import ipyparallel

        ipp = ipyparallel.__version__
    except ImportError:
        ipp = "not installed"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"python {platform.python_version()}, ipykernel {ipykernel.__version__}, "
        f"jupyter_client {jupyter_client.__version__}, pyzmq {zmq.__version__} "
        f"(libzmq {zmq.zmq_version()}), ipyparallel {ipp}; {os.cpu_count()} cores, "
        f"load average {load}"
    )


def select(names: list[str]) -> list[str]:
    if not names:  # t repeats rows of d, e, g and h
        return [name for name in BENCHMARKS if name != "targets"]
    by_letter = {letter: name for name, (letter, _) in BENCHMARKS.items()}
    chosen = []
    for name in names:
        name = by_letter.get(name, name)
        if name not in BENCHMARKS:
            choices = ", ".join(f"{n} ({letter})" for n, (letter, _) in BENCHMARKS.items())
            raise SystemExit(f"unknown benchmark {name!r}; choose from: {choices}")
        if name not in chosen:
            chosen.append(name)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="*", help="benchmarks to run (name or letter); default all")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    names = select(args.names)

    # Kernels and ipyparallel profiles of the run live in a throw-away IPYTHONDIR.
    scratch = None
    if "IPYTHONDIR" not in os.environ:
        scratch = os.environ["IPYTHONDIR"] = tempfile.mkdtemp(prefix="nbpool-bench-ipython-")
    try:
        return _run(names, args)
    finally:
        if scratch is not None:
            del os.environ["IPYTHONDIR"]
            shutil.rmtree(scratch, ignore_errors=True)


def _run(names: list[str], args: argparse.Namespace) -> int:
    print(environment(), flush=True)
    rows: list[Row] = []
    started = time.monotonic()
    for name in names:
        letter, module_name = BENCHMARKS[name]
        t0 = time.monotonic()
        print(f"[{letter}] {name} ...", flush=True)
        try:
            module = importlib.import_module(module_name)
            new = module.run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc()
            new = [Row(f"{letter}. {name} ERROR", None, None, "", None, "", False, repr(exc))]
        for row in new:
            print(
                f"    {row.name}: {_fmt(row.nbpool, row.unit)} vs {_fmt(row.baseline, row.unit)}"
                + (f" ({row.note})" if row.note else ""),
                flush=True,
            )
        rows += new
        print(f"    ({time.monotonic() - t0:.0f} s)", flush=True)
    print()
    print(table(rows))
    print(
        f"\n{'quick' if args.quick else 'full'} run, {time.monotonic() - started:.0f} s; "
        "medians; ratio = nbpool / baseline unless the row says otherwise"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "environment": environment(),
                    "quick": args.quick,
                    "rows": [asdict(r) for r in rows],
                },
                f,
                indent=1,
            )
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
