"""A program's first tracked call: the store is named without importing MLflow.

Importing MLflow takes a second or more; a program's first tracked call
used to pay for it just to learn the tracking URI. pcs now works the URI out
by MLflow's own rule (``MLFLOW_TRACKING_URI``, else the default store in the
working directory) and leaves MLflow's import to delivery: with the delivery
agent the program never imports MLflow at all. These tests compare pcs's
answer with MLflow's in every case of the rule, and check a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking._tracking_service import utils as mlflow_uri_utils

from pcs._store import uri as store_uri


def _mlflow_says(monkeypatch: pytest.MonkeyPatch, env: str | None) -> str:
    monkeypatch.setattr(mlflow_uri_utils, "_tracking_uri", None)
    if env is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    return store_uri.absolute_uri(mlflow_uri_utils.get_tracking_uri())


def _pcs_says(env: str | None) -> str | None:
    found = store_uri._resolved_without_mlflow(env)
    return None if found is None else store_uri.absolute_uri(found)


@pytest.mark.parametrize("env", [
    None,
    "sqlite:///relative.db",
    "sqlite:////tmp/absolute.db",
    "relative-folder",
    "file:///tmp/store",
    "http://127.0.0.1:5999",
])
def test_the_uri_is_mlflows_without_mlflow(
    env: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "a folder with spaces & signs"
    folder.mkdir()
    monkeypatch.chdir(folder)
    expected = _mlflow_says(monkeypatch, env)
    assert _pcs_says(env) == expected


def test_an_existing_file_store_stays_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns" / "0").mkdir(parents=True)
    # a folder of numbered experiments without meta.yaml is not a file store yet
    assert _pcs_says(None) == _mlflow_says(monkeypatch, None)
    assert _pcs_says(None).startswith("sqlite:///")
    (tmp_path / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")
    assert _pcs_says(None) == _mlflow_says(monkeypatch, None)
    assert _pcs_says(None).startswith("file:///")


def test_the_default_follows_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(mlflow_uri_utils, "_tracking_uri", None)
    seen = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        seen.append(store_uri.current_tracking_uri())
    assert seen == [f"sqlite:///{tmp_path}/one/mlflow.db", f"sqlite:///{tmp_path}/two/mlflow.db"]


def test_set_tracking_uri_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setattr(mlflow_uri_utils, "_tracking_uri", f"sqlite:///{tmp_path}/set.db")
    assert store_uri.current_tracking_uri() == f"sqlite:///{tmp_path}/set.db"


def test_an_unreadable_mlflow_version_asks_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_uri, "_sqlite_default", None)
    monkeypatch.setattr(store_uri, "_MLFLOW_VERSION", store_uri.re.compile("no such line"))
    assert store_uri._resolved_without_mlflow(None) is None
    assert store_uri._resolved_without_mlflow("sqlite:///x.db") == "sqlite:///x.db"


FIRST_CALL = """
import json, sys, time
import pcs

@pcs.tracked
def double(x):
    return 2 * x

started = time.perf_counter()
result = double(21)
first_ms = (time.perf_counter() - started) * 1000
imported = "mlflow" in sys.modules
pcs.flush()
print(json.dumps({"result": result, "mlflow_imported_by_the_call": imported,
                  "first_ms": first_ms}))
"""


@pytest.mark.parametrize("env_uri", [False, True])
def test_with_the_agent_the_program_never_imports_mlflow(tmp_path: Path, env_uri: bool) -> None:
    env = {**os.environ, "PCS_DELIVERY": "agent", "PCS_AGENT_IDLE_SECONDS": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if env_uri:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/named.db"
    done = subprocess.run([sys.executable, "-c", FIRST_CALL], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["result"] == 42
    assert report["mlflow_imported_by_the_call"] is False
    # and the run is in the store MLflow would have chosen
    import sqlite3

    db = tmp_path / ("named.db" if env_uri else "mlflow.db")
    with sqlite3.connect(db) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM runs")]
    assert names == ["double(x=21)"]


SHORT_PROGRAM = """
import pcs

@pcs.tracked
def double(x):
    return 2 * x

double(21)
"""


@pytest.mark.parametrize("delivery", ["thread", "agent"])
def test_a_program_that_ends_right_after_its_first_call_delivers_it(
    tmp_path: Path, delivery: str
) -> None:
    """The writer thread imports MLflow while the program may already be exiting (no flush):
    the run still arrives, and the exit does not hang."""
    env = {**os.environ, "PCS_DELIVERY": delivery, "PCS_AGENT_IDLE_SECONDS": "2",
           "PCS_EXIT_WAIT": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-c", SHORT_PROGRAM], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "pcs:" not in done.stderr  # no warning: nothing failed, nothing left behind
    import sqlite3

    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        rows = list(conn.execute("SELECT name, status FROM runs"))
    assert rows == [("double(x=21)", "FINISHED")]
