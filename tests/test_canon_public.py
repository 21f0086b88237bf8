"""The public face of the encoding, ``pcs.canon``: same objects, same trees, same digests."""

from __future__ import annotations

import ast
import collections
import datetime as dt
import decimal
import enum
import re
import threading
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

import pcs
from pcs import _canon, canon
from pcs.exceptions import EncodingError, SpecError, UsageError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def tracking_uri() -> str:
    """Overrides conftest's per-test MLflow store: these tests never touch MLflow."""
    return "unused://"


class Mode(enum.Enum):
    FAST = "fast"


Pair = collections.namedtuple("Pair", "left right")

VALUES: list[Any] = [
    None, True, 0, -7, 2**70, 0.1, -0.0, 1e300, 1 + 2j, "", "héllo", b"\x00\xff",
    bytearray(b"ab"), decimal.Decimal("1.10"), uuid.UUID(int=1), dt.date(2024, 2, 29),
    dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), dt.time(12, 30),
    dt.timedelta(days=-1, seconds=5), PurePosixPath("/data/x.csv"), Mode.FAST, Pair(1, "r"),
    [1, [2, (3, None)]], (1, 2), {"b": 1, "a": [1.5]}, {1: "x", "1": "y", (1, 2): {3}},
    {"s": {1, 2}, "f": frozenset({"a"})},
]


def test_public_names() -> None:
    assert sorted(canon.__all__) == sorted([
        "FORMAT", "Tree", "ArtifactRef", "Placeholder", "Redacted",
        "canonical_bytes", "decode", "digest", "encode", "find_placeholders", "validate",
        "ExtensionRegistry", "RegistryView", "UnknownExtension", "extensions", "class_path",
        "resolve_class",
    ])
    for name in canon.__all__:
        assert getattr(canon, name).__doc__, name
    assert canon.FORMAT == _canon.FORMAT == "pcs-canon/1"
    assert canon.Tree == _canon.Tree


def test_the_public_objects_are_the_private_ones() -> None:
    for name in ("ArtifactRef", "Placeholder", "Redacted", "canonical_bytes", "decode",
                 "digest", "encode", "find_placeholders", "validate", "ExtensionRegistry",
                 "RegistryView", "UnknownExtension", "class_path", "resolve_class"):
        assert getattr(canon, name) is getattr(_canon, name), name


def test_marker_types_are_the_ones_pcs_decodes_to() -> None:
    tree = _canon.encode({"lock": threading.Lock(), "pw": canon.Redacted("secret"),
                          "big": canon.ArtifactRef("a" * 64, 3)})
    value = canon.decode(tree)
    assert type(value["lock"]) is canon.Placeholder is _canon.Placeholder
    assert type(value["pw"]) is canon.Redacted is _canon.Redacted
    assert type(value["big"]) is canon.ArtifactRef is _canon.ArtifactRef
    assert canon.encode(value) == tree  # markers encode back to their node


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_encode_decode_round_trip(value: Any) -> None:
    tree = canon.encode(value)
    canon.validate(tree)
    back = canon.decode(tree)
    assert back == value
    assert type(back) is type(value)
    assert canon.encode(back) == tree


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_digest_agrees_with_the_private_implementation(value: Any) -> None:
    tree = canon.encode(value)
    assert tree == _canon.encode(value)
    assert canon.canonical_bytes(tree) == _canon.canonical_bytes(tree)
    assert canon.digest(tree) == _canon.digest(tree) == _canon.tree_digest(tree)


def test_pinned_digest_of_the_documented_example() -> None:
    tree = canon.encode({"lr": 0.1, "epochs": 3, "name": "x", "flags": (True, None)})
    assert canon.digest(tree) == (
        "138956b404ad609c3928d64ef6d83dc8c328c2bae4343b99a3abd7f0c6f5342e"
    )


def test_strict_and_malformed_errors() -> None:
    with pytest.raises(EncodingError, match=re.escape("Cannot encode args['x'] exactly")):
        canon.encode({"x": threading.Lock()}, strict=True, root="args")
    assert canon.find_placeholders(canon.encode([threading.Lock()]))[0].startswith("value[0]: ")
    with pytest.raises(SpecError, match="not a canonical decimal integer"):
        canon.validate(["i", "007"])
    assert issubclass(EncodingError, pcs.PcsError)
    assert issubclass(SpecError, pcs.PcsError)


@pytest.mark.parametrize("bad", [{1: 2}, object(), float("nan")])
def test_canonical_bytes_error_names_the_public_encode(bad: Any) -> None:
    with pytest.raises(UsageError, match=re.escape("pcs.canon.encode()")) as info:
        canon.canonical_bytes(bad)
    assert "pcs._canon" not in str(info.value)


@pytest.mark.parametrize("bad", [object(), float("inf")])
def test_spec_data_error_names_the_public_encode(bad: Any) -> None:
    with pytest.raises(SpecError, match=re.escape("pcs.canon.encode()")) as info:
        _canon.plain_copy({"a": bad})
    assert "pcs._canon" not in str(info.value)


def test_no_message_or_doc_sends_users_to_the_private_module() -> None:
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst"))]
    texts += sorted((ROOT / "pcs").rglob("*.py"))
    for path in texts:
        text = path.read_text(encoding="utf-8")
        assert "pcs._canon.encode()" not in text, path


def test_public_module_imports_only_the_private_package() -> None:
    tree = ast.parse((ROOT / "pcs" / "canon.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert {m for m in imported if m and m.startswith("pcs")} <= {"pcs", "pcs._canon"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "pcs":
            assert [alias.name for alias in node.names] == ["_canon"]


def _python_blocks(text: str) -> list[str]:
    """The bodies of the ``.. code-block:: python`` directives in reST ``text``."""
    blocks = []
    for match in re.finditer(r"\.\. code-block:: python\n\n((?:(?: {4}.*)?\n)+)", text):
        lines = match.group(1).splitlines()
        blocks.append("\n".join(line[4:] for line in lines) + "\n")
    return blocks


@pytest.mark.parametrize("where", ["docs/encoding.rst", "pcs.canon docstring"])
def test_documented_examples_run(where: str, capsys: pytest.CaptureFixture[str]) -> None:
    if where == "pcs.canon docstring":
        text = canon.__doc__ or ""
    else:
        text = (ROOT / where).read_text(encoding="utf-8")
    blocks = _python_blocks(text)
    assert blocks, where
    for block in blocks:
        exec(compile(block, where, "exec"), {"__name__": "example"})
    out = capsys.readouterr().out
    if where == "docs/encoding.rst":
        assert "value['lock']: values of this type have no exact encoding" in out
        assert "Cannot encode args['lock'] exactly" in out
        assert "'007' is not a canonical decimal integer" in out
