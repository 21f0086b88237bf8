"""The first-party types plugin (plugins/pcs_types): dataclasses, attrs classes, pydantic
models, OrderedDict and Counter — exact, typed, replayable, and redacted by field name."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any

import attrs
import pydantic
import pytest
from conftest import FlushingClient
from replay_support import CodeDir

import pcs
from pcs import canon


def roundtrip(value: Any) -> Any:
    tree = canon.encode(value, strict=True)
    canon.validate(tree)
    return canon.decode(tree)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    name: str
    lr: float = 0.1


@dataclasses.dataclass
class Config:
    optimizer: Optimizer
    layers: list[int]
    derived: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        self.derived = len(self.layers) * 10


@dataclasses.dataclass(slots=True)
class Slotted:
    x: int


@attrs.define
class AttrsPoint:
    x: int
    _hidden: str = "h"


class Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    depth: int
    label: str = "default"


def test_dataclasses_round_trip_exactly_without_running_init_again() -> None:
    config = Config(Optimizer("adam", 0.01), [1, 2])
    config.derived = 99  # changed after __post_init__: kept as recorded
    back = roundtrip(config)
    assert back == config
    assert back.derived == 99
    assert type(back.optimizer) is Optimizer
    assert roundtrip(Slotted(3)) == Slotted(3)
    tree = canon.encode(config)
    assert tree[:3] == ["x", "dataclass", 1]
    assert canon.digest(tree) == canon.digest(canon.encode(roundtrip(config)))
    assert canon.digest(tree) != canon.digest(canon.encode(Config(Optimizer("adam", 0.02),
                                                                  [1, 2])))


def test_attrs_and_pydantic_round_trip_exactly() -> None:
    point = AttrsPoint(1, "secret-ish")
    assert roundtrip(point) == point
    model = Model(depth=3, extra_field=[1, 2])
    back = roundtrip(model)
    assert back == model
    assert back.model_fields_set == model.model_fields_set == {"depth", "extra_field"}
    assert back.model_dump(exclude_unset=True) == {"depth": 3, "extra_field": [1, 2]}
    assert canon.encode(model)[:3] == ["x", "pydantic", 1]


def test_ordered_dict_keeps_its_order_and_counter_its_counts() -> None:
    first = collections.OrderedDict([("b", 1), ("a", 2)])
    second = collections.OrderedDict([("a", 2), ("b", 1)])
    assert roundtrip(first) == first
    assert list(roundtrip(first)) == ["b", "a"]
    assert canon.digest(canon.encode(first)) != canon.digest(canon.encode(second))
    assert canon.digest(canon.encode(first)) != canon.digest(canon.encode(dict(first)))
    counts = collections.Counter("abracadabra")
    back = roundtrip(counts)
    assert type(back) is collections.Counter
    assert back == counts


def test_values_without_an_exact_encoding_are_placeholders_with_the_reason() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    assert "inside a function" in canon.encode(Local(1))[1]["reason"]
    config = Slotted(1)
    plain = Optimizer("sgd")
    object.__setattr__(plain, "extra", 1)
    assert "not fields" in canon.encode(plain)[1]["reason"]
    assert canon.encode(config)[0] == "x"


SOURCE = """
import dataclasses
import pcs
from tests_types_support import Settings

@pcs.tracked
def fit(settings: Settings) -> float:
    return settings.lr * settings.epochs
"""

SUPPORT = """
import dataclasses

@dataclasses.dataclass(frozen=True)
class Settings:
    lr: float
    epochs: int
    api_token: str = ""
"""


def test_a_tracked_call_records_a_dataclass_field_by_field_redacts_and_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: FlushingClient
) -> None:
    code = CodeDir(tmp_path / "code", monkeypatch)
    (code.folder / "tests_types_support.py").write_text(SUPPORT)
    code.names.append("tests_types_support")
    module = code.load(code.write(SOURCE))
    settings_class = module.Settings
    secret = "tok-a81f55e0c2"
    assert module.fit(settings_class(0.5, 4, api_token=secret)) == 2.0
    run = pcs.last_run()
    assert isinstance(run, pcs.ComponentRun)
    pcs.flush()
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []
    (redacted,) = run.run_command.argument_set.redacted
    assert "['settings']<dataclass>['fields']['api_token']: redacted" in redacted
    # the token was not recorded: replay needs it again, and says so
    with pytest.raises(pcs.ReplayError, match="settings"):
        run.rerun()
    again = run.rerun(overrides={"settings": settings_class(0.5, 4, api_token=secret)})
    assert again.return_value == 2.0
    assert module.fit(settings_class(0.25, 4)) == 1.0
    plain = pcs.last_run()
    assert isinstance(plain, pcs.ComponentRun)
    assert plain.is_reproducible, plain.not_reproducible_reasons
    assert plain.rerun().return_value == 1.0
    code.cleanup()
