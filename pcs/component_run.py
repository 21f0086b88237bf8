"""``pcs.ComponentRun``: the Run of one tracked call, holding its RunCommand.

In MLflow a ComponentRun is a run tagged ``pcs.is_component_run=True``,
``pcs.run_command_id`` and ``pcs.entry_point``, named after the callable's
qualified name, whose artifact ``pcs.run_command_registry.yaml`` is a
Registry holding the RunCommand, Component and ArgumentSet specs. Arguments
are also logged as params ``arg.<name>``, the return value as the artifact
``pcs.return_value.<json|yaml|pickle>``.
"""

from __future__ import annotations

import base64
import json
import logging
import pickle
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pcs import _canon, _redaction, _upper, conventions
from pcs._canon import is_deferrable
from pcs._records import LogArtifact, SetTags, StartCall
from pcs._store import Backend, get_backend
from pcs.argument_set import ArgumentSet
from pcs.component import Component
from pcs.exceptions import PcsError, UntrustedPickleError
from pcs.experiments import default_experiment
from pcs.registry import Registry
from pcs.run import Run, child_of, end_run, handle, init_run, register_open, run_from_handle
from pcs.run_command import RunCommand

if TYPE_CHECKING:
    from pcs._comparison import RunComparison
    from pcs._lineage import Edge

__all__ = ["RETURN_FORMATS", "ComponentRun"]

RETURN_FORMATS = ("json", "yaml", "pickle")
_log = logging.getLogger("pcs")
_NOT_RECORDED = object()


def return_payload(value: Any, fmt: str) -> list[Any]:
    """``[format, payload]`` of a return value for the end record: an exact snapshot, now.

    The payload is the value's tree, a deferred scalar (see
    :func:`pcs._canon.is_deferrable`), or base64 of a pickle. Secrets are
    redacted first, at any depth (:mod:`pcs._redaction`); a value holding one is
    never pickled: its redacted tree is logged as JSON instead. If checking the
    value fails, the whole value is redacted (fail closed).
    """
    if type(value) is str:
        reason = _redaction.POLICY.value(value)
        if reason is not None:
            return [fmt if fmt != "pickle" else "json", _canon.redacted_node(reason)]
    elif fmt != "pickle" and is_deferrable(value):
        return [fmt, value]
    try:
        tree, hidden = _canon.encode_redacted(value, _redaction.POLICY, root="return value")
    except Exception as exc:
        reason = f"redacted (pcs could not check it for secrets: {type(exc).__name__})"
        return [fmt if fmt != "pickle" else "json", _canon.redacted_node(reason)]
    if fmt == "pickle":
        if hidden:
            _log.warning(
                "pcs: the return value holds secrets (%s), so it is logged as JSON with them "
                "redacted instead of as a pickle.", "; ".join(hidden)[:500]
            )
            return ["json", tree]
        return [fmt, base64.b64encode(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
                .decode()]
    if type(value) is str:
        return [fmt, value] if is_deferrable(value) else [fmt, tree]
    return [fmt, tree]


_warned_lock = threading.Lock()
_warned_types: set[type[BaseException]] = set()


class ComponentRun(Run):
    """A Run recording one call of a tracked callable."""

    # The names of pcs.conventions, also reachable from the class (the seed's API).
    IS_COMPONENT_RUN_TAG: ClassVar[str] = conventions.COMPONENT_RUN_TAG
    RUN_COMMAND_ID_TAG: ClassVar[str] = conventions.RUN_COMMAND_ID_TAG
    ENTRY_POINT_TAG: ClassVar[str] = conventions.ENTRY_POINT_TAG
    REPRODUCIBLE_TAG: ClassVar[str] = conventions.REPRODUCIBLE_TAG
    NOT_REPRODUCIBLE_REASON_TAG: ClassVar[str] = conventions.NOT_REPRODUCIBLE_REASON_TAG
    REGISTRY_ARTIFACT: ClassVar[str] = conventions.REGISTRY_ARTIFACT
    RETURN_VALUE_ARTIFACT: ClassVar[str] = conventions.RETURN_VALUE_ARTIFACT
    RETURN_VALUE_ERROR_TAG: ClassVar[str] = conventions.RETURN_VALUE_ERROR_TAG
    ARGUMENT_ARTIFACT_DIR: ClassVar[str] = conventions.ARGUMENT_ARTIFACT_DIR

    _run_command: RunCommand | None = None
    _return_value: Any = _NOT_RECORDED
    _reasons: list[str] | None = None

    _pending: tuple[Component, str, dict[str, Any]] | None = None

    @classmethod
    def handle(
        cls,
        run_id: str,
        tracking_uri: str | None = None,
        *,
        run_command: RunCommand | None = None,
    ) -> ComponentRun:
        """A handle on the ComponentRun ``run_id`` of ``tracking_uri`` (default: the current store).

        The store is not read until the handle is used. ``run_command``: the
        run's RunCommand when the caller has it already (read from the run's
        registry artifact otherwise).
        """
        run = run_from_handle(cls, run_id, tracking_uri or get_backend().tracking_uri)
        run._run_command = run_command
        return run

    @classmethod
    def from_run_command(
        cls,
        run_command: RunCommand,
        *,
        parent: Run | str | None = None,
        experiment_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        reasons: list[str] | None = None,
        name: str | None = None,
    ) -> ComponentRun:
        """Start a RUNNING ComponentRun that records ``run_command`` (without calling it).

        ``reasons`` say why the call is not reproducible (none: it is).
        """
        component = run_command.component
        calls = run_command.argument_set.encoded()[component.name]
        parent_run = handle(parent) if isinstance(parent, str) else parent
        run = start_call(
            get_backend(),
            component,
            run_command.entry_point,
            dict(calls),
            list(reasons or []),
            dict(params or {}),
            {},
            parent_run,
            name or f"{component.qualname}",
            {str(k): str(v) for k, v in (tags or {}).items()} or None,
            experiment_id,
            cls,
        )
        run._run_command = run_command
        return run

    # -- what was recorded ---------------------------------------------------
    @property
    def run_command(self) -> RunCommand:
        """The RunCommand of this call (read from the run's registry artifact if needed)."""
        if self._run_command is None and self._pending is not None:
            component, entry_point, calls = self._pending
            arguments = ArgumentSet.from_encoded(
                {component.name: {entry: _canon.trees(args) for entry, args in calls.items()}}
            )
            self._run_command = RunCommand(component, entry_point, arguments)
        if self._run_command is None:
            registry = self.registry()
            command_id = self.data.tags.get(self.RUN_COMMAND_ID_TAG)
            if command_id is None:
                raise PcsError(
                    f"Run {self.identifier} in {self.tracking_uri} is not a ComponentRun "
                    f"(no {self.RUN_COMMAND_ID_TAG!r} tag); use pcs.Run for plain runs."
                )
            self._run_command = RunCommand.from_registry(registry, command_id)
        return self._run_command

    def registry(self) -> Registry:
        """The Registry stored in the run's ``pcs.run_command_registry.yaml`` artifact."""
        from pcs._yaml import load_yaml

        raw = self._backend.read_artifact(self.identifier, self.REGISTRY_ARTIFACT)
        data = load_yaml(raw, source=f"run {self.identifier}:{self.REGISTRY_ARTIFACT}")
        return Registry.from_dict(data)

    @property
    def not_reproducible_reasons(self) -> list[str]:
        """Why this call cannot be replayed exactly; empty when it can."""
        if self._reasons is None:
            text = self.data.tags.get(self.NOT_REPRODUCIBLE_REASON_TAG, "")
            self._reasons = [r for r in text.split("; ") if r]
        return list(self._reasons)

    @property
    def is_reproducible(self) -> bool:
        """True when the RunCommand holds every argument exactly (see the reasons if not)."""
        return not self.not_reproducible_reasons

    @property
    def return_value(self) -> Any:
        """The call's return value: the object itself in the recording process, else loaded
        from the logged artifact (JSON or YAML; a pickle needs :meth:`load_return_value`)."""
        if self._return_value is not _NOT_RECORDED:
            return self._return_value
        return self.load_return_value()

    def return_value_artifact(self) -> tuple[str, str] | None:
        """(format, artifact path) of the logged return value, or None if none was logged."""
        names = {info.path for info in self.list_artifacts()}
        for fmt in RETURN_FORMATS:
            path = f"{self.RETURN_VALUE_ARTIFACT}.{fmt}"
            if path in names:
                return fmt, path
        return None

    def load_return_value(self, trust: bool = False) -> Any:
        """Read the logged return value back. Pickles load only with ``trust=True``."""
        found = self.return_value_artifact()
        if found is None:
            raise PcsError(
                f"Run {self.identifier} has no logged return value; it was tracked with "
                "log_return_value=False, or the call did not return."
            )
        fmt, path = found
        raw = self._backend.read_artifact(self.identifier, path)
        if fmt == "pickle":
            if not trust:
                raise UntrustedPickleError(
                    f"The return value of run {self.identifier} is a pickle, which can run "
                    "arbitrary code when loaded. Call load_return_value(trust=True) only if "
                    "you trust whoever wrote this tracking store."
                )
            return pickle.loads(raw)  # noqa: S301 - the caller passed trust=True
        if fmt == "json":
            envelope = json.loads(raw)
        else:
            from pcs._yaml import load_yaml

            envelope = load_yaml(raw, source=path)
        return _canon.decode(envelope["value"])

    def _return_value_not_stored(self, fmt: str, err: Exception) -> None:
        """The return value cannot be serialized as ``fmt``: tag the run, warn once per error type.

        A call that returned is FINISHED whatever happens to its return value:
        a serialization failure becomes the tag ``pcs.return_value.error`` and
        one warning per error type, never a status.
        """
        text = f"{type(err).__name__}: {err}"[:conventions.MAX_TAG_VALUE_LENGTH]
        self._backend.submit(SetTags.wire(self._run_id, {self.RETURN_VALUE_ERROR_TAG: text}))
        with _warned_lock:
            first = type(err) not in _warned_types
            _warned_types.add(type(err))
        if first:
            _log.warning(
                "pcs: the return value of run %s could not be stored as %s (%s); the run "
                "is FINISHED and tagged %s. Use return_format='json' or a picklable value.",
                self._run_id, fmt, text, self.RETURN_VALUE_ERROR_TAG,
            )

    # -- replay and portability (pcs.replay and pcs.portable do the work: see the end) --
    def rerun(
        self,
        allow_code_drift: bool = False,
        *,
        overrides: Mapping[str, Any] | None = None,
        allowed_modules: Iterable[str] | None = None,
        reraise: bool = True,
        trust_pickles: bool = False,
    ) -> ComponentRun:
        """Call the recorded callable again with the recorded arguments; return the new run.

        The new ComponentRun is a genuine tracked call (nested under the
        active run, if any) tagged ``pcs.rerun_of`` = this run's id and
        ``pcs.reproduced`` = whether its outcome equals this one's. Before
        running, pcs refuses modules that are not allowed (``allowed_modules``
        adds module prefixes; see :mod:`pcs.replay`), callables that are not
        ``@pcs.tracked``, and code that changed since this run was recorded
        (:class:`~pcs.CodeDriftError` with a diff, unless
        ``allow_code_drift=True``). Redacted or unencodable arguments must be
        supplied by name in ``overrides`` — unless lineage names the call that
        produced the value and its logged return value holds it: then the replay
        takes it from there (a pickled one only with ``trust_pickles=True``;
        see :mod:`pcs.lineage`). An exception of the replayed call
        propagates unchanged unless ``reraise=False``, which returns the
        FAILED run instead.
        """
        return REPLAY.get().rerun(self, allow_code_drift, overrides=overrides,
                                  allowed_modules=allowed_modules, reraise=reraise,
                                  trust_pickles=trust_pickles)

    def inputs(self) -> list[Edge]:
        """The values this call received that other tracked calls returned:
        ``(argument path, producing run)`` pairs (see :mod:`pcs.lineage`)."""
        return LINEAGE.get().inputs(self)

    def consumers(self) -> list[Edge]:
        """The tracked calls that received a value this call returned:
        ``(argument path, consuming run)`` pairs (see :mod:`pcs.lineage`)."""
        return LINEAGE.get().consumers(self)

    def compare(self, other: Run) -> RunComparison:
        """What differs between this run and ``other``: arguments, code, status, return value."""
        return REPLAY.get().compare(self, other)

    @classmethod
    def from_registry(cls, registry: Registry, run_id: str) -> ComponentRun:
        """The run ``run_id`` of ``registry`` in the current store (itself, or its import).

        Raises :class:`~pcs.SpecNotFoundError` if the registry has no such run
        and :class:`~pcs.RunNotFoundError` if the current store has neither the
        run nor a run imported from it (see :func:`pcs.import_runs`).
        """
        return PORTABILITY.get().component_run_from_registry(cls, registry, run_id)

    def to_registry(
        self,
        registry: Registry | None = None,
        force: bool = False,
        include_artifacts: bool = False,
        recurse: bool = True,
    ) -> Registry:
        """Add this run's spec to ``registry``; with ``recurse``, everything replay needs.

        ``recurse=True`` (default) also adds the RunCommand, Component and
        ArgumentSet specs and the large argument values (artifacts by digest);
        ``include_artifacts=True`` copies every artifact file of the run.
        """
        return PORTABILITY.get().component_run_to_registry(
            self, registry, force, include_artifacts, recurse
        )


# -- a tracked call's run: started, ended, and what this process knows of it ------------
def start_call(
    backend: Backend,
    component: Component,
    entry_point: str,
    calls: dict[str, Any],
    reasons: list[str],
    params: dict[str, str],
    blobs: Mapping[str, bytes],
    parent: Run | None,
    name: str,
    extra_tags: dict[str, str] | None,
    experiment_id: str | None = None,
    cls: type[ComponentRun] = ComponentRun,
) -> ComponentRun:
    """Record the start of a tracked call: journal it and queue it for the writer.

    This is the hot path of every tracked call: no I/O, no MLflow call.
    """
    if parent is not None:
        parent_id, experiment_id = child_of(parent, experiment_id)
    else:
        parent_id = None
        if experiment_id is None:  # a top-level call: PCS_EXPERIMENT's, else the default
            experiment_id = default_experiment(backend) or cls.DEFAULT_EXPERIMENT_ID
    start = time.time_ns() // 1_000_000
    run_id = backend.new_run_id(experiment_id)
    run = cls.__new__(cls)
    init_run(run, backend, run_id, experiment_id, name, parent_id)
    run._pending = (component, entry_point, calls)
    run._reasons = reasons
    key = component.identifier
    records = [StartCall.wire(run_id, experiment_id, start, key, entry_point, name,
                              parent_id, calls, reasons, params, extra_tags)]
    if blobs:
        for digest, blob in blobs.items():
            path = f"{cls.ARGUMENT_ARTIFACT_DIR}/{digest}.json"
            records.append(LogArtifact.wire(run_id, path, base64.b64encode(blob).decode()))
    # published without a lock; journaled and acknowledged when the call ends
    (backend.started_writer or backend.writer).start(records, (key, component.fields))
    register_open(run)
    return run


def finish_call(run: ComponentRun, value: Any = None, fmt: str | None = None) -> None:
    """End a tracked call that returned ``value``: FINISHED (the hot path).

    ``fmt``: how to log the return value (one of :data:`RETURN_FORMATS`);
    None logs none. The value travels with the end record, an exact snapshot
    taken now (see :func:`return_payload`).
    """
    returned = None
    if fmt is not None:
        run._return_value = value
        try:
            returned = return_payload(value, fmt)
        except Exception as err:
            run._return_value_not_stored(fmt, err)
    end_run(run, "FINISHED", returned)


def recorded_id(run: Run) -> str:
    """The id this process recorded ``run`` under, at once (a local id on a server store,
    where :attr:`Run.identifier` may wait for the writer to learn MLflow's)."""
    return run._run_id


def known_run_command(run: ComponentRun) -> RunCommand | None:
    """The run's RunCommand if this process knows it without reading the store, else None."""
    if run._run_command is None and run._pending is None:
        return None
    return run.run_command


def known_return_value(run: ComponentRun, default: Any = None) -> Any:
    """What the call returned, as this process recorded it; ``default`` if it recorded nothing."""
    value = run._return_value
    return default if value is _NOT_RECORDED else value


# -- what ComponentRun needs of the layer above it (see pcs._upper) -------------------
if TYPE_CHECKING:  # Protocols for the type checker: nothing to build at import

    class ReplayOperations(Protocol):
        """:meth:`ComponentRun.rerun` and ``compare``, done by :mod:`pcs.replay`."""

        def rerun(
            self,
            run: ComponentRun,
            allow_code_drift: bool = False,
            *,
            overrides: Mapping[str, Any] | None = None,
            allowed_modules: Iterable[str] | None = None,
            reraise: bool = True,
            trust_pickles: bool = False,
        ) -> ComponentRun: ...

        def compare(self, left: Run, right: Run) -> RunComparison: ...

    class PortableOperations(Protocol):
        """:meth:`ComponentRun.from_registry` and ``to_registry``, done by :mod:`pcs.portable`."""

        def component_run_from_registry(
            self, cls: type[ComponentRun], registry: Registry, run_id: str
        ) -> ComponentRun: ...

        def component_run_to_registry(
            self,
            run: ComponentRun,
            registry: Registry | None = None,
            force: bool = False,
            include_artifacts: bool = False,
            recurse: bool = True,
        ) -> Registry: ...


    class LineageOperations(Protocol):
        """:meth:`ComponentRun.inputs` and ``consumers``, read by :mod:`pcs.lineage`."""

        def inputs(self, run: ComponentRun) -> list[Edge]: ...

        def consumers(self, run: ComponentRun) -> list[Edge]: ...


#: provided by pcs.replay when it is imported (imported by name on first use)
REPLAY: _upper.Slot[ReplayOperations] = _upper.Slot("pcs.replay")
#: provided by pcs.portable when it is imported (imported by name on first use)
PORTABILITY: _upper.Slot[PortableOperations] = _upper.Slot("pcs.portable")
#: provided by pcs.lineage when it is imported (imported by name on first use)
LINEAGE: _upper.Slot[LineageOperations] = _upper.Slot("pcs.lineage")
