"""Output → input lineage: edges for direct values, values inside containers, across
threads, asyncio tasks and nesting; the tags in MLflow; inputs()/consumers(); rendering."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import threading
from typing import Any

import pytest
from conftest import FlushingClient

import pcs
import pcs.lineage
from pcs import _lineage


class Model:
    def __init__(self, weights: list[float]) -> None:
        self.weights = weights


@dataclasses.dataclass
class Bundle:
    model: Model
    note: str


@pcs.tracked
def train(lr: float) -> Model:
    return Model([lr, 2 * lr])


@pcs.tracked
def train_pair(lr: float) -> tuple[Model, dict[str, float]]:
    return Model([lr]), {"loss": 0.5}


@pcs.tracked
def train_bundle(lr: float) -> Bundle:
    return Bundle(Model([lr]), "ok")


@pcs.tracked
def evaluate(model: Model) -> float:
    return sum(model.weights)


@pcs.tracked
def ensemble(models: list[Model], extra: dict[str, Any]) -> int:
    return len(models) + len(extra)


@pcs.tracked
def count(n: int) -> int:
    return n


@pytest.fixture(autouse=True)
def fresh_table() -> None:
    _lineage.clear()


def last() -> pcs.ComponentRun:
    run = pcs.last_run()
    assert isinstance(run, pcs.ComponentRun)
    return run


def tags(client: FlushingClient, run: pcs.Run) -> dict[str, str]:
    return dict(client.get_run(run.identifier).data.tags)


def test_a_returned_object_passed_on_is_an_edge(client: FlushingClient) -> None:
    model = train(0.5)
    producer = last()
    assert evaluate(model) == 1.5
    consumer = last()
    found = tags(client, consumer)
    assert found["pcs.inputs_from"] == producer.identifier
    assert json.loads(found["pcs.inputs"]) == {"model": producer.identifier}
    assert "pcs.inputs_from" not in tags(client, producer)
    assert consumer.inputs() == [("model", producer)]
    assert type(consumer.inputs()[0].run) is pcs.ComponentRun
    assert producer.consumers() == [("model", consumer)]
    assert consumer.consumers() == []


def test_an_equal_but_different_object_is_not_an_edge(client: FlushingClient) -> None:
    model = train(0.5)
    evaluate(Model(list(model.weights)))
    assert "pcs.inputs_from" not in tags(client, last())


def test_elements_of_returned_and_received_containers(client: FlushingClient) -> None:
    model, metrics = train_pair(0.1)
    pair = last()
    bundle = train_bundle(0.2)
    bundled = last()
    other = train(0.3)
    single = last()
    ensemble([model, bundle.model], {"metrics": metrics, "best": other})
    consumer = last()
    assert json.loads(tags(client, consumer)["pcs.inputs"]) == {
        "models[0]": pair.identifier,
        "models[1]": bundled.identifier,
        "extra['metrics']": pair.identifier,
        "extra['best']": single.identifier,
    }
    assert tags(client, consumer)["pcs.inputs_from"] == ",".join(
        sorted({pair.identifier, bundled.identifier, single.identifier}))


def test_scalars_are_never_followed(client: FlushingClient) -> None:
    n = count(12345)
    count(n)
    assert "pcs.inputs_from" not in tags(client, last())


def test_edges_across_nesting_threads_and_tasks(client: FlushingClient) -> None:
    with pcs.run("outer"):
        with pcs.run("inner"):
            model = train(0.5)
            producer = last()
        evaluate(model)  # another nesting level
        nested = last()

    results: list[pcs.Run] = []

    def worker() -> None:
        evaluate(model)
        results.append(last())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()

    async def main() -> pcs.Run:
        async def make() -> tuple[Model, pcs.Run]:
            return train(0.25), last()

        made, maker = await asyncio.create_task(make())

        async def consume() -> pcs.Run:
            evaluate(made)
            return last()

        consumer = await asyncio.create_task(consume())
        assert tags(client, consumer)["pcs.inputs_from"] == maker.identifier
        return consumer

    asyncio.run(main())
    for consumer in (nested, results[0]):
        assert tags(client, consumer)["pcs.inputs_from"] == producer.identifier
    assert {e.run for e in producer.consumers()} == {nested, results[0]}


def test_a_tracked_method_of_a_produced_object_names_self() -> None:
    @pcs.tracked
    class Scorer:
        def __init__(self, k: int) -> None:
            self.k = k

        @pcs.tracked
        def score(self, x: int) -> int:
            return self.k * x

    @pcs.tracked
    def make_scorer() -> Any:
        return Scorer(3)

    scorer = make_scorer()
    maker = last()
    scorer.score(2)
    assert [(e.path, e.run) for e in last().inputs()] == [("self", maker)]


@pcs.tracked(log_return_value=False)  # the run itself keeps no reference to the value
def build(lr: float) -> Model:
    return Model([lr])


def test_the_table_does_not_keep_weak_referenceable_values_alive() -> None:
    model = build(0.5)
    assert _lineage.inputs_of({"m": model})
    key = id(model)
    del model
    gc.collect()
    assert key not in _lineage._weak


def test_only_the_most_recent_lists_are_kept() -> None:
    for index in range(_lineage.STRONG_LIMIT + 10):
        _lineage.produced([index], f"run{index}")
    assert len(_lineage._strong) == _lineage.STRONG_LIMIT


def test_tags_stay_within_mlflows_limit() -> None:
    inputs = {f"x[{i}]": f"{i:032x}" for i in range(1000)}
    found = _lineage.tags_for(inputs, 8000)
    assert len(found["pcs.inputs_from"]) <= 8000
    assert all(len(part) == 32 for part in found["pcs.inputs_from"].split(","))
    assert len(found["pcs.inputs"]) <= 8000
    json.loads(found["pcs.inputs"])


def test_graph_and_rendering(client: FlushingClient) -> None:
    model = train(0.5)
    producer = last()
    evaluate(model)
    consumer = last()
    found = pcs.lineage.graph(consumer)
    assert found.edges == {(producer.identifier, consumer.identifier, "model")}
    text = pcs.lineage.render(found, "text")
    assert f"<- model from train(lr=0.5) [FINISHED] {producer.identifier[-8:]}" in text
    dot = pcs.lineage.render(found, "dot")
    assert dot.startswith("digraph lineage {")
    assert f'"{producer.identifier}" -> "{consumer.identifier}" [label="model"];' in dot
    with pytest.raises(pcs.UsageError, match="text, dot, svg"):
        pcs.lineage.render(found, "png")


def test_svg_needs_graphviz(client: FlushingClient, monkeypatch: pytest.MonkeyPatch) -> None:
    model = train(0.5)
    evaluate(model)
    found = pcs.lineage.graph(last())
    monkeypatch.setattr(pcs.lineage.shutil, "which", lambda name: None)
    with pytest.raises(pcs.lineage.GraphvizMissingError, match="Install Graphviz"):
        pcs.lineage.render(found, "svg")


# -- the command line: pcs lineage, and lineage in pcs show ------------------------------
def test_pcs_lineage_and_show(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from pcs import cli

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli._build(), list(args), prog_name="pcs")

    model = train(0.5)
    producer = last()
    evaluate(model)
    consumer = last()
    evaluate(model)
    second = last()
    assert pcs.flush(60)
    both = invoke("lineage", producer.identifier).output.splitlines()
    assert both[1:] == sorted(f"  -> model into evaluate [FINISHED] {c.identifier[-8:]}"
                              for c in (consumer, second))
    text = invoke("lineage", consumer.identifier[-12:])
    assert text.exit_code == 0, text.output
    assert f"<- model from train(lr=0.5) [FINISHED] {producer.identifier[-8:]}" in text.output
    down = invoke("lineage", producer.identifier, "--format", "dot")
    assert f'"{producer.identifier}" -> "{consumer.identifier}" [label="model"];' in down.output
    shown = invoke("show", consumer.identifier)
    assert "lineage: inputs from\n  model <- FINISHED  train" in shown.output
    report = json.loads(invoke("show", producer.identifier, "--json").output)
    assert sorted(report["consumers"], key=lambda e: e["id"]) == sorted(
        ({"path": "model", "id": run.identifier, "name": "evaluate", "status": "FINISHED"}
         for run in (consumer, second)), key=lambda e: e["id"])
    monkeypatch.setattr(pcs.lineage.shutil, "which", lambda name: None)
    failed = invoke("lineage", consumer.identifier, "--format", "svg")
    assert failed.exit_code == 1
    assert "Install Graphviz" in failed.output
    assert "Traceback" not in failed.output
