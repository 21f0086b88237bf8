"""How a step of a replay says that the replay cannot go ahead."""

from __future__ import annotations

from pcs.exceptions import ReplayError

__all__ = ["Refusal"]


class Refusal(Exception):
    """A replay cannot go ahead: the error to raise, without naming the run yet.

    The steps of a replay raise it with the :class:`~pcs.ReplayError`
    subclass and the reason (what failed and how to fix it); :mod:`pcs.replay`
    turns it into that error in one place with :meth:`error`, prefixed with
    which run and callable could not be replayed. Raise it ``from`` the
    exception that caused it, as you would the error itself.
    """

    def __init__(self, kind: type[ReplayError], reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason

    def add_hint(self, hint: str) -> None:
        """Say more about how to fix it (appended to the reason)."""
        self.reason = f"{self.reason} (Lineage could not supply them: {hint}.)"

    def error(self, where: str, run_id: str | None, path: str) -> ReplayError:
        """The error the user sees: ``Cannot replay <where>: <reason>``."""
        return self.kind(f"Cannot replay {where}: {self.reason}", run_id=run_id, path=path)
