"""The structure ``docs/architecture.rst`` describes, checked: every module documented, no
import circle (lazy imports included), no oversized module without a stated reason, no
module reaching another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PCS = ROOT / "pcs"
ARCHITECTURE = ROOT / "docs" / "architecture.rst"

#: Modules allowed over the size limit, each with the reason docs/architecture.rst gives.
LARGE = {"pcs.registry"}
LIMIT = 600


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PCS.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The pcs modules ``name`` imports anywhere in its body (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in MODULES else base)
    return {t for t in targets if t in MODULES and t != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circle() -> None:
    assert _cycles() == []


def test_the_lower_layers_never_import_the_upper_ones() -> None:
    """decorator -> run objects -> writer -> store: nothing below reaches replay or tracking."""
    upper = {"pcs.replay", "pcs.portable", "pcs.tracking", "pcs.testing", "pcs.cli"}
    lower = [m for m in MODULES if m.startswith(("pcs._store", "pcs._journal", "pcs._canon"))]
    lower += ["pcs._writer", "pcs._records", "pcs._materialize", "pcs.run", "pcs.component_run",
              "pcs.run_command", "pcs.argument_set", "pcs.component", "pcs.settings",
              "pcs.conventions", "pcs.exceptions"]
    reached = {m: sorted(GRAPH[m] & upper) for m in lower if GRAPH[m] & upper}
    assert reached == {}


def test_every_module_is_described_in_the_architecture_page() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = [name for name in MODULES if f"``{name}``" not in text]
    assert missing == [], f"describe these in docs/architecture.rst: {missing}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_oversized_without_a_reason(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    if name in LARGE:
        assert name in ARCHITECTURE.read_text(encoding="utf-8")
    else:
        assert lines <= LIMIT, f"{name} has {lines} lines; split it along its seams"


#: ``obj._x`` accesses that are not pcs's own private state: Python's and MLflow's APIs.
_FOREIGN = {"_name_", "_value_", "_fields", "_asdict", "_replace", "_make", "_engine_map",
            "_engine_map_lock", "_tracking_client", "_tracking_uri", "_store",
            "_current_process", "_at_fork_reinit", "_exc_info_to_string", "_meta"}


def _private_defined(path: Path) -> set[str]:
    """Underscore names a module defines: its functions, classes, globals and the
    attributes its classes set on ``self``/``cls``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in ("self", "cls"):
                names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {n for n in names if n.startswith("_")}


def test_no_module_reaches_another_modules_private_names() -> None:
    """``x._name`` and ``from pcs.m import _name`` only for names the module itself defines."""
    problems = []
    for name, path in MODULES.items():
        own = _private_defined(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pcs"):
                problems += [f"{name}: from {node.module} import {a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")
                             and f"{node.module}.{a.name}" not in MODULES]
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__") or attr in _FOREIGN:
                continue
            if attr.startswith("_self_"):  # wrapt's own convention for a proxy's attributes
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if attr not in own:
                problems.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert problems == []
