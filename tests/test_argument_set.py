"""pcs.ArgumentSet: immutable, content-addressed call arguments."""

from __future__ import annotations

import copy
import itertools
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest

from pcs import _canon
from pcs._yaml import dump_yaml
from pcs.argument_set import ArgumentSet
from pcs.exceptions import (
    EncodingError,
    PcsError,
    SpecError,
    SpecIntegrityError,
    SpecNotFoundError,
    UnsafeYamlError,
    UsageError,
)


@pytest.fixture(autouse=True)
def tracking_uri() -> str:
    """Overrides conftest's per-test MLflow store: these tests never touch MLflow."""
    return "unused://"


ARGS = {
    "train": {"__call__": {"lr": 0.1, "epochs": 3, "tags": ("a", "b")}},
    "Model": {"__init__": {"layers": [64, 32]}, "fit": {"data": {"x": 1, "y": None}}},
}


def test_identifier_is_a_sha256_of_the_encoded_arguments() -> None:
    aset = ArgumentSet(ARGS)
    assert len(aset.identifier) == 64
    assert aset.identifier == _canon.digest(["ArgumentSet", aset.encoded()])
    assert aset.identifier == ArgumentSet(ARGS).identifier


def test_order_never_matters_at_any_of_the_three_levels() -> None:
    flat = [
        (c, e, a, v)
        for c, calls in ARGS.items()
        for e, args in calls.items()
        for a, v in args.items()
    ]
    ids = set()
    for perm in itertools.permutations(flat):
        nested: dict[str, Any] = {}
        for c, e, a, v in perm:
            nested.setdefault(c, {}).setdefault(e, {})[a] = v
        ids.add(ArgumentSet(nested).identifier)
    assert len(ids) == 1


@pytest.mark.parametrize(
    ("left", "right"),
    [(1, 1.0), (1, True), (1, "1"), ((1, 2), [1, 2]), ({1: "x"}, {"1": "x"}), (0.0, -0.0),
     (None, "None"), (b"a", "a")],
    ids=repr,
)
def test_distinct_values_give_distinct_identifiers(left: Any, right: Any) -> None:
    a = ArgumentSet({"f": {"__call__": {"x": left}}})
    b = ArgumentSet({"f": {"__call__": {"x": right}}})
    assert a != b
    assert a.identifier != b.identifier


def test_names_are_part_of_the_identity() -> None:
    base = ArgumentSet({"f": {"g": {"x": 1}}})
    assert base != ArgumentSet({"f": {"g": {"y": 1}}})
    assert base != ArgumentSet({"f": {"h": {"x": 1}}})
    assert base != ArgumentSet({"F": {"g": {"x": 1}}})


def test_equality_and_hash_by_content() -> None:
    a, b = ArgumentSet(ARGS), ArgumentSet(ARGS)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != ArgumentSet()
    assert a != ARGS  # not equal to a plain mapping


def test_empty() -> None:
    empty = ArgumentSet()
    assert len(empty) == 0
    assert empty == ArgumentSet({})
    assert empty.to_spec(flatten=True)["arguments"] == {}


def test_immutable_and_isolated_from_inputs_and_outputs() -> None:
    data = {"f": {"__call__": {"x": [1, 2]}}}
    aset = ArgumentSet(data)
    before = aset.identifier
    data["f"]["__call__"]["x"].append(3)
    data["f"]["__call__"]["y"] = 1
    got = aset.get_function_args("f", "__call__")
    got["x"].append(99)
    aset.encoded()["f"]["__call__"]["x"][1].append(["i", "7"])
    assert aset.get_function_args("f", "__call__") == {"x": [1, 2]}
    assert aset.identifier == before == ArgumentSet({"f": {"__call__": {"x": [1, 2]}}}).identifier
    with pytest.raises(AttributeError, match="immutable"):
        aset._encoded = {}  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        aset.anything = 1  # type: ignore[attr-defined]


def test_to_spec_layout() -> None:
    aset = ArgumentSet({"f": {"__call__": {"x": 1}}})
    nested = aset.to_spec()
    assert list(nested) == [aset.identifier]
    fields = nested[aset.identifier]
    assert fields == {
        "type": "ArgumentSet",
        "format": "pcs-canon/1",
        "arguments": {"f": {"__call__": {"x": ["i", "1"]}}},
        "spec_hash": _canon.spec_hash(aset.identifier, fields),
    }
    assert aset.to_spec(flatten=True) == {"identifier": aset.identifier, **fields}


def test_the_module_spec_function_is_the_one_the_object_uses() -> None:
    """The writer builds a call's spec with argument_set.spec_fields from the trees alone."""
    from pcs import argument_set

    aset = ArgumentSet(ARGS)
    identifier, fields = argument_set.spec_fields(aset.encoded())
    assert identifier == argument_set.argument_set_id(aset.encoded()) == aset.identifier
    assert {identifier: fields} == aset.to_spec()
    assert argument_set.spec_fields(aset.encoded(), identifier) == (identifier, fields)
    assert _canon.canonical_bytes(aset.to_spec()) == _canon.canonical_bytes({identifier: fields})


@pytest.mark.parametrize("flatten", [False, True])
def test_from_spec_round_trip(flatten: bool) -> None:
    aset = ArgumentSet(ARGS)
    back = ArgumentSet.from_spec(aset.to_spec(flatten=flatten))
    assert back == aset
    assert back.get_arg("train", "__call__", "tags") == ("a", "b")


def test_from_spec_accepts_a_spec_without_spec_hash() -> None:
    spec = ArgumentSet(ARGS).to_spec(flatten=True)
    del spec["spec_hash"]
    assert ArgumentSet.from_spec(spec) == ArgumentSet(ARGS)


def test_from_spec_detects_a_changed_argument() -> None:
    aset = ArgumentSet({"f": {"__call__": {"x": 1}}})
    spec = aset.to_spec(flatten=True)
    del spec["spec_hash"]
    spec["arguments"]["f"]["__call__"]["x"] = ["i", "2"]
    with pytest.raises(SpecIntegrityError) as err:
        ArgumentSet.from_spec(spec)
    computed = ArgumentSet({"f": {"__call__": {"x": 2}}}).identifier
    assert aset.identifier in str(err.value)
    assert computed in str(err.value)
    assert err.value.expected == aset.identifier
    assert err.value.actual == computed


def test_from_spec_detects_a_changed_spec_hash() -> None:
    spec = ArgumentSet(ARGS).to_spec(flatten=True)
    spec["spec_hash"] = "0" * 64
    with pytest.raises(SpecIntegrityError, match="spec_hash"):
        ArgumentSet.from_spec(spec)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "Component"}, "expected 'ArgumentSet'"),
        ({"format": "pcs-canon/9"}, "pcs-canon/1"),
        ({"extra": 1}, "unexpected fields"),
        ({"arguments": {"f": {"g": {"x": ["i", "01"]}}}}, "Malformed"),
        ({"arguments": {"f": ["x"]}}, "must be a mapping"),
        ({"arguments": {"f": {"g": {"x": {1, 2}}}}}, "not JSON data"),
    ],
)
def test_from_spec_refuses_malformed_specs(change: dict[str, Any], message: str) -> None:
    spec = ArgumentSet(ARGS).to_spec(flatten=True)
    del spec["spec_hash"]
    spec.update(change)
    with pytest.raises(SpecError, match=message):
        ArgumentSet.from_spec(spec)


def test_from_yaml_round_trip(tmp_path: Path) -> None:
    aset = ArgumentSet(ARGS)
    path = tmp_path / "args.yaml"
    path.write_text(dump_yaml(aset.to_spec()), encoding="utf-8")
    assert ArgumentSet.from_yaml(path) == aset
    tampered = path.read_text(encoding="utf-8").replace("'0.1'", "'0.2'")
    path.write_text(tampered, encoding="utf-8")
    with pytest.raises(SpecIntegrityError, match=str(path)):
        ArgumentSet.from_yaml(path)


def test_from_yaml_is_safe(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"x: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8")
    with pytest.raises(UnsafeYamlError):
        ArgumentSet.from_yaml(path)
    assert not marker.exists()


def test_update_returns_a_new_merged_set() -> None:
    base = ArgumentSet({"f": {"__call__": {"x": 1, "y": 2}}, "g": {"run": {"a": 1}}})
    before = base.identifier
    new = base.update({"f": {"__call__": {"y": 20, "z": 30}}, "h": {"go": {}}})
    assert new is not base
    assert base.identifier == before
    assert base.get_function_args("f", "__call__") == {"x": 1, "y": 2}
    assert new.get_function_args("f", "__call__") == {"x": 1, "y": 20, "z": 30}
    assert new.get_component_args("g") == {"run": {"a": 1}}
    assert new.get_component_args("h") == {"go": {}}
    assert base.update(ArgumentSet({"f": {"__call__": {"x": 1}}})) == base


def test_getters_and_mapping_access() -> None:
    aset = ArgumentSet(ARGS)
    assert aset.get_component_args("Model") == {
        "__init__": {"layers": [64, 32]}, "fit": {"data": {"x": 1, "y": None}}
    }
    assert aset.get_function_args("train", "__call__")["lr"] == 0.1
    assert aset.get_arg("Model", "fit", "data") == {"x": 1, "y": None}
    assert list(aset) == ["train", "Model"]
    assert len(aset) == 2
    assert "train" in aset
    assert "nope" not in aset
    assert aset["train"] == {"__call__": {"lr": 0.1, "epochs": 3, "tags": ("a", "b")}}
    assert dict(aset.items())["Model"]["__init__"] == {"layers": [64, 32]}
    assert aset.get("nope") is None
    with pytest.raises(KeyError):
        aset["nope"]


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda a: a.get_component_args("nope"), ["'nope'", "'Model'", "'train'"]),
        (lambda a: a.get_function_args("Model", "nope"), ["'nope'", "'__init__'", "'fit'"]),
        (lambda a: a.get_arg("Model", "fit", "nope"), ["'nope'", "'data'"]),
    ],
)
def test_missing_names_say_what_exists(call: Any, names: list[str]) -> None:
    aset = ArgumentSet(ARGS)
    with pytest.raises(SpecNotFoundError) as err:
        call(aset)
    assert isinstance(err.value, LookupError)
    for name in names:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "bad",
    [{1: {"e": {"a": 1}}}, {"c": {None: {"a": 1}}}, {"c": {"e": {2: 1}}}, {"c": ["e"]}, ["c"]],
    ids=repr,
)
def test_non_str_names_are_usage_errors(bad: Any) -> None:
    with pytest.raises(UsageError):
        ArgumentSet(bad)
    with pytest.raises(UsageError):
        ArgumentSet.from_encoded(bad)


def test_from_encoded_takes_trees_without_re_encoding() -> None:
    trees = {"f": {"__call__": {"x": _canon.encode([1, 2]), "y": _canon.encode("s")}}}
    aset = ArgumentSet.from_encoded(trees)
    assert aset == ArgumentSet({"f": {"__call__": {"x": [1, 2], "y": "s"}}})
    assert aset.encoded() == trees


def test_placeholders_and_exactness() -> None:
    exact = ArgumentSet(ARGS)
    assert exact.is_exact
    assert exact.placeholders == []
    lock = threading.Lock()
    inexact = ArgumentSet({"f": {"__call__": {"x": [1, lock]}}})
    assert not inexact.is_exact
    [problem] = inexact.placeholders
    assert "arguments['f']['__call__']['x'][1]" in problem
    assert "_thread.lock" in problem


def test_strict_raises_before_anything_is_built() -> None:
    with pytest.raises(EncodingError, match=r"arguments\['f'\]\['__call__'\]\['x'\]"):
        ArgumentSet({"f": {"__call__": {"x": threading.Lock()}}}, strict=True)


def test_redacted_values_are_listed() -> None:
    trees = {"f": {"__call__": {"password": _canon.redacted_node("secret"), "x": ["i", "1"]}}}
    aset = ArgumentSet.from_encoded(trees)
    assert aset.is_exact
    assert aset.redacted == ["arguments['f']['__call__']['password']: secret"]
    assert aset.get_arg("f", "__call__", "password") == _canon.Redacted("secret")


def test_pickle_copy_and_deepcopy() -> None:
    aset = ArgumentSet(ARGS)
    assert pickle.loads(pickle.dumps(aset)) == aset
    assert copy.copy(aset) is aset
    assert copy.deepcopy(aset) is aset


def test_repr_names_the_layout() -> None:
    text = repr(ArgumentSet(ARGS))
    assert text.startswith("ArgumentSet(identifier=")
    assert "'train'" in text
    assert "lr" in text


def test_errors_are_pcs_errors() -> None:
    with pytest.raises(PcsError):
        ArgumentSet(ARGS).get_arg("x", "y", "z")
