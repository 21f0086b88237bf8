"""The crash-safe journal: every record is on disk before the caller goes on.

Each process appends its records to its own file
``<dir>/<host>-<pid>-<start>-<id>.jsonl``, which it maps into memory
(``MAP_SHARED``): an append is a memory copy — no system call, no fsync, no GIL
release on the hot path — and the kernel keeps the bytes when the process is
SIGKILLed. The mapped file grows in steps, so its tail is zero bytes until
written. Each sync writes one line (format ``pcs-journal/2``)::

    <crc32, 8 hex digits> <number of the line's first record> <JSON>\\n

where the JSON is a single record ``[tag, ...]`` or the list of the records
buffered since the previous sync (a tracked call's start and end, say),
numbered in order from the line's first number; the checksum (``zlib.crc32``)
covers every byte between the space after it and the newline. The first line
(number 0) is a header ``["H", {...}]`` naming the owner (host, pid, process
start time, tracking URI). The writer appends the number of the last record it
has delivered to MLflow to ``<file>.done`` after each batch.

Damage stays local to the damaged bytes: a reader skips what does not verify
(a flipped bit, a zeroed page, a torn or truncated line, inserted garbage),
resynchronizes at the next line that verifies — numbering never depends on
counting earlier lines — and reports the damaged bytes (:class:`Damage`);
recovery keeps them in ``<file>.quarantine`` and logs one warning per journal.
Journals of format ``pcs-journal/1`` (no checksums) are still read.

Ownership is proven by an exclusive ``flock`` that the owner holds for its
lifetime: the kernel releases it when the process dies, however it dies. The
owner takes it before the file appears under its name (it is written as
``<file>.new`` and renamed once locked and headed). A journal whose lock can
be taken belongs to a dead process (checked again with host + pid + start
time, from the header or, if the header is damaged, from the file name); only
then is it recovered. Journals and their directory are owner-only (0600 and
0700): recovery refuses, with a warning saying how to fix it, a journal owned
by another user or writable by group or others, or one in such a directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import mmap
import os
import re
import socket
import stat
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pcs import settings

__all__ = [
    "Damage",
    "Journal",
    "JournalFile",
    "dead_journals",
    "default_directory",
    "process_start_time",
]

_log = logging.getLogger("pcs")

JOURNAL_DIR_ENV = settings.JOURNAL_DIR.name
#: The journal file grows in steps of this many bytes (mapped, zero-filled at the end).
CHUNK = 4 * 1024 * 1024
SUFFIX = ".jsonl"
DONE_SUFFIX = ".done"
QUARANTINE_SUFFIX = ".quarantine"
#: A journal being created: locked and headed before it is renamed to its ``.jsonl`` name.
NEW_SUFFIX = ".new"
HEADER = "pcs-journal/2"
#: The format before checksums: still read, never written.
HEADER_V1 = "pcs-journal/1"
# The fallback for what orjson refuses (a lone surrogate, an int beyond 64 bits): the
# stdlib's JSON, its surrogates written as themselves ("surrogatepass"), never as \uXXXX
# escapes — a str holding "\ud800\udfff" (two code points) must not come back as "\U000103ff".
_FALLBACK = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr)
_dumps = orjson.dumps
_crc32 = zlib.crc32
#: The start of a line: checksum and first record number.
_PREFIX = re.compile(rb"([0-9a-f]{8}) ([0-9]+) ")
#: Bytes read per step when looking for the end of the written part of a mapped file.
_STEP = 64 * 1024
_OPEN_FLAGS = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def _line(seq: int, obj: Any) -> bytes:
    """One journal line holding ``obj``, whose first record is number ``seq``."""
    try:
        data = _dumps(obj)
    except TypeError:  # orjson.JSONEncodeError
        data = _FALLBACK.encode(obj).encode("utf-8", "surrogatepass")
    number = b"%d " % seq
    return b"%08x %b%b\n" % (_crc32(data, _crc32(number)), number, data)


def _verify(line: bytes) -> tuple[int, bytes] | None:
    """(first record number, JSON) of a line (without its newline) that verifies, else None."""
    match = _PREFIX.match(line)
    if match is None or _crc32(memoryview(line)[9:]) != int(match[1], 16):
        return None
    return int(match[2]), line[match.end():]


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # a line of the fallback (or of format 1) with a surrogate
        return json.loads(data.decode("utf-8", "surrogatepass"))


def default_directory() -> Path:
    """``$PCS_JOURNAL_DIR``, else ``.pcs/journal`` in the working directory."""
    configured = settings.JOURNAL_DIR.get()
    return Path(configured) if configured else Path.cwd() / ".pcs" / "journal"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (clock ticks since boot), if knowable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat_line = fh.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat_line.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _reserve(fd: int, offset: int, length: int) -> None:
    """Allocate file blocks before they are mapped: a full disk raises OSError here,
    where pcs handles it, instead of SIGBUS on a later write through the mapping."""
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, offset + length)  # a filesystem without fallocate: a sparse file
    except AttributeError:  # pragma: no cover - a platform without posix_fallocate
        os.ftruncate(fd, offset + length)


def _loose(mode: int) -> bool:
    """Whether a file or directory mode lets group or others write."""
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def _prepare_directory(directory: Path) -> None:
    """Create the journal directory owner-only (0700); make an existing one of this user
    owner-only; refuse (PermissionError) one that other users may write into."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.stat(directory)
    if info.st_uid != os.geteuid():
        raise PermissionError(
            errno.EACCES,
            f"the journal directory belongs to another user (uid {info.st_uid}); set "
            f"{JOURNAL_DIR_ENV} to a directory of your own",
            str(directory),
        )
    if _loose(info.st_mode):
        if info.st_mode & stat.S_ISVTX:  # a shared directory such as /tmp: not pcs's own
            raise PermissionError(
                errno.EACCES,
                f"the journal directory is shared with other users (mode "
                f"{stat.S_IMODE(info.st_mode):o}); set {JOURNAL_DIR_ENV} to a directory of "
                "your own",
                str(directory),
            )
        os.chmod(directory, stat.S_IMODE(info.st_mode) & ~0o077)
        _log.warning(
            "pcs: the journal directory %s was writable by other users (mode %o); pcs made "
            "it owner-only (chmod 700), as journals are recovered only from such a directory.",
            directory, stat.S_IMODE(info.st_mode),
        )


class Journal:
    """The append-only journal of this process.

    Not thread-safe by itself: its one user, the :class:`~pcs._writer.Writer`,
    calls it only while holding the writer's lock (one lock per record, not two).
    """

    def __init__(self, directory: Path, tracking_uri: str) -> None:
        self.directory = directory
        self.tracking_uri = tracking_uri
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.start = process_start_time(self.pid) or str(time.time_ns())
        self.path = directory / f"{self.host}-{self.pid}-{self.start}-{id(self):x}{SUFFIX}"
        self._fd: int | None = None
        self._mm: mmap.mmap | None = None
        self._size = 0
        self._offset = 0
        self._seq = 0  # records written to the file so far
        self._buffer: list[list[Any]] = []
        self._done_fd: int | None = None
        #: set when a record could not be delivered: the file is kept at exit
        self.keep = False

    def _open(self) -> mmap.mmap:
        _prepare_directory(self.directory)
        # Locked and headed under a name recovery never looks at, then renamed: a journal
        # visible as ``*.jsonl`` is always either locked by its owner or complete.
        new = Path(str(self.path) + NEW_SUFFIX)
        fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _reserve(fd, 0, CHUNK)
            self._mm = mmap.mmap(fd, CHUNK, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._fd = fd
            self._size = CHUNK
            self._offset = 0
            header = {
                "format": HEADER,
                "host": self.host,
                "pid": self.pid,
                "start": self.start,
                "tracking_uri": self.tracking_uri,
                "created": time.time(),
            }
            self._put(_line(0, ["H", header]))
            os.rename(new, self.path)
        except BaseException:
            if self._mm is not None:
                self._mm.close()
                self._mm = None
            self._fd = None
            os.close(fd)
            new.unlink(missing_ok=True)
            raise
        return self._mm

    def _put(self, data: bytes) -> None:
        """Copy ``data`` into the mapped file: no system call, no GIL release."""
        mapped = self._mm if self._mm is not None else self._open()
        end = self._offset + len(data)
        if end > self._size:
            size = max(self._size * 2, end + CHUNK)
            if self._fd is not None:
                _reserve(self._fd, self._size, size - self._size)
            mapped.resize(size)
            self._size = size
        mapped[self._offset:end] = data
        self._offset = end

    def append(self, records: tuple[list[Any], ...] | list[list[Any]], sync: bool) -> None:
        """Add ``records``; with ``sync`` write everything buffered so far to the file.

        Callers sync before acknowledging (a tracked call returns, a run block
        starts) and the writer syncs before delivering, so every record that
        is acknowledged or visible in MLflow is in the file first.
        """
        self._buffer.extend(records)
        if sync:
            self.sync()

    def sync(self) -> None:
        """Copy the buffered records into the mapped file."""
        buffer = self._buffer
        if not buffer:
            return
        # One line per sync: the record, or the list of the records buffered since the last.
        count = len(buffer)
        self._put(_line(self._seq + 1, buffer[0] if count == 1 else buffer))
        self._seq += count
        buffer.clear()

    def read(self, first: int, count: int) -> list[list[Any]]:
        """Records ``first`` .. ``first + count - 1`` back from the file."""
        self.sync()
        if self._mm is None:
            return []
        out: list[list[Any]] = []
        damage: list[Damage] = []
        for seq, record in _numbered(self._mm, self._offset, damage, first):
            if seq >= first + count:
                break
            out.append(record)
        if damage:
            _log.warning("pcs: the journal %s of this process is damaged: %s", self.path,
                         _describe(damage))
        return out

    def mark_done(self, seq: int) -> None:
        """Record that every record up to ``seq`` reached the store."""
        if self._done_fd is None:
            self._done_fd = os.open(
                str(self.path) + DONE_SUFFIX,
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | _OPEN_FLAGS,
                0o600,
            )
        os.write(self._done_fd, f"{seq}\n".encode())

    def close(self, delete: bool) -> None:
        """Close the files; ``delete`` removes them (everything was delivered)."""
        if not delete:
            self.sync()
        if self._mm is not None:
            self._mm.close()
            self._mm = None
            if self._fd is not None and not delete:
                os.ftruncate(self._fd, self._offset)  # drop the unused, zeroed tail
        for fd in (self._done_fd, self._fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._done_fd = None
        if delete:
            for path in (self.path, Path(str(self.path) + DONE_SUFFIX)):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's file descriptors without touching its files."""
        if self._mm is not None:
            try:
                self._mm.close()  # unmaps in this process only
            except (BufferError, ValueError):
                pass
            self._mm = None
        for fd in (self._fd, self._done_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._done_fd = None
        self._buffer = []


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


@dataclass
class JournalFile:
    """A journal left behind by another process, locked for recovery.

    ``header`` is the owner's header; if it is damaged (``header_damaged``), what
    the file name tells (host, pid, start) and no tracking URI. After
    :meth:`records` has been read to its end, ``damage`` lists the bytes that did
    not verify; they are then kept in ``quarantine`` (see :meth:`damage_report`).
    """

    path: Path
    header: dict[str, Any]
    fd: int
    header_damaged: bool = False
    damage: list[Damage] = field(default_factory=list)

    @property
    def quarantine(self) -> Path:
        """The file that keeps this journal's damaged bytes (``<journal>.quarantine``)."""
        return Path(str(self.path) + QUARANTINE_SUFFIX)

    def damage_report(self) -> str:
        """One line on the damage :meth:`records` found ("" if none): how many damaged
        spans, at which byte offsets, how many records they held, and where they are kept."""
        if not self.damage:
            return ""
        return f"{_describe(self.damage)}; the damaged bytes are kept in {self.quarantine}"

    def records(self) -> Iterator[tuple[bool, list[Any]]]:
        """(not yet delivered, record) for every intact record after the header.

        Damaged bytes are skipped; when the end is reached they are listed in
        ``damage``, written to the quarantine file and reported in one warning.
        """
        done = 0
        try:
            with open(str(self.path) + DONE_SUFFIX, encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.strip().isdigit():
                        done = max(done, int(line))
        except FileNotFoundError:
            pass
        damage: list[Damage] = []
        with _mapped(self.fd) as (buffer, end):
            for seq, record in _numbered(buffer, end, damage):
                yield seq > done, record
            self.damage = damage
            if damage:
                self._keep_damage(buffer)

    def _keep_damage(self, buffer: bytes | mmap.mmap) -> None:
        """Write the damaged bytes to the quarantine file (0600) and warn once."""
        kept = str(self.quarantine)
        try:
            fd = os.open(self.quarantine, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _OPEN_FLAGS,
                         0o600)
            with os.fdopen(fd, "wb") as fh:
                for found in self.damage:
                    raw = buffer[found.offset:found.offset + found.length]
                    entry = {
                        "journal": str(self.path),
                        "offset": found.offset,
                        "length": found.length,
                        "reason": found.reason,
                        "records": found.records,
                        "text": raw.decode("utf-8", "backslashreplace"),
                    }
                    fh.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
        except OSError as exc:
            kept = f"(not kept: {exc})"
        _log.warning(
            "pcs: journal %s is damaged: %s. Every intact record before and after is "
            "recovered; the damaged bytes are kept in %s for inspection.",
            self.path, _describe(self.damage), kept,
        )

    def finish(self) -> None:
        """Everything was delivered: remove the journal and release it."""
        for path in (self.path, Path(str(self.path) + DONE_SUFFIX)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        os.close(self.fd)

    def release(self) -> None:
        os.close(self.fd)


def _describe(damage: list[Damage]) -> str:
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


_warned: set[str] = set()


def _refuse(path: Path, problem: str, fix: str) -> None:
    """Warn (once per file and process) that a journal is not recovered, and why."""
    if str(path) in _warned:
        return
    _warned.add(str(path))
    _log.warning("pcs: not recovering %s: %s; pcs recovers only journals it wrote itself. %s",
                 path, problem, fix)


def _untrusted(info: os.stat_result, what: str) -> str | None:
    """Why a journal file or directory is not trusted (another owner, loose mode), or None."""
    if info.st_uid != os.geteuid():
        return f"{what} belongs to another user (uid {info.st_uid}, this is uid {os.geteuid()})"
    if _loose(info.st_mode):
        return f"{what} is writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the process that wrote a journal may still be running (on this host)."""
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return process_start_time(pid) == owner.get("start")


def _owner_from_name(path: Path) -> dict[str, Any]:
    """Host, pid and start time from a journal's name ``<host>-<pid>-<start>-<id>.jsonl``."""
    name = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    parts = name.rsplit("-", 3)
    if len(parts) == 4 and parts[1].isdigit():
        return {"host": parts[0], "pid": int(parts[1]), "start": parts[2]}
    return {}


def _dead(path: Path, owner: dict[str, Any], stale_after: float) -> bool:
    """Whether a journal whose lock we hold belongs to a process proven gone."""
    if not owner:
        return True  # no identity left: the free lock is the proof
    if owner.get("host") != socket.gethostname():
        # Another machine sharing this directory: trust only a stale file.
        return time.time() - path.stat().st_mtime >= stale_after
    return not _owner_alive(owner)


def dead_journals(directory: Path, stale_after: float = 300.0) -> Iterator[JournalFile]:
    """The journals in ``directory`` whose owners are proven gone, each locked for us.

    Proof: the owner's exclusive lock can be taken (the kernel dropped it when
    the process died) and either the host + pid + start time (from the header,
    else from the file name) no longer match a live process, or — for a journal
    written on another host — it has not been touched for ``stale_after``
    seconds. Journals not owned by this user or writable by others, or in a
    directory that is, are refused with a warning.
    """
    if not directory.is_dir():
        return
    problem = _untrusted(os.stat(directory), "the journal directory")
    if problem is not None:
        _refuse(directory, problem, f"If its journals are yours, run `chmod 700 {directory}` "
                                    "and recover again; otherwise remove them.")
        return
    _remove_abandoned(directory, stale_after)
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS)
        except FileNotFoundError:
            continue
        except OSError as exc:  # a symbolic link (ELOOP), unreadable
            _refuse(path, f"it cannot be opened as a file of its own ({exc.strerror})",
                    "Remove it.")
            continue
        refused = _check_file(fd, path)
        if refused is not None:
            os.close(fd)
            _refuse(path, *refused)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # its owner (or another recoverer) holds it
            continue
        try:
            header = _read_header(fd)
            owner = header if header is not None else _owner_from_name(path)
            if not _dead(path, owner, stale_after):
                os.close(fd)
                continue
            if header is None and _blank(fd):  # nothing was ever written into it
                for leftover in (path, Path(str(path) + DONE_SUFFIX)):
                    leftover.unlink(missing_ok=True)
                os.close(fd)
                continue
        except OSError:
            os.close(fd)
            continue
        yield JournalFile(path, header if header is not None else owner, fd,
                          header_damaged=header is None)


def _check_file(fd: int, path: Path) -> tuple[str, str] | None:
    """Why a journal (or its ``.done`` file) is not trusted, with the fix; else None."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file", "Remove it."
    problem = _untrusted(info, "the file")
    if problem is not None:
        fix = ("If you trust its content, run `chmod 600` on it and recover again; "
               "otherwise remove it." if info.st_uid == os.geteuid() else
               "Recover it as its owner, or remove it.")
        return problem, fix
    done = Path(str(path) + DONE_SUFFIX)
    try:
        info = os.lstat(done)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return f"its {done.name} is not a regular file", f"Remove {done}."
    problem = _untrusted(info, f"its {done.name}")
    if problem is not None:
        return problem, f"Remove {done} (its records are then delivered again, harmlessly)."
    return None


def _remove_abandoned(directory: Path, stale_after: float) -> None:
    """Remove journals whose owner died while creating them (before any record)."""
    for path in directory.glob(f"*{SUFFIX}{NEW_SUFFIX}"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS)
        except OSError:
            continue
        try:
            if _check_file(fd, path) is not None:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _dead(path, _owner_from_name(Path(str(path)[: -len(NEW_SUFFIX)])),
                     stale_after):
                path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)


@contextlib.contextmanager
def _mapped(fd: int) -> Iterator[tuple[bytes | mmap.mmap, int]]:
    """A journal's bytes (mapped read-only) and the end of its written part."""
    size = os.fstat(fd).st_size
    if size == 0:
        yield b"", 0
        return
    with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as mapped:
        yield mapped, _written_end(mapped, size)


def _written_end(buffer: bytes | mmap.mmap, size: int) -> int:
    """The end of the written part: the mapped file's tail is zero bytes until written."""
    end = size
    while end > 0:
        start = max(0, end - _STEP)
        kept = len(buffer[start:end].rstrip(b"\0"))
        if kept:
            return start + kept
        end = start
    return 0


def _blank(fd: int) -> bool:
    with _mapped(fd) as (_, end):
        return end == 0


def _read_header(fd: int) -> dict[str, Any] | None:
    """The owner's header of a journal (either format), or None if it does not verify."""
    first = os.pread(fd, 64 * 1024, 0).split(b"\n", 1)[0]
    found = _verify(first)
    try:
        if found is not None and found[0] == 0:
            record = _loads(found[1])
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


def _numbered(
    buffer: bytes | mmap.mmap, end: int, damage: list[Damage], first: int = 1
) -> Iterator[tuple[int, list[Any]]]:
    """(number, record) for every intact record of a journal numbered ``first`` or more.

    Damaged bytes are appended to ``damage``, with the number of records they
    held when the lines around them tell. Lines wholly before ``first`` are
    verified but not decoded.
    """
    head = buffer[:_STEP].split(b"\n", 1)[0]
    if head.startswith(b'["H",') and _verify(head) is None:
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
        line = _loads(data)
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
        found = _verify(segment)
        skip = 0
        if found is None:
            for match in _PREFIX.finditer(segment, 1):
                found = _verify(segment[match.start():])
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
