"""The first-party pytest plugin (plugins/pcs_pytest): ``pytest --pcs`` records runs.

Each test runs pytest in a subprocess (pcs keeps per-process state: the run
stack, the store's writer) on a test file written here, then reads the store
back with a stock ``MlflowClient``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from replay_support import make_store

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: A test file with one test of each outcome, a tracked call and the pcs_run fixture.
SUITE = """
    import pytest
    import pcs

    @pcs.tracked
    def add(a, b):
        return a + b

    @pytest.fixture
    def broken():
        raise RuntimeError("fixture broke")

    def test_pass(pcs_run):
        assert add(1, 2) == 3
        pcs_run.log_metric("seen", 1.0)
        assert pcs.active_run() == pcs_run

    def test_fail():
        print("captured words")
        assert add(1, 1) == 3

    def test_skip():
        pytest.skip("not today")

    @pytest.mark.xfail(reason="known bug")
    def test_xfail():
        assert False

    @pytest.mark.xfail(reason="fixed already")
    def test_xpass():
        pass

    def test_error(broken):
        pass
"""

#: pytest's summary nouns (``parseoutcomes``) → the plugin's outcome names.
NOUNS = {"errors": "error"}


@pytest.fixture
def store(pytester: pytest.Pytester, template_store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite store in pytester's folder, the subprocess's MLFLOW_TRACKING_URI."""
    uri = make_store(template_store, pytester.path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("PCS_PYTEST", raising=False)
    return uri


def runs(uri: str, experiment_ids: list[str] | None = None) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids = experiment_ids or [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, max_results=1000))


def by_name(found: list[Any]) -> dict[str, Any]:
    return {r.info.run_name: r for r in found}


def run_pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # -p pcs_pytest: also when entry-point plugins are not auto-loaded
    return pytester.runpytest_subprocess("-p", "pcs_pytest", "-p", "no:cacheprovider", *args,
                                         timeout=600)


def test_session_and_tests_are_runs(pytester: pytest.Pytester, store: str) -> None:
    from mlflow.tracking import MlflowClient

    pytester.makepyfile(test_suite=SUITE)
    result = run_pytest(pytester, "--pcs")
    outcomes = {NOUNS.get(k, k): v for k, v in result.parseoutcomes().items()}
    assert outcomes == {"passed": 1, "failed": 1, "skipped": 1, "xfailed": 1, "xpassed": 1,
                        "error": 1}, result.stdout.str()

    found = runs(store)
    named = by_name(found)
    session = named["pytest session"]
    assert session.info.status == "FAILED"  # pytest exited 1
    assert session.data.tags["pcs.is_run"] == "True"
    assert "mlflow.parentRunId" not in session.data.tags
    assert session.data.tags["pytest.exitstatus"] == "1"

    tests = [r for r in found if "pytest.nodeid" in r.data.tags]
    expected = {  # test name → (outcome, status)
        "test_pass": ("passed", "FINISHED"),
        "test_fail": ("failed", "FAILED"),
        "test_skip": ("skipped", "FINISHED"),
        "test_xfail": ("xfailed", "FINISHED"),
        "test_xpass": ("xpassed", "FINISHED"),
        "test_error": ("error", "FAILED"),
    }
    assert sorted(r.info.run_name for r in tests) == sorted(
        f"test_suite.py::{name}" for name in expected
    )
    for r in tests:
        name = r.info.run_name.split("::")[1]
        assert (r.data.tags["pytest.outcome"], r.info.status) == expected[name], name
        assert r.data.tags["pytest.nodeid"] == r.info.run_name
        assert r.data.tags["mlflow.parentRunId"] == session.info.run_id
        assert r.data.metrics["pytest.duration"] >= 0
    assert named["test_suite.py::test_skip"].data.tags["pytest.reason"] == "not today"
    assert named["test_suite.py::test_xfail"].data.tags["pytest.reason"] == "known bug"
    assert named["test_suite.py::test_error"].data.tags["pytest.when"] == "setup"
    assert named["test_suite.py::test_pass"].data.metrics["seen"] == 1.0  # via pcs_run

    # counts: the session's metrics and the test runs per outcome both equal pytest's summary
    for outcome, count in outcomes.items():
        assert session.data.metrics[f"pytest.{outcome}"] == count, outcome
        assert sum(r.data.tags["pytest.outcome"] == outcome for r in tests) == count, outcome

    # the failure text, as an artifact of the failed (and the erroring) test
    client = MlflowClient(tracking_uri=store)
    failed = named["test_suite.py::test_fail"]
    text = Path(client.download_artifacts(failed.info.run_id, "pytest.failure.txt",
                                          str(pytester.path))).read_text()
    assert "assert 2 == 3" in text
    assert "captured words" in text  # the captured output of the failing phase
    errored = named["test_suite.py::test_error"].info.run_id
    assert "pytest.failure.txt" in [a.path for a in client.list_artifacts(errored)]
    passed = named["test_suite.py::test_pass"].info.run_id
    assert client.list_artifacts(passed) == []

    # tracked calls inside a test nest under that test's run
    adds = [r for r in found if r.info.run_name.startswith("add(")]
    assert sorted(r.data.tags["mlflow.parentRunId"] for r in adds) == sorted(
        [passed, failed.info.run_id]
    )


def test_inert_without_pcs(pytester: pytest.Pytester, store: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    untouched = tmp_path / "never" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{untouched}")
    pytester.makepyfile(test_plain="""
        import sys

        def test_nothing_loaded():
            assert "pcs" not in sys.modules and "mlflow" not in sys.modules

        def test_fixture_is_untracked(pcs_run):
            assert not pcs_run
            pcs_run.log_metric("ignored", 1.0)   # does nothing

        def test_fails():
            assert False
    """)
    result = run_pytest(pytester)
    result.assert_outcomes(passed=2, failed=1)
    assert not untouched.parent.exists()


def test_env_switch_and_experiment_name(pytester: pytest.Pytester, store: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("PCS_PYTEST", "1")
    pytester.makepyfile(test_two="""
        def test_one():
            pass

        def test_two():
            pass
    """)
    result = run_pytest(pytester, "--pcs-experiment", "pytest suite")
    result.assert_outcomes(passed=2)
    experiment = MlflowClient(tracking_uri=store).get_experiment_by_name("pytest suite")
    assert experiment is not None
    named = by_name(runs(store, [experiment.experiment_id]))
    assert sorted(named) == ["pytest session", "test_two.py::test_one", "test_two.py::test_two"]
    session = named["pytest session"]
    assert session.info.status == "FINISHED"
    assert session.data.metrics["pytest.passed"] == 2
    assert session.data.metrics["pytest.failed"] == 0


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="needs pytest-xdist")
def test_xdist_workers(pytester: pytest.Pytester, store: str) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = run_pytest(pytester, "--pcs", "-n", "2")
    outcomes = {NOUNS.get(k, k): v for k, v in result.parseoutcomes().items()}
    assert sum(outcomes.values()) == 6, result.stdout.str()

    found = runs(store)
    named = by_name(found)
    session = named["pytest session"]
    workers = [r for r in found if r.info.run_name.startswith("pytest worker gw")]
    assert len(workers) == 2
    assert {w.data.tags["mlflow.parentRunId"] for w in workers} == {session.info.run_id}
    tests = [r for r in found if "pytest.nodeid" in r.data.tags]
    assert len(tests) == 6
    worker_ids = {w.info.run_id for w in workers}
    assert {t.data.tags["mlflow.parentRunId"] for t in tests} <= worker_ids
    for outcome, count in outcomes.items():
        assert session.data.metrics[f"pytest.{outcome}"] == count, outcome
        assert sum(r.data.tags["pytest.outcome"] == outcome for r in tests) == count, outcome
    adds = [r for r in found if r.info.run_name.startswith("add(")]
    test_ids = {t.info.run_id for t in tests}
    assert len(adds) == 2
    assert {a.data.tags["mlflow.parentRunId"] for a in adds} <= test_ids
