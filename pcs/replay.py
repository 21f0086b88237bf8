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
"""

from __future__ import annotations

import asyncio
import contextvars
import difflib
import getpass
import hashlib
import importlib
import inspect
import json
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, cast

from pcs import _canon, _stack, settings, tracking
from pcs._backend import Backend, get_backend
from pcs._yaml import load_yaml
from pcs.component import Component, clear_git_cache
from pcs.component_run import ComponentRun
from pcs.conventions import (
    CODE_DRIFT_ARTIFACT,
    CODE_DRIFT_TAG,
    ERROR_TYPE_TAG,
    IMPORTED_FROM_TAG,
    IMPORTING_FROM_TAG,
    OVERRIDES_TAG,
    REPRODUCED_TAG,
    RERUN_OF_TAG,
)
from pcs.exceptions import (
    CodeDriftError,
    PcsError,
    ReplayError,
    SpecError,
    SpecIntegrityError,
    UnsafeReplayError,
    UsageError,
)
from pcs.registry import Registry
from pcs.run import _TERMINAL, Run, _run_from_handle
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

ALLOWED_MODULES_ENV: Final = settings.REPLAY_ALLOWED_MODULES.name
"""Environment variable: comma-separated module prefixes a replay may import."""

_MAX_EVIDENCE_RUNS: Final = 200
_MAX_DIFF_IN_MESSAGE: Final = 6000
_CLASS_TAGS: Final = frozenset({"e", "ev", "nt", "sub"})

Fetch = Callable[[str], bytes]


# =========================================================================== replay


def rerun(
    run: ComponentRun,
    allow_code_drift: bool = False,
    *,
    overrides: Mapping[str, Any] | None = None,
    allowed_modules: Iterable[str] | None = None,
    reraise: bool = True,
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
    run._backend.flush()
    command = run.run_command
    return _replay(
        command,
        original=run,
        fetch=_run_fetcher(run),
        allow_code_drift=allow_code_drift,
        overrides=overrides,
        allowed_modules=allowed_modules,
        reraise=reraise,
    )


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
        artifacts._backend.flush()
        fetch = _run_fetcher(artifacts)
    else:
        raise UsageError(
            f"artifacts= takes a pcs.Registry or a pcs.ComponentRun holding the large argument "
            f"values, not {type(artifacts).__name__}."
        )
    return _replay(
        command,
        original=None,
        fetch=fetch,
        allow_code_drift=allow_code_drift,
        overrides=overrides,
        allowed_modules=allowed_modules,
        reraise=reraise,
    )


@dataclass
class _Target:
    """The callable a replay will call, found by walking ``module:qualname`` statically."""

    kind: str  # "function", "method", "classmethod" or "staticmethod"
    owner: Any  # the module or class holding the entry point
    tracker: tracking._Tracker
    current: Component  # the code identity of what is importable now


def _replay(
    command: RunCommand,
    *,
    original: ComponentRun | None,
    fetch: Fetch | None,
    allow_code_drift: bool,
    overrides: Mapping[str, Any] | None,
    allowed_modules: Iterable[str] | None,
    reraise: bool,
) -> ComponentRun:
    component = command.component
    entry_point = command.entry_point
    run_id = original.identifier if original is not None else None
    label = f"run {run_id}" if run_id else f"RunCommand {command.identifier[:16]}"
    where = f"{label} ({component.path}, entry point {entry_point!r})"

    def fail(cls: type[ReplayError], message: str) -> ReplayError:
        return cls(f"Cannot replay {where}: {message}", run_id=run_id, path=component.path)

    # 1. Safety before importing anything: the path is plain, the module allowed.
    _check_path_syntax(component, entry_point, fail)
    prefixes = _allowed_prefixes(allowed_modules)
    backend = get_backend()
    if not _module_allowed(component.module, entry_point, prefixes, backend, original):
        raise fail(
            UnsafeReplayError,
            f"module {component.module!r} is not allowed, so pcs refuses to import it. By default "
            f"a replay imports only modules that you recorded runs of in this tracking store "
            f"({backend.tracking_uri}); runs imported from elsewhere do not count. If you trust "
            f"this code, pass allowed_modules=[{component.module.split('.')[0]!r}] or set "
            f"{ALLOWED_MODULES_ENV}={component.module}.",
        )
    calls = command.argument_set.encoded().get(component.name)
    if calls is None or entry_point not in calls:
        raise fail(
            ReplayError,
            f"its ArgumentSet has no arguments for {component.name}.{entry_point} (it holds "
            f"{sorted(command.argument_set)}). The spec is inconsistent; record the call again.",
        )
    overrides = dict(overrides or {})
    known = {entry: set(args) for entry, args in calls.items()}
    _check_missing(calls, entry_point, overrides, known, fail)

    # 2. Import and resolve statically; refuse anything that is not tracked.
    target = _resolve(component, entry_point, calls, fail)

    # 3. Code identity.
    problems, diff = code_drift(component, target.current)
    drifted = bool(problems)
    if drifted:
        summary = "; ".join(problems)
        if not allow_code_drift:
            shown = diff if len(diff) <= _MAX_DIFF_IN_MESSAGE else (
                diff[:_MAX_DIFF_IN_MESSAGE] + "\n... (diff truncated; see the error's .diff)\n"
            )
            raise CodeDriftError(
                f"Refusing to replay {where}: the code changed since it was recorded: {summary}. "
                f"Restore the recorded code{_checkout_hint(component)}, or pass "
                "allow_code_drift=True to run the current code anyway (the new run is tagged "
                f"{CODE_DRIFT_TAG}=True).\n{shown}",
                diff,
                run_id=run_id,
                path=component.path,
            )
        _log.warning(
            "pcs: replaying %s with code drift (allow_code_drift=True): %s", where, summary
        )

    # 4. Arguments: artifacts fetched and verified, classes checked, overrides applied.
    signatures = _signatures(target, entry_point)
    for entry, signature in signatures.items():
        known.setdefault(entry, set()).update(signature.parameters)
    routed = _route_overrides(overrides, entry_point, known, fail)
    values: dict[str, dict[str, Any]] = {}
    for entry in signatures:
        values[entry] = _decode_call(
            component, entry, calls.get(entry, {}), routed.get(entry, {}), fetch, prefixes, fail
        )
    bound = {
        entry: _bind(signature, values[entry], f"{component.name}.{entry}", fail)
        for entry, signature in signatures.items()
    }

    # 5. Call it, as a tracked call tagged as a replay.
    tags: dict[str, str] = {}
    if run_id:
        tags[RERUN_OF_TAG] = run_id
    if drifted:
        tags[CODE_DRIFT_TAG] = "True"
    if overrides:
        tags[OVERRIDES_TAG] = ",".join(sorted(overrides))[:5000]
    callable_ = _callable(target, entry_point, bound, fail)
    args, kwargs = bound[entry_point]
    before = _stack.last()
    new, error = _invoke(callable_, args, kwargs, target.tracker, tags)
    if new is None or new is before or not isinstance(new, ComponentRun):
        if error is not None and reraise:
            raise error
        raise fail(
            ReplayError,
            "the call ran, but pcs could not record it as a new run (see the warning pcs "
            "logged). Check that the tracking store is reachable and writable.",
        )
    _stack.set_last(new)
    _after_replay(new, original, diff if drifted else "", problems)
    if error is not None and reraise:
        raise error
    return new


def _checkout_hint(component: Component) -> str:
    if component.git_commit:
        return f" (git checkout {component.git_commit[:12]}, then replay in a fresh process)"
    return ""


def _after_replay(
    new: ComponentRun, original: ComponentRun | None, diff: str, problems: list[str]
) -> None:
    """Record the drift and whether the replay reproduced the original."""
    new._backend.flush()
    if problems:
        text = "Code drift at replay:\n" + "".join(f"  - {p}\n" for p in problems)
        new._backend.log_artifact_bytes(
            new.identifier, CODE_DRIFT_ARTIFACT, (text + "\n" + diff).encode()
        )
    if original is None:
        return
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
    new._backend.flush()


# --------------------------------------------------------------------------- safety


def _check_path_syntax(
    component: Component, entry_point: str, fail: Callable[[type[ReplayError], str], ReplayError]
) -> None:
    parts = component.module.split(".") + component.qualname.split(".") + [entry_point]
    if all(part.isidentifier() for part in parts):
        return
    if "<locals>" in component.qualname or "<lambda>" in component.qualname:
        raise fail(
            ReplayError,
            "it was defined inside a function (or is a lambda), so it cannot be imported "
            "again; move it to module level and record the call again",
        )
    raise fail(
        UnsafeReplayError,
        "the recorded path is not a plain 'module:qualname' of Python identifiers",
    )


def _allowed_prefixes(allowed_modules: Iterable[str] | None) -> tuple[str, ...]:
    found: list[str] = []
    if isinstance(allowed_modules, str):
        raise UsageError(
            f"allowed_modules={allowed_modules!r} must be a list of module prefixes, e.g. "
            f"allowed_modules=[{allowed_modules!r}]."
        )
    sources = [("allowed_modules", list(allowed_modules or ()))]
    sources.append((ALLOWED_MODULES_ENV, list(settings.REPLAY_ALLOWED_MODULES.get())))
    for origin, prefixes in sources:
        for prefix in prefixes:
            if not isinstance(prefix, str) or not all(
                part.isidentifier() for part in prefix.split(".")
            ):
                raise UsageError(
                    f"{origin}: {prefix!r} is not a module prefix such as 'mypkg' or "
                    "'mypkg.models' (dotted Python identifiers)."
                )
            found.append(prefix)
    return tuple(found)


def _matches(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return "unknown"


_evidence: dict[tuple[str, str], frozenset[str]] = {}
_evidence_lock = threading.Lock()


def _module_allowed(
    module: str,
    entry_point: str,
    prefixes: tuple[str, ...],
    backend: Backend,
    original: ComponentRun | None,
) -> bool:
    """Whether a replay may import ``module`` (nothing is imported here)."""
    if _matches(module, prefixes):
        return True
    backend.flush()
    user = _current_user()
    seen: set[str] = set()
    if original is not None and original.tracking_uri == backend.tracking_uri:
        record = backend.get_run(original.identifier)
        seen.add(original.identifier)
        if module in _recorded_modules(backend, record, user):
            return True
    # Runs of the same entry point first (most likely the same callable), then any.
    component_runs = f"tags.`{ComponentRun.IS_COMPONENT_RUN_TAG}` = 'True'"
    filters = (
        f"{component_runs} and tags.`{ComponentRun.ENTRY_POINT_TAG}` = '{entry_point}'",
        component_runs,
    )
    for filter_string in filters:
        for count, record in enumerate(
            backend.iter_runs(filter_string, ["attributes.start_time DESC"])
        ):
            if count >= _MAX_EVIDENCE_RUNS:
                break
            if record.info.run_id in seen:
                continue
            seen.add(record.info.run_id)
            if module in _recorded_modules(backend, record, user):
                return True
    return False


def _recorded_modules(backend: Backend, record: Any, user: str) -> frozenset[str]:
    """Modules of the components a run recorded, if the run counts as evidence of trust.

    A run counts when it was recorded in this store (not imported) by this
    user; runs that recorded no user (pcs runs record none yet) count too.
    """
    tags = record.data.tags
    if IMPORTED_FROM_TAG in tags or IMPORTING_FROM_TAG in tags:
        return frozenset()
    recorded_user = tags.get("mlflow.user") or record.info.user_id or ""
    if recorded_user not in (user, "unknown", ""):
        return frozenset()
    key = (backend.tracking_uri, record.info.run_id)
    with _evidence_lock:
        cached = _evidence.get(key)
    if cached is not None:
        return cached
    try:
        raw = backend.read_artifact(record.info.run_id, ComponentRun.REGISTRY_ARTIFACT)
        registry = Registry.from_dict(
            load_yaml(raw, source=f"run {record.info.run_id}:{ComponentRun.REGISTRY_ARTIFACT}")
        )
        modules = frozenset(
            str(fields.get("module")) for fields in registry.get_component_specs().values()
        )
    except Exception as exc:
        _log.debug("pcs: run %s is no evidence for replay: %s", record.info.run_id, exc)
        modules = frozenset()
    with _evidence_lock:
        _evidence[key] = modules
    return modules


def _check_missing(
    calls: Mapping[str, Mapping[str, Any]],
    entry_point: str,
    overrides: Mapping[str, Any],
    known: Mapping[str, set[str]],
    fail: Callable[[type[ReplayError], str], ReplayError],
) -> None:
    supplied: set[tuple[str, str]] = set()
    unknown: list[str] = []
    for key in overrides:
        entry, name = _override_target(key, entry_point, known)
        if entry is not None:
            supplied.add((entry, name))
        else:
            unknown.append(str(key))
    missing: list[str] = []
    names: list[str] = []
    for entry, args in calls.items():
        for name, tree in args.items():
            if (entry, name) in supplied:
                continue
            label = name if entry == entry_point else f"{entry}.{name}"
            redacted = _canon.find_redacted(tree, root=label)
            if redacted:
                missing.append(f"argument {label!r} was not recorded ({redacted[0]})")
                names.append(label)
                continue
            problems = _canon.find_placeholders(tree, root=label)
            if problems:
                missing.append(f"argument {label!r} could not be recorded exactly ({problems[0]})")
                names.append(label)
    if missing and unknown:
        raise UsageError(
            f"overrides: {', '.join(map(repr, unknown))} names no recorded argument of "
            f"{entry_point}, and {', '.join(map(repr, names))} must still be supplied. Use the "
            "argument names shown in the run's ArgumentSet."
        )
    if missing:
        example = ", ".join(f"{n!r}: ..." for n in names)
        raise fail(
            ReplayError,
            f"it is not reproducible as recorded: {'; '.join(missing)}. Supply the missing "
            f"values by name: rerun(overrides={{{example}}}).",
        )


def _override_target(
    key: object, entry_point: str, known: Mapping[str, set[str]]
) -> tuple[str | None, str]:
    """Which (entry point, argument) an override key names; (None, key) if unknown."""
    if not isinstance(key, str):
        return None, str(key)
    entry, dot, name = key.rpartition(".")
    if dot:
        return (entry if name in known.get(entry, ()) else None), name
    if key in known.get(entry_point, ()):
        return entry_point, key
    if key in known.get("__init__", ()):
        return "__init__", key
    return None, key


def _route_overrides(
    overrides: Mapping[str, Any],
    entry_point: str,
    known: Mapping[str, set[str]],
    fail: Callable[[type[ReplayError], str], ReplayError],
) -> dict[str, dict[str, Any]]:
    routed: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        entry, name = _override_target(key, entry_point, known)
        if entry is None:
            choices = sorted(
                name if e == entry_point else f"{e}.{name}"
                for e, names in known.items()
                for name in names
            )
            raise UsageError(
                f"overrides: {key!r} names no argument of the replayed call; it takes "
                f"{choices}. Use the argument's name (or '__init__.<name>' for the instance's "
                "__init__ arguments)."
            )
        routed.setdefault(entry, {})[name] = value
    return routed


# --------------------------------------------------------------------------- resolution


def _import_module(
    module: str, fail: Callable[[type[ReplayError], str], ReplayError]
) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise fail(
                ReplayError,
                f"module {module!r} no longer exists (it cannot be imported from sys.path). "
                "Install or restore the code that defined it, or put its folder on sys.path "
                "(PYTHONPATH).",
            ) from None
        raise fail(
            ReplayError,
            f"importing module {module!r} failed: ModuleNotFoundError: {exc}. Install what it "
            "imports.",
        ) from exc
    except Exception as exc:
        raise fail(
            ReplayError,
            f"importing module {module!r} raised {type(exc).__name__}: {exc}. Fix the module.",
        ) from exc


def _static(obj: Any, name: str, where: str,
            fail: Callable[[type[ReplayError], str], ReplayError]) -> Any:
    """``getattr`` without running descriptors, properties or ``__getattr__``."""
    try:
        return inspect.getattr_static(obj, name)
    except AttributeError:
        raise fail(
            ReplayError,
            f"{where} has no attribute {name!r} any more; it was renamed, moved or deleted "
            "since the run was recorded.",
        ) from None


def _tracker_of(obj: Any) -> tracking._Tracker | None:
    try:
        found = inspect.getattr_static(obj, "__pcs_tracked__", None)
    except Exception:
        return None
    return found if isinstance(found, tracking._Tracker) else None


def _is_tracked_class(cls: type) -> bool:
    return any(
        isinstance(base.__dict__, Mapping) and base.__dict__.get(tracking.TRACKED_CLASS_ATTR)
        for base in cls.__mro__
    )


def _resolve(
    component: Component,
    entry_point: str,
    calls: Mapping[str, Any],
    fail: Callable[[type[ReplayError], str], ReplayError],
) -> _Target:
    clear_git_cache()  # the work tree may have changed since this process looked
    module = _import_module(component.module, fail)
    owner: Any = module
    obj: Any = module
    where = f"module {component.module!r}"
    for part in component.qualname.split("."):
        owner = obj
        obj = _static(obj, part, where, fail)
        where = f"{component.module}:{part}" if owner is module else f"{where}.{part}"
    not_tracked = (
        "pcs runs only @pcs.tracked code (a spec can name any importable callable, such as "
        "os:system). If this is your code, decorate it with @pcs.tracked and record the "
        "call again."
    )
    if isinstance(obj, type):
        raw = _static(obj, entry_point, f"class {component.path}", fail)
        tracker = _tracker_of(raw)
        if tracker is None:
            raise fail(
                UnsafeReplayError,
                f"{component.path}.{entry_point} is not a @pcs.tracked callable. {not_tracked}",
            )
        wrapped = getattr(raw, "__wrapped__", None)
        if isinstance(wrapped, classmethod):
            kind = "classmethod"
        elif isinstance(wrapped, staticmethod):
            kind = "staticmethod"
        else:
            kind = "method"
            if not _is_tracked_class(obj):
                raise fail(
                    UnsafeReplayError,
                    f"class {component.path} is not a @pcs.tracked class, so pcs will not "
                    f"create an instance of it to call {entry_point}. {not_tracked}",
                )
            if "__init__" not in calls:
                raise fail(
                    ReplayError,
                    f"the __init__ arguments of the {component.qualname} instance were not "
                    "recorded (its class was not @pcs.tracked when the call was made); decorate "
                    "the class with @pcs.tracked and record the call again.",
                )
        return _Target(kind, obj, tracker, Component.from_callable(obj))
    tracker = _tracker_of(obj)
    if tracker is None:
        raise fail(UnsafeReplayError, f"{component.path} is not a @pcs.tracked callable. "
                   f"{not_tracked}")
    if tracker.entry_point != entry_point:
        raise fail(
            ReplayError,
            f"{component.path} is now a callable named {tracker.entry_point!r}, not "
            f"{entry_point!r}; the code changed since the run was recorded.",
        )
    return _Target("function", owner, tracker, Component.from_callable(tracker.fn))


def _signatures(target: _Target, entry_point: str) -> dict[str, inspect.Signature]:
    """The signatures to bind, by entry point (``__init__`` first for methods)."""
    signature = target.tracker.signature
    params = list(signature.parameters.values())
    result: dict[str, inspect.Signature] = {}
    if target.kind == "method":
        init = inspect.signature(target.owner.__init__)
        result["__init__"] = init.replace(parameters=list(init.parameters.values())[1:])
    if target.kind in ("method", "classmethod"):
        signature = signature.replace(parameters=params[1:])
    result[entry_point] = signature
    return result


def _callable(
    target: _Target,
    entry_point: str,
    bound: Mapping[str, tuple[tuple[Any, ...], dict[str, Any]]],
    fail: Callable[[type[ReplayError], str], ReplayError],
) -> Callable[..., Any]:
    if target.kind != "method":
        return getattr(target.owner, entry_point)  # type: ignore[no-any-return]
    args, kwargs = bound["__init__"]
    try:
        instance = target.owner(*args, **kwargs)
    except Exception as exc:
        raise fail(
            ReplayError,
            f"re-creating the {target.owner.__qualname__} instance from its recorded __init__ "
            f"arguments raised {type(exc).__name__}: {exc}",
        ) from exc
    return getattr(instance, entry_point)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- code identity


def code_drift(recorded: Component, current: Component) -> tuple[list[str], str]:
    """What differs between the recorded code identity and the current one.

    Returns ``(problems, diff)``: human-readable differences (empty: the same
    code) and a unified diff of the recorded source against the current one.
    The git commit and dirty state are compared only when they were recorded;
    a run recorded with uncommitted changes is verified by its source alone.
    """
    problems: list[str] = []
    if (recorded.module, recorded.qualname) != (current.module, current.qualname):
        problems.append(f"{recorded.path} is now defined as {current.path}")
    if recorded.source_sha256 is None or recorded.source is None:
        problems.append("the run recorded no source text, so its code cannot be verified")
    elif current.source_sha256 is None:
        problems.append("the current source cannot be read, so the code cannot be verified")
    elif recorded.source_sha256 != current.source_sha256:
        problems.append(
            f"its source changed (sha256 {recorded.source_sha256[:12]} recorded, "
            f"{current.source_sha256[:12]} now)"
        )
    if recorded.git_commit:
        if current.git_commit != recorded.git_commit:
            now = current.git_commit[:12] if current.git_commit else "no git work tree"
            problems.append(f"git commit {recorded.git_commit[:12]} recorded, {now} now")
        elif recorded.git_dirty is False and current.git_dirty:
            problems.append(
                "the git work tree was clean when the run was recorded and has uncommitted "
                "changes now"
            )
    diff = ""
    if (recorded.source or "") != (current.source or ""):
        diff = "".join(
            difflib.unified_diff(
                (recorded.source or "").splitlines(keepends=True),
                (current.source or "").splitlines(keepends=True),
                fromfile=f"recorded {recorded.path}",
                tofile=f"current {current.path} ({current.source_file or 'no file'})",
            )
        )
        if diff and not diff.endswith("\n"):
            diff += "\n"
    return problems, diff


# --------------------------------------------------------------------------- arguments


def _run_fetcher(run: ComponentRun) -> Fetch:
    def fetch(digest: str) -> bytes:
        path = f"{ComponentRun.ARGUMENT_ARTIFACT_DIR}/{digest}.json"
        try:
            return run._backend.read_artifact(run.identifier, path)
        except Exception as exc:
            raise ReplayError(
                f"Cannot replay run {run.identifier}: its large argument value {path} cannot be "
                f"read ({type(exc).__name__}: {exc}). Restore the run's artifacts or import the "
                "run with its artifacts.",
                run_id=run.identifier,
            ) from exc

    return fetch


def _load_blob(
    ref: _canon.ArtifactRef,
    fetch: Fetch | None,
    label: str,
    fail: Callable[[type[ReplayError], str], ReplayError],
) -> Any:
    if fetch is None:
        raise fail(
            ReplayError,
            f"argument {label!r} is stored as the artifact sha256:{ref.digest}; pass "
            "artifacts=<the Registry or ComponentRun holding it> to RunCommand.run(), or use "
            "ComponentRun.rerun().",
        )
    blob = fetch(ref.digest)
    actual = hashlib.sha256(blob).hexdigest()
    if actual != ref.digest or len(blob) != ref.size:
        raise SpecIntegrityError(
            f"The stored value of argument {label!r} (artifact sha256:{ref.digest}, "
            f"{ref.size} bytes) is corrupt: it hashes to {actual} ({len(blob)} bytes). Restore "
            "the artifact from the original store or export.",
            ref.digest,
            expected=ref.digest,
            actual=actual,
        )
    try:
        tree = json.loads(blob)
        _canon.validate(tree, root=label)
    except (ValueError, SpecError) as exc:
        raise SpecError(
            f"The stored value of argument {label!r} (artifact sha256:{ref.digest}) is not a "
            f"pcs-canon/1 tree: {exc}",
            ref.digest,
        ) from exc
    return tree


def _decode_call(
    component: Component,
    entry: str,
    trees: Mapping[str, Any],
    overrides: Mapping[str, Any],
    fetch: Fetch | None,
    prefixes: tuple[str, ...],
    fail: Callable[[type[ReplayError], str], ReplayError],
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, tree in trees.items():
        if name in overrides:
            continue
        label = name if entry != "__init__" else f"__init__.{name}"
        if type(tree) is list and tree and tree[0] == "artifact":
            tree = _load_blob(_canon.decode(tree, root=label), fetch, label, fail)
        if _canon.find_artifact_refs(tree, root=label):
            raise fail(
                ReplayError,
                f"argument {label!r} holds a nested artifact reference, which this version of "
                "pcs does not write or read.",
            )
        for module in _class_modules(tree):
            if module not in sys.modules and not _matches(module, (*prefixes, component.module)):
                raise fail(
                    UnsafeReplayError,
                    f"argument {label!r} holds a value of a class from module {module!r}, which "
                    "is not imported and not allowed; pcs does not import modules that a spec "
                    f"names. Import it first or pass allowed_modules=[{module!r}].",
                )
        values[name] = _canon.decode(tree, root=label)
    values.update(overrides)
    return values


def _class_modules(tree: Any) -> set[str]:
    found: set[str] = set()
    for _path, node in _canon._walk(tree, "value"):
        if node[0] in _CLASS_TAGS and len(node) > 1 and isinstance(node[1], str):
            found.add(node[1].partition(":")[0])
    return found


def _bind(
    signature: inspect.Signature,
    values: Mapping[str, Any],
    label: str,
    fail: Callable[[type[ReplayError], str], ReplayError],
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    names = list(signature.parameters)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise fail(
            ReplayError,
            f"the recorded arguments {unknown} are not parameters of {label}{signature} any "
            "more; the code changed since the run was recorded.",
        )
    arguments = OrderedDict((name, values[name]) for name in names if name in values)
    bound = inspect.BoundArguments(signature, arguments)
    args, kwargs = bound.args, bound.kwargs
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise fail(
            ReplayError,
            f"the recorded arguments do not fit {label}{signature}: {exc}. Supply the missing "
            "ones with overrides={...}.",
        ) from None
    return args, kwargs


# --------------------------------------------------------------------------- calling


@dataclass
class _Outcome:
    run: Run | None
    error: Exception | None


def _invoke(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tracker: tracking._Tracker,
    tags: dict[str, str],
) -> tuple[Run | None, Exception | None]:
    """Call ``fn`` as the next tracked call of this context, tagged with ``tags``."""
    target = tracker.fn
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        is_agen = inspect.isasyncgenfunction(target)

        async def drive() -> _Outcome:
            try:
                if is_agen:
                    async for _item in fn(*args, **kwargs):
                        pass
                else:
                    await fn(*args, **kwargs)
            except Exception as exc:
                return _Outcome(_stack.last(), exc)
            return _Outcome(_stack.last(), None)

        token = _stack.set_call_tags(dict(tags))
        try:
            outcome = _run_coroutine(drive)
        finally:
            _stack.reset_call_tags(token)
        return outcome.run, outcome.error
    token = _stack.set_call_tags(dict(tags))
    error: Exception | None = None
    try:
        result = fn(*args, **kwargs)
        if inspect.isgeneratorfunction(target):
            for _item in result:
                pass
    except Exception as exc:
        error = exc
    finally:
        _stack.reset_call_tags(token)
    return _stack.last(), error


def _run_coroutine(factory: Callable[[], Any]) -> _Outcome:
    """Run a coroutine to completion, also when an event loop is already running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        outcome: _Outcome = asyncio.run(factory())
        return outcome
    # A loop is running in this thread: run on a fresh loop in a worker thread, in a
    # copy of this context (so the replay still nests under the active run).
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcs-replay") as pool:
        result: _Outcome = pool.submit(context.run, lambda: asyncio.run(factory())).result()
    return result


# =========================================================================== compare


@dataclass(frozen=True)
class Difference:
    """One thing that differs between two runs: ``what``, the ``left`` and ``right`` values."""

    what: str
    left: Any
    right: Any

    def __str__(self) -> str:
        return f"{self.what}: {_short(self.left)} != {_short(self.right)}"


@dataclass(frozen=True)
class RunComparison:
    """What differs between two ComponentRuns (see :func:`compare`).

    Each field is a tuple of :class:`Difference` (empty: the same).
    ``return_value`` is None when the return values are equal *or* could not
    be compared; :attr:`same_return_value` tells which (``None``: unknown,
    with the reason in :attr:`return_value_note`).
    """

    left_id: str
    right_id: str
    arguments: tuple[Difference, ...]
    code: tuple[Difference, ...]
    source_diff: str
    status: tuple[Difference, ...]
    return_value: Difference | None
    return_value_compared: bool
    return_value_note: str
    left_status: str
    right_status: str

    @property
    def same_arguments(self) -> bool:
        """True when every argument (``__init__`` ones included) is identical."""
        return not self.arguments

    @property
    def same_code(self) -> bool:
        """True when the callable, entry point, source and recorded git state are identical."""
        return not self.code

    @property
    def same_status(self) -> bool:
        """True when both runs ended the same way (and with the same error type, if any)."""
        return not self.status

    @property
    def same_return_value(self) -> bool | None:
        """True/False when the return values were compared; None when they could not be."""
        if not self.return_value_compared:
            return None
        return self.return_value is None

    @property
    def reproduced(self) -> bool | None:
        """Whether ``right`` has the same outcome as ``left``; None when that is unknown.

        The same outcome: the same status, and the same return value
        (FINISHED) or the same error type (FAILED, KILLED).
        """
        if self.left_status not in _TERMINAL or self.right_status not in _TERMINAL:
            return None  # a run still running has no outcome yet
        if not self.same_status:
            return False
        if self.left_status != "FINISHED":
            return True
        return self.same_return_value

    @property
    def differences(self) -> tuple[Difference, ...]:
        """Every difference found, in the order arguments, code, status, return value."""
        tail = (self.return_value,) if self.return_value is not None else ()
        return (*self.arguments, *self.code, *self.status, *tail)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible summary (values rendered with ``repr``)."""

        def rows(diffs: Iterable[Difference]) -> list[dict[str, str]]:
            return [{"what": d.what, "left": _short(d.left), "right": _short(d.right)}
                    for d in diffs]

        return {
            "left": self.left_id,
            "right": self.right_id,
            "arguments": rows(self.arguments),
            "code": rows(self.code),
            "source_diff": self.source_diff,
            "status": rows(self.status),
            "return_value": rows([self.return_value] if self.return_value else []),
            "same_return_value": self.same_return_value,
            "return_value_note": self.return_value_note,
            "reproduced": self.reproduced,
        }

    def __str__(self) -> str:
        lines = [f"Run {self.left_id} vs run {self.right_id}:"]
        for title, diffs in (("arguments", self.arguments), ("code", self.code),
                             ("status", self.status)):
            if diffs:
                lines.append(f"  {title}:")
                lines.extend(f"    {d}" for d in diffs)
            else:
                lines.append(f"  {title}: same")
        if self.return_value is not None:
            lines.append(f"  return value: {self.return_value}")
        elif self.return_value_compared:
            lines.append("  return value: same")
        else:
            lines.append(f"  return value: not compared ({self.return_value_note})")
        lines.append(f"  reproduced: {self.reproduced}")
        return "\n".join(lines)


def _short(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class _Observed:
    command: RunCommand
    status: str
    error_type: str | None
    value_kind: str  # "tree", "pickle" or "none"
    value: Any
    note: str


def _component_handle(run: Run) -> ComponentRun:
    if isinstance(run, ComponentRun):
        return run
    if isinstance(run, Run):
        return cast(ComponentRun, _run_from_handle(ComponentRun, run.identifier, run.tracking_uri))
    raise UsageError(f"compare() takes pcs.ComponentRun objects, not {type(run).__name__}.")


def _observe(run: ComponentRun) -> _Observed:
    run._backend.flush()
    record = run._backend.get_run(run.identifier)
    command = run.run_command
    status = str(record.info.status)
    error_type = record.data.tags.get(ERROR_TYPE_TAG)
    found = run.return_value_artifact()
    if found is None:
        return _Observed(command, status, error_type, "none", None,
                         f"run {run.identifier} has no logged return value")
    fmt, path = found
    raw = run._backend.read_artifact(run.identifier, path)
    if fmt == "pickle":
        return _Observed(command, status, error_type, "pickle", raw, "")
    try:
        envelope = json.loads(raw) if fmt == "json" else load_yaml(raw, source=path)
        tree = envelope["value"]
        _canon.validate(tree)
    except (ValueError, KeyError, TypeError, PcsError) as exc:
        return _Observed(command, status, error_type, "none", None,
                         f"the return value of run {run.identifier} cannot be read: {exc}")
    return _Observed(command, status, error_type, "tree", tree, "")


def _display(tree: Any) -> Any:
    """A readable value for a tree: decoded when that imports nothing new, else the tree."""
    if any(module not in sys.modules for module in _class_modules(tree)):
        return tree
    try:
        return _canon.decode(tree)
    except PcsError:
        return tree


def _compare_values(left: _Observed, right: _Observed) -> tuple[bool, Difference | None, str]:
    if left.value_kind == "none" or right.value_kind == "none":
        return False, None, left.note or right.note
    if left.value_kind != right.value_kind:
        return False, None, "one return value is a pickle and the other is not"
    if left.value_kind == "pickle":
        if left.value == right.value:
            return True, None, ""
        return False, None, (
            "the pickled return values differ byte for byte; pcs does not unpickle them to "
            "compare (load_return_value(trust=True) if you trust both runs)"
        )
    for tree in (left.value, right.value):
        if _canon.find_placeholders(tree):
            return False, None, "a return value holds a value pcs cannot encode exactly"
    if _canon.digest(left.value) == _canon.digest(right.value):
        return True, None, ""
    return True, Difference("return_value", _display(left.value), _display(right.value)), ""


def compare(left: Run, right: Run) -> RunComparison:
    """Compare two ComponentRuns: arguments, code identity, status and return value.

    The runs may live in different tracking stores. Return values are
    compared by their exact typed encoding (so ``1`` and ``1.0`` differ);
    pickled return values are compared byte for byte and never unpickled.
    """
    a, b = _component_handle(left), _component_handle(right)
    la, lb = _observe(a), _observe(b)

    arguments: list[Difference] = []
    ta, tb = la.command.argument_set.encoded(), lb.command.argument_set.encoded()
    for component in sorted(set(ta) | set(tb)):
        ca, cb = ta.get(component, {}), tb.get(component, {})
        for entry in sorted(set(ca) | set(cb)):
            ea, eb = ca.get(entry, {}), cb.get(entry, {})
            for name in sorted(set(ea) | set(eb)):
                x, y = ea.get(name), eb.get(name)
                if x is not None and y is not None and _canon.digest(x) == _canon.digest(y):
                    continue
                what = f"{component}.{entry}({name})"
                arguments.append(Difference(
                    what,
                    _display(x) if x is not None else "<absent>",
                    _display(y) if y is not None else "<absent>",
                ))

    code: list[Difference] = []
    xa, xb = la.command.component, lb.command.component
    for field_name in ("module", "qualname", "source_sha256", "git_commit", "git_dirty"):
        va, vb = getattr(xa, field_name), getattr(xb, field_name)
        if va != vb:
            code.append(Difference(field_name, va, vb))
    if la.command.entry_point != lb.command.entry_point:
        code.append(Difference("entry_point", la.command.entry_point, lb.command.entry_point))
    source_diff = code_drift(xa, xb)[1]

    status: list[Difference] = []
    if la.status != lb.status:
        status.append(Difference("status", la.status, lb.status))
    if la.error_type != lb.error_type:
        status.append(Difference("error_type", la.error_type, lb.error_type))

    compared, value_diff, note = _compare_values(la, lb)
    return RunComparison(
        left_id=a.identifier,
        right_id=b.identifier,
        arguments=tuple(arguments),
        code=tuple(code),
        source_diff=source_diff,
        status=tuple(status),
        return_value=value_diff,
        return_value_compared=compared,
        return_value_note=note,
        left_status=la.status,
        right_status=lb.status,
    )
