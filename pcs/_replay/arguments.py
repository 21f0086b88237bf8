"""The recorded arguments, rebuilt for a replay: fetched, verified, decoded, bound.

Large values were stored as artifacts by sha256 digest; they are read back
and verified. Values of classes (enums, namedtuples, builtin subclasses) are
decoded only when their module is imported already, is the replayed
callable's, or is allowed: decoding never imports a module a spec names.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final

from pcs import _canon
from pcs._replay.refusal import Refusal
from pcs._replay.resolve import Target
from pcs._replay.safety import matches, route_overrides
from pcs._store import get_backend
from pcs.component import Component
from pcs.component_run import ComponentRun
from pcs.conventions import ARGUMENT_ARTIFACT_DIR
from pcs.exceptions import ReplayError, SpecError, SpecIntegrityError, UnsafeReplayError
from pcs.run_command import RunCommand

__all__ = ["Bound", "Fetch", "class_modules", "rebuild", "recorded_calls", "run_fetcher"]

#: reads a large argument value by its sha256 digest
Fetch = Callable[[str], bytes]
#: a call's arguments, ready to pass: ``(args, kwargs)``
Bound = tuple[tuple[Any, ...], dict[str, Any]]

#: the tags of tree nodes that name a class by ``module:qualname``
_CLASS_TAGS: Final = frozenset({"e", "ev", "nt", "sub"})


def recorded_calls(command: RunCommand) -> dict[str, dict[str, Any]]:
    """The recorded argument trees of the command's component, by entry point."""
    component, entry_point = command.component, command.entry_point
    calls = command.argument_set.encoded().get(component.name)
    if calls is None or entry_point not in calls:
        raise Refusal(
            ReplayError,
            f"its ArgumentSet has no arguments for {component.name}.{entry_point} (it holds "
            f"{sorted(command.argument_set)}). The spec is inconsistent; record the call again.",
        )
    return calls


def run_fetcher(run: ComponentRun) -> Fetch:
    """Reads the large argument values stored with ``run``."""
    backend = get_backend(run.tracking_uri)

    def fetch(digest: str) -> bytes:
        path = f"{ARGUMENT_ARTIFACT_DIR}/{digest}.json"
        try:
            return backend.read_artifact(run.identifier, path)
        except Exception as exc:
            raise ReplayError(
                f"Cannot replay run {run.identifier}: its large argument value {path} cannot be "
                f"read ({type(exc).__name__}: {exc}). Restore the run's artifacts or import the "
                "run with its artifacts.",
                run_id=run.identifier,
            ) from exc

    return fetch


def rebuild(
    component: Component,
    target: Target,
    calls: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, Any],
    known: dict[str, set[str]],
    fetch: Fetch | None,
    prefixes: tuple[str, ...],
) -> dict[str, Bound]:
    """The recorded calls of ``component``, bound to ``target``'s current signatures.

    One ``(args, kwargs)`` per entry point (``__init__`` first for methods),
    large values fetched with ``fetch`` and verified, overrides applied.

    ``known`` (the recorded argument names by entry point) gains the
    current parameters, so an override may name a parameter that was not
    recorded.
    """
    signatures = target.signatures()
    for entry, signature in signatures.items():
        known.setdefault(entry, set()).update(signature.parameters)
    routed = route_overrides(overrides, target.entry_point, known)
    values: dict[str, dict[str, Any]] = {}
    for entry in signatures:
        values[entry] = _decode_call(
            component, entry, calls.get(entry, {}), routed.get(entry, {}), fetch, prefixes
        )
    return {
        entry: _bind(signature, values[entry], f"{component.name}.{entry}")
        for entry, signature in signatures.items()
    }


def _load_blob(ref: _canon.ArtifactRef, fetch: Fetch | None, label: str) -> Any:
    if fetch is None:
        raise Refusal(
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
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, tree in trees.items():
        if name in overrides:
            continue
        label = name if entry != "__init__" else f"__init__.{name}"
        if type(tree) is list and tree and tree[0] == "artifact":
            tree = _load_blob(_canon.decode(tree, root=label), fetch, label)
        if _canon.find_artifact_refs(tree, root=label):
            raise Refusal(
                ReplayError,
                f"argument {label!r} holds a nested artifact reference, which this version of "
                "pcs does not write or read.",
            )
        for module in class_modules(tree):
            if module not in sys.modules and not matches(module, (*prefixes, component.module)):
                raise Refusal(
                    UnsafeReplayError,
                    f"argument {label!r} holds a value of a class from module {module!r}, which "
                    "is not imported and not allowed; pcs does not import modules that a spec "
                    f"names. Import it first or pass allowed_modules=[{module!r}].",
                )
        _refuse_unknown_extensions(tree, label)
        values[name] = _canon.decode(tree, root=label)
    values.update(overrides)
    return values


def _refuse_unknown_extensions(tree: Any, label: str) -> None:
    """Refuse a value encoded by a plugin this process does not have (or has older)."""
    for where, name, version in _canon.find_extensions(tree, root=label):
        extension = _canon.EXTENSIONS.by_name(name)
        if extension is not None and version <= extension.version:
            continue
        why = ("no plugin registers it in this process" if extension is None else
               f"the installed plugin reads up to version {extension.version}")
        raise Refusal(
            ReplayError,
            f"argument {label!r} holds a value ({where}) encoded by the encoding extension "
            f"{name!r}, version {version}, and {why}. Install and enable the plugin that "
            f"wrote it (see pcs.plugins.list_plugins() where it was recorded), or pass the "
            f"value again with overrides={{{label.rpartition('.')[2]!r}: ...}}.",
        )


def class_modules(tree: Any) -> set[str]:
    """The modules of the classes that values in ``tree`` name (decoding would import them)."""
    found: set[str] = set()
    for _path, node in _canon.walk(tree, "value"):
        if node[0] in _CLASS_TAGS and len(node) > 1 and isinstance(node[1], str):
            found.add(node[1].partition(":")[0])
    return found


def _bind(signature: inspect.Signature, values: Mapping[str, Any], label: str) -> Bound:
    names = list(signature.parameters)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise Refusal(
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
        raise Refusal(
            ReplayError,
            f"the recorded arguments do not fit {label}{signature}: {exc}. Supply the missing "
            "ones with overrides={...}.",
        ) from None
    return args, kwargs
