"""The bottom of :mod:`pcs._canon`: format constants, the tree type and the marker values.

A *marker* stands in a tree for a value that is not there: a
:class:`Placeholder` (could not be encoded exactly), an :class:`ArtifactRef`
(stored elsewhere, by content) or a :class:`Redacted` value (deliberately not
recorded). :func:`~pcs._canon.decode` returns these objects for the
``placeholder``, ``artifact`` and ``redacted`` nodes, and encoding them gives
back the node they came from.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Final, TypeAlias

from pcs.exceptions import UsageError

__all__ = [
    "FORMAT",
    "HEX64",
    "MAX_DEPTH",
    "REPR_LIMIT",
    "ArtifactRef",
    "Placeholder",
    "Redacted",
    "Tree",
    "artifact_ref_node",
    "redacted_node",
]

FORMAT: Final = "pcs-canon/1"
"""Name and version of the encoding; stored in every spec that holds trees."""

MAX_DEPTH: Final = 64
"""Containers nested deeper than this become placeholders (``reason: too deep``)."""

REPR_LIMIT: Final = 200
"""Placeholders keep at most this many characters of the value's repr."""

HEX64: Final = re.compile(r"[0-9a-f]{64}")
"""A lowercase SHA-256 hex digest, as artifact references and placeholders carry it."""

Tree: TypeAlias = list[Any]
"""A node of the typed tree: ``[tag, payload...]`` (JSON-compatible)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Placeholder:
    """What :func:`decode` returns for a value that could not be encoded.

    ``digest`` is a SHA-256 of the type name and the (address-free) repr, so it
    tells values apart only as far as their repr does: it is *not* a hash of
    the value's content.
    """

    type: str
    repr: str
    digest: str
    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ArtifactRef:
    """A value stored elsewhere (an artifact) under its SHA-256 ``digest``."""

    digest: str
    size: int


@dataclasses.dataclass(frozen=True, slots=True)
class Redacted:
    """A value that was deliberately not recorded (for example a secret)."""

    reason: str = ""


def artifact_ref_node(digest: str, size: int) -> Tree:
    """The node of a value stored as an artifact: ``["artifact", {"digest", "size"}]``.

    ``digest`` is :func:`artifact_digest` of the artifact's bytes (by convention
    the :func:`canonical_bytes` of the value's tree) and ``size`` their length.
    """
    if type(digest) is not str or not HEX64.fullmatch(digest):
        raise UsageError(f"Artifact digest {digest!r} is not a lowercase sha256 hex digest.")
    if type(size) is not int or size < 0:
        raise UsageError(f"Artifact size {size!r} must be an int >= 0.")
    return ["artifact", {"digest": digest, "size": size}]


def redacted_node(reason: str = "") -> Tree:
    """The node of a value that was deliberately not recorded: ``["redacted", reason]``.

    Nothing derived from the value (not even a hash) goes into the node.
    """
    if type(reason) is not str:
        raise UsageError(f"The reason of a redacted value must be a str, not {type(reason)}.")
    return ["redacted", reason]
