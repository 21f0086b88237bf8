"""``pcs.ArgumentSet``: the arguments of one or more calls, content-addressed.

An ArgumentSet is an immutable three-level mapping
``{component_name: {entry_point: {arg_name: value}}}``.  Each value is held as
its canonical typed encoding (:mod:`pcs._canon`, format ``pcs-canon/1``), and
the :attr:`ArgumentSet.identifier` is the digest of those encodings: key order
never matters, and ``1``, ``1.0``, ``True`` and ``"1"`` never collide.

Reading a value decodes it afresh, so callers can never change an
ArgumentSet; :meth:`ArgumentSet.update` returns a *new* ArgumentSet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, TypeAlias

from pcs import _canon
from pcs.exceptions import SpecError, SpecIntegrityError, SpecNotFoundError, UsageError

__all__ = ["ArgumentSet", "Encoded", "argument_set_id", "spec_fields"]

Encoded: TypeAlias = dict[str, dict[str, dict[str, _canon.Tree]]]
"""``{component: {entry_point: {arg: tree}}}`` with ``pcs-canon/1`` trees as leaves."""

_SPEC_TYPE = "ArgumentSet"
_SPEC_FIELDS = frozenset({"type", "format", "arguments", "spec_hash"})
_LEVELS = ("component", "entry point", "argument")


def _name(value: object, level: int) -> str:
    if type(value) is str:
        return value
    if not isinstance(value, str):
        raise UsageError(
            f"ArgumentSet {_LEVELS[level]} names must be str; got {value!r} "
            f"({type(value).__name__}). Use str names: "
            "{component: {entry_point: {arg_name: value}}}."
        )
    return str.__str__(value)


def _level(value: object, level: int, *names: str) -> Mapping[Any, Any]:
    if type(value) is dict:
        return value
    if not isinstance(value, Mapping):
        where = "".join(f"[{name!r}]" for name in names) or "arguments"
        raise UsageError(
            f"ArgumentSet {where} must map {_LEVELS[level]} names to "
            f"{'values' if level == 2 else 'mappings'}; got {type(value).__name__}. "
            "The layout is {component: {entry_point: {arg_name: value}}}."
        )
    return value


def _arg_root(component: str, entry_point: str, arg: str) -> str:
    return f"arguments[{component!r}][{entry_point!r}][{arg!r}]"


class ArgumentSet(Mapping[str, dict[str, dict[str, Any]]]):
    """Immutable, content-addressed ``{component: {entry_point: {arg: value}}}``.

    ``ArgumentSet(arguments, strict=False)`` encodes every value once.  Values
    that cannot be encoded exactly become placeholders (see
    :attr:`placeholders`); with ``strict=True`` they raise
    :class:`~pcs.exceptions.EncodingError` instead.

    Equality and hashing go by :attr:`identifier`, i.e. by content.  Reading
    (``aset["comp"]``, :meth:`get_arg`, ...) returns freshly decoded values.
    """

    __slots__ = ("_encoded", "_identifier", "_placeholders")

    _encoded: Encoded
    _identifier: str | None
    _placeholders: tuple[str, ...] | None

    def __init__(
        self,
        arguments: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        *,
        strict: bool = False,
    ) -> None:
        if isinstance(arguments, ArgumentSet):
            self._set(arguments._encoded)
            object.__setattr__(self, "_identifier", arguments._identifier)
            return
        encoded: Encoded = {}
        if arguments is not None:
            for component, calls in _level(arguments, 0).items():
                c = _name(component, 0)
                per_call = encoded.setdefault(c, {})
                for entry_point, args in _level(calls, 1, c).items():
                    e = _name(entry_point, 1)
                    per_arg = per_call.setdefault(e, {})
                    for arg, value in _level(args, 2, c, e).items():
                        a = _name(arg, 2)
                        per_arg[a] = _canon.encode(value, strict=strict, root=_arg_root(c, e, a))
        self._set(encoded)

    def _set(self, encoded: Encoded) -> None:
        object.__setattr__(self, "_encoded", encoded)
        object.__setattr__(self, "_identifier", None)
        object.__setattr__(self, "_placeholders", None)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(
            f"ArgumentSet is immutable (cannot set {name!r}); update() returns a new one."
        )

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"ArgumentSet is immutable (cannot delete {name!r}).")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_encoded(cls, encoded: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> ArgumentSet:
        """Build from values that are already ``pcs-canon/1`` trees (nothing is re-encoded).

        The three mapping levels are copied; the trees are taken over as they
        are, so the caller must not change them afterwards.  Trees are not
        validated here (they come from :func:`pcs._canon.encode`); use
        :meth:`from_spec` for data from outside.
        """
        result = cls.__new__(cls)
        copied: Encoded = {}
        for component, calls in _level(encoded, 0).items():
            c = _name(component, 0)
            per_call = copied.setdefault(c, {})
            for entry_point, args in _level(calls, 1, c).items():
                e = _name(entry_point, 1)
                per_arg = per_call.setdefault(e, {})
                for arg, tree in _level(args, 2, c, e).items():
                    per_arg[_name(arg, 2)] = tree
        result._set(copied)
        return result

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, source: str | None = None) -> ArgumentSet:
        """Rebuild from :meth:`to_spec` output (nested or flat form), verifying it.

        The identifier is recomputed from the arguments; a mismatch, or a
        ``spec_hash`` that does not match the fields, raises
        :class:`~pcs.exceptions.SpecIntegrityError`.  Malformed specs raise
        :class:`~pcs.exceptions.SpecError`. ``source`` (a file name, say) is
        named in those errors.
        """
        identifier, fields = _canon.split_spec(spec, kind="ArgumentSet spec")
        where = f"ArgumentSet spec {identifier!r}" + (f" in {source}" if source else "")
        fields = _canon.plain_copy(fields, where=where)
        if fields.get("type") != _SPEC_TYPE:
            raise SpecError(
                f"{where} has type {fields.get('type')!r}; expected {_SPEC_TYPE!r}.", identifier
            )
        if fields.get("format") != _canon.FORMAT:
            raise SpecError(
                f"{where} uses encoding format {fields.get('format')!r}; this version of pcs "
                f"reads {_canon.FORMAT!r}. Upgrade pcs to read it.",
                identifier,
            )
        unknown = sorted(set(fields) - _SPEC_FIELDS)
        if unknown or "arguments" not in fields:
            raise SpecError(
                f"{where}: unexpected fields {unknown} or no 'arguments'; an ArgumentSet spec "
                f"has exactly {sorted(_SPEC_FIELDS)} (spec_hash optional).",
                identifier,
            )
        encoded = _check_encoded(fields["arguments"], where, identifier)
        result = cls.__new__(cls)
        result._set(encoded)
        if result.identifier != identifier:
            raise SpecIntegrityError(
                f"{where} does not match its arguments: recorded identifier {identifier}, "
                f"computed {result.identifier}. The spec was changed after it was written; "
                "restore it from the original registry or record the call again.",
                identifier,
                expected=identifier,
                actual=result.identifier,
            )
        recorded = fields.get("spec_hash")
        if recorded is not None:
            computed = _canon.spec_hash(identifier, fields)
            if recorded != computed:
                raise SpecIntegrityError(
                    f"{where}: spec_hash {recorded!r} does not match its content (computed "
                    f"{computed}). The spec was changed after it was written.",
                    identifier,
                    expected=str(recorded),
                    actual=computed,
                )
        return result

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> ArgumentSet:
        """Read a YAML file holding one ArgumentSet spec (loaded with pcs's safe loader)."""
        from pcs._yaml import load_yaml_file

        data = load_yaml_file(path)
        if not isinstance(data, Mapping):
            raise SpecError(
                f"{os.fspath(path)} does not hold an ArgumentSet spec (found "
                f"{type(data).__name__}); write it with dump_yaml(argument_set.to_spec())."
            )
        return cls.from_spec(data, source=os.fspath(path))

    # ------------------------------------------------------------------ identity

    @property
    def identifier(self) -> str:
        """``digest(["ArgumentSet", encoded arguments])`` (sha256 hex), computed once."""
        identifier = self._identifier
        if identifier is None:
            identifier = argument_set_id(self._encoded)
            object.__setattr__(self, "_identifier", identifier)
        return identifier

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArgumentSet):
            return NotImplemented
        return self is other or self.identifier == other.identifier

    def __hash__(self) -> int:
        return hash(self.identifier)

    def __repr__(self) -> str:
        layout = {
            c: {e: list(args) for e, args in calls.items()} for c, calls in self._encoded.items()
        }
        text = repr(layout)
        if len(text) > 200:
            text = text[:197] + "..."
        return f"ArgumentSet(identifier={self.identifier[:16]!r}..., arguments={text})"

    def __reduce__(self) -> tuple[Any, tuple[Encoded]]:
        return (ArgumentSet.from_encoded, (self._encoded,))

    def __copy__(self) -> ArgumentSet:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ArgumentSet:
        return self

    # ------------------------------------------------------------------ specs

    def to_spec(self, flatten: bool = False) -> dict[str, Any]:
        """The spec: ``{identifier: fields}``, or ``{"identifier": ..., **fields}`` if flat.

        ``fields`` is ``{"type": "ArgumentSet", "format": "pcs-canon/1",
        "arguments": {component: {entry_point: {arg: tree}}}, "spec_hash": ...}``.
        """
        identifier, fields = spec_fields(self.encoded(), self.identifier)
        return _canon.join_spec(identifier, fields, flatten=flatten)

    def encoded(self) -> Encoded:
        """A copy of the encoded arguments: ``{component: {entry_point: {arg: tree}}}``."""
        return _canon.copy_tree(self._encoded)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ exactness

    @property
    def placeholders(self) -> list[str]:
        """Why some values are not recorded exactly (empty when :attr:`is_exact`)."""
        found = self._placeholders
        if found is None:
            found = tuple(
                problem
                for c, calls in self._encoded.items()
                for e, args in calls.items()
                for a, tree in args.items()
                for problem in _canon.find_placeholders(tree, root=_arg_root(c, e, a))
            )
            object.__setattr__(self, "_placeholders", found)
        return list(found)

    @property
    def is_exact(self) -> bool:
        """True when no value is a placeholder (redacted values are listed by :attr:`redacted`)."""
        return not self.placeholders

    @property
    def redacted(self) -> list[str]:
        """Paths of values that were deliberately not recorded (redacted or excluded)."""
        return [
            found
            for c, calls in self._encoded.items()
            for e, args in calls.items()
            for a, tree in args.items()
            for found in _canon.find_redacted(tree, root=_arg_root(c, e, a))
        ]

    # ------------------------------------------------------------------ reading

    def _missing(self, what: str, name: str, existing: Iterator[str] | list[str]) -> NoReturn:
        known = sorted(existing)
        raise SpecNotFoundError(
            f"ArgumentSet {self.identifier[:16]}... has no {what} {name!r}; it has "
            f"{known if known else 'none'}.",
            self.identifier,
        )

    def _calls(self, component: str) -> dict[str, dict[str, _canon.Tree]]:
        calls = self._encoded.get(component)
        if calls is None:
            self._missing("component", component, list(self._encoded))
        return calls

    def _args(self, component: str, entry_point: str) -> dict[str, _canon.Tree]:
        calls = self._calls(component)
        args = calls.get(entry_point)
        if args is None:
            self._missing(f"entry point of component {component!r} named", entry_point, list(calls))
        return args

    def get_component_args(self, component: str) -> dict[str, dict[str, Any]]:
        """``{entry_point: {arg: value}}`` of ``component`` (decoded, a fresh copy)."""
        return {
            e: {a: _canon.decode(tree, root=_arg_root(component, e, a)) for a, tree in args.items()}
            for e, args in self._calls(component).items()
        }

    def get_function_args(self, component: str, entry_point: str) -> dict[str, Any]:
        """``{arg: value}`` of one entry point (decoded, a fresh copy)."""
        return {
            a: _canon.decode(tree, root=_arg_root(component, entry_point, a))
            for a, tree in self._args(component, entry_point).items()
        }

    def get_arg(self, component: str, entry_point: str, arg: str) -> Any:
        """One decoded argument value."""
        args = self._args(component, entry_point)
        if arg not in args:
            self._missing(f"argument of {component}.{entry_point} named", arg, list(args))
        return _canon.decode(args[arg], root=_arg_root(component, entry_point, arg))

    def __getitem__(self, component: str) -> dict[str, dict[str, Any]]:
        if component not in self._encoded:
            raise KeyError(component)
        return self.get_component_args(component)

    def __contains__(self, component: object) -> bool:
        return component in self._encoded

    def __iter__(self) -> Iterator[str]:
        return iter(self._encoded)

    def __len__(self) -> int:
        return len(self._encoded)

    # ------------------------------------------------------------------ combining

    def update(
        self, other: ArgumentSet | Mapping[str, Mapping[str, Mapping[str, Any]]]
    ) -> ArgumentSet:
        """A NEW ArgumentSet: this one's arguments overlaid with ``other``'s (``other`` wins).

        ArgumentSet is immutable, so ``self`` is unchanged.  Values of a plain
        mapping ``other`` are encoded (non-strict).
        """
        overlay = other if isinstance(other, ArgumentSet) else ArgumentSet(other)
        merged: Encoded = {
            c: {e: dict(a) for e, a in calls.items()} for c, calls in self._encoded.items()
        }
        for c, calls in overlay._encoded.items():
            per_call = merged.setdefault(c, {})
            for e, args in calls.items():
                per_call.setdefault(e, {}).update(args)
        return ArgumentSet.from_encoded(_canon.copy_tree(merged))


def argument_set_id(arguments: Encoded) -> str:
    """The identifier of the ArgumentSet holding ``arguments`` (``pcs-canon/1`` trees):
    ``digest(["ArgumentSet", arguments])``."""
    return _canon.tree_digest([_SPEC_TYPE, arguments])


def spec_fields(arguments: Encoded, identifier: str | None = None) -> tuple[str, dict[str, Any]]:
    """(identifier, spec fields) of the ArgumentSet holding ``arguments``, ``spec_hash`` included.

    ``arguments`` is ``{component: {entry_point: {arg: tree}}}`` with trees from
    :func:`pcs._canon.encode` (or validated), taken as they are: not copied, not
    checked. ``identifier``, if known, saves hashing them again. The one
    definition of an ArgumentSet spec: :meth:`ArgumentSet.to_spec` is built with
    it, and so is the spec the writer stores for every tracked call (from the
    call's trees, without building an ArgumentSet).
    """
    if identifier is None:
        identifier = argument_set_id(arguments)
    fields: dict[str, Any] = {"type": _SPEC_TYPE, "format": _canon.FORMAT, "arguments": arguments}
    fields["spec_hash"] = _canon.spec_hash(identifier, fields, trusted=True)
    return identifier, fields


def _check_encoded(arguments: Any, where: str, identifier: str) -> Encoded:
    """Validate the three levels and every tree of plain (already copied) spec data."""
    if type(arguments) is not dict:
        raise SpecError(f"{where}: 'arguments' must be a mapping.", identifier)
    for c, calls in arguments.items():
        if type(calls) is not dict:
            raise SpecError(f"{where}: arguments[{c!r}] must be a mapping.", identifier)
        for e, args in calls.items():
            if type(args) is not dict:
                raise SpecError(f"{where}: arguments[{c!r}][{e!r}] must be a mapping.", identifier)
            for a, tree in args.items():
                try:
                    _canon.validate(tree, root=_arg_root(c, e, a))
                except SpecError as exc:
                    raise SpecError(f"{where}: {exc}", identifier) from exc
    result: Encoded = arguments
    return result
