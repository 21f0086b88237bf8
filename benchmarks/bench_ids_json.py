"""The writer's run ids and canonical JSON, before and after, side by side in one process.

* run ids: 128 random bits (before) against time-ordered UUIDv7s (after): the cost of
  one id, and the SQL cost per run as MLflow's tables grow (runs, 8 tags and 3 params
  per run inserted into a fresh MLflow SQLite schema in transactions of 500 runs, as
  the writer does; µs per run over the first and the last 5,000 runs);
* canonical JSON: the ``json`` encoder (before: ``canonical_bytes`` walked the data for
  non-str keys, then encoded) against orjson where its bytes are the same (after), on
  realistic trees; and the per-run spec hashing of the writer.

Run with ``.venv/bin/python benchmarks/bench_ids_json.py`` (``--quick``: fewer SQL runs;
``--sql-runs N``, default 50,000). The machine is shared and noisy: compare the ratios of
one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from typing import Any

import pcs
from pcs._canon import encode, hashing
from pcs._store import facade
from pcs._store.uri import LOCAL_ID_PREFIX
from pcs.argument_set import spec_fields as argument_set_spec
from pcs.run_command import spec_fields as run_command_spec

_OLD_JSON = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_old_ids = random.Random()


def old_run_id() -> str:
    """Before: 128 random bits, as MLflow's uuid4().hex."""
    return _old_ids.getrandbits(128).to_bytes(16, "big").hex()


def old_new_run_id(backend: facade.Backend, experiment_id: str) -> str:
    """Before: ``Backend.new_run_id`` as it was (same call depth as the method)."""
    hex_id = _old_ids.getrandbits(128).to_bytes(16, "big").hex()
    if backend.assigns_ids:
        return hex_id
    return LOCAL_ID_PREFIX + hex_id


def _old_non_str_key(obj: Any) -> Any:
    stack = [obj]
    pop, push = stack.pop, stack.extend
    while stack:
        item = pop()
        cls = type(item)
        if cls is list or cls is tuple:
            push(item)
        elif cls is dict:
            for key in item:
                if not isinstance(key, str):
                    return key
            push(item.values())
    return None


def old_canonical_bytes(obj: Any) -> bytes:
    """Before: the key walk, then the json encoder."""
    if _old_non_str_key(obj) is not None:
        raise ValueError("non-str key")
    return _OLD_JSON.encode(obj).encode("utf-8")


def old_tree_bytes(tree: Any) -> bytes:
    return _OLD_JSON.encode(tree).encode("utf-8")


def _best_us(fn: Callable[[], Any], number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _row(label: str, before: float, after: float, unit: str = "us") -> None:
    scale = 1000 if unit == "ns" else 1
    print(f"  {label:40s} {before * scale:10.2f} {unit}  {after * scale:10.2f} {unit}"
          f"  {before / after:6.1f}x")


def _trees() -> dict[str, Any]:
    rng = random.Random(0)
    floats = [rng.random() for _ in range(1000)]
    dict50 = {f"key_{i}": rng.random() if i % 3 == 0 else (i if i % 3 == 1 else f"value {i}")
              for i in range(50)}
    args = {"lr": 1e-5, "epochs": 3, "layers": [64, 128, 64], "name": "resnet",
            "optimizer": {"kind": "adam", "betas": (0.9, 0.999), "eps": 1e-8}}
    spec = argument_set_spec({"models.train": {"fit": {k: encode(v) for k, v in args.items()}}})
    return {
        "encoded list of 1,000 floats": encode(floats),
        "encoded dict of 50 keys": encode(dict50),
        "ArgumentSet spec (5 args, nested)": ["spec", spec[0], spec[1]],
        "JSON data: list of 1,000 floats": floats,
        "JSON data: dict of 50 keys": dict50,
    }


def bench_ids(uri: str) -> None:
    backend = facade.Backend(uri)
    print("run id                                        before        after   ratio")
    _row("Backend.new_run_id (SQLite store)", _best_us(
        lambda: old_new_run_id(backend, "0"), 200_000), _best_us(
        lambda: backend.new_run_id("0"), 200_000), "ns")


def bench_json() -> None:
    print("canonical JSON (bytes equal)                  before        after   ratio")
    for name, tree in _trees().items():
        number = 200 if "1,000" in name else 2000
        assert old_canonical_bytes(tree) == hashing.canonical_bytes(tree)
        assert old_tree_bytes(tree) == hashing.tree_bytes(tree)
        for label, before, after in (("canonical_bytes", old_canonical_bytes,
                                      hashing.canonical_bytes),
                                     ("tree_bytes", old_tree_bytes, hashing.tree_bytes)):
            _row(f"{label}: {name}", _best_us(functools.partial(before, tree), number),
                 _best_us(functools.partial(after, tree), number))

    arguments = {"models.train": {"fit": {"a": encode(1), "b": encode(0.5), "c": encode("x")}}}

    def per_run() -> None:  # what the writer hashes for each tracked call of fit(1, 0.5, "x")
        identifier, _ = argument_set_spec(arguments)
        run_command_spec("0" * 64, "fit", identifier)

    fast = hashing._FAST
    hashing._FAST = False  # type: ignore[misc]  # the json encoder only: exactly as before
    try:
        old = _best_us(per_run, 5000)
    finally:
        hashing._FAST = fast  # type: ignore[misc]
    _row("writer: RunCommand + ArgumentSet specs", old, _best_us(per_run, 5000))


def bench_sql(runs: int, directory: str) -> None:
    from mlflow.tracking import MlflowClient

    template = os.path.join(directory, "template.db")
    MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
    backend = facade.Backend(f"sqlite:///{template}")
    window = min(5000, runs // 4)
    print(f"SQL per run, {runs:,} runs (first / last {window:,})      first        last   growth")
    for label, make in (("random ids (before)", old_run_id),
                        ("time-ordered ids (after)", lambda: backend.new_run_id("0"))):
        path = os.path.join(directory, f"{label.split()[0]}.db")
        with open(template, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        times: list[float] = []
        for _ in range(0, runs, 500):
            batch = [make() for _ in range(500)]
            now = int(time.time() * 1000)
            t0 = time.perf_counter()
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
                "user_id, status, start_time, end_time, source_version, lifecycle_stage, "
                "artifact_uri, experiment_id) VALUES (?, 'fit', 'LOCAL', '', '', 'u', "
                "'FINISHED', ?, ?, '', 'active', ?, 0)",
                [(r, now, now, f"/tmp/0/{r}/artifacts") for r in batch])
            db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                           [(f"pcs.tag{k}", "True", r) for r in batch for k in range(8)])
            db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                           [(f"arg.{k}", "0.5", r) for r in batch for k in range(3)])
            db.execute("COMMIT")
            times.append((time.perf_counter() - t0) / 500)
        db.close()
        per_batch = window // 500
        first = sum(times[:per_batch]) / per_batch * 1e6
        last = sum(times[-per_batch:]) / per_batch * 1e6
        print(f"  {label:40s} {first:8.1f} us  {last:8.1f} us  {last / first:6.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sql-runs", type=int, default=None)
    options = parser.parse_args()
    runs = options.sql_runs or (10_000 if options.quick else 50_000)
    print(f"pcs writer ids and canonical JSON — python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, pcs {pcs.__version__}")
    with tempfile.TemporaryDirectory() as directory:
        bench_ids(f"sqlite:///{directory}/ids.db")
        bench_json()
        bench_sql(runs, directory)


if __name__ == "__main__":
    main()
