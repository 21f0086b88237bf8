"""Generators and async generators as tracked calls: the run lasts as long as they do.

A tracked generator function returns a generator that drives the user's
one: the call's run starts when it is first advanced, is the active run
while each step runs (not while the consumer holds an item), and ends when
the generator is exhausted, closed (an early ``close()`` is a normal ending)
or raises.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any, Protocol

from pcs import _stack

__all__ = ["drive_async_generator", "drive_generator"]

if TYPE_CHECKING:  # a Protocol for the type checker: nothing to build at import
    from pcs.component_run import ComponentRun

    class Recorder(Protocol):
        """What starts and ends the run of a prepared call: :class:`pcs._tracker.Tracker`."""

        def start(self, prepared: Any, /) -> ComponentRun | None:
            """The call's run, started now; None when the call runs unrecorded."""

        def finish(
            self,
            run: ComponentRun,
            exc: BaseException | None,
            value: Any = None,
            has_value: bool = True,
        ) -> None:
            """End the run: the call raised ``exc``, or returned ``value`` (if ``has_value``)."""


def drive_generator(
    recorder: Recorder, prepared: Any, gen: Generator[Any, Any, Any]
) -> Generator[Any, Any, Any]:
    """Run ``gen`` as the prepared call: its run lasts until it is exhausted or closed.

    The run starts when the generator is first advanced; each step runs
    with it as the active run.
    """
    run = recorder.start(prepared)
    if run is None:
        return (yield from gen)
    to_send: Any = None
    to_throw: BaseException | None = None
    try:
        while True:
            token = _stack.push(run)
            try:
                item = gen.throw(to_throw) if to_throw is not None else gen.send(to_send)
            finally:
                _stack.pop(token)
                to_throw = None
            try:
                to_send = yield item
            except GeneratorExit:
                raise
            except BaseException as exc:
                to_throw = exc
    except StopIteration as stop:
        recorder.finish(run, None, stop.value)
        return stop.value
    except GeneratorExit:
        # The consumer closed the generator early: a normal ending.
        token = _stack.push(run)
        try:
            gen.close()
        finally:
            _stack.pop(token)
        recorder.finish(run, None, has_value=False)
        raise
    except BaseException as exc:
        recorder.finish(run, exc)
        raise

async def drive_async_generator(
    recorder: Recorder, prepared: Any, agen: AsyncGenerator[Any, Any]
) -> AsyncGenerator[Any, Any]:
    """:func:`drive_generator` for an async generator."""
    run = recorder.start(prepared)
    if run is None:
        async for item in agen:
            yield item
        return
    to_send: Any = None
    to_throw: BaseException | None = None
    try:
        while True:
            token = _stack.push(run)
            try:
                if to_throw is not None:
                    item = await agen.athrow(to_throw)
                else:
                    item = await agen.asend(to_send)
            finally:
                _stack.pop(token)
                to_throw = None
            try:
                to_send = yield item
            except GeneratorExit:
                raise
            except BaseException as exc:
                to_throw = exc
    except StopAsyncIteration:
        recorder.finish(run, None, has_value=False)
    except GeneratorExit:
        token = _stack.push(run)
        try:
            await agen.aclose()
        finally:
            _stack.pop(token)
        recorder.finish(run, None, has_value=False)
        raise
    except BaseException as exc:
        recorder.finish(run, exc)
        raise
