"""Helpers for the replay and portability tests: tracked code in real, temporary modules.

Replay imports the recorded callable by ``module:qualname``, so the tests
write their tracked code into module files on ``sys.path`` (unique names,
no bytecode caches, removed from ``sys.modules`` afterwards) and edit or
delete those files to simulate code drift.
"""

from __future__ import annotations

import importlib
import linecache
import shutil
import sqlite3
import sys
import textwrap
import uuid
from pathlib import Path
from types import ModuleType

import pytest


class CodeDir:
    """A folder of temporary modules on ``sys.path``."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
        monkeypatch.syspath_prepend(str(folder))
        self.names: list[str] = []

    def write(self, source: str, prefix: str = "pcs_replay_mod") -> str:
        """Write a new module; return its (unique) name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        self.path(name).write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return name

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.py"

    def load(self, name: str) -> ModuleType:
        return importlib.import_module(name)

    def rewrite(self, name: str, source: str) -> None:
        """Replace a module's source; the next import sees the new code."""
        self.path(name).write_text(textwrap.dedent(source))
        self.forget(name)

    def delete(self, name: str) -> None:
        self.path(name).unlink()
        self.forget(name)

    def forget(self, name: str) -> None:
        sys.modules.pop(name, None)
        linecache.checkcache()
        importlib.invalidate_caches()

    def cleanup(self) -> None:
        for name in self.names:
            sys.modules.pop(name, None)


def make_store(template: Path, folder: Path) -> str:
    """A fresh SQLite tracking store (a copy of the session template) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    shutil.copyfile(template, db)
    with sqlite3.connect(db) as con:
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            ((folder / "mlruns" / "0").as_uri(),),
        )
    con.close()
    return f"sqlite:///{db}"
