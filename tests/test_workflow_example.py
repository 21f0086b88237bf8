"""examples/workflow.py (what `make demo` runs): the workflow, then the CLI's story of it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import stored_runs
from mlflow.tracking import MlflowClient

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "workflow.py"


def test_the_demo_records_the_workflow_and_tells_its_story(
    client: MlflowClient, tmp_path: Path
) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # pcs runs: the nested tree, the sweep's runs told apart by their learning rate
    tree = out.split("$ pcs runs", 1)[1].split("$ pcs show", 1)[0]
    assert re.search(r"FINISHED .* workflow +[0-9a-f]{8}\n", tree)
    for lr in ("0.01", "0.03", "0.1", "0.3"):
        assert f"├─ train(lr={lr}) " in tree
    assert "├─ load_data(n=200, seed=7) " in tree
    assert tree.count("├─ Evaluator.evaluate ") == 4
    assert "└─ publish " in tree
    assert tree.count("publish(lr=") == 4
    # pcs show: one evaluation, its init.* params, the long list summarized, its lineage
    show = out.split("$ pcs show", 1)[1].split("$ pcs rerun", 1)[0]
    assert "Evaluator.evaluate" in show
    assert "init.metric = mse" in show
    assert "init.threshold = 0.05" in show
    assert re.search(r"arg\.data = <list of 200 lists, sha256 [0-9a-f]{12}…>", show)
    assert re.search(r"model <- FINISHED +train\(lr=0\.3\) +[0-9a-f]{8}", show)
    assert re.search(r"data <- FINISHED +load_data\(n=200, seed=7\)", show)
    # pcs rerun: the evaluation replayed, with the same outcome
    rerun = out.split("$ pcs rerun", 1)[1]
    assert re.search(r"rerun of [0-9a-f]{32}: run [0-9a-f]{32} FINISHED, reproduced: True", rerun)

    runs = list(stored_runs(client).values())
    (root,) = [r for r in runs if r.info.run_name == "workflow"]
    trains = [r for r in runs if r.info.run_name.startswith("train(")]
    assert len(trains) == 4  # the thread pool's calls nest under the root
    assert {t.data.tags["mlflow.parentRunId"] for t in trains} == {root.info.run_id}
    evaluations = [r for r in runs if r.info.run_name == "Evaluator.evaluate"]
    assert len(evaluations) == 5  # four, and the replay
    assert all(e.data.params["init.metric"] == "mse" for e in evaluations)
    assert sum("pcs.rerun_of" in e.data.tags for e in evaluations) == 1
    assert all(r.info.status == "FINISHED" for r in runs)
