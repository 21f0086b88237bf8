"""Journal segments: a long-running process's journal does not grow without end on disk.

Once a segment holds ``PCS_JOURNAL_SEGMENT_MB`` and all of it is delivered, the
process goes on in a new file and removes the old one; the new header names the
runs still open, so a process killed later still has them reaped (never RUNNING)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pcs
from pcs._journal import SUFFIX, Journal
from pcs._journal.format import read_header

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import pcs

    @pcs.tracked
    def step(i, note):
        return i * 2

    journals = Path(".pcs/journal")
    most = 0
    with pcs.run("long-lived") as r:
        print(r.identifier, flush=True)
        for i in range(int(sys.argv[1])):
            step(i, "n" * 40)
            if i % 100 == 99:
                pcs.flush()  # all delivered: the next record may begin a new segment
                most = max(most, len(list(journals.glob("*.jsonl"))))
        print(most, [p.name for p in journals.glob("*.jsonl")][0], flush=True)
        if sys.argv[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _db(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///"))


def _rows(uri: str, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(_db(uri)) as db:
        return list(db.execute(sql))


def _child(tmp_path: Path, calls: int, how: str, **env: str) -> tuple[str, int, str]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(calls), how], cwd=tmp_path,
        env={**os.environ, "PCS_JOURNAL_SEGMENT_MB": "0.03", **env},
        capture_output=True, text=True, timeout=300, check=False,
    )
    expected = -signal.SIGKILL if how == "kill" else 0
    assert proc.returncode == expected, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    root, most, current = proc.stdout.split()
    return root, int(most), current


def test_a_full_delivered_segment_is_replaced_by_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PCS_JOURNAL_SEGMENT_MB", "0.01")  # ~10 KB
    journal = Journal(tmp_path / "journal", "sqlite:////nowhere/mlflow.db")
    journal.append([["R", "root", "exp", "root", 1], ["T", "call-1", "k", 2]], True)
    journal.append([["E", "call-1", "FINISHED", 3]], True)
    seq = 3
    while not journal.full:
        seq += 1
        journal.append([["M", "root", [["loss", 0.5, seq, 0]]]], True)
    first_path, before = journal.path, journal.written
    journal.mark_done(seq)
    journal.rotate()
    assert not first_path.exists()
    assert not Path(str(first_path) + ".done").exists()
    assert journal.path != first_path
    assert journal.path.name.endswith(f"s1{SUFFIX}")
    fd = os.open(journal.path, os.O_RDONLY)
    try:
        header = read_header(fd)
    finally:
        os.close(fd)
    assert header is not None
    assert header["segment"] == 1
    assert header["first"] == seq + 1
    assert header["open"] == ["root"]  # call-1 ended; the root is still open
    assert journal.written > before  # counted across segments
    journal.append([["E", "root", "FINISHED", 9]], True)
    assert journal.read(seq + 1, 1) == [["E", "root", "FINISHED", 9]]  # numbers go on
    journal.close(delete=True)
    assert not list((tmp_path / "journal").glob(f"*{SUFFIX}"))


def test_segments_only_for_sqlite_stores(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCS_JOURNAL_SEGMENT_MB", "0.01")
    journal = Journal(tmp_path / "journal", "http://127.0.0.1:5000")
    journal.append([["M", "r", [["loss", 0.5, 1, 0]]] for _ in range(500)], True)
    assert not journal.full  # a server store's recovery needs each run's start record
    journal.close(delete=True)


@pytest.mark.parametrize("delivery", ["thread", "agent"])
def test_a_process_killed_after_rotations_has_its_open_run_reaped(
    tracking_uri: str, tmp_path: Path, delivery: str
) -> None:
    root, most, current = _child(tmp_path, 1_500, "kill", PCS_DELIVERY=delivery,
                                 PCS_AGENT_IDLE_SECONDS="3")
    journals = tmp_path / ".pcs" / "journal"
    assert most == 1  # one segment at a time: the delivered ones were removed
    assert "s" in current.rsplit("-", 1)[1], current  # <id>s<n>: it rotated (ids are hex)
    if delivery == "thread":
        left = sorted(journals.glob(f"*{SUFFIX}"))
        assert [p.name for p in left] == [current]
        with open(left[0], "rb") as fh:
            header = json.loads(fh.readline().split(b" ", 2)[2])[1]
        assert root in header["open"]  # started two segments ago, still open
        report = pcs.recover(journals)
        assert root in report.killed_runs
    else:  # the agent finds the dead owner and reaps its open run itself
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = _rows(tracking_uri, f"SELECT status FROM runs WHERE run_uuid='{root}'")
            if status and status[0][0] == "KILLED":
                break
            time.sleep(0.2)
    assert _rows(tracking_uri, f"SELECT status FROM runs WHERE run_uuid='{root}'") == \
        [("KILLED",)]
    steps = _rows(tracking_uri, "SELECT status, count(*) FROM runs WHERE name LIKE 'step%' "
                                "GROUP BY status")
    assert steps == [("FINISHED", 1_500)]
    assert _rows(tracking_uri, "SELECT count(*) FROM runs WHERE status='RUNNING'") == [(0,)]


@pytest.mark.parametrize("delivery", ["thread", "agent"])
def test_a_process_that_ends_leaves_no_segment(
    tracking_uri: str, tmp_path: Path, delivery: str
) -> None:
    root, most, current = _child(tmp_path, 1_000, "end", PCS_DELIVERY=delivery,
                                 PCS_EXIT_WAIT="1", PCS_AGENT_IDLE_SECONDS="3")
    assert most == 1
    assert "s" in current.rsplit("-", 1)[1], current
    assert _rows(tracking_uri, f"SELECT status FROM runs WHERE run_uuid='{root}'") == \
        [("FINISHED",)]
    assert _rows(tracking_uri, "SELECT count(*) FROM runs WHERE status='FINISHED'") == \
        [(1_001,)]
    assert not list((tmp_path / ".pcs" / "journal").glob(f"*{SUFFIX}"))


KILLED_WHILE_ROTATING = textwrap.dedent(
    """
    import os, signal
    from pathlib import Path
    import pcs

    # The crash being simulated: the process dies after its new segment exists and
    # before the first one is removed (that removal is skipped here).
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        stem = self.name.split(".jsonl")[0]
        if self.parent.name == "journal" and "s" not in stem.rsplit("-", 1)[1]:
            return None
        return real_unlink(self, missing_ok=missing_ok)

    Path.unlink = unlink

    @pcs.tracked
    def step(i, note):
        return i

    journals = Path(".pcs/journal")
    with pcs.run("root") as root:
        with pcs.run("inner") as inner:  # starts in the first segment
            i = 0
            while not list(journals.glob("*s1.jsonl")):
                step(i, "n" * 40)
                i += 1
                if i % 50 == 0:
                    pcs.flush()
        # ends in the second segment
        pcs.flush()
        print(root.identifier, inner.identifier, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_process_killed_while_rotating_reaps_only_what_is_open(
    tracking_uri: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_ROTATING], cwd=tmp_path,
        env={**os.environ, "PCS_JOURNAL_SEGMENT_MB": "0.03", "PCS_DELIVERY": "thread"},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    root, inner = proc.stdout.split()
    journals = tmp_path / ".pcs" / "journal"
    assert len(list(journals.glob(f"*{SUFFIX}"))) == 2  # both segments were left
    report = pcs.recover(journals)
    assert report.killed_runs == [root]
    assert _rows(tracking_uri, f"SELECT status FROM runs WHERE run_uuid='{inner}'") == \
        [("FINISHED",)]
    assert _rows(tracking_uri, f"SELECT status FROM runs WHERE run_uuid='{root}'") == \
        [("KILLED",)]


def test_a_journal_name_is_built_and_read_back_in_one_place() -> None:
    from pcs._journal.format import journal_name, parse_name

    for host in ("box", "build-host-7"):
        for segment in (0, 1, 12):
            name = journal_name(host, 4242, "1712.5", "7f3a9c", segment)
            assert parse_name(name) == (host, 4242, "1712.5", "7f3a9c", segment)
    assert journal_name("h", 1, "2", "ab", 0) == "h-1-2-ab.jsonl"
    assert journal_name("h", 1, "2", "ab", 3) == "h-1-2-abs3.jsonl"
    for other in ("notes.jsonl", "h-x-2-ab.jsonl", "h-1-2-absx.jsonl"):
        assert parse_name(other) is None
