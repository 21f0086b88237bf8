"""The active part of the plugin: registered only when ``--pcs`` or ``PCS_PYTEST=1``."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import pytest

import pcs
from pcs_pytest._keys import RUN_KEY

logger = logging.getLogger("pcs.pytest")
T = TypeVar("T")

#: Outcomes always logged as session metrics (0 when none), in pytest's summary order.
OUTCOMES = ("failed", "passed", "skipped", "deselected", "xfailed", "xpassed", "error")
#: Which phase category decides a test's outcome when several phases report one.
_PRIORITY = {"failed": 0, "error": 1, "xpassed": 2, "xfailed": 3, "skipped": 4, "passed": 5}
#: Outcomes whose test run ends FAILED (all others end FINISHED).
FAILED_OUTCOMES = frozenset({"failed", "error"})
FAILURE_ARTIFACT = "pytest.failure.txt"
SESSION_NAME = "pytest session"
#: Key of the controller's session run id in a pytest-xdist worker's ``workerinput``.
WORKERINPUT_KEY = "pcs_session_run_id"
_MAX_TAG = 5000


def _guard(what: str, fn: Callable[[], T], default: T) -> T:
    """Run ``fn``; a failure inside pcs is logged, never raised into the test session."""
    try:
        return fn()
    except Exception as err:  # pcs must never break the test run
        logger.warning("pcs pytest plugin: could not %s: %s: %s", what, type(err).__name__, err)
        return default


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TAG else text[: _MAX_TAG - 3] + "..."


class _TestRecord:
    """The reports of one test's phases, as they arrive."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.outcome = "passed"
        self.when = ""
        self.reason = ""
        self.durations: dict[str, float] = {}
        self.failures: list[str] = []
        self._rank = len(_PRIORITY) + 1

    def add(self, report: pytest.TestReport, category: str) -> None:
        self.durations[report.when] = self.durations.get(report.when, 0.0) + report.duration
        if report.failed:
            text = _guard("read a failure report", lambda: report.longreprtext, "")
            sections = "".join(
                f"\n----- {title} -----\n{content}" for title, content in report.sections
            )
            self.failures.append(f"===== {report.when}: {self.nodeid} =====\n{text}\n{sections}")
        if not category:
            return
        rank = _PRIORITY.get(category, len(_PRIORITY))
        if rank < self._rank:
            self._rank, self.outcome, self.when = rank, category, report.when
            self.reason = _reason(report)


def _reason(report: pytest.TestReport) -> str:
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None:
        return str(wasxfail)
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return ""


class PcsTracker:
    """Records the pytest session and its tests as pcs runs."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.counts: Counter[str] = Counter()
        self.session_run: pcs.Run | None = None
        self._session = contextlib.ExitStack()
        self._current: _TestRecord | None = None
        self._started = 0.0
        self._experiment_id: str | None = None

    # -- session -------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._started = time.perf_counter()
        self._experiment_id = _guard("resolve --pcs-experiment", self._resolve_experiment, None)
        workerinput: dict[str, Any] | None = getattr(self.config, "workerinput", None)
        name, parent = SESSION_NAME, None
        if workerinput is not None:  # a pytest-xdist worker
            name = f"pytest worker {workerinput.get('workerid', '?')}"
            parent = workerinput.get(WORKERINPUT_KEY) or None
        tags = {
            "pytest.session": "true",
            "pytest.args": _clip(" ".join(self.config.invocation_params.args)),
            "pytest.rootdir": _clip(str(self.config.rootpath)),
            "pytest.version": pytest.__version__,
        }
        block = pcs.run(name, experiment_id=self._experiment_id, tags=tags, parent=parent)
        with warnings.catch_warnings():
            # Connect to the store now, before any test: MLflow's own warnings while it
            # opens the store (SQLAlchemy deprecations...) must not land on a test,
            # where a suite's ``filterwarnings = error`` would turn them into failures.
            warnings.simplefilter("ignore")
            self.session_run = _guard(
                "start the session run", lambda: self._session.enter_context(block), None
            )
            _guard("reach the tracking store", lambda: pcs.flush(timeout=120), False)

    def _resolve_experiment(self) -> str | None:
        value = self.config.getoption("pcs_experiment", default=None)
        if not value:
            return None
        value = str(value)
        if value.isdigit():
            return value
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        experiment = client.get_experiment_by_name(value)
        if experiment is not None:
            return str(experiment.experiment_id)
        return str(client.create_experiment(value))

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """pytest-xdist controller: hand the session run id to each worker."""
        if self.session_run is not None:
            node.workerinput[WORKERINPUT_KEY] = self.session_run.identifier

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # counted as pytest's terminal summary counts them
            self.counts["error"] += 1
        elif report.skipped:
            self.counts["skipped"] += 1

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.counts["deselected"] += len(items)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        run = self.session_run
        if run is not None:
            _guard("record the session", lambda: self._end_session(run, int(exitstatus)), None)
        _guard("end the session run", self._session.close, None)
        if not _guard("flush pcs", lambda: pcs.flush(timeout=120), False):
            logger.warning("pcs pytest plugin: not every record reached the store within 120 s")

    def _end_session(self, run: pcs.Run, exitstatus: int) -> None:
        metrics = {f"pytest.{o}": float(self.counts.get(o, 0)) for o in OUTCOMES}
        # other plugins' categories too, e.g. pytest's "subtests passed" → pytest.subtests_passed
        metrics.update({"pytest." + "_".join(k.split()): float(v) for k, v in self.counts.items()})
        metrics["pytest.duration"] = time.perf_counter() - self._started
        run.log_metrics(metrics)
        run.set_tags({"pytest.exitstatus": str(exitstatus)})
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            run.end("KILLED")
        elif exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            run.end("FAILED")

    # -- tests ---------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        record = _TestRecord(item.nodeid)
        tags = {"pytest.nodeid": _clip(item.nodeid), "pytest.path": _clip(str(item.path))}
        stack = contextlib.ExitStack()
        block = pcs.run(item.nodeid, experiment_id=self._experiment_id, tags=tags)
        run = _guard("start the test's run", lambda: stack.enter_context(block), None)
        if run is not None:
            item.stash[RUN_KEY] = run
        self._current = record
        try:
            result = yield
        except BaseException as exc:  # interrupted: the run ends KILLED or FAILED, exc unchanged
            self._current = None
            end = functools.partial(stack.__exit__, type(exc), exc, exc.__traceback__)
            _guard("end the test's run", end, None)
            raise
        self._current = None
        if run is not None:
            _guard("record the test", lambda: self._end_test(run, record), None)
        _guard("end the test's run", stack.close, None)
        return result

    def _end_test(self, run: pcs.Run, record: _TestRecord) -> None:
        tags = {"pytest.outcome": record.outcome}
        if record.when:
            tags["pytest.when"] = record.when
        if record.reason:
            tags["pytest.reason"] = _clip(record.reason)
        run.set_tags(tags)
        metrics = {"pytest.duration": sum(record.durations.values())}
        metrics.update({f"pytest.duration.{k}": v for k, v in record.durations.items()})
        run.log_metrics(metrics)
        if record.failures:
            run.log_text("\n".join(record.failures), FAILURE_ARTIFACT)
        if record.outcome in FAILED_OUTCOMES:
            run.end("FAILED")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        category = _guard("classify a report", lambda: self._category(report), "")
        if category:
            self.counts[category] += 1
        record = self._current
        if record is not None and record.nodeid == report.nodeid:
            record.add(report, category)

    def _category(self, report: pytest.TestReport) -> str:
        status = self.config.hook.pytest_report_teststatus(report=report, config=self.config)
        category = status[0] if status else ""
        return str(category) if category else ""

