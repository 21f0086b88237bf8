"""Reading trees without decoding them: walk, find markers, copy.

:func:`walk` yields every node of a tree with its path and tolerates malformed
input, so the ``find_*`` functions can report on data that :func:`decode`
would refuse. Nothing here imports a class or builds a value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pcs._canon.decoder import decode, read_artifact_ref
from pcs._canon.markers import MAX_DEPTH, ArtifactRef, Tree
from pcs._canon.paths import short_key
from pcs.exceptions import SpecError

__all__ = [
    "copy_tree",
    "find_artifact_refs",
    "find_extensions",
    "find_placeholders",
    "find_redacted",
    "walk",
]


def walk(tree: Any, path: str, depth: int = 0) -> Iterator[tuple[str, Tree]]:
    """Yield ``(path, node)`` for every node, depth first; tolerant of malformed input.

    ``path`` starts at the given root and names each node as messages do
    (``value['k'][2]``); malformed nodes are skipped, never refused.
    """
    if type(tree) is not list or not tree or depth > 3 * MAX_DEPTH:
        return
    yield path, tree
    tag = tree[0]
    if tag in ("l", "t", "set", "fset") and len(tree) == 2 and type(tree[1]) is list:
        for index, item in enumerate(tree[1]):
            yield from walk(item, f"{path}[{index}]", depth + 1)
    elif tag == "nt" and len(tree) == 3 and type(tree[2]) is list:
        for index, item in enumerate(tree[2]):
            yield from walk(item, f"{path}[{index}]", depth + 1)
    elif tag == "x" and len(tree) == 4:
        yield from walk(tree[3], f"{path}<{tree[1]}>", depth + 1)
    elif tag == "ev" and len(tree) == 3:
        yield from walk(tree[2], f"{path}.value", depth + 1)
    elif tag == "d" and len(tree) == 2 and type(tree[1]) is list:
        for entry in tree[1]:
            if type(entry) is list and len(entry) == 2:
                label = _key_label(entry[0])
                yield from walk(entry[0], f"{path}.keys()[{label}]", depth + 1)
                yield from walk(entry[1], f"{path}[{label}]", depth + 1)


def _key_label(key_tree: Any) -> str:
    if type(key_tree) is list and len(key_tree) == 2 and key_tree[0] in ("s", "i", "b", "f"):
        try:
            return short_key(decode(key_tree))
        except SpecError:
            pass
    return "<key>"


def find_placeholders(tree: Any, *, root: str = "value") -> list[str]:
    """Human-readable reasons, with paths, for every placeholder in ``tree``.

    An empty list means the tree encodes its value exactly (artifact references
    count as exact; redacted values are listed by :func:`find_redacted`).
    """
    found = []
    for path, node in walk(tree, root):
        if node[0] == "placeholder" and len(node) == 2 and type(node[1]) is dict:
            info = node[1]
            found.append(
                f"{path}: {info.get('reason', 'not encodable')} "
                f"(type {info.get('type')}, value {info.get('repr')})"
            )
    return found


def find_extensions(tree: Any, *, root: str = "value") -> list[tuple[str, str, int]]:
    """``(path, name, version)`` of every extension node in ``tree`` (outermost first)."""
    found = []
    for path, node in walk(tree, root):
        if node[0] == "x" and len(node) == 4 and type(node[1]) is str:
            found.append((path, node[1], node[2]))
    return found


def find_redacted(tree: Any, *, root: str = "value") -> list[str]:
    """Paths of every redacted value in ``tree`` (with the reason, if any)."""
    found = []
    for path, node in walk(tree, root):
        if node[0] == "redacted" and len(node) == 2:
            found.append(f"{path}: {node[1]}" if node[1] else path)
    return found


def find_artifact_refs(tree: Any, *, root: str = "value") -> list[tuple[str, ArtifactRef]]:
    """``(path, ArtifactRef)`` for every artifact reference in ``tree``."""
    found = []
    for path, node in walk(tree, root):
        if node[0] == "artifact":
            found.append((path, read_artifact_ref(node, path)))
    return found


def copy_tree(tree: Any) -> Any:
    """Deep copy of JSON-compatible data (lists and dicts are copied, leaves shared)."""
    cls = type(tree)
    if cls is list:
        return [copy_tree(item) for item in tree]
    if cls is dict:
        return {key: copy_tree(item) for key, item in tree.items()}
    return tree
