"""Run a third-party project's own test suite with ``pytest --pcs`` and check the counts.

Downloads the project's source distribution from the package index (``pip
download --no-binary :all:``), unpacks it in a temporary folder and runs its
tests twice: without the plugin (``-p no:pcs_pytest``) and with ``--pcs``
against a fresh SQLite store. Then reads the store with a stock
``MlflowClient`` and compares pytest's own summary with what MLflow holds:
the session run's ``pytest.<outcome>`` metrics (which count what pytest's
summary counts) and the test runs per ``pytest.outcome`` tag.

    python benchmarks/pytest_plugin_thirdparty.py                    # more-itertools 10.5.0
    python benchmarks/pytest_plugin_thirdparty.py six==1.16.0 test_six.py
    python benchmarks/pytest_plugin_thirdparty.py --sdist path/to/x.tar.gz tests

Needs network for the download (not part of the unit tests). Exits 1 if a
count differs.

Measured (2-core shared machine under load, pytest 9.2, MLflow 3, SQLite):
more-itertools 10.5.0, ``tests/``: pytest 663 passed, 1 skipped
(+ 2332 subtests passed), the same with and without ``--pcs``; MLflow: one
session run with metrics 663 passed, 1 skipped, 2332 subtests_passed, and
664 test runs (663 passed, 1 skipped), all nested under the session run.
Wall time 5.1 s without ``--pcs``, 14.2 s with it (MLflow's start-up and
store connection, then a few ms per test run).
six 1.16.0, ``test_six.py``: pytest 198 passed, 1 failed (six's own test,
failing on this Python with or without pcs), 1 skipped; MLflow: the same
session metrics, 200 test runs (198 passed, 1 failed, 1 skipped). Wall time
2.7 s without, 17.6 s with ``--pcs`` (a fresh store: MLflow's migrations).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?|deselected|"
                     r"subtests passed|subtests failed|subtests skipped)\b")


def download(spec: str, folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                    "--no-deps", "-d", str(folder), spec], check=True)
    return next(folder.glob("*.tar.gz"))


def unpack(sdist: Path, folder: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(folder, filter="data")
    return next(p for p in folder.iterdir() if p.is_dir())


def pytest_counts(output: str) -> dict[str, int]:
    last = [line for line in output.splitlines() if " in " in line and SUMMARY.search(line)][-1]
    counts = {}
    for number, noun in SUMMARY.findall(last):
        counts["error" if noun.startswith("error") else noun.replace(" ", "_")] = int(number)
    return counts


def run_pytest(project: Path, tests: str, *args: str, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           tests, *args], cwd=project, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout + done.stderr


def main() -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="more-itertools==10.5.0")
    parser.add_argument("tests", nargs="?", default="tests")
    parser.add_argument("--sdist", type=Path, help="use this sdist instead of downloading")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pcs-thirdparty-"))
    sdist = options.sdist or download(options.spec, work / "dist")
    project = unpack(sdist, work / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PCS_PYTEST", "MLFLOW_TRACKING_URI")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"

    plain_s, plain_out = run_pytest(project, options.tests, "-p", "no:pcs_pytest", env=env)
    pcs_s, pcs_out = run_pytest(project, options.tests, "--pcs", env=env)
    plain, with_pcs = pytest_counts(plain_out), pytest_counts(pcs_out)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    found = list(client.search_runs(["0"], max_results=50000))
    sessions = [r for r in found if r.info.run_name == "pytest session"]
    tests = [r for r in found if "pytest.nodeid" in r.data.tags]
    session = sessions[0]
    metrics = {k.removeprefix("pytest."): int(v) for k, v in session.data.metrics.items()
               if k != "pytest.duration" and v}
    per_outcome = dict(collections.Counter(r.data.tags.get("pytest.outcome") for r in tests))
    nested = all(r.data.tags.get("mlflow.parentRunId") == session.info.run_id for r in tests)
    report = {
        "project": sdist.name,
        "pytest_counts_without_pcs": plain,
        "pytest_counts_with_pcs": with_pcs,
        "mlflow_session_metrics": metrics,
        "mlflow_test_runs": len(tests),
        "mlflow_test_runs_per_outcome": per_outcome,
        "all_test_runs_nested_under_session": nested,
        "wall_s_without_pcs": round(plain_s, 2),
        "wall_s_with_pcs": round(pcs_s, 2),
    }
    print(json.dumps(report, indent=2))
    test_counts = {k: v for k, v in with_pcs.items() if not k.startswith("subtests")}
    ok = (
        len(sessions) == 1
        and plain == with_pcs == metrics
        and nested
        # one run per test; equal to pytest's counts unless subtests fail (pytest then
        # counts each failed subtest as one more "failed")
        and (per_outcome == test_counts or "subtests_failed" in with_pcs)
    )
    print("OK: MLflow holds what pytest counted" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
