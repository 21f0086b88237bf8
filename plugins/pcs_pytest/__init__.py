"""pcs for pytest: the test session as a pcs run, each test as a nested run.

Activated by ``pytest --pcs`` or the environment variable ``PCS_PYTEST=1``;
without either the plugin does nothing at all (no store is touched). Installed
with pcs and registered through pytest's ``pytest11`` entry point ``pcs_pytest``
(``-p no:pcs_pytest`` turns it off entirely).

What is recorded (read with stock MLflow):

* the session: one run named ``pytest session`` (``pytest worker gwN`` for a
  pytest-xdist worker, nested under the controller's session run) with
  metrics ``pytest.<outcome>`` counting what pytest's own summary counts;
* each test: one run named after its node id, nested under the session run,
  with tags ``pytest.nodeid`` and ``pytest.outcome`` (``passed``, ``failed``,
  ``skipped``, ``xfailed``, ``xpassed``, ``error``), metric
  ``pytest.duration`` (seconds), status FAILED for ``failed`` and ``error``
  (FINISHED otherwise) and, when it failed, the failure text as the artifact
  ``pytest.failure.txt``. Tracked calls and ``pcs.run`` blocks inside the test
  and its fixtures nest under the test's run; the ``pcs_run`` fixture is it.

Only public pcs names are used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from pcs_pytest._keys import RUN_KEY

if TYPE_CHECKING:
    import pcs

__all__ = ["ENV_VAR", "PLUGIN_NAME", "RUN_KEY", "enabled", "pcs_run"]

#: Environment variable that turns the plugin on like ``--pcs`` (``1``, ``true``, ``yes``, ``on``).
ENV_VAR = "PCS_PYTEST"
#: Name under which the active tracker is registered with pytest's plugin manager.
PLUGIN_NAME = "pcs-tracker"
_TRUE = frozenset({"1", "true", "yes", "on"})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pcs", "pcs run tracking (MLflow)")
    group.addoption(
        "--pcs",
        action="store_true",
        default=False,
        help=f"record the session and every test as pcs runs in MLflow (also {ENV_VAR}=1).",
    )
    group.addoption(
        "--pcs-experiment",
        default=None,
        metavar="ID_OR_NAME",
        help="MLflow experiment (id, or name: created if missing) for the runs; "
        "default: MLflow's default experiment.",
    )


def enabled(config: pytest.Config) -> bool:
    """Whether ``--pcs`` was given or ``PCS_PYTEST`` is set to a true value."""
    if config.getoption("pcs", default=False):
        return True
    return os.environ.get(ENV_VAR, "").strip().lower() in _TRUE


def pytest_configure(config: pytest.Config) -> None:
    if enabled(config) and not config.pluginmanager.has_plugin(PLUGIN_NAME):
        from pcs_pytest._tracker import PcsTracker  # imports pcs: only when enabled

        config.pluginmanager.register(PcsTracker(config), PLUGIN_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    tracker = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if tracker is not None:
        config.pluginmanager.unregister(tracker, PLUGIN_NAME)


@pytest.fixture
def pcs_run(request: pytest.FixtureRequest) -> pcs.Run | pcs.UntrackedRun:
    """The pcs run of the current test.

    Without ``--pcs`` (or ``PCS_PYTEST=1``) it is a :class:`pcs.UntrackedRun`
    whose methods do nothing, so tests that log to it run either way.
    """
    run: pcs.Run | None = request.node.stash.get(RUN_KEY, None)
    if run is not None:
        return run
    import pcs

    return pcs.UntrackedRun(request.node.nodeid)
