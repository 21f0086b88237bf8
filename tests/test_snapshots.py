"""Deferred containers: a list or dict of plain scalars is copied on the caller's thread and
encoded by the writer — with exactly the trees, digests and params encoding at once gives."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import pcs
from pcs import _canon, _capture
from pcs.conventions import RUN_COMMAND_ID_TAG

CORPUS: list[Any] = [
    [i * 0.001 for i in range(1000)],
    [0.1, 1e-300, -2.5e300, 0.0, -0.0, 5e-324],
    list(range(-500, 500)),
    [2**62 - 1, -(2**62) + 1, 0],
    ["alpha", "beta", "", "x" * 40],
    [True, False, None, True],
    [1, 2.5, "three", None, False],
    {"lr": 0.1, "epochs": 3, "name": "run-1", "flag": True, "none": None},
    {f"param_{j}": (j if j % 3 == 0 else j * 0.25 if j % 3 == 1 else f"value-{j}")
     for j in range(50)},
    {"b": 1, "a": 2},  # insertion order differs from sorted order
    [float("nan"), float("inf"), -float("inf"), 1.5],  # floats travel as IEEE 754 bytes
    [1e308, 1e308],  # their sum overflows: still exact
]


def _record(label: str, values: list[Any]) -> list[tuple[str, str]]:
    """(RunCommand id, param arg.x) of a tracked call per value, nested under ``label``."""

    @pcs.tracked
    def consume(x: Any) -> int:
        return len(x)

    with pcs.run(label) as parent:
        for value in values:
            consume(value)
    assert pcs.flush(timeout=60)
    return [(child.data.tags[RUN_COMMAND_ID_TAG], child.data.params["arg.x"])
            for child in parent.children()]


@pytest.mark.parametrize("value", CORPUS, ids=[f"case{i}" for i in range(len(CORPUS))])
def test_deferred_container_is_taken_and_encodes_as_at_once(value: Any) -> None:
    captured = _capture.capture({"x": value})
    deferred = captured.encoded["x"]
    assert type(deferred) is dict  # deferred: a snapshot, not a tree
    assert repr(_canon.snapshot_value(deferred)) == repr(value)
    assert _canon.snapshot_value(deferred) is not value  # a copy
    assert "arg.x" not in captured.params
    # As the journal holds it (JSON), it gives the same tree as encoding at once.
    again = orjson.loads(orjson.dumps(deferred))
    assert _canon.trees({"x": again}) == {"x": _canon.encode(value)}


def test_the_stored_run_is_the_same_as_without_deferral(
    monkeypatch: pytest.MonkeyPatch, client: Any
) -> None:
    deferred = _record("deferred", CORPUS)
    monkeypatch.setattr(_capture, "_snapshot", lambda value: None)
    at_once = _record("at once", CORPUS)
    assert len(deferred) == len(at_once) == len(CORPUS)
    # Same RunCommand ids (same ArgumentSet digests) and same params, value for value.
    assert deferred == at_once
    assert len({command for command, _ in deferred}) == len(CORPUS)


@pytest.mark.parametrize(
    "value",
    [
        ["ok", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijklmnopqrst"],
        ["https://user:hunter2@example.com/db"],
        {"api_key": "abc"},
        {"password": 1},
        {1: "int key"},
        {"nested": [1, 2]},
        [[1, 2], [3]],
        (1, 2, 3),
        [1, float("nan")],
        [2**62],
        ["naïve"],
        ["x" * 41],
        list(range(_capture.SNAPSHOT_ITEMS + 1)),
        [],
    ],
    ids=lambda v: type(v).__name__,
)
def test_what_is_not_deferred(value: Any) -> None:
    captured = _capture.capture({"x": value})
    assert type(captured.encoded["x"]) is list  # encoded at once: a tree
    assert "arg.x" in captured.params


def test_secrets_inside_containers_are_still_redacted(client: Any) -> None:
    @pcs.tracked
    def connect(urls: list[str], settings: dict[str, Any]) -> int:
        return len(urls)

    connect(["https://user:hunter2@example.com/db"], {"token": "s3cr3t-value", "retries": 3})
    assert pcs.flush(timeout=60)
    (run,) = [r for r in pcs.runs(top_level=True, limit=10)
              if r.data.tags.get("pcs.entry_point") == "connect"]
    text = str(run.data.params) + str(run.run_command.argument_set.encoded())
    assert "hunter2" not in text
    assert "s3cr3t" not in text


@pcs.tracked
def grow(values: list[float]) -> int:
    values.append(99.0)
    return len(values)


def test_the_snapshot_is_taken_at_the_call_and_replays() -> None:
    values = [1.0, 2.0]
    assert grow(values) == 3
    assert pcs.flush(timeout=60)
    (run,) = [r for r in pcs.runs(limit=10) if r.data.tags.get("pcs.entry_point") == "grow"]
    assert run.data.params["arg.values"] == "[1.0, 2.0]"
    rerun = run.rerun()  # called again with the recorded list, not the grown one
    assert pcs.flush(timeout=60)
    assert rerun.data.params["arg.values"] == "[1.0, 2.0]"
    assert rerun.info.status == "FINISHED"
    assert rerun.return_value == 3


def test_the_bounds_keep_deferred_values_inline() -> None:
    worst_str = "x" * _capture.SNAPSHOT_STR
    cases = [
        [worst_str] * _capture.SNAPSHOT_ITEMS,
        [-2.2250738585072014e-308] * _capture.SNAPSHOT_ITEMS,
        [-(2**62) + 1] * _capture.SNAPSHOT_ITEMS,
        {f"{i:0{_capture.SNAPSHOT_STR}d}": worst_str for i in range(_capture.SNAPSHOT_ENTRIES)},
    ]
    for value in cases:
        assert _capture._snapshot(value) is not None
        size = len(_canon.canonical_bytes(_canon.encode(value)))
        assert size < _capture.MAX_INLINE_BYTES, size
