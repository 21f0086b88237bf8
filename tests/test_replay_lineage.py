"""Replay rebuilds an argument pcs could not record from the return value its producer
logged (lineage): the whole value, or the one element of the recorded type."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from replay_support import CodeDir

import pcs
from pcs.component_run import ComponentRun
from pcs.conventions import INPUTS_FROM_TAG, REBUILT_INPUTS_TAG, REPRODUCED_TAG

SOURCE = """
import threading

import pcs


class Model:
    \"\"\"Holds a lock: pcs cannot encode it, pickle can (by its state).\"\"\"

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"weight": self.weight}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["weight"])


@pcs.tracked(return_format="pickle")
def train(weight: float) -> Model:
    return Model(weight)


@pcs.tracked(return_format="pickle")
def train_with_score(weight: float) -> tuple:
    return Model(weight), weight * 10


@pcs.tracked
def train_plain(weight: float) -> Model:
    return Model(weight)


@pcs.tracked
def evaluate(model: Model, scale: float = 1.0) -> float:
    return model.weight * scale
"""


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CodeDir]:
    folder = CodeDir(tmp_path / "code", monkeypatch)
    yield folder
    folder.cleanup()


def _evaluated(code: CodeDir, train: str) -> tuple[ComponentRun, ComponentRun]:
    module = code.load(code.write(SOURCE))
    model = getattr(module, train)(0.5)
    if isinstance(model, tuple):
        model = model[0]
    producer = pcs.last_run()
    assert module.evaluate(model, scale=2.0) == 1.0
    consumer = pcs.last_run()
    assert isinstance(producer, ComponentRun)
    assert isinstance(consumer, ComponentRun)
    assert pcs.flush(60)
    assert not consumer.is_reproducible  # the model is a placeholder in its record
    return producer, consumer


def test_a_placeholder_argument_is_loaded_from_the_producers_pickle(code: CodeDir) -> None:
    producer, consumer = _evaluated(code, "train")
    with pytest.raises(pcs.ReplayError, match="trust_pickles=True"):
        consumer.rerun()
    again = consumer.rerun(trust_pickles=True)
    assert again.return_value == 1.0
    assert pcs.flush(60)
    tags = again.data.tags
    assert json.loads(tags[REBUILT_INPUTS_TAG]) == {"model": producer.identifier}
    assert tags[REPRODUCED_TAG] == "True"
    # the replay records the same lineage as the original call
    assert tags[INPUTS_FROM_TAG] == producer.identifier
    assert [(e.path, e.run.identifier) for e in again.inputs()] == [
        ("model", producer.identifier)]


def test_the_one_element_of_the_recorded_type_is_taken(code: CodeDir) -> None:
    _producer, consumer = _evaluated(code, "train_with_score")
    again = consumer.rerun(trust_pickles=True)
    assert again.return_value == 1.0


def test_without_a_usable_producer_value_the_refusal_says_why(code: CodeDir) -> None:
    producer, consumer = _evaluated(code, "train_plain")
    with pytest.raises(pcs.ReplayError) as caught:
        consumer.rerun(trust_pickles=True)
    text = str(caught.value)
    assert "overrides=" in text
    assert producer.identifier in text
    # an override still wins
    module = code.load(code.write(SOURCE))
    again = consumer.rerun(overrides={"model": module.Model(3.0)})
    assert again.return_value == 6.0
    assert REBUILT_INPUTS_TAG not in again.data.tags
