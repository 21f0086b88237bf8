"""The ``pcs`` command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
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
    result = CliRunner().invoke(_build(), ["recover"])
    assert result.exit_code == 0, result.output
    assert "recovered 1 journal(s)" in result.output
    assert f"KILLED {run_id}" in result.output
    assert client.get_run(run_id).info.status == "KILLED"


def test_status_lists_runs() -> None:
    with pcs.run("listed") as run:
        pass
    result = CliRunner().invoke(_build(), ["status"])
    assert result.exit_code == 0
    assert run.identifier in result.output
