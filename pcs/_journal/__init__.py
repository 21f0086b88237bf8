"""The crash-safe journal: every record is on disk before the caller goes on.

Each process appends its records to its own file
``<dir>/<host>-<pid>-<start>-<id>.jsonl``, which it maps into memory
(``MAP_SHARED``): an append is a memory copy — no system call, no fsync, no GIL
release on the hot path — and the kernel keeps the bytes when the process is
SIGKILLed. The mapped file grows in steps, so its tail is zero bytes until
written. Each sync writes one line (format ``pcs-journal/2``)::

    <crc32, 8 hex digits> <number of the line's first record> <JSON>\\n

where the JSON is a single record ``[kind, ...]`` or the list of the records
buffered since the previous sync (a tracked call's start and end, say),
numbered in order from the line's first number; the checksum (``zlib.crc32``)
covers every byte between the space after it and the newline. The records are
opaque here: their kinds and wire form are defined in :mod:`pcs._records`. The
first line (number 0) is a header ``["H", {...}]`` naming the owner (host, pid,
process start time, tracking URI) and the version of the records' wire form
(``"records"``, :data:`pcs._records.WIRE_VERSION`; absent in journals written
before it was named, whose records are of version 1). The writer appends the
number of the last record it has delivered to MLflow to ``<file>.done`` after
each batch.

Segments (SQLite stores, ``PCS_JOURNAL_SEGMENT_MB``): once a file holds that
many bytes and all of its records are delivered, the process goes on in a new
file ``<...>-<id>s<n>.jsonl`` and removes the old one. Numbers go on across
segments; the new header adds ``"segment"``, ``"first"`` (its first record's
number) and ``"open"`` (the runs started in earlier segments and not ended:
recovery reaps them if the process dies).

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

Modules, bottom to top (each imports only from those above it in this list):

``format``
    the bytes of a journal file: file names, the checksummed line, the header,
    and reading lines back with the damage isolated (:class:`Damage`);
``writer``
    :class:`Journal`, the memory-mapped append side of this process's journal,
    and its owner-only directory;
``reader``
    journals of other processes: ownership and trust checks,
    :func:`dead_journals`, :class:`JournalFile` and the quarantine.
"""

from __future__ import annotations

from pcs._journal.format import (
    DONE_SUFFIX,
    HEADER,
    HEADER_V1,
    NEW_SUFFIX,
    QUARANTINE_SUFFIX,
    SUFFIX,
    Damage,
)
from pcs._journal.reader import JournalFile, check_file, dead_journals
from pcs._journal.writer import (
    CHUNK,
    JOURNAL_DIR_ENV,
    Journal,
    default_directory,
    process_start_time,
)

__all__ = [
    "CHUNK",
    "DONE_SUFFIX",
    "HEADER",
    "HEADER_V1",
    "JOURNAL_DIR_ENV",
    "NEW_SUFFIX",
    "QUARANTINE_SUFFIX",
    "SUFFIX",
    "Damage",
    "Journal",
    "JournalFile",
    "check_file",
    "dead_journals",
    "default_directory",
    "process_start_time",
]
