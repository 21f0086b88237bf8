"""Typed journal records: one definition per kind, a versioned wire form, a dispatch table.

Every kind round-trips through JSON and the journal; a record of a kind (or
form) this pcs does not know raises a clear error and is kept, never
dropped; every producer builds its records with the kinds' typed
constructors; and the specs the writer stores for a call are those the
objects make.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import socket
import time
import typing
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

import pcs
from pcs import _canon, _journal, _writer
from pcs._journal import Journal, JournalFile
from pcs._journal.format import line, read_header
from pcs._materialize import Batch, Materializer
from pcs._records import (
    KINDS,
    WIRE_VERSION,
    DefineComponent,
    EndRun,
    LogArtifact,
    LogError,
    LogMetrics,
    LogParams,
    SetTags,
    StartCall,
    StartRun,
    decode,
)
from pcs._yaml import load_yaml
from pcs.argument_set import ArgumentSet
from pcs.component import Component
from pcs.conventions import REGISTRY_ARTIFACT
from pcs.exceptions import PcsError, UnknownRecordError
from pcs.run_command import RunCommand

RUN = "0123456789abcdef0123456789abcdef"

#: the fields of one record of each kind (after the kind letter)
SAMPLES: dict[str, tuple[Any, ...]] = {
    "R": (RUN, "0", "train \u00e9", 1_700_000_000_000, {"pcs.is_run": "True"}, {"p": "1"},
          False),
    "K": ("key", {"type": "Component", "module": "m", "qualname": "f", "source_file": None,
                  "source_sha256": None, "source": None, "git_commit": None,
                  "git_dirty": None}),
    "T": (RUN, "0", 1, "key", "f", "m.f", None, {"f": {"x": 1, "y": ["s", "a"]}}, [],
          {"arg.x": "1"}, {"extra": "tag"}, False),
    "G": (RUN, {"k": "v"}),
    "P": (RUN, {"lr": "0.1"}),
    "M": (RUN, [["loss", 0.5, 1, 0], ["acc", 1.0, 2, 3]]),
    "A": (RUN, "pcs.arguments/abc.json", "aGVsbG8="),
    "X": (RUN, "builtins.ValueError", "Traceback ...\nValueError: x"),
    "E": (RUN, "FINISHED", 2, ["json", ["i", "4"]]),
}


def test_every_kind_has_one_class_a_sample_and_a_handler() -> None:
    assert sorted(KINDS) == sorted(SAMPLES)
    assert set(Materializer().handlers) == set(KINDS.values())
    for kind, cls in KINDS.items():
        assert cls._fields[0] == "kind"
        assert typing.get_type_hints(cls)["kind"] == typing.Literal[kind]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_typed_constructor_builds_the_wire_form_of_the_fields(kind: str) -> None:
    cls = KINDS[kind]
    parameters = inspect.signature(cls.wire).parameters
    assert list(parameters) == list(cls._fields[1:])
    assert {n: p.default for n, p in parameters.items()
            if p.default is not inspect.Parameter.empty} == cls._field_defaults
    wire = cls.wire(*SAMPLES[kind])
    assert type(wire) is list
    assert wire == [kind, *SAMPLES[kind]]
    typed = decode(wire)
    assert type(typed) is cls
    assert typed == cls(kind, *SAMPLES[kind])  # type: ignore[arg-type]
    assert typed[0] == kind
    assert list(typed) == wire
    assert json.loads(json.dumps(typed)) == wire  # a typed record is its wire form too


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_round_trips_through_json_and_the_journal(
    kind: str, tmp_path: Path
) -> None:
    wire = KINDS[kind].wire(*SAMPLES[kind])
    assert decode(json.loads(json.dumps(wire))) == decode(wire)
    journal = Journal(tmp_path, "sqlite:///x.db")
    journal.append([wire], sync=True)
    journal.append([wire, SetTags.wire(RUN, {})], sync=True)  # a line of several records
    (alone, grouped, _tags) = journal.read(1, 3)
    assert alone == grouped == wire
    assert decode(alone) == decode(wire)
    journal.close(delete=True)


def test_optional_trailing_fields_may_be_left_out() -> None:
    assert EndRun.wire(RUN, "FINISHED", 2) == ["E", RUN, "FINISHED", 2]  # as before
    assert decode(["E", RUN, "FINISHED", 2]).returned is None  # type: ignore[union-attr]
    # journals written before the wire form was versioned: R and T without precreated
    assert decode(["R", RUN, "0", None, 1, {}, {}]) == StartRun("R", RUN, "0", None, 1, {}, {})
    old_call = ["T", *SAMPLES["T"][:-1]]
    assert decode(old_call) == decode(StartCall.wire(*SAMPLES["T"]))


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (["Z", RUN, 1], "kind 'Z'"),
        (["E", RUN, "FINISHED", 2, None, "a newer field"], "5 field(s) where EndRun"),
        (["G", RUN], "1 field(s) where SetTags"),
        ([], "not an empty array"),
        ({"kind": "G"}, "not a JSON dict"),
        ([["G", RUN, {}]], "kind ["),
    ],
    ids=["unknown-kind", "too-many-fields", "too-few-fields", "empty", "object", "nested"],
)
def test_a_record_this_pcs_cannot_read_raises_a_clear_error(raw: Any, words: str) -> None:
    with pytest.raises(UnknownRecordError) as err:
        decode(raw)
    assert isinstance(err.value, PcsError)
    message = str(err.value)
    assert words in message
    assert "newer pcs" in message
    assert "kept" in message
    with pytest.raises(UnknownRecordError):
        Materializer().materialize([SetTags.wire(RUN, {}), raw])


def test_unknown_record_error_pickles_with_its_context() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(UnknownRecordError("Z", "why")))
    assert (error.kind, error.problem) == ("Z", "why")
    assert "why" in str(error)


class _Sink:
    """A sink that only materializes (what every real sink does first)."""

    def __init__(self) -> None:
        self.materializer = Materializer()
        self.batches: list[Batch] = []

    def deliver(self, records: list[list[Any]]) -> None:
        self.batches.append(self.materializer.materialize(records))


def test_the_writer_keeps_the_journal_of_an_unknown_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = _Sink()
    journal = Journal(tmp_path / "journal", "sqlite:///x.db")
    writer = _writer.Writer(lambda: sink, journal, store="test")
    with caplog.at_level(logging.ERROR, logger="pcs"):
        writer.submit([SetTags.wire(RUN, {"k": "v"}), ["Z", RUN, "from the future"]])
        assert writer.flush(30)
        writer.close(5)
    assert [b.tags for b in sink.batches if b.tags] == [{(RUN, "k"): "v"}]  # the rest arrives
    assert journal.path.exists()  # the unknown record is kept, never dropped
    (message,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "kind 'Z'" in message
    assert str(journal.path) in message
    assert "pcs bug" not in message


def _foreign_journal(directory: Path, tracking_uri: str, records: list[Any],
                     version: int = WIRE_VERSION + 1) -> Path:
    """A journal left by a pcs on another host (so proven dead once stale)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    header = {"format": _journal.HEADER, "records": version, "host": "elsewhere",
              "pid": 1, "start": "1", "tracking_uri": tracking_uri, "created": 0.0}
    path = directory / "elsewhere-1-1-0.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(line(0, ["H", header]) + line(1, records))
    stale = time.time() - 3600
    os.utime(path, (stale, stale))
    return path


def test_recovery_keeps_a_journal_with_an_unknown_record(
    tracking_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _foreign_journal(tmp_path / ".pcs" / "journal", tracking_uri, [
        StartRun.wire(RUN, "0", "r", 1, {"pcs.is_run": "True"}, {}),
        ["Z", RUN, "from the future"],
    ])
    (found,) = _journal.dead_journals(path.parent)
    assert found.wire_version == WIRE_VERSION + 1
    found.release()
    assert socket.gethostname() != "elsewhere"
    with caplog.at_level(logging.WARNING, logger="pcs"):
        report = pcs.recover()
    assert report.failed == []
    assert [p for p, _ in report.unreadable] == [str(path)]
    assert "wire form 2" in report.unreadable[0][1]
    assert path.exists()
    assert "newer pcs" in str(report)
    # nothing of it was delivered: not even the run it starts
    assert MlflowClient(tracking_uri=tracking_uri).search_runs(["0"]) == []


def test_recovery_delivers_nothing_of_a_journal_with_an_unknown_kind(
    tracking_uri: str, tmp_path: Path
) -> None:
    """Same wire version, but one record of a kind this pcs does not know: the check
    before delivery finds it, so the journal is kept whole."""
    path = _foreign_journal(tmp_path / ".pcs" / "journal", tracking_uri, [
        StartRun.wire(RUN, "0", "r", 1, {"pcs.is_run": "True"}, {}),
        ["Z", RUN, "from the future"],
    ], version=WIRE_VERSION)
    report = pcs.recover()
    assert [p for p, _ in report.unreadable] == [str(path)]
    assert "kind 'Z'" in report.unreadable[0][1]
    assert report.journals == []
    assert path.exists()
    assert MlflowClient(tracking_uri=tracking_uri).search_runs(["0"]) == []


def test_the_journal_header_names_the_wire_version(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "sqlite:///x.db")
    journal.append([SetTags.wire(RUN, {})], sync=True)
    journal.close(delete=False)
    fd = os.open(journal.path, os.O_RDONLY)
    header = read_header(fd)
    assert header is not None
    assert header["format"] == _journal.HEADER == "pcs-journal/2"
    assert header["records"] == WIRE_VERSION == 1
    assert JournalFile(journal.path, header, fd).wire_version == WIRE_VERSION
    assert JournalFile(journal.path, {"format": "pcs-journal/2"}, fd).wire_version == 1
    assert JournalFile(journal.path, {}, fd, header_damaged=True).wire_version is None
    os.close(fd)


# ------------------------------------------------------------------ producers


def test_no_module_builds_a_record_by_hand() -> None:
    """Records are built only by the typed constructors of pcs._records."""
    root = Path(pcs.__file__).parent
    literal = re.compile(r'\[\s*"[RKTGPMAXE]",\s*(?:self\._run_id|run_id|key)\b')
    found = {
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "_records.py" and literal.search(path.read_text(encoding="utf-8"))
    }
    assert not found, f"records built by hand in {sorted(found)}"


@pcs.tracked
def _produce(x: Any, big: Any = None) -> Any:
    if x == "fail":
        raise ValueError("boom")
    return x


def test_every_producer_builds_its_records_with_the_typed_constructors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[Any]] = []
    enqueue = _writer.Writer._enqueue

    def spy(self: _writer.Writer, records: Any, sync: bool, spill: bool) -> None:
        seen.extend(records)
        enqueue(self, records, sync, spill)

    monkeypatch.setattr(_writer.Writer, "_enqueue", spy)
    with pcs.run("producers", tags={"t": "1"}, params={"p": 1}) as run:
        run.log_metric("loss", 0.5)
        run.log_params({"lr": 0.1})
        run.set_tags({"k": "v"})
        from mlflow.entities import Metric, Param, RunTag

        run.log_batch([Metric("m", 1.0, 1, 0)], [Param("q", "1")], [RunTag("g", "h")])
        _produce(1)
        _produce(2, big="x" * 100_000)  # a large argument: an artifact record
        with pytest.raises(ValueError):
            _produce("fail")
    other = pcs.Run()
    other.set_terminated("KILLED")
    assert pcs.flush(60)
    assert {r[0] for r in seen} == set(KINDS)
    for record in seen:
        typed = decode(record)
        # exactly what the kind's typed constructor makes of the record's fields
        assert record == KINDS[record[0]].wire(*typed[1:]), record[0]


# ------------------------------------------------------------------ one spec schema


def _writer_registry(records: list[list[Any]]) -> dict[str, Any]:
    batch = Materializer().materialize(records)
    (text,) = [data for _run, path, data in batch.artifacts if path == REGISTRY_ARTIFACT]
    return dict(load_yaml(text))


@pytest.mark.parametrize(
    "arguments",
    [{"x": 1}, {"x": "é", "y": [1, 2.5, None], "z": {"k": (1, 2)}}, {}],
    ids=["scalar", "nested", "none"],
)
def test_the_writers_specs_are_the_objects_specs(arguments: dict[str, Any]) -> None:
    component = Component.from_callable(_produce)
    deferred = {k: v if _canon.is_deferrable(v) else _canon.encode(v)
                for k, v in arguments.items()}
    records = [
        DefineComponent.wire(component.identifier, component.fields()),
        StartCall.wire(RUN, "0", 1, component.identifier, "_produce", "n", None,
                       {"_produce": deferred}, [], {}, None),
    ]
    registry = _writer_registry(records)
    argument_set = ArgumentSet({component.name: {"_produce": arguments}})
    command = RunCommand(component, "_produce", argument_set)
    assert registry["components"] == component.to_spec()
    assert registry["argument_sets"] == argument_set.to_spec()
    assert registry["run_commands"] == command.to_spec()
    # and a registry built from the objects holds the same
    from_objects = command.to_registry().to_dict()
    for section in ("components", "argument_sets", "run_commands"):
        assert registry[section] == from_objects[section]


def test_the_writer_and_the_objects_agree_in_mlflow(client: MlflowClient) -> None:
    from pcs.component_run import ComponentRun

    _produce({"a": [1, 2]}, big=None)
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    command = run.run_command  # built from the objects, in this process
    path = client.download_artifacts(run.identifier, REGISTRY_ARTIFACT)
    stored = load_yaml(Path(path).read_bytes())
    assert stored["run_commands"] == command.to_spec()
    assert stored["argument_sets"] == command.argument_set.to_spec()
    assert stored["components"] == command.component.to_spec()
    assert client.get_run(run.identifier).data.tags["pcs.run_command_id"] == command.identifier


def test_other_kinds_materialize_as_before() -> None:
    batch = Materializer().materialize([
        StartRun.wire(RUN, "0", "r", 5, {"t": "1"}, {"p": "2"}),
        LogMetrics.wire(RUN, [["loss", 0.5, 7, 1]]),
        LogParams.wire(RUN, {"q": 3}),  # type: ignore[dict-item]
        SetTags.wire(RUN, {"g": "h"}),
        LogArtifact.wire(RUN, "a/b.txt", "aGk="),
        LogError.wire(RUN, "builtins.ValueError", "tb"),
        EndRun.wire(RUN, "FAILED", 9),
    ])
    assert batch.runs[RUN].status == "FAILED"
    assert batch.runs[RUN].end_ms == 9
    assert batch.metrics == [(RUN, "loss", 0.5, 7, 1)]
    assert batch.params == {(RUN, "p"): "2", (RUN, "q"): "3"}
    assert batch.tags[(RUN, "g")] == "h"
    assert batch.tags[(RUN, "t")] == "1"
    assert batch.tags[(RUN, "pcs.error.type")] == "builtins.ValueError"
    assert (RUN, "a/b.txt", b"hi") in batch.artifacts
    with pytest.raises(ValueError, match="unsafe artifact path"):
        Materializer().materialize([LogArtifact.wire(RUN, "../x", "")])
    with pytest.raises(ValueError, match="unsafe id"):
        Materializer().materialize([StartRun.wire("../../evil", "0", "x", 0, {}, {})])
