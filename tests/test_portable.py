"""Portable runs: export with artifacts, import into another store, verify, replay there."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import stored_runs
from mlflow.tracking import MlflowClient
from replay_support import CodeDir, make_store

import pcs
from pcs import _store
from pcs._yaml import dump_yaml, load_yaml
from pcs.component_run import ComponentRun

PIPELINE = """
import pcs


@pcs.tracked
def prepare(n: int) -> list[int]:
    return list(range(n))


@pcs.tracked
def total(values: list[int], scale: float = 1.0) -> float:
    return scale * sum(values)


@pcs.tracked
def pipeline(n: int) -> float:
    return total(prepare(n), scale=0.5)
"""

N = 20_000
EXPECTED = 0.5 * sum(range(N))


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CodeDir]:
    folder = CodeDir(tmp_path / "code", monkeypatch)
    yield folder
    folder.cleanup()


class Recorded:
    """The runs of one ``pipeline(N)`` call inside ``with pcs.run("experiment")``."""

    def __init__(self, code: CodeDir) -> None:
        self.module = code.write(PIPELINE)
        pipe = code.load(self.module)
        with pcs.run("experiment") as root:
            root.log_metric("quality", 0.75)
            pipe.pipeline(N)
        pcs.flush()
        self.root = root
        client = MlflowClient()
        runs = client.search_runs(["0"], max_results=100)
        # a tracked call's run name may show its arguments: total(scale=2.0)
        by_name = {r.info.run_name.split("(", 1)[0]: r.info.run_id for r in runs}
        self.ids = {name: by_name[name] for name in ("experiment", "pipeline", "prepare", "total")}
        self.total = ComponentRun.from_existing_run_id(self.ids["total"])


@pytest.fixture
def recorded(code: CodeDir) -> Recorded:
    return Recorded(code)


def use_store(monkeypatch: pytest.MonkeyPatch, uri: str) -> MlflowClient:
    pcs.flush()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _store.reset_backends()
    return MlflowClient(tracking_uri=uri)


def large_digest(run: ComponentRun) -> str:
    tree = run.run_command.argument_set.encoded()["total"]["total"]["values"]
    assert tree[0] == "artifact"
    return str(tree[1]["digest"])


def test_export_holds_the_tree_its_specs_and_artifacts(recorded: Recorded,
                                                      tmp_path: Path) -> None:
    registry = pcs.export_runs(recorded.root)
    assert set(registry.spec_ids("runs")) == set(recorded.ids.values())
    assert len(registry.spec_ids("run_commands")) == 3
    assert len(registry.spec_ids("components")) == 3
    assert len(registry.spec_ids("argument_sets")) == 3
    digest = large_digest(recorded.total)
    assert registry.has_artifact(digest)
    total_spec = registry.get_run_spec(recorded.ids["total"])[recorded.ids["total"]]
    paths = {a["path"] for a in total_spec["artifacts"]}
    assert {"pcs.run_command_registry.yaml", f"pcs.arguments/{digest}.json",
            "pcs.return_value.json"} <= paths

    path = tmp_path / "export" / "runs.yaml"
    registry.to_yaml(path)
    folder = path.parent / "runs.yaml.artifacts"
    files = sorted(folder.iterdir())
    assert files
    assert all(hashlib.sha256(f.read_bytes()).hexdigest() == f.name for f in files)
    assert pcs.Registry.from_yaml(path).spec_ids("runs") == registry.spec_ids("runs")


def test_component_run_to_registry_recurse(recorded: Recorded) -> None:
    registry = recorded.total.to_registry()
    command = recorded.total.run_command
    assert registry.spec_ids("run_commands") == [command.identifier]
    assert registry.spec_ids("components") == [command.component.identifier]
    assert registry.has_artifact(large_digest(recorded.total))
    assert "artifacts" not in registry.get_run_spec(recorded.ids["total"])[recorded.ids["total"]]
    bare = recorded.total.to_registry(recurse=False)
    assert bare.spec_ids("run_commands") == []
    assert bare.artifact_digests() == []
    only_command = command.to_registry(recurse=False)
    assert only_command.spec_ids("components") == []


SUBPROCESS = textwrap.dedent(
    """
    import json, sys
    import pcs

    path, total_id, module = sys.argv[1:4]
    mapping = pcs.import_runs(path)
    again = pcs.import_runs(path)
    registry = pcs.Registry.from_yaml(path)
    run = pcs.ComponentRun.from_registry(registry, total_id)
    try:
        run.rerun()
        refused = ""
    except pcs.UnsafeReplayError as exc:
        refused = str(exc)
    with pcs.run("replays") as outer:
        new = run.rerun(allowed_modules=[module])
    pcs.flush()
    print(json.dumps({"mapping": mapping, "again": again, "refused": refused,
                      "new": new.identifier, "outer": outer.identifier,
                      "value": new.return_value, "imported": run.identifier}))
    """
)


@pytest.mark.slow
def test_import_into_another_store_in_a_subprocess(
    recorded: Recorded, code: CodeDir, tmp_path: Path, template_store: Path
) -> None:
    path = tmp_path / "export" / "runs.yaml"
    pcs.export_runs(recorded.root).to_yaml(path)
    other = make_store(template_store, tmp_path / "other")
    env = dict(os.environ, MLFLOW_TRACKING_URI=other,
               PYTHONPATH=os.pathsep.join([str(code.folder), *sys.path]))
    out = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, str(path), recorded.ids["total"], recorded.module],
        env=env, cwd=tmp_path / "other", capture_output=True, text=True, check=False,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    mapping = result["mapping"]
    assert result["again"] == mapping  # idempotent
    assert set(mapping) == set(recorded.ids.values())
    assert "not allowed" in result["refused"]

    client = MlflowClient(tracking_uri=other)
    runs = stored_runs(client)
    assert len(runs) == 4 + 2  # the imported tree, once; "replays" and the rerun
    ids = recorded.ids
    for name, original in ids.items():
        imported = client.get_run(mapping[original])
        assert imported.info.run_id != original
        assert imported.data.tags["pcs.imported_from"] == original
        assert "pcs.importing_from" not in imported.data.tags
        assert imported.info.status == "FINISHED"
        assert imported.info.run_name == MlflowClient().get_run(original).info.run_name
        assert imported.info.run_name.split("(", 1)[0] == name
    parent = {name: client.get_run(mapping[ids[name]]).data.tags.get("mlflow.parentRunId")
              for name in ids}
    assert parent == {"experiment": None, "pipeline": mapping[ids["experiment"]],
                      "prepare": mapping[ids["pipeline"]], "total": mapping[ids["pipeline"]]}
    root = client.get_run(mapping[ids["experiment"]])
    assert root.data.metrics == {"quality": 0.75}
    assert client.get_run(mapping[ids["pipeline"]]).data.params == {"arg.n": str(N)}
    digest = large_digest(recorded.total)
    arts = {a.path for a in client.list_artifacts(mapping[ids["total"]], "pcs.arguments")}
    assert arts == {f"pcs.arguments/{digest}.json"}

    assert result["imported"] == mapping[ids["total"]]
    assert result["value"] == EXPECTED
    new = client.get_run(result["new"])
    assert new.data.tags["pcs.rerun_of"] == mapping[ids["total"]]
    assert new.data.tags["pcs.reproduced"] == "True"
    assert new.data.tags["mlflow.parentRunId"] == result["outer"]


def test_importing_into_the_same_store_adds_nothing(client: MlflowClient,
                                                    recorded: Recorded) -> None:
    before = stored_runs(client)
    mapping = pcs.import_runs(pcs.export_runs(recorded.root))
    assert mapping == {i: i for i in recorded.ids.values()}
    assert stored_runs(client).keys() == before.keys()


def test_round_trip_back_to_the_original_store_adds_nothing(
    recorded: Recorded, tmp_path: Path, template_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = os.environ["MLFLOW_TRACKING_URI"]
    registry = pcs.export_runs(recorded.root)
    use_store(monkeypatch, make_store(template_store, tmp_path / "other"))
    mapping = pcs.import_runs(registry)
    back = pcs.export_runs(list(mapping.values()))
    client = use_store(monkeypatch, home)
    assert set(pcs.import_runs(back).values()) == set(recorded.ids.values())
    assert len(stored_runs(client)) == 4


def test_an_interrupted_import_is_cleaned_up_and_redone(
    recorded: Recorded, tmp_path: Path, template_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = pcs.export_runs(recorded.root)
    client = use_store(monkeypatch, make_store(template_store, tmp_path / "other"))
    calls = []
    original = _store.Backend.set_terminated

    def crash_on_second(self: _store.Backend, *args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full")
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_store.Backend, "set_terminated", crash_on_second)
    with pytest.raises(pcs.StoreError, match="OSError: disk full") as caught:
        pcs.import_runs(registry)
    assert "import_runs() again" in str(caught.value)
    leftovers = [r for r in stored_runs(client).values()
                 if "pcs.importing_from" in r.data.tags]  # type: ignore[attr-defined]
    assert len(leftovers) == 1
    monkeypatch.setattr(_store.Backend, "set_terminated", original)
    mapping = pcs.import_runs(registry)
    active = stored_runs(client)
    assert set(active) == set(mapping.values())
    assert len(active) == 4
    dead = client.get_run(leftovers[0].info.run_id)  # type: ignore[attr-defined]
    assert dead.info.lifecycle_stage == "deleted"


def test_from_registry_finds_the_imported_run(
    recorded: Recorded, tmp_path: Path, template_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = pcs.export_runs(recorded.root)
    total_id = recorded.ids["total"]
    assert ComponentRun.from_registry(registry, total_id).identifier == total_id
    use_store(monkeypatch, make_store(template_store, tmp_path / "other"))
    with pytest.raises(pcs.RunNotFoundError, match=total_id):
        ComponentRun.from_registry(registry, total_id)
    mapping = pcs.import_runs(registry)
    found = ComponentRun.from_registry(registry, total_id)
    assert found.identifier == mapping[total_id]
    assert found.run_command == recorded.total.run_command
    with pytest.raises(pcs.SpecError, match="not a ComponentRun"):
        ComponentRun.from_registry(registry, recorded.ids["experiment"])
    with pytest.raises(pcs.SpecNotFoundError):
        ComponentRun.from_registry(registry, "0" * 32)


def test_import_needs_an_existing_experiment(recorded: Recorded) -> None:
    with pytest.raises(pcs.UsageError, match="no active experiment"):
        pcs.import_runs(pcs.export_runs(recorded.root), experiment_id="12345")


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        ("quality: 0.75", "quality: 0.76", "run"),
        ("return scale * sum(values)", "return scale * sum(values) + 1", "component"),
    ],
)
def test_a_changed_byte_in_the_yaml_is_refused(
    recorded: Recorded, tmp_path: Path, template_store: Path,
    monkeypatch: pytest.MonkeyPatch, old: str, new: str, kind: str
) -> None:
    path = tmp_path / "runs.yaml"
    registry = pcs.export_runs(recorded.root)
    registry.to_yaml(path)
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    client = use_store(monkeypatch, make_store(template_store, tmp_path / "other"))
    with pytest.raises(pcs.SpecIntegrityError, match=str(path)) as caught:
        pcs.import_runs(path)
    spec_id = caught.value.spec_id
    assert spec_id is not None
    assert spec_id in str(caught.value)
    expected = (recorded.ids["experiment"] if kind == "run"
                else recorded.total.run_command.component.identifier)
    assert spec_id == expected
    assert stored_runs(client) == {}


def test_a_changed_artifact_is_refused(
    recorded: Recorded, tmp_path: Path, template_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.yaml"
    pcs.export_runs(recorded.root).to_yaml(path)
    digest = large_digest(recorded.total)
    blob = tmp_path / "runs.yaml.artifacts" / digest
    blob.write_bytes(blob.read_bytes().replace(b'"7"', b'"8"', 1))
    client = use_store(monkeypatch, make_store(template_store, tmp_path / "other"))
    with pytest.raises(pcs.SpecIntegrityError, match=digest):
        pcs.import_runs(path)
    assert stored_runs(client) == {}


def test_a_spec_rewritten_to_name_os_system_never_runs(
    code: CodeDir, tmp_path: Path, template_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consistent rewrite (ids and hashes recomputed) imports, but replay refuses it."""
    module = code.load(code.write(PIPELINE))
    module.prepare(3)
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    marker = tmp_path / "pwned"
    evil = pcs.RunCommand(
        pcs.Component(module="os", qualname="system"),
        "system",
        pcs.ArgumentSet({"system": {"system": {"command": f"touch {marker}"}}}),
    )
    exported = run.to_registry(recurse=False)
    fields = exported.get_run_spec(run.identifier)[run.identifier]
    fields["tags"]["pcs.run_command_id"] = evil.identifier
    fields["tags"]["pcs.entry_point"] = "system"
    del fields["spec_hash"]
    forged = pcs.InMemoryRegistry()
    forged.add_run_spec({run.identifier: fields})
    evil.to_registry(forged)
    path = tmp_path / "forged.yaml"
    forged.to_yaml(path)

    client = use_store(monkeypatch, make_store(template_store, tmp_path / "other"))
    mapping = pcs.import_runs(path)
    imported = ComponentRun.from_existing_run_id(mapping[run.identifier])
    assert imported.run_command.component.path == "os:system"
    with pytest.raises(pcs.UnsafeReplayError, match="module 'os' is not allowed"):
        imported.rerun()
    with pytest.raises(pcs.UnsafeReplayError, match=r"os:system is not a @pcs\.tracked"):
        imported.rerun(allowed_modules=["os"])
    assert not marker.exists()
    assert len(stored_runs(client)) == 1


def test_unsafe_artifact_paths_are_refused(
    recorded: Recorded, tmp_path: Path, template_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = pcs.export_runs(recorded.root)
    data = registry.to_dict()
    run_id = recorded.ids["prepare"]
    fields = data["runs"][run_id]
    fields["artifacts"][0]["path"] = "../../escaped.txt"
    del fields["spec_hash"]
    forged = pcs.InMemoryRegistry()
    forged.add_registry(registry)
    forged.add_run_spec({run_id: fields}, force=True)
    client = use_store(monkeypatch, make_store(template_store, tmp_path / "other"))
    with pytest.raises(pcs.SpecError, match=re.escape("artifact path '../../escaped.txt'")):
        pcs.import_runs(forged)
    assert stored_runs(client) == {}


def test_registry_yaml_round_trip_keeps_replay_specs(recorded: Recorded, tmp_path: Path) -> None:
    registry = recorded.total.to_registry()
    text = dump_yaml(registry.to_dict())
    again = pcs.Registry.from_dict(load_yaml(text))
    command_id = recorded.total.run_command.identifier
    assert pcs.RunCommand.from_registry(again, command_id) == recorded.total.run_command


def test_tags_mlflow_would_reject_are_refused_before_anything_is_written(
    recorded: Recorded, tmp_path: Path, template_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = pcs.export_runs(recorded.root)
    run_id = recorded.ids["experiment"]
    fields = registry.get_run_spec(run_id)[run_id]
    fields["tags"]["bad key!"] = "x"
    del fields["spec_hash"]
    forged = pcs.InMemoryRegistry()
    forged.add_registry(registry)
    forged.add_run_spec({run_id: fields}, force=True)
    client = use_store(monkeypatch, make_store(template_store, tmp_path / "other"))
    with pytest.raises(pcs.SpecError, match="'bad key!' is not a valid MLflow tag name"):
        pcs.import_runs(forged)
    assert stored_runs(client) == {}
