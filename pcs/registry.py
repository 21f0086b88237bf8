"""Registries: content-addressed specs of runs, run commands, components and argument sets.

A *spec* describes one object as plain JSON-compatible data and refers to
other specs by identifier.  It comes in two equivalent forms:

* nested: ``{identifier: {field: value, ...}}`` (what getters return by default);
* flat: ``{"identifier": identifier, field: value, ...}`` (``flatten=True``).

Every stored spec carries a ``spec_hash`` field (:func:`pcs._canon.spec_hash`
of its identifier and other fields), verified when the spec is added or read
back from a file, so a changed byte is a clear
:class:`~pcs.exceptions.SpecIntegrityError`.  Argument set specs are also
checked against their content (their identifier is recomputed).

A registry also holds *artifacts*: bytes addressed by their plain SHA-256 hex
digest (what ``sha256sum`` prints).

:meth:`Registry.to_dict` gives::

    {"pcs_registry": 1,
     "runs": {id: fields}, "run_commands": {id: fields},
     "components": {id: fields}, "argument_sets": {id: fields}}

and :meth:`Registry.to_yaml` writes it as YAML, with the artifacts as files
``<path>.artifacts/<digest>`` next to it.
"""

from __future__ import annotations

import abc
import contextlib
import difflib
import os
import re
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, Protocol, overload

from pcs import _canon
from pcs.argument_set import ArgumentSet
from pcs.exceptions import (
    SpecConflictError,
    SpecError,
    SpecIntegrityError,
    SpecNotFoundError,
    UsageError,
)

__all__ = ["KINDS", "REGISTRY_VERSION", "InMemoryRegistry", "Registry", "YamlFileRegistry"]

REGISTRY_VERSION: Final = 1
"""Value of the ``pcs_registry`` key of :meth:`Registry.to_dict`."""

KINDS: Final = ("runs", "run_commands", "components", "argument_sets")
"""The kinds of spec a registry holds, as named in :meth:`Registry.to_dict`."""

_KIND_NAMES: Final = {
    "runs": "run",
    "run_commands": "run command",
    "components": "component",
    "argument_sets": "argument set",
}
_DIGEST = re.compile(r"[0-9a-f]{64}")

Spec = Mapping[str, Any]


class SupportsToSpec(Protocol):
    """Anything with a ``to_spec()`` method (ArgumentSet, RunCommand, Component, Run...)."""

    def to_spec(self, flatten: bool = False) -> dict[str, Any]: ...


def _kind(kind: str) -> str:
    if kind not in _KIND_NAMES:
        raise UsageError(f"Unknown spec kind {kind!r}; a registry holds {', '.join(KINDS)}.")
    return kind


def _check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise UsageError(
            f"{digest!r} is not an artifact digest (64 lowercase hex characters of sha256)."
        )
    return digest


def _artifact_folder(path: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(path) + ".artifacts")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and os.replace()."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if os.name == "posix":  # make the rename itself durable
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


class Registry(abc.ABC):
    """Stores specs of four kinds (:data:`KINDS`) by identifier, and artifacts by digest.

    Adding a spec verifies its ``spec_hash`` (or computes it when absent).
    Adding an identical spec again is a no-op; a *different* spec under an
    existing identifier raises :class:`~pcs.exceptions.SpecConflictError` with
    a unified diff, unless ``force=True``.  Specs are deep-copied on the way in
    and out, so callers can never change what is stored.

    Backends implement six small hooks (``_load_spec``, ``_store_spec``,
    ``_spec_ids``, ``_load_artifact``, ``_store_artifact``,
    ``_artifact_digests``) and must call ``super().__init__()``; all checks
    live here, once, for every kind.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ backend hooks

    @abc.abstractmethod
    def _load_spec(self, kind: str, identifier: str) -> dict[str, Any] | None:
        """The stored fields of a spec, or None (the caller copies them)."""

    @abc.abstractmethod
    def _store_spec(self, kind: str, identifier: str, fields: dict[str, Any]) -> None:
        """Store verified fields (a private copy the backend may keep)."""

    @abc.abstractmethod
    def _spec_ids(self, kind: str) -> list[str]:
        """The identifiers of every stored spec of ``kind``."""

    @abc.abstractmethod
    def _load_artifact(self, digest: str) -> bytes | None:
        """The bytes stored under ``digest``, or None (the caller verifies them)."""

    @abc.abstractmethod
    def _store_artifact(self, digest: str, data: bytes) -> None:
        """Store ``data`` under its digest (idempotent)."""

    @abc.abstractmethod
    def _artifact_digests(self) -> list[str]:
        """The digests of every stored artifact."""

    # ------------------------------------------------------------------ generic spec access

    def add_spec(self, kind: str, spec: Spec | SupportsToSpec, force: bool = False) -> str:
        """Add a spec of ``kind`` (one of :data:`KINDS`); return its identifier."""
        return self._add(_kind(kind), spec, force=force, source=None, require_hash=False)

    def _add(
        self,
        kind: str,
        spec: Spec | SupportsToSpec,
        *,
        force: bool,
        source: str | None,
        require_hash: bool,
    ) -> str:
        name = _KIND_NAMES[kind]
        trusted = False
        to_spec = None if isinstance(spec, dict) else getattr(spec, "to_spec", None)
        if callable(to_spec):  # ArgumentSet (itself a Mapping), RunCommand, Run...
            trusted = isinstance(spec, ArgumentSet)
            mapping: Spec = to_spec()
        elif isinstance(spec, Mapping):
            mapping = spec
        else:
            raise UsageError(
                f"A {name} spec must be a mapping or have a to_spec() method; "
                f"got {type(spec).__name__}."
            )
        identifier, fields = _canon.split_spec(mapping, kind=f"{name} spec")
        where = f"{name} spec {identifier!r}" + (f" in {source}" if source else "")
        fields = _canon.plain_copy(fields, where=where)
        computed = _canon.spec_hash(identifier, fields)
        recorded = fields.get("spec_hash")
        if recorded is None:
            if require_hash:
                raise SpecIntegrityError(
                    f"{where} has no spec_hash, so its integrity cannot be checked. Registry "
                    "files written by pcs always have one; re-create the file with pcs.",
                    identifier,
                    actual=computed,
                )
            fields["spec_hash"] = computed
        elif recorded != computed:
            raise SpecIntegrityError(
                f"{where} does not match its spec_hash: recorded {recorded!r}, computed "
                f"{computed}. The spec was changed after it was written; restore the original "
                "(or remove spec_hash to accept the new content deliberately).",
                identifier,
                expected=str(recorded),
                actual=computed,
            )
        if kind == "argument_sets" and not trusted:
            ArgumentSet.from_spec({identifier: fields}, source=source)
        with self._lock:
            existing = self._load_spec(kind, identifier)
            if existing is not None and existing.get("spec_hash") == computed:
                return identifier
            if existing is not None and not force:
                diff = self._diff(identifier, existing, fields, name)
                raise SpecConflictError(
                    f"{where}: a different {name} spec is already stored under this identifier "
                    f"in {self!r}. Pass force=True to replace it. Difference (stored -> new):\n"
                    f"{diff}",
                    identifier,
                    diff=diff,
                )
            self._store_spec(kind, identifier, fields)
        return identifier

    @staticmethod
    def _diff(identifier: str, old: dict[str, Any], new: dict[str, Any], name: str) -> str:
        from pcs._yaml import dump_yaml

        return "".join(
            difflib.unified_diff(
                dump_yaml({identifier: old}).splitlines(keepends=True),
                dump_yaml({identifier: new}).splitlines(keepends=True),
                fromfile=f"stored {name} {identifier}",
                tofile=f"new {name} {identifier}",
            )
        )

    @overload
    def get_spec(
        self,
        kind: str,
        identifier: str,
        flatten: bool = ...,
        error_if_not_found: Literal[True] = ...,
    ) -> dict[str, Any]: ...

    @overload
    def get_spec(
        self, kind: str, identifier: str, flatten: bool = ..., *, error_if_not_found: bool
    ) -> dict[str, Any] | None: ...

    @overload
    def get_spec(
        self, kind: str, identifier: str, flatten: bool, error_if_not_found: bool
    ) -> dict[str, Any] | None: ...

    def get_spec(
        self, kind: str, identifier: str, flatten: bool = False, error_if_not_found: bool = True
    ) -> dict[str, Any] | None:
        """A copy of the spec ``identifier`` of ``kind``, nested unless ``flatten``.

        Missing: :class:`~pcs.exceptions.SpecNotFoundError`, or None when
        ``error_if_not_found=False``.
        """
        kind = _kind(kind)
        fields = self._load_spec(kind, identifier)
        if fields is None:
            if not error_if_not_found:
                return None
            ids = sorted(self._spec_ids(kind))
            sample = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise SpecNotFoundError(
                f"No {_KIND_NAMES[kind]} spec with identifier {identifier!r} in {self!r} "
                f"(it holds {len(ids)} {_KIND_NAMES[kind]} spec(s){': ' + sample if ids else ''}). "
                "Check the identifier, or add the spec to this registry first.",
                identifier,
            )
        return _canon.join_spec(identifier, _canon.copy_tree(fields), flatten=flatten)

    def get_specs(self, kind: str) -> dict[str, dict[str, Any]]:
        """Copies of every spec of ``kind``: ``{identifier: fields}``, sorted by identifier."""
        kind = _kind(kind)
        result: dict[str, dict[str, Any]] = {}
        for identifier in sorted(self._spec_ids(kind)):
            fields = self._load_spec(kind, identifier)
            if fields is not None:
                result[identifier] = _canon.copy_tree(fields)
        return result

    def spec_ids(self, kind: str) -> list[str]:
        """The identifiers of every spec of ``kind``, sorted."""
        return sorted(self._spec_ids(_kind(kind)))

    def has_spec(self, kind: str, identifier: str) -> bool:
        """True when a spec ``identifier`` of ``kind`` is stored."""
        return self._load_spec(_kind(kind), identifier) is not None

    # ------------------------------------------------------------------ per-kind API

    def add_run_spec(self, spec: Spec | SupportsToSpec, force: bool = False) -> str:
        """Add a run spec; see :meth:`add_spec`."""
        return self.add_spec("runs", spec, force=force)

    def add_run_command_spec(self, spec: Spec | SupportsToSpec, force: bool = False) -> str:
        """Add a run command spec; see :meth:`add_spec`."""
        return self.add_spec("run_commands", spec, force=force)

    def add_component_spec(self, spec: Spec | SupportsToSpec, force: bool = False) -> str:
        """Add a component spec; see :meth:`add_spec`."""
        return self.add_spec("components", spec, force=force)

    def add_argument_set_spec(self, spec: Spec | SupportsToSpec, force: bool = False) -> str:
        """Add an argument set spec (its identifier is verified); see :meth:`add_spec`."""
        return self.add_spec("argument_sets", spec, force=force)

    @overload
    def get_run_spec(
        self, identifier: str, flatten: bool = ..., error_if_not_found: Literal[True] = ...
    ) -> dict[str, Any]: ...

    @overload
    def get_run_spec(
        self, identifier: str, flatten: bool = ..., *, error_if_not_found: bool
    ) -> dict[str, Any] | None: ...

    @overload
    def get_run_spec(
        self, identifier: str, flatten: bool, error_if_not_found: bool
    ) -> dict[str, Any] | None: ...

    def get_run_spec(
        self, identifier: str, flatten: bool = False, error_if_not_found: bool = True
    ) -> dict[str, Any] | None:
        """The run spec ``identifier``; see :meth:`get_spec`."""
        return self.get_spec("runs", identifier, flatten, error_if_not_found)

    @overload
    def get_run_command_spec(
        self, identifier: str, flatten: bool = ..., error_if_not_found: Literal[True] = ...
    ) -> dict[str, Any]: ...

    @overload
    def get_run_command_spec(
        self, identifier: str, flatten: bool = ..., *, error_if_not_found: bool
    ) -> dict[str, Any] | None: ...

    @overload
    def get_run_command_spec(
        self, identifier: str, flatten: bool, error_if_not_found: bool
    ) -> dict[str, Any] | None: ...

    def get_run_command_spec(
        self, identifier: str, flatten: bool = False, error_if_not_found: bool = True
    ) -> dict[str, Any] | None:
        """The run command spec ``identifier``; see :meth:`get_spec`."""
        return self.get_spec("run_commands", identifier, flatten, error_if_not_found)

    @overload
    def get_component_spec(
        self, identifier: str, flatten: bool = ..., error_if_not_found: Literal[True] = ...
    ) -> dict[str, Any]: ...

    @overload
    def get_component_spec(
        self, identifier: str, flatten: bool = ..., *, error_if_not_found: bool
    ) -> dict[str, Any] | None: ...

    @overload
    def get_component_spec(
        self, identifier: str, flatten: bool, error_if_not_found: bool
    ) -> dict[str, Any] | None: ...

    def get_component_spec(
        self, identifier: str, flatten: bool = False, error_if_not_found: bool = True
    ) -> dict[str, Any] | None:
        """The component spec ``identifier``; see :meth:`get_spec`."""
        return self.get_spec("components", identifier, flatten, error_if_not_found)

    @overload
    def get_argument_set_spec(
        self, identifier: str, flatten: bool = ..., error_if_not_found: Literal[True] = ...
    ) -> dict[str, Any]: ...

    @overload
    def get_argument_set_spec(
        self, identifier: str, flatten: bool = ..., *, error_if_not_found: bool
    ) -> dict[str, Any] | None: ...

    @overload
    def get_argument_set_spec(
        self, identifier: str, flatten: bool, error_if_not_found: bool
    ) -> dict[str, Any] | None: ...

    def get_argument_set_spec(
        self, identifier: str, flatten: bool = False, error_if_not_found: bool = True
    ) -> dict[str, Any] | None:
        """The argument set spec ``identifier``; see :meth:`get_spec`."""
        return self.get_spec("argument_sets", identifier, flatten, error_if_not_found)

    def get_run_specs(self) -> dict[str, dict[str, Any]]:
        """Every run spec: ``{identifier: fields}``."""
        return self.get_specs("runs")

    def get_run_command_specs(self) -> dict[str, dict[str, Any]]:
        """Every run command spec: ``{identifier: fields}``."""
        return self.get_specs("run_commands")

    def get_component_specs(self) -> dict[str, dict[str, Any]]:
        """Every component spec: ``{identifier: fields}``."""
        return self.get_specs("components")

    def get_argument_set_specs(self) -> dict[str, dict[str, Any]]:
        """Every argument set spec: ``{identifier: fields}``."""
        return self.get_specs("argument_sets")

    # ------------------------------------------------------------------ artifacts

    def add_artifact(self, data: bytes) -> str:
        """Store ``data``; return its digest (sha256 hex of the bytes)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UsageError(f"Artifacts are bytes; got {type(data).__name__}.")
        blob = bytes(data)
        digest = _canon.artifact_digest(blob)
        with self._lock:
            self._store_artifact(digest, blob)
        return digest

    def get_artifact(self, digest: str) -> bytes:
        """The bytes stored under ``digest``, verified against it."""
        _check_digest(digest)
        data = self._load_artifact(digest)
        if data is None:
            raise SpecNotFoundError(
                f"No artifact {digest} in {self!r}; add it with add_artifact() or copy the "
                "registry's .artifacts folder along with its YAML file.",
                digest,
            )
        actual = _canon.artifact_digest(data)
        if actual != digest:
            raise SpecIntegrityError(
                f"Artifact {digest} in {self!r} is corrupt: its content hashes to {actual}. "
                "Restore the artifact file from the original registry.",
                digest,
                expected=digest,
                actual=actual,
            )
        return data

    def has_artifact(self, digest: str) -> bool:
        """True when an artifact ``digest`` is stored (its content is not verified here)."""
        return _check_digest(digest) in self._artifact_digests()

    def artifact_digests(self) -> list[str]:
        """Digests of every stored artifact, sorted."""
        return sorted(self._artifact_digests())

    # ------------------------------------------------------------------ whole registries

    def add_registry(self, other: Registry, force: bool = False) -> None:
        """Copy every spec and artifact of ``other`` into this registry."""
        for digest in other.artifact_digests():
            self.add_artifact(other.get_artifact(digest))
        for kind in KINDS:
            for identifier, fields in other.get_specs(kind).items():
                self.add_spec(kind, {identifier: fields}, force=force)

    def to_dict(self) -> dict[str, Any]:
        """``{"pcs_registry": 1, "runs": {...}, "run_commands": {...}, "components": {...},
        "argument_sets": {...}}`` (copies; artifacts are not included)."""
        result: dict[str, Any] = {"pcs_registry": REGISTRY_VERSION}
        for kind in KINDS:
            result[kind] = self.get_specs(kind)
        return result

    def to_yaml(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as YAML to ``path`` atomically, artifacts to ``<path>.artifacts/``.

        Artifact files already present are kept (they are content-addressed).
        """
        from pcs._yaml import dump_yaml

        target = Path(path)
        digests = self.artifact_digests()
        if digests:
            folder = _artifact_folder(target)
            folder.mkdir(parents=True, exist_ok=True)
            for digest in digests:
                file = folder / digest
                if not file.is_file():
                    _atomic_write(file, self.get_artifact(digest))
        _atomic_write(target, dump_yaml(self.to_dict()).encode("utf-8"))

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        source: str | None = None,
        artifact_dir: str | os.PathLike[str] | None = None,
    ) -> InMemoryRegistry:
        """An :class:`InMemoryRegistry` holding the specs of :meth:`to_dict` output.

        Every ``spec_hash`` is recomputed (and every argument set identifier);
        a mismatch raises :class:`~pcs.exceptions.SpecIntegrityError` naming
        the kind, the spec and ``source``.  Artifacts are read lazily from
        ``artifact_dir`` if given.
        """
        registry = InMemoryRegistry(artifact_dir=artifact_dir)
        registry._fill(data, source)
        return registry

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> InMemoryRegistry:
        """An :class:`InMemoryRegistry` read from a file written by :meth:`to_yaml`.

        The file is parsed with pcs's safe YAML loader and verified like
        :meth:`from_dict`; artifacts are read lazily from ``<path>.artifacts/``
        and verified against their digest when read.
        """
        from pcs._yaml import load_yaml_file

        data = load_yaml_file(path)
        return cls.from_dict(data, source=os.fspath(path), artifact_dir=_artifact_folder(path))

    def _fill(self, data: Any, source: str | None) -> None:
        where = source or "registry data"
        if not isinstance(data, Mapping):
            raise SpecError(
                f"{where} is not a pcs registry: expected a mapping with 'pcs_registry: 1', "
                f"found {type(data).__name__}."
            )
        version = data.get("pcs_registry")
        if type(version) is not int or version != REGISTRY_VERSION:
            raise SpecError(
                f"{where}: registry format pcs_registry={version!r} is not supported; this "
                f"version of pcs reads pcs_registry: {REGISTRY_VERSION}."
            )
        unknown = sorted(str(key) for key in data if key != "pcs_registry" and key not in KINDS)
        if unknown:
            raise SpecError(
                f"{where}: unknown top-level keys {unknown}; a registry has pcs_registry, "
                f"{', '.join(KINDS)}."
            )
        for kind in KINDS:
            specs = data.get(kind)
            if specs is None:
                continue
            if not isinstance(specs, Mapping):
                raise SpecError(
                    f"{where}: '{kind}' must map identifiers to specs, not {type(specs).__name__}."
                )
            for identifier, fields in specs.items():
                if not isinstance(identifier, str) or not isinstance(fields, Mapping):
                    raise SpecError(
                        f"{where}: '{kind}' entry {identifier!r} must be a str identifier "
                        "mapped to a mapping of fields."
                    )
                self._add(kind, {identifier: fields}, force=False, source=source, require_hash=True)

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}={len(self._spec_ids(kind))}" for kind in KINDS)
        return f"<{type(self).__name__} {counts}>"


class InMemoryRegistry(Registry):
    """A registry held in dicts.

    ``artifact_dir`` (optional) is a folder of ``<digest>`` files consulted,
    lazily, for artifacts not held in memory (see :meth:`Registry.from_yaml`).
    """

    def __init__(self, *, artifact_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self._specs: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self._artifacts: dict[str, bytes] = {}
        self._artifact_dir = Path(artifact_dir) if artifact_dir is not None else None

    def _load_spec(self, kind: str, identifier: str) -> dict[str, Any] | None:
        return self._specs[kind].get(identifier)

    def _store_spec(self, kind: str, identifier: str, fields: dict[str, Any]) -> None:
        self._specs[kind][identifier] = fields

    def _spec_ids(self, kind: str) -> list[str]:
        return list(self._specs[kind])

    def _load_artifact(self, digest: str) -> bytes | None:
        data = self._artifacts.get(digest)
        if data is None and self._artifact_dir is not None:
            file = self._artifact_dir / digest
            if file.is_file():
                data = file.read_bytes()
        return data

    def _store_artifact(self, digest: str, data: bytes) -> None:
        self._artifacts.setdefault(digest, data)

    def _artifact_digests(self) -> list[str]:
        digests = set(self._artifacts)
        folder = self._artifact_dir
        if folder is not None and folder.is_dir():
            digests.update(
                entry.name
                for entry in folder.iterdir()
                if _DIGEST.fullmatch(entry.name) and entry.is_file()
            )
        return list(digests)


class YamlFileRegistry(InMemoryRegistry):
    """A registry bound to a YAML file: loaded if it exists, rewritten on every add.

    Artifacts go straight to ``<path>.artifacts/<digest>``.  Each add rewrites
    the whole file (atomically), so this is meant for small registries with a
    single writer; use :class:`InMemoryRegistry` plus :meth:`Registry.to_yaml`
    to write many specs at once.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        super().__init__(artifact_dir=_artifact_folder(self.path))
        self._loading = True
        try:
            if self.path.exists():
                from pcs._yaml import load_yaml_file

                self._fill(load_yaml_file(self.path), os.fspath(self.path))
        finally:
            self._loading = False

    def _store_spec(self, kind: str, identifier: str, fields: dict[str, Any]) -> None:
        previous = self._specs[kind].get(identifier)
        super()._store_spec(kind, identifier, fields)
        if self._loading:
            return
        try:
            self.to_yaml(self.path)
        except BaseException:
            if previous is None:
                del self._specs[kind][identifier]
            else:
                self._specs[kind][identifier] = previous
            raise

    def _store_artifact(self, digest: str, data: bytes) -> None:
        file = _artifact_folder(self.path) / digest
        if not file.is_file():
            _atomic_write(file, data)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} path={os.fspath(self.path)!r}>"
