"""pcs_environment: where and with what a top-level run ran, recorded on the run.

A first-party pcs plugin, installed with pcs and registered through the
``pcs`` entry-point group under the name ``environment`` (disable it with
``PCS_DISABLE_PLUGINS=environment``). It implements one hook,
``pcs_collect_environment``, so it records on **top-level runs only** (runs
without a parent):

* tags ``pcs.env.python.version``, ``pcs.env.python.implementation``,
  ``pcs.env.platform``, ``pcs.env.hostname``, ``pcs.env.pid``,
  ``pcs.env.argv`` (JSON; values that look like secrets are ``<redacted>``);
* with a git work tree: ``pcs.env.git.commit``, ``pcs.env.git.branch``,
  ``pcs.env.git.dirty`` (``true``/``false``; untracked files do not count)
  and ``pcs.env.git.diff_sha256`` (the SHA-256 of ``git diff HEAD``);
* the installed distributions: their SHA-256 as tag
  ``pcs.env.distributions_sha256`` and the listing itself (``name==version``
  per line, sorted) as artifact ``pcs.environment/distributions.txt``;
* MLflow's own ``mlflow.source.name``, ``mlflow.source.type`` (``LOCAL``),
  ``mlflow.source.git.commit`` and ``mlflow.source.git.branch``, so the
  MLflow UI shows the run's source.

It also implements ``pcs_environment_drift``: when a run is replayed, the
distributions recorded on its top-level run are compared with the installed
ones (``numpy 1.26.4 recorded, 2.1.0 now``; ``extra 1.0 not recorded,
installed now``), as is the Python version, and replay notes the
differences on the new run ("same code, different environment").

The first top-level run of a process in each store gets all of it. Later
top-level runs of that process get the ``mlflow.source.*`` tags, the pid, the
git commit and the distributions digest, and ``pcs.env.run``: the id of the
run holding the rest (so a loop of top-level calls stays cheap).

Everything but the pid is computed once per process (the first top-level
run pays it: two ``git`` commands and the header of each distribution's
metadata, tens of milliseconds) and reused: a change to the work
tree made while the process runs is not seen. Git is asked through the
``git`` command, with a short timeout, and only inside a work tree; nothing
here ever fails the run. It uses only pcs's public names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

from pcs import Run, redaction
from pcs.hookspecs import hookimpl

__all__ = ["DISTRIBUTIONS_ARTIFACT", "GIT_TIMEOUT", "distributions", "environment",
           "pcs_collect_environment", "pcs_environment_drift"]

#: the artifact listing the installed distributions
DISTRIBUTIONS_ARTIFACT = "pcs.environment/distributions.txt"
#: seconds each ``git`` command may take
GIT_TIMEOUT = 2.0
_log = logging.getLogger("pcs")
#: MLflow's limit on a tag value
_TAG_LIMIT = 8000

_lock = threading.Lock()
#: pid -> (tags, artifacts), computed once per process
_cache: dict[int, tuple[dict[str, str], dict[str, bytes]]] = {}
_distributions: tuple[bytes, str] | None = None
#: the tags every top-level run gets; the first one of the process in a store gets all
_BRIEF = frozenset({"mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit",
                    "mlflow.source.git.branch", "pcs.env.pid", "pcs.env.git.commit",
                    "pcs.env.distributions_sha256"})
#: (pid, store) -> the run that holds this process's full environment in that store
_listed: dict[tuple[int, str], str] = {}
#: (pid, store) -> what later top-level runs get (see pcs_collect_environment)
_later: dict[tuple[int, str], dict[str, Any]] = {}


def _renew_lock_in_child() -> None:
    """A forked child gets a fresh lock (the parent's may be held by a thread that is gone)."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_lock_in_child)


@hookimpl
def pcs_collect_environment(run: Any) -> dict[str, Any]:
    """The hook: the environment's tags, and the distributions listing on the first
    top-level run of this process in each store (later ones name that run in the tag
    ``pcs.env.run``: a loop of top-level calls does not store the same listing again
    and again)."""
    key = (os.getpid(), str(run.tracking_uri))
    later = _later.get(key)
    if later is not None:
        return later
    tags, artifacts = environment()
    with _lock:
        holder = _listed.setdefault(key, str(run.identifier))
    if holder == run.identifier:
        return {"tags": tags, "artifacts": artifacts}
    # Later top-level runs of the process: what the MLflow UI shows, the digests, and
    # the run that holds the rest (a loop of top-level calls stays cheap: the same
    # answer every time, which pcs checks once).
    brief = {k: v for k, v in tags.items() if k in _BRIEF}
    brief["pcs.env.run"] = holder
    return _later.setdefault(key, {"tags": brief, "artifacts": {}})  # one answer, any thread


@hookimpl
def pcs_environment_drift(run: Any) -> list[str]:
    """The hook: the recorded distributions and Python version of ``run``'s top-level run,
    against this process's (nothing when the run was recorded without this plugin)."""
    root = _top_level(run)
    tags = dict(root.data.tags)
    recorded_digest = tags.get("pcs.env.distributions_sha256")
    if recorded_digest is None:
        return []
    holder = root
    if tags.get("pcs.env.run"):
        holder = Run.from_existing_run_id(tags["pcs.env.run"])
    lines = []
    python = holder.data.tags.get("pcs.env.python.version")
    if python and python != platform.python_version():
        lines.append(f"Python {python} recorded, {platform.python_version()} now")
    listing, digest = distributions()
    if recorded_digest != digest:
        recorded = _recorded_listing(holder)
        if recorded is None:
            lines.append(f"installed distributions differ (sha256 {recorded_digest[:12]} "
                         f"recorded, {digest[:12]} now; the recorded listing is not readable)")
        else:
            lines.extend(_compare_listings(recorded, listing))
    return lines


def _top_level(run: Any) -> Any:
    """The run at the top of ``run``'s tree (the one holding the environment tags)."""
    for _ in range(1000):  # a loop in the parent tags cannot hang replay
        parent = run.data.tags.get("mlflow.parentRunId")
        if not parent:
            break
        run = Run.from_existing_run_id(parent)
    return run


def _recorded_listing(run: Any) -> bytes | None:
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="pcs-env-") as folder:
            path = run.download_artifacts(DISTRIBUTIONS_ARTIFACT, dst_path=folder)
            return Path(path).read_bytes()
    except Exception:
        _log.debug("pcs_environment: cannot read %s of run %s", DISTRIBUTIONS_ARTIFACT,
                   run.identifier, exc_info=True)
        return None


def _versions(listing: bytes) -> dict[str, str]:
    found = {}
    for line in listing.decode("utf-8", "replace").splitlines():
        name, sep, version = line.partition("==")
        if sep:
            found[name.lower()] = version
    return found


def _compare_listings(recorded: bytes, current: bytes) -> list[str]:
    """``"name X recorded, Y now"`` for each distribution that differs, by name."""
    before, now = _versions(recorded), _versions(current)
    lines = []
    for name in sorted(set(before) | set(now)):
        old, new = before.get(name), now.get(name)
        if old == new:
            continue
        if old is None:
            lines.append(f"{name} {new} not recorded, installed now")
        elif new is None:
            lines.append(f"{name} {old} recorded, not installed now")
        else:
            lines.append(f"{name} {old} recorded, {new} now")
    return lines


def environment() -> tuple[dict[str, str], dict[str, bytes]]:
    """``(tags, artifacts)`` describing this process (cached per process)."""
    pid = os.getpid()
    found = _cache.get(pid)
    if found is None:
        # Computed without holding a lock (git and the distributions take a while): a
        # process forked meanwhile must not inherit a lock that no thread will release.
        # Two threads may both compute it; the first result is kept. A forked child
        # reuses its parent's result with its own pid.
        inherited = next(iter(_cache.values()), None)
        if inherited is not None:
            tags = {**inherited[0], "pcs.env.pid": str(pid)}
            found = _cache.setdefault(pid, (tags, inherited[1]))
        else:
            found = _cache.setdefault(pid, _collect(pid))
    return dict(found[0]), dict(found[1])


def distributions() -> tuple[bytes, str]:
    """``(listing, sha256)`` of the installed distributions (computed once per process)."""
    global _distributions
    if _distributions is None:
        names = set()
        for dist in metadata.distributions():
            name, version = _name_and_version(dist)
            if name:
                names.add(f"{name}=={version}")
        listing = "".join(f"{line}\n" for line in sorted(names, key=str.lower)).encode()
        _distributions = (listing, hashlib.sha256(listing).hexdigest())
    return _distributions


def _name_and_version(dist: metadata.Distribution) -> tuple[str | None, str | None]:
    """A distribution's ``Name`` and ``Version``, read from the header of its metadata file.

    What ``dist.metadata["Name"]`` and ``dist.version`` give, ~20x faster: they parse the
    whole file (the long description included) with the email package, twice.
    """
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    name = version = None
    for line in text.partition("\n\n")[0].splitlines():  # the header ends at a blank line
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.lower()
        if key == "name" and name is None:
            name = value.strip()
        elif key == "version" and version is None:
            version = value.strip()
    return name, version


def _collect(pid: int) -> tuple[dict[str, str], dict[str, bytes]]:
    source = _source_name()
    tags = {
        "pcs.env.python.version": platform.python_version(),
        "pcs.env.python.implementation": platform.python_implementation(),
        "pcs.env.platform": platform.platform(),
        "pcs.env.hostname": socket.gethostname(),
        "pcs.env.pid": str(pid),
        "pcs.env.argv": _argv_text(),
        "mlflow.source.name": source[:_TAG_LIMIT],
        "mlflow.source.type": "LOCAL",
    }
    tags.update(_git(Path(source).parent if os.path.isfile(source) else Path.cwd()))
    artifacts: dict[str, bytes] = {}
    try:
        listing, digest = distributions()
    except Exception:  # a broken installation: record what can be recorded
        _log.debug("pcs_environment: cannot list the installed distributions", exc_info=True)
    else:
        tags["pcs.env.distributions_sha256"] = digest
        artifacts[DISTRIBUTIONS_ARTIFACT] = listing
    return tags, artifacts


def _source_name() -> str:
    main = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if main and main not in ("-c", "-m") and os.path.exists(main):
        return os.path.abspath(main)
    return main or sys.executable


def _argv_text() -> str:
    """``sys.argv`` as JSON, values that look like secrets redacted, within a tag's limit."""
    out: list[str] = []
    hide_next = False
    for arg in sys.argv:
        name, sep, _ = arg.lstrip("-").partition("=")
        if hide_next:
            out.append("<redacted>")
            hide_next = False
        elif redaction.secret_text(arg) is not None:
            out.append("<redacted>")
        elif arg.startswith("-") and redaction.is_secret_name(name.replace("-", "_")):
            if sep:
                out.append(f"{arg.partition('=')[0]}=<redacted>")
            else:
                out.append(arg)
                hide_next = True
        else:
            out.append(arg)
    text = json.dumps(out)
    if len(text) > _TAG_LIMIT:
        text = text[: _TAG_LIMIT - 20] + "... (truncated)"
    return text


def _run_git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", "replace")


def _git(cwd: Path) -> dict[str, str]:
    """The git tags of the work tree holding ``cwd``; none outside one or without git.

    Two ``git`` commands: one ``rev-parse`` for "inside a work tree", the commit and
    the branch, and ``git diff HEAD`` for the digest (and "dirty": it shows every change
    to a tracked file, staged or not, as ``git status --untracked-files=no`` does).
    """
    found = _run_git(cwd, "rev-parse", "--is-inside-work-tree", "HEAD", "--abbrev-ref", "HEAD")
    if found is None:  # not a work tree, or a repository without a commit yet
        status = _run_git(cwd, "status", "--porcelain", "--untracked-files=no")
        return {} if status is None else {"pcs.env.git.dirty": str(bool(status.strip())).lower()}
    lines = found.split()
    if len(lines) != 3 or lines[0] != "true":
        return {}
    commit, branch = lines[1], lines[2]
    tags = {"pcs.env.git.commit": commit, "mlflow.source.git.commit": commit}
    if branch != "HEAD":  # "HEAD": a detached head has no branch
        tags["pcs.env.git.branch"] = tags["mlflow.source.git.branch"] = branch[:_TAG_LIMIT]
    try:
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--no-color", "--no-ext-diff"], cwd=cwd,
            capture_output=True, timeout=GIT_TIMEOUT, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return tags
    if diff.returncode == 0:
        tags["pcs.env.git.dirty"] = "true" if diff.stdout.strip() else "false"
        tags["pcs.env.git.diff_sha256"] = hashlib.sha256(diff.stdout).hexdigest()
    return tags


# Collected as the plugin is loaded — pcs loads plugins under the lock that fork() waits
# for — so that no thread is in the middle of the imports it needs (importlib.metadata
# loads modules lazily) when the process forks: a forked child would wait forever for
# their module locks. Calls then only copy the result.
environment()
