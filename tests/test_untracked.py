"""Recording switched off: ``with pcs.untracked():`` and the ``PCS_DISABLED=1`` kill switch."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import pcs


def _runs(uri: str) -> list[str]:
    assert pcs.flush(30)
    runs = MlflowClient(tracking_uri=uri).search_runs(["0"])
    return sorted(r.data.tags.get("mlflow.runName", "") for r in runs)


@pcs.tracked
def square(x: int) -> int:
    return x * x


@pcs.tracked
def fails(x: int) -> int:
    raise ValueError(f"bad {x}")


@pcs.tracked
def count(n: int):  # type: ignore[no-untyped-def]
    yield from range(n)


@pcs.tracked
async def add(a: int, b: int) -> int:
    return a + b


def test_calls_inside_are_plain_calls(tracking_uri: str) -> None:
    with pcs.untracked():
        assert [square(x) for x in range(5)] == [0, 1, 4, 9, 16]
        assert list(count(3)) == [0, 1, 2]
        assert asyncio.run(add(2, 3)) == 5
        with pytest.raises(ValueError, match="bad 7") as caught:
            fails(7)
        assert caught.value.__traceback__ is not None
        assert pcs.active_run() is None
    assert square(3) == 9  # recorded again after the block
    assert _runs(tracking_uri) == ["square(x=3)"]


def test_blocks_inside_yield_a_run_that_records_nothing(tracking_uri: str) -> None:
    with pcs.untracked(), pcs.run("inner", params={"lr": 0.1}) as run:
        assert isinstance(run, pcs.UntrackedRun)
        assert not run
        assert run.identifier is None
        run.log_metric("loss", 0.5)
        run.log_params({"a": 1})
        run.set_tag("k", "v")
        assert pcs.active_run() is None
    assert _runs(tracking_uri) == []


def test_active_runs_stay_active_and_inner_calls_are_not_their_children(tracking_uri: str) -> None:
    with pcs.run("outer") as outer:
        with pcs.untracked():
            assert square(2) == 4
            assert pcs.active_run() is outer
        assert square(5) == 25
    assert _runs(tracking_uri) == ["outer", "square(x=5)"]


def test_nested_blocks_restore_the_previous_state(tracking_uri: str) -> None:
    with pcs.untracked():
        with pcs.untracked():
            square(1)
        square(2)
    square(3)
    with pytest.raises(KeyError), pcs.untracked():
        raise KeyError("x")
    square(4)
    assert _runs(tracking_uri) == ["square(x=3)", "square(x=4)"]


def test_suppression_follows_asyncio_tasks_and_bound_threads(tracking_uri: str) -> None:
    async def main() -> list[int]:
        return list(await asyncio.gather(*(add(i, i) for i in range(3))))

    import threading

    results: list[int] = []
    with pcs.untracked():
        assert asyncio.run(main()) == [0, 2, 4]
        thread = threading.Thread(target=pcs.bind(lambda: results.append(square(6))))
        thread.start()
        thread.join()
    assert results == [36]
    assert _runs(tracking_uri) == []


def test_kill_switch_touches_no_store_and_creates_no_file(tmp_path: Path) -> None:
    program = textwrap.dedent(
        """
        import asyncio
        import pcs

        def plain(x):
            return x + 1

        tracked = pcs.tracked(plain)
        assert tracked is plain  # returned unchanged: calls cost nothing

        @pcs.tracked(name="cls")
        class Model:
            def __init__(self, lr):
                self.lr = lr

        @pcs.tracked
        async def later(x):
            return x

        with pcs.run("block") as run:
            assert isinstance(run, pcs.UntrackedRun)
            run.log_metric("loss", 1.0)
            print(tracked(1), Model(0.1).lr, asyncio.run(later(3)))
        assert pcs.flush(5)
        """
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCS_")}
    env.update(PCS_DISABLED="1", MLFLOW_TRACKING_URI=f"sqlite:///{work / 'store.db'}")
    done = subprocess.run([sys.executable, "-c", program], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "0.1", "3"]
    assert sorted(p.name for p in work.iterdir()) == []  # no store, journal or mlruns


def test_kill_switch_off_records_as_usual(monkeypatch: pytest.MonkeyPatch,
                                          tracking_uri: str) -> None:
    monkeypatch.setenv("PCS_DISABLED", "0")

    @pcs.tracked
    def cube(x: int) -> int:
        return x**3

    assert cube(2) == 8
    assert _runs(tracking_uri) == ["test_kill_switch_off_records_as_usual.<locals>.cube(x=2)"]
