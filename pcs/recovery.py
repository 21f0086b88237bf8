"""Deliver the journals of dead processes and reap the runs they left RUNNING.

:func:`recover` (CLI: ``pcs recover``) looks at every journal in the journal
directory (``$PCS_JOURNAL_DIR``, else ``.pcs/journal`` in the working
directory). A journal is recovered only when its owner is proven gone — its
lock is free and its host + pid + process start time match no live process
(or, written on another host, it is stale). Then its undelivered records are
delivered to the tracking store it names — idempotently, so a record that
had already arrived is not duplicated — and every run it started but never
ended is marked KILLED, with the tag ``pcs.reaped`` saying why.

The first pcs writer of a process also runs this once in the background, so
a crashed program's records arrive as soon as pcs is used again in the same
working directory.

This module is the public face; the engine is :mod:`pcs._store.recovery`.
"""

from pcs._store.recovery import RecoveryReport, recover

__all__ = ["RecoveryReport", "recover"]
