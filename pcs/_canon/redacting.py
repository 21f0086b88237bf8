"""The encoder under a redaction policy: secrets never reach a tree.

:func:`encode_redacted` shows every value, mapping key and named field to a
:class:`Redactor` before encoding it; what the policy names becomes a
``redacted`` node, and the caller learns the path of each value left out. The
policy itself lives in :mod:`pcs._redaction`; this module only asks it.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from pcs._canon.encoder import CONTAINERS, Encoder, bounded, sort_entries
from pcs._canon.hashing import tree_bytes
from pcs._canon.markers import Tree, redacted_node
from pcs._canon.paths import KeyOf, ValueAt, format_path
from pcs._canon.scalars import SCALARS

__all__ = ["RedactingEncoder", "Redactor", "encode_redacted"]


class Redactor(Protocol):
    """A redaction policy, as :func:`encode_redacted` asks it (see :mod:`pcs._redaction`)."""

    def value(self, value: Any) -> str | None:
        """Why ``value`` itself must not be recorded (the redacted node's reason), or None."""

    def named(self, name: Any, value: Any) -> str | None:
        """Why the value under the mapping key or field ``name`` must not be recorded."""

    def describe(self, value: Any) -> tuple[str, list[str]]:
        """A repr of ``value`` holding no secret, and the paths (relative) it left out."""


_CHECKED: Final = frozenset({str, bytes, bytearray})


class RedactingEncoder(Encoder):
    """The encoder, asking a :class:`Redactor` about every value, key and field first."""

    __slots__ = ("found", "redactor")

    def __init__(self, strict: bool, root: str, redactor: Redactor) -> None:
        super().__init__(strict, root)
        self.redactor = redactor
        self.found: list[str] = []

    def redact(self, reason: str) -> Tree:
        self.found.append(f"{format_path(self.root, self.path)}: {reason}")
        return redacted_node(reason)

    def enc(self, value: Any) -> Tree:
        cls = type(value)
        scalar = SCALARS.get(cls)
        if scalar is not None:
            if cls in _CHECKED:
                reason = self.redactor.value(value)
                if reason is not None:
                    return self.redact(reason)
            return scalar(value)
        if cls is dict:
            return self.enc_dict(value)
        if cls is set or cls is frozenset:
            return self.enc_set(value)
        container = CONTAINERS.get(cls)
        if container is not None:
            return container(self, value)
        reason = self.redactor.value(value)
        if reason is not None:
            return self.redact(reason)
        return self.other(value)

    def enc_dict(self, value: dict[Any, Any]) -> Tree:
        refused = self.enter(value)
        if refused is not None:
            return refused
        path, found = self.path, len(self.found)
        named = self.redactor.named
        pairs: list[tuple[bytes, Tree, Tree]] = []
        secret_key = False
        try:
            for key, item in list(value.items()):
                path.append(KeyOf(key))
                key_tree = self.enc(key)
                if key_tree[0] == "redacted":
                    secret_key = True
                    path[-1] = ValueAt("<key>")  # never the secret key in a path
                else:
                    path[-1] = ValueAt(key)
                reason = named(key, item)
                item_tree = self.redact(reason) if reason is not None else self.enc(item)
                path.pop()
                pairs.append((tree_bytes(key_tree), key_tree, item_tree))
        finally:
            self.active.discard(id(value))
        if secret_key:  # redacted keys could collide: the whole mapping is redacted
            del self.found[found:]
            return self.redact("redacted (a key looks like a secret)")
        return ["d", sort_entries(pairs)]

    def enc_set(self, value: set[Any] | frozenset[Any]) -> Tree:
        found = len(self.found)
        tree = super().enc_set(value)
        if len(self.found) > found and tree[0] != "placeholder":
            del self.found[found:]  # redacted elements could collide: the whole set is
            return self.redact("redacted (an element looks like a secret)")
        return tree

    def enc_field(self, name: str, item: Any) -> Tree:
        reason = self.redactor.named(name, item)
        return self.enc(item) if reason is None else self.redact(reason)

    def describe(self, value: Any) -> str:
        text, hidden = self.redactor.describe(value)
        where = format_path(self.root, self.path)
        self.found.extend(f"{where}{path}: redacted inside a placeholder" for path in hidden)
        return bounded(text)


def encode_redacted(
    value: Any, redactor: Redactor, *, strict: bool = False, root: str = "value"
) -> tuple[Tree, list[str]]:
    """:func:`encode` under a redaction policy: ``(tree, what was redacted)``.

    Every value, mapping key and named field is shown to ``redactor`` first; a
    secret becomes a redacted node (a mapping or set with a secret key or
    element is redacted whole) and placeholders keep ``redactor``'s secret-free
    repr. The list holds ``"path: reason"`` for each value left out.
    """
    encoder = RedactingEncoder(strict, root, redactor)
    return encoder.enc(value), encoder.found
