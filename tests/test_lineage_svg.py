"""The first-party lineage_svg plugin (plugins/pcs_lineage_svg): the artifact pcs.lineage.svg
on top-level runs whose tree has lineage, when Graphviz is installed — and nothing at all
without lineage, without Graphviz, or with the plugin disabled."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pcs_lineage_svg
import pytest
from mlflow.tracking import MlflowClient

import pcs
import pcs.lineage
import pcs.plugins
from pcs import _lineage, conventions

needs_dot = pytest.mark.skipif(pcs_lineage_svg.DOT is None,
                               reason="Graphviz's dot is not on PATH")
SVG = "{http://www.w3.org/2000/svg}"


class Model:
    def __init__(self, weights: list[float]) -> None:
        self.weights = weights


@pcs.tracked
def load(n: int) -> list[float]:
    return [float(i) for i in range(n)]


@pcs.tracked
def train(lr: float) -> Model:
    return Model([lr, 2 * lr])


@pcs.tracked
def fit(data: list[float], lr: float) -> Model:
    return Model([lr * len(data)])


@pcs.tracked
def evaluate(model: Model) -> float:
    return sum(model.weights)


@pcs.tracked
def score(model: Model, data: list[float]) -> float:
    return sum(model.weights) + len(data)


@pcs.tracked
def count(n: int) -> int:
    return n


@pcs.tracked
def pipeline(lr: float) -> float:
    return evaluate(train(lr))


@pytest.fixture(autouse=True)
def fresh_table() -> None:
    _lineage.clear()


@pytest.fixture
def svg_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[pcs_lineage_svg.LineageSvgPlugin]:
    """A fresh plugin (no counts from earlier tests) as ``lineage_svg`` for this test; the
    entry point's is registered again afterwards. It waits for the store as long as it
    takes (a loaded machine may take longer than the 0.5 s a program's run end waits)."""
    monkeypatch.setattr(pcs_lineage_svg, "FLUSH_TIMEOUT", 60.0)
    found = {p.name: p.plugin for p in pcs.plugins.list_plugins()}
    previous = found.get("lineage_svg")
    if previous is not None:
        pcs.plugins.unregister("lineage_svg")
    assert pcs_lineage_svg.DOT is not None
    fresh = pcs_lineage_svg.plugin(pcs_lineage_svg.DOT)
    assert isinstance(fresh, pcs_lineage_svg.LineageSvgPlugin)
    pcs.plugins.register(fresh, "lineage_svg")
    yield fresh
    assert fresh.draw_pending(60)  # nothing left for the exit of the test process
    pcs.plugins.unregister("lineage_svg")
    if previous is not None:
        pcs.plugins.register(previous, "lineage_svg")


def artifacts(tracking_uri: str, run: pcs.Run) -> list[str]:
    assert pcs.flush(60)
    return [a.path for a in MlflowClient(tracking_uri=tracking_uri).list_artifacts(run.identifier)]


def picture(tracking_uri: str, run: pcs.Run, tmp_path: Path) -> ET.Element:
    """The run's pcs.lineage.svg, read with a stock MlflowClient and parsed as XML."""
    assert pcs.flush(60)
    client = MlflowClient(tracking_uri=tracking_uri)
    local = client.download_artifacts(run.identifier, conventions.LINEAGE_SVG_ARTIFACT,
                                      str(tmp_path))
    root = ET.parse(local).getroot()
    assert root.tag == f"{SVG}svg"
    return root


def texts(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{SVG}text")]


def edge_count(svg: ET.Element) -> int:
    return sum(1 for g in svg.iter(f"{SVG}g") if g.get("class") == "edge")


@needs_dot
def test_the_plugin_is_installed_through_its_entry_point() -> None:
    found = {p.name: p for p in pcs.plugins.list_plugins()}
    assert found["lineage_svg"].plugin is pcs_lineage_svg.PLUGIN
    assert found["lineage_svg"].distribution is not None
    assert isinstance(pcs_lineage_svg.PLUGIN, pcs_lineage_svg.LineageSvgPlugin)


@needs_dot
def test_a_pipeline_with_lineage_gets_the_picture(
    svg_plugin: Any, tracking_uri: str, tmp_path: Path
) -> None:
    with pcs.run("pipeline") as run:
        model = train(0.1)
        evaluate(model)
    svg = picture(tracking_uri, run, tmp_path)
    words = texts(svg)
    assert any(w.startswith("pipeline ") for w in words)
    assert any(w.startswith("train(lr=0.1) ") for w in words)
    assert any(w.startswith("evaluate ") for w in words)
    assert "model" in words  # the edge's label: the argument the value went into
    assert edge_count(svg) == 1
    nested = [r for r in pcs.runs() if r.identifier != run.identifier]
    assert len(nested) == 2
    for child in nested:  # only the top-level run gets it
        assert conventions.LINEAGE_SVG_ARTIFACT not in artifacts(tracking_uri, child)


@needs_dot
def test_edges_at_any_depth_and_only_inside_the_tree(
    svg_plugin: Any, tracking_uri: str, tmp_path: Path
) -> None:
    outside = train(0.9)  # a top-level run of its own: its edge into the pipeline is not drawn
    with pcs.run("pipeline") as run:
        data = load(3)
        with pcs.run("stage"):
            model = fit(data, 0.1)  # load -> fit (data)
        score(model, data)  # fit -> score (model), load -> score (data)
        evaluate(outside)
    svg = picture(tracking_uri, run, tmp_path)
    assert edge_count(svg) == 3
    words = texts(svg)
    assert sorted(w for w in words if w in ("data", "model")) == ["data", "data", "model"]
    assert not any(w.startswith("train(") or w.startswith("evaluate ") for w in words)
    graph = pcs.lineage.tree_graph(run)
    assert len(graph.edges) == 3
    assert graph.root == run.identifier


@needs_dot
def test_a_top_level_tracked_call_with_lineage_inside(
    svg_plugin: Any, tracking_uri: str, tmp_path: Path
) -> None:
    assert pipeline(0.5) == 1.5
    run = pcs.last_run()
    assert run is not None
    words = texts(picture(tracking_uri, run, tmp_path))
    assert any(w.startswith("pipeline(lr=0.5) ") for w in words)


def pipeline_raising(name: str, error: BaseException, runs: list[pcs.Run]) -> None:
    with pcs.run(name) as run:
        runs.append(run)
        evaluate(train(0.1))
        raise error


@needs_dot
def test_a_failed_pipeline_is_drawn_an_interrupted_one_is_not(
    svg_plugin: Any, tracking_uri: str, tmp_path: Path
) -> None:
    runs: list[pcs.Run] = []
    with pytest.raises(ValueError, match="boom"):
        pipeline_raising("failed", ValueError("boom"), runs)
    words = texts(picture(tracking_uri, runs[0], tmp_path))
    assert any(w.startswith("failed [FAILED]") for w in words)

    with pytest.raises(KeyboardInterrupt):
        pipeline_raising("interrupted", KeyboardInterrupt(), runs)
    assert conventions.LINEAGE_SVG_ARTIFACT not in artifacts(tracking_uri, runs[1])


@needs_dot
def test_no_lineage_no_picture_and_no_store_read(
    svg_plugin: Any, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[pcs.Run] = []
    monkeypatch.setattr(pcs_lineage_svg, "draw", lambda run: drawn.append(run))
    with pcs.run("scalars") as scalars:  # nothing with an identity returned
        count(count(1))
    with pcs.run("unused") as unused:  # a value lineage follows, received by nobody
        train(0.1)
    train(0.2)  # a top-level call returning one
    evaluate(Model([1.0]))  # a top-level call receiving a value no call returned
    with pcs.run("empty") as empty:
        pass
    assert drawn == []
    for run in (scalars, unused, empty, pcs.last_run()):
        assert run is not None
        assert conventions.LINEAGE_SVG_ARTIFACT not in artifacts(tracking_uri, run)


@needs_dot
def test_a_candidate_without_edges_stores_nothing(svg_plugin: Any, tracking_uri: str) -> None:
    with pcs.run("two producers") as run:  # looked at (two producers), but no edge
        train(0.1)
        train(0.2)
    assert conventions.LINEAGE_SVG_ARTIFACT not in artifacts(tracking_uri, run)


@needs_dot
def test_a_failure_never_reaches_the_program(
    svg_plugin: Any, tracking_uri: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("dot exploded")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "lineage_svg" in r.getMessage()]

    caplog.set_level(logging.DEBUG, logger="pcs")
    monkeypatch.setattr(pcs.lineage, "render", broken)
    with pcs.run("first") as first:
        evaluate(train(0.1))
    monkeypatch.setattr(pcs.lineage, "tree_graph", broken)
    with pcs.run("second") as second:
        evaluate(train(0.2))
    monkeypatch.undo()
    for run in (first, second):
        assert conventions.LINEAGE_SVG_ARTIFACT not in artifacts(tracking_uri, run)
    assert len(warnings()) == 1  # once per process, then at debug level
    assert "dot exploded" in warnings()[0]
    assert str(first) in warnings()[0]


@needs_dot
def test_a_store_behind_leaves_the_picture_for_later(
    svg_plugin: Any, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pcs, "flush", lambda timeout=None: False)  # never caught up
    started = time.monotonic()
    with pcs.run("pipeline") as run:
        evaluate(train(0.1))
    assert time.monotonic() - started < 1.0  # the run's end is not held up
    monkeypatch.undo()
    assert conventions.LINEAGE_SVG_ARTIFACT not in artifacts(tracking_uri, run)
    assert pcs_lineage_svg.draw_pending(60)  # as at exit, or at a later top-level run's end
    assert "model" in texts(picture(tracking_uri, run, tmp_path))
    assert pcs_lineage_svg.draw_pending(0)  # nothing left


def test_without_graphviz_the_plugin_has_no_hook(tracking_uri: str) -> None:
    inactive = pcs_lineage_svg.plugin(None)
    assert not isinstance(inactive, pcs_lineage_svg.LineageSvgPlugin)
    assert "dot" in repr(inactive)
    name = pcs.plugins.register(inactive, "lineage_svg_without_dot")
    try:
        hooks = pcs.plugins.manager().hook
        for hook in (hooks.pcs_run_ended, hooks.pcs_collect_environment):
            assert "lineage_svg_without_dot" not in [i.plugin_name for i in hook.get_hookimpls()]
    finally:
        pcs.plugins.unregister(name)


def test_disabled_by_name_it_is_not_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCS_DISABLE_PLUGINS", "lineage_svg")
    assert pcs.plugins.register(pcs_lineage_svg.plugin("/usr/bin/dot"), "lineage_svg") is None


# -- the entry point in fresh processes: enabled, disabled, no Graphviz on PATH -----------
SCRIPT = '''
import json, os
import pcs, pcs.plugins
import pcs_lineage_svg

if os.environ.get("SVG_AT_EXIT"):  # the store never "caught up" at the run's end
    pcs_lineage_svg.FLUSH_TIMEOUT = 0.0

class Model:
    pass

@pcs.tracked
def train(lr: float) -> Model:
    return Model()

@pcs.tracked
def evaluate(model: Model) -> int:
    return 1

with pcs.run("pipeline") as run:
    model = train(0.1)
    evaluate(model)
print(json.dumps({"run": run.identifier,
                  "plugins": {p.name: repr(p.plugin) for p in pcs.plugins.list_plugins()}}))
'''


def _in_fresh_process(tmp_path: Path, tracking_uri: str, **env: str) -> tuple[str, dict[str, str]]:
    environ = {k: v for k, v in os.environ.items() if k != "PCS_DISABLE_PLUGINS"}
    environ.update(MLFLOW_TRACKING_URI=tracking_uri, **env)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT)], env=environ,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    return report["run"], report["plugins"]


def _stored(tracking_uri: str, run_id: str) -> list[str]:
    return [a.path for a in MlflowClient(tracking_uri=tracking_uri).list_artifacts(run_id)]


@pytest.mark.slow
@needs_dot
def test_in_a_fresh_process_enabled_at_exit_disabled_and_without_dot(
    tracking_uri: str, tmp_path: Path
) -> None:
    run_id, plugins = _in_fresh_process(tmp_path, tracking_uri)
    assert "LineageSvgPlugin" in plugins["lineage_svg"]
    assert conventions.LINEAGE_SVG_ARTIFACT in _stored(tracking_uri, run_id)

    run_id, plugins = _in_fresh_process(tmp_path, tracking_uri, SVG_AT_EXIT="1")
    assert conventions.LINEAGE_SVG_ARTIFACT in _stored(tracking_uri, run_id)  # drawn at exit

    run_id, plugins = _in_fresh_process(tmp_path, tracking_uri, PCS_DISABLE_PLUGINS="lineage_svg")
    assert "lineage_svg" not in plugins
    assert "environment" in plugins
    assert conventions.LINEAGE_SVG_ARTIFACT not in _stored(tracking_uri, run_id)

    empty = tmp_path / "no-graphviz"
    empty.mkdir()
    run_id, plugins = _in_fresh_process(tmp_path, tracking_uri, PATH=str(empty))
    assert "not on PATH" in plugins["lineage_svg"]
    assert conventions.LINEAGE_SVG_ARTIFACT not in _stored(tracking_uri, run_id)


def test_only_runs_in_local_stores_are_drawn_at_their_end() -> None:
    """Reading a tracking server back on the program's thread could wait for its retries
    (a server that went away held a later run's end for minutes): such runs are not drawn."""
    from types import SimpleNamespace

    def local(uri: str) -> bool:
        return pcs_lineage_svg.local_store(SimpleNamespace(tracking_uri=uri))  # type: ignore[arg-type]

    assert local("sqlite:////tmp/x/mlflow.db")
    assert local("file:///tmp/mlruns")
    assert local("/tmp/mlruns")
    assert not local("http://127.0.0.1:5000")
    assert not local("https://mlflow.example.org")
    assert not local("postgresql://user@127.0.0.1/db")
    assert not local("databricks")  # a profile name: not a local store either
