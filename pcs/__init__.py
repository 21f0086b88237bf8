"""pcs — the Python Component System: nested, replayable run tracking on MLflow.

``import pcs`` does not import MLflow; the first run does.

Note: ``pcs.run`` is the :func:`run` context-manager function; the seed's
``Run`` class lives in the module of the same name (``from pcs.run import
Run``) and is re-exported as ``pcs.Run``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pcs import redaction
from pcs._suppress import UntrackedRun, untracked
from pcs._threads import bind, child_env, instrument_threads, uninstrument_threads
from pcs.argument_set import ArgumentSet
from pcs.component import Component
from pcs.component_run import ComponentRun
from pcs.exceptions import (
    CodeDriftError,
    EncodingError,
    PcsError,
    ReplayError,
    RunNotFoundError,
    SpecConflictError,
    SpecError,
    SpecIntegrityError,
    SpecNotFoundError,
    StoreError,
    UnsafeReplayError,
    UnsafeYamlError,
    UntrustedPickleError,
    UsageError,
)
from pcs.experiments import ExperimentConflictError, ExperimentNotFoundError
from pcs.registry import InMemoryRegistry, Registry, YamlFileRegistry
from pcs.run import Run
from pcs.run_command import RunCommand
from pcs.secret import Secret
from pcs.tracking import active_run, flush, last_run, run, tracked

if TYPE_CHECKING:
    from pcs.portable import export_runs, import_runs
    from pcs.query import AmbiguousRunIdError, runs
    from pcs.recovery import recover
    from pcs.replay import compare

__version__ = "0.1.0.dev0"

# Loaded on first use, to keep ``import pcs`` fast.
_LAZY = {
    "compare": "pcs.replay",
    "export_runs": "pcs.portable",
    "import_runs": "pcs.portable",
    "recover": "pcs.recovery",
    "runs": "pcs.query",
    "AmbiguousRunIdError": "pcs.query",
}
#: Public submodules, also loaded on first use (``pcs.canon.encode(...)`` after ``import pcs``).
_SUBMODULES = frozenset({"canon", "conventions", "hookspecs", "plugins", "replay", "portable",
                         "recovery", "settings", "query", "experiments"})


def __getattr__(name: str) -> Any:
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"pcs.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pcs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "AmbiguousRunIdError",
    "ArgumentSet",
    "CodeDriftError",
    "Component",
    "ComponentRun",
    "EncodingError",
    "ExperimentConflictError",
    "ExperimentNotFoundError",
    "InMemoryRegistry",
    "PcsError",
    "Registry",
    "ReplayError",
    "Run",
    "RunCommand",
    "RunNotFoundError",
    "Secret",
    "SpecConflictError",
    "SpecError",
    "SpecIntegrityError",
    "SpecNotFoundError",
    "StoreError",
    "UnsafeReplayError",
    "UnsafeYamlError",
    "UntrackedRun",
    "UntrustedPickleError",
    "UsageError",
    "YamlFileRegistry",
    "active_run",
    "bind",
    "child_env",
    "compare",
    "export_runs",
    "flush",
    "import_runs",
    "instrument_threads",
    "last_run",
    "recover",
    "redaction",
    "run",
    "runs",
    "tracked",
    "uninstrument_threads",
    "untracked",
]
