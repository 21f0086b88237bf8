"""MLflow's rules for the names and values of params, tags and metrics, checked by the caller.

MLflow would reject a bad name or an overlong value when pcs's writer
delivers it, in the background, where the error reaches no one: pcs checks
them when they are logged and raises :class:`~pcs.exceptions.UsageError`
saying how to fix it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pcs import conventions
from pcs.exceptions import UsageError

__all__ = ["check_key_value", "checked_params", "checked_tags", "metric_value"]

_KEY = re.compile(r"^[/\w.\- :]+$")


def check_key_value(
    kind: str, key: str, value: str, max_value: int, run_id: str | None = None
) -> None:
    """Raise UsageError unless MLflow accepts ``key`` as the name of a ``kind`` with ``value``.

    ``max_value``: the longest value MLflow stores (0: any). ``run_id`` names
    the run in the message.
    """
    where = f" of run {run_id}" if run_id else ""
    if not _KEY.match(key) or len(key) > conventions.MAX_PARAM_KEY_LENGTH or "../" in key:
        raise UsageError(
            f"Invalid {kind} name {key!r}{where}: MLflow accepts up to "
            f"{conventions.MAX_PARAM_KEY_LENGTH} characters of letters, digits, '_', '-', '.', "
            "' ', ':' and '/'. Rename it."
        )
    if max_value and len(value) > max_value:
        raise UsageError(
            f"The {kind} {key!r}{where} is {len(value)} characters long; MLflow stores at most "
            f"{max_value}. Log long values as an artifact (log_text / log_dict) instead."
        )


def checked_params(params: Mapping[str, Any], run_id: str | None = None) -> dict[str, str]:
    """``params`` as strings, each checked (see :func:`check_key_value`)."""
    out = {str(k): str(v) for k, v in params.items()}
    for key, value in out.items():
        check_key_value("param", key, value, conventions.MAX_PARAM_VALUE_LENGTH, run_id)
    return out


def checked_tags(tags: Mapping[str, Any], run_id: str | None = None) -> dict[str, str]:
    """``tags`` as strings, each checked (see :func:`check_key_value`).

    The same tags again (the environment tags of every top-level call) give the
    same dict, checked once: it is shared, never to be changed.
    """
    last = _last_tags
    if _same(last[0], tags):
        return last[1]
    out = {str(k): str(v) for k, v in tags.items()}
    for key, value in out.items():
        check_key_value("tag", key, value, conventions.MAX_TAG_VALUE_LENGTH, run_id)
    _remember_tags(tags, out)
    return out


#: the last tags checked, when they were all strings already: (tags, checked)
_last_tags: tuple[dict[str, str], dict[str, str]] = ({}, {})


def _same(known: dict[str, str], tags: Mapping[str, Any]) -> bool:
    try:
        return bool(known == tags)
    except Exception:  # a value whose == is not a truth value (an array): not the same
        return False


def _remember_tags(tags: Mapping[str, Any], out: dict[str, str]) -> None:
    global _last_tags
    if out and type(tags) is dict and all(
            type(k) is str and type(v) is str for k, v in tags.items()):
        _last_tags = (dict(tags), out)


def metric_value(key: Any, value: Any, run_id: str) -> float | str:
    """A metric value for the journal: a float, or "nan"/"inf"/"-inf" (JSON has none)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"Metric {key!r} of run {run_id} must be a number, got {type(value).__name__} "
            f"{value!r}."
        ) from None
    return number if math.isfinite(number) else repr(number)
