"""Encoding extensions (pcs.canon.extensions): registering types, the ``["x", name, version,
payload]`` node, decoding without the plugin, versions, failures, replay."""

from __future__ import annotations

import fractions
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from replay_support import CodeDir

import pcs
from pcs import canon
from pcs.exceptions import EncodingError, ReplayError, SpecError, UsageError
from pcs.hookspecs import hookimpl

NAME = "test.Fraction"


def _encode(value: fractions.Fraction) -> tuple[int, int]:
    return value.numerator, value.denominator


def _decode(payload: tuple[int, int], version: int) -> fractions.Fraction:
    return fractions.Fraction(*payload)


@pytest.fixture
def fraction() -> Iterator[None]:
    canon.extensions.register(fractions.Fraction, name=NAME, version=2,
                              encode=_encode, decode=_decode)
    yield
    canon.extensions.unregister(NAME)


def test_a_registered_type_encodes_as_an_extension_node(fraction: None) -> None:
    tree = canon.encode({"f": fractions.Fraction(1, 3)})
    node = ["x", NAME, 2, ["t", [["i", "1"], ["i", "3"]]]]
    assert tree == ["d", [[["s", "f"], node]]]
    assert canon.decode(tree) == {"f": fractions.Fraction(1, 3)}
    canon.validate(tree)
    assert canon.digest(canon.encode(fractions.Fraction(2, 6))) == canon.digest(node)
    assert canon.digest(canon.encode(fractions.Fraction(1, 4))) != canon.digest(node)


def test_without_the_registration_the_value_is_a_placeholder_and_the_node_an_unknown_marker(
    fraction: None,
) -> None:
    tree = canon.encode([fractions.Fraction(1, 3)])
    canon.extensions.unregister(NAME)
    assert canon.encode(fractions.Fraction(1, 3))[0] == "placeholder"
    canon.validate(tree)  # still a well-formed tree
    value = canon.decode(tree)[0]
    assert isinstance(value, canon.UnknownExtension)
    assert (value.name, value.version) == (NAME, 2)
    assert "no plugin registers" in value.reason
    assert canon.encode([value]) == tree  # the marker keeps the node: the digest is kept
    canon.extensions.register(fractions.Fraction, name=NAME, version=2,
                              encode=_encode, decode=_decode)


def test_a_node_of_a_newer_version_is_not_decoded_by_an_older_plugin(fraction: None) -> None:
    newer = ["x", NAME, 3, ["t", [["i", "1"], ["i", "3"]]]]
    value = canon.decode(newer)
    assert isinstance(value, canon.UnknownExtension)
    assert "newer than the installed version 2" in value.reason
    older = ["x", NAME, 1, ["t", [["i", "1"], ["i", "3"]]]]
    assert canon.decode(older) == fractions.Fraction(1, 3)  # the decoder gets the version


def test_registration_by_name_by_test_and_with_subclasses() -> None:
    class Base:
        def __init__(self, n: int) -> None:
            self.n = n

    class Child(Base):
        pass

    registry = canon.ExtensionRegistry()
    registry.register(Base, name="t.base", version=1, encode=lambda v: v.n,
                      decode=lambda p, v: Base(p), subclasses=True)
    registry.register("fractions.Fraction", name="t.fraction", version=1,
                      encode=_encode, decode=_decode)
    registry.register(lambda cls: cls.__name__ == "Decimal", name="t.decimal", version=1,
                      encode=str, decode=lambda p, v: p)
    import decimal

    assert registry.lookup(Child).name == "t.base"  # type: ignore[union-attr]
    assert registry.lookup(fractions.Fraction).name == "t.fraction"  # type: ignore[union-attr]
    assert registry.lookup(decimal.Decimal).name == "t.decimal"  # type: ignore[union-attr]
    assert registry.lookup(bytes) is None
    assert registry.names() == {"t.base": 1, "t.decimal": 1, "t.fraction": 1}
    registry.unregister("t.base")
    assert registry.lookup(Child) is None  # the cache was dropped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": int}, "own exact encoding"),
        ({"kind": dict}, "own exact encoding"),
        ({"name": "no spaces"}, "dotted identifiers"),
        ({"version": 0}, "version must be an int"),
        ({"version": True}, "version must be an int"),
        ({"encode": None}, "callables"),
        ({"kind": "not a name!"}, "QualName"),
        ({"kind": "a.B", "subclasses": True}, "subclasses=True"),
    ],
)
def test_bad_registrations_are_refused(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"kind": fractions.Fraction, "name": "t.ok", "version": 1,
                                 "encode": _encode, "decode": _decode}
    arguments.update(kwargs)
    kind = arguments.pop("kind")
    with pytest.raises(UsageError, match=message):
        canon.ExtensionRegistry().register(kind, **arguments)


def test_a_name_is_registered_once(fraction: None) -> None:
    with pytest.raises(UsageError, match="registered already"):
        canon.extensions.register(range, name=NAME, version=1, encode=str, decode=str)


def test_a_failing_encoder_gives_a_placeholder_or_a_strict_error() -> None:
    def refuse(value: fractions.Fraction) -> Any:
        raise ValueError("too irrational")

    canon.extensions.register(fractions.Fraction, name=NAME, version=1, encode=refuse,
                              decode=_decode)
    try:
        tree = canon.encode([fractions.Fraction(1, 2)])
        assert tree[1][0][0] == "placeholder"
        assert "too irrational" in tree[1][0][1]["reason"]
        assert NAME in tree[1][0][1]["reason"]
        with pytest.raises(EncodingError, match=r"value\[0\].*too irrational"):
            canon.encode([fractions.Fraction(1, 2)], strict=True)
    finally:
        canon.extensions.unregister(NAME)


def test_a_failing_decoder_is_a_spec_error_naming_the_extension() -> None:
    def broken(payload: Any, version: int) -> Any:
        raise ValueError("cannot read")

    canon.extensions.register(fractions.Fraction, name=NAME, version=1, encode=_encode,
                              decode=broken)
    try:
        tree = canon.encode(fractions.Fraction(1, 2))
        with pytest.raises(SpecError, match=rf"{NAME}.*cannot read"):
            canon.decode(tree)
    finally:
        canon.extensions.unregister(NAME)


def test_malformed_extension_nodes_are_refused() -> None:
    for bad in (["x", NAME, 1], ["x", 3, 1, ["N"]], ["x", NAME, "1", ["N"]],
                ["x", NAME, 0, ["N"]], ["x", NAME, 1, ["nope"]]):
        with pytest.raises(SpecError):
            canon.validate(bad)


def test_an_encoder_returning_its_own_value_is_refused_as_a_cycle() -> None:
    canon.extensions.register(fractions.Fraction, name=NAME, version=1,
                              encode=lambda value: value, decode=_decode)
    try:
        tree = canon.encode(fractions.Fraction(1, 2))
        assert tree[:3] == ["x", NAME, 1]
        (problem,) = canon.find_placeholders(tree)
        assert problem.startswith(f"value<{NAME}>: cycle")
        with pytest.raises(EncodingError, match="cycle"):
            canon.encode(fractions.Fraction(1, 2), strict=True)
    finally:
        canon.extensions.unregister(NAME)


def test_a_plugin_failing_in_register_encoders_registers_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Half:
        @hookimpl
        def pcs_register_encoders(self, registry: Any) -> None:
            registry.register(fractions.Fraction, name=NAME, version=1, encode=_encode,
                              decode=_decode)
            raise RuntimeError("second registration broke")

    pcs.plugins.register(Half(), "half")
    try:
        assert NAME not in canon.extensions.names()
        assert any("second registration broke" in r.getMessage() for r in caplog.records)
    finally:
        pcs.plugins.unregister("half")


SOURCE = """
import fractions
import pcs

@pcs.tracked
def scale(f: fractions.Fraction, by: int) -> fractions.Fraction:
    return f * by
"""


class FractionPlugin:
    @hookimpl
    def pcs_register_encoders(self, registry: Any) -> None:
        registry.register(fractions.Fraction, name=NAME, version=1, encode=_encode,
                          decode=_decode)


def test_a_tracked_call_records_and_replays_an_extension_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = CodeDir(tmp_path / "code", monkeypatch)
    module = code.load(code.write(SOURCE))
    pcs.plugins.register(FractionPlugin(), "fraction")
    try:
        assert module.scale(fractions.Fraction(1, 3), 2) == fractions.Fraction(2, 3)
        run = pcs.last_run()
        assert isinstance(run, pcs.ComponentRun)
        assert run.is_reproducible
        assert run.return_value == fractions.Fraction(2, 3)
        again = run.rerun()
        assert again.return_value == fractions.Fraction(2, 3)
        assert again.run_command.argument_set == run.run_command.argument_set
        pcs.plugins.unregister("fraction")
        with pytest.raises(ReplayError, match=rf"extension '{NAME}'.*no plugin registers it"):
            run.rerun()
        assert run.rerun(overrides={"f": fractions.Fraction(1, 2)}).return_value == 1
    finally:
        pcs.plugins.unregister("fraction")
        code.cleanup()


def test_plugins_load_before_the_first_unknown_type_is_encoded(tmp_path: Path) -> None:
    """``canon.encode`` of a type no built-in encoding knows loads the entry-point plugins
    (here the first-party ``types`` plugin) first; loading them imports no array library."""
    script = textwrap.dedent("""
        import collections, sys
        from pcs import canon
        tree = canon.encode(collections.OrderedDict(a=1))
        print(tree[0], tree[1])
        print(sorted(m for m in ("numpy", "pandas", "torch", "attr", "pydantic")
                     if m in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["x collections.OrderedDict", "[]"]
