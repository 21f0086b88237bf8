"""What ``pcs show`` and ``pcs diff`` say about runs: as data (``--json``) and as text.

:func:`describe` gathers one run — status and error, arguments, return value,
code identity, environment, params, metrics, lineage, children — into JSON-compatible
data; :func:`show_text` lays it out. :func:`diff` compares two runs (for
tracked calls through :func:`pcs.compare`) and adds their environments.
Values are shown as JSON when they are JSON-compatible, else by ``repr``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pcs import _render, conventions, lineage
from pcs._store import Backend, get_backend
from pcs.component_run import ComponentRun
from pcs.exceptions import PcsError
from pcs.query import child_records, wrap

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun

__all__ = ["ENVIRONMENT_PREFIXES", "describe", "diff", "diff_text", "show_text"]

#: tags that describe where a run ran (the environment plugin's and MLflow's)
ENVIRONMENT_PREFIXES = ("pcs.env.", "mlflow.source.")
#: how far up the tree ``pcs show`` looks for the environment of a nested run
_MAX_DEPTH = 100
_SHORT = 300


def _plain(value: Any) -> Any:
    """The value itself when it is JSON-compatible, else its (shortened) ``repr``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        text = repr(value)
        return text if len(text) <= _SHORT else text[: _SHORT - 1] + "…"
    return value


def environment(record: MlflowRun) -> dict[str, str]:
    """The run's environment tags (``pcs.env.*``, ``mlflow.source.*``)."""
    return {k: v for k, v in sorted(record.data.tags.items())
            if k.startswith(ENVIRONMENT_PREFIXES)}


def _inherited_environment(backend: Backend, record: MlflowRun) -> tuple[dict[str, str], str]:
    """The environment of the run, or of the nearest run above it that has one."""
    current = record
    for _ in range(_MAX_DEPTH):
        found = environment(current)
        parent = current.data.tags.get(conventions.PARENT_RUN_ID_TAG)
        if found or not parent:
            return found, current.info.run_id
        current = backend.get_run(parent)
    return {}, record.info.run_id


def _call(run: ComponentRun) -> dict[str, Any]:
    """Arguments, return value and code identity of a tracked call."""
    out: dict[str, Any] = {"entry_point": run.data.tags.get(conventions.ENTRY_POINT_TAG)}
    try:
        command = run.run_command
    except PcsError as exc:
        out["arguments"] = {"<not readable>": str(exc)}
        return out
    component = command.component
    try:
        args = command.argument_set.get_function_args(component.name, command.entry_point)
        out["arguments"] = {name: _plain(value) for name, value in args.items()}
    except Exception as exc:  # placeholders, values kept as artifacts: say so, go on
        out["arguments"] = {"<not decoded>": f"{type(exc).__name__}: {exc}"}
    out["code"] = {key: getattr(component, key) for key in (
        "module", "qualname", "source_file", "source_sha256", "git_commit", "git_dirty")}
    out["reproducible"] = run.is_reproducible
    out["not_reproducible_reasons"] = run.not_reproducible_reasons
    out["return_value"] = _return_value(run)
    return out


def _return_value(run: ComponentRun) -> dict[str, Any] | None:
    found = run.return_value_artifact()
    if found is None:
        error = run.data.tags.get(conventions.RETURN_VALUE_ERROR_TAG)
        return {"note": f"not stored: {error}"} if error else None
    fmt, path = found
    if fmt == "pickle":
        return {"format": fmt, "note": f"a pickle ({path}), not loaded: use "
                "ComponentRun.load_return_value(trust=True) if you trust the store"}
    try:
        return {"format": fmt, "value": _plain(run.load_return_value())}
    except Exception as exc:
        return {"format": fmt, "note": f"not readable: {type(exc).__name__}: {exc}"}


def _error(backend: Backend, record: MlflowRun) -> dict[str, Any] | None:
    error_type = record.data.tags.get(conventions.ERROR_TYPE_TAG)
    if error_type is None:
        return None
    last = ""
    try:
        text = backend.read_artifact(record.info.run_id, conventions.TRACEBACK_ARTIFACT)
        lines = [line for line in text.decode(errors="replace").splitlines() if line.strip()]
        last = lines[-1] if lines else ""
    except Exception:  # the traceback artifact is optional
        last = ""
    return {"type": error_type, "message": last, "traceback": conventions.TRACEBACK_ARTIFACT}


def describe(backend: Backend, record: MlflowRun) -> dict[str, Any]:
    """Everything ``pcs show`` prints about one run, as JSON-compatible data."""
    info, data = record.info, record.data
    run = wrap(backend, record)
    env, env_from = _inherited_environment(backend, record)
    children = child_records(backend, info.run_id)
    out: dict[str, Any] = {
        "id": info.run_id,
        "name": _render.run_name(record),
        "kind": type(run).__name__,
        "status": info.status,
        "experiment_id": info.experiment_id,
        "experiment": backend.experiment_name(info.experiment_id),
        "start_time": _render.iso_time(info.start_time),
        "end_time": _render.iso_time(info.end_time),
        "duration_s": (None if (took := _render.duration_ms(record)) is None else took / 1000),
        "parent": data.tags.get(conventions.PARENT_RUN_ID_TAG),
        "rerun_of": data.tags.get(conventions.RERUN_OF_TAG),
        "error": _error(backend, record),
        "params": dict(sorted(data.params.items())),
        "metrics": {k: float(v) for k, v in sorted(data.metrics.items())},
        "environment": env,
        "environment_from": env_from if env_from != info.run_id else None,
        "children": [_child(c) for c in children],
    }
    if isinstance(run, ComponentRun):
        out.update(_call(run))
        out["inputs"] = [_edge(edge) for edge in lineage.inputs(run)]
        out["consumers"] = [_edge(edge) for edge in lineage.consumers(run)]
    return out


def _edge(edge: lineage.Edge) -> dict[str, Any]:
    info = edge.run.info
    return {"path": edge.path, "id": info.run_id, "name": info.run_name,
            "status": info.status}


def _child(record: MlflowRun) -> dict[str, Any]:
    info = record.info
    return {"id": info.run_id, "name": _render.run_name(record), "status": info.status}


def _section(title: str, rows: dict[str, Any]) -> list[str]:
    if not rows:
        return []
    return [title] + [f"  {key} = {_one_line(value)}" for key, value in rows.items()]


def _one_line(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "\\n")
    return text if len(text) <= _SHORT else text[: _SHORT - 1] + "…"


def show_text(report: dict[str, Any]) -> str:
    """The text of ``pcs show``."""
    lines = [
        f"{report['kind']} {report['id']}  {report['name']}",
        f"  status      {report['status']} after {_render.duration_text(_ms(report))}",
        f"  started     {report['start_time']}",
        f"  experiment  {report['experiment']} ({report['experiment_id']})",
    ]
    for key, label in (("parent", "parent"), ("rerun_of", "rerun of"),
                       ("entry_point", "entry point")):
        if report.get(key):
            lines.append(f"  {label:<11} {report[key]}")
    error = report.get("error")
    if error:
        lines.append(f"  error       {error['message'] or error['type']} "
                     f"(traceback: artifact {error['traceback']})")
    if report.get("not_reproducible_reasons"):
        lines.append("  not reproducible: " + "; ".join(report["not_reproducible_reasons"]))
    lines += _section("arguments", report.get("arguments") or {})
    value = report.get("return_value")
    if value is not None:
        shown = _one_line(value["value"]) if "value" in value else value["note"]
        lines.append(f"return value ({value.get('format', '-')})")
        lines.append(f"  {shown}")
    lines += _section("code", {k: v for k, v in (report.get("code") or {}).items()
                               if v is not None})
    lines += _section("params", report["params"])
    lines += _section("metrics", report["metrics"])
    title = "environment"
    if report.get("environment_from"):
        title += f" (of the top-level run {report['environment_from']})"
    lines += _section(title, report["environment"])
    for key, title, arrow in (("inputs", "lineage: inputs from", "<-"),
                              ("consumers", "lineage: returned values used by", "->")):
        if report.get(key):
            lines.append(title)
            lines += [f"  {e['path']} {arrow} {e['status']:<8}  {e['name'] or '-'}  "
                      f"{_render.short_id(e['id'])}" for e in report[key]]
    if report["children"]:
        lines.append(f"children ({len(report['children'])})")
        lines += [f"  {c['status']:<8}  {c['name'] or '-'}  {_render.short_id(c['id'])}"
                  for c in report["children"]]
    return "\n".join(lines)


def _ms(report: dict[str, Any]) -> int | None:
    took = report.get("duration_s")
    return None if took is None else int(took * 1000)


# -- diff ---------------------------------------------------------------------------------
def _rows(left: dict[str, Any], right: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"what": key, "left": left.get(key), "right": right.get(key)}
            for key in sorted(set(left) | set(right)) if left.get(key) != right.get(key)]


def diff(left: MlflowRun, right: MlflowRun, tracking_uri: str | None = None) -> dict[str, Any]:
    """What differs between two runs, as JSON-compatible data.

    Tracked calls: arguments, code identity, status and return value (see
    :func:`pcs.compare`); any runs: params, status and environment tags.
    """
    from pcs.replay import compare

    backend = get_backend(tracking_uri)
    a, b = wrap(backend, left), wrap(backend, right)
    out: dict[str, Any] = {"left": left.info.run_id, "right": right.info.run_id}
    if isinstance(a, ComponentRun) and isinstance(b, ComponentRun):
        out.update(compare(a, b).to_dict())
    else:
        out["status"] = _rows({"status": left.info.status}, {"status": right.info.status})
        out["params"] = _rows(dict(left.data.params), dict(right.data.params))
    out["environment"] = _rows(_inherited_environment(backend, left)[0],
                               _inherited_environment(backend, right)[0])
    return out


def diff_text(report: dict[str, Any]) -> str:
    """The text of ``pcs diff``."""
    lines = [f"{report['left']}  vs  {report['right']}"]
    for key in ("arguments", "code", "status", "params", "return_value", "environment"):
        if key not in report:
            continue
        rows = report[key]
        if key == "return_value" and not rows:
            note = report.get("return_value_note")
            same = report.get("same_return_value")
            lines.append(f"return value: {'same' if same else note or 'not compared'}")
            continue
        label = key.replace("_", " ")
        if not rows:
            lines.append(f"{label}: same")
            continue
        lines.append(f"{label}:")
        lines += [f"  {r['what']}: {_one_line(r['left'])} -> {_one_line(r['right'])}"
                  for r in rows]
    if report.get("source_diff"):
        lines.append("source diff:")
        lines += ["  " + line for line in str(report["source_diff"]).splitlines()]
    return "\n".join(lines)
