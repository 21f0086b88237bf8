"""The tracked call's fast path gives exactly what the general path gives.

A call of a plain function passing scalars positionally skips argument
binding and encoding on the caller's thread (the writer encodes them later);
a call with keywords takes the general path. Both must store the same
RunCommand, params and return value. Also: a call's start is published
without a lock, so a long call still shows as RUNNING in MLflow while it runs;
and the journal's lines may hold several records.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

import pcs
from pcs import _canon
from pcs._journal import Journal, JournalFile
from pcs._yaml import load_yaml
from pcs.component_run import ComponentRun


@pcs.tracked
def combine(a: Any, b: Any, c: Any) -> Any:
    return [a, b, c] if not isinstance(a, str) or a != "return-scalar" else c


def _stored(client: MlflowClient, run: pcs.Run) -> Any:
    return client.get_run(run.identifier)


def _registry(client: MlflowClient, run: pcs.Run) -> dict[str, Any]:
    path = client.download_artifacts(run.identifier, ComponentRun.REGISTRY_ARTIFACT)
    return dict(load_yaml(Path(path).read_bytes()))


def _both_paths(client: MlflowClient, *values: Any) -> tuple[Any, Any]:
    """(fast-path run, general-path run) of combine(*values), read back from MLflow."""
    combine(*values)
    fast = pcs.last_run()
    tracker = combine.__pcs_tracked__  # type: ignore[attr-defined]
    names, tracker.fast_names = tracker.fast_names, None  # the general path, as for methods
    try:
        combine(*values)
    finally:
        tracker.fast_names = names
    general = pcs.last_run()
    assert isinstance(fast, ComponentRun)
    assert isinstance(general, ComponentRun)
    return fast, general


def test_keyword_arguments_take_the_fast_path_and_store_the_same(
    client: MlflowClient,
) -> None:
    tracker = combine.__pcs_tracked__  # type: ignore[attr-defined]
    combine(1, 0.5, "x")  # the plugins are loaded: the fast path is open
    assert tracker.fast_arguments((1,), {"c": "x", "b": 0.5}) == {"a": 1, "b": 0.5, "c": "x"}
    assert list(tracker.fast_arguments((), {"c": "x", "b": 0.5, "a": 1})) == ["a", "b", "c"]
    for args, kwargs in [((1,), {"a": 1, "b": 0.5}), ((1,), {"b": 0.5, "d": 2}),
                         ((1,), {"b": 0.5}), ((1,), {"b": [0.5], "c": "x"})]:
        assert tracker.fast_arguments(args, kwargs) is None, (args, kwargs)
    combine(1, c="x", b=0.5)
    keywords = pcs.last_run()
    fast, general = _both_paths(client, 1, 0.5, "x")
    assert isinstance(keywords, ComponentRun)
    stored = [_stored(client, run) for run in (keywords, fast, general)]
    assert stored[0].data.params == stored[1].data.params == stored[2].data.params
    assert len({r.data.tags["pcs.run_command_id"] for r in stored}) == 1
    assert stored[0].data.tags["mlflow.runName"] == stored[2].data.tags["mlflow.runName"]
    assert keywords.run_command == general.run_command


SCALARS = [
    (3, 0.5, "x"),
    (True, False, None),
    (-0.0, 1e308, 2**61),
    (-(2**61), 5e-324, ""),
    ("a" * 4096, "tab\there\n", 'quote " back \\ slash'),
]


def _param(value: Any) -> str:
    """The param of a scalar: its text, or past 250 characters a summary with its digest."""
    text = str(value)
    if len(text) <= 250:
        return text
    digest = hashlib.sha256(_canon.canonical_bytes(_canon.encode(value))).hexdigest()
    return f"<str of {len(text):,} chars, sha256 {digest[:12]}…>"


@pytest.mark.parametrize("values", SCALARS)
def test_fast_and_general_path_store_the_same(
    client: MlflowClient, values: tuple[Any, ...]
) -> None:
    fast, general = _both_paths(client, *values)
    a, b = _stored(client, fast), _stored(client, general)
    assert a.data.tags["pcs.run_command_id"] == b.data.tags["pcs.run_command_id"]
    assert a.data.params == b.data.params == {
        f"arg.{name}": _param(value) for name, value in zip("abc", values, strict=True)
    }
    assert _registry(client, fast)["argument_sets"] == _registry(client, general)["argument_sets"]
    assert fast.run_command == general.run_command
    args = dict(fast.run_command.argument_set.get_function_args(
        fast.run_command.component.name, "combine"))
    for name, value in zip("abc", values, strict=True):
        assert args[name] == value
        assert type(args[name]) is type(value)
        if isinstance(value, float):
            assert math.copysign(1, args[name]) == math.copysign(1, value)
    fresh = ComponentRun.from_existing_run_id(fast.identifier)
    assert fresh.return_value == list(values)
    assert fresh.run_command == general.run_command


@pytest.mark.parametrize(
    "values",
    [
        (float("nan"), float("inf"), -float("inf")),
        (2**62, -(2**62), 2**200),
        ("héllo", "\ud800", "x" * 5000),
        ("https://user:pw@example.com/", "http://example.com/", 1),
    ],
)
def test_values_outside_the_fast_path_are_still_exact(
    client: MlflowClient, values: tuple[Any, ...]
) -> None:
    fast, general = _both_paths(client, *values)
    stored_fast, stored_general = _stored(client, fast), _stored(client, general)
    assert stored_fast.data.tags["pcs.run_command_id"] == (
        stored_general.data.tags["pcs.run_command_id"]
    )
    assert stored_fast.data.params == stored_general.data.params
    if "\ud800" in values:
        assert stored_fast.data.params["arg.b"] == "\\ud800"  # escaped: MLflow stores UTF-8
    args = dict(fast.run_command.argument_set.get_function_args(
        fast.run_command.component.name, "combine"))
    for name, value in zip("abc", values, strict=True):
        if isinstance(value, str) and ":pw@" in value:
            assert args[name] is not value
            assert "pw" not in json.dumps(_registry(client, fast)["argument_sets"])
            continue
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(args[name])
            continue
        assert args[name] == value
        assert type(args[name]) is type(value)


@pytest.mark.parametrize(
    "value", [0.25, 7, "text", None, True, float("nan"), 2**100, "é", "\ud800", [1, "\udfff"]]
)
def test_scalar_return_values_read_back_exactly(client: MlflowClient, value: Any) -> None:
    combine("return-scalar", 0, value)
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    assert pcs.flush(60)
    fresh = ComponentRun.from_existing_run_id(run.identifier)
    got = fresh.return_value
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(got)
    else:
        assert got == value
        assert type(got) is type(value)


@pytest.mark.parametrize(
    "value",
    [0, -1, 2**62 - 1, -(2**62) + 1, 0.0, -0.0, 1.5, "", "abc", True, None],
)
def test_deferrable_scalars_encode_identically(value: Any) -> None:
    assert _canon.is_deferrable(value)
    assert _canon.trees({"v": value}) == {"v": _canon.encode(value)}
    assert _canon.trees({"v": json.loads(json.dumps(value))}) == {"v": _canon.encode(value)}


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), 2**62, -(2**62), "é", "\ud800", b"x", (1,), 1j]
)
def test_other_values_are_not_deferrable(value: Any) -> None:
    assert not _canon.is_deferrable(value)


def test_a_long_call_shows_running_while_it_runs(tracking_uri: str) -> None:
    stock = MlflowClient(tracking_uri=tracking_uri)  # does not flush pcs
    seen: list[str] = []

    @pcs.tracked
    def long_call() -> None:
        run = pcs.active_run()
        assert run is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                seen.append(stock.get_run(run.identifier).info.status)
                return
            except Exception:
                time.sleep(0.05)

    long_call()
    assert seen == ["RUNNING"]
    run = pcs.last_run()
    assert run is not None
    assert pcs.flush(60)
    assert stock.get_run(run.identifier).info.status == "FINISHED"


def test_reads_inside_a_call_see_its_start(client: MlflowClient) -> None:
    @pcs.tracked
    def reads_itself(x: int) -> dict[str, str]:
        run = pcs.active_run()
        assert run is not None
        return dict(run.data.params)

    assert reads_itself(4) == {"arg.x": "4"}


def test_journal_lines_hold_one_record_or_a_group(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "sqlite:///x.db")
    journal.append([["G", "r1", {"a": "1"}]], sync=True)  # one record: one line
    journal.append([["T", "r2", "0"], ["A", "r2", "p", ""]], sync=False)
    journal.append([["E", "r2", "FINISHED", 1]], sync=True)  # three records: one line
    journal.append([["P", "r3", {}]], sync=True)
    lines = [line for line in journal.path.read_bytes().split(b"\n") if line.strip(b"\0")]
    assert len(lines) == 4  # header + 3
    assert journal.read(2, 3) == [["T", "r2", "0"], ["A", "r2", "p", ""],
                                  ["E", "r2", "FINISHED", 1]]
    journal.mark_done(2)
    journal.close(delete=False)
    import fcntl
    import os

    fd = os.open(journal.path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    found = JournalFile(journal.path, {}, fd)
    assert [(new, record[0]) for new, record in found.records()] == [
        (False, "G"), (False, "T"), (True, "A"), (True, "E"), (True, "P")
    ]
    found.release()


def test_backpressure_keeps_every_run_in_order(client: MlflowClient) -> None:
    """Threads blocked on a full queue never let a call's end overtake its start."""
    import threading

    from pcs import _store

    writer = _store.get_backend().writer
    writer._max_pending = 6  # constant backpressure

    @pcs.tracked
    def leaf(t: int, i: int) -> int:
        return t * i

    def work(t: int) -> None:
        for i in range(30):
            leaf(t, i)

    threads = [threading.Thread(target=pcs.bind(work), args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert pcs.flush(120)
    runs = client.search_runs(["0"], max_results=1000)
    assert len(runs) == 240
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_tags_set_before_a_start_is_published_travel_in_its_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The environment tags of a top-level call (or a plugin's) join the call's start
    record while it is unpublished: one record less, and the same tags in the end."""
    from pcs._records import EndRun, SetTags, StartCall
    from pcs._writer import Writer

    monkeypatch.setattr(Writer, "_start", lambda self: None)  # no thread: nothing published
    writer = Writer(lambda: None, None, store="sqlite:///unused.db")  # type: ignore[arg-type, return-value]
    try:
        start = StartCall.wire("r1", "0", 1, "k1", "f", "f", None, {}, [], {}, {"own": "1"})
        writer.start([start], ("k1", lambda: {"name": "f"}))
        writer.submit([SetTags.wire("r1", {"env": "a", "own": "2"})])
        writer.submit([SetTags.wire("r1", {"more": "b"})])
        assert len(writer._queue) == 0  # merged, nothing published yet
        writer.submit([SetTags.wire("other-run", {"x": "y"})])  # not an open start: a record
        writer.submit([EndRun.wire("r1", "FINISHED", 2)])
        kinds = [record[0] for record in writer._queue]
        assert kinds == ["K", "T", "G", "E"]
        published = list(writer._queue)[1]
        assert published[StartCall._fields.index("extra_tags")] == {
            "own": "2", "env": "a", "more": "b"}
        writer.submit([SetTags.wire("r1", {"late": "c"})])  # published: a record of its own
        assert [record[0] for record in writer._queue][-1] == "G"
    finally:
        writer._closed = True  # nothing to deliver at exit (there is no sink)


def test_a_loop_of_top_level_calls_keeps_the_environment_tags(client: MlflowClient) -> None:
    runs = [combine(i, 2.0, "x") and pcs.last_run() for i in range(3)]
    pcs.flush()
    for run in runs:
        tags = client.get_run(run.identifier).data.tags
        assert tags["pcs.env.pid"]
        assert tags["mlflow.source.type"] == "LOCAL"
        assert tags["pcs.entry_point"] == "combine"
