"""Every error pcs raises, under one root.

::

    PcsError                      the root: ``except pcs.PcsError`` catches them all
    ├── UsageError                a pcs API was called with bad arguments (also ValueError)
    ├── RunNotFoundError          a run id that the tracking store does not know (also LookupError)
    ├── StoreError                the MLflow tracking store failed or cannot be reached
    ├── UnknownRecordError        a journal record of a kind or form this pcs cannot read
    ├── EncodingError             a value cannot be captured exactly (strict mode)
    ├── SpecError                 a spec or registry is malformed
    │   ├── SpecNotFoundError     no spec with that id in the registry (also LookupError)
    │   ├── SpecIntegrityError    a spec's content does not match its recorded hash
    │   ├── SpecConflictError     a different spec is already stored under the same id
    │   └── UnsafeYamlError       YAML refused: python tags, aliases, duplicate keys, too large
    ├── ReplayError               a recorded call cannot be replayed
    │   ├── CodeDriftError        the code changed since the run was recorded
    │   └── UnsafeReplayError     the spec names a callable pcs refuses to run
    └── UntrustedPickleError      unpickling was refused because it was not trusted

Every message says what failed, on which run, spec or file, and how to fix it.
The context is also kept on attributes (``run_id``, ``spec_id``, ``path``,
``line``, ...), so code can react without parsing messages.
"""

from __future__ import annotations

__all__ = [
    "CodeDriftError",
    "EncodingError",
    "PcsError",
    "ReplayError",
    "RunNotFoundError",
    "SpecConflictError",
    "SpecError",
    "SpecIntegrityError",
    "SpecNotFoundError",
    "StoreError",
    "UnknownRecordError",
    "UnsafeReplayError",
    "UnsafeYamlError",
    "UntrustedPickleError",
    "UsageError",
]


class PcsError(Exception):
    """The root of every error raised by pcs."""


class UsageError(PcsError, ValueError):
    """A pcs function or class was called with arguments it cannot accept."""


class RunNotFoundError(PcsError, LookupError):
    """The tracking store has no run with the given id."""

    def __init__(self, run_id: str, tracking_uri: str) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        super().__init__(
            f"No MLflow run with id {run_id!r} in the tracking store {tracking_uri!r}. "
            "Check the run id, or point MLFLOW_TRACKING_URI at the store that holds it."
        )

    def __reduce__(self) -> tuple[type[RunNotFoundError], tuple[str, str]]:
        return (type(self), (self.run_id, self.tracking_uri))


class StoreError(PcsError):
    """The MLflow tracking store failed or could not be reached."""

    def __init__(self, message: str, tracking_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        super().__init__(message)


class UnknownRecordError(PcsError):
    """A journal record of a kind (or a form of a known kind) this pcs cannot read.

    ``kind`` is the record's kind as found (usually a one-letter string) and
    ``problem`` what is wrong with it. Such a record was written by a newer
    pcs (or the journal was edited): it is never dropped — the journal that
    holds it is kept, for the pcs version that wrote it to deliver.
    """

    def __init__(self, kind: object, problem: str = "") -> None:
        self.kind = kind
        self.problem = problem or f"this pcs has no record kind {kind!r}"
        what = "" if kind is None else f" of kind {kind!r}"
        super().__init__(
            f"Cannot read a journal record{what}: {self.problem}. It was written by "
            "a newer pcs (or the journal was changed by hand); the journal is kept. Deliver it "
            "with that pcs version (`pcs recover`), or upgrade pcs here."
        )

    def __reduce__(self) -> tuple[type[UnknownRecordError], tuple[object, str]]:
        return (type(self), (self.kind, self.problem))


class EncodingError(PcsError, TypeError):
    """A value cannot be encoded exactly (raised only in strict mode)."""


class SpecError(PcsError):
    """A spec or a registry is malformed."""

    def __init__(self, message: str, spec_id: str | None = None) -> None:
        self.spec_id = spec_id
        super().__init__(message)


class SpecNotFoundError(SpecError, LookupError):
    """The registry holds no spec with the requested id."""


class SpecIntegrityError(SpecError):
    """A spec's content does not hash to the id or hash recorded with it."""

    def __init__(self, message: str, spec_id: str | None = None,
                 expected: str | None = None, actual: str | None = None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message, spec_id)


class SpecConflictError(SpecError):
    """A different spec is already stored under the same id."""

    def __init__(self, message: str, spec_id: str | None = None, diff: str = "") -> None:
        self.diff = diff
        super().__init__(message, spec_id)


class UnsafeYamlError(SpecError):
    """A YAML document was refused by pcs's safe loader."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        super().__init__(message)


class ReplayError(PcsError):
    """A recorded call cannot be replayed.

    ``run_id`` is the run being replayed (None for a bare RunCommand) and
    ``path`` the recorded callable as ``module:qualname``.
    """

    def __init__(self, message: str, *, run_id: str | None = None,
                 path: str | None = None) -> None:
        self.run_id = run_id
        self.path = path
        super().__init__(message)


class CodeDriftError(ReplayError):
    """The code of a callable changed since the run was recorded.

    ``diff`` is a unified diff of the recorded source against the current one.
    """

    def __init__(self, message: str, diff: str = "", *, run_id: str | None = None,
                 path: str | None = None) -> None:
        self.diff = diff
        super().__init__(message, run_id=run_id, path=path)


class UnsafeReplayError(ReplayError):
    """A spec names a callable that pcs refuses to import or run."""


class UntrustedPickleError(PcsError):
    """A pickled value was not loaded because ``trust=True`` was not given."""
