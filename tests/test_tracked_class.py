"""@pcs.tracked on a class: __init__ arguments remembered on each instance."""

from __future__ import annotations

import threading

import pytest

import pcs
from pcs.component_run import ComponentRun


@pcs.tracked(redact=("key",))
class Client:
    def __init__(self, host: str, key: str, retries: int = 3) -> None:
        self.host = host

    @pcs.tracked
    def get(self, path: str) -> str:
        return self.host + path


class Slotted:
    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    @pcs.tracked
    def double(self) -> int:
        return 2 * self.n


def test_init_arguments_with_class_options() -> None:
    assert Client("h", "k-999").get("/x") == "h/x"
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    init = dict(run.run_command.argument_set.get_function_args("Client", "__init__"))
    assert init["host"] == "h"
    assert init["retries"] == 3
    assert init["key"] != "k-999"
    assert not run.is_reproducible
    assert any("key" in r for r in run.not_reproducible_reasons)


def test_bad_init_call_raises_its_own_type_error() -> None:
    with pytest.raises(TypeError):
        Client()  # type: ignore[call-arg]


def test_slotted_instances_still_work() -> None:
    SlottedTracked = pcs.tracked(Slotted)
    assert SlottedTracked(4).double() == 8
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    assert not run.is_reproducible


def test_strict_class_rejects_unencodable_init() -> None:
    @pcs.tracked(strict=True)
    class Holder:
        def __init__(self, lock: object) -> None:
            self.lock = lock

    with pytest.raises(pcs.EncodingError):
        Holder(threading.Lock())
