"""MLflow experiments by name: ``pcs.run(..., experiment="my-study")`` and ``PCS_EXPERIMENT``.

Where a new run goes, first match wins:

1. ``experiment="name"``: the experiment of that name, created if missing
   (given together with ``experiment_id=``, both must name the same
   experiment: :class:`ExperimentConflictError` otherwise);
2. ``experiment_id="3"``: that experiment (the seed's API);
3. a nested run: its parent's experiment;
4. ``PCS_EXPERIMENT=name``: the experiment of that name, created if missing;
5. MLflow's default experiment ``"0"``.

A name is looked up (and created) once per process and store; later runs of
the same name cost a dictionary lookup. The first run of a name reads the
store, so it waits for MLflow to be imported and the store to answer.
"""

from __future__ import annotations

import os
import threading

from pcs import settings
from pcs._store import Backend
from pcs.exceptions import UsageError

__all__ = [
    "ExperimentConflictError",
    "ExperimentNotFoundError",
    "experiment_for_new_run",
    "experiment_id_of",
]

_lock = threading.Lock()


def _renew_lock_in_child() -> None:
    """A forked child gets a fresh lock (the parent's may be held by a thread that is gone)."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_lock_in_child)
#: (tracking URI, experiment name) -> experiment id, for names already resolved
_ids: dict[tuple[str, str], str] = {}


class ExperimentConflictError(UsageError):
    """``experiment=`` and ``experiment_id=`` name two different experiments."""

    def __init__(self, name: str, name_id: str, experiment_id: str) -> None:
        self.name = name
        self.experiment_id = experiment_id
        super().__init__(
            f"experiment={name!r} is the experiment with id {name_id}, but experiment_id="
            f"{experiment_id!r} was also given. Pass only one of them."
        )


class ExperimentNotFoundError(UsageError, LookupError):
    """No experiment of that name (or id) in the tracking store."""

    def __init__(self, experiment: str, tracking_uri: str) -> None:
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        super().__init__(
            f"The tracking store {tracking_uri!r} has no active experiment named (or with id) "
            f"{experiment!r}. List them with `mlflow experiments search` or check "
            "MLFLOW_TRACKING_URI."
        )


def _by_name(backend: Backend, name: str) -> str:
    """The id of experiment ``name``, created if missing; cached per store."""
    key = (backend.tracking_uri, name)
    found = _ids.get(key)
    if found is None:
        with _lock:
            found = _ids.get(key)
            if found is None:
                found = backend.experiment_id_by_name(name, create=True)
                assert found is not None  # noqa: S101 - create=True always gives an id
                _ids[key] = found
    return found


def _checked_id(experiment_id: object) -> str:
    text = str(experiment_id)
    if not text.isdigit():
        raise UsageError(
            f"experiment_id={experiment_id!r} is not an experiment id (ids are numbers). To "
            f"put the run in the experiment named {text!r}, pass experiment={text!r}: it is "
            "created if it does not exist."
        )
    return text


def experiment_for_new_run(
    backend: Backend,
    experiment: str | None,
    experiment_id: object | None,
    *,
    nested: bool,
) -> str | None:
    """The experiment id of a new run (the rules above); None: its parent's, or the default."""
    if experiment is not None:
        if not isinstance(experiment, str) or not experiment.strip():
            raise UsageError(f"experiment={experiment!r} must be a non-empty experiment name.")
        found = _by_name(backend, experiment)
        if experiment_id is not None and str(experiment_id) != found:
            raise ExperimentConflictError(experiment, found, str(experiment_id))
        return found
    if experiment_id is not None:
        return _checked_id(experiment_id)
    if nested:
        return None
    return default_experiment(backend)


def default_experiment(backend: Backend) -> str | None:
    """``PCS_EXPERIMENT``'s experiment id (created if missing), or None when it is unset."""
    name = settings.EXPERIMENT.get()
    if name is None:
        return None
    return _by_name(backend, name.strip())


def experiment_id_of(backend: Backend, experiment: str) -> str:
    """The id of an existing experiment given by name, or by id when no name matches.

    Raises :class:`ExperimentNotFoundError` when the store has neither.
    """
    found = backend.experiment_id_by_name(experiment)
    if found is not None:
        return found
    if experiment.isdigit() and backend.experiment_name(experiment) is not None:
        return experiment
    raise ExperimentNotFoundError(experiment, backend.tracking_uri)


def forget() -> None:
    """Forget resolved names (tests switch stores; an experiment may have been deleted)."""
    with _lock:
        _ids.clear()
