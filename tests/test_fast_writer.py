"""A faster writer: time-ordered run ids, and orjson for canonical JSON where the bytes agree.

Run ids are UUIDv7s (48 bits of milliseconds, then a counter started at random)
so MLflow's B-tree indexes grow at their end instead of at random places; they
stay 32 lowercase hex digits, valid MLflow run ids, unique across threads,
processes and forks. Canonical JSON (``pcs._canon.canonical_bytes``,
``tree_bytes``, and every digest built on them) is written by orjson only
where its bytes are those of the ``json`` encoder, which stays the definition:
checked here byte for byte over the encoding corpus of ``test_canon`` and
``test_canon_public``, targeted edge cases and random trees.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import itertools
import json
import math
import os
import random
import re
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import _validate_run_id
from test_canon import ROUND_TRIP
from test_canon_public import VALUES

import pcs
from pcs._canon import canonical_bytes, encode, hashing
from pcs._store import facade
from pcs.exceptions import UsageError

ROOT = Path(__file__).resolve().parent.parent
HEX32 = re.compile(r"[0-9a-f]{32}")


def _ms(run_id: str) -> int:
    """The millisecond timestamp of a UUIDv7 run id (its first 48 bits)."""
    return int(run_id[-32:], 16) >> 80


# ---------------------------------------------------------------- run ids


def test_ids_are_uuid7_hex_and_valid_mlflow_run_ids(tracking_uri: str) -> None:
    before = time.time_ns() // 1_000_000
    ids = [facade.Backend(tracking_uri).new_run_id("0") for _ in range(100)]
    after = time.time_ns() // 1_000_000
    for run_id in ids:
        assert HEX32.fullmatch(run_id)
        _validate_run_id(run_id)  # MLflow's own check; raises if invalid
        parsed = uuid.UUID(run_id)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert parsed.hex == run_id
        assert before <= _ms(run_id) <= after


def test_local_ids_of_client_stores_keep_their_prefix_and_are_time_ordered() -> None:
    backend = facade.Backend("http://127.0.0.1:1")  # never contacted: ids are made locally
    ids = [backend.new_run_id("0") for _ in range(1000)]
    for run_id in ids:
        assert run_id.startswith("pcs-local-")
        assert HEX32.fullmatch(run_id[len("pcs-local-"):])
        _validate_run_id(run_id)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_sort_by_creation_time_across_milliseconds(tracking_uri: str) -> None:
    backend = facade.Backend(tracking_uri)
    ids: list[str] = []
    deadline = time.monotonic() + 5
    while len({_ms(i) for i in ids}) < 20 and time.monotonic() < deadline:
        ids.extend(backend.new_run_id("0") for _ in range(50))
        time.sleep(0.0005)
    assert len({_ms(i) for i in ids}) >= 20  # many milliseconds, many ids in each
    assert len(ids) > len({_ms(i) for i in ids})
    assert all(a < b for a, b in itertools.pairwise(ids))  # strictly increasing


def test_100k_ids_from_four_threads_are_unique_and_each_thread_ascends(tracking_uri: str) -> None:
    backend = facade.Backend(tracking_uri)
    results: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def make(out: list[str]) -> None:
        start.wait()
        out.extend(backend.new_run_id("0") for _ in range(25_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [run_id for out in results for run_id in out]
    assert len(every) == 100_000
    assert len(set(every)) == 100_000
    for out in results:
        assert out == sorted(out)


_FORK_PROGRAM = textwrap.dedent(
    """
    import json, os, sys
    from pcs._store import facade

    backend = facade.Backend(sys.argv[1])
    before = [backend.new_run_id("0") for _ in range(1000)]
    child_file = sys.argv[2]
    pid = os.fork()
    if pid == 0:
        ids = [backend.new_run_id("0") for _ in range(20000)]
        with open(child_file, "w") as fh:
            json.dump(ids, fh)
        os._exit(0)
    ids = [backend.new_run_id("0") for _ in range(20000)]
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    with open(child_file) as fh:
        child = json.load(fh)
    print(json.dumps({"before": before, "parent": ids, "child": child}))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_never_repeats_the_parents_ids(tracking_uri: str, tmp_path: Path) -> None:
    # In a program of its own: pytest is not forked (see test_fork.py).
    out = subprocess.run(
        [sys.executable, "-c", _FORK_PROGRAM, tracking_uri, str(tmp_path / "child.json")],
        capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    ids = json.loads(out.stdout)
    before, parent, child = ids["before"], ids["parent"], ids["child"]
    assert len(set(before + parent + child)) == len(before) + len(parent) + len(child)
    assert parent == sorted(parent)
    assert child == sorted(child)
    assert before == sorted(before)
    assert parent[0] > before[-1]
    # The child's counter starts afresh at random, far from the parent's continuation.
    low = (1 << 80) - 1
    assert abs((int(child[0], 16) & low) - (int(parent[0], 16) & low)) > 10**9


@pcs.tracked
def step(i: int) -> int:
    return i * 2


def test_runs_of_tracked_calls_read_back_with_stock_mlflow_ids_ascending_with_start(
    tracking_uri: str,
) -> None:
    with pcs.run("outer") as outer:
        for i in range(30):
            step(i)
            if i % 5 == 0:
                time.sleep(0.003)  # several milliseconds between some runs
    assert pcs.flush(timeout=60)
    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs(["0"], max_results=1000)
    assert len(runs) == 31
    ids = {r.info.run_id for r in runs}
    assert outer.identifier in ids
    assert min(ids) == outer.identifier
    for run in runs:
        run_id = run.info.run_id
        assert HEX32.fullmatch(run_id)
        assert uuid.UUID(run_id).version == 7
        assert client.get_run(run_id).info.run_id == run_id
        assert abs(_ms(run_id) - run.info.start_time) < 5_000
    by_id = sorted(runs, key=lambda r: r.info.run_id)
    starts = [r.info.start_time for r in by_id]
    assert starts == sorted(starts)  # ids ascend with start time
    steps = [r for r in by_id if r.info.run_id != outer.identifier]
    assert [r.data.params["arg.i"] for r in steps] == [str(i) for i in range(30)]
    assert {r.data.tags["mlflow.parentRunId"] for r in steps} == {outer.identifier}


# ---------------------------------------------------------------- canonical JSON: orjson == json

_REFERENCE = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _json_bytes(value: Any) -> bytes:
    """The definition: the standard library's encoder, as pcs has always hashed."""
    return _REFERENCE.encode(value).encode("utf-8")


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    ONE = 1


class Name(str):
    pass


class Count(int):
    pass


class Meters(float):
    pass


@dataclasses.dataclass
class Point:
    x: int = 1


def check_same(value: Any) -> None:
    """canonical_bytes and tree_bytes give the json encoder's bytes, or refuse as it does."""
    try:
        expected = _json_bytes(value)
    except (TypeError, ValueError, UnicodeError):
        with pytest.raises(UsageError):
            canonical_bytes(value)
        if not _foreign(value):  # tree_bytes trusts its caller not to pass those
            with pytest.raises((TypeError, ValueError, UnicodeError)):
                hashing.tree_bytes(value)
        return
    if _non_str_keys(value):
        with pytest.raises(UsageError):
            canonical_bytes(value)
    else:
        assert canonical_bytes(value) == expected, value
    assert hashing.tree_bytes(value) == expected, value


def _foreign(value: Any) -> bool:
    """Whether ``value`` holds what json refuses and orjson writes: enums, UUIDs, Fragments."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, enum.Enum | uuid.UUID | orjson.Fragment):
            return True
        if type(item) is dict:
            stack.extend(item.values())
        elif type(item) in (list, tuple):
            stack.extend(item)
    return False


def _non_str_keys(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            if any(not isinstance(k, str) for k in item):
                return True
            stack.extend(item.values())
        elif type(item) in (list, tuple):
            stack.extend(item)
    return False


def test_the_installed_orjson_is_used() -> None:
    # orjson before 3.11.7 writes exponents as 1e16 (json: 1e+16): pcs would then use
    # json only (correct, slower). The project's orjson must not silently be such a one.
    assert hashing._FAST, f"orjson {orjson.__version__} spells floats unlike json"


def test_corpus_trees_and_values_give_json_bytes_through_orjson(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = [*ROUND_TRIP.values(), *VALUES]
    trees = [encode(v) for v in values]
    expected = [_json_bytes(t) for t in trees]
    for value in values:
        check_same(value)
    # The trees pcs hashes take the orjson path: no fallback to json at all.
    monkeypatch.setattr(hashing, "_JSON", None)  # any fallback would raise AttributeError
    assert [canonical_bytes(t) for t in trees] == expected
    assert [hashing.tree_bytes(t) for t in trees] == expected
    specs = [["spec", "0" * 64, {"type": "ArgumentSet", "format": "pcs-canon/1",
                                 "arguments": {"m.f": {"f": {"x": t, "y": trees[0]}}}}]
             for t in trees]
    assert [hashing.tree_bytes(s) for s in specs] == [_json_bytes(s) for s in specs]


def _floats() -> list[float]:
    out = [0.0, -0.0, 1.0, -1.0, 0.1, 0.2, 0.1 + 0.2, 1 / 3, 2 / 3, math.pi, 1e15, 1e16, 1e17,
           9999999999999998.0, 1e21, 1e22, 1e23, 1e100, 1e300, 1.7976931348623157e308,
           1e-4, 1e-5, 2.5e-5, 1e-6, 1e-7, 1e-9, 1e-10, 1e-100, 5e-324, 2.2250738585072014e-308,
           12345678901234567890.0, 123456.789, float("nan"), float("inf"), float("-inf")]
    for exponent in range(-325, 310):
        for mantissa in (1.0, 1.5, 2.5, 9.999999999999998, 4.9406564584124654):
            try:
                x = float(f"{mantissa}e{exponent}")
            except OverflowError:
                continue
            out += [x, -x, math.nextafter(x, math.inf), math.nextafter(x, -math.inf)]
    out += [math.nextafter(1e-4, 0), math.nextafter(1e16, 0), math.nextafter(1e16, math.inf)]
    rng = random.Random(15)
    out += [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            for _ in range(10_000)]
    out += [rng.uniform(-1e6, 1e6) for _ in range(2_000)]
    out += [round(rng.uniform(-10, 10), rng.randint(0, 9)) for _ in range(2_000)]
    out += [rng.random() * 10.0 ** rng.randint(-12, 20) for _ in range(2_000)]
    return out


def test_every_float_is_spelled_as_json_spells_it_or_refused_alike() -> None:
    floats = _floats()
    for x in floats:
        check_same(x)
        check_same({"k": [1, x]})
    finite = [x for x in floats if math.isfinite(x)]
    check_same(finite)  # one big list: a single hazard anywhere sends it all to json
    safe = [x for x in finite if x == 0 or 1e-4 <= abs(x) < 1e16]
    assert hashing._dumps(safe, None, hashing._OPTIONS) == _json_bytes(safe)


def test_ints_bools_none_at_the_64_bit_edges() -> None:
    for value in (0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63),
                  -(2**63) - 1, 10**30, -(10**30), 2**8192, True, False, None):
        check_same(value)
        check_same({"v": [value, (value,)]})


def test_every_character_as_value_and_as_key() -> None:
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    check_same("".join(chars))
    for start in range(0, len(chars), 4096):
        check_same(chars[start:start + 4096])
    check_same(dict.fromkeys(chars[:0x3000], 0))
    rng = random.Random(7)
    check_same(dict.fromkeys(rng.sample(chars, 30_000), 1))
    for text in ('"', "\\", "\x00", "\x1f", "\x7f", "\x85", "\u2028", "\u2029", "\ufeff",
                 "a\U0001f600b", "\ud800", "a\udfffb", "\udbff\udc00"):
        check_same(text)
        check_same({text: text})


def test_keys_sort_by_code_point_across_the_bmp_and_beyond() -> None:
    # UTF-16 order would put U+10000 before U+E000; code points (json) and UTF-8 bytes
    # (orjson) agree: U+E000 < U+FFFF < U+10000.
    keys = ["\ue000", "\uffff", "\U00010000", "\U0010ffff", "\ud7ff", "a", "a\U00010000",
            "a\uffff", "", "ab", "a\x00", "Z", "é", "\x7f", "\x80"]
    data = dict.fromkeys(keys, 0)
    check_same(data)
    assert canonical_bytes(data) == _json_bytes(data)
    assert list(json.loads(canonical_bytes(data))) == sorted(keys)


def test_types_orjson_and_json_treat_differently_take_the_json_path() -> None:
    for value in (Color.RED, Level.ONE, Name("x"), Count(3), Meters(1.5), Point(),
                  uuid.UUID(int=1), dt.date(2024, 1, 1), dt.datetime(2024, 1, 1),
                  collections.OrderedDict(b=1, a=2), collections.namedtuple("P", "a b")(1, 2),
                  {Name("b"): 1, "a": 2}, {1: 2}, {None: 1}, {True: 1}, {1.5: 1}, b"x",
                  orjson.Fragment(b"[1]"), {"a": {1, 2}}, object()):
        check_same(value)
        check_same([1, {"k": value}])
    for value in (Color.RED, uuid.UUID(int=1), orjson.Fragment(b"[1]")):
        with pytest.raises(UsageError):  # json refuses them; so does canonical_bytes
            canonical_bytes({"k": [value]})


def test_deep_nesting_and_cycles_fall_back_to_json() -> None:
    deep: list[Any] = []
    node = deep
    for _ in range(600):  # deeper than orjson's limit (255), within json's
        node.append([])
        node = node[0]
    check_same(deep)
    cycle: list[Any] = [1]
    cycle.append(cycle)
    with pytest.raises(UsageError):  # refused, never an endless walk
        canonical_bytes({"a": cycle})
    branching: dict[str, Any] = {}
    branching["x"] = [branching, branching]
    with pytest.raises(UsageError):
        canonical_bytes(branching)


def test_strings_that_look_like_hazards_are_still_exact() -> None:
    for text in ("null", ",null", "[null]", ":null", "0.0000", ",0.00001", "1e-7", "3e+16",
                 "9e-", "x,1e-07]", "-0.0000", "nullable", "1e+", "e-mail"):
        check_same(text)
        check_same({text: [text, 1.5]})
        check_same(encode({text: text}))


def _random_tree(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 5 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([rng.randint(-(2**70), 2**70), rng.randint(-1000, 1000),
                           rng.randint(-(2**63), 2**64 - 1)])
    if kind == 2:
        exponent = rng.randint(-330, 310)
        return rng.choice([rng.random() * 10.0 ** min(max(exponent, -300), 300), rng.uniform(-1, 1),
                           struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0],
                           -0.0, 0.0])
    if kind in (3, 4, 5):
        alphabet = "abcé\"\\\n\x00\x1f\u2028\ue000\uffff\U00010000\U0010ffff0.e-+,:[]nul"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(8)))
    if kind in (6, 7):
        items = [_random_tree(rng, depth + 1) for _ in range(rng.randrange(5))]
        return tuple(items) if rng.random() < 0.2 else items
    keys = [_random_tree(rng, 5) if rng.random() < 0.05 else str(_random_tree(rng, 5))
            for _ in range(rng.randrange(5))]
    return {key: _random_tree(rng, depth + 1) for key in keys}


def test_random_trees_give_json_bytes() -> None:
    rng = random.Random(2024)
    for _ in range(3_000):
        tree = _random_tree(rng)
        check_same(tree)
        try:
            typed = encode(tree)
        except Exception:  # unhashable keys... (encode's own tests cover those)
            continue
        check_same(typed)
