"""The checks a replay makes before it imports anything.

The recorded path must be plain dotted identifiers, its module allowed —
explicitly (``allowed_modules``, ``PCS_REPLAY_ALLOWED_MODULES``) or by the
evidence that you recorded runs of it in this tracking store — and every
argument that was not recorded exactly must be supplied as an override.
"""

from __future__ import annotations

import getpass
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

from pcs import _canon, settings
from pcs._replay.refusal import Refusal
from pcs._store import Backend, get_backend
from pcs._yaml import load_yaml
from pcs.component import Component
from pcs.component_run import ComponentRun
from pcs.conventions import (
    COMPONENT_RUN_TAG,
    ENTRY_POINT_TAG,
    IMPORTED_FROM_TAG,
    IMPORTING_FROM_TAG,
    REGISTRY_ARTIFACT,
    USER_TAG,
)
from pcs.exceptions import ReplayError, UnsafeReplayError, UsageError
from pcs.registry import Registry

__all__ = [
    "ALLOWED_MODULES_ENV",
    "allowed_prefixes",
    "check_missing",
    "check_module_allowed",
    "check_path",
    "matches",
    "route_overrides",
]

_log = logging.getLogger("pcs")

ALLOWED_MODULES_ENV: Final = settings.REPLAY_ALLOWED_MODULES.name
"""Environment variable: comma-separated module prefixes a replay may import."""

#: how many recent runs of the store a replay reads looking for evidence of trust
_MAX_EVIDENCE_RUNS: Final = 200


def check_path(component: Component, entry_point: str) -> None:
    """Refuse a recorded path that is not ``module:qualname`` of plain identifiers."""
    parts = component.module.split(".") + component.qualname.split(".") + [entry_point]
    if all(part.isidentifier() for part in parts):
        return
    if "<locals>" in component.qualname or "<lambda>" in component.qualname:
        raise Refusal(
            ReplayError,
            "it was defined inside a function (or is a lambda), so it cannot be imported "
            "again; move it to module level and record the call again",
        )
    raise Refusal(
        UnsafeReplayError,
        "the recorded path is not a plain 'module:qualname' of Python identifiers",
    )


def allowed_prefixes(allowed_modules: Iterable[str] | None) -> tuple[str, ...]:
    """The module prefixes allowed by the caller and by ``PCS_REPLAY_ALLOWED_MODULES``."""
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


def matches(module: str, prefixes: Iterable[str]) -> bool:
    """Whether ``module`` is one of ``prefixes`` or inside one (``a`` covers ``a.b``)."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def check_module_allowed(
    component: Component,
    entry_point: str,
    prefixes: tuple[str, ...],
    original: ComponentRun | None,
) -> None:
    """Refuse to import the component's module unless it is allowed (nothing is imported)."""
    backend = get_backend()
    if _module_allowed(component.module, entry_point, prefixes, backend, original):
        return
    raise Refusal(
        UnsafeReplayError,
        f"module {component.module!r} is not allowed, so pcs refuses to import it. By default "
        f"a replay imports only modules that you recorded runs of in this tracking store "
        f"({backend.tracking_uri}); runs imported from elsewhere do not count. If you trust "
        f"this code, pass allowed_modules=[{component.module.split('.')[0]!r}] or set "
        f"{ALLOWED_MODULES_ENV}={component.module}.",
    )


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return "unknown"


#: the modules each run recorded, by (tracking URI, run id): runs do not change them
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
    if matches(module, prefixes):
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
    component_runs = f"tags.`{COMPONENT_RUN_TAG}` = 'True'"
    filters = (
        f"{component_runs} and tags.`{ENTRY_POINT_TAG}` = '{entry_point}'",
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
    recorded_user = tags.get(USER_TAG) or record.info.user_id or ""
    if recorded_user not in (user, "unknown", ""):
        return frozenset()
    key = (backend.tracking_uri, record.info.run_id)
    with _evidence_lock:
        cached = _evidence.get(key)
    if cached is not None:
        return cached
    try:
        raw = backend.read_artifact(record.info.run_id, REGISTRY_ARTIFACT)
        registry = Registry.from_dict(
            load_yaml(raw, source=f"run {record.info.run_id}:{REGISTRY_ARTIFACT}")
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


def check_missing(
    calls: Mapping[str, Mapping[str, Any]],
    entry_point: str,
    overrides: Mapping[str, Any],
    known: Mapping[str, set[str]],
) -> None:
    """Refuse when a redacted or unencodable argument is not supplied as an override."""
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
        raise Refusal(
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


def route_overrides(
    overrides: Mapping[str, Any], entry_point: str, known: Mapping[str, set[str]]
) -> dict[str, dict[str, Any]]:
    """The overrides by entry point (``__init__`` or the replayed one) and argument name."""
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
