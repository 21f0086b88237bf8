"""examples/replay.py runs end to end from an empty directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "replay.py"


@pytest.mark.slow
def test_replay_example(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "PCS_REPLAY_ALLOWED_MODULES")}
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=240, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "pcs.reproduced = True" in out.stdout
    assert "refused by default: module 'replay_pipeline' is not allowed" in out.stdout
    assert "tampered export refused" in out.stdout
    store_b = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'store-b.db'}")
    runs = store_b.search_runs(["0"], max_results=100)
    imported = [r for r in runs if "pcs.imported_from" in r.data.tags]
    replays = [r for r in runs if "pcs.rerun_of" in r.data.tags]
    assert len(imported) == 4
    assert len(replays) == 1
    assert replays[0].data.tags["pcs.reproduced"] == "True"
