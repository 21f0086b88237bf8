"""Canonical, typed encoding of Python values: format ``pcs-canon/1`` (internal API).

:func:`encode` turns a Python value into a *tree*: JSON-compatible data made of
lists ``[tag, payload...]``.  The tag keeps the Python type, so values that
compare equal in Python but are different values (``1``, ``1.0``, ``True``;
``(1, 2)`` and ``[1, 2]``; ``0.0`` and ``-0.0``) never share a tree.  Dict
entries and set elements are sorted by their canonical bytes, so insertion
order never matters.  :func:`decode` is the exact inverse for every value that
could be encoded.  :func:`digest` hashes a tree with SHA-256 over
:func:`canonical_bytes`; it depends only on the value, never on ``hash()``,
``id()``, ``PYTHONHASHSEED`` or dict order.

Values that cannot be encoded exactly become *placeholder* nodes (type, a
bounded repr, a digest); with ``strict=True`` :class:`~pcs.exceptions.EncodingError`
is raised instead.  Iterators and generators are never consumed.

The format is documented tag by tag in ``docs/encoding.rst`` so that other
tools can read it.  Changing the meaning of a tag requires a new format
version.  Users reach the documented part through :mod:`pcs.canon`; this
package is what the rest of pcs imports.

Modules, bottom to top (each imports only from those above it in this list):

``markers``
    format constants, the ``Tree`` type, Placeholder / ArtifactRef / Redacted
    and their nodes;
``hashing``
    canonical bytes, digests, spec and placeholder hashes;
``scalars``
    the tree of each scalar type (shared by encoder and decoder);
``paths``
    how a location inside a value is spelled in messages;
``extensions``
    the types plugins register (``["x", name, version, payload]`` nodes),
    class paths;
``encoder``
    :func:`encode`, and the deferred scalars of the hot path;
``redacting``
    :func:`encode_redacted` under a :class:`Redactor` policy;
``decoder``
    :func:`decode` and :func:`validate`;
``inspection``
    :func:`walk` and the ``find_*`` functions, :func:`copy_tree`;
``spec``
    plain spec data and the nested / flat spec forms.
"""

from __future__ import annotations

from pcs._canon.decoder import decode, validate
from pcs._canon.encoder import (
    DEFERRABLE_INT,
    FLOATS,
    SNAPSHOT,
    encode,
    is_deferrable,
    pack_floats,
    snapshot_value,
    trees,
    type_name,
)
from pcs._canon.extensions import (
    EXTENSIONS,
    Extension,
    ExtensionRegistry,
    RegistryView,
    UnknownExtension,
    class_path,
    resolve_class,
)
from pcs._canon.hashing import (
    artifact_digest,
    canonical_bytes,
    digest,
    spec_hash,
    tree_digest,
)
from pcs._canon.inspection import (
    copy_tree,
    find_artifact_refs,
    find_extensions,
    find_placeholders,
    find_redacted,
    walk,
)
from pcs._canon.markers import (
    FORMAT,
    MAX_DEPTH,
    REPR_LIMIT,
    ArtifactRef,
    Placeholder,
    Redacted,
    Tree,
    artifact_ref_node,
    redacted_node,
)
from pcs._canon.redacting import Redactor, encode_redacted
from pcs._canon.spec import join_spec, plain_copy, split_spec

__all__ = [
    "DEFERRABLE_INT",
    "EXTENSIONS",
    "FLOATS",
    "FORMAT",
    "MAX_DEPTH",
    "REPR_LIMIT",
    "SNAPSHOT",
    "ArtifactRef",
    "Extension",
    "ExtensionRegistry",
    "Placeholder",
    "Redacted",
    "Redactor",
    "RegistryView",
    "Tree",
    "UnknownExtension",
    "artifact_digest",
    "artifact_ref_node",
    "canonical_bytes",
    "class_path",
    "copy_tree",
    "decode",
    "digest",
    "encode",
    "encode_redacted",
    "find_artifact_refs",
    "find_extensions",
    "find_placeholders",
    "find_redacted",
    "is_deferrable",
    "join_spec",
    "pack_floats",
    "plain_copy",
    "redacted_node",
    "resolve_class",
    "snapshot_value",
    "spec_hash",
    "split_spec",
    "tree_digest",
    "trees",
    "type_name",
    "validate",
    "walk",
]

# Old private spellings, still called by modules outside this package until they
# switch to the public names: pcs._records and pcs.argument_set (_tree_digest),
# pcs.replay (_walk). Remove once nothing uses them.
_tree_digest = tree_digest
_walk = walk
