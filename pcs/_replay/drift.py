"""Code identity: what changed between the recorded code and the code importable now."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Final

from pcs.component import Component
from pcs.conventions import CODE_DRIFT_TAG
from pcs.exceptions import CodeDriftError

__all__ = ["Drift", "code_drift"]

#: the longest diff a CodeDriftError message shows (the whole one is on ``err.diff``)
_MAX_DIFF_IN_MESSAGE: Final = 6000


def code_drift(recorded: Component, current: Component) -> tuple[list[str], str]:
    """What differs between the recorded code identity and the current one.

    Returns ``(problems, diff)``: human-readable differences (empty: the same
    code) and a unified diff of the recorded source against the current one.
    The git commit and dirty state are compared only when they were recorded;
    a run recorded with uncommitted changes is verified by its source alone.
    """
    problems: list[str] = []
    if (recorded.module, recorded.qualname) != (current.module, current.qualname):
        problems.append(f"{recorded.path} is now defined as {current.path}")
    if recorded.source_sha256 is None or recorded.source is None:
        problems.append("the run recorded no source text, so its code cannot be verified")
    elif current.source_sha256 is None:
        problems.append("the current source cannot be read, so the code cannot be verified")
    elif recorded.source_sha256 != current.source_sha256:
        problems.append(
            f"its source changed (sha256 {recorded.source_sha256[:12]} recorded, "
            f"{current.source_sha256[:12]} now)"
        )
    if recorded.git_commit:
        if current.git_commit != recorded.git_commit:
            now = current.git_commit[:12] if current.git_commit else "no git work tree"
            problems.append(f"git commit {recorded.git_commit[:12]} recorded, {now} now")
        elif recorded.git_dirty is False and current.git_dirty:
            problems.append(
                "the git work tree was clean when the run was recorded and has uncommitted "
                "changes now"
            )
    diff = ""
    if (recorded.source or "") != (current.source or ""):
        diff = "".join(
            difflib.unified_diff(
                (recorded.source or "").splitlines(keepends=True),
                (current.source or "").splitlines(keepends=True),
                fromfile=f"recorded {recorded.path}",
                tofile=f"current {current.path} ({current.source_file or 'no file'})",
            )
        )
        if diff and not diff.endswith("\n"):
            diff += "\n"
    return problems, diff


@dataclass(frozen=True)
class Drift:
    """The code drift a replay found: :func:`code_drift` of the recorded and current code."""

    recorded: Component
    problems: list[str]
    diff: str

    @classmethod
    def between(cls, recorded: Component, current: Component) -> Drift:
        problems, diff = code_drift(recorded, current)
        return cls(recorded, problems, diff)

    def __bool__(self) -> bool:
        return bool(self.problems)

    @property
    def summary(self) -> str:
        return "; ".join(self.problems)

    def error(self, where: str, run_id: str | None) -> CodeDriftError:
        """The error refusing to replay drifted code, with the diff (cut short in the message)."""
        diff = self.diff
        shown = diff if len(diff) <= _MAX_DIFF_IN_MESSAGE else (
            diff[:_MAX_DIFF_IN_MESSAGE] + "\n... (diff truncated; see the error's .diff)\n"
        )
        return CodeDriftError(
            f"Refusing to replay {where}: the code changed since it was recorded: "
            f"{self.summary}. Restore the recorded code{self._checkout_hint()}, or pass "
            "allow_code_drift=True to run the current code anyway (the new run is tagged "
            f"{CODE_DRIFT_TAG}=True).\n{shown}",
            diff,
            run_id=run_id,
            path=self.recorded.path,
        )

    def report(self) -> str:
        """The text of the ``pcs.code_drift.diff`` artifact of a run replayed with drift."""
        text = "Code drift at replay:\n" + "".join(f"  - {p}\n" for p in self.problems)
        return text + "\n" + self.diff

    def _checkout_hint(self) -> str:
        commit = self.recorded.git_commit
        if commit:
            return f" (git checkout {commit[:12]}, then replay in a fresh process)"
        return ""
