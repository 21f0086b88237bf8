"""Navigation (run.parent, run.children(), pcs.runs, the right class everywhere) and
experiments by name (experiment=, PCS_EXPERIMENT)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from mlflow.tracking import MlflowClient

import pcs
from pcs import query
from pcs.experiments import ExperimentConflictError, ExperimentNotFoundError


@pcs.tracked
def square(x: int) -> int:
    return x * x


def _experiment(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    assert found is not None, f"no experiment {name!r}"
    return str(found.experiment_id)


def test_parent_and_children_are_of_the_right_class() -> None:
    with pcs.run("outer") as outer:
        square(3)
        time.sleep(0.002)  # start times are in milliseconds: the order must be well defined
        with pcs.run("inner"):
            square(4)
    pcs.flush()
    children = outer.children()
    assert [type(c) for c in children] == [pcs.ComponentRun, pcs.Run]
    call, inner = children
    assert call.parent == outer
    assert outer.parent is None
    assert isinstance(inner.children()[0], pcs.ComponentRun)
    assert inner.children()[0].parent == inner
    fresh = pcs.Run.from_existing_run_id(call.identifier)
    assert type(fresh) is pcs.ComponentRun
    assert fresh.return_value == 9
    assert fresh.parent == outer  # read back from the store, not from this process's memory


def test_get_all_runs_and_from_existing_run_id_give_component_runs() -> None:
    square(2)
    with pcs.run("block") as block:
        pass
    pcs.flush()
    every = pcs.Run.get_all_runs()
    assert {type(r) for r in every} == {pcs.ComponentRun, pcs.Run}
    assert type(pcs.Run.from_existing_run_id(block.identifier)) is pcs.Run
    call = next(r for r in every if isinstance(r, pcs.ComponentRun))
    assert call.run_command.entry_point  # a real ComponentRun: its RunCommand reads back
    with pytest.raises(pcs.RunNotFoundError):
        pcs.Run.from_existing_run_id("0" * 32)


def test_runs_filters(client: MlflowClient) -> None:
    with pcs.run("alpha", tags={"team": "vision"}):
        square(1)
    time.sleep(0.01)
    with pytest.raises(RuntimeError), pcs.run("beta"):
        raise RuntimeError("boom")
    time.sleep(0.01)
    with pcs.run("alpha-2", experiment="other"):
        pass
    pcs.flush()
    names = [r.info.run_name for r in pcs.runs()]
    assert names == ["alpha-2", "beta", "square(x=1)", "alpha"]  # newest first, every experiment
    assert [r.info.run_name for r in pcs.runs(status="FAILED")] == ["beta"]
    assert [r.info.run_name for r in pcs.runs(name="alpha*")] == ["alpha-2", "alpha"]
    assert [r.info.run_name for r in pcs.runs(tags={"team": "vision"})] == ["alpha"]
    assert [r.info.run_name for r in pcs.runs(experiment="other")] == ["alpha-2"]
    assert [r.info.run_name for r in pcs.runs(top_level=False)] == ["square(x=1)"]
    assert type(pcs.runs(top_level=False)[0]) is pcs.ComponentRun
    assert len(pcs.runs(limit=2)) == 2
    assert pcs.runs(since="1h", limit=1)[0].info.run_name == "alpha-2"
    assert pcs.runs(until=timedelta(hours=1)) == []
    with pytest.raises(ExperimentNotFoundError):
        pcs.runs(experiment="no-such-experiment")
    with pytest.raises(pcs.UsageError, match="status"):
        pcs.runs(status="DONE")
    with pytest.raises(pcs.UsageError, match="not a time"):
        pcs.runs(since="yesterday-ish")


def test_experiment_by_name_is_created_then_reused(client: MlflowClient) -> None:
    with pcs.run("one", experiment="my-study") as one:
        with pcs.run("nested") as nested:
            pass
    with pcs.run("two", experiment="my-study") as two:
        pass
    study = _experiment(client, "my-study")
    assert one.experiment_id == two.experiment_id == study != "0"
    assert nested.experiment_id == study  # nested runs stay in their parent's experiment
    assert client.get_run(two.identifier).info.experiment_id == study
    with pcs.run("same", experiment="my-study", experiment_id=study):
        pass


def test_experiment_and_experiment_id_must_agree() -> None:
    with pytest.raises(ExperimentConflictError, match="Pass only one"), \
            pcs.run("x", experiment="my-study", experiment_id="0"):
        pass
    with pytest.raises(pcs.UsageError, match="experiment='my-study'"), \
            pcs.run("x", experiment_id="my-study"):
        pass


def test_pcs_experiment_for_top_level_runs_and_calls(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PCS_EXPERIMENT", "from-env")
    square(5)
    call = pcs.last_run()
    with pcs.run("block") as block:
        square(6)
        inner = pcs.last_run()
    with pcs.run("explicit", experiment_id="0") as explicit:
        square(7)
        nested_in_default = pcs.last_run()
    pcs.flush()
    env = _experiment(client, "from-env")
    assert call is not None
    assert inner is not None
    assert nested_in_default is not None
    assert client.get_run(call.identifier).info.experiment_id == env
    assert block.experiment_id == env
    assert client.get_run(block.identifier).info.experiment_id == env
    assert inner.experiment_id == env
    assert explicit.experiment_id == "0"
    assert nested_in_default.experiment_id == "0"  # nested: the parent's, not the env's
    assert {r.identifier for r in pcs.runs()} == {call.identifier, block.identifier,
                                                  inner.identifier}


def test_find_run_by_unique_prefix() -> None:
    ids = []
    for i in range(17):  # 17 hex ids: two share a first character (pigeonhole)
        square(i)
        last = pcs.last_run()
        assert last is not None
        ids.append(last.identifier)
    pcs.flush()
    assert query.find_run(ids[0][-12:]).info.run_id == ids[0]
    assert query.find_run(ids[0]).info.run_id == ids[0]
    firsts = [i[0] for i in ids]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    with pytest.raises(query.AmbiguousRunIdError, match="ambiguous"):
        query.find_run(shared)
    # the short ids trees show are the ends of the ids
    assert query.find_run(ids[3][-8:]).info.run_id == ids[3]
    with pytest.raises(pcs.RunNotFoundError, match="No run id starts or ends with 'zz'"):
        query.find_run("zz")
    with pytest.raises(pcs.RunNotFoundError):
        query.find_run("x' OR '1'='1")
