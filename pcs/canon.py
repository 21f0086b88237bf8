"""The ``pcs-canon/1`` encoding: typed trees of Python values, their bytes and digests.

pcs records every captured value (arguments, return values) as a *tree*:
JSON data made of lists ``[tag, payload...]`` whose tag keeps the Python
type, so ``1``, ``1.0``, ``True`` and ``"1"`` never share a tree and dict
order never changes one. This module is the documented way to produce and
read those trees outside pcs's own recording, for example to check what pcs
will store for a value, to compare two recorded values, or to compute the
identifier a value will get. The format itself is described tag by tag in
:doc:`/encoding`.

.. code-block:: python

    from pcs import canon

    tree = canon.encode({"lr": 0.1, "epochs": 3})
    assert tree == ["d", [[["s", "epochs"], ["i", "3"]], [["s", "lr"], ["f", "0.1"]]]]
    assert canon.decode(tree) == {"lr": 0.1, "epochs": 3}
    assert canon.canonical_bytes(tree) == (
        b'["d",[[["s","epochs"],["i","3"]],[["s","lr"],["f","0.1"]]]]'
    )
    print(canon.digest(tree))  # SHA-256 hex, the same in every process

Values without an exact encoding (open files, arbitrary objects, iterators...)
become placeholder nodes, which decode to :class:`Placeholder`;
``encode(value, strict=True)`` raises :class:`pcs.EncodingError` instead.
A malformed or non-canonical tree makes :func:`decode` and :func:`validate`
raise :class:`pcs.SpecError`.

**Encoders for more types** are registered here by plugins (issue: plugin
hooks). Until that hook exists, the set of encodable types is the fixed one
listed in :doc:`/encoding`: pcs offers no way to add one, because a type needs
an encoder *and* a decoder under a documented tag for its trees to round-trip
and validate.

This module only re-exports the stable part of pcs's internal implementation
(``pcs._canon``); the objects are the same, so trees, digests and marker
values agree with what pcs records.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from pcs import _canon
from pcs._canon import (
    ArtifactRef,
    Placeholder,
    Redacted,
    canonical_bytes,
    decode,
    digest,
    encode,
    find_placeholders,
    validate,
)

__all__ = [
    "FORMAT",
    "ArtifactRef",
    "Placeholder",
    "Redacted",
    "Tree",
    "canonical_bytes",
    "decode",
    "digest",
    "encode",
    "find_placeholders",
    "validate",
]

FORMAT: Final = _canon.FORMAT
"""The name and version of the encoding, ``"pcs-canon/1"``.

It is written into every spec that holds trees and into the prefix that
:func:`digest` hashes; a new version of the format gets a new name.
"""

Tree: TypeAlias = _canon.Tree
"""A node of the typed tree, ``[tag, payload...]``, made of JSON data (``list[Any]``)."""
