"""Replaying recorded calls: :meth:`ComponentRun.rerun`, :meth:`RunCommand.run`, :func:`compare`.

A replay runs the recorded callable again, with the recorded arguments, as a
genuine tracked call: the new :class:`~pcs.ComponentRun` nests under the
active run (if any) and is tagged ``pcs.rerun_of`` with the original run id.
Before anything runs, pcs checks, in this order:

1. **The module is allowed** — before importing anything. By default pcs
   imports only modules that *you* recorded runs of in the current tracking
   store (runs imported with :func:`pcs.import_runs` do not count). Allow
   more with ``allowed_modules=[...]`` or the environment variable
   ``PCS_REPLAY_ALLOWED_MODULES`` (comma-separated module prefixes).
2. **Every argument is known** — redacted values and placeholders must be
   supplied by name: ``rerun(overrides={"password": ...})``.
3. **The callable is tracked** — after import, anything that is not
   ``@pcs.tracked`` (``os:system``, ``builtins:eval``...) is refused.
4. **The code is the same** — the recorded source sha256 (and the git commit
   and dirty state, when they were recorded) against the code importable now.
   On drift :class:`~pcs.CodeDriftError` shows a unified diff; with
   ``allow_code_drift=True`` pcs logs a warning, runs the current code and
   records the drift on the new run (tag ``pcs.code_drift``, artifact
   ``pcs.code_drift.diff``).

After the call, the new run is compared with the original (:func:`compare`)
and tagged ``pcs.reproduced`` = ``True``/``False`` when the outcome can be
compared (same status, and the same return value or the same error type).

Each step lives in a module of :mod:`pcs._replay`; this module strings them
together and provides the run objects' replay methods (see :mod:`pcs._upper`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pcs import _stack, component_run, plugins, run_command
from pcs._comparison import Difference, RunComparison
from pcs._replay import arguments, inputs, safety
from pcs._replay.arguments import Bound, Fetch, run_fetcher
from pcs._replay.compare import compare
from pcs._replay.drift import Drift, code_drift
from pcs._replay.invoke import invoke
from pcs._replay.refusal import Refusal
from pcs._replay.resolve import Target, resolve
from pcs._replay.safety import ALLOWED_MODULES_ENV
from pcs._store import get_backend
from pcs.component_run import ComponentRun
from pcs.conventions import (
    CODE_DRIFT_ARTIFACT,
    CODE_DRIFT_TAG,
    ENVIRONMENT_DRIFT_ARTIFACT,
    ENVIRONMENT_DRIFT_TAG,
    OVERRIDES_TAG,
    REBUILT_INPUTS_TAG,
    REPRODUCED_TAG,
    RERUN_OF_TAG,
)
from pcs.exceptions import PcsError, ReplayError, UsageError
from pcs.registry import Registry
from pcs.run_command import RunCommand

__all__ = [
    "ALLOWED_MODULES_ENV",
    "CODE_DRIFT_ARTIFACT",
    "CODE_DRIFT_TAG",
    "OVERRIDES_TAG",
    "REPRODUCED_TAG",
    "RERUN_OF_TAG",
    "Difference",
    "RunComparison",
    "code_drift",
    "compare",
    "replay_command",
    "rerun",
]

_log = logging.getLogger("pcs")


def rerun(
    run: ComponentRun,
    allow_code_drift: bool = False,
    *,
    overrides: Mapping[str, Any] | None = None,
    allowed_modules: Iterable[str] | None = None,
    reraise: bool = True,
    trust_pickles: bool = False,
) -> ComponentRun:
    """Call the recorded callable of ``run`` again; return the new ComponentRun.

    See :meth:`pcs.ComponentRun.rerun` for the parameters. The new run is
    tagged ``pcs.rerun_of`` = ``run``'s id and ``pcs.reproduced`` when the
    outcomes can be compared.
    """
    if not isinstance(run, ComponentRun):
        raise UsageError(
            f"rerun() needs a pcs.ComponentRun, got {type(run).__name__}; wrap a run id with "
            "pcs.ComponentRun.from_existing_run_id(run_id)."
        )
    get_backend(run.tracking_uri).flush()
    command = run.run_command
    return _replay(_Request(
        command, run, run_fetcher(run), allow_code_drift, dict(overrides or {}),
        allowed_modules, reraise, trust_pickles,
    ))


def replay_command(
    command: RunCommand,
    allow_code_drift: bool = False,
    *,
    overrides: Mapping[str, Any] | None = None,
    allowed_modules: Iterable[str] | None = None,
    artifacts: Registry | ComponentRun | None = None,
    reraise: bool = True,
) -> ComponentRun:
    """Run a RunCommand as a new tracked call; see :meth:`pcs.RunCommand.run`."""
    if not isinstance(command, RunCommand):
        raise UsageError(f"replay_command() needs a pcs.RunCommand, got {type(command).__name__}.")
    fetch: Fetch | None
    if artifacts is None:
        fetch = None
    elif isinstance(artifacts, Registry):
        fetch = artifacts.get_artifact
    elif isinstance(artifacts, ComponentRun):
        get_backend(artifacts.tracking_uri).flush()
        fetch = run_fetcher(artifacts)
    else:
        raise UsageError(
            f"artifacts= takes a pcs.Registry or a pcs.ComponentRun holding the large argument "
            f"values, not {type(artifacts).__name__}."
        )
    return _replay(_Request(
        command, None, fetch, allow_code_drift, dict(overrides or {}), allowed_modules, reraise,
    ))


@dataclass(frozen=True)
class _Request:
    """One replay: what to call, the run it replays (None: a bare RunCommand), the options."""

    command: RunCommand
    original: ComponentRun | None
    fetch: Fetch | None
    allow_code_drift: bool
    overrides: dict[str, Any]
    allowed_modules: Iterable[str] | None
    reraise: bool
    trust_pickles: bool = False

    @property
    def run_id(self) -> str | None:
        return self.original.identifier if self.original is not None else None

    @property
    def where(self) -> str:
        """How errors name what cannot be replayed: the run (or RunCommand) and the callable."""
        run_id, command = self.run_id, self.command
        label = f"run {run_id}" if run_id else f"RunCommand {command.identifier[:16]}"
        return f"{label} ({command.component.path}, entry point {command.entry_point!r})"

    def refused(self, refusal: Refusal) -> ReplayError:
        """The error the user sees for a step's refusal."""
        return refusal.error(self.where, self.run_id, self.command.component.path)

    def tags(self, drift: Drift, rebuilt: inputs.Rebuilt) -> dict[str, str]:
        """The tags of the new run: what it replays, whether with drift, which overrides,
        which arguments came from their producers."""
        tags: dict[str, str] = {}
        if rebuilt.producers:
            tags[REBUILT_INPUTS_TAG] = json.dumps(rebuilt.producers, sort_keys=True)[:5000]
        if self.run_id:
            tags[RERUN_OF_TAG] = self.run_id
        if drift:
            tags[CODE_DRIFT_TAG] = "True"
        if self.overrides:
            tags[OVERRIDES_TAG] = ",".join(sorted(self.overrides))[:5000]
        return tags


def _replay(request: _Request) -> ComponentRun:
    """Check and prepare the call, make it, record how it went; return the new run."""
    try:
        target, bound, drift, rebuilt = _prepare(request)
        receiver = target.receiver(bound.get("__init__"))
        args, kwargs = bound[target.entry_point]
        outcome = invoke(target.tracker, receiver, args, kwargs, request.tags(drift, rebuilt))
    except Refusal as refusal:
        raise request.refused(refusal) from refusal.__cause__
    new = outcome.run
    if new is None:
        if outcome.error is not None and request.reraise:
            raise outcome.error
        raise request.refused(Refusal(
            ReplayError,
            "the call ran, but pcs could not record it as a new run (see the warning pcs "
            "logged). Check that the tracking store is reachable and writable.",
        ))
    _stack.set_last(new)
    _record_outcome(new, request.original, drift)
    if outcome.error is not None and request.reraise:
        raise outcome.error
    return new


def _prepare(request: _Request) -> tuple[Target, dict[str, Bound], Drift, inputs.Rebuilt]:
    """Every check, in order, then the arguments; nothing user-written has run but imports."""
    command = request.command
    component, entry_point = command.component, command.entry_point
    # Safety before importing anything: the path is plain, the module allowed.
    safety.check_path(component, entry_point)
    prefixes = safety.allowed_prefixes(request.allowed_modules)
    safety.check_module_allowed(component, entry_point, prefixes, request.original)
    calls = arguments.recorded_calls(command)
    known = {entry: set(args) for entry, args in calls.items()}
    # Placeholders the producers' logged return values can supply (lineage).
    rebuilt = inputs.Rebuilt()
    if request.original is not None:
        rebuilt = inputs.from_producers(request.original, calls.get(entry_point, {}),
                                        request.overrides, request.trust_pickles)
    overrides = {**rebuilt.values, **request.overrides}
    try:
        safety.check_missing(calls, entry_point, overrides, known)
    except Refusal as refusal:
        if rebuilt.hints:
            refusal.add_hint("; ".join(f"{name!r}: {why}" for name, why
                                       in sorted(rebuilt.hints.items())))
        raise
    # Import and resolve statically; refuse anything that is not tracked.
    target = resolve(component, entry_point, calls)
    # The code identity: refuse drift unless it is allowed.
    drift = Drift.between(component, target.current)
    if drift:
        if not request.allow_code_drift:
            raise drift.error(request.where, request.run_id)
        _log.warning(
            "pcs: replaying %s with code drift (allow_code_drift=True): %s",
            request.where, drift.summary,
        )
    bound = arguments.rebuild(
        component, target, calls, overrides, known, request.fetch, prefixes
    )
    return target, bound, drift, rebuilt


def _record_outcome(new: ComponentRun, original: ComponentRun | None, drift: Drift) -> None:
    """Record the drift and whether the replay reproduced the original."""
    backend = get_backend(new.tracking_uri)
    backend.flush()
    if drift:
        backend.log_artifact_bytes(new.identifier, CODE_DRIFT_ARTIFACT, drift.report().encode())
    if original is None:
        return
    _record_environment_drift(new, original)
    try:
        comparison = compare(original, new)
    except PcsError as exc:
        _log.warning("pcs: could not compare replay %s with %s: %s", new.identifier,
                     original.identifier, exc)
        return
    reproduced = comparison.reproduced
    if reproduced is None:
        _log.info("pcs: replay %s of %s: outcome not comparable (%s)", new.identifier,
                  original.identifier, comparison.return_value_note)
        return
    new.set_tag(REPRODUCED_TAG, str(reproduced))
    backend.flush()


def _record_environment_drift(new: ComponentRun, original: ComponentRun) -> None:
    """What the plugins say differs in the environment (never a refusal: a note on the run)."""
    lines = plugins.environment_drift(original)
    if not lines:
        return
    _log.warning("pcs: replaying run %s in a different environment: %s", original.identifier,
                 "; ".join(lines[:5]) + ("; ..." if len(lines) > 5 else ""))
    new.set_tag(ENVIRONMENT_DRIFT_TAG, "True")
    text = "Environment drift at replay (recorded vs now):\n" + "".join(
        f"  - {line}\n" for line in lines)
    new.log_text(text, ENVIRONMENT_DRIFT_ARTIFACT)


class _Operations:
    """This module's side of the run objects' replay methods (see :mod:`pcs._upper`)."""

    rerun = staticmethod(rerun)
    compare = staticmethod(compare)
    replay_command = staticmethod(replay_command)


component_run.REPLAY.provide(_Operations())
run_command.REPLAY.provide(_Operations())
