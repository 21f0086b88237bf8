"""pcs._yaml: the only YAML parser in pcs refuses everything but plain data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pcs import _yaml
from pcs._yaml import DEFAULT_MAX_BYTES, dump_yaml, load_yaml, load_yaml_file
from pcs.argument_set import ArgumentSet
from pcs.exceptions import SpecError, UnsafeYamlError
from pcs.registry import Registry


@pytest.fixture(autouse=True)
def tracking_uri() -> str:
    """Overrides conftest's per-test MLflow store: these tests never touch MLflow."""
    return "unused://"


@pytest.fixture(
    autouse=True, params=_yaml._LOADERS, ids=lambda cls: cls.__name__.strip("_")
)
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type:
    """Every test runs with the libyaml loader (when built) and the pure-Python one."""
    monkeypatch.setattr(_yaml, "_LOADER", request.param)
    return request.param  # type: ignore[no-any-return]


def refused(path: Path, text: str, line: int, *words: str, **limits: Any) -> UnsafeYamlError:
    """Load ``text`` from ``path``; assert it is refused naming the file, line and words."""
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UnsafeYamlError) as err:
        load_yaml_file(path, **limits)
    error = err.value
    assert error.path == str(path)
    assert error.line == line
    message = str(error)
    assert f"{path}, line {line}:" in message
    for word in words:
        assert word in message
    return error


# ---------------------------------------------------------------- code execution


PAYLOADS = [
    "x: !!python/object/apply:os.system ['touch {marker}']\n",
    "x: !!python/object/apply:builtins.open ['{marker}', 'w']\n",
    "x: !!python/object/new:builtins.open ['{marker}', 'w']\n",
    "x: !!python/object/apply:subprocess.call [['touch', '{marker}']]\n",
    "x: !!python/name:os.system\n",
    "- ok\n- !!python/object/apply:os.system\n  args: ['touch {marker}']\n",
    "%TAG !p! tag:yaml.org,2002:python/object/apply:\n---\nx: !p!os.system ['touch {marker}']\n",
    "x: !<tag:yaml.org,2002:python/object/apply:os.system> ['touch {marker}']\n",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_python_tags_never_run_code(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    text = payload.format(marker=marker)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "!" in row and "%" not in row)
    refused(path, text, line, "refused the tag", "plain YAML")
    with pytest.raises(UnsafeYamlError):
        load_yaml(text)
    with pytest.raises(UnsafeYamlError):
        Registry.from_yaml(path)
    with pytest.raises(UnsafeYamlError):
        ArgumentSet.from_yaml(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "tagged", ["!!binary aGk=", "!!str 1", "!!set {a}", "!!timestamp 2024-01-01", "!local x",
               "! x", "!!map {a: 1}", "!!seq [1]", "!!omap [a: 1]"]
)
def test_every_explicit_tag_is_refused(tmp_path: Path, tagged: str) -> None:
    refused(tmp_path / "t.yaml", f"a: 1\nb: {tagged}\n", 2, "refused the tag")


# ---------------------------------------------------------------- anchors and aliases


def test_alias_bomb_is_refused_fast(tmp_path: Path) -> None:
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        rows.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    text = "\n".join(rows) + "\n"
    start = time.perf_counter()
    refused(tmp_path / "bomb.yaml", text, 1, "anchor &a", "aliases")
    assert time.perf_counter() - start < 0.5


def test_aliases_and_unused_anchors_are_refused(tmp_path: Path) -> None:
    refused(tmp_path / "a.yaml", "a: 1\nb: &x 2\n", 2, "anchor &x")
    refused(tmp_path / "b.yaml", "a: 1\nb: [1,\n  *x]\n", 3, "alias *x")


def test_merge_keys_and_timestamps_stay_plain_strings() -> None:
    assert load_yaml("a: {'<<': 1}\nb: 2024-01-01\nc: <<\nd: =\n") == {
        "a": {"<<": 1}, "b": "2024-01-01", "c": "<<", "d": "="
    }


# ---------------------------------------------------------------- duplicates, depth, documents


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    error = refused(tmp_path / "d.yaml", "a: 1\nb:\n  x: 1\n  y: 2\n  x: 3\n", 5, "duplicate")
    assert "'x'" in str(error)
    assert "first at line 3" in str(error)
    refused(tmp_path / "e.yaml", "1: a\n'1': b\n1.0: c\n", 3, "duplicate mapping key 1.0")


def test_collection_keys_are_refused(tmp_path: Path) -> None:
    refused(tmp_path / "k.yaml", "a: 1\n? [1, 2]\n: 3\n", 2, "mapping key")


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    refused(tmp_path / "deep.yaml", "a:\n" + "  " + "[" * 300 + "]" * 300 + "\n", 2, "deeper")
    assert load_yaml("[" * 10 + "]" * 10, max_depth=10) == [[[[[[[[[[]]]]]]]]]]


def test_multiple_documents_are_refused(tmp_path: Path) -> None:
    refused(tmp_path / "m.yaml", "a: 1\n---\nb: 2\n", 2, "second YAML document")


# ---------------------------------------------------------------- size


def test_oversized_text_is_refused_before_parsing(tmp_path: Path) -> None:
    text = "key: value\n" * 100
    error = refused(tmp_path / "big.yaml", text, 10, "limit of 100 bytes", max_bytes=100)
    assert "1100 bytes" in str(error)
    with pytest.raises(UnsafeYamlError, match="limit") as err:
        load_yaml(text, max_bytes=100, source="text")
    assert err.value.line == 10
    with pytest.raises(UnsafeYamlError, match="limit"):
        load_yaml(text.encode(), max_bytes=100)


def test_default_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    row = b"k" * 1023 + b"\n"
    path.write_bytes(b"a: " + row * (DEFAULT_MAX_BYTES // 1024 + 1))
    with pytest.raises(UnsafeYamlError) as err:
        load_yaml_file(path)
    assert err.value.path == str(path)
    assert err.value.line == DEFAULT_MAX_BYTES // 1024  # the line holding byte 16 MiB + 1
    assert str(DEFAULT_MAX_BYTES) in str(err.value)


# ---------------------------------------------------------------- malformed text


def test_syntax_errors_name_file_and_line(tmp_path: Path) -> None:
    refused(tmp_path / "s.yaml", "a: 1\nb: [1, 2\nc: 3\n", 3, "not valid YAML")


def test_non_utf8_and_control_characters(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"a: 1\nb: \xff\xfe\n")
    with pytest.raises(UnsafeYamlError, match="not UTF-8") as err:
        load_yaml_file(path)
    assert err.value.line == 2
    refused(tmp_path / "c.yaml", "a: 1\nb: \x07\n", 2, "not valid YAML")


def test_bom_and_empty_documents() -> None:
    assert load_yaml(b"\xef\xbb\xbfa: 1\n") == {"a": 1}
    assert load_yaml("") is None
    assert load_yaml("# only a comment\n") is None


def test_errors_are_spec_errors() -> None:
    with pytest.raises(SpecError):
        load_yaml("a: *b")


# ---------------------------------------------------------------- dumping


STRINGS = ["", "~", "null", "true", "yes", "1", "1.5", "0x1f", "1:20", "1e5", ".nan", "2024-01-01",
           "<<", "=", "a\nb", "a\n", "\n", " x", "x ", "\t", "\x00", "\x7f", "\x85", "x\x85y",
           "\u2028", "\u2029", "\ufeff", "\r\n", "'", '"', "- a", "# c", "a: b", "{x}", "[x]",
           "é✓😀", "a" * 300 + " b" * 100, "\\", "%x", "@x", "`x", "!x", "&x", "*x", "|", ">"]


@pytest.mark.parametrize("dumper", _yaml._DUMPERS, ids=lambda cls: cls.__name__.strip("_"))
def test_dump_then_load_is_exact(dumper: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_yaml, "_DUMPER", dumper)
    data = {
        "strings": STRINGS,
        "numbers": [0, -1, 2**80, 0.1, -0.0, 1e300, 5e-324, 1e16, 123456789.0],
        "other": [True, False, None, [], {}, [[1]], {"": 1}],
        "keys": {s: i for i, s in enumerate(STRINGS)},
    }
    text = dump_yaml(data)
    back = load_yaml(text)
    assert back == data
    assert [repr(x) for x in back["numbers"]] == [repr(x) for x in data["numbers"]]


def test_dump_is_deterministic_block_style_without_anchors() -> None:
    shared = [1, 2]
    text = dump_yaml({"b": shared, "a": {"y": 1, "x": shared}})
    assert text == "a:\n  x:\n  - 1\n  - 2\n  y: 1\nb:\n- 1\n- 2\n"
    assert dump_yaml({"a": (1, 2)}) == dump_yaml({"a": [1, 2]})


@pytest.mark.parametrize("bad", [{"a": b"x"}, {"a": {1, 2}}, {1: "a"}, {"a": float("nan")},
                                 {"a": object()}], ids=repr)
def test_dump_refuses_what_cannot_be_read_back(bad: Any) -> None:
    with pytest.raises(SpecError, match="YAML document"):
        dump_yaml(bad)
