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
    SUFFIX,
    Damage,
    describe,
    line,
    numbered,
)
from pcs._records import WIRE_VERSION

_log = logging.getLogger("pcs")

JOURNAL_DIR_ENV = settings.JOURNAL_DIR.name
#: The journal file grows in steps of this many bytes (mapped, zero-filled at the end).
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

    @property
    def written(self) -> int:
        """Bytes written to the file so far (the header included)."""
        return self._offset

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
        self._put(line(self._seq + 1, buffer[0] if count == 1 else buffer))
        self._seq += count
        buffer.clear()

    def read(self, first: int, count: int) -> list[list[Any]]:
        """Records ``first`` .. ``first + count - 1`` back from the file."""
        self.sync()
        if self._mm is None:
            return []
        out: list[list[Any]] = []
        damage: list[Damage] = []
        for seq, record in numbered(self._mm, self._offset, damage, first):
            if seq >= first + count:
                break
            out.append(record)
        if damage:
            _log.warning("pcs: the journal %s of this process is damaged: %s", self.path,
                         describe(damage))
        return out

    def mark_done(self, seq: int) -> None:
        """Record that every record up to ``seq`` reached the store."""
        if self._done_fd is None:
            self._done_fd = os.open(
                str(self.path) + DONE_SUFFIX,
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | OPEN_FLAGS,
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
