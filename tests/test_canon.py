"""The canonical typed encoding ``pcs-canon/1`` (pcs._canon)."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import hashlib
import io
import itertools
import json
import math
import os
import pathlib
import random
import socket
import subprocess
import sys
import threading
import typing
import uuid
import zoneinfo
from pathlib import Path
from typing import Any

import pytest

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
from pcs.exceptions import EncodingError, SpecError, UsageError


@pytest.fixture(autouse=True)
def tracking_uri() -> str:
    """Overrides conftest's per-test MLflow store: these tests never touch MLflow."""
    return "unused://"


class Color(enum.Enum):
    RED = 1
    GREEN = "green"


class Level(enum.IntEnum):
    ONE = 1
    TWO = 2


class Perm(enum.IntFlag):
    R = 4
    W = 2
    X = 1


class Name(str):
    """A str subclass without extra state."""


class Meters(float):
    """A float subclass (like numpy.float64)."""


class Count(int):
    """An int subclass."""


class Tagged(str):
    """A str subclass whose constructor needs two arguments: cannot be rebuilt."""

    def __new__(cls, value: str, tag: str) -> Tagged:
        return super().__new__(cls, value)


class Point(typing.NamedTuple):
    x: int
    y: Any


Pair = collections.namedtuple("Pair", "a b")


def same(a: Any, b: Any) -> bool:
    """Equal, of the same type, NaN-aware, recursively for containers."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a == b and all(same(a[k], b[k]) for k in a)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, dt.datetime):
        return a == b and a.tzinfo == b.tzinfo and a.fold == b.fold and str(a) == str(b)
    return bool(a == b)


# ---------------------------------------------------------------- collisions

DISTINCT: dict[str, Any] = {
    "int 1": 1,
    "float 1.0": 1.0,
    "True": True,
    "str '1'": "1",
    "None": None,
    "str 'None'": "None",
    "tuple (1,2)": (1, 2),
    "list [1,2]": [1, 2],
    "namedtuple Pair(1,2)": Pair(1, 2),
    "dict {1: x}": {1: "x"},
    "dict {'1': x}": {"1": "x"},
    "dict {True: x}": {True: "x"},
    "dict {1.0: x}": {1.0: "x"},
    "0.0": 0.0,
    "-0.0": -0.0,
    "int 0": 0,
    "False": False,
    "bytes b'a'": b"a",
    "str 'a'": "a",
    "bytearray b'a'": bytearray(b"a"),
    "list that looks like a tree": ["s", "a"],
    "set {1,2}": {1, 2},
    "frozenset {1,2}": frozenset({1, 2}),
    "empty str": "",
    "empty bytes": b"",
    "empty list": [],
    "empty tuple": (),
    "empty dict": {},
    "empty set": set(),
    "empty frozenset": frozenset(),
    "complex 1+0j": 1 + 0j,
    "Decimal 1": decimal.Decimal("1"),
    "Decimal 1.0": decimal.Decimal("1.0"),
    "IntEnum Level.ONE": Level.ONE,
    "str subclass Name('1')": Name("1"),
    "date": dt.date(2024, 1, 1),
    "str of date": "2024-01-01",
    "datetime": dt.datetime(2024, 1, 1),
    "UTC datetime": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    "PurePosixPath": pathlib.PurePosixPath("a"),
    "PureWindowsPath": pathlib.PureWindowsPath("a"),
    "uuid": uuid.UUID(int=1),
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "str 'nan'": "nan",
    "nested [[1]]": [[1]],
    "nested [(1,)]": [(1,)],
    "Redacted": Redacted(""),
}


@pytest.mark.parametrize(
    ("left", "right"), list(itertools.combinations(DISTINCT, 2)), ids=lambda name: name
)
def test_no_collisions(left: str, right: str) -> None:
    a, b = DISTINCT[left], DISTINCT[right]
    assert encode(a) != encode(b)
    assert digest(encode(a)) != digest(encode(b))


def test_collision_table_covers_the_contract() -> None:
    for required in ("int 1", "float 1.0", "True", "str '1'", "tuple (1,2)", "list [1,2]",
                     "dict {1: x}", "dict {'1': x}", "0.0", "-0.0", "bytes b'a'", "str 'a'",
                     "None", "str 'None'"):
        assert required in DISTINCT


# ---------------------------------------------------------------- round trips

ROUND_TRIP: dict[str, Any] = {
    **DISTINCT,
    "big int": 10**3000,
    "huge int (hex form)": -(2**9000) + 7,
    "int at the boundary": 2**8192 - 1,
    "int past the boundary": 2**8192,
    "small float": 5e-324,
    "float repr": 0.1 + 0.2,
    "complex nan": complex(float("nan"), -0.0),
    "unicode str": "héllo ✓ 😀",
    "lone surrogate": "a\ud800b",
    "control chars": "\x00\x1f\x7f\x85\u2028",
    "bytes all values": bytes(range(256)),
    "nested": {"a": [1, (2, {3: {4.5, "x"}})], (1, "k"): frozenset({b"z"})},
    "enum": Color.GREEN,
    "int flag member": Perm.R,
    "int flag combination": Perm.R | Perm.W,
    "namedtuple": Point(1, [2, 3]),
    "decimal nan": decimal.Decimal("NaN"),
    "decimal -0": decimal.Decimal("-0"),
    "decimal exponent": decimal.Decimal("1.20E+5"),
    "datetime micro": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
    "datetime offset": dt.datetime(
        2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))
    ),
    "datetime zone fold": dt.datetime(
        2024, 11, 3, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York")
    ),
    "time": dt.time(12, 30, 15, 5),
    "time offset": dt.time(1, 2, tzinfo=dt.UTC),
    "timedelta": dt.timedelta(days=-3, seconds=7, microseconds=9),
    "path": pathlib.Path("/tmp/some dir/f.txt"),
    "windows path": pathlib.PureWindowsPath(r"C:\Users\x"),
    "artifact ref": ArtifactRef("a" * 64, 12),
    "redacted": Redacted("a secret"),
}


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_round_trip(name: str) -> None:
    value = ROUND_TRIP[name]
    tree = encode(value)
    validate(tree)
    back = decode(tree)
    assert same(back, value), (value, tree, back)
    assert encode(back) == tree
    # The tree survives JSON exactly.
    assert json.loads(canonical_bytes(tree)) == tree


def test_nan_dict_keys_and_set_elements_round_trip() -> None:
    value = {float("nan"): 1, float("nan"): 2}
    back = decode(encode(value))
    assert sorted(back.values()) == [1, 2]
    assert len({float("nan"), float("nan")}) == len(decode(encode({float("nan"), float("nan")})))


def test_tuple_stays_tuple_nan_stays_nan() -> None:
    back = decode(encode({"t": (1, [2]), "n": float("nan")}))
    assert type(back["t"]) is tuple
    assert type(back["t"][1]) is list
    assert math.isnan(back["n"])


def test_big_int_form_is_fixed_by_magnitude_not_by_runtime_limit() -> None:
    assert encode(2**8192 - 1)[0] == "i"
    assert encode(2**8192)[0] == "ix"
    assert encode(-(2**8192))[0] == "ix"


# ---------------------------------------------------------------- order invariance


def _shuffled_dict(items: list[tuple[Any, Any]], seed: int) -> dict[Any, Any]:
    items = list(items)
    random.Random(seed).shuffle(items)
    return dict(items)


def test_dict_key_order_never_matters() -> None:
    items = [(k, v) for k, v in zip(
        ["b", "a", 1, 1.5, (1, 2), None, False, b"x", frozenset({1})], range(9), strict=True
    )]
    trees = {json.dumps(encode(_shuffled_dict(items, seed))) for seed in range(30)}
    assert len(trees) == 1


def test_key_order_never_matters_at_any_level() -> None:
    inner = [("x", 1), ("y", [1, 2]), ("z", {"q": 1, "p": 2})]
    reference = None
    for perm in itertools.permutations(range(3)):
        outer = {}
        for index in perm:
            outer[f"k{index}"] = {
                key: (dict(reversed(list(value.items()))) if isinstance(value, dict) else value)
                for key, value in [inner[(index + j) % 3] for j in range(3)]
            }
        nested = {"level": outer, "set": {f"s{i}" for i in perm}}
        result = digest(encode(nested))
        reference = reference or result
        assert result == reference


def test_set_element_order_never_matters() -> None:
    elements = ["a", "b", 1, 2.5, (1, "x"), None, b"q", Color.RED]
    digests = set()
    for seed in range(20):
        shuffled = list(elements)
        random.Random(seed).shuffle(shuffled)
        digests.add(digest(encode(set(shuffled))))
        digests.add(digest(encode(frozenset(shuffled))) + "f")
    assert len(digests) == 2


# ---------------------------------------------------------------- cross-process stability

STABLE_VALUE_SOURCE = (
    "{'b': [1, 2.5, None, True], 'a': {'x', 'y', 'z', 'w'}, "
    "'c': frozenset({'p', 'q', ('r', 1)}), 7: b'bytes', (1, 'k'): {'n': -0.0}}"
)


def test_same_digest_in_fresh_processes_with_different_hash_seeds() -> None:
    here = digest(encode(eval(STABLE_VALUE_SOURCE)))  # a literal under test
    code = (
        "from pcs._canon import digest, encode\n"
        f"print(digest(encode({STABLE_VALUE_SOURCE})))\n"
    )
    seen = set()
    for seed in ("0", "1", "4242", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
            cwd=pathlib.Path(__file__).resolve().parent.parent,
        )
        seen.add(out.stdout.strip())
    assert seen == {here}


def test_format_is_stable() -> None:
    # Pinned: changing any of these bytes is a new format version (pcs-canon/2).
    tree = encode({"lr": 0.1, "epochs": 3, "name": "x", "flags": (True, None)})
    assert canonical_bytes(tree) == (
        b'["d",[[["s","epochs"],["i","3"]],[["s","flags"],["t",[["b",true],["N"]]]],'
        b'[["s","lr"],["f","0.1"]],[["s","name"],["s","x"]]]]'
    )
    assert digest(tree) == hashlib.sha256(b"pcs-canon/1\0" + canonical_bytes(tree)).hexdigest()


# ---------------------------------------------------------------- canonical bytes and hashes


def test_canonical_bytes_is_compact_sorted_utf8() -> None:
    assert canonical_bytes({"b": 1, "a": ["é", 1.5]}) == '{"a":["é",1.5],"b":1}'.encode()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {1: 2}, object(), {"a": {1, 2}}])
def test_canonical_bytes_refuses_non_json(bad: Any) -> None:
    with pytest.raises(UsageError, match="canonically"):
        canonical_bytes(bad)


def test_spec_hash_covers_identifier_and_fields_but_not_itself() -> None:
    fields = {"type": "X", "a": 1}
    h = _canon.spec_hash("id1", fields)
    assert _canon.spec_hash("id1", {**fields, "spec_hash": "whatever"}) == h
    assert _canon.spec_hash("id2", fields) != h
    assert _canon.spec_hash("id1", {**fields, "a": 2}) != h
    assert _canon.spec_hash("id1", {"a": 1, "type": "X"}) == h


def test_split_and_join_spec() -> None:
    fields = {"type": "X", "v": 1}
    assert _canon.split_spec({"abc": fields}) == ("abc", fields)
    assert _canon.split_spec({"identifier": "abc", **fields}) == ("abc", fields)
    assert _canon.join_spec("abc", fields) == {"abc": fields}
    assert _canon.join_spec("abc", fields, flatten=True) == {"identifier": "abc", **fields}
    with pytest.raises(SpecError, match="nested form"):
        _canon.split_spec({"a": {}, "b": {}})
    with pytest.raises(SpecError, match="non-empty identifier"):
        _canon.split_spec({"identifier": ""})


def test_artifact_digest_is_plain_sha256() -> None:
    assert _canon.artifact_digest(b"abc") == hashlib.sha256(b"abc").hexdigest()


# ---------------------------------------------------------------- placeholders


def _gen() -> typing.Iterator[int]:
    yield 1
    yield 2


def test_generators_and_iterators_are_never_consumed() -> None:
    gen = _gen()
    it = iter([1, 2, 3])
    tree = encode({"gen": gen, "it": it})
    assert next(gen) == 1
    assert list(it) == [1, 2, 3]
    problems = find_placeholders(tree)
    assert len(problems) == 2
    assert all("never consumes" in p for p in problems)


def test_unencodable_values_become_placeholders() -> None:
    lock = threading.Lock()
    sock = socket.socket()
    buffer = io.StringIO("x")
    try:
        values = [object(), lock, sock, buffer, collections.deque([1]), lambda: 1]
        for value in values:
            tree = encode(value)
            assert tree[0] == "placeholder"
            info = tree[1]
            assert info["type"] == f"{type(value).__module__}.{type(value).__qualname__}"
            assert len(info["digest"]) == 64
            placeholder = decode(tree)
            assert isinstance(placeholder, Placeholder)
            assert placeholder.type == info["type"]
            assert encode(placeholder) == tree
    finally:
        sock.close()
    assert buffer.read() == "x"  # not read


def test_placeholder_repr_is_bounded_address_free_and_safe() -> None:
    class Loud:
        def __repr__(self) -> str:
            return "L" * 10_000

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("boom")

    assert len(encode(Loud())[1]["repr"]) == _canon.REPR_LIMIT
    assert encode(Broken())[1]["repr"] == "<repr() failed: RuntimeError>"
    # Memory addresses are dropped, so the digest is the same in every process.
    assert encode(object()) == encode(object())
    assert " at 0x" not in encode(object())[1]["repr"]


def test_cycles_do_not_recurse() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    tree = encode(loop)
    assert tree[0] == "l"
    assert tree[1][1][0] == "placeholder"
    assert "cycle" in find_placeholders(tree)[0]
    mapping: dict[str, Any] = {}
    mapping["self"] = mapping
    assert "value['self']: cycle" in find_placeholders(encode(mapping))[0]


def test_shared_references_are_not_cycles() -> None:
    shared = [1]
    assert find_placeholders(encode([shared, shared])) == []


def test_too_deep_nesting_becomes_a_placeholder() -> None:
    value: Any = "leaf"
    for _ in range(_canon.MAX_DEPTH + 5):
        value = [value]
    problems = find_placeholders(encode(value))
    assert len(problems) == 1
    assert "deeper" in problems[0]


def test_strict_raises_with_path_type_and_fix() -> None:
    with pytest.raises(EncodingError) as err:
        encode({"x": [1, 2, threading.Lock()]}, strict=True, root="args")
    message = str(err.value)
    assert "args['x'][2]" in message
    assert "_thread.lock" in message
    assert "strict=False" in message
    assert "exclude the argument" in message


def test_strict_names_dict_keys_and_namedtuple_fields() -> None:
    with pytest.raises(EncodingError, match=r"value\.keys\(\)\['k'\]|value\.keys"):
        encode({object(): 1}, strict=True)
    with pytest.raises(EncodingError, match=r"value\.y"):
        encode(Point(1, object()), strict=True)


def test_strict_refuses_placeholder_values_but_accepts_markers() -> None:
    with pytest.raises(EncodingError):
        encode(decode(encode(object())), strict=True)
    assert encode(Redacted("r"), strict=True) == ["redacted", "r"]


def test_find_placeholders_reports_paths() -> None:
    tree = encode({"a": [1, object()], "b": {"c": _gen()}})
    problems = find_placeholders(tree, root="args")
    assert [p.split(":")[0] for p in problems] == ["args['a'][1]", "args['b']['c']"]
    assert find_placeholders(encode({"a": 1})) == []


def test_find_redacted_and_artifact_refs() -> None:
    tree = encode({"pw": Redacted("secret"), "big": ArtifactRef("b" * 64, 9)})
    assert _canon.find_redacted(tree) == ["value['pw']: secret"]
    assert _canon.find_artifact_refs(tree) == [("value['big']", ArtifactRef("b" * 64, 9))]
    assert find_placeholders(tree) == []


def test_marker_node_builders() -> None:
    assert _canon.redacted_node("why") == ["redacted", "why"]
    assert decode(_canon.artifact_ref_node("c" * 64, 5)) == ArtifactRef("c" * 64, 5)
    with pytest.raises(UsageError):
        _canon.artifact_ref_node("not a digest", 5)


# ---------------------------------------------------------------- subclasses


def test_builtin_subclasses_keep_their_type() -> None:
    assert encode(Level.ONE) == ["e", f"{__name__}:Level", "ONE"]
    assert decode(encode(Level.ONE)) is Level.ONE
    assert encode(Meters(1.5)) == ["sub", f"{__name__}:Meters", ["f", "1.5"]]
    for value in (Name("x"), Meters(-0.0), Count(2**9000)):
        tree = encode(value)
        assert tree[0] == "sub"
        back = decode(tree)
        assert type(back) is type(value)
        assert encode(back) == tree
    assert encode(Count(1)) != encode(1) != encode(Level.ONE)


def test_subclasses_that_cannot_be_rebuilt_become_placeholders() -> None:
    tree = encode(Tagged("x", "t"))
    assert tree[0] == "placeholder"
    assert "does not rebuild" in tree[1]["reason"]


def test_unimportable_or_stateful_subclasses_become_placeholders() -> None:
    class Local(str):
        pass

    class LocalEnum(enum.Enum):
        A = 1

    stateful = Name("x")
    stateful.extra = 1  # type: ignore[attr-defined]
    for value in (Local("x"), LocalEnum.A, stateful, collections.defaultdict(int)):
        assert encode(value)[0] == "placeholder", value


# ---------------------------------------------------------------- malformed trees


@pytest.mark.parametrize(
    "tree",
    [
        "s",
        [],
        ["zz", 1],
        ["i", "01"],
        ["i", "-0"],
        ["i", 1],
        ["i", "1", "2"],
        ["f", "1.00"],
        ["f", "NaN"],
        ["s", 3],
        ["y", "not base64!"],
        ["b", 1],
        ["l", "x"],
        ["d", [[["s", "b"], ["N"]], [["s", "a"], ["N"]]]],
        ["d", [[["s", "a"], ["N"]], [["s", "a"], ["N"]]]],
        ["d", [[["l", []], ["N"]]]],
        ["set", [["i", "2"], ["i", "1"]]],
        ["dec", "1.0 "],
        ["uuid", "{12345678-1234-5678-1234-567812345678}"],
        ["e", "nocolon", "A"],
        ["placeholder", {"type": "x"}],
        ["artifact", {"digest": "abc", "size": 1}],
        ["dt", "2024-01-01", 0, None],
        ["td", 0, 86400, 0],
        ["ix", "ff"],
    ],
    ids=repr,
)
def test_malformed_or_non_canonical_trees_are_refused(tree: Any) -> None:
    with pytest.raises(SpecError, match="Malformed pcs-canon/1 tree at value"):
        validate(tree)
    with pytest.raises(SpecError):
        decode(tree)


def test_decode_errors_name_the_path() -> None:
    with pytest.raises(SpecError, match=r"args\[1\]"):
        decode(["l", [["N"], ["i", "x"]]], root="args")


def test_validate_never_imports() -> None:
    tree = ["e", "pcs_module_that_does_not_exist:Thing", "A"]
    validate(tree)
    with pytest.raises(SpecError, match="not imported"):
        decode(tree)


def test_decode_never_imports_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported.txt"
    (tmp_path / "pcs_decode_bait.py").write_text(
        "import enum, pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "class Bait(enum.Enum):\n    A = 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecError, match="Import it first"):
        decode(["e", "pcs_decode_bait:Bait", "A"])
    assert not marker.exists()


def test_decode_refuses_classes_of_the_wrong_kind() -> None:
    with pytest.raises(SpecError, match="not a subclass of Enum"):
        decode(["e", "os:PathLike", "A"])


# ---------------------------------------------------------------- plain spec data


def test_plain_copy_validates_and_copies() -> None:
    data = {"a": [1, (2, 3)], "b": {"c": None}}
    copy = _canon.plain_copy(data)
    assert copy == {"a": [1, [2, 3]], "b": {"c": None}}
    assert copy["b"] is not data["b"]
    for bad in ({1: 2}, {"a": {1}}, {"a": float("nan")}, {"a": Level.ONE}, {"a": b"x"}):
        with pytest.raises(SpecError, match="where"):
            _canon.plain_copy(bad, where="where")
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SpecError, match="cycle"):
        _canon.plain_copy(loop)


# ---------------------------------------------------------------- package layout

# Bottom to top: a module may import only modules before it in this list.
_LAYERS = [
    "markers", "hashing", "scalars", "paths", "extensions", "encoder", "redacting", "decoder",
    "inspection",
    "spec",
]


def test_canon_package_imports_flow_one_way() -> None:
    import ast

    package = Path(_canon.__file__).parent
    modules = sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__")
    assert modules == sorted(_LAYERS)
    for rank, name in enumerate(_LAYERS):
        tree = ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))
        imported = {
            node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pcs")
        }
        imported |= {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
            for alias in node.names if alias.name.startswith("pcs")
        }
        for module in imported:
            if module == "pcs.exceptions":
                continue
            assert module.startswith("pcs._canon."), f"{name} imports {module}"
            below = module.removeprefix("pcs._canon.")
            assert _LAYERS.index(below) < rank, f"{name} imports {below}, which is above it"


def test_old_private_spellings_are_the_public_functions() -> None:
    assert _canon._tree_digest is _canon.tree_digest
    assert _canon._walk is _canon.walk
    for value in ({"b": [1, 2.5], "a": {"x"}}, "é", None, (1, b"x")):
        tree = encode(value)
        assert _canon.tree_digest(tree) == digest(tree)
    assert [path for path, _ in _canon.walk(encode({"k": [1]}), "v")] == [
        "v", "v.keys()['k']", "v['k']", "v['k'][0]"
    ]
    with pytest.raises(UsageError, match="canonically"):
        _canon.tree_digest(["f", float("nan")])
