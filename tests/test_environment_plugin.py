"""The first-party environment plugin (plugins/pcs_environment): what top-level runs get."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pcs_environment
import pytest
from mlflow.tracking import MlflowClient

import pcs
import pcs.plugins

ENV_TAGS = {
    "pcs.env.python.version", "pcs.env.python.implementation", "pcs.env.platform",
    "pcs.env.hostname", "pcs.env.pid", "pcs.env.argv", "pcs.env.distributions_sha256",
    "mlflow.source.name", "mlflow.source.type",
}


@pcs.tracked
def square(x: int) -> int:
    return x * x


def test_the_plugin_is_installed_through_its_entry_point() -> None:
    found = {p.name: p for p in pcs.plugins.list_plugins()}
    assert found["environment"].plugin is pcs_environment
    assert found["environment"].distribution is not None


def test_top_level_runs_get_the_environment_and_nested_runs_do_not() -> None:
    with pcs.run("top") as top:
        with pcs.run("nested") as nested:
            square(3)
        call = pcs.last_run()
    square(4)
    top_call = pcs.last_run()
    assert call is not None
    assert top_call is not None
    assert pcs.flush(60)
    client = MlflowClient()  # the stock client reads what pcs wrote
    tags = client.get_run(top.identifier).data.tags
    assert set(tags) >= ENV_TAGS
    assert tags["pcs.env.python.version"] == platform.python_version()
    assert tags["pcs.env.pid"] == str(os.getpid())
    assert tags["mlflow.source.type"] == "LOCAL"
    assert len(json.loads(tags["pcs.env.argv"])) == len(sys.argv)
    brief = {"mlflow.source.name", "mlflow.source.type", "pcs.env.pid",
             "pcs.env.distributions_sha256", "pcs.env.run"}
    assert set(client.get_run(top_call.identifier).data.tags) >= brief  # top-level call
    for run in (nested, call):
        assert not {t for t in client.get_run(run.identifier).data.tags
                    if t.startswith(("pcs.env.", "mlflow.source."))}
    listing, digest = pcs_environment.distributions()
    assert tags["pcs.env.distributions_sha256"] == digest
    path = client.download_artifacts(top.identifier, pcs_environment.DISTRIBUTIONS_ARTIFACT)
    data = Path(path).read_bytes()
    assert data == listing
    assert b"pcs==" in data.lower()
    assert b"mlflow-skinny==" in data.lower()
    # later top-level runs carry the digest and point at the run holding the listing
    later = client.get_run(top_call.identifier)
    assert later.data.tags["pcs.env.distributions_sha256"] == digest
    assert later.data.tags["pcs.env.run"] == top.identifier
    assert "pcs.env.argv" not in later.data.tags  # the rest is on the first run
    assert pcs_environment.DISTRIBUTIONS_ARTIFACT not in {
        a.path for a in client.list_artifacts(top_call.identifier, "pcs.environment")
    }


def test_secrets_in_argv_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", "--password", "pw-1", "--api-key=k-2",
                                      "postgres://u:pw-3@h/db", "--lr", "0.1"])
    text = pcs_environment._argv_text()
    assert not any(s in text for s in ("pw-1", "k-2", "pw-3"))
    assert json.loads(text) == ["train.py", "--password", "<redacted>", "--api-key=<redacted>",
                                "<redacted>", "--lr", "0.1"]


SCRIPT = """
import pcs
with pcs.run("top") as run:
    pass
pcs.flush()
print(run.identifier)
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()


@pytest.mark.slow
def test_git_and_source_tags_and_a_stable_digest_across_processes(
    tmp_path: Path, tracking_uri: str
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "job.py").write_text(SCRIPT)
    _git(repo, "add", "job.py")
    _git(repo, "commit", "-q", "-m", "job")
    commit = _git(repo, "rev-parse", "HEAD")
    run_ids = []
    for edit in ("", "# edited\n"):
        if edit:
            (repo / "job.py").write_text(SCRIPT + edit)
        done = subprocess.run([sys.executable, "job.py", "--seed", "3"], cwd=repo,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        run_ids.append(done.stdout.split()[-1])
    client = MlflowClient(tracking_uri)
    clean, dirty = (client.get_run(r).data.tags for r in run_ids)
    for tags in (clean, dirty):
        assert tags["mlflow.source.git.commit"] == commit == tags["pcs.env.git.commit"]
        assert tags["mlflow.source.git.branch"] == "main"
        assert tags["mlflow.source.name"] == str(repo / "job.py")
        assert tags["mlflow.source.type"] == "LOCAL"
        assert json.loads(tags["pcs.env.argv"]) == ["job.py", "--seed", "3"]
    assert clean["pcs.env.git.dirty"] == "false"
    assert dirty["pcs.env.git.dirty"] == "true"
    assert clean["pcs.env.git.diff_sha256"] != dirty["pcs.env.git.diff_sha256"]
    assert clean["pcs.env.pid"] != dirty["pcs.env.pid"]
    # the same installation gives the same digest in every process
    digest = pcs_environment.distributions()[1]
    assert clean["pcs.env.distributions_sha256"] == dirty["pcs.env.distributions_sha256"] == digest


def test_outside_a_work_tree_there_are_no_git_tags(tmp_path: Path) -> None:
    assert pcs_environment._git(tmp_path) == {}  # tmp_path is not in a repository


def _fake_distribution(folder: Path, name: str, version: str) -> Path:
    """A distribution importlib.metadata finds on ``folder`` (as if installed there)."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"  # as pip names it
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


DIGEST = """
import pcs_environment
print(pcs_environment.distributions()[1])
"""


def test_the_digest_changes_when_a_distribution_is_installed(tmp_path: Path) -> None:
    extra = _fake_distribution(tmp_path / "site", "pcs-fake-dist", "1.0")

    def digest(path: str) -> str:
        env = {**os.environ, "PYTHONPATH": path}
        return subprocess.run([sys.executable, "-c", DIGEST], env=env, capture_output=True,
                              text=True, timeout=120, check=True).stdout.strip()

    plain = digest("")
    assert digest("") == plain  # stable
    assert digest(str(extra)) != plain


RECORDED = """
import sys
sys.path.insert(0, {code!r})
import pcs
from pcs_drift_job import double
double(21)
pcs.flush()
print(pcs.last_run().identifier)
"""

JOB = """
import pcs

@pcs.tracked
def double(x: int) -> int:
    return 2 * x
"""


@pytest.mark.slow
def test_replay_notes_the_environment_drift(
    tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "pcs_drift_job.py").write_text(JOB)
    extra = _fake_distribution(tmp_path / "site", "pcs-fake-dist", "1.0")
    env = {**os.environ, "PYTHONPATH": str(extra), "MLFLOW_TRACKING_URI": tracking_uri}
    done = subprocess.run([sys.executable, "-c", RECORDED.format(code=str(code))], env=env,
                          capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[-1]
    monkeypatch.syspath_prepend(str(code))
    original = pcs.Run.from_existing_run_id(run_id)
    assert isinstance(original, pcs.ComponentRun)
    try:
        new = original.rerun()
    finally:
        sys.modules.pop("pcs_drift_job", None)
    assert new.return_value == 42
    assert pcs.flush(60)
    client = MlflowClient(tracking_uri)
    assert client.get_run(new.identifier).data.tags["pcs.environment_drift"] == "True"
    folder = client.download_artifacts(new.identifier, "pcs.environment_drift.txt",
                                       str(tmp_path / "out"))
    text = Path(folder).read_text()
    assert "pcs-fake-dist 1.0 recorded, not installed now" in text
    # the same environment: no drift noted
    again = new.rerun()
    assert pcs.flush(60)
    assert "pcs.environment_drift" not in client.get_run(again.identifier).data.tags
