"""Journal integrity: damage stays local to the damaged bytes; only our own journals are read.

The journals here are written by real programs (a subprocess making tracked
calls while the store is locked, so nothing is delivered, then SIGKILLed);
the test damages the file's bytes and recovers, and a stock MlflowClient
counts what arrived.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import stored_runs
from mlflow.tracking import MlflowClient

import pcs
from pcs import _journal
from pcs._journal import Journal, JournalFile

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import pcs

    surrogate = sys.argv[2] == "surrogate"
    note = "odd \\ud800 note" if surrogate else "ok"

    @pcs.tracked
    def step(i, note="ok"):
        return i * 2

    name = "doomed \\udfff run" if surrogate else "doomed"
    with pcs.run(name, tags={"t": note}, params={"p": note}) as r:
        for i in range(int(sys.argv[1])):
            step(i, note if i % 7 == 0 else "ok")
        print(r.identifier, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _killed_child(tmp_path: Path, tracking_uri: str, calls: int = 300,
                  kind: str = "plain") -> tuple[str, Path]:
    """Run CHILD while the store is locked (nothing reaches it), SIGKILLed: (root id, journal)."""
    db = sqlite3.connect(tracking_uri[len("sqlite:///"):], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(calls), kind], cwd=tmp_path,
            env={**os.environ, "PCS_SQLITE_BUSY_TIMEOUT_MS": "50"},
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert done.returncode == -signal.SIGKILL, done.stderr
    (journal,) = (tmp_path / ".pcs" / "journal").glob("*.jsonl")
    return done.stdout.split()[-1], journal


def _lines(data: bytes) -> list[tuple[int, int, list[list[object]]]]:
    """(start, end, records) of each line of an intact journal, read independently of pcs."""
    out = []
    data = data.rstrip(b"\0")
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos) + 1
        _crc, _first, payload = data[pos:end].split(b" ", 2)
        line = json.loads(payload)
        out.append((pos, end, line if isinstance(line[0], list) else [line]))
        pos = end
    return out


def _step_ids(client: MlflowClient) -> set[str]:
    return {r.info.run_id for r in stored_runs(client).values()  # type: ignore[attr-defined]
            if r.data.tags.get("pcs.entry_point") == "step"}  # type: ignore[attr-defined]


def _damage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]


def _flip(data: bytearray, lines: list[tuple[int, int, list[list[object]]]]) -> tuple[int, int]:
    start = lines[len(lines) // 2][0]
    data[start + 40] ^= 0x04
    return start, start + 41


def _zero_page(data: bytearray, lines: list[tuple[int, int, list[list[object]]]]
               ) -> tuple[int, int]:
    data[8192:12288] = bytes(4096)
    return 8192, 12288


def _garbage(data: bytearray, lines: list[tuple[int, int, list[list[object]]]]
             ) -> tuple[int, int]:
    at = lines[len(lines) // 2][0]
    data[at:at] = b"this is {not] a journal line \xff\xfe\n"
    return at, at  # inside no line: nothing lost


def _header(data: bytearray, lines: list[tuple[int, int, list[list[object]]]]
            ) -> tuple[int, int]:
    data[20] ^= 0x01
    return 20, 21


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_flip, _zero_page, _garbage, _header],
                         ids=["bit-flip", "zeroed-page", "garbage-line", "damaged-header"])
def test_damage_loses_only_the_damaged_records(
    damage: Callable[[bytearray, list[tuple[int, int, list[list[object]]]]], tuple[int, int]],
    client: MlflowClient, tracking_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    root, journal = _killed_child(tmp_path, tracking_uri)
    data = bytearray(journal.read_bytes())
    lines = _lines(bytes(data))
    first, last = damage(data, lines)
    journal.write_bytes(bytes(data))
    hit = [(s, e, recs) for s, e, recs in lines if s < last and first < e]
    intact = [recs for s, e, recs in lines if not (s < last and first < e)]
    expected = {str(r[1]) for recs in intact for r in recs if r[0] == "T"}
    lost = 0 if damage is _header else sum(len(recs) for _, _, recs in hit)

    with caplog.at_level(logging.WARNING, logger="pcs"):
        # A damaged header no longer says which store its records are for: only when told.
        report = pcs.recover(store=tracking_uri if damage is _header else None)
    assert report.journals == [str(journal)]
    assert _step_ids(client) == expected  # every intact record, none of the damaged ones
    assert len(expected) >= (280 if damage is _zero_page else 297)
    assert client.get_run(root).info.status == "KILLED"
    (warning,) = _damage_warnings(caplog)
    offset = hit[0][0] if hit else first
    assert f"1 damaged span(s) at byte offset(s) {offset} " in warning
    assert ("(the header)" if damage is _header else f"({lost} record(s) lost)") in warning
    quarantine = Path(str(journal) + ".quarantine")
    assert stat.S_IMODE(quarantine.stat().st_mode) == 0o600
    (kept,) = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert kept["offset"] == offset
    assert not journal.exists()  # delivered; the damaged bytes stay in the quarantine file


@pytest.mark.slow
def test_truncated_tail_keeps_every_complete_line(
    client: MlflowClient, tracking_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    _root, journal = _killed_child(tmp_path, tracking_uri)
    lines = _lines(journal.read_bytes())
    start, end, _torn = lines[-1]
    with open(journal, "r+b") as fh:
        fh.truncate(start + (end - start) // 2)
    expected = {str(r[1]) for _, _, recs in lines[:-1] for r in recs if r[0] == "T"}
    with caplog.at_level(logging.WARNING, logger="pcs"):
        report = pcs.recover()
    assert report.journals == [str(journal)]
    assert _step_ids(client) == expected
    (warning,) = _damage_warnings(caplog)
    assert f"1 damaged span(s) at byte offset(s) {start} (a torn" in warning
    assert Path(str(journal) + ".quarantine").exists()


@pytest.mark.slow
def test_lone_surrogates_survive_sigkill_in_the_journal(
    tracking_uri: str, tmp_path: Path,
) -> None:
    root, journal = _killed_child(tmp_path, tracking_uri, calls=500, kind="surrogate")
    assert b"\xed\xbf\xbf" in journal.read_bytes()  # the run name's lone surrogate, as is
    (found,) = _journal.dead_journals(journal.parent)
    try:
        records = [record for _new, record in found.records()]
    finally:
        found.release()
    assert found.damage == []
    (start,) = [r for r in records if r[0] == "R"]
    assert start[1] == root
    assert start[3] == "doomed \udfff run"
    assert start[5]["t"] == start[6]["p"] == "odd \ud800 note"
    assert len([r for r in records if r[0] == "T"]) == 500


@pytest.mark.slow
def test_lone_surrogates_are_delivered(
    client: MlflowClient, tracking_uri: str, tmp_path: Path,
) -> None:
    root, journal = _killed_child(tmp_path, tracking_uri, calls=500, kind="surrogate")
    report = pcs.recover()
    assert report.journals == [str(journal)]
    assert len(_step_ids(client)) == 500
    stored = client.get_run(root)
    assert stored.info.status == "KILLED"
    assert "doomed" in stored.data.tags["mlflow.runName"]
    assert not Path(str(journal) + ".quarantine").exists()


@pytest.mark.slow
@pytest.mark.parametrize("loosen", ["file-0666", "other-owner", "directory-0777", "done-0666",
                                    "symlink"])
def test_journals_not_written_by_us_are_refused(
    loosen: str, client: MlflowClient, tracking_uri: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _root, journal = _killed_child(tmp_path, tracking_uri, calls=10)
    directory = journal.parent
    done = Path(str(journal) + ".done")
    target = journal
    if loosen == "file-0666":
        os.chmod(journal, 0o666)
        words, fix = "writable by other users (mode 666)", "chmod 600"
    elif loosen == "other-owner":
        os.chown(journal, 12345, -1)
        words, fix = "belongs to another user (uid 12345", "Recover it as its owner"
    elif loosen == "directory-0777":
        os.chmod(directory, 0o777)
        target = directory
        words, fix = "writable by other users (mode 777)", f"chmod 700 {directory}"
    elif loosen == "done-0666":
        done.write_text("5\n")
        os.chmod(done, 0o666)
        words, fix = "writable by other users (mode 666)", f"Remove {done}"
    else:
        moved = tmp_path / "elsewhere.jsonl"
        journal.rename(moved)
        journal.symlink_to(moved)
        words, fix = "cannot be opened as a file of its own", "Remove it"
    with caplog.at_level(logging.WARNING, logger="pcs"):
        report = pcs.recover()
    assert report.journals == []
    assert _step_ids(client) == set()
    (warning,) = [r.getMessage() for r in caplog.records if "not recovering" in r.getMessage()]
    assert str(target) in warning
    assert words in warning
    assert fix in warning
    assert journal.exists()  # refused, never deleted


def test_journal_files_and_folder_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        journal = Journal(tmp_path / "deep" / "journal", "sqlite:///x.db")
        journal.append([["G", "r1", {"a": "1"}]], sync=True)
        journal.mark_done(1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(journal.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(journal.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(journal.path) + ".done").st_mode) == 0o600
    assert not list(journal.directory.glob("*.new"))
    journal.close(delete=True)


def test_a_loose_journal_folder_of_ours_is_made_owner_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    os.chmod(directory, 0o775)
    journal = Journal(directory, "sqlite:///x.db")
    with caplog.at_level(logging.WARNING, logger="pcs"):
        journal.append([["G", "r1", {}]], sync=True)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert any("made it owner-only" in r.getMessage() for r in caplog.records)
    journal.close(delete=True)


def test_a_shared_folder_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, 0o1777)
    journal = Journal(directory, "sqlite:///x.db")
    with pytest.raises(PermissionError, match="shared with other users"):
        journal.append([["G", "r1", {}]], sync=True)
    assert list(directory.iterdir()) == []


def _recovered(path: Path) -> tuple[list[list[object]], JournalFile]:
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    found = JournalFile(path, {}, fd)
    records = [record for _new, record in found.records()]
    found.release()
    return records, found


def test_lone_surrogates_round_trip_through_the_journal(tmp_path: Path) -> None:
    records: list[list[Any]] = [
        ["R", "r1", "0", "name \ud800 run", 1, {"tag \udfff": "v \ud83d"}, {"p": "\udc80"}],
        ["G", "r1", {"k": "ok"}],
        ["P", "r1", {"\ud800": "\ud800\udfff"}],
    ]
    journal = Journal(tmp_path, "sqlite:///x.db")
    journal.append(records[:1], sync=True)
    journal.append(records[1:], sync=True)
    assert journal.read(1, 3) == records
    journal.close(delete=False)
    got, found = _recovered(journal.path)
    assert got == records
    assert found.damage == []


def test_resyncs_inside_damaged_bytes(tmp_path: Path) -> None:
    """A lost newline, or zeros just before a line, costs only the bytes they touch."""
    journal = Journal(tmp_path, "sqlite:///x.db")
    for i in range(1, 7):
        journal.append([["G", f"r{i}", {"i": str(i)}]], sync=True)
    journal.close(delete=False)
    data = bytearray(journal.path.read_bytes())
    lines = _lines(bytes(data))
    data[lines[2][1] - 1] = ord("x")  # the newline ending record 2: record 2 is lost
    data[lines[5][0]:lines[5][0]] = b"\0" * 5  # zeros before record 5's line: it is kept
    journal.path.write_bytes(bytes(data))
    got, found = _recovered(journal.path)
    assert [r[1] for r in got] == ["r1", "r3", "r4", "r5", "r6"]
    assert [(d.offset, d.length, d.records) for d in found.damage] == [
        (lines[2][0], lines[2][1] - lines[2][0], 1), (lines[5][0], 5, 0)]
    assert "2 damaged span(s)" in found.damage_report()
    assert "(1 record(s) lost)" in found.damage_report()


def test_version_1_journals_are_still_read(tmp_path: Path) -> None:
    header = {"format": "pcs-journal/1", "host": "h", "pid": 1, "start": "1",
              "tracking_uri": "sqlite:///x.db", "created": 0.0}
    path = tmp_path / "h-1-1-0.jsonl"
    path.write_bytes(
        json.dumps(["H", header]).encode() + b"\n"
        + b'["G","r1",{}]\n'
        + b'[["T","r2","0"],["E","r2","FINISHED",1]]\n'
        + b"garbage\n"
        + b'["P","r3",{}]\n' + bytes(100)
    )
    got, found = _recovered(path)
    assert [r[0] for r in got] == ["G", "T", "E", "P"]
    assert [d.offset for d in found.damage] == [path.read_bytes().index(b"garbage")]
