"""``pcs.RunCommand``: the unit of replay — a Component, an entry point and an ArgumentSet.

A RunCommand is content-addressed: its identifier hashes the component's
identifier, the entry point and the argument set's identifier, so two calls
of the same code with the same arguments share one RunCommand.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pcs import _canon, _upper
from pcs.argument_set import ArgumentSet
from pcs.component import Component
from pcs.exceptions import SpecError, SpecIntegrityError
from pcs.registry import InMemoryRegistry, Registry

__all__ = ["RunCommand", "spec_fields"]


def spec_fields(
    component_id: str, entry_point: str, argument_set_id: str
) -> tuple[str, dict[str, Any]]:
    """(identifier, spec fields) of the RunCommand of these ids, ``spec_hash`` included.

    The one definition of a RunCommand's identity and spec: :class:`RunCommand`
    uses it, and so does the writer for every tracked call (from the ids alone).
    """
    fields: dict[str, Any] = {
        "type": "RunCommand",
        "component_id": component_id,
        "entry_point": entry_point,
        "argument_set_id": argument_set_id,
    }
    identifier = _canon.tree_digest(fields)
    fields["spec_hash"] = _canon.spec_hash(identifier, fields, trusted=True)
    return identifier, fields


@dataclass(frozen=True)
class RunCommand:
    """What to call (``component`` + ``entry_point``) and with what (``argument_set``)."""

    component: Component
    entry_point: str
    argument_set: ArgumentSet

    def _spec(self) -> tuple[str, dict[str, Any]]:
        return spec_fields(self.component.identifier, self.entry_point,
                           self.argument_set.identifier)

    @functools.cached_property
    def identifier(self) -> str:
        """sha256 over the component id, the entry point and the argument set id."""
        return self._spec()[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunCommand):
            return NotImplemented
        return self.identifier == other.identifier

    def __hash__(self) -> int:
        return hash(self.identifier)

    def __repr__(self) -> str:
        return f"<RunCommand {self.component.path}.{self.entry_point} {self.identifier[:12]}>"

    def to_spec(self, flatten: bool = False) -> dict[str, Any]:
        """``{identifier: {fields}}``, or flat with an ``identifier`` key."""
        identifier, fields = self._spec()
        return _canon.join_spec(identifier, fields, flatten=flatten)

    def to_registry(
        self, registry: Registry | None = None, recurse: bool = True, force: bool = False
    ) -> Registry:
        """Add this RunCommand to a registry; ``recurse`` adds its Component and ArgumentSet."""
        registry = registry if registry is not None else InMemoryRegistry()
        if recurse:
            registry.add_component_spec(self.component.to_spec(), force=force)
            registry.add_argument_set_spec(self.argument_set.to_spec(), force=force)
        registry.add_run_command_spec(self.to_spec(), force=force)
        return registry

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], registry: Registry) -> RunCommand:
        """Rebuild a RunCommand from its spec, resolving the ids it refers to in ``registry``."""
        identifier, fields = _canon.split_spec(spec, kind="RunCommand spec")
        try:
            component_id = str(fields["component_id"])
            argument_set_id = str(fields["argument_set_id"])
            entry_point = str(fields["entry_point"])
        except KeyError as exc:
            raise SpecError(
                f"RunCommand spec {identifier} lacks the field {exc.args[0]!r}.", identifier
            ) from None
        component = Component.from_spec(registry.get_component_spec(component_id))
        argument_set = ArgumentSet.from_spec(registry.get_argument_set_spec(argument_set_id))
        command = cls(component, entry_point, argument_set)
        if command.identifier != identifier:
            raise SpecIntegrityError(
                f"RunCommand spec {identifier} does not match its content (it hashes to "
                f"{command.identifier}); the spec was changed after it was written.",
                identifier,
                expected=identifier,
                actual=command.identifier,
            )
        return command

    @classmethod
    def from_registry(cls, registry: Registry, identifier: str) -> RunCommand:
        """The RunCommand ``identifier`` of ``registry`` with its Component and ArgumentSet."""
        return cls.from_spec(registry.get_run_command_spec(identifier), registry)

    def run(
        self,
        allow_code_drift: bool = False,
        *,
        overrides: Mapping[str, Any] | None = None,
        allowed_modules: Iterable[str] | None = None,
        artifacts: Any = None,
        reraise: bool = True,
    ) -> Any:
        """Call the component's entry point with the argument set, as a new tracked call.

        Returns the new :class:`~pcs.ComponentRun`. The checks and options are
        those of :meth:`pcs.ComponentRun.rerun`; ``artifacts`` (a
        :class:`~pcs.Registry` or a ComponentRun) supplies large argument
        values stored by digest.

        A RunCommand is a spec that sits below the runs in pcs's layers (the
        writer uses it too), so this module names no run class: the run types
        are ``Any`` here. :func:`pcs.replay.replay_command` does the same,
        typed.
        """
        return REPLAY.get().replay_command(self, allow_code_drift, overrides=overrides,
                                           allowed_modules=allowed_modules,
                                           artifacts=artifacts, reraise=reraise)


if TYPE_CHECKING:  # a Protocol for the type checker: nothing to build at import

    class ReplayOperations(Protocol):
        """:meth:`RunCommand.run`, done by :mod:`pcs.replay` (see :mod:`pcs._upper`)."""

        def replay_command(
            self,
            command: RunCommand,
            allow_code_drift: bool = False,
            *,
            overrides: Mapping[str, Any] | None = None,
            allowed_modules: Iterable[str] | None = None,
            artifacts: Any = None,
            reraise: bool = True,
        ) -> Any: ...


#: provided by pcs.replay when it is imported (imported by name on first use)
REPLAY: _upper.Slot[ReplayOperations] = _upper.Slot("pcs.replay")
