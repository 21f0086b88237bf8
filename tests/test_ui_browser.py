"""The MLflow UI, in a real headless Chromium, shows the demo's runs as pcs means them to:
the nested tree (a top-level run, children naming their parent) and ``init.*`` params.

Skipped when no Chromium is installed, unless ``PCS_REQUIRE_BROWSER=1`` (CI sets it
once it installed Chromium), which makes a missing browser a failure.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from server_support import Server

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "workflow.py"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    reason = f"no headless browser found (looked for {', '.join(BROWSERS)}); " \
             "install one with: apt-get install -y chromium"
    if os.environ.get("PCS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"PCS_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


class UiServer(Server):
    """``mlflow server`` on the demo's own store (not the suite's server store)."""

    def __init__(self, root: Path, store_uri: str) -> None:
        super().__init__(root)
        self.store_uri = store_uri

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - closed below
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.store_uri,
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_until_healthy()


@pytest.fixture
def ui(tmp_path: Path, tracking_uri: str) -> Iterator[UiServer]:
    _browser()  # skip (or fail) before the slow part
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    (tmp_path / "ui").mkdir()
    server = UiServer(tmp_path / "ui", tracking_uri)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _rendered_text(url: str) -> str:
    """The page's text after its JavaScript ran: Chromium's DOM, tags and scripts removed."""
    done = subprocess.run(
        [_browser(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--virtual-time-budget=20000", "--window-size=1600,1200", "--dump-dom", url],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", done.stdout, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def test_the_mlflow_ui_shows_the_tree_and_init_params(ui: UiServer) -> None:
    client = MlflowClient(ui.url)
    experiment = client.get_experiment_by_name("pcs-demo")
    assert experiment is not None
    eid = experiment.experiment_id
    runs = client.search_runs([eid], max_results=100)
    (root,) = [r for r in runs if r.info.run_name == "workflow"]
    train = next(r for r in runs if r.info.run_name == "train(lr=0.1)")
    evaluation = next(r for r in runs if r.info.run_name == "Evaluator.evaluate")

    # the runs page: the top-level run, with its nested runs counted in the experiment
    page = _rendered_text(f"{ui.url}/#/experiments/{eid}/runs")
    assert "pcs-demo" in page
    assert re.search(r"\bworkflow\b", page), page[:3000]
    assert f"{len(runs)} matching runs" in page

    # a nested run's page: its argument-bearing name, and the tree's parent
    page = _rendered_text(f"{ui.url}/#/experiments/{eid}/runs/{train.info.run_id}")
    assert "train(lr=0.1)" in page, page[:3000]
    assert "Parent run workflow" in page
    assert "arg.lr 0.1" in page

    # an evaluation's page: the tracked class's __init__ arguments as params
    page = _rendered_text(f"{ui.url}/#/experiments/{eid}/runs/{evaluation.info.run_id}")
    assert "init.metric mse" in page, page[:3000]
    assert "init.threshold 0.05" in page
    assert re.search(r"arg\.data <list of 200 lists, sha256 [0-9a-f]{12}…>", page)
    assert "Parent run workflow" in page
    assert root.info.run_id not in (train.info.run_id, evaluation.info.run_id)
