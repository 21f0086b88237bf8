"""pcs.plugins and pcs.hookspecs: the hooks' order and arguments, isolation of failing
plugins, redaction by a plugin (failing closed), PCS_DISABLE_PLUGINS, entry points."""

from __future__ import annotations

import fractions
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pcs
import pcs.plugins
from pcs.hookspecs import hookimpl

Register = Callable[..., "str | None"]


@pytest.fixture
def plugins() -> Iterator[Register]:
    """``plugins(obj, name)`` registers a plugin for this test only."""
    names: list[str] = []

    def register(plugin: object, name: str | None = None) -> str | None:
        registered = pcs.plugins.register(plugin, name)
        if registered is not None:
            names.append(registered)
        return registered

    yield register
    for name in names:
        pcs.plugins.unregister(name)


class Recorder:
    """Records every hook call as a tuple."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    @hookimpl
    def pcs_run_started(self, run: pcs.Run) -> None:
        self.events.append(("started", run))

    @hookimpl
    def pcs_collect_environment(self, run: pcs.Run) -> dict[str, Any]:
        self.events.append(("environment", run))
        return {"tags": {"rec.tag": 1}, "params": {"rec.param": "p"},
                "artifacts": {"rec/env.txt": b"recorded"}}

    @hookimpl
    def pcs_arguments_captured(self, run: pcs.Run | None, name: str,
                               arguments: dict[str, Any]) -> None:
        self.events.append(("arguments", run, name, dict(arguments)))

    @hookimpl
    def pcs_run_ended(self, run: pcs.Run, status: str, error: BaseException | None) -> None:
        self.events.append(("ended", run, status, error))


@pcs.tracked
def add(a: int, b: int) -> int:
    return a + b


@pcs.tracked
def fails(x: int) -> None:
    raise ValueError(x)


@pcs.tracked
def login(user: str, note: str) -> int:
    return len(user) + len(note)


def test_hooks_are_called_in_order_with_their_arguments(plugins: Register) -> None:
    rec = Recorder()
    assert plugins(rec, "rec") == "rec"
    with pcs.run("outer") as outer:
        assert add(1, 2) == 3
    inner = pcs.last_run()
    assert [e[0] for e in rec.events] == [
        "started", "environment", "arguments", "started", "ended", "ended",
    ]
    assert rec.events[0] == ("started", outer)
    assert rec.events[1] == ("environment", outer)  # top level only
    assert rec.events[2] == ("arguments", outer, "add", {"a": 1, "b": 2})
    call_run = rec.events[3][1]
    assert isinstance(call_run, pcs.ComponentRun)
    assert call_run is not outer
    assert rec.events[4] == ("ended", call_run, "FINISHED", None)
    assert rec.events[5] == ("ended", outer, "FINISHED", None)
    assert inner is outer

    rec.events.clear()
    with pytest.raises(ValueError) as raised:
        fails(7)  # a top-level tracked call: its run gets the environment too
    assert [e[0] for e in rec.events] == ["arguments", "started", "environment", "ended"]
    assert rec.events[0][1] is None  # no run around the call
    assert rec.events[3][2:] == ("FAILED", raised.value)

    # what pcs_collect_environment returned is on the top-level run, not on nested ones
    assert pcs.flush(60)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    data = client.get_run(outer.identifier).data
    assert data.tags["rec.tag"] == "1"
    assert data.params["rec.param"] == "p"
    assert [a.path for a in client.list_artifacts(outer.identifier, "rec")] == ["rec/env.txt"]
    assert "rec.tag" not in client.get_run(call_run.identifier).data.tags


def test_an_environment_answer_changed_in_place_is_recorded_as_changed(
    plugins: Register,
) -> None:
    """pcs checks a ``pcs_collect_environment`` answer once and reuses it while the plugin
    returns the same object unchanged (the hot path of a loop of top-level calls); the
    same object changed in place is checked and recorded anew."""
    answer: dict[str, Any] = {"tags": {"env.step": "0"}}

    class Same:
        @hookimpl
        def pcs_collect_environment(self, run: pcs.Run) -> dict[str, Any]:
            return answer

    plugins(Same(), "same")
    runs = []
    for step in range(4):
        if step >= 2:
            answer["tags"]["env.step"] = str(step)  # the same dict, changed
        with pcs.run(f"top-{step}") as run:
            runs.append(run.identifier)
    assert pcs.flush(60)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    seen = [client.get_run(run_id).data.tags.get("env.step") for run_id in runs]
    assert seen == ["0", "0", "2", "3"]


def test_a_raising_plugin_is_logged_once_and_changes_nothing(
    plugins: Register, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        @hookimpl
        def pcs_run_started(self, run: pcs.Run) -> None:
            raise RuntimeError("boom in started")

        @hookimpl
        def pcs_run_ended(self, run: pcs.Run, status: str) -> None:
            raise RuntimeError("boom in ended")

        @hookimpl
        def pcs_collect_environment(self, run: pcs.Run) -> object:
            return 42  # not a mapping

    rec = Recorder()
    plugins(rec, "rec")
    plugins(Broken(), "broken")
    caplog.set_level(logging.ERROR, logger="pcs")
    for i in range(3):
        assert add(i, 1) == i + 1
        with pcs.run("block"):
            pass
    with pytest.raises(ValueError):
        fails(1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    messages = sorted(r.getMessage() for r in errors)
    assert len(messages) == 3, messages  # one per plugin and hook
    for hook in ("pcs_run_started", "pcs_run_ended", "pcs_collect_environment"):
        assert sum("'broken'" in m and hook in m for m in messages) == 1
    # the other plugin saw everything
    assert sum(e[0] == "ended" for e in rec.events) == 7
    assert pcs.flush(60)


def _files_containing(root: Path, needles: list[str]) -> dict[str, list[str]]:
    assert pcs.flush(timeout=60)
    found: dict[str, list[str]] = {}
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files)
    assert any(".pcs" in p.parts for p in files)  # the journal is searched too
    for path in files:
        data = path.read_bytes()
        hits = [n for n in needles if n.encode() in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def test_a_redacting_plugin_keeps_the_value_out_of_every_file(
    plugins: Register, tmp_path: Path
) -> None:
    secret = "plugin-secret-7741"
    transformed_from = "long-value-0987"

    class Redactor:
        @hookimpl
        def pcs_arguments_captured(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
            if "note" in arguments:
                arguments["note"] = pcs.Secret(arguments["note"])
                return None
            return {k: (v.upper() if k == "label" else v) for k, v in arguments.items()}

    plugins(Redactor(), "redactor")

    @pcs.tracked
    def tag(label: str) -> str:
        return "ok"

    with pcs.run("outer"):
        assert login("alice", secret) == 5 + len(secret)  # the call saw the value
        run = pcs.last_run()
        assert tag(transformed_from) == "ok"
        tagged = pcs.last_run()
    assert isinstance(run, pcs.ComponentRun)
    assert isinstance(tagged, pcs.ComponentRun)
    assert _files_containing(tmp_path, [secret, transformed_from]) == {}
    assert run.data.params["arg.note"] == "<redacted>"
    assert run.data.params["arg.user"] == "alice"
    assert tagged.data.params["arg.label"] == transformed_from.upper()


def test_a_failing_redactor_fails_closed(
    plugins: Register, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "fail-closed-5521"

    class Failing:
        @hookimpl
        def pcs_arguments_captured(self, arguments: dict[str, Any]) -> None:
            raise RuntimeError("redactor broke")

    plugins(Failing(), "failing")
    caplog.set_level(logging.ERROR, logger="pcs")
    assert login("bob", secret) == 3 + len(secret)
    assert login("carol", secret) == 5 + len(secret)
    run = pcs.last_run()
    assert isinstance(run, pcs.ComponentRun)
    assert _files_containing(tmp_path, [secret, "carol"]) == {}
    assert run.data.params["arg.note"] == "<redacted>"
    assert run.data.params["arg.user"] == "<redacted>"
    assert run.info.status == "FINISHED"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "'failing'" in errors[0]
    assert "pcs_arguments_captured" in errors[0]
    assert "redacted" in errors[0]


def test_a_plugin_returning_no_mapping_fails_closed(plugins: Register, tmp_path: Path) -> None:
    class Wrong:
        @hookimpl
        def pcs_arguments_captured(self) -> object:
            return ["not", "a", "mapping"]

    plugins(Wrong(), "wrong")
    login("dave", "wrong-5512")
    assert _files_containing(tmp_path, ["wrong-5512", "dave"]) == {}


def test_the_fast_path_is_off_only_while_a_plugin_rewrites_arguments(plugins: Register) -> None:
    tracker = add.__pcs_tracked__  # type: ignore[attr-defined]
    add(1, 1)
    assert tracker.fast_names == ("a", "b")

    class Rewriter:
        @hookimpl
        def pcs_arguments_captured(self) -> None:
            return None

    plugins(Rewriter(), "rewriter")
    assert tracker.fast_names is None
    pcs.plugins.unregister("rewriter")
    assert tracker.fast_names == ("a", "b")


def test_register_encoders_is_called_once_per_plugin(plugins: Register) -> None:
    calls: list[object] = []

    class Enc:
        @hookimpl
        def pcs_register_encoders(self, registry: pcs.plugins.EncoderRegistry) -> None:
            calls.append(registry)
            registry.register(fractions.Fraction, name="test.fraction", version=1,
                              encode=lambda f: (f.numerator, f.denominator),
                              decode=lambda payload, version: fractions.Fraction(*payload))

    plugins(Enc(), "enc")
    add(1, 2)
    plugins(Recorder(), "rec")  # publishing again does not call it again
    assert len(calls) == 1
    assert isinstance(calls[0], pcs.canon.RegistryView)
    assert pcs.canon.extensions.names()["test.fraction"] == 1
    assert pcs.canon.encode(fractions.Fraction(1, 3))[:3] == ["x", "test.fraction", 1]
    pcs.plugins.unregister("enc")  # its extensions go with it
    assert "test.fraction" not in pcs.canon.extensions.names()
    assert pcs.canon.encode(fractions.Fraction(1, 3))[0] == "placeholder"


def test_register_refuses_duplicates_and_bad_hooks(plugins: Register) -> None:
    plugins(Recorder(), "rec")
    with pytest.raises(pcs.UsageError, match="unregister"):
        pcs.plugins.register(Recorder(), "rec")

    class Bad:
        @hookimpl
        def pcs_run_started(self, run: pcs.Run, unknown: int) -> None: ...

    with pytest.raises(pcs.UsageError, match=r"pcs\.hookspecs"):
        pcs.plugins.register(Bad(), "bad")
    names = [p.name for p in pcs.plugins.list_plugins()]
    assert "rec" in names
    assert "bad" not in names


@pytest.mark.parametrize("value", ["other, rec", "all"])
def test_pcs_disable_plugins_refuses_registration(
    plugins: Register, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PCS_DISABLE_PLUGINS", value)
    rec = Recorder()
    assert plugins(rec, "rec") is None
    add(1, 2)
    assert rec.events == []
    assert "rec" not in [p.name for p in pcs.plugins.list_plugins()]


# -- entry points, in fresh processes ---------------------------------------------------
DEMO = '''
from pcs.hookspecs import hookimpl

@hookimpl
def pcs_run_started(run):
    print("demo-started", flush=True)
'''

SCRIPT = '''
import json, sys
import pcs
loaded_early = "pluggy" in sys.modules or "pcs.plugins" in sys.modules
with pcs.run("top"):
    pass
import pcs.plugins
print(json.dumps({"early": loaded_early,
                  "plugins": {p.name: p.distribution for p in pcs.plugins.list_plugins()}}))
'''


@pytest.fixture
def demo_dist(tmp_path: Path) -> Path:
    """A throwaway distribution 'pcs-demo' with a ``pcs`` entry point ``demo``."""
    site = tmp_path / "site"
    (site / "pcs_demo-1.0.dist-info").mkdir(parents=True)
    (site / "pcs_demo.py").write_text(textwrap.dedent(DEMO))
    (site / "pcs_demo-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pcs-demo\nVersion: 1.0\n"
    )
    (site / "pcs_demo-1.0.dist-info" / "entry_points.txt").write_text(
        "[pcs]\ndemo = pcs_demo\n"
    )
    return site


def _run_script(site: Path, tmp_path: Path, disabled: str | None) -> tuple[list[str], dict]:
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("PCS_DISABLE_PLUGINS", None)
    if disabled is not None:
        env["PCS_DISABLE_PLUGINS"] = disabled
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return lines[:-1], json.loads(lines[-1])


@pytest.mark.slow
def test_entry_point_plugins_are_found_and_can_be_disabled(
    demo_dist: Path, tmp_path: Path
) -> None:
    printed, report = _run_script(demo_dist, tmp_path, None)
    assert report["early"] is False  # import pcs loads neither pluggy nor the plugins
    assert report["plugins"]["demo"] == "pcs-demo 1.0"
    assert report["plugins"]["environment"].startswith("pcs ")
    assert printed == ["demo-started"]

    printed, report = _run_script(demo_dist, tmp_path, "demo")
    assert printed == []
    assert "demo" not in report["plugins"]
    assert "environment" in report["plugins"]

    printed, report = _run_script(demo_dist, tmp_path, "all")
    assert printed == []
    assert report["plugins"] == {}
