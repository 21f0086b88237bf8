"""``pcs.ComponentRun``: the Run of one tracked call, holding its RunCommand.

In MLflow a ComponentRun is a run tagged ``pcs.is_component_run=True``,
``pcs.run_command_id`` and ``pcs.entry_point``, named after the callable's
qualified name, whose artifact ``pcs.run_command_registry.yaml`` is a
Registry holding the RunCommand, Component and ArgumentSet specs. Arguments
are also logged as params ``arg.<name>``, the return value as the artifact
``pcs.return_value.<json|yaml|pickle>``.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from typing import Any, ClassVar

from pcs import _canon
from pcs._yaml import dump_yaml, load_yaml
from pcs.exceptions import PcsError, UntrustedPickleError, UsageError
from pcs.registry import Registry
from pcs.run import Run
from pcs.run_command import RunCommand

__all__ = ["RETURN_FORMATS", "ComponentRun"]

RETURN_FORMATS = ("json", "yaml", "pickle")
_NOT_RECORDED = object()


class ComponentRun(Run):
    """A Run recording one call of a tracked callable."""

    IS_COMPONENT_RUN_TAG: ClassVar[str] = "pcs.is_component_run"
    RUN_COMMAND_ID_TAG: ClassVar[str] = "pcs.run_command_id"
    ENTRY_POINT_TAG: ClassVar[str] = "pcs.entry_point"
    REPRODUCIBLE_TAG: ClassVar[str] = "pcs.reproducible"
    NOT_REPRODUCIBLE_REASON_TAG: ClassVar[str] = "pcs.not_reproducible_reason"
    REGISTRY_ARTIFACT: ClassVar[str] = "pcs.run_command_registry.yaml"
    RETURN_VALUE_ARTIFACT: ClassVar[str] = "pcs.return_value"
    ARGUMENT_ARTIFACT_DIR: ClassVar[str] = "pcs.arguments"

    _run_command: RunCommand | None = None
    _return_value: Any = _NOT_RECORDED
    _reasons: list[str] | None = None

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
        blobs: Mapping[str, bytes] | None = None,
        name: str | None = None,
    ) -> ComponentRun:
        """Start a RUNNING ComponentRun that records ``run_command`` (without calling it).

        ``reasons`` say why the call is not reproducible (none: it is);
        ``blobs`` are large argument values to store as artifacts by digest.
        """
        reasons = list(reasons or [])
        all_tags: dict[str, Any] = {
            cls.IS_COMPONENT_RUN_TAG: "True",
            cls.RUN_COMMAND_ID_TAG: run_command.identifier,
            cls.ENTRY_POINT_TAG: run_command.entry_point,
            cls.REPRODUCIBLE_TAG: "False" if reasons else "True",
        }
        if reasons:
            all_tags[cls.NOT_REPRODUCIBLE_REASON_TAG] = "; ".join(reasons)[:5000]
        all_tags.update(tags or {})
        run = cls(
            experiment_id,
            name=name or run_command.component.qualname,
            tags=all_tags,
            params=params,
            parent=parent,
        )
        run._run_command = run_command
        run._reasons = reasons
        registry = run_command.to_registry()
        backend = run._backend
        backend.log_artifact_bytes(
            run.identifier, cls.REGISTRY_ARTIFACT, dump_yaml(registry.to_dict()).encode()
        )
        for digest, blob in (blobs or {}).items():
            backend.log_artifact_bytes(
                run.identifier, f"{cls.ARGUMENT_ARTIFACT_DIR}/{digest}.json", blob
            )
        return run

    # -- what was recorded ---------------------------------------------------
    @property
    def run_command(self) -> RunCommand:
        """The RunCommand of this call (read from the run's registry artifact if needed)."""
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

    def load_return_value(self, trust: bool = False) -> Any:
        """Read the logged return value back. Pickles load only with ``trust=True``."""
        names = {info.path for info in self.list_artifacts()}
        for fmt in RETURN_FORMATS:
            path = f"{self.RETURN_VALUE_ARTIFACT}.{fmt}"
            if path in names:
                break
        else:
            raise PcsError(
                f"Run {self.identifier} has no logged return value; it was tracked with "
                "log_return_value=False, or the call did not return."
            )
        raw = self._backend.read_artifact(self.identifier, path)
        if fmt == "pickle":
            if not trust:
                raise UntrustedPickleError(
                    f"The return value of run {self.identifier} is a pickle, which can run "
                    "arbitrary code when loaded. Call load_return_value(trust=True) only if "
                    "you trust whoever wrote this tracking store."
                )
            return pickle.loads(raw)  # noqa: S301 - the caller passed trust=True
        envelope = json.loads(raw) if fmt == "json" else load_yaml(raw, source=path)
        return _canon.decode(envelope["value"])

    def _has_return_value(self) -> bool:
        return self._return_value is not _NOT_RECORDED

    def _record_return_value(self, value: Any, fmt: str) -> None:
        self._return_value = value
        self._backend.log_artifact_bytes(
            self.identifier, f"{self.RETURN_VALUE_ARTIFACT}.{fmt}", encode_return_value(value, fmt)
        )


def encode_return_value(value: Any, fmt: str) -> bytes:
    """The bytes of the ``pcs.return_value.<fmt>`` artifact.

    JSON and YAML hold an envelope: ``format`` (the encoding version),
    ``value`` (the exact typed encoding) and ``plain`` (the value as plain
    JSON/YAML when it has such a form, for readers that do not know pcs).
    """
    if fmt == "pickle":
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if fmt not in RETURN_FORMATS:
        raise UsageError(f"return_format={fmt!r} is not one of {', '.join(RETURN_FORMATS)}.")
    envelope = {"format": _canon.FORMAT, "value": _canon.encode(value), "plain": _plain(value)}
    if fmt == "json":
        return json.dumps(envelope, ensure_ascii=False, indent=1).encode()
    return dump_yaml(envelope).encode()


def _plain(value: Any) -> Any:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return json.loads(text)
