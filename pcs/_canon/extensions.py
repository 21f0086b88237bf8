"""Extensions of the encoding: types that plugins teach pcs to encode exactly.

A plugin registers a type with a *name* and a *version*, an encoder (value →
plain data that pcs encodes as usual, the *payload*) and a decoder (payload,
version → value). A value of that type becomes the node
``["x", name, version, payload-tree]``: the name and version are part of the
tree, so the bytes and digest of a value can only change when a plugin says
so with a new version, and a store read where no plugin registers the name
decodes to an :class:`UnknownExtension` marker (never a crash, never a wrong
value).

Choosing an encoder is one dict lookup per type: :meth:`ExtensionRegistry.lookup`
caches what it found (or that nothing matched) for each class, and the
plugins are loaded (through the *loader* pcs installs) the first time a type
pcs does not know is met. A type can be registered by the class itself, by
its ``"module.QualName"`` (so a plugin need not import a library the program
has not imported), or by a test on the class (dataclasses, pydantic models).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

from pcs._canon.scalars import SCALARS
from pcs.exceptions import SpecError, UsageError

__all__ = [
    "EXTENSIONS",
    "EXTENSION_TAG",
    "Extension",
    "ExtensionRegistry",
    "RegistryView",
    "UnknownExtension",
    "class_path",
    "resolve_class",
]

EXTENSION_TAG: Final = "x"
"""The tag of an extension node: ``["x", name, version, payload]``."""

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[.\-][A-Za-z_][A-Za-z0-9_]*)*")
_CACHE_LIMIT: Final = 4096
_BUILTIN_CONTAINERS: Final = frozenset({list, tuple, dict, set, frozenset})
#: a version beyond this is a mistake, not a plan (it also keeps the node's integer small)
_MAX_VERSION: Final = 1_000_000

Encode = Callable[[Any], Any]
Decode = Callable[[Any, int], Any]
Test = Callable[[type], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class Extension:
    """One registered extension: how values of a type become a payload and back."""

    #: the name in the node, e.g. ``"numpy.ndarray"``
    name: str
    #: the version written into new nodes; nodes of versions up to it are decoded
    version: int
    #: value -> payload (plain data pcs encodes: containers, scalars, bytes...)
    encode: Encode
    #: (payload, version of the node) -> value
    decode: Decode
    #: the plugin that registered it ("" when registered directly)
    owner: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownExtension:
    """What decoding gives for an extension node it cannot turn back into a value.

    Either no plugin registers ``name`` in this process, or the node was
    written by a newer version of the plugin than the one installed
    (``reason`` says which). ``payload`` keeps the node's payload tree as
    canonical JSON text, so encoding this marker gives back the very node it
    came from (the digest is kept).
    """

    name: str
    version: int
    payload: str
    reason: str = ""


def class_path(cls: type) -> str | None:
    """``"module:qualname"`` of a class that can be found again by that path, else None."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def resolve_class(spec: str, base: type = object) -> type:
    """The class named by ``"module:qualname"``, from a module the program imported.

    Never imports: a stored value could name any module, and importing runs
    its code. Raises :class:`~pcs.exceptions.SpecError` when the text is not
    a class path, the module is not imported, or the object is not a
    subclass of ``base``.
    """
    module_name, sep, qualname = spec.partition(":") if type(spec) is str else ("", "", "")
    if not sep or not module_name or not qualname:
        raise SpecError(f"Class path {spec!r} is not 'module:qualname'.")
    module = sys.modules.get(module_name)
    if module is None:
        raise SpecError(
            f"Class {spec!r} lives in module {module_name!r}, which is not imported. Import it "
            "first (pcs never imports code while decoding)."
        )
    try:
        obj: Any = module
        for part in qualname.split("."):
            obj = inspect.getattr_static(obj, part)
    except AttributeError as exc:
        raise SpecError(
            f"Class {spec!r} cannot be found ({exc}). Install or import the code that defines it."
        ) from None
    if not isinstance(obj, type) or not issubclass(obj, base):
        raise SpecError(f"{spec!r} is not a subclass of {base.__name__}.")
    return obj


class ExtensionRegistry:
    """The process's extensions: type → :class:`Extension`, and name → :class:`Extension`.

    Plugins receive it (as a :class:`RegistryView` carrying their name) in
    their ``pcs_register_encoders`` hook; :data:`pcs.canon.extensions` is the
    registry itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Extension] = {}
        self._by_type: dict[type, Extension] = {}
        self._by_type_name: dict[str, Extension] = {}
        #: (test, subclasses-of, extension) in registration order
        self._tests: list[tuple[Test | None, type | None, Extension]] = []
        #: class -> what lookup found for it (None: nothing), the hot path's one dict
        self._cache: dict[type, Extension | None] = {}
        self._loader: Callable[[], None] | None = None
        self._loaded = False

    # -- registering
    def register(
        self,
        kind: type | str | Test,
        *,
        name: str,
        version: int,
        encode: Encode,
        decode: Decode,
        subclasses: bool = False,
        owner: str = "",
    ) -> None:
        """Register how values of ``kind`` are encoded under ``name`` (``version``).

        ``kind`` is a class (with ``subclasses=True`` also its subclasses), the
        ``"module.QualName"`` of a class (matched by name, so the library
        need not be imported), or a function ``test(cls) -> bool``.
        ``encode(value)`` returns the *payload*: plain data pcs encodes exactly
        (None, bool, int, float, str, bytes, lists, tuples, dicts, other
        registered types...). ``decode(payload, version)`` rebuilds the value
        from the decoded payload of a node written with ``version`` (at most
        the registered one). Raise in ``encode`` for a value you cannot
        encode exactly: the value becomes a placeholder naming the reason.

        Raises :class:`~pcs.exceptions.UsageError` for a bad argument or a
        name another registration holds.
        """
        ext = _checked(kind, name, version, encode, decode, subclasses, owner)
        with self._lock:
            held = self._by_name.get(name)
            if held is not None:
                raise UsageError(
                    f"The encoding extension {name!r} is registered already"
                    f"{f' by plugin {held.owner!r}' if held.owner else ''}. Pick another name, "
                    "or unregister the other one first."
                )
            self._by_name[name] = ext
            if isinstance(kind, type):
                if subclasses:
                    self._tests.append((None, kind, ext))
                else:
                    self._by_type[kind] = ext
            elif isinstance(kind, str):
                self._by_type_name[kind] = ext
            else:
                self._tests.append((kind, None, ext))
            self._cache = {}

    def unregister(self, name: str) -> None:
        """Remove the extension ``name`` (and the types it matched); unknown names are ignored."""
        with self._lock:
            self._remove(lambda ext: ext.name == name)

    def unregister_owner(self, owner: str) -> None:
        """Remove every extension the plugin ``owner`` registered."""
        with self._lock:
            self._remove(lambda ext: ext.owner == owner)

    def _remove(self, gone: Callable[[Extension], bool]) -> None:
        self._by_name = {k: v for k, v in self._by_name.items() if not gone(v)}
        self._by_type = {k: v for k, v in self._by_type.items() if not gone(v)}
        self._by_type_name = {k: v for k, v in self._by_type_name.items() if not gone(v)}
        self._tests = [entry for entry in self._tests if not gone(entry[2])]
        self._cache = {}

    def view(self, owner: str) -> RegistryView:
        """The registry as a plugin sees it: its registrations carry ``owner``."""
        return RegistryView(self, owner)

    # -- finding
    def lookup(self, cls: type) -> Extension | None:
        """The extension that encodes values of ``cls``, or None (cached per class)."""
        try:
            return self._cache[cls]
        except KeyError:
            pass
        self.load()
        with self._lock:
            found = self._match(cls)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache = {}
            self._cache[cls] = found
        return found

    def _match(self, cls: type) -> Extension | None:
        found = self._by_type.get(cls)
        if found is not None:
            return found
        module = getattr(cls, "__module__", None)
        qualname = getattr(cls, "__qualname__", None)
        if self._by_type_name and isinstance(module, str) and isinstance(qualname, str):
            found = self._by_type_name.get(f"{module}.{qualname}")
            if found is not None:
                return found
        for test, base, ext in self._tests:
            try:
                matched = issubclass(cls, base) if base is not None else bool(test(cls))  # type: ignore[misc]
            except Exception:
                matched = False  # a broken test never breaks encoding
            if matched:
                return ext
        return None

    def by_name(self, name: str) -> Extension | None:
        """The extension registered under ``name``, or None."""
        found = self._by_name.get(name)
        if found is None and not self._loaded:
            self.load()
            found = self._by_name.get(name)
        return found

    def names(self) -> dict[str, int]:
        """``{name: version}`` of every registered extension."""
        self.load()
        return {name: ext.version for name, ext in sorted(self._by_name.items())}

    # -- the plugins
    def set_loader(self, loader: Callable[[], None] | None) -> None:
        """What to call (once) before the first lookup: pcs loads its plugins there."""
        self._loader = loader

    def load(self) -> None:
        """Run the loader once (later calls return at once)."""
        if self._loaded:
            return
        self._loaded = True  # before the call: the loader's own encoding must not recurse
        loader = self._loader
        if loader is not None:
            loader()


class RegistryView:
    """What a plugin's ``pcs_register_encoders(registry)`` receives.

    ``register`` is :meth:`ExtensionRegistry.register` with the plugin's name
    recorded as the owner, so the plugin's extensions go when it is
    unregistered.
    """

    __slots__ = ("_owner", "_registry")

    def __init__(self, registry: ExtensionRegistry, owner: str) -> None:
        self._registry = registry
        self._owner = owner

    def register(
        self,
        kind: type | str | Test,
        *,
        name: str,
        version: int,
        encode: Encode,
        decode: Decode,
        subclasses: bool = False,
    ) -> None:
        """See :meth:`ExtensionRegistry.register`."""
        self._registry.register(kind, name=name, version=version, encode=encode, decode=decode,
                                subclasses=subclasses, owner=self._owner)


def _checked(
    kind: Any, name: Any, version: Any, encode: Any, decode: Any, subclasses: Any, owner: Any
) -> Extension:
    where = f"register({kind!r}, name={name!r}, version={version!r})"
    if not (isinstance(kind, (type, str)) or callable(kind)):
        raise UsageError(f"{where}: kind must be a class, a 'module.QualName' or a test(cls).")
    if isinstance(kind, str) and not _NAME.fullmatch(kind):
        raise UsageError(f"{where}: {kind!r} is not a 'module.QualName'.")
    if isinstance(kind, type) and (kind in SCALARS or kind in _BUILTIN_CONTAINERS):
        raise UsageError(
            f"{where}: {kind.__name__} values have pcs's own exact encoding, which a plugin "
            "cannot replace. Register a subclass instead."
        )
    if subclasses and not isinstance(kind, type):
        raise UsageError(f"{where}: subclasses=True needs a class as kind.")
    if type(name) is not str or not _NAME.fullmatch(name):
        raise UsageError(
            f"{where}: the name must be dotted identifiers like 'numpy.ndarray' "
            "(letters, digits, '_', '.', '-')."
        )
    if type(version) is not int or not 1 <= version <= _MAX_VERSION:
        raise UsageError(f"{where}: the version must be an int from 1 to {_MAX_VERSION}.")
    if not callable(encode) or not callable(decode):
        raise UsageError(f"{where}: encode and decode must be callables.")
    return Extension(name, version, encode, decode, str(owner))


#: the process's registry (pcs.canon.extensions)
EXTENSIONS: Final = ExtensionRegistry()


def _renew_lock_in_child() -> None:
    """A forked child gets a fresh lock (the parent's may be held by a thread that is gone)."""
    EXTENSIONS._lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_lock_in_child)
