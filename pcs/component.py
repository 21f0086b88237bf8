"""``pcs.Component``: the code identity of a tracked callable.

A Component names a function or class by ``module:qualname`` and pins its
code: the source file, the sha256 of its source text (kept in full, so a
later replay can show a diff), and — when the file is inside a git work
tree — the commit and whether the tree had uncommitted changes. Its
identifier is a content hash of all of that.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pcs import _canon
from pcs.exceptions import SpecError, SpecIntegrityError

__all__ = ["Component", "component_id", "spec_fields"]

_log = logging.getLogger("pcs")


@dataclass(frozen=True)
class Component:
    """The code identity of a function or class (immutable, compared by content)."""

    module: str
    qualname: str
    source_file: str | None = None
    source_sha256: str | None = None
    source: str | None = field(default=None, repr=False)
    git_commit: str | None = None
    git_dirty: bool | None = None

    @property
    def name(self) -> str:
        """The component name used as the first level of an ArgumentSet: the qualname."""
        return self.qualname

    @property
    def path(self) -> str:
        """``module:qualname``, the import path a replay uses."""
        return f"{self.module}:{self.qualname}"

    def fields(self) -> dict[str, Any]:
        """The fields of this component's spec: what its identifier is the hash of."""
        return {
            "type": "Component",
            "module": self.module,
            "qualname": self.qualname,
            "source_file": self.source_file,
            "source_sha256": self.source_sha256,
            "source": self.source,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
        }

    @functools.cached_property
    def identifier(self) -> str:
        """sha256 of the canonical encoding of every field."""
        return component_id(self.fields())

    def to_spec(self, flatten: bool = False) -> dict[str, Any]:
        """``{identifier: {fields}}``, or flat with an ``identifier`` key."""
        identifier, fields = spec_fields(self.fields(), self.identifier)
        return _canon.join_spec(identifier, fields, flatten=flatten)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Component:
        """Rebuild a Component from either spec form; the id is recomputed and checked."""
        identifier, fields = _canon.split_spec(spec, kind="Component spec")
        try:
            component = cls(
                module=str(fields["module"]),
                qualname=str(fields["qualname"]),
                source_file=fields.get("source_file"),
                source_sha256=fields.get("source_sha256"),
                source=fields.get("source"),
                git_commit=fields.get("git_commit"),
                git_dirty=fields.get("git_dirty"),
            )
        except KeyError as exc:
            raise SpecError(
                f"Component spec {identifier} lacks the field {exc.args[0]!r}; "
                "regenerate it with Component.to_spec().",
                identifier,
            ) from None
        if component.identifier != identifier:
            raise SpecIntegrityError(
                f"Component spec {identifier} does not match its content (it hashes to "
                f"{component.identifier}); the spec was changed after it was written. "
                "Restore the original file or re-export it from the tracking store.",
                identifier,
                expected=identifier,
                actual=component.identifier,
            )
        return component

    @classmethod
    def from_callable(cls, obj: Any) -> Component:
        """The Component of a function, method or class as it is loaded now."""
        target = inspect.unwrap(getattr(obj, "__func__", obj))
        module = getattr(target, "__module__", None) or "__main__"
        qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", "?")
        source_file: str | None
        try:
            source_file = inspect.getsourcefile(target)
        except TypeError:
            source_file = None
        try:
            source: str | None = inspect.getsource(target)
        except (OSError, TypeError):
            source = None
        sha = hashlib.sha256(source.encode()).hexdigest() if source is not None else None
        commit, dirty = _git_state(os.path.dirname(os.path.abspath(source_file))) if (
            source_file
        ) else (None, None)
        return cls(
            module=module,
            qualname=str(qualname),
            source_file=source_file,
            source_sha256=sha,
            source=source,
            git_commit=commit,
            git_dirty=dirty,
        )


def component_id(fields: Mapping[str, Any]) -> str:
    """The identifier of the Component with these fields: the digest of their encoding."""
    return _canon.digest(fields)


def spec_fields(
    fields: Mapping[str, Any], identifier: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(identifier, spec fields) of the Component with ``fields``, ``spec_hash`` included.

    ``fields`` are what a Component holds (``type``, ``module``, ``qualname``,
    source and git state), as the writer receives them in a component record;
    ``identifier``, if known, saves hashing them again. The one definition of a
    Component spec: :meth:`Component.to_spec` is built with it, and so is the
    spec in every tracked call's registry artifact.
    """
    if identifier is None:
        identifier = component_id(fields)
    return identifier, {**fields, "spec_hash": _canon.spec_hash(identifier, fields)}


@functools.lru_cache(maxsize=64)
def _git_state(directory: str) -> tuple[str | None, bool | None]:
    """(HEAD commit, work tree dirty) of the git work tree holding ``directory``, if any."""
    if not os.path.isdir(directory) or "site-packages" in directory:
        return None, None
    try:
        head = subprocess.run(
            ["git", "-C", directory, "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", directory, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        _log.debug("pcs: git state of %s unavailable: %s", directory, exc)
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip() or None, dirty


def clear_git_cache() -> None:
    """Forget cached git states (the work tree changed under a running process)."""
    _git_state.cache_clear()

