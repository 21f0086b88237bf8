"""The read side: journals left by processes proven gone, trusted only if they are ours.

Ownership and trust checks, :func:`dead_journals`, and :class:`JournalFile`, which
reads a journal's records back and keeps its damaged bytes in quarantine.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import mmap
import os
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pcs._journal.format import (
    DONE_SUFFIX,
    NEW_SUFFIX,
    OPEN_FLAGS,
    QUARANTINE_SUFFIX,
    STEP,
    SUFFIX,
    Damage,
    acknowledged,
    describe,
    numbered,
    parse_name,
    read_header,
)
from pcs._journal.writer import loose, process_start_time

_log = logging.getLogger("pcs")


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

    @property
    def wire_version(self) -> int | None:
        """The version of the records' wire form the header names (1 if it names none:
        written before it was named); None if the header is damaged or the value is not
        a version. Above :data:`pcs._records.WIRE_VERSION`: a newer pcs wrote it."""
        if self.header_damaged:
            return None
        version = self.header.get("records", 1)
        return version if type(version) is int else None

    def damage_report(self) -> str:
        """One line on the damage :meth:`records` found ("" if none): how many damaged
        spans, at which byte offsets, how many records they held, and where they are kept."""
        if not self.damage:
            return ""
        return f"{describe(self.damage)}; the damaged bytes are kept in {self.quarantine}"

    @property
    def superseded(self) -> bool:
        """Whether a later segment of this journal exists: its owner was killed while
        going on in a new segment, after creating it and before removing this one. This
        one is then wholly delivered, and the later one names the runs still open:
        recovery must not reap them from this one (one may have ended in the later)."""
        mine = parse_name(self.path.name)
        if mine is None:
            return False
        host, pid, start, ident, current = mine
        pattern = f"{glob.escape(f'{host}-{pid}-{start}-{ident}')}s*{SUFFIX}"
        for other in self.path.parent.glob(pattern):
            later = parse_name(other.name)
            if later is not None and later[3] == ident and later[4] > current:
                return True
        return False

    def records(self, *, check_only: bool = False) -> Iterator[tuple[bool, list[Any]]]:
        """(not yet delivered, record) for every intact record after the header.

        Damaged bytes are skipped; when the end is reached they are listed in
        ``damage``, written to the quarantine file and reported in one warning
        (not with ``check_only``: a first pass that only looks at the records).
        """
        done = acknowledged(self.path)
        damage: list[Damage] = []
        with _mapped(self.fd) as (buffer, end):
            for seq, record in numbered(buffer, end, damage):
                yield seq > done, record
            if check_only:
                return
            self.damage = damage
            if damage:
                self._keep_damage(buffer)

    def _keep_damage(self, buffer: bytes | mmap.mmap) -> None:
        """Write the damaged bytes to the quarantine file (0600) and warn once."""
        kept = str(self.quarantine)
        try:
            fd = os.open(self.quarantine, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | OPEN_FLAGS,
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
            self.path, describe(self.damage), kept,
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
    if loose(info.st_mode):
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
    parsed = parse_name(path.name)
    if parsed is None:
        return {}
    host, pid, start, _, _ = parsed
    return {"host": host, "pid": pid, "start": start}


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
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | OPEN_FLAGS)
        except FileNotFoundError:
            continue
        except OSError as exc:  # a symbolic link (ELOOP), unreadable
            _refuse(path, f"it cannot be opened as a file of its own ({exc.strerror})",
                    "Remove it.")
            continue
        refused = check_file(fd, path)
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
            header = read_header(fd)
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


def check_file(fd: int, path: Path) -> tuple[str, str] | None:
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
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | OPEN_FLAGS)
        except OSError:
            continue
        try:
            if check_file(fd, path) is not None:
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
        start = max(0, end - STEP)
        kept = len(buffer[start:end].rstrip(b"\0"))
        if kept:
            return start + kept
        end = start
    return 0


def _blank(fd: int) -> bool:
    with _mapped(fd) as (_, end):
        return end == 0
