"""pcs.settings: the one home of every PCS_* environment variable, and its documentation."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

import pcs
from pcs import _journal, _pools, _stack, _writer, replay, settings
from pcs.run import PARENT_WAIT_ENV, parent_wait_seconds

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "settings.rst"
#: Python names in pcs that start with PCS_ but are not environment variables
NOT_SETTINGS = {"PCS_RUN_TAG"}


def _documented_block() -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"\.\. settings-list-start\n\n(.*?)\.\. settings-list-end", text, re.S)
    assert match, f"{DOC} lost its '.. settings-list-start' / '.. settings-list-end' markers"
    return match[1]


def _expected_block() -> str:
    return "\n".join(
        f"``{s.name}`` (default: {s.shown_default})\n    {s.doc}\n    Accepts {s.accepts}.\n"
        for s in settings.ALL
    )


def test_docs_list_every_setting_with_its_default() -> None:
    expected = _expected_block()
    assert _documented_block().strip() == expected.strip(), (
        f"docs/settings.rst does not match pcs/settings.py; paste this between the "
        f"settings-list markers:\n\n{expected}"
    )
    for setting in settings.ALL:
        assert f"``{setting.name}`` (default: {setting.shown_default})" in expected


def test_every_pcs_variable_in_the_source_is_defined_in_settings() -> None:
    defined = {s.name for s in settings.ALL}
    used: dict[str, set[str]] = {}
    for path in (ROOT / "pcs").rglob("*.py"):
        for name in re.findall(r"\bPCS_[A-Z0-9_]+\b", path.read_text(encoding="utf-8")):
            used.setdefault(name, set()).add(path.name)
    undefined = {n: sorted(f) for n, f in used.items() if n not in defined | NOT_SETTINGS}
    assert not undefined, f"PCS_* names in pcs/ but not in pcs/settings.py: {undefined}"
    assert set(used) >= defined  # each setting is read (or at least named) somewhere


def test_names_are_unique_and_documented_once() -> None:
    names = [s.name for s in settings.ALL]
    assert len(names) == len(set(names))
    assert all(n.startswith("PCS_") for n in names)
    assert {n for n in dir(settings) if isinstance(getattr(settings, n), settings.Setting)} == {
        n for n in settings.__all__ if isinstance(getattr(settings, n), settings.Setting)
    }
    assert len([n for n in dir(settings) if isinstance(getattr(settings, n), settings.Setting)]) \
        == len(settings.ALL)


def test_old_names_still_point_at_the_settings() -> None:
    assert _journal.JOURNAL_DIR_ENV == settings.JOURNAL_DIR.name == "PCS_JOURNAL_DIR"
    assert replay.ALLOWED_MODULES_ENV == "PCS_REPLAY_ALLOWED_MODULES"
    assert PARENT_WAIT_ENV == "PCS_PARENT_WAIT_SECONDS"
    assert _pools.INSTRUMENT_ENV == "PCS_INSTRUMENT_POOLS"
    assert (_stack.PARENT_ENV, _stack.PARENT_URI_ENV, _stack.PARENT_EXPERIMENT_ENV) == (
        "PCS_PARENT_RUN_ID", "PCS_PARENT_TRACKING_URI", "PCS_PARENT_EXPERIMENT_ID")
    assert _writer.STALL == 10.0


def test_defaults_when_unset_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in settings.ALL:
        monkeypatch.delenv(setting.name, raising=False)
        assert setting.get() == setting.default
        monkeypatch.setenv(setting.name, "")
        assert setting.get() == setting.default
    assert settings.EXIT_FLUSH_TIMEOUT.get() == 60.0
    assert settings.READ_TIMEOUT.get() == 30.0
    assert settings.FORK_WAIT_SECONDS.get() == 10.0
    assert parent_wait_seconds() == 30.0
    assert _journal.default_directory() == Path.cwd() / ".pcs" / "journal"


def test_read_at_call_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PCS_READ_TIMEOUT", "2.5")
    assert settings.READ_TIMEOUT.get() == 2.5
    monkeypatch.setenv("PCS_READ_TIMEOUT", "-3")
    assert settings.READ_TIMEOUT.get() == 0.0
    monkeypatch.setenv("PCS_EXIT_FLUSH_TIMEOUT", "7")
    assert settings.EXIT_FLUSH_TIMEOUT.get() == 7.0
    monkeypatch.setenv("PCS_JOURNAL_DIR", str(tmp_path))
    assert _journal.default_directory() == tmp_path
    monkeypatch.setenv("PCS_SQLITE_BUSY_TIMEOUT_MS", "50")
    assert settings.SQLITE_BUSY_TIMEOUT_MS.get() == 50
    monkeypatch.setenv("PCS_REPLAY_ALLOWED_MODULES", " a.b , ,c ")
    assert settings.REPLAY_ALLOWED_MODULES.get() == ("a.b", "c")


@pytest.mark.parametrize(("value", "expected"), [
    ("0", False), ("false", False), (" OFF ", False), ("no", False),
    ("1", True), ("true", True), ("Yes", True), ("on", True),
])
def test_switches(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    for setting in (settings.JOURNAL, settings.AUTO_RECOVER, settings.HANDLE_SIGTERM,
                    settings.INSTRUMENT_POOLS):
        monkeypatch.setenv(setting.name, value)
        assert setting.get() is expected


@pytest.mark.parametrize(("setting", "bad"), [
    (settings.READ_TIMEOUT, "soon"),
    (settings.EXIT_FLUSH_TIMEOUT, "nan"),
    (settings.SQLITE_BUSY_TIMEOUT_MS, "1.5"),
    (settings.JOURNAL, "maybe"),
])
def test_invalid_value_warns_once_and_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    setting: settings.Setting[object], bad: str,
) -> None:
    monkeypatch.setattr(settings, "_warned", set())
    monkeypatch.setenv(setting.name, bad)
    with caplog.at_level(logging.WARNING, logger="pcs"):
        assert setting.get() == setting.default
        assert setting.get() == setting.default
    warnings = [r.getMessage() for r in caplog.records if r.name == "pcs"]
    assert len(warnings) == 1, warnings
    assert setting.name in warnings[0]
    assert repr(bad) in warnings[0]
    assert setting.accepts in warnings[0]


def test_check_raises_usage_error_naming_variable_value_and_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for setting in settings.ALL:
        monkeypatch.delenv(setting.name, raising=False)
    settings.check()
    monkeypatch.setenv("PCS_STALL_SECONDS", "ten")
    monkeypatch.setenv("PCS_HANDLE_SIGTERM", "nope")
    with pytest.raises(pcs.UsageError) as info:
        settings.check()
    message = str(info.value)
    assert isinstance(info.value, pcs.PcsError)
    assert "PCS_STALL_SECONDS='ten'" in message
    assert settings.STALL_SECONDS.accepts in message
    assert "PCS_HANDLE_SIGTERM='nope'" in message
    assert settings.HANDLE_SIGTERM.accepts in message


def test_settings_imports_nothing_else_from_pcs() -> None:
    source = (ROOT / "pcs" / "settings.py").read_text(encoding="utf-8")
    imported = set(re.findall(r"^\s*(?:from|import) (pcs[\w.]*)", source, re.M))
    assert imported <= {"pcs.exceptions"}, imported
