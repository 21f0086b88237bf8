"""The hooks a pcs plugin may implement: their specifications, for pluggy.

A plugin is any object (a module, a class instance) with functions named
after these hooks and marked with :data:`hookimpl`. Every hook is called
with keyword arguments only, and an implementation may accept any subset
of them, in any order (pluggy matches them by name)::

    import pcs.hookspecs

    @pcs.hookspecs.hookimpl
    def pcs_run_ended(run, status):
        print(run.identifier, status)

Plugins are found through the ``pcs`` entry-point group or registered in
code with :func:`pcs.plugins.register` (see :mod:`pcs.plugins`). Each
implementation is called on its own: one that raises is logged once (with
the plugin's and the hook's names) and the others, and your program, go on —
except a failing :func:`pcs_arguments_captured`, which fails closed.

Implementations run on the thread that made the call or opened the block,
inside the tracked call's own overhead: keep them quick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pcs.canon import RegistryView
    from pcs.run import Run

__all__ = [
    "PROJECT",
    "hookimpl",
    "hookspec",
    "pcs_arguments_captured",
    "pcs_collect_environment",
    "pcs_environment_drift",
    "pcs_register_encoders",
    "pcs_run_ended",
    "pcs_run_started",
]

#: the pluggy project name of pcs's hooks (and the entry-point group plugins are found in)
PROJECT = "pcs"
#: marks the hook specifications below
hookspec = pluggy.HookspecMarker(PROJECT)
#: marks a plugin's hook implementations: ``@pcs.hookspecs.hookimpl``
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def pcs_run_started(run: Run) -> None:
    """A run has started: a ``pcs.run()`` block was entered or a tracked call began.

    ``run`` is the :class:`pcs.Run` (a :class:`pcs.ComponentRun` for a tracked
    call), already the parent of runs started inside it. Called before the
    block's body or the call runs; for a top-level run, before
    :func:`pcs_collect_environment`. The return value is ignored.
    """


@hookspec
def pcs_run_ended(run: Run, status: str, error: BaseException | None) -> None:
    """A run has ended.

    ``status`` is ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``; ``error`` is the
    exception that ended the block or call (None when it returned). The
    exception propagates to your program unchanged after the hook. The run's
    end is already queued for the store; to wait for it, call
    :func:`pcs.flush`. The return value is ignored.
    """


@hookspec
def pcs_arguments_captured(
    run: Run | None, name: str, arguments: dict[str, Any]
) -> Mapping[str, Any] | None:
    """A tracked call's arguments, before they are hashed, logged or persisted.

    ``arguments`` maps each parameter name to the value the call received
    (defaults applied; ``self``/``cls`` left out). ``name`` is the name the
    call's run gets (the callable's qualified name). ``run`` is the run the
    call is made in — the parent of the call's run, or None at top level: the
    call's own run does not exist yet, because its arguments are part of its
    identity (the RunCommand is hashed before the run is recorded).

    An implementation may **redact** (replace a value with
    ``pcs.Secret(value)``: it is recorded as ``<redacted>``) or **transform**
    values, either by changing ``arguments`` in place or by returning a new
    mapping, which the next implementation receives and pcs records.
    Returning None keeps ``arguments`` as they are. Only what pcs records
    changes: the call itself always receives its original arguments.

    An implementation that raises **fails closed**: every argument of that
    call is recorded redacted (the run is then not replayable unless the
    values are given again, ``rerun(overrides=...)``), the failure is logged
    once, and the call goes on.

    While any plugin implements this hook, tracked calls leave pcs's fast
    path for plain scalar arguments (a few microseconds more per call).
    """


@hookspec
def pcs_collect_environment(run: Run) -> Mapping[str, Any] | None:
    """What to record about the environment of a top-level run.

    Called once for each run without a parent (not for nested runs or runs
    whose parent lives in another process), right after
    :func:`pcs_run_started`. Return None, or a mapping with any of:

    ``"tags"``
        ``{name: value}``, set on the run (values turned into strings);
    ``"params"``
        ``{name: value}``, logged as the run's params;
    ``"artifacts"``
        ``{path: bytes}``, stored as artifact files of the run.

    pcs logs them through the run's public API (``set_tags``, ``log_params``,
    ``log_bytes``), written behind like everything else. Each plugin's
    mapping is logged on its own: a bad value from one plugin is logged once
    and does not lose another's.
    """


@hookspec
def pcs_environment_drift(run: Run) -> Sequence[str] | None:
    """How this process's environment differs from the one ``run`` was recorded in.

    Called by replay (``rerun``, ``pcs rerun``) before a recorded run is
    called again, with the original run. Return None or an empty sequence
    when nothing you know about differs, else one line per difference
    (``"numpy 1.26.4 recorded, 2.1.0 now"``). Replay never refuses on these:
    it logs them, tags the new run ``pcs.environment_drift=True`` and stores
    every plugin's lines as its artifact ``pcs.environment_drift.txt``.
    """


@hookspec
def pcs_register_encoders(registry: RegistryView) -> None:
    """Register how values of your types are encoded (called once per process and plugin).

    Called when the plugin is loaded, with a :class:`pcs.canon.RegistryView`
    whose ``register(kind, *, name, version, encode, decode, subclasses=False)``
    adds a type to pcs's canonical encoding: ``kind`` is a class, a
    ``"module.QualName"`` (matched by name, so the library need not be imported)
    or a test ``f(cls) -> bool``; ``encode(value)`` returns plain data pcs
    encodes (the *payload*) and ``decode(payload, version)`` rebuilds the
    value. Values of the type are then recorded as ``["x", name, version,
    payload]`` (see :mod:`pcs.canon` and :doc:`/plugins`). Encoders are
    looked up by type once and cached, so the hot path pays one dict lookup;
    a plugin that raises here registers nothing.
    """
