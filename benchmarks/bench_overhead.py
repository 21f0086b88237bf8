"""pcs against MLflow, side by side, in one process: overhead, throughput, import time, memory.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/bench_overhead.py``). It
works in a temporary directory with a fresh default SQLite store, prints medians
and ratios, and checks them against the targets of DESIGN.md:

* caller-side overhead of a tracked call (3 scalar args, return value logged) <= 15 us median
* persisted throughput (N tracked calls + pcs.flush()) >= 1,000 runs/s and >= 10x MLflow's
  fluent API
* ``import pcs`` <= 150 ms
* peak RSS bounded while 100,000 tracked calls flood in

Options: ``--calls N`` (throughput runs, default 5000), ``--flood N`` (default 100000),
``--quick`` (smaller numbers, for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any


def _median_call_us(fn: Callable[[], Any], n: int) -> float:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return statistics.median(samples) / 1000


def _import_ms(module: str, repeat: int = 5) -> float:
    """Median time of ``import module`` in a fresh interpreter, bytecode cached (as installed)."""
    code = f"import time; t=time.perf_counter(); import {module}; print(time.perf_counter()-t)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times = []
    for i in range(repeat + 1):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        ).stdout
        if i == 0:
            continue  # the first run writes the bytecode caches
        times.append(float(out.strip().splitlines()[-1]) * 1000)
    return statistics.median(times)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--flood", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    if opts.quick:
        opts.calls, opts.flood = 1000, 20_000

    workdir = tempfile.mkdtemp(prefix="pcs-bench-")
    os.chdir(workdir)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/mlflow.db"
    os.environ.setdefault("PCS_AUTO_RECOVER", "0")
    warnings.simplefilter("ignore")

    import_pcs = _import_ms("pcs")
    import_mlflow = _import_ms("mlflow")

    import mlflow

    import pcs

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.search_experiments()  # create the schema before timing anything
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)

    def bare(a: int, b: float, c: str) -> float:
        return a * b

    tracked = pcs.tracked(bare)

    @mlflow.trace
    def traced(a: int, b: float, c: str) -> float:
        return a * b

    # -- caller-side overhead --------------------------------------------------
    n = 2000 if opts.quick else 5000
    with pcs.run("bench-overhead"):
        for i in range(200):  # warm up: component identity, writer thread, caches
            tracked(i, 0.5, "x")
        pcs.flush()
        t_bare = _median_call_us(lambda: bare(3, 0.5, "x"), n)
        t_pcs = _median_call_us(lambda: tracked(3, 0.5, "x"), n)
    pcs.flush()
    n_trace = 300 if opts.quick else 1000
    t_trace = _median_call_us(lambda: traced(3, 0.5, "x"), n_trace)

    def fluent_nested() -> None:
        with mlflow.start_run(nested=True):
            mlflow.log_params({"a": 3, "b": 0.5, "c": "x"})
            bare(3, 0.5, "x")

    n_fluent = 50 if opts.quick else 200
    with mlflow.start_run(run_name="bench-fluent-parent"):
        t_fluent = _median_call_us(fluent_nested, n_fluent)
    overhead = t_pcs - t_bare

    # -- persisted throughput ----------------------------------------------------
    calls = opts.calls
    t0 = time.perf_counter()
    for i in range(calls):
        tracked(i, 0.5, "x")
    caller_s = time.perf_counter() - t0
    pcs.flush()
    pcs_s = time.perf_counter() - t0
    pcs_rate = calls / pcs_s

    fluent_n = 100 if opts.quick else 300
    t0 = time.perf_counter()
    for i in range(fluent_n):
        with mlflow.start_run():
            mlflow.log_params({"a": i, "b": 0.5, "c": "x"})
            bare(i, 0.5, "x")
    fluent_rate = fluent_n / (time.perf_counter() - t0)

    # -- memory under a flood ------------------------------------------------------
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    for i in range(opts.flood):
        tracked(i, 0.5, "x")
    flood_caller = time.perf_counter() - t0
    pcs.flush()
    flood_total = time.perf_counter() - t0
    rss_after = _rss_mb()

    import sqlite3

    with sqlite3.connect(f"{workdir}/mlflow.db") as db:  # search_runs caps at 50,000 results
        (stored,) = db.execute(
            "SELECT COUNT(*) FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid "
            "WHERE tags.key = 'pcs.entry_point' AND tags.value = 'bare' "
            "AND runs.status = 'FINISHED'"
        ).fetchone()
    expected = 200 + n + calls + opts.flood

    rows = [
        ("bare call", f"{t_bare:.2f} us", ""),
        ("@pcs.tracked call (caller side)", f"{t_pcs:.2f} us",
         f"overhead {overhead:.2f} us (target <= 15)"),
        ("@mlflow.trace call", f"{t_trace:.1f} us", f"pcs is {t_trace / t_pcs:.0f}x faster"),
        ("MLflow fluent nested run", f"{t_fluent:.1f} us",
         f"pcs is {t_fluent / t_pcs:.0f}x faster"),
        ("pcs persisted throughput", f"{pcs_rate:,.0f} runs/s",
         f"{calls} calls, caller {caller_s:.2f}s, +flush {pcs_s:.2f}s (target >= 1,000)"),
        ("MLflow fluent throughput", f"{fluent_rate:,.0f} runs/s",
         f"pcs/MLflow = {pcs_rate / fluent_rate:.0f}x (target >= 10x)"),
        ("import pcs", f"{import_pcs:.0f} ms", "median of 5 (target <= 150)"),
        ("import mlflow", f"{import_mlflow:.0f} ms", f"{import_mlflow / import_pcs:.0f}x pcs"),
        ("flood: peak RSS", f"{rss_after:.0f} MB",
         f"{opts.flood:,} calls; before {rss_before:.0f} MB; caller {flood_caller:.1f}s, "
         f"delivered after {flood_total:.1f}s"),
        ("runs in MLflow", f"{stored:,}", f"expected {expected:,}"),
    ]
    print(f"pcs benchmark — python {sys.version.split()[0]}, mlflow {mlflow.__version__}, "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"  {label:<{width}}  {value:>16}  {note}")
    checks = {
        "overhead <= 15 us": overhead <= 15,
        "throughput >= 1,000 runs/s": pcs_rate >= 1000,
        "throughput >= 10x MLflow": pcs_rate >= 10 * fluent_rate,
        "import pcs <= 150 ms": import_pcs <= 150,
        "no run lost": stored == expected,
    }
    for name, ok in checks.items():
        print(f"  [{'met' if ok else 'MISSED'}] {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
