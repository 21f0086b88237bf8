"""Runs that read well in the MLflow UI: ``init.<name>`` params, long values as short
summaries, the registry artifact as block YAML (issue 13, part 4 a-c)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

import pcs
from pcs import _canon
from pcs._block_yaml import block_yaml
from pcs._param_text import PARAM_SUMMARY_LENGTH, summary
from pcs._yaml import _LOADERS, load_yaml
from pcs.component_run import ComponentRun
from pcs.conventions import INIT_PARAM_PREFIX, REGISTRY_ARTIFACT


@pcs.tracked(exclude=("cache",))
class Trainer:
    def __init__(self, lr: float, epochs: int = 3, api_token: str = "",
                 layers: tuple[int, ...] = (8,), cache: object = None) -> None:
        self.lr = lr

    @pcs.tracked
    def fit(self, data: list[float]) -> float:
        return sum(data) * self.lr


def _sha(value: Any) -> str:
    return hashlib.sha256(_canon.canonical_bytes(_canon.encode(value))).hexdigest()


def _run_of(client: MlflowClient) -> Any:
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    return client.get_run(run.identifier)


def test_init_arguments_are_params_of_the_method_runs(client: MlflowClient) -> None:
    trainer = Trainer(0.1, epochs=5, api_token="tok-123456789", cache=object())
    assert trainer.fit([1.0, 2.0]) == pytest.approx(0.3)
    params = _run_of(client).data.params
    assert INIT_PARAM_PREFIX == "init."
    assert params == {
        "init.lr": "0.1",
        "init.epochs": "5",
        "init.api_token": "<redacted>",  # a secret-looking name, as for arg.*
        "init.layers": "(8,)",
        "arg.data": "[1.0, 2.0]",
        # "cache" is excluded: no param at all
    }


def test_every_method_call_repeats_the_init_params(client: MlflowClient) -> None:
    trainer = Trainer(0.5)
    trainer.fit([1.0])
    trainer.fit([2.0])
    second = _run_of(client)
    assert second.data.params["init.lr"] == "0.5"
    assert second.data.params["init.epochs"] == "3"


def test_a_plain_function_has_no_init_params(client: MlflowClient) -> None:
    @pcs.tracked
    def alone(x: int) -> int:
        return x

    alone(x=1)
    assert not any(k.startswith("init.") for k in _run_of(client).data.params)


def test_a_long_list_is_a_short_honest_param(client: MlflowClient) -> None:
    data = [float(i) for i in range(3000)]

    @pcs.tracked
    def consume(values: list[float], note: str) -> int:
        return len(values)

    assert consume(data, "n" * 300) == 3000
    run = pcs.last_run()
    params = _run_of(client).data.params
    assert params["arg.values"] == f"<list of 3,000 floats, sha256 {_sha(data)[:12]}…>"
    assert params["arg.note"] == f"<str of 300 chars, sha256 {_sha('n' * 300)[:12]}…>"
    # the value itself is still recorded in full, and replays
    assert isinstance(run, ComponentRun)
    assert run.run_command.argument_set.get_function_args(
        consume.__qualname__, "consume")["values"] == data


def test_long_init_values_are_summarized_too(client: MlflowClient) -> None:
    layers = tuple(range(200))
    Trainer(0.1, layers=layers).fit([1.0])
    params = _run_of(client).data.params
    assert params["init.layers"] == f"<tuple of 200 ints, sha256 {_sha(layers)[:12]}…>"


def test_values_up_to_the_threshold_are_shown_as_they_are(client: MlflowClient) -> None:
    @pcs.tracked
    def show(text: str, items: list[int]) -> None:
        return None

    exact = "x" * PARAM_SUMMARY_LENGTH
    show(text=exact, items=[1, 2, 3])
    params = _run_of(client).data.params
    assert params["arg.text"] == exact
    assert params["arg.items"] == "[1, 2, 3]"


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        ([1, "a"] * 200, "list of 400 items"),
        ({str(i): i for i in range(60)}, "dict of 60 keys"),
        ({i for i in range(100)}, "set of 100 ints"),
        ([None] * 300, "list of 300 None values"),
        ([[1.0]] * 100, "list of 100 lists"),
    ],
)
def test_summary_shapes(value: Any, shape: str) -> None:
    assert summary(_canon.encode(value)) == f"<{shape}, sha256 {_sha(value)[:12]}…>"


def test_different_values_never_share_a_summary() -> None:
    assert summary(_canon.encode([1.0] * 300)) != summary(_canon.encode([1.0] * 299 + [2.0]))


def test_the_registry_artifact_is_block_yaml(client: MlflowClient) -> None:
    Trainer(0.1).fit([1.0, 2.0])
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    text = Path(client.download_artifacts(run.identifier, REGISTRY_ARTIFACT)).read_text()
    lines = text.splitlines()
    assert lines[0] == "pcs_registry: 1"
    assert "run_commands:" in lines
    assert "components:" in lines
    assert "argument_sets:" in lines
    assert "    entry_point: fit" in lines
    assert "    qualname: Trainer" in lines
    assert "          lr: [\"f\", \"0.1\"]" in lines
    assert any(line.startswith("    source: |2") for line in lines)  # the source, as written
    assert "class Trainer:" in text
    assert "\\n" not in text
    assert len(lines) > 20
    assert max(map(len, lines)) < 200
    stored = load_yaml(text.encode())
    command = run.run_command
    assert stored["run_commands"] == command.to_spec()
    assert stored["components"] == command.component.to_spec()
    assert stored["argument_sets"] == command.argument_set.to_spec()


def _random_text(rnd: random.Random) -> str:
    pieces = ["a", "Z", " ", "  ", ":", "#", "-", "'", '"', "\n", "\t", "\\", "{", "[", ",",
              "&", "*", "!", "|", ">", "%", "@", "`", "?", "\x85", "\u2028", "\x7f", "é",
              "\U0001f600", "\x00", "\x1b", "\ufeff", "\r", "yes", "No", "null", "1", "0x1",
              ".5", "~", "<<", "=", "\n  "]
    return "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 10)))


def _random_value(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.randint(0, 6 if depth < 3 else 3)
    if kind == 0:
        return _random_text(rnd)
    if kind == 1:
        return rnd.choice([0, -3, 10**30, True, False, None, 0.1, 1e-05, -0.0, 5e-324, 1e22])
    if kind == 2:
        return _random_text(rnd) + "\n" + _random_text(rnd) + rnd.choice(["", "\n", "\n\n"])
    if kind == 3:
        return []
    if kind == 4:
        return [_random_value(rnd, depth + 1) for _ in range(rnd.randint(1, 3))]
    return {_random_text(rnd): _random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}


@pytest.mark.parametrize("loader", _LOADERS, ids=lambda c: c.__name__)
def test_block_yaml_reads_back_exactly(loader: type, monkeypatch: pytest.MonkeyPatch) -> None:
    import pcs._yaml

    monkeypatch.setattr(pcs._yaml, "_LOADER", loader)
    rnd = random.Random(13)
    for _ in range(1500):
        data = {_random_text(rnd): _random_value(rnd) for _ in range(4)}
        back = load_yaml(block_yaml(data))
        assert back == data, block_yaml(data)
        assert repr(back) == repr(data), block_yaml(data)  # -0.0 stays -0.0


def test_block_yaml_is_plain_where_it_can_be() -> None:
    text = block_yaml({"name": "Model.fit", "flag": "yes", "id": "1a2b", "count": 3,
                       "x": 1e-05, "tree": ["f", "0.1"], "empty": {}, "none": None})
    assert text == (
        'name: Model.fit\nflag: "yes"\nid: "1a2b"\ncount: 3\nx: 1.0e-05\n'
        'tree: ["f", "0.1"]\nempty: {}\nnone: null\n'
    )
