"""How run objects reach replay and portability without importing them.

:class:`~pcs.ComponentRun` and :class:`~pcs.RunCommand` offer operations whose
work lives in the layer above them: ``rerun()``, ``compare()`` and
``RunCommand.run()`` are :mod:`pcs.replay`'s job, ``to_registry()`` and
``from_registry()`` :mod:`pcs.portable`'s. Those modules import the run objects
(and replay the tracker, which imports them too), so a run object that
imported them back, even inside a method, would close an import circle. Data
flows one way: decorator, run stack, capture, run objects, writer, store;
replay and portability sit on top.

A :class:`Slot` lets a lower module reach up without naming the upper module
in an import:

* the lower module declares what it needs as a :class:`typing.Protocol` and
  makes a ``Slot`` for it, naming the module that implements it
  (``Slot("pcs.replay")``);
* that module, when it is imported, calls :meth:`Slot.provide` with its
  implementation, and mypy checks the implementation against the Protocol
  right there;
* a call that comes first (``run.rerun()`` before anything imported
  :mod:`pcs.replay`) makes :meth:`Slot.get` import the module by name with
  :func:`importlib.import_module`, which provides it.

So ``import pcs`` loads neither replay nor portability, the import graph
has no circle, and each lower module states exactly what it uses.

Set aside: an import inside each method (the circle this replaces);
moving the methods off the run objects (they are public API); entry points or
pluggy hooks (process-wide machinery for plugins, not for pcs's own layers).
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

__all__ = ["Slot"]

T = TypeVar("T")


class Slot(Generic[T]):
    """Operations ``T`` of a lower module, implemented by the module named ``provider``."""

    __slots__ = ("_implementation", "provider")

    def __init__(self, provider: str) -> None:
        #: the module that provides the implementation when it is imported
        self.provider = provider
        self._implementation: T | None = None

    def __repr__(self) -> str:
        state = "provided" if self._implementation is not None else "not imported yet"
        return f"<Slot of {self.provider}: {state}>"

    def provide(self, implementation: T) -> None:
        """Install the implementation (the provider module calls this as it is imported)."""
        self._implementation = implementation

    def get(self) -> T:
        """The implementation, importing the provider module on first use."""
        implementation = self._implementation
        if implementation is None:
            importlib.import_module(self.provider)
            implementation = self._implementation
            if implementation is None:
                raise ImportError(
                    f"pcs: importing {self.provider} did not provide its operations; the "
                    "installation of pcs is incomplete or mixes versions. Reinstall pcs."
                )
        return implementation
