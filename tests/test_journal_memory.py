"""A journal's memory stays bounded however long it grows: its writer maps only the part
from the page of the next write on, and the delivery agent only the part it has not read."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pcs._journal import Journal, writer
from pcs._journal.format import numbered
from pcs._store import agent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/self/smaps")

SMALL = 64 * 1024


def _mapped_bytes(path: Path) -> int:
    """The total size of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, ours = 0, False
    target = str(path)
    with open("/proc/self/smaps") as fh:
        for text in fh:
            fields = text.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's line
                ours = len(fields) >= 6 and fields[5] == target
            elif ours and fields[0] == "Size:":
                total += int(fields[1]) * 1024
    return total


def _records(count: int) -> list[list[object]]:
    return [["M", f"run-{i}", [["loss", i / 7, i, 0]], "x" * (i % 90)] for i in range(count)]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "CHUNK", SMALL)
    monkeypatch.setattr(agent, "_WINDOW_SLACK", SMALL, raising=False)


def test_the_writer_maps_a_window_not_the_whole_journal(
    tmp_path: Path, small_chunks: None
) -> None:
    journal = Journal(tmp_path / "journal", "sqlite:////nowhere/mlflow.db")
    wanted = _records(6_000)
    for record in wanted:
        journal.append([record], True)
    assert journal.written > 8 * SMALL  # the file is many windows long
    assert 0 < _mapped_bytes(journal.path) <= 2 * SMALL + 4096
    # Every record is still in the file: read back (the spill path) and parsed whole.
    assert journal.read(1, len(wanted)) == wanted
    assert journal.read(5_990, 5) == wanted[5_989:5_994]
    data = journal.path.read_bytes()
    assert [r for _, r in numbered(data, journal.written, [])] == wanted
    journal.close(delete=False)
    assert journal.path.stat().st_size == len(data.rstrip(b"\0"))  # the zeroed tail trimmed


def test_a_kept_journal_is_not_shortened_under_an_agent(
    tmp_path: Path, small_chunks: None
) -> None:
    """An agent may have the file mapped past what was written: a kept journal closed with
    ``trim=False`` keeps its size (a read past a shortened file's end is a SIGBUS)."""
    journal = Journal(tmp_path / "journal", "sqlite:////nowhere/mlflow.db")
    journal.append(_records(10), True)
    size = journal.path.stat().st_size
    journal.close(delete=False, trim=False)
    assert journal.path.stat().st_size == size > journal.written


def test_the_agent_maps_only_what_it_has_not_read(tmp_path: Path, small_chunks: None) -> None:
    journal = Journal(tmp_path / "journal", "sqlite:////nowhere/mlflow.db")
    wanted = _records(3_000)
    # A line longer than a window, between ordinary ones: it crosses mappings.
    wanted.insert(1_500, ["P", "run-big", {"x": "y" * (3 * SMALL)}])
    journal.append([wanted[0]], True)
    tail = agent._Tail(journal.path, os.open(journal.path, os.O_RDONLY))
    out: list[list[object]] = []
    written = 1
    while len(out) < len(wanted):  # the program writes while the agent reads
        for record in wanted[written:written + 250]:
            journal.append([record], True)
        written = min(written + 250, len(wanted))
        tail.read(100, out)
        assert tail.mapped is not None
        # From about where it reads (one slack and one read behind at most) to the end.
        assert tail.base <= tail.cursor < tail.base + 5 * SMALL
        assert len(tail.mapped) == tail.size - tail.base
    assert out == wanted
    assert journal.written > 6 * SMALL
    tail.close()
    journal.close(delete=True)
