"""pcs.registry: content-addressed specs and artifacts, in memory and in YAML files."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from pcs import _canon
from pcs._yaml import dump_yaml, load_yaml_file
from pcs.argument_set import ArgumentSet
from pcs.exceptions import (
    SpecConflictError,
    SpecError,
    SpecIntegrityError,
    SpecNotFoundError,
    UnsafeYamlError,
    UsageError,
)
from pcs.registry import KINDS, InMemoryRegistry, Registry, YamlFileRegistry


@pytest.fixture(autouse=True)
def tracking_uri() -> str:
    """Overrides conftest's per-test MLflow store: these tests never touch MLflow."""
    return "unused://"


RUN_ID = "0123456789abcdef0123456789abcdef"


def run_spec(**overrides: Any) -> dict[str, Any]:
    fields = {"type": "Run", "name": "train", "tags": {"team": "ml"}, "metrics": [0.5, 0.25]}
    fields.update(overrides)
    return {RUN_ID: fields}


ADDERS = {
    "runs": "add_run_spec",
    "run_commands": "add_run_command_spec",
    "components": "add_component_spec",
    "argument_sets": "add_argument_set_spec",
}
GETTERS = {
    "runs": "get_run_spec",
    "run_commands": "get_run_command_spec",
    "components": "get_component_spec",
    "argument_sets": "get_argument_set_spec",
}
LISTERS = {
    "runs": "get_run_specs",
    "run_commands": "get_run_command_specs",
    "components": "get_component_specs",
    "argument_sets": "get_argument_set_specs",
}


def sample_spec(kind: str) -> dict[str, Any]:
    if kind == "argument_sets":
        return ArgumentSet({"f": {"__call__": {"x": 1, "y": [1.5, "a"]}}}).to_spec()
    return {f"{kind}-id-1": {"type": kind, "value": 1, "nested": {"a": [1, None, True]}}}


# ---------------------------------------------------------------- generic behaviour per kind


@pytest.mark.parametrize("kind", KINDS)
def test_add_and_get_each_kind(kind: str) -> None:
    registry = InMemoryRegistry()
    spec = sample_spec(kind)
    [(identifier, fields)] = spec.items()
    assert getattr(registry, ADDERS[kind])(spec) == identifier
    got = getattr(registry, GETTERS[kind])(identifier)
    assert list(got) == [identifier]
    assert got[identifier]["spec_hash"] == _canon.spec_hash(identifier, fields)
    flat = getattr(registry, GETTERS[kind])(identifier, flatten=True)
    assert flat == {"identifier": identifier, **got[identifier]}
    assert getattr(registry, LISTERS[kind])() == got
    assert registry.spec_ids(kind) == [identifier]
    assert registry.has_spec(kind, identifier)
    for other in KINDS:
        if other != kind:
            assert registry.spec_ids(other) == []


@pytest.mark.parametrize("kind", KINDS)
def test_flat_form_is_accepted(kind: str) -> None:
    registry = InMemoryRegistry()
    [(identifier, fields)] = sample_spec(kind).items()
    registry.add_spec(kind, {"identifier": identifier, **fields})
    assert registry.get_spec(kind, identifier)[identifier]["type"] == fields["type"]


@pytest.mark.parametrize("kind", KINDS)
def test_missing_spec(kind: str) -> None:
    registry = InMemoryRegistry()
    registry.add_spec(kind, sample_spec(kind))
    with pytest.raises(SpecNotFoundError) as err:
        getattr(registry, GETTERS[kind])("nope")
    message = str(err.value)
    assert "'nope'" in message
    assert kind.rstrip("s").replace("_", " ") in message
    assert "InMemoryRegistry" in message
    assert err.value.spec_id == "nope"
    assert getattr(registry, GETTERS[kind])("nope", error_if_not_found=False) is None


def test_identical_spec_again_is_fine_different_conflicts_with_a_diff() -> None:
    registry = InMemoryRegistry()
    registry.add_run_spec(run_spec())
    registry.add_run_spec(run_spec())  # identical: fine
    with pytest.raises(SpecConflictError) as err:
        registry.add_run_spec(run_spec(name="eval"))
    error = err.value
    assert error.spec_id == RUN_ID
    assert "-  name: train" in error.diff
    assert "+  name: eval" in error.diff
    assert error.diff in str(error)
    assert "force=True" in str(error)
    assert registry.get_run_spec(RUN_ID)[RUN_ID]["name"] == "train"
    registry.add_run_spec(run_spec(name="eval"), force=True)
    assert registry.get_run_spec(RUN_ID)[RUN_ID]["name"] == "eval"


def test_json_equal_but_different_values_conflict() -> None:
    registry = InMemoryRegistry()
    registry.add_run_spec(run_spec(value=1))
    with pytest.raises(SpecConflictError):
        registry.add_run_spec(run_spec(value=True))
    with pytest.raises(SpecConflictError):
        registry.add_run_spec(run_spec(value=1.0))


def test_spec_hash_is_verified_or_computed() -> None:
    registry = InMemoryRegistry()
    spec = run_spec()
    registry.add_run_spec(spec)
    stored = registry.get_run_spec(RUN_ID)
    assert InMemoryRegistry().add_run_spec(stored) == RUN_ID  # with a correct hash
    stored[RUN_ID]["name"] = "changed"
    with pytest.raises(SpecIntegrityError) as err:
        InMemoryRegistry().add_run_spec(stored)
    assert "spec_hash" in str(err.value)
    assert RUN_ID in str(err.value)


def test_argument_set_identifier_is_verified_on_add() -> None:
    spec = ArgumentSet({"f": {"__call__": {"x": 1}}}).to_spec(flatten=True)
    del spec["spec_hash"]
    spec["arguments"]["f"]["__call__"]["x"] = ["i", "2"]
    with pytest.raises(SpecIntegrityError, match="does not match its arguments"):
        InMemoryRegistry().add_argument_set_spec(spec)


def test_objects_with_to_spec_are_accepted() -> None:
    registry = InMemoryRegistry()
    aset = ArgumentSet({"f": {"g": {"x": 1}}})
    assert registry.add_argument_set_spec(aset) == aset.identifier
    assert ArgumentSet.from_spec(registry.get_argument_set_spec(aset.identifier)) == aset


def test_specs_are_copied_in_and_out() -> None:
    registry = InMemoryRegistry()
    spec = run_spec()
    registry.add_run_spec(spec)
    spec[RUN_ID]["tags"]["team"] = "changed"
    got = registry.get_run_spec(RUN_ID)
    got[RUN_ID]["tags"]["team"] = "changed too"
    registry.get_run_specs()[RUN_ID]["metrics"].append(1)
    assert registry.get_run_spec(RUN_ID)[RUN_ID]["tags"] == {"team": "ml"}
    assert registry.get_run_spec(RUN_ID)[RUN_ID]["metrics"] == [0.5, 0.25]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({RUN_ID: {"when": {1, 2}}}, "not JSON data"),
        ({RUN_ID: {"x": float("nan")}}, "not allowed"),
        ({RUN_ID: {3: "x"}}, "keys must be str"),
        ({"a": {}, "b": {}}, "nested form"),
        ({RUN_ID: {"identifier": "other"}}, "cannot also be a field"),
        ([RUN_ID], "must be a mapping"),
    ],
    ids=repr,
)
def test_malformed_specs_are_refused(spec: Any, message: str) -> None:
    with pytest.raises((SpecError, UsageError), match=message):
        InMemoryRegistry().add_run_spec(spec)


def test_unknown_kind() -> None:
    with pytest.raises(UsageError, match="runs, run_commands, components, argument_sets"):
        InMemoryRegistry().get_spec("things", "x")


def test_registry_is_abstract_and_backends_are_small() -> None:
    with pytest.raises(TypeError):
        Registry()  # type: ignore[abstract]

    class DictBackend(Registry):
        def __init__(self) -> None:
            super().__init__()
            self.data: dict[tuple[str, str], dict[str, Any]] = {}
            self.blobs: dict[str, bytes] = {}

        def _load_spec(self, kind: str, identifier: str) -> dict[str, Any] | None:
            return self.data.get((kind, identifier))

        def _store_spec(self, kind: str, identifier: str, fields: dict[str, Any]) -> None:
            self.data[(kind, identifier)] = fields

        def _spec_ids(self, kind: str) -> list[str]:
            return [i for k, i in self.data if k == kind]

        def _load_artifact(self, digest: str) -> bytes | None:
            return self.blobs.get(digest)

        def _store_artifact(self, digest: str, data: bytes) -> None:
            self.blobs[digest] = data

        def _artifact_digests(self) -> list[str]:
            return list(self.blobs)

    backend = DictBackend()
    backend.add_run_spec(run_spec())
    digest = backend.add_artifact(b"x")
    copy = InMemoryRegistry()
    copy.add_registry(backend)
    assert copy.to_dict() == backend.to_dict()
    assert copy.get_artifact(digest) == b"x"


# ---------------------------------------------------------------- artifacts


def test_artifacts_by_sha256() -> None:
    registry = InMemoryRegistry()
    digest = registry.add_artifact(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert registry.add_artifact(bytearray(b"hello")) == digest
    assert registry.get_artifact(digest) == b"hello"
    assert registry.has_artifact(digest)
    assert registry.artifact_digests() == [digest]
    with pytest.raises(SpecNotFoundError, match="No artifact"):
        registry.get_artifact("0" * 64)
    with pytest.raises(UsageError, match="not an artifact digest"):
        registry.get_artifact("../../etc/passwd")
    with pytest.raises(UsageError):
        registry.add_artifact("text")  # type: ignore[arg-type]


# ---------------------------------------------------------------- dicts and YAML files


def filled() -> InMemoryRegistry:
    registry = InMemoryRegistry()
    for kind in KINDS:
        registry.add_spec(kind, sample_spec(kind))
    registry.add_run_spec(run_spec())
    registry.add_artifact(b"artifact one")
    registry.add_artifact(b"artifact two")
    return registry


def test_to_dict_layout() -> None:
    data = filled().to_dict()
    assert list(data) == ["pcs_registry", "runs", "run_commands", "components", "argument_sets"]
    assert data["pcs_registry"] == 1
    assert set(data["runs"]) == {"runs-id-1", RUN_ID}
    assert Registry.from_dict(data).to_dict() == data


def test_yaml_round_trip_with_artifacts(tmp_path: Path) -> None:
    registry = filled()
    path = tmp_path / "reg.yaml"
    registry.to_yaml(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg.yaml", "reg.yaml.artifacts"]
    folder = tmp_path / "reg.yaml.artifacts"
    assert sorted(p.name for p in folder.iterdir()) == registry.artifact_digests()
    loaded = Registry.from_yaml(path)
    assert isinstance(loaded, InMemoryRegistry)
    assert loaded.to_dict() == registry.to_dict()
    assert load_yaml_file(path) == registry.to_dict()
    for digest in registry.artifact_digests():
        assert loaded.get_artifact(digest) == registry.get_artifact(digest)
    aset_id = registry.spec_ids("argument_sets")[0]
    assert ArgumentSet.from_spec(loaded.get_argument_set_spec(aset_id)).identifier == aset_id


def test_artifacts_load_lazily_and_are_verified(tmp_path: Path) -> None:
    registry = filled()
    path = tmp_path / "reg.yaml"
    registry.to_yaml(path)
    loaded = Registry.from_yaml(path)
    digest = hashlib.sha256(b"artifact one").hexdigest()
    (tmp_path / "reg.yaml.artifacts" / digest).write_bytes(b"artifact 0ne")  # after loading
    with pytest.raises(SpecIntegrityError, match="corrupt"):
        loaded.get_artifact(digest)


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    path = tmp_path / "reg.yaml"
    filled().to_yaml(path)
    filled().to_yaml(path)  # overwrite
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert [p for p in (tmp_path / "reg.yaml.artifacts").iterdir() if ".tmp" in p.name] == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("name: train", "name: trail"),  # a run's field
        ("- 0.25", "- 0.26"),  # a run's metric
        ("- '1.5'", "- '2.5'"),  # an argument set's value
        ("value: 1", "value: 2"),  # a component's field
    ],
)
def test_one_changed_byte_in_the_file_is_detected(tmp_path: Path, old: str, new: str) -> None:
    path = tmp_path / "reg.yaml"
    filled().to_yaml(path)
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= 1
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(SpecIntegrityError) as err:
        Registry.from_yaml(path)
    message = str(err.value)
    assert str(path) in message
    assert " spec '" in message  # names the kind and the spec id
    assert err.value.spec_id is not None
    assert err.value.spec_id in message


def test_changed_spec_hash_and_removed_spec_hash_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "reg.yaml"
    InMemoryRegistry().to_yaml(path)
    registry = InMemoryRegistry()
    registry.add_run_spec(run_spec())
    data = registry.to_dict()
    data["runs"][RUN_ID]["spec_hash"] = "f" * 64
    path.write_text(dump_yaml(data), encoding="utf-8")
    with pytest.raises(SpecIntegrityError, match=f"run spec '{RUN_ID}' in {path}"):
        Registry.from_yaml(path)
    del data["runs"][RUN_ID]["spec_hash"]
    path.write_text(dump_yaml(data), encoding="utf-8")
    with pytest.raises(SpecIntegrityError, match="has no spec_hash"):
        Registry.from_yaml(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"pcs_registry": 2, "runs": {}}, "pcs_registry: 1"),
        ({"runs": {}}, "not supported"),
        ({"pcs_registry": 1, "jobs": {}}, "unknown top-level keys"),
        ({"pcs_registry": 1, "runs": []}, "must map identifiers"),
        ({"pcs_registry": 1, "runs": {"x": 3}}, "mapping of fields"),
        ([1, 2], "not a pcs registry"),
    ],
    ids=repr,
)
def test_bad_registry_documents(data: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        Registry.from_dict(data)


def test_empty_kinds_may_be_omitted_or_null() -> None:
    assert Registry.from_dict({"pcs_registry": 1, "runs": None}).to_dict()["runs"] == {}


def test_from_yaml_refuses_unsafe_yaml(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "reg.yaml"
    path.write_text(
        f"pcs_registry: 1\nruns: !!python/object/apply:os.system ['touch {marker}']\n",
        encoding="utf-8",
    )
    with pytest.raises(UnsafeYamlError) as err:
        Registry.from_yaml(path)
    assert err.value.line == 2
    assert not marker.exists()


# ---------------------------------------------------------------- YamlFileRegistry


def test_yaml_file_registry_persists_every_add(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "reg.yaml"
    registry = YamlFileRegistry(path)
    assert not path.exists()
    registry.add_run_spec(run_spec())
    assert load_yaml_file(path)["runs"][RUN_ID]["name"] == "train"
    digest = registry.add_artifact(b"blob")
    assert (tmp_path / "sub" / "reg.yaml.artifacts" / digest).read_bytes() == b"blob"
    again = YamlFileRegistry(path)
    assert again.get_run_spec(RUN_ID) == registry.get_run_spec(RUN_ID)
    assert again.get_artifact(digest) == b"blob"
    again.add_component_spec(sample_spec("components"))
    assert Registry.from_yaml(path).spec_ids("components") == ["components-id-1"]
    assert "reg.yaml" in repr(again)


def test_yaml_file_registry_conflicts_leave_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "reg.yaml"
    registry = YamlFileRegistry(path)
    registry.add_run_spec(run_spec())
    before = path.read_bytes()
    with pytest.raises(SpecConflictError):
        registry.add_run_spec(run_spec(name="other"))
    assert path.read_bytes() == before


def test_deepest_encodable_arguments_survive_a_yaml_file(tmp_path: Path) -> None:
    value: Any = {"leaf": (None,)}
    for _ in range(_canon.MAX_DEPTH - 2):  # dicts nest deepest in YAML: 3 levels each
        value = {"k": value}
    aset = ArgumentSet({"f": {"__call__": {"deep": value}}})
    assert aset.is_exact
    registry = InMemoryRegistry()
    registry.add_argument_set_spec(aset)
    path = tmp_path / "deep.yaml"
    registry.to_yaml(path)
    spec = Registry.from_yaml(path).get_argument_set_spec(aset.identifier)
    assert ArgumentSet.from_spec(spec).get_arg("f", "__call__", "deep") == value
