"""examples/quickstart.py (what `make demo` runs) records the tree it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import stored_runs
from mlflow.tracking import MlflowClient

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"


def test_quickstart_records_nested_tree(client: MlflowClient, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "run  quickstart() FINISHED" in done.stdout
    runs = stored_runs(client)
    by_name: dict[str, list[object]] = {}
    for r in runs.values():
        # a tracked call's run name may show arguments: fetch(doc_id=0, delay=0.15)
        by_name.setdefault(r.data.tags["mlflow.runName"].split("(", 1)[0], []).append(r)
    (root,) = by_name["quickstart"]
    (gather,) = by_name["fetch-all"]
    assert gather.data.tags["mlflow.parentRunId"] == root.info.run_id
    fetches = by_name["fetch"]
    assert len(fetches) == 3
    assert {f.data.tags["mlflow.parentRunId"] for f in fetches} == {gather.info.run_id}
    scores = [s for s in by_name["score"] if s.data.params["arg.weight"] == "1.0"]
    assert len(scores) == 3  # the thread pool's calls nest under the root
    assert {s.data.tags["mlflow.parentRunId"] for s in scores} == {root.info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs.values())
