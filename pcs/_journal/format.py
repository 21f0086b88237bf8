"""The bytes of a journal file, shared by its writer and its readers.

File names, the checksummed line (format ``pcs-journal/2``), the header, and
reading the lines of a journal back: numbered, verified, every damaged span
isolated and described (:class:`Damage`). The format is described in
:mod:`pcs._journal`.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

SUFFIX = ".jsonl"
DONE_SUFFIX = ".done"
QUARANTINE_SUFFIX = ".quarantine"
#: A journal being created: locked and headed before it is renamed to its ``.jsonl`` name.
NEW_SUFFIX = ".new"
#: A journal's file name: ``<host>-<pid>-<start>-<id><segment><SUFFIX>``, the segment
#: ``s<n>`` from the second segment on (see :func:`journal_name`, :func:`parse_name`).
HEADER = "pcs-journal/2"
#: The format before checksums: still read, never written.
HEADER_V1 = "pcs-journal/1"
# The fallback for what orjson refuses (a lone surrogate, an int beyond 64 bits): the
# stdlib's JSON, its surrogates written as themselves ("surrogatepass"), never as \uXXXX
# escapes — a str holding "\ud800\udfff" (two code points) must not come back as "\U000103ff".
_FALLBACK = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr)
_dumps = orjson.dumps
_crc32 = zlib.crc32


def journal_name(host: str, pid: int, start: str, ident: str, segment: int) -> str:
    """The file name of a journal's ``segment`` (0: its first)."""
    mark = f"s{segment}" if segment else ""
    return f"{host}-{pid}-{start}-{ident}{mark}{SUFFIX}"


def parse_name(name: str) -> tuple[str, int, str, str, int] | None:
    """``(host, pid, start, id, segment)`` of a :func:`journal_name`; None for another name."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    parts = stem.rsplit("-", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    host, pid, start, last = parts
    ident, _, number = last.partition("s")
    if number and not number.isdigit():
        return None
    return host, int(pid), start, ident, int(number) if number else 0


#: The start of a line: checksum and first record number.
PREFIX = re.compile(rb"([0-9a-f]{8}) ([0-9]+) ")
#: Bytes read per step when looking for the end of the written part of a mapped file.
STEP = 64 * 1024
#: How journal files are opened: never through a symbolic link, closed on exec.
OPEN_FLAGS = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


class DoneLog:
    """A journal's ``.done`` file: the number of the last record that reached the store,
    appended (one number per line) by whoever delivers — the owner's writer thread, the
    delivery agent — and read back by the owner (``latest``, its tail only) and by
    recovery (:func:`acknowledged`, the whole file)."""

    def __init__(self, journal: str | os.PathLike[str]) -> None:
        self.path = os.fspath(journal) + DONE_SUFFIX
        self._append_fd: int | None = None
        self._read_fd: int | None = None

    def append(self, seq: int) -> None:
        """Record that every record up to ``seq`` reached the store."""
        if self._append_fd is None:
            self._append_fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND |
                                      OPEN_FLAGS, 0o600)
        os.write(self._append_fd, b"%d\n" % seq)

    def latest(self) -> int:
        """The highest complete number in the file's last bytes (0 while there is none)."""
        fd = self._read_fd
        if fd is None:
            try:
                fd = self._read_fd = os.open(self.path, os.O_RDONLY | OPEN_FLAGS)
            except FileNotFoundError:
                return 0
        size = os.fstat(fd).st_size
        start = max(0, size - 64)
        pieces = os.pread(fd, 64, start).split(b"\n")
        # Complete lines only: not the last piece (no newline yet), nor a first piece the
        # window cut (a number's tail).
        complete = pieces[:-1] if start == 0 else pieces[1:-1]
        return max((int(p) for p in complete if p.isdigit()), default=0)

    def close(self) -> None:
        for fd in (self._append_fd, self._read_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:  # pragma: no cover - a descriptor closed under us
                    pass
        self._append_fd = self._read_fd = None


def acknowledged(journal: str | os.PathLike[str]) -> int:
    """The highest number in a journal's ``.done`` file (0 if it has none)."""
    try:
        with open(os.fspath(journal) + DONE_SUFFIX, "rb") as fh:
            return max((int(raw) for raw in fh.read().split() if raw.isdigit()), default=0)
    except FileNotFoundError:
        return 0


def line(seq: int, obj: Any) -> bytes:
    """One journal line holding ``obj``, whose first record is number ``seq``."""
    try:
        data = _dumps(obj)
    except TypeError:  # orjson.JSONEncodeError
        data = _FALLBACK.encode(obj).encode("utf-8", "surrogatepass")
    number = b"%d " % seq
    return b"%08x %b%b\n" % (_crc32(data, _crc32(number)), number, data)


def verify(line: bytes) -> tuple[int, bytes] | None:
    """(first record number, JSON) of a line (without its newline) that verifies, else None."""
    match = PREFIX.match(line)
    if match is None or _crc32(memoryview(line)[9:]) != int(match[1], 16):
        return None
    return int(match[2]), line[match.end():]


def loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # a line of the fallback (or of format 1) with a surrogate
        return json.loads(data.decode("utf-8", "surrogatepass"))


def read_header(fd: int) -> dict[str, Any] | None:
    """The owner's header of a journal (either format), or None if it does not verify."""
    first = os.pread(fd, 64 * 1024, 0).split(b"\n", 1)[0]
    found = verify(first)
    try:
        if found is not None and found[0] == 0:
            record = loads(found[1])
            version = HEADER
        elif first.startswith(b'["H",'):
            record = json.loads(first)
            version = HEADER_V1
        else:
            return None
    except ValueError:
        return None
    if isinstance(record, list) and len(record) == 2 and record[0] == "H":
        header = record[1]
        if isinstance(header, dict) and header.get("format") == version:
            return header
    return None


@dataclass
class Damage:
    """Bytes of a journal that do not verify, as a reader found them."""

    #: where the damaged bytes start in the journal file
    offset: int
    #: how many bytes (the quarantine file keeps exactly these)
    length: int
    #: "damaged header", "damaged line", "torn last line" or "unreadable line"
    reason: str
    #: records lost with them, when the numbers of the lines around them tell (else None)
    records: int | None = None


def describe(damage: list[Damage]) -> str:
    """E.g. '2 damaged span(s) at byte offset(s) 0, 8192 (7 record(s) lost, and the header)'."""
    offsets = ", ".join(str(d.offset) for d in damage[:20])
    if len(damage) > 20:
        offsets += ", ..."
    lost = sum(d.records or 0 for d in damage)
    header = any(d.reason == "damaged header" for d in damage)
    unknown = any(d.records is None and d.reason != "damaged header" for d in damage)
    what = [f"{lost} record(s) lost"] if lost or not (header or unknown) else []
    if header:
        what.append("the header")
    if unknown:
        what.append("a torn or unreadable end whose records are unknown")
    return f"{len(damage)} damaged span(s) at byte offset(s) {offsets} ({', and '.join(what)})"


def numbered(
    buffer: bytes | mmap.mmap, end: int, damage: list[Damage], first: int = 1
) -> Iterator[tuple[int, list[Any]]]:
    """(number, record) for every intact record of a journal numbered ``first`` or more.

    Damaged bytes are appended to ``damage``, with the number of records they
    held when the lines around them tell. Lines wholly before ``first`` are
    verified but not decoded.
    """
    head = buffer[:STEP].split(b"\n", 1)[0]
    if head.startswith(b'["H",') and verify(head) is None:
        yield from _numbered_v1(buffer, end, damage, first)
        return
    expected: int | None = 1  # the number the next line should start with, if known
    held: tuple[int, int, bytes] | None = None  # a line whose records may all be < first
    mark = 0  # damage found before the previous line
    for offset, seq, data in _lines(buffer, end, damage):
        if offset == 0 and seq == 0:
            continue  # the header
        gap = len(damage) > mark
        if held is not None:
            if seq > first or gap:  # it may hold wanted records, or we must know its end
                records = _decoded(*held, damage)
                expected = held[1] + len(records) if records is not None else held[1]
                if records:
                    yield from ((n, r) for n, r in enumerate(records, held[1]) if n >= first)
            else:
                expected = seq
            held = None
        if gap and expected is not None:
            damage[-1].records = max(0, seq - expected) + (damage[-1].records or 0)
        mark = len(damage)
        if seq >= first:
            records = _decoded(offset, seq, data, damage)
            expected = seq + len(records) if records is not None else seq
            if records:
                yield from enumerate(records, seq)
        else:
            held = (offset, seq, data)
    if held is not None:
        records = _decoded(*held, damage)
        if records:
            yield from ((n, r) for n, r in enumerate(records, held[1]) if n >= first)


def _decoded(
    offset: int, seq: int, data: bytes, damage: list[Damage]
) -> list[list[Any]] | None:
    """The records of a verified line (None, and a damage entry, if it is not a record)."""
    try:
        line = loads(data)
    except ValueError:
        line = None
    if not isinstance(line, list) or not line:
        damage.append(Damage(offset, len(data), "unreadable line"))
        return None
    return line if isinstance(line[0], list) else [line]


def _lines(
    buffer: bytes | mmap.mmap, end: int, damage: list[Damage]
) -> Iterator[tuple[int, int, bytes]]:
    """(offset, first record number, JSON) of every line up to ``end`` that verifies.

    Bytes that do not verify are added to ``damage`` (adjacent ones as one
    span); after them, reading resumes at the first line that verifies, even
    one that starts in the middle of the damaged bytes (a lost newline, a
    zeroed page ending just before it).
    """
    pos = 0
    while pos < end:
        newline = buffer.find(b"\n", pos, end)
        stop = end if newline < 0 else newline
        segment = buffer[pos:stop]
        found = verify(segment)
        skip = 0
        if found is None:
            for match in PREFIX.finditer(segment, 1):
                found = verify(segment[match.start():])
                if found is not None:
                    skip = match.start()
                    break
            else:
                skip = stop + 1 - pos if newline >= 0 else stop - pos
        if skip:
            reason = ("damaged header" if pos == 0 else
                      "torn last line" if newline < 0 and found is None else "damaged line")
            _add(damage, Damage(pos, min(skip, end - pos), reason))
        if found is not None:
            yield pos + skip, found[0], found[1]
        pos = stop + 1


def _add(damage: list[Damage], new: Damage) -> None:
    """Append ``new``, merged with the previous span if they touch."""
    last = damage[-1] if damage else None
    if last is None or last.offset + last.length < new.offset or \
            "unreadable" in (last.reason + new.reason):
        damage.append(new)
        return
    last.length = new.offset + new.length - last.offset
    if last.offset != 0 and new.reason == "torn last line":
        last.reason = new.reason


def _numbered_v1(
    buffer: bytes | mmap.mmap, end: int, damage: list[Damage], first: int
) -> Iterator[tuple[int, list[Any]]]:
    """Records of a ``pcs-journal/1`` file: no checksums, numbered by counting."""
    seq = 0
    pos = buffer.find(b"\n", 0, end) + 1  # after the header
    while 0 < pos < end:
        newline = buffer.find(b"\n", pos, end)
        stop = end if newline < 0 else newline
        raw = buffer[pos:stop]
        if newline < 0:
            _add(damage, Damage(pos, stop - pos, "torn last line"))
            return
        try:
            line = json.loads(raw)
        except ValueError:
            _add(damage, Damage(pos, stop + 1 - pos, "damaged line"))
            pos = stop + 1
            continue
        records = line if isinstance(line, list) and line and isinstance(line[0], list) \
            else [line]
        for record in records:
            seq += 1
            if seq >= first:
                yield seq, record
        pos = stop + 1
