"""The redaction policy: which names and which values are secrets.

One home for both rules, applied before anything is hashed or persisted —
to call arguments (:mod:`pcs._capture`), return values
(:mod:`pcs.component_run`) and the params of ``pcs.run(params=...)``:

* **Names.** A mapping key, a dataclass / attrs / pydantic field, an
  attribute in ``__dict__`` or an argument is a secret when its name, split
  into word parts (``db_password`` → db, password; ``refreshToken`` →
  refresh, token; ``X-Api-Key`` → x, api, key), contains a secret term
  (:data:`NAME_TERMS`, or a compound of :data:`NAME_COMPOUNDS`), or one of
  :data:`EMBEDDED_TERMS` inside a part (``dbpassword``). Whole parts only
  otherwise: ``tokenizer`` and ``author`` are not secrets. A name about a
  secret rather than holding it (``token_type``, ``password_file``,
  ``num_sessions``) is not one either.
* **Values.** A string (or bytes) in which :func:`secret_text` finds a
  credential: ``Bearer``/``Basic`` credentials, JWTs, PEM private keys, URLs
  with a password, AWS access key ids, ``sk-``/``ghp_``/``xox?-``/... vendor
  keys; and every :class:`pcs.Secret`.
* **Not secrets:** ``None``, booleans and empty values (``""``, ``b""``,
  ``[]``, ``{}``...) are recorded as they are, whatever their name.

Users extend the policy through :mod:`pcs.redaction` (``add_names``,
``add_patterns``). Every change bumps :data:`POLICY`'s generation and calls
the listeners registered with :func:`on_change` (caches of innocuous names,
the tracked functions' fast paths).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from pcs._canon import REPR_LIMIT, Tree, decode, encode_redacted
from pcs.exceptions import UsageError
from pcs.secret import Secret

__all__ = [
    "DETECT",
    "EMBEDDED_TERMS",
    "NAME_COMPOUNDS",
    "NAME_TERMS",
    "POLICY",
    "REDACTED_TEXT",
    "SHORT_TEXT",
    "VALUE_PATTERNS",
    "Policy",
    "is_secret_name",
    "is_trivial",
    "on_change",
    "redact_params",
    "secret_text",
    "tree_text",
]

#: what a redacted value shows as, in params and placeholder reprs
REDACTED_TEXT: Final = "<redacted>"

#: single word parts that name a secret (a trailing "s" is allowed: ``cookies``)
NAME_TERMS: Final = frozenset({
    "password", "passwd", "pwd", "passphrase", "secret", "token", "apikey",
    "authorization", "auth", "oauth", "cookie", "session", "sessionid", "credential",
    "creds", "privatekey", "accesskey", "secretkey", "clientsecret", "jwt",
})
#: word-part sequences that name a secret (``X-Api-Key``, ``private_key``)
NAME_COMPOUNDS: Final = (
    ("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"),
    ("session", "key"), ("signing", "key"), ("encryption", "key"), ("set", "cookie"),
)
#: terms long and unambiguous enough to be found inside a word part (``dbpassword``)
EMBEDDED_TERMS: Final = (
    "password", "passwd", "passphrase", "credential", "apikey", "privatekey",
    "accesskey", "secretkey", "clientsecret",
)
#: secret only as the last part (``db_pass``, not ``pass_rate``)
_LAST_ONLY: Final = frozenset({"pass"})
#: plural "tokens" are token ids in ML code (``tokens=[101, 2023]``), not credentials
_NO_PLURAL: Final = frozenset({"token"})
#: a last part saying the name is *about* a secret, not the secret itself
_ABOUT: Final = frozenset({
    "type", "types", "kind", "name", "names", "url", "uri", "endpoint", "path", "file",
    "dir", "env", "var", "len", "length", "size", "count", "limit", "timeout", "ttl",
    "expiry", "expires", "expiration", "format", "scheme", "method", "policy", "enabled",
    "required", "prefix", "field",
})
#: a first part counting secrets (``max_tokens``, ``num_sessions``)
_COUNTING: Final = frozenset({"max", "min", "num", "n"})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

#: the built-in value patterns: (what it is, regex searched anywhere in a string)
VALUE_PATTERNS: Final[tuple[tuple[str, str], ...]] = (
    ("a Bearer credential", r"(?:[Bb]earer|BEARER)\s+[A-Za-z0-9\-._~+/]{8,}"),
    ("a Basic credential",
     r"(?:[Bb]asic|BASIC)\s+(?=[A-Za-z0-9+/]*(?:[0-9+/]|[a-z][A-Z]))[A-Za-z0-9+/]{8,}"),
    ("a JSON Web Token", r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\."),
    ("a PEM private key", r"-----BEGIN[A-Z ]*PRIVATE KEY"),
    ("a URL with a password", r"[A-Za-z0-9+.\-]://[^/\s:@]*:[^/\s@]+@"),
    ("an AWS access key id",
     r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])"),
    ("a Google API key", r"(?<![A-Za-z0-9_])AIza[0-9A-Za-z_-]{35}"),
    ("an sk- API key", r"(?<![A-Za-z0-9_])sk-[A-Za-z0-9_-]{20,}"),
    ("a Slack token", r"(?<![A-Za-z0-9_])xox[abposre]-[A-Za-z0-9-]{10,}"),
    ("a GitLab token", r"(?<![A-Za-z0-9_])glpat-[0-9A-Za-z_-]{20,}"),
    ("a Stripe secret key", r"(?<![A-Za-z0-9_])[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("a GitHub token",
     r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("a Hugging Face token", r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}"),
)

# The same patterns as one regex whose every branch starts with a literal character that
# is rare in ordinary text (a space, ':', '-', '_', 'A', 'J'), so that the regex engine
# skips every other position in C: ~5 ns a character instead of ~100.
_DETECT: Final = re.compile(
    r" (?<=[Bb]earer )[A-Za-z0-9\-._~+/]{8,}"
    r"|\t(?<=[Bb]earer\t)[A-Za-z0-9\-._~+/]{8,}"
    r"| (?<=BEARER )[A-Za-z0-9\-._~+/]{8,}"
    r"| (?<=[Bb]asic )(?=[A-Za-z0-9+/]*(?:[0-9+/]|[a-z][A-Z]))[A-Za-z0-9+/]{8,}"
    r"|\t(?<=[Bb]asic\t)(?=[A-Za-z0-9+/]*(?:[0-9+/]|[a-z][A-Z]))[A-Za-z0-9+/]{8,}"
    r"| (?<=BASIC )(?=[A-Za-z0-9+/]*(?:[0-9+/]|[a-z][A-Z]))[A-Za-z0-9+/]{8,}"
    r"|J(?<=eyJ)[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\."
    r"|-----BEGIN[A-Z ]*PRIVATE KEY"
    r"|:(?<=[A-Za-z0-9+.\-]:)//[^/\s:@]*:[^/\s@]+@"
    r"|A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|A(?<![A-Za-z0-9_]A)Iza[0-9A-Za-z_-]{35}"
    r"|-(?<=sk-)(?<![A-Za-z0-9_]sk-)[A-Za-z0-9_-]{20,}"
    r"|-(?<=xox[abposre]-)(?<![A-Za-z0-9_]xox.-)[A-Za-z0-9-]{10,}"
    r"|-(?<=glpat-)(?<![A-Za-z0-9_]glpat-)[0-9A-Za-z_-]{20,}"
    r"|_(?<=[rs]k_)(?<![A-Za-z0-9_].k_)(?:live|test)_[A-Za-z0-9]{16,}"
    r"|_(?<=gh[pousr]_)(?<![A-Za-z0-9_]gh._)[A-Za-z0-9]{30,}"
    r"|_(?<=github_pat_)(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{22,}"
    r"|_(?<=hf_)(?<![A-Za-z0-9_]hf_)[A-Za-z0-9]{30,}"
)
#: the built-in value patterns as one regex, for strings of at least SHORT_TEXT characters
DETECT: Final = _DETECT
_LABELLED: Final = tuple((label, re.compile(p)) for label, p in VALUE_PATTERNS)
_URL: Final = _LABELLED[4][1]

#: built-in patterns match only strings at least this long, except a URL with a password
#: (which contains "://"): shorter strings need one substring test
SHORT_TEXT: Final = 14
_CUSTOM: Final = "a redaction pattern added with pcs.redaction.add_patterns"
_MAX_CACHE: Final = 10_000
_MAX_NODES: Final = 10_000  # objects walked for one placeholder repr, at most
_MAX_DEPTH: Final = 12


def _label(text: str) -> str:
    for label, regex in _LABELLED:
        if regex.search(text):
            return label
    return "a credential"  # _DETECT found one: it and the labelled patterns agree


class Policy:
    """Names and value patterns that are secrets (the process has one: :data:`POLICY`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: bumped by every change
        self.generation = 0
        self.extra_terms: frozenset[str] = frozenset()
        self.extra_compounds: tuple[tuple[str, ...], ...] = ()
        #: the user's patterns as one regex (None: there are none)
        self.extra: re.Pattern[str] | None = None
        self._extra_sources: tuple[str, ...] = ()
        self._names: dict[str, bool] = {}
        self._listeners: list[Callable[[], None]] = []

    # -- changes
    def add_names(self, names: Iterable[str]) -> None:
        terms, compounds = set(self.extra_terms), list(self.extra_compounds)
        for name in names:
            if not isinstance(name, str):
                raise UsageError(f"pcs.redaction.add_names() takes str names, not {name!r}.")
            parts = tuple(p.lower() for p in _WORD.findall(name))
            if not parts:
                raise UsageError(
                    f"pcs.redaction.add_names(): {name!r} has no letters or digits to match."
                )
            if len(parts) == 1:
                terms.add(parts[0])
            elif parts not in compounds:
                compounds.append(parts)
        with self._lock:
            self.extra_terms, self.extra_compounds = frozenset(terms), tuple(compounds)
        self._changed()

    def add_patterns(self, patterns: Iterable[str | re.Pattern[str]]) -> None:
        sources = list(self._extra_sources)
        for pattern in patterns:
            source = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
            if not isinstance(source, str):
                raise UsageError(
                    f"pcs.redaction.add_patterns() takes regexes as str or re.Pattern[str], "
                    f"not {pattern!r}."
                )
            try:
                re.compile(source)
            except re.error as exc:
                raise UsageError(
                    f"pcs.redaction.add_patterns(): {source!r} is not a valid regex: {exc}."
                ) from None
            if re.compile(source).search(""):
                raise UsageError(
                    f"pcs.redaction.add_patterns(): {source!r} matches the empty string, so "
                    "it would redact every string. Make it match the secret itself."
                )
            sources.append(source)
        with self._lock:
            self._extra_sources = tuple(sources)
            self.extra = re.compile("|".join(f"(?:{s})" for s in sources)) if sources else None
        self._changed()

    def reset(self) -> None:
        with self._lock:
            self.extra_terms, self.extra_compounds = frozenset(), ()
            self.extra, self._extra_sources = None, ()
        self._changed()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        with self._lock:
            self.generation += 1
            self._names = {}
        for listener in list(self._listeners):
            listener()

    # -- questions
    @property
    def patterns(self) -> tuple[str, ...]:
        """The user's added patterns (the built-in ones are :data:`VALUE_PATTERNS`)."""
        return self._extra_sources

    def is_secret_name(self, name: str) -> bool:
        known = self._names.get(name)
        if known is None:
            known = self._secret_name(name)
            names = self._names
            if len(names) > _MAX_CACHE:
                names.clear()
            names[name] = known
        return known

    def _secret_name(self, name: str) -> bool:
        parts = [p.lower() for p in _WORD.findall(name)]
        if not parts:
            return False
        if len(parts) > 1 and (parts[-1] in _ABOUT or parts[0] in _COUNTING):
            return False
        extra = self.extra_terms
        for index, part in enumerate(parts):
            if part in NAME_TERMS or part in extra:
                return True
            if part.endswith("s") and part[:-1] not in _NO_PLURAL and (
                part[:-1] in NAME_TERMS or part[:-1] in extra
            ):
                return True
            if part in _LAST_ONLY and index == len(parts) - 1:
                return True
            if any(term in part for term in EMBEDDED_TERMS):
                return True
        joined = f" {' '.join(parts)} "
        return any(
            f" {' '.join(compound)} " in joined
            for compound in (*NAME_COMPOUNDS, *self.extra_compounds)
        )

    def secret_text(self, text: str) -> str | None:
        """What kind of credential ``text`` holds (e.g. ``"a JSON Web Token"``), or None."""
        extra = self.extra
        if extra is not None and extra.search(text):
            return _CUSTOM
        if len(text) < SHORT_TEXT:
            if "://" in text and _URL.search(text):
                return "a URL with a password"
            return None
        if _DETECT.search(text):
            return _label(text)
        return None

    def scrub(self, text: str) -> str:
        """``text`` with every credential the value patterns find replaced by ``<redacted>``."""
        if self.secret_text(text) is None:
            return text
        for _, regex in _LABELLED:
            text = regex.sub(REDACTED_TEXT, text)
        if self.extra is not None:
            text = self.extra.sub(REDACTED_TEXT, text)
        return text

    # -- the pcs._canon.Redactor protocol
    def value(self, value: Any) -> str | None:
        """Why ``value`` itself must not be recorded, or None."""
        if isinstance(value, Secret):
            return "a pcs.Secret"
        if isinstance(value, str):
            label = self.secret_text(value)
        elif isinstance(value, bytes | bytearray) and value:
            label = self.secret_text(value.decode("latin-1"))
        else:
            return None
        return None if label is None else f"redacted (it looks like {label})"

    def named(self, name: Any, value: Any) -> str | None:
        """Why the value under the key or field ``name`` must not be recorded, or None."""
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if type(name) is not str or is_trivial(value) or not self.is_secret_name(name):
            return None
        return "redacted (its name looks like a secret)"

    def describe(self, value: Any) -> tuple[str, list[str]]:
        """A repr of ``value`` holding no secret, and the paths (relative to value) it hid.

        Objects with fields (dataclass, attrs, pydantic, ``__dict__``) are
        walked: if anything in them is a secret, the repr is rebuilt from their
        fields with ``<redacted>`` in its place. Every repr is scrubbed with
        the value patterns. If the walk fails, the repr is the type alone.
        """
        hidden: list[str] = []
        try:
            walk = _Render(self, hidden)
            rendered = walk.render(value, "", 0)
            if hidden or walk.cut:
                return self.scrub(rendered), hidden or ["<too large to check>"]
            text = repr(value)
        except Exception:
            return f"<{_type_name(value)} (pcs could not check it for secrets)>", ["<repr>"]
        scrubbed = self.scrub(text)
        return scrubbed, ([] if scrubbed == text else ["<repr>"])


def _type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def object_fields(value: Any) -> list[tuple[str, Any]] | None:
    """(name, value) of the fields of a dataclass, attrs or pydantic instance, or its
    ``__dict__``; None for values without named fields."""
    cls = type(value)
    if isinstance(value, type):
        return None
    if dataclasses.is_dataclass(value):
        return [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
    attributes = getattr(cls, "__attrs_attrs__", None)
    if attributes is not None:
        return [(a.name, getattr(value, a.name, None)) for a in attributes]
    model_fields = getattr(cls, "model_fields", None)  # pydantic 2
    if isinstance(model_fields, dict):
        return [(str(n), getattr(value, n, None)) for n in model_fields]
    legacy = getattr(cls, "__fields__", None)  # pydantic 1
    if isinstance(legacy, dict):
        return [(str(n), getattr(value, n, None)) for n in legacy]
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict):
        return [(str(k), v) for k, v in state.items()]
    slots = [s for c in cls.__mro__ for s in getattr(c, "__slots__", ()) if isinstance(s, str)]
    if slots:
        return [(s, getattr(value, s, None)) for s in slots if s not in ("__dict__",
                                                                        "__weakref__")]
    return None


class _Render:
    """Builds a repr with secrets replaced by ``<redacted>``, noting what it hid."""

    def __init__(self, policy: Policy, hidden: list[str]) -> None:
        self.policy = policy
        self.hidden = hidden
        self.nodes = 0
        self.cut = False
        self.active: set[int] = set()

    def hide(self, path: str) -> str:
        self.hidden.append(path or "<value>")
        return REDACTED_TEXT

    def render(self, value: Any, path: str, depth: int) -> str:
        self.nodes += 1
        if self.nodes > _MAX_NODES or depth > _MAX_DEPTH:
            self.cut = True
            return "..."
        if self.policy.value(value) is not None:
            return self.hide(path)
        cls = type(value)
        if value is None or cls in (bool, int, float, complex, str, bytes, bytearray):
            text = repr(value)
            return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."
        if id(value) in self.active:
            return "..."
        self.active.add(id(value))
        try:
            return self._container(value, cls, path, depth)
        finally:
            self.active.discard(id(value))

    def _key(self, key: Any) -> str:
        if self.policy.value(key) is not None:
            return "<key>"
        text = repr(key)
        return text if len(text) <= 60 else text[:57] + "..."

    def _entry(self, name: Any, item: Any, path: str, depth: int) -> str:
        if self.policy.named(name, item) is not None:
            return self.hide(path)
        return self.render(item, path, depth + 1)

    def _container(self, value: Any, cls: type, path: str, depth: int) -> str:
        if isinstance(value, dict):
            items = [
                f"{self.render(k, f'{path}.keys()', depth + 1)}: "
                f"{self._entry(k, v, f'{path}[{self._key(k)}]', depth)}"
                for k, v in list(value.items())
            ]
            return "{" + ", ".join(items) + "}"
        if isinstance(value, list | tuple | set | frozenset):
            parts = [self.render(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
            body = ", ".join(parts)
            if isinstance(value, list):
                return f"[{body}]"
            if isinstance(value, tuple):
                return f"({body})"
            return "{" + body + "}"
        fields = object_fields(value)
        if fields is None:
            return repr(value)
        body = ", ".join(
            f"{name}={self._entry(name, item, f'{path}.{name}', depth)}" for name, item in fields
        )
        return f"{cls.__qualname__}({body})"


#: the process's redaction policy
POLICY: Final = Policy()


def is_secret_name(name: str) -> bool:
    """True when a value called ``name`` is redacted (unless None, a bool or empty)."""
    return POLICY.is_secret_name(name)


def secret_text(text: str) -> str | None:
    """What kind of credential ``text`` holds, or None (see :class:`Policy`)."""
    return POLICY.secret_text(text)


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener()`` after every change of the policy (to drop caches)."""
    POLICY.on_change(listener)


def is_trivial(value: Any) -> bool:
    """True for None, a bool and empty values: never secrets, recorded as they are."""
    if value is None or value is True or value is False:
        return True
    cls = type(value)
    if cls in (str, bytes, bytearray, list, tuple, dict, set, frozenset):
        return len(value) == 0
    return False


_BRACKETS: Final = {"l": ("[", "]"), "t": ("(", ")")}


def tree_text(tree: Any, limit: int = 10_000) -> str:
    """A Python-like display of an encoded tree (redacted values as ``<redacted>``).

    Built from the tree, not from the value, so it holds exactly what the tree
    holds: nothing that was redacted.
    """
    out: list[str] = []
    _tree_text(tree, out, [0], limit)
    return "".join(out)


def _tree_text(node: Any, out: list[str], size: list[int], limit: int) -> None:
    if size[0] > limit:
        return
    if type(node) is not list or not node:
        out.append("?")
        return
    tag = node[0]
    if tag == "redacted":
        text = REDACTED_TEXT
    elif tag == "placeholder" and len(node) == 2 and type(node[1]) is dict:
        text = str(node[1].get("repr", "<unencodable>"))
    elif tag in ("l", "t", "set", "fset", "d") and len(node) == 2 and type(node[1]) is list:
        opening, closing = _BRACKETS.get(tag, ("{", "}"))
        out.append(opening)
        for index, item in enumerate(node[1]):
            if index:
                out.append(", ")
            if tag == "d" and type(item) is list and len(item) == 2:
                _tree_text(item[0], out, size, limit)
                out.append(": ")
                _tree_text(item[1], out, size, limit)
            else:
                _tree_text(item, out, size, limit)
        if tag == "t" and len(node[1]) == 1:
            out.append(",")
        out.append(closing)
        return
    else:
        text = _leaf_text(node)
    size[0] += len(text)
    out.append(text)


def _leaf_text(node: Tree) -> str:
    try:
        return repr(decode(node))
    except Exception:
        return f"<{node[0]}>"


def redact_params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Run params (``pcs.run(params=...)``) under the policy: secrets become ``<redacted>``.

    A value under a secret name, a :class:`pcs.Secret` or a string holding a
    credential shows as ``<redacted>``; a container shows with its secrets
    redacted. If checking a value fails, it is redacted (fail closed).
    """
    if params is None:
        return None
    out: dict[Any, Any] = {}
    for key, value in params.items():
        try:
            out[key] = _param_value(str(key), value)
        except Exception:
            out[key] = REDACTED_TEXT
    return out


def _param_value(name: str, value: Any) -> Any:
    if POLICY.value(value) is not None or POLICY.named(name, value) is not None:
        return REDACTED_TEXT
    cls = type(value)
    if value is None or cls in (bool, int, float, str):
        return value
    tree, hidden = encode_redacted(value, POLICY, root=name)
    if hidden:
        return tree_text(tree)
    return POLICY.scrub(str(value))
