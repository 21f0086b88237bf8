"""Arguments a replay rebuilds from lineage: the producer's logged return value.

A recorded argument that pcs could not encode exactly (a placeholder: a model
object, a handle...) cannot be rebuilt from its own record. If lineage says
the value came from another tracked call (see :mod:`pcs.lineage`) and that
call's return value was logged, the replay takes it from there: the return
value itself, or the one element of a returned list, tuple, dict or
dataclass of the recorded type. A pickled return value is loaded only when
the caller trusts pickles (``trust_pickles=True``): loading one can run code.

The value is then remembered as that producer's output, so the new run
records the same lineage as the original.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pcs import _canon, _lineage

if TYPE_CHECKING:
    from pcs.component_run import ComponentRun

__all__ = ["Rebuilt", "from_producers"]

_log = logging.getLogger("pcs")


@dataclasses.dataclass
class Rebuilt:
    """What lineage could rebuild for one replay."""

    #: argument name -> value taken from a producer's return value
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: argument name -> producing run id, for the values above
    producers: dict[str, str] = dataclasses.field(default_factory=dict)
    #: argument name -> why a producer's value could not be used (for the refusal)
    hints: dict[str, str] = dataclasses.field(default_factory=dict)


def _placeholder_type(tree: Any) -> str | None:
    """The recorded type of an argument recorded as a placeholder as a whole, else None."""
    if type(tree) is list and len(tree) == 2 and tree[0] == "placeholder" \
            and type(tree[1]) is dict:
        found = tree[1].get("type")
        return found if isinstance(found, str) else None
    return None


def from_producers(
    original: ComponentRun,
    trees: Mapping[str, Any],
    overrides: Mapping[str, Any],
    trust_pickles: bool,
) -> Rebuilt:
    """The entry point's placeholder arguments that ``original``'s producers can supply."""
    rebuilt = Rebuilt()
    wanted = {name: kind for name, tree in trees.items()
              if name not in overrides and (kind := _placeholder_type(tree)) is not None}
    if not wanted:
        return rebuilt
    for edge in original.inputs():
        kind = wanted.get(edge.path)
        if kind is None or not hasattr(edge.run, "return_value_artifact"):
            continue
        producer: ComponentRun = edge.run
        try:
            logged = producer.return_value_artifact()
            if logged is None:
                rebuilt.hints[edge.path] = (
                    f"its producer, run {producer.identifier}, logged no return value")
                continue
            if logged[0] == "pickle" and not trust_pickles:
                rebuilt.hints[edge.path] = (
                    f"its producer, run {producer.identifier}, logged it as a pickle: pass "
                    "trust_pickles=True to load it from there if you trust this store")
                continue
            value = producer.load_return_value(trust=trust_pickles)
        except Exception as exc:  # a missing artifact, a pickle that fails to load...
            rebuilt.hints[edge.path] = (
                f"the return value of its producer, run {producer.identifier}, cannot be "
                f"loaded ({type(exc).__name__}: {exc})")
            continue
        # the return value itself, else the one element of the recorded type
        matches = [value] if _canon.type_name(type(value)) == kind else [
            element for element in _lineage.elements(value)
            if _canon.type_name(type(element)) == kind]
        if len(matches) != 1:
            rebuilt.hints[edge.path] = (
                f"the return value of its producer, run {producer.identifier}, holds no "
                f"single value of type {kind}")
            continue
        rebuilt.values[edge.path] = matches[0]
        rebuilt.producers[edge.path] = producer.identifier
        _lineage.produced(matches[0], producer.identifier)
    if rebuilt.values:
        _log.info("pcs: replay rebuilds %s from the producers' return values (%s)",
                  ", ".join(sorted(rebuilt.values)),
                  ", ".join(f"{k} <- {v}" for k, v in sorted(rebuilt.producers.items())))
    return rebuilt

