"""The crash-safe journal: every record is on disk before the caller goes on.

Each process appends its records to its own file
``<dir>/<host>-<pid>-<start>.jsonl``, which it maps into memory (``MAP_SHARED``):
an append is a memory copy — no system call, no fsync, no GIL release on the
hot path — and the kernel keeps the bytes when the process is SIGKILLed. The
mapped file grows in steps, so its tail is zero bytes until written. Each
sync writes one JSON line: a single record ``[tag, ...]``, or the list of the
records buffered since the previous sync (a tracked call's start and end, say),
numbered in order as if one per line. The first line is a header naming the
owner (host, pid, process start time, tracking URI). The writer appends the
number of the last record it has delivered to MLflow to ``<file>.done`` after
each batch.

Ownership is proven by an exclusive ``flock`` that the owner holds for its
lifetime: the kernel releases it when the process dies, however it dies. A
journal whose lock can be taken belongs to a dead process (checked again with
host + pid + start time); only then is it recovered.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import mmap
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Journal", "JournalFile", "dead_journals", "default_directory", "process_start_time"]

_log = logging.getLogger("pcs")

JOURNAL_DIR_ENV = "PCS_JOURNAL_DIR"
#: The journal file grows in steps of this many bytes (mapped, zero-filled at the end).
CHUNK = 4 * 1024 * 1024
SUFFIX = ".jsonl"
DONE_SUFFIX = ".done"
HEADER = "pcs-journal/1"
# The fallback for what orjson refuses (a lone surrogate, an int beyond 64 bits):
# pure ASCII, so any string survives, read back exactly by json.loads.
_FALLBACK = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=repr)
_dumps_line = functools.partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)


def _line(obj: Any) -> bytes:
    """One journal line (JSON and a newline) holding ``obj``."""
    try:
        return _dumps_line(obj)
    except TypeError:  # orjson.JSONEncodeError
        return _FALLBACK.encode(obj).encode("ascii") + b"\n"


def default_directory() -> Path:
    """``$PCS_JOURNAL_DIR``, else ``.pcs/journal`` in the working directory."""
    configured = os.environ.get(JOURNAL_DIR_ENV)
    return Path(configured) if configured else Path.cwd() / ".pcs" / "journal"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (clock ticks since boot), if knowable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat.rpartition(")")[2].split()
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
        self._buffer: list[list[Any]] = []
        self._done_fd: int | None = None
        #: set when a record could not be delivered: the file is kept at exit
        self.keep = False

    def _open(self) -> mmap.mmap:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _reserve(fd, 0, CHUNK)
        self._fd = fd
        self._mm = mmap.mmap(fd, CHUNK, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
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
        self._put(_line(["H", header]))
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
        line = buffer[0] if len(buffer) == 1 else buffer
        self._put(_line(line))
        buffer.clear()

    def read(self, first: int, count: int) -> list[list[Any]]:
        """Records ``first`` .. ``first + count - 1`` back from the file."""
        self.sync()
        out: list[list[Any]] = []
        for seq, record in _numbered_records(self.path):
            if seq >= first + count:
                break
            if seq >= first:
                out.append(record)
        return out

    def mark_done(self, seq: int) -> None:
        """Record that every record up to ``seq`` reached the store."""
        if self._done_fd is None:
            self._done_fd = os.open(
                str(self.path) + DONE_SUFFIX,
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
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
class JournalFile:
    """A journal left behind by another process, locked for recovery."""

    path: Path
    header: dict[str, Any]
    fd: int

    def records(self) -> Iterator[tuple[bool, list[Any]]]:
        """(not yet delivered, record) for every complete line after the header."""
        done = 0
        try:
            with open(str(self.path) + DONE_SUFFIX, encoding="ascii") as fh:
                for line in fh:
                    if line.strip().isdigit():
                        done = max(done, int(line))
        except FileNotFoundError:
            pass
        for seq, record in _numbered_records(self.path):
            yield seq > done, record

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


def _owner_alive(header: dict[str, Any]) -> bool:
    """Whether the process that wrote a journal may still be running."""
    if header.get("host") != socket.gethostname():
        # Another machine sharing this directory: trust only a stale heartbeat.
        return True
    pid = header.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return process_start_time(pid) == header.get("start")


def dead_journals(directory: Path, stale_after: float = 300.0) -> Iterator[JournalFile]:
    """The journals in ``directory`` whose owners are proven gone, each locked for us.

    Proof: the owner's exclusive lock can be taken (the kernel dropped it when
    the process died) and either the host + pid + start time no longer match a
    live process, or — for a journal written on another host — it has not
    been touched for ``stale_after`` seconds.
    """
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # its owner (or another recoverer) holds it
            continue
        header = _read_header(path)
        alive = header is not None and _owner_alive(header)
        if header is not None and header.get("host") != socket.gethostname():
            alive = time.time() - path.stat().st_mtime < stale_after
        if alive or header is None:
            if header is None and path.stat().st_size == 0:
                path.unlink(missing_ok=True)
            os.close(fd)
            continue
        yield JournalFile(path, header, fd)


def _numbered_records(path: Path) -> Iterator[tuple[int, list[Any]]]:
    """(number, record) for every record of a journal, numbered from 1 after the header.

    A line holds one record ``[tag, ...]`` or a list of records. A torn last
    line (its writer died mid-copy) ends the journal; an unreadable line is
    skipped, both with a warning.
    """
    seq = 0
    for index, raw in enumerate(_lines(path)):
        if index == 0:
            continue
        if not raw.endswith(b"\n"):
            _log.warning("pcs: ignoring a torn last line in journal %s", path)
            return
        try:
            line = json.loads(raw)
        except ValueError:
            _log.warning("pcs: ignoring an unreadable line %d of %s", index, path)
            continue
        records = line if isinstance(line, list) and line and isinstance(line[0], list) \
            else [line]
        for record in records:
            seq += 1
            yield seq, record


def _lines(path: Path) -> Iterator[bytes]:
    """The lines of a journal, up to the zero-filled tail of its mapping."""
    with open(path, "rb") as fh:
        for raw in fh:
            zero = raw.find(b"\0")
            if zero >= 0:
                if zero > 0:
                    yield raw[:zero]  # a torn last line: no newline
                return
            yield raw


def _read_header(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            first = fh.readline()
        record = json.loads(first)
    except (OSError, ValueError):
        return None
    if isinstance(record, list) and len(record) == 2 and record[0] == "H":
        header = record[1]
        if isinstance(header, dict) and header.get("format") == HEADER:
            return header
    return None
