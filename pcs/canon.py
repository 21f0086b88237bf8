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

**Encoders for more types** come from plugins: a plugin's
``pcs_register_encoders(registry)`` hook (or your own code, through
:data:`extensions`) registers a type under a name and a version with an
encoder and a decoder; values of that type become *extension nodes*
``["x", name, version, payload]`` whose payload is an ordinary tree. A tree
read where no plugin registers the name decodes to :class:`UnknownExtension`,
which encodes back to the same node. See :doc:`/plugins` (writing an
encoder) and :doc:`/encoding` (the node).

.. code-block:: python

    import fractions
    from pcs import canon

    canon.extensions.register(
        fractions.Fraction, name="fractions.Fraction", version=1,
        encode=lambda f: (f.numerator, f.denominator),
        decode=lambda payload, version: fractions.Fraction(*payload),
    )
    tree = canon.encode(fractions.Fraction(1, 3))
    assert tree == ["x", "fractions.Fraction", 1, ["t", [["i", "1"], ["i", "3"]]]]
    assert canon.decode(tree) == fractions.Fraction(1, 3)
    canon.extensions.unregister("fractions.Fraction")

This module only re-exports the stable part of pcs's internal implementation
(``pcs._canon``); the objects are the same, so trees, digests and marker
values agree with what pcs records.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from pcs import _canon
from pcs._canon import (
    EXTENSIONS,
    ArtifactRef,
    ExtensionRegistry,
    Placeholder,
    Redacted,
    RegistryView,
    UnknownExtension,
    canonical_bytes,
    class_path,
    decode,
    digest,
    encode,
    find_placeholders,
    resolve_class,
    validate,
)

__all__ = [
    "FORMAT",
    "ArtifactRef",
    "ExtensionRegistry",
    "Placeholder",
    "Redacted",
    "RegistryView",
    "Tree",
    "UnknownExtension",
    "canonical_bytes",
    "class_path",
    "decode",
    "digest",
    "encode",
    "extensions",
    "find_placeholders",
    "resolve_class",
    "validate",
]

FORMAT: Final = _canon.FORMAT
"""The name and version of the encoding, ``"pcs-canon/1"``.

It is written into every spec that holds trees and into the prefix that
:func:`digest` hashes; a new version of the format gets a new name.
"""

Tree: TypeAlias = _canon.Tree
"""A node of the typed tree, ``[tag, payload...]``, made of JSON data (``list[Any]``)."""

extensions: Final[ExtensionRegistry] = EXTENSIONS
"""The process's encoding extensions (see :class:`ExtensionRegistry`).

Plugins' ``pcs_register_encoders`` hooks fill it when the plugins load (the
first run, or the first value of a type pcs does not know);
``extensions.names()`` lists what is registered.
"""
