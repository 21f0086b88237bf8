"""The append side: this process's journal, memory-mapped, in an owner-only directory."""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

from pcs import settings
from pcs._journal.format import (
    DONE_SUFFIX,
    HEADER,
    NEW_SUFFIX,
    OPEN_FLAGS,
    Damage,
    DoneLog,
    describe,
    journal_name,
    line,
    numbered,
)
from pcs._records import WIRE_VERSION

_log = logging.getLogger("pcs")

JOURNAL_DIR_ENV = settings.JOURNAL_DIR.name
#: The journal file grows in steps of this many bytes (mapped, zero-filled at the end).
#: Only the part from the page of the next write on is mapped: written records stay in the
#: file, and the process's resident memory for its journal stays about this size however
#: long the journal grows.
CHUNK = 4 * 1024 * 1024


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


def loose(mode: int) -> bool:
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
    if loose(info.st_mode):
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
        self.path = self._segment_path(0)
        self._fd: int | None = None
        self._mm: mmap.mmap | None = None
        self._base = 0  # the file offset where the mapping starts
        self._size = 0  # the file's size (the mapping ends there)
        self._offset = 0
        self._seq = 0  # records written to the file so far
        self._buffer: list[list[Any]] = []
        self._done = DoneLog(self.path)
        #: set when a record could not be delivered: the file is kept at exit
        self.keep = False
        #: a segment is full at this many bytes (0: one file for the process's life); only
        #: for SQLite stores, whose run ids pcs makes (a reaped run needs no start record)
        self.segment_bytes = int(settings.JOURNAL_SEGMENT_MB.get() * 1024 * 1024) \
            if tracking_uri.startswith("sqlite:") else 0
        self._segment = 0
        self._earlier = 0  # bytes of the segments before this one
        #: runs started and not ended (in insertion order), named in the next segment's header
        self._open_runs: dict[str, None] | None = {} if self.segment_bytes else None

    def _segment_path(self, segment: int) -> Path:
        return self.directory / journal_name(self.host, self.pid, self.start, f"{id(self):x}",
                                             segment)

    @property
    def written(self) -> int:
        """Bytes written so far, to every segment (headers included)."""
        return self._earlier + self._offset

    @property
    def full(self) -> bool:
        """Whether this segment reached ``PCS_JOURNAL_SEGMENT_MB`` (see :meth:`rotate`)."""
        return bool(self.segment_bytes) and self._offset >= self.segment_bytes

    def rotate(self) -> None:
        """Go on in a new segment file and remove this one, once all of it is delivered.

        The caller (the writer, under its lock) has seen every record of this
        segment acknowledged. The new file is created first, its header naming
        the runs still open (recovery reaps them if the process dies: their
        starts are in the store, their records in no file any more) and the
        number of its first record (numbers go on across segments); only then
        is this segment removed: there is never a moment with no file naming
        an open run.
        """
        self.sync()
        old = (self._mm, self._fd, self.path, self._done)
        earlier, offset, base, size = self._earlier, self._offset, self._base, self._size
        self._segment += 1
        self.path = self._segment_path(self._segment)
        self._done = DoneLog(self.path)
        self._mm = self._fd = None
        self._earlier += offset
        try:
            self._open()
        except BaseException:
            self._segment -= 1
            self._mm, self._fd, self.path, self._done = old
            self._earlier, self._offset, self._base, self._size = earlier, offset, base, size
            raise
        mapped, fd, path, done = old
        for gone in (path, Path(done.path)):
            gone.unlink(missing_ok=True)
        done.close()
        if mapped is not None:
            mapped.close()
        if fd is not None:
            os.close(fd)  # the lock goes last: the file is already gone

    def _open(self) -> mmap.mmap:
        _prepare_directory(self.directory)
        # Locked and headed under a name recovery never looks at, then renamed: a journal
        # visible as ``*.jsonl`` is always either locked by its owner or complete.
        new = Path(str(self.path) + NEW_SUFFIX)
        fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL | OPEN_FLAGS, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _reserve(fd, 0, CHUNK)
            self._mm = mmap.mmap(fd, CHUNK, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._fd = fd
            self._base = 0
            self._size = CHUNK
            self._offset = 0
            header = {
                "format": HEADER,
                "records": WIRE_VERSION,
                "host": self.host,
                "pid": self.pid,
                "start": self.start,
                "tracking_uri": self.tracking_uri,
                "created": time.time(),
            }
            if self._segment:
                header["segment"] = self._segment
                header["first"] = self._seq + 1
                header["open"] = list(self._open_runs or ())
            self._put(line(0, ["H", header]))
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
            mapped = self._slide(mapped, end)
        base = self._base
        mapped[self._offset - base:end - base] = data
        self._offset = end

    def _slide(self, old: mmap.mmap, end: int) -> mmap.mmap:
        """Grow the file by a :data:`CHUNK` beyond ``end`` and map it from the page of the
        next write on (the written part is not mapped again: RSS stays bounded)."""
        fd = self._fd
        if fd is None:
            raise OSError(errno.EBADF, "the journal's file is closed", str(self.path))
        size = end + CHUNK
        _reserve(fd, self._size, size - self._size)
        base = self._offset - self._offset % mmap.ALLOCATIONGRANULARITY
        mapped = mmap.mmap(fd, size - base, mmap.MAP_SHARED,
                           mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
        old.close()
        self._mm, self._base, self._size = mapped, base, size
        return mapped

    def append(self, records: tuple[list[Any], ...] | list[list[Any]], sync: bool) -> None:
        """Add ``records``; with ``sync`` write everything buffered so far to the file.

        Callers sync before acknowledging (a tracked call returns, a run block
        starts) and the writer syncs before delivering, so every record that
        is acknowledged or visible in MLflow is in the file first.
        """
        open_runs = self._open_runs
        if open_runs is not None:
            for record in records:
                kind = record[0]
                if kind == "T" or kind == "R":  # StartCall, StartRun
                    open_runs[record[1]] = None
                elif kind == "E":  # EndRun
                    open_runs.pop(record[1], None)
        if sync and not self._buffer:  # the common case: straight into the file
            count = len(records)
            self._put(line(self._seq + 1, records[0] if count == 1 else records))
            self._seq += count
            return
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
        self._put(line(self._seq + 1, buffer[0] if count == 1 else buffer))
        self._seq += count
        buffer.clear()

    def read(self, first: int, count: int) -> list[list[Any]]:
        """Records ``first`` .. ``first + count - 1`` back from the file."""
        self.sync()
        if self._mm is None or self._fd is None:
            return []
        out: list[list[Any]] = []
        damage: list[Damage] = []
        # The whole written part, mapped for this read only (the writing mapping starts
        # at the page of the next write).
        with mmap.mmap(self._fd, self._offset, mmap.MAP_SHARED, mmap.PROT_READ) as whole:
            for seq, record in numbered(whole, self._offset, damage, first):
                if seq >= first + count:
                    break
                out.append(record)
        if damage:
            _log.warning("pcs: the journal %s of this process is damaged: %s", self.path,
                         describe(damage))
        return out

    def mark_done(self, seq: int) -> None:
        """Record that every record up to ``seq`` reached the store."""
        self._done.append(seq)

    def close(self, delete: bool, trim: bool = True) -> None:
        """Close the files; ``delete`` removes them (everything was delivered). ``trim``
        drops the unused, zeroed tail of a kept file; not while a delivery agent may have
        it mapped (a read past a shortened file's end is a SIGBUS there; readers stop at
        the zeros anyway)."""
        if not delete:
            self.sync()
        if self._mm is not None:
            self._mm.close()
            self._mm = None
            if self._fd is not None and not delete and trim:
                os.ftruncate(self._fd, self._offset)
        self._done.close()
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
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
        self._done.close()
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        self._buffer = []
