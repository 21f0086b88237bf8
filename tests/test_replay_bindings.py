"""Replay of every binding kind, large arguments, and arguments supplied again by name."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from replay_support import CodeDir

import pcs
from pcs.component_run import ComponentRun

SOURCE = """
import asyncio
import enum

import pcs

INSTANCES = []


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@pcs.tracked
class Model:
    def __init__(self, width: int, depth: int = 2) -> None:
        INSTANCES.append(self)
        self.width = width
        self.depth = depth

    @pcs.tracked
    def predict(self, x: int) -> int:
        return self.width * self.depth * x

    @pcs.tracked
    async def apredict(self, x: int) -> int:
        await asyncio.sleep(0)
        return self.width * x

    @pcs.tracked
    @classmethod
    def create(cls, width: int) -> int:
        return width * 10

    @pcs.tracked
    @staticmethod
    def add(x: int, y: int) -> int:
        return x + y


class Wide(Model):
    pass


class Plain:
    def __init__(self, scale: int) -> None:
        self.scale = scale

    @pcs.tracked
    def apply(self, x: int) -> int:
        return self.scale * x


@pcs.tracked
class Client:
    def __init__(self, token: str) -> None:
        self.token = token

    @pcs.tracked
    def call(self, x: int) -> int:
        return len(self.token) + x


@pcs.tracked
async def fetch(i: int, *rest: int, **options: int) -> int:
    await asyncio.sleep(0)
    return i + sum(rest) + sum(options.values())


@pcs.tracked
def batches(n: int):
    yield from range(n)
    return n * 100


@pcs.tracked
async def stream(n: int):
    for i in range(n):
        yield i


@pcs.tracked
def size(values: list[int]) -> int:
    return sum(values)


@pcs.tracked
def login(user: str, password: str) -> int:
    return len(user) + len(password)


@pcs.tracked
def locked(lock: object, x: int) -> int:
    return x


@pcs.tracked
def paint(color: Color) -> str:
    return color.name
"""


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CodeDir]:
    folder = CodeDir(tmp_path / "code", monkeypatch)
    yield folder
    folder.cleanup()


def last() -> ComponentRun:
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    return run


def tags(client: MlflowClient, run: pcs.Run) -> dict[str, str]:
    return dict(client.get_run(run.identifier).data.tags)


def test_instance_method_recreates_the_instance(client: MlflowClient, code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))
    assert module.Model(4, depth=3).predict(2) == 24
    run = last()
    new = run.rerun()
    assert len(module.INSTANCES) == 2  # a fresh instance from the recorded __init__ args
    assert (module.INSTANCES[1].width, module.INSTANCES[1].depth) == (4, 3)
    assert new.return_value == 24
    assert tags(client, new)["pcs.reproduced"] == "True"
    assert new.run_command == run.run_command
    args = new.run_command.argument_set
    assert args.get_function_args("Model", "__init__") == {"width": 4, "depth": 3}


def test_method_of_a_subclass_of_a_tracked_class(client: MlflowClient, code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))
    module.Wide(5).predict(1)
    run = last()
    assert run.run_command.component.qualname == "Wide"
    new = run.rerun()
    assert type(module.INSTANCES[-1]) is module.Wide
    assert tags(client, new)["pcs.reproduced"] == "True"


def test_method_of_an_untracked_class_is_refused(code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))
    module.Plain(3).apply(2)
    with pytest.raises(pcs.ReplayError, match=r"not a @pcs\.tracked class"):
        last().rerun()


def test_classmethod_and_staticmethod(client: MlflowClient, code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))
    module.Model.create(7)
    created = last()
    assert created.rerun().return_value == 70
    module.Model.add(3, 4)
    added = last()
    assert added.run_command.component.qualname == "Model.add"
    new = added.rerun()
    assert new.return_value == 7
    assert tags(client, new)["pcs.reproduced"] == "True"


def test_async_function_with_var_args(client: MlflowClient, code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))

    async def main() -> ComponentRun:
        await module.fetch(1, 2, 3, bonus=4)
        return last()

    run = asyncio.run(main())
    assert run.run_command.argument_set.get_function_args("fetch", "fetch") == {
        "i": 1, "rest": (2, 3), "options": {"bonus": 4}
    }
    new = run.rerun()  # no loop is running here: pcs runs one
    assert new.return_value == 10
    assert tags(client, new)["pcs.reproduced"] == "True"


def test_async_rerun_inside_a_running_loop_nests_under_the_active_run(
    client: MlflowClient, code: CodeDir
) -> None:
    module = code.load(code.write(SOURCE))

    async def record() -> ComponentRun:
        await module.Model(3).apredict(2)
        return last()

    run = asyncio.run(record())

    async def replay() -> tuple[pcs.Run, ComponentRun]:
        async with pcs.run("replays") as outer:
            return outer, run.rerun()

    outer, new = asyncio.run(replay())
    stored = tags(client, new)
    assert stored["mlflow.parentRunId"] == outer.identifier
    assert stored["pcs.reproduced"] == "True"
    assert new.return_value == 6


def test_generator_is_driven_to_the_end(client: MlflowClient, code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))
    assert list(module.batches(3)) == [0, 1, 2]
    run = last()
    new = run.rerun()
    stored = client.get_run(new.identifier)
    assert stored.info.status == "FINISHED"
    assert stored.data.tags["pcs.reproduced"] == "True"  # the generators' return values
    assert new.return_value == 300


def test_async_generator_is_driven_to_the_end(client: MlflowClient, code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))

    async def main() -> ComponentRun:
        assert [i async for i in module.stream(3)] == [0, 1, 2]
        return last()

    run = asyncio.run(main())
    new = run.rerun()
    stored = client.get_run(new.identifier)
    assert stored.info.status == "FINISHED"
    assert stored.data.tags["pcs.rerun_of"] == run.identifier
    # async generators log no return value, so there is nothing to compare
    assert "pcs.reproduced" not in stored.data.tags
    assert run.compare(new).same_return_value is None


def test_large_argument_stored_as_an_artifact(client: MlflowClient, code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))
    values = list(range(30_000))
    module.size(values)
    run = last()
    tree = run.run_command.argument_set.encoded()["size"]["size"]["values"]
    assert tree[0] == "artifact"
    digest = tree[1]["digest"]
    new = run.rerun()
    assert new.return_value == sum(values)
    assert tags(client, new)["pcs.reproduced"] == "True"
    stored = {a.path for a in client.list_artifacts(new.identifier, "pcs.arguments")}
    assert stored == {f"pcs.arguments/{digest}.json"}

    command = run.run_command
    with pytest.raises(pcs.ReplayError, match="artifacts="):
        command.run()
    assert command.run(artifacts=run).return_value == sum(values)
    registry = run.to_registry()
    assert registry.has_artifact(digest)
    assert command.run(artifacts=registry).return_value == sum(values)


def test_a_corrupt_large_argument_is_refused(client: MlflowClient, code: CodeDir,
                                             tmp_path: Path) -> None:
    module = code.load(code.write(SOURCE))
    module.size(list(range(30_000)))
    run = last()
    digest = run.run_command.argument_set.encoded()["size"]["size"]["values"][1]["digest"]
    artifact_uri = client.get_run(run.identifier).info.artifact_uri
    blob = Path(artifact_uri.removeprefix("file://")) / "pcs.arguments" / f"{digest}.json"
    data = blob.read_bytes()
    assert b'["i","7"]' in data
    blob.write_bytes(data.replace(b'["i","7"]', b'["i","8"]', 1))
    with pytest.raises(pcs.SpecIntegrityError, match=digest):
        run.rerun()


def test_redacted_argument_must_be_supplied(client: MlflowClient, code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))
    module.login("ada", "hunter2")
    run = last()
    assert not run.is_reproducible
    with pytest.raises(pcs.ReplayError, match=r"'password'.*overrides=") as caught:
        run.rerun()
    assert "hunter2" not in str(caught.value)
    with pytest.raises(pcs.UsageError, match="'passwd' names no"):
        run.rerun(overrides={"passwd": "x"})
    new = run.rerun(overrides={"password": "hunter2"})
    stored = tags(client, new)
    assert stored["pcs.rerun_overrides"] == "password"
    assert stored["pcs.reproduced"] == "True"
    assert client.get_run(new.identifier).data.params["arg.password"] == "<redacted>"


def test_redacted_init_argument_is_supplied_by_name(client: MlflowClient,
                                                    code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))
    module.Client("abc").call(1)
    run = last()
    with pytest.raises(pcs.ReplayError, match=r"'__init__\.token'"):
        run.rerun()
    assert run.rerun(overrides={"token": "abc"}).return_value == 4
    assert run.rerun(overrides={"__init__.token": "abcd"}).return_value == 5


def test_unencodable_argument_must_be_supplied(code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))
    module.locked(threading.Lock(), 5)
    run = last()
    with pytest.raises(pcs.ReplayError, match="'lock' could not be recorded exactly"):
        run.rerun()
    assert run.rerun(overrides={"lock": threading.Lock()}).return_value == 5


def test_enum_argument_round_trips(client: MlflowClient, code: CodeDir) -> None:
    module = code.load(code.write(SOURCE))
    module.paint(module.Color.BLUE)
    new = last().rerun()
    assert new.return_value == "BLUE"
    assert tags(client, new)["pcs.reproduced"] == "True"
