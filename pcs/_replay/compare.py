""":func:`compare`: two ComponentRuns side by side — arguments, code, status, return value."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from pcs import _canon
from pcs._comparison import Difference, RunComparison
from pcs._replay.arguments import class_modules
from pcs._replay.drift import code_drift
from pcs._store import get_backend
from pcs._yaml import load_yaml
from pcs.component_run import ComponentRun
from pcs.conventions import ERROR_TYPE_TAG
from pcs.exceptions import PcsError, UsageError
from pcs.run import Run
from pcs.run_command import RunCommand

__all__ = ["compare"]


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


@dataclass
class _Observed:
    """What :func:`compare` reads of one run."""

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
        return ComponentRun.handle(run.identifier, run.tracking_uri)
    raise UsageError(f"compare() takes pcs.ComponentRun objects, not {type(run).__name__}.")


def _observe(run: ComponentRun) -> _Observed:
    backend = get_backend(run.tracking_uri)
    backend.flush()
    record = backend.get_run(run.identifier)
    command = run.run_command
    status = str(record.info.status)
    error_type = record.data.tags.get(ERROR_TYPE_TAG)
    found = run.return_value_artifact()
    if found is None:
        return _Observed(command, status, error_type, "none", None,
                         f"run {run.identifier} has no logged return value")
    fmt, path = found
    raw = backend.read_artifact(run.identifier, path)
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
    if any(module not in sys.modules for module in class_modules(tree)):
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
