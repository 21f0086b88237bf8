"""The ``pcs`` command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import pcs
from pcs.cli import _build


def test_recover_with_nothing_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(_build(), ["recover", "--journal-dir", str(tmp_path / "none")])
    assert result.exit_code == 0
    assert "recovered 0 journal(s)" in result.output


def test_recover_reaps_a_killed_process(client: MlflowClient, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import os, signal, pcs
        with pcs.run("killed") as r:
            print(r.identifier, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ),
                          capture_output=True, text=True, check=False)
    assert done.returncode == -signal.SIGKILL
    run_id = done.stdout.strip()
    died_ms = time.time() * 1000
    time.sleep(2.5)  # recovery comes later: the run's duration must not count this wait
    result = CliRunner().invoke(_build(), ["recover"])
    assert result.exit_code == 0, result.output
    assert "recovered 1 journal(s)" in result.output
    assert f"KILLED {run_id}" in result.output
    info = client.get_run(run_id).info
    assert info.status == "KILLED"
    assert info.start_time <= info.end_time <= died_ms + 500


def test_status_lists_runs() -> None:
    with pcs.run("listed") as run:
        pass
    result = CliRunner().invoke(_build(), ["status"])
    assert result.exit_code == 0
    assert run.identifier in result.output


# -- the commands of issue 13: runs, show, rerun, diff, export, import, ui ---------------------
import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402

import pytest  # noqa: E402

from pcs import cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PCS_SCRIPT = ROOT / ".venv" / "bin" / "pcs"

STEPS = '''
import pcs

@pcs.tracked
def fit(data: list, lr: float = 0.1) -> float:
    return sum(data) * lr

@pcs.tracked
def evaluate(score: float) -> dict:
    if score > 100:
        raise ValueError(f"score {score} is too high")
    return {"score": score}
'''

WORKFLOW = '''
import time, pcs
from steps import fit, evaluate

with pcs.run("study") as study:
    for lr in (0.1, 0.5):
        time.sleep(0.002)
        score = fit([1, 2, 3], lr=lr)
        time.sleep(0.002)  # runs started in the same millisecond have no defined order
        evaluate(score)
    time.sleep(0.002)
    try:
        evaluate(1000.0)
    except ValueError:
        pass
pcs.flush()
print(study.identifier)
'''


def _invoke(*args: str, env: dict[str, str] | None = None) -> object:
    return CliRunner().invoke(cli._build(), list(args), env=env, catch_exceptions=False,
                              prog_name="pcs")


def _one_line_error(result: object) -> str:
    """The error a failed command printed: exactly one line on stderr, exit status 1."""
    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, lines
    assert lines[0].startswith("pcs: error: ")
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    return lines[0]


def _pcs(*args: str, cwd: Path, env: dict[str, str] | None = None,
         module: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pcs.cli"] if module else [str(PCS_SCRIPT)]
    return subprocess.run([*command, *args], cwd=cwd, env=env or dict(os.environ),
                          capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture
def workflow(tmp_path: Path) -> dict[str, str]:
    """A study run with two fit/evaluate pairs and a failing evaluate, recorded by a real
    program in tmp_path (its module importable from there, for rerun)."""
    (tmp_path / "steps.py").write_text(STEPS)
    (tmp_path / "workflow.py").write_text(WORKFLOW)
    done = subprocess.run([sys.executable, "workflow.py"], cwd=tmp_path, env=dict(os.environ),
                          capture_output=True, text=True, check=True, timeout=300)
    study = done.stdout.strip().splitlines()[-1]
    children = pcs.Run.from_existing_run_id(study).children()
    # run names are the qualified name plus telling arguments: fit(lr=0.5)
    assert [c.info.run_name.split("(")[0] for c in children] == (
        ["fit", "evaluate"] * 2 + ["evaluate"])
    return {"study": study, "fit1": children[0].identifier, "eval1": children[1].identifier,
            "fit2": children[2].identifier, "failed": children[4].identifier}


@pytest.mark.parametrize("command", ["runs", "status", "show", "rerun", "diff", "export",
                                     "import", "recover", "ui"])
def test_every_command_has_help(command: str) -> None:
    result = _invoke(command, "--help")
    assert result.exit_code == 0
    assert "Usage: pcs " + command in result.output


def test_runs_prints_the_tree_newest_first(workflow: dict[str, str]) -> None:
    time.sleep(0.002)
    with pcs.run("later"):
        pass
    pcs.flush()
    result = _invoke("runs")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[2] == "later"  # newest top-level run first
    assert "study" in lines[1]
    assert workflow["study"][-8:] in lines[1]
    nested = lines[2:7]
    assert [line.split()[0] for line in nested] == ["FINISHED"] * 4 + ["FAILED"]
    assert all(("├─" in line or "└─" in line) for line in nested)
    assert "└─ evaluate" in nested[-1]
    assert workflow["failed"][-8:] in nested[-1]
    only_failed = _invoke("runs", "--status", "failed").output
    assert only_failed.strip() == "no pcs runs in " + os.environ["MLFLOW_TRACKING_URI"] + \
        " matching the filters"
    limited = _invoke("runs", "--limit", "1").output.splitlines()
    assert len(limited) == 2
    assert "--limit 0 shows all" in limited[-1]


def test_runs_json(workflow: dict[str, str]) -> None:
    result = _invoke("runs", "--json", "--since", "1h")
    trees = json.loads(result.output)
    assert [t["id"] for t in trees] == [workflow["study"]]
    children = trees[0]["children"]
    assert [c["name"].split("(")[0] for c in children] == ["fit", "evaluate"] * 2 + ["evaluate"]
    assert children[-1]["status"] == "FAILED"
    assert children[0]["component_run"] is True
    assert json.loads(_invoke("runs", "--json", "--experiment", "0").output)[0]["id"] == \
        workflow["study"]


def test_show_a_tracked_call_by_prefix(workflow: dict[str, str]) -> None:
    result = _invoke("show", workflow["fit2"][-10:])
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"ComponentRun {workflow['fit2']}" in text
    assert "lr = 0.5" in text
    assert "data = [1, 2, 3]" in text
    assert "return value (json)\n  3.0" in text
    assert "qualname = fit" in text
    assert "source_sha256 = " in text
    assert "lineage" not in text
    report = json.loads(_invoke("show", workflow["failed"], "--json").output)
    assert report["status"] == "FAILED"
    assert report["arguments"] == {"score": 1000.0}
    assert report["error"]["message"] == "ValueError: score 1000.0 is too high"
    assert report["parent"] == workflow["study"]
    study = json.loads(_invoke("show", workflow["study"], "--json").output)
    assert [c["id"] for c in study["children"]][-1] == workflow["failed"]
    assert study["kind"] == "Run"
    assert "code" not in study
    assert "arguments" not in study


def test_show_errors_are_one_line(tmp_path: Path) -> None:
    ids = [pcs.Run(name=f"r{i}").identifier for i in range(17)]  # two share a first character
    pcs.flush()
    firsts = [i[0] for i in ids]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    assert "ambiguous" in _one_line_error(_invoke("show", shared))
    assert "No run id starts or ends with 'zzzz'" in _one_line_error(_invoke("show", "zzzz"))
    done = _pcs("show", shared, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "ambiguous" in done.stderr


def test_diff(workflow: dict[str, str]) -> None:
    result = _invoke("diff", workflow["fit1"], workflow["fit2"])
    assert result.exit_code == 0, result.output
    assert "fit.fit(lr): 0.1 -> 0.5" in result.output
    assert "code: same" in result.output
    data = json.loads(_invoke("diff", workflow["fit1"], workflow["fit2"], "--json").output)
    assert [row["what"] for row in data["arguments"]] == ["fit.fit(lr)"]
    assert data["return_value"][0]["right"] == "3.0"
    assert data["environment"] == []
    error = _one_line_error(_invoke("diff", workflow["fit1"], "zz"))
    assert "No run id starts or ends with" in error


def test_rerun_through_real_processes(workflow: dict[str, str], tmp_path: Path) -> None:
    done = _pcs("rerun", workflow["fit2"][-12:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "reproduced: True" in done.stdout
    assert "FINISHED" in done.stdout
    data = json.loads(_pcs("rerun", workflow["fit1"], "--json", cwd=tmp_path,
                           module=True).stdout)
    assert data["status"] == "FINISHED"
    assert data["reproduced"] == "True"
    assert pcs.Run.from_existing_run_id(data["run"]).data.tags["pcs.rerun_of"] == \
        workflow["fit1"]
    (tmp_path / "steps.py").write_text(STEPS.replace("sum(data) * lr", "sum(data) * lr * 2"))
    refused = _pcs("rerun", workflow["fit2"], cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("pcs: error: ")
    assert "Traceback" not in refused.stderr
    allowed = _pcs("rerun", workflow["fit2"], "--allow-code-drift", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert "reproduced: False" in allowed.stdout
    block = _pcs("rerun", workflow["study"], cwd=tmp_path)
    assert block.returncode == 1
    assert "not a tracked call" in block.stderr


def test_export_then_import_into_a_second_store(
    workflow: dict[str, str], tmp_path: Path, template_store: Path
) -> None:
    out = tmp_path / "runs.yaml"
    exported = _pcs("export", workflow["study"][-8:], "-o", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "exported 6 run(s)" in exported.stdout
    assert "exporting" in exported.stderr  # more than a few runs: a progress bar
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    shutil.copyfile(template_store, second_dir / "mlflow.db")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{second_dir / 'mlflow.db'}"}
    result = _invoke("import", str(out), "--experiment", "imported", "--json", env=env)
    assert result.exit_code == 0, result.output
    mapping = json.loads(result.output)
    assert set(mapping) == {workflow["study"], *(c.identifier for c in
                                                 pcs.Run.from_existing_run_id(
                                                     workflow["study"]).children())}
    trees = json.loads(_invoke("runs", "--json", "-e", "imported", env=env).output)
    assert [t["id"] for t in trees] == [mapping[workflow["study"]]]
    assert len(trees[0]["children"]) == 5
    again = _invoke("import", str(out), "--experiment", "imported", env=env)
    assert again.exit_code == 0
    assert "imported 6 run(s)" in again.output
    assert "importing" in again.stderr  # more than a few runs: a progress bar
    assert len(json.loads(_invoke("runs", "--json", "-e", "imported", env=env).output)) == 1


def test_import_and_export_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: [\n")
    assert "bad.yaml" in _one_line_error(_invoke("import", str(bad)))
    assert "missing.yaml" in _one_line_error(_invoke("import", str(tmp_path / "missing.yaml")))
    assert "No run id starts or ends with" in _one_line_error(
        _invoke("export", "abcdef", "-o", str(tmp_path / "x.yaml")))
    done = _pcs("import", str(bad), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("pcs: error: ")
    assert "Traceback" not in done.stderr


def test_unreachable_store(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    line = _one_line_error(_invoke("runs", env=env))
    assert "unreachable" in line
    missing = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"}
    assert "no MLflow store" in _one_line_error(_invoke("show", "abc", env=missing))
    done = _pcs("runs", cwd=tmp_path, env={**os.environ, **env})
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "unreachable" in done.stderr


def test_recover_prints_its_summary_once(tmp_path: Path) -> None:
    code = "import os, signal, pcs\nwith pcs.run('k'):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    env = {**os.environ, "PCS_AUTO_RECOVER": "0"}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=False)
    done = _pcs("recover", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    both = done.stdout + done.stderr
    assert both.count("recovered 1 journal(s)") == 1, both


def test_ui_without_the_server_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "server_available", lambda: False)
    line = _one_line_error(_invoke("ui"))
    assert "pip install 'pcs[server]'" in line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(not cli.server_available(), reason="the full mlflow package is not installed")
def test_ui_serves_the_runs_page(tmp_path: Path) -> None:
    import urllib.request

    with pcs.run("shown", experiment="ui-study") as run:
        pass
    pcs.flush()
    port = _free_port()
    proc = subprocess.Popen(
        [str(PCS_SCRIPT), "ui", "--port", str(port), "-e", "ui-study"], cwd=tmp_path,
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        url = f"http://127.0.0.1:{port}/#/experiments/{run.experiment_id}/runs"
        assert lines[1].strip() == f"runs page: {url}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow ui did not start in 120 s"
                time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.slow
def test_runs_on_20000_runs(capsys: pytest.CaptureFixture[str]) -> None:
    @pcs.tracked
    def step(i: int) -> int:
        return i

    for i in range(20_000):
        step(i)
    assert pcs.flush(timeout=600)
    timings = {}
    for args in (["runs"], ["runs", "--limit", "0"]):
        began = time.perf_counter()
        result = _invoke(*args)
        timings[" ".join(args)] = time.perf_counter() - began
        assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == 20_000
    assert all(line.startswith("FINISHED") for line in lines)
    with capsys.disabled():
        print("\n`pcs runs` on 20,000 runs (in process, MLflow imported): "
              + ", ".join(f"{k}: {v:.2f} s" for k, v in timings.items()))
