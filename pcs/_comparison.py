"""What :func:`pcs.compare` returns: :class:`RunComparison`, made of :class:`Difference`\\ s.

Plain values, published as ``pcs.replay.RunComparison`` and
``pcs.replay.Difference``. They live down here, beside the run objects and not
in :mod:`pcs.replay`, because :meth:`pcs.ComponentRun.compare` names
:class:`RunComparison` as its return type and the run objects never import the
replay layer (see :mod:`pcs._upper`); :mod:`pcs._replay.compare` fills them in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pcs._outcome import TERMINAL_STATUSES

__all__ = ["Difference", "RunComparison"]


def _short(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Difference:
    """One thing that differs between two runs: ``what``, the ``left`` and ``right`` values."""

    what: str
    left: Any
    right: Any

    def __str__(self) -> str:
        return f"{self.what}: {_short(self.left)} != {_short(self.right)}"


@dataclass(frozen=True)
class RunComparison:
    """What differs between two ComponentRuns (see :func:`pcs.compare`).

    Each field is a tuple of :class:`Difference` (empty: the same).
    ``return_value`` is None when the return values are equal *or* could not
    be compared; :attr:`same_return_value` tells which (``None``: unknown,
    with the reason in :attr:`return_value_note`).
    """

    left_id: str
    right_id: str
    arguments: tuple[Difference, ...]
    code: tuple[Difference, ...]
    source_diff: str
    status: tuple[Difference, ...]
    return_value: Difference | None
    return_value_compared: bool
    return_value_note: str
    left_status: str
    right_status: str

    @property
    def same_arguments(self) -> bool:
        """True when every argument (``__init__`` ones included) is identical."""
        return not self.arguments

    @property
    def same_code(self) -> bool:
        """True when the callable, entry point, source and recorded git state are identical."""
        return not self.code

    @property
    def same_status(self) -> bool:
        """True when both runs ended the same way (and with the same error type, if any)."""
        return not self.status

    @property
    def same_return_value(self) -> bool | None:
        """True/False when the return values were compared; None when they could not be."""
        if not self.return_value_compared:
            return None
        return self.return_value is None

    @property
    def reproduced(self) -> bool | None:
        """Whether ``right`` has the same outcome as ``left``; None when that is unknown.

        The same outcome: the same status, and the same return value
        (FINISHED) or the same error type (FAILED, KILLED).
        """
        if (self.left_status not in TERMINAL_STATUSES
                or self.right_status not in TERMINAL_STATUSES):
            return None  # a run still running has no outcome yet
        if not self.same_status:
            return False
        if self.left_status != "FINISHED":
            return True
        return self.same_return_value

    @property
    def differences(self) -> tuple[Difference, ...]:
        """Every difference found, in the order arguments, code, status, return value."""
        tail = (self.return_value,) if self.return_value is not None else ()
        return (*self.arguments, *self.code, *self.status, *tail)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible summary (values rendered with ``repr``)."""

        def rows(diffs: Iterable[Difference]) -> list[dict[str, str]]:
            return [{"what": d.what, "left": _short(d.left), "right": _short(d.right)}
                    for d in diffs]

        return {
            "left": self.left_id,
            "right": self.right_id,
            "arguments": rows(self.arguments),
            "code": rows(self.code),
            "source_diff": self.source_diff,
            "status": rows(self.status),
            "return_value": rows([self.return_value] if self.return_value else []),
            "same_return_value": self.same_return_value,
            "return_value_note": self.return_value_note,
            "reproduced": self.reproduced,
        }

    def __str__(self) -> str:
        lines = [f"Run {self.left_id} vs run {self.right_id}:"]
        for title, diffs in (("arguments", self.arguments), ("code", self.code),
                             ("status", self.status)):
            if diffs:
                lines.append(f"  {title}:")
                lines.extend(f"    {d}" for d in diffs)
            else:
                lines.append(f"  {title}: same")
        if self.return_value is not None:
            lines.append(f"  return value: {self.return_value}")
        elif self.return_value_compared:
            lines.append("  return value: same")
        else:
            lines.append(f"  return value: not compared ({self.return_value_note})")
        lines.append(f"  reproduced: {self.reproduced}")
        return "\n".join(lines)
