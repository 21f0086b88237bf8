"""The only place pcs parses (and writes) YAML.

:func:`load_yaml` and :func:`load_yaml_file` accept plain YAML data only and
refuse, with :class:`~pcs.exceptions.UnsafeYamlError` naming the file and line:

* any explicit tag: ``!!python/object/apply:...``, ``!custom``, and also the
  standard ``!!binary``, ``!!set``, ``!!timestamp``, ``!!str``... (pcs never
  writes tags, so a tag means the file did not come from pcs);
* anchors (``&name``) and aliases (``*name``), so an alias bomb ("billion
  laughs") is refused at its first anchor, before anything is expanded;
* duplicate mapping keys, and sequences or mappings used as keys;
* documents over a size limit (``max_bytes``, 16 MiB by default; checked
  before parsing) or nested deeper than ``max_depth`` (256);
* more than one document per file, text that is not UTF-8, and syntax errors.

Plain scalars resolve as in YAML 1.1 (``null``, ``true``, ``1``, ``1.5``...),
except that dates/timestamps stay strings, ``<<`` is an ordinary key (no merge
keys) and ``=`` is an ordinary string: loaded data is always JSON-compatible.

The checks run on the parser's event stream and in the constructor, so they
hold with the C-accelerated loader (``CSafeLoader``, used when available) and
with the pure-Python ``SafeLoader`` alike.

:func:`dump_yaml` writes JSON-compatible data with a safe dumper, block style,
sorted keys and no anchors, so that :func:`load_yaml` reads it back exactly.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Any, Final

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    NodeEvent,
    ScalarEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from pcs import _canon
from pcs.exceptions import UnsafeYamlError

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_DEPTH", "dump_yaml", "load_yaml", "load_yaml_file"]

DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
"""Largest YAML document (in UTF-8 bytes) pcs parses unless told otherwise."""

DEFAULT_MAX_DEPTH: Final = 256
"""Deepest nesting of sequences and mappings pcs parses unless told otherwise."""

_DROPPED_RESOLVERS: Final = frozenset(
    {"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"}
)

_FIX_TAG = (
    "pcs reads plain YAML data only, never tags such as !!python/object or !!binary; "
    "remove the tag and write the value as plain data (or load the file with another tool "
    "if you trust it)"
)
_FIX_ANCHOR = (
    "pcs does not expand YAML anchors (&name) or aliases (*name); write the value out in full"
)


def _refuse(source: str, line: int, what: str, fix: str) -> UnsafeYamlError:
    return UnsafeYamlError(f"{source}, line {line}: refused {what}. {fix}.", path=source, line=line)


def _line(mark: Any) -> int:
    line = getattr(mark, "line", None)
    return line + 1 if isinstance(line, int) else 1


class _PlainResolver(Resolver):
    """YAML 1.1 implicit resolution minus timestamps, merge keys and the '=' value tag."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in entries if tag not in _DROPPED_RESOLVERS]
        for first, entries in Resolver.yaml_implicit_resolvers.items()
    }


class _GuardedConstructor(SafeConstructor):
    """SafeConstructor refusing aliases, duplicate keys and non-scalar keys."""

    pcs_source: str = "<string>"

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        if node in self.constructed_objects or node in self.recursive_objects:
            raise _refuse(self.pcs_source, _line(node.start_mark), "an alias", _FIX_ANCHOR)
        return super().construct_object(node, deep=deep)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        mapping: dict[Hashable, Any] = {}
        first_lines: dict[Hashable, int] = {}
        for key_node, value_node in node.value:
            line = _line(key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = key in first_lines
            except TypeError:
                raise _refuse(
                    self.pcs_source, line, "a sequence or mapping used as a mapping key",
                    "Use plain scalar keys (strings)",
                ) from None
            if seen:
                raise _refuse(
                    self.pcs_source,
                    line,
                    f"duplicate mapping key {key!r} (first at line {first_lines[key]})",
                    "Keep one of the two entries; YAML would silently drop the other",
                )
            first_lines[key] = line
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


class _PyLoader(Reader, Scanner, Parser, Composer, _GuardedConstructor, _PlainResolver):
    """Pure-Python safe loader with pcs's guards."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _GuardedConstructor.__init__(self)
        _PlainResolver.__init__(self)


class _PyDumper(yaml.SafeDumper):
    """Safe dumper that never writes anchors or aliases (pcs refuses to read them)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_str(self, data: str) -> ScalarNode:
        # PyYAML's pure-Python emitter corrupts NEL (U+0085) in single-quoted
        # scalars; double quotes escape it as "\N".
        if "\x85" in data:
            return self.represent_scalar("tag:yaml.org,2002:str", data, style='"')
        return super().represent_str(data)


_PyDumper.add_representer(str, _PyDumper.represent_str)


_LoaderClass = type[Any]
_LOADER: _LoaderClass = _PyLoader
_DUMPER: _LoaderClass = _PyDumper
_LOADERS: list[_LoaderClass] = [_PyLoader]
_DUMPERS: list[_LoaderClass] = [_PyDumper]

try:
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    pass
else:

    class _CLoader(CParser, _GuardedConstructor, _PlainResolver):
        """libyaml-accelerated safe loader with pcs's guards."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _GuardedConstructor.__init__(self)
            _PlainResolver.__init__(self)

    class _CDumper(yaml.CSafeDumper):
        """libyaml-accelerated safe dumper that never writes anchors or aliases."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    _LOADER = _CLoader
    _DUMPER = _CDumper
    _LOADERS.append(_CLoader)
    _DUMPERS.append(_CDumper)


def _scan(text: str, source: str, loader: _LoaderClass, max_depth: int) -> None:
    """Refuse tags, anchors, aliases, excessive depth and extra documents from events."""
    depth = 0
    documents = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, NodeEvent):
            line = _line(event.start_mark)
            if isinstance(event, AliasEvent):
                raise _refuse(source, line, f"the alias *{event.anchor}", _FIX_ANCHOR)
            if event.anchor is not None:
                raise _refuse(source, line, f"the anchor &{event.anchor}", _FIX_ANCHOR)
            if isinstance(event, (ScalarEvent, CollectionStartEvent)) and event.tag is not None:
                raise _refuse(source, line, f"the tag {event.tag!r}", _FIX_TAG)
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > max_depth:
                    raise _refuse(
                        source, line, f"nesting deeper than {max_depth} levels",
                        "Flatten the document, or pass a larger max_depth if you trust it",
                    )
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
        elif isinstance(event, DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise _refuse(
                    source, _line(event.start_mark), "a second YAML document",
                    "Keep one document per file",
                )


def _syntax_error(exc: yaml.YAMLError, text: str, source: str) -> UnsafeYamlError:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        line = _line(mark)
    else:
        position = getattr(exc, "position", None)
        line = text[:position].count("\n") + 1 if isinstance(position, int) else 1
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return _refuse(source, line, f"text that is not valid YAML ({problem})", "Fix the syntax")


def _too_large(source: str, head: bytes, size: str, max_bytes: int) -> UnsafeYamlError:
    return _refuse(
        source,
        head.count(b"\n") + 1,
        f"a document of {size} bytes: the limit of {max_bytes} bytes is exceeded on this line",
        "Keep specs small (store large values as artifacts), or pass a larger max_bytes "
        "if you trust the file",
    )


def _check_size(data: str | bytes, source: str, max_bytes: int) -> None:
    if isinstance(data, bytes):
        if len(data) > max_bytes:
            raise _too_large(source, data[:max_bytes], str(len(data)), max_bytes)
        return
    if len(data) * 4 <= max_bytes:  # UTF-8 needs at most 4 bytes per character
        return
    head = data[: max_bytes + 1].encode("utf-8", "surrogatepass")
    if len(head) > max_bytes:
        raise _too_large(source, head[:max_bytes], f"more than {max_bytes}", max_bytes)


def load_yaml(
    data: str | bytes,
    *,
    source: str = "<string>",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Parse one YAML document of plain data safely (see the module docstring).

    ``source`` names the text in error messages (a file path, an artifact...).
    Bytes must be UTF-8 (a BOM is allowed).  Every refusal raises
    :class:`~pcs.exceptions.UnsafeYamlError` with ``path`` and ``line`` set.
    """
    _check_size(data, source, max_bytes)
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise _refuse(
                source, line, "bytes that are not UTF-8 text", "Save the file as UTF-8"
            ) from None
    else:
        text = data
    loader_class = _LOADER
    try:
        _scan(text, source, loader_class, max_depth)
        loader = loader_class(text)
        loader.pcs_source = source
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text, source) from None


def load_yaml_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Read and parse a YAML file like :func:`load_yaml`; the size is checked before parsing.

    A missing or unreadable file raises :class:`OSError` as usual.
    """
    source = os.fspath(path)
    with open(source, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise _too_large(source, handle.read(max_bytes), str(size), max_bytes)
        data = handle.read(max_bytes + 1)
    return load_yaml(data, source=source, max_bytes=max_bytes, max_depth=max_depth)


def dump_yaml(obj: Any) -> str:
    """YAML text of JSON-compatible data: block style, sorted keys, no anchors, no tags.

    Anything but dicts with str keys, lists/tuples, str, int, finite float,
    bool and None raises :class:`~pcs.exceptions.SpecError` (it could not be
    read back exactly).
    """
    data = _canon.plain_copy(obj, where="YAML document")
    return yaml.dump(
        data,
        Dumper=_DUMPER,
        default_flow_style=False,
        sort_keys=True,
        allow_unicode=True,
        width=1_000_000,
    )
