"""The ``pcs`` command line: look at runs, replay them, move them between stores.

Every command reads the store named by ``MLFLOW_TRACKING_URI`` (else MLflow's
default ``sqlite:///mlflow.db``), takes ``--help``, prints ``--json`` for
scripts where it has output, accepts a run id by any unique prefix, and on
failure prints one line ``pcs: error: ...`` to stderr and exits with status 1
(2 for a usage mistake, as click does). See ``docs/cli.rst``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

#: more runs than this moving through export: a progress bar
PROGRESS_THRESHOLD = 5
#: what to install for ``pcs ui`` when the full mlflow package is missing
UI_INSTALL = "pip install 'pcs[server]'   (the full mlflow package, with its web UI)"


def fail(message: str) -> NoReturn:
    """Print one line ``pcs: error: ...`` to stderr and exit with status 1."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    click.echo(f"pcs: error: {first}", err=True)
    raise SystemExit(1)


class _Cli(click.Group):
    """The group: any error of a command becomes one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        from pcs.exceptions import PcsError

        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort, SystemExit, KeyboardInterrupt):
            raise
        except PcsError as exc:
            fail(str(exc))
        except Exception as exc:
            fail(f"{type(exc).__name__}: {exc}")


class _OneLineWarnings(logging.Handler):
    """pcs's warnings on stderr, one line each; the recovery summary the command prints
    itself is not repeated."""

    def emit(self, record: logging.LogRecord) -> None:
        from pcs.recovery import RecoveryReport

        if any(isinstance(arg, RecoveryReport) for arg in (record.args or ())):
            return
        text = record.getMessage().strip().splitlines()
        click.echo(f"pcs: warning: {text[0] if text else ''}".rstrip(), err=True)


def _quiet_library_logs() -> None:
    logger = logging.getLogger("pcs")
    if not any(isinstance(h, _OneLineWarnings) for h in logger.handlers):
        handler = _OneLineWarnings(logging.WARNING)
        logger.addHandler(handler)
        logger.propagate = False


def _store(create: bool = False) -> str:
    """The tracking URI in use, after checking the store can be read (``create``: a local
    store that does not exist yet is fine, MLflow creates it; a server must answer)."""
    from pcs._store import current_tracking_uri, probe_store

    uri = current_tracking_uri()
    if create and not uri.startswith(("http:", "https:")):
        return uri
    problem = probe_store(uri)
    if problem is not None:
        fail(f"{problem}. Point MLFLOW_TRACKING_URI at your MLflow store.")
    return uri


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (for scripts) instead of text.")(fn)


def _find(prefix: str) -> MlflowRun:
    from pcs.query import find_run

    return find_run(prefix)


# -- pcs runs ------------------------------------------------------------------------------
def _runs_command(fn: F) -> F:
    options = [
        click.option("--experiment", "-e", metavar="NAME",
                     help="Only this experiment (name or id). Default: $PCS_EXPERIMENT, "
                          "else every experiment."),
        click.option("--status", "-s", type=click.Choice(
            ["RUNNING", "FINISHED", "FAILED", "KILLED"], case_sensitive=False),
            help="Only top-level runs with this status."),
        click.option("--name", metavar="PATTERN",
                     help="Only top-level runs of this name (* matches anything)."),
        click.option("--since", metavar="WHEN",
                     help="Only top-level runs started since WHEN: a duration ago (30m, 2h, "
                          "3d) or an ISO date/time."),
        click.option("--limit", "-n", type=click.IntRange(min=0), default=50, show_default=True,
                     help="Show the newest N top-level runs (0: all)."),
        _json_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _runs(experiment: str | None, status: str | None, name: str | None, since: str | None,
          limit: int, as_json: bool, full_ids: bool = False) -> None:
    from pcs import _render
    from pcs._store import get_backend
    from pcs.query import RunFilter, experiment_ids, forest, parse_time

    uri = _store()
    backend = get_backend(uri)
    wanted = RunFilter(status, name, parse_time(since) if since else None)
    ids = experiment_ids(backend, experiment)
    roots, more = forest(backend, ids, wanted, limit or None) if ids != [] else ([], False)
    if as_json:
        _echo_json([_render.node_json(root) for root in roots])
        return
    if not roots:
        click.echo(f"no pcs runs in {uri}" + (" matching the filters" if (
            experiment or status or name or since) else ""))
        return
    for line in _render.tree_lines(roots, full_ids=full_ids):
        click.echo(line)
    if more:
        click.echo(f"(the {limit} newest top-level runs; --limit 0 shows all)")


# -- export / import -----------------------------------------------------------------------
def _with_descendants(record: MlflowRun) -> list[str]:
    """The run's id and the ids of every pcs run nested under it (parents first)."""
    from pcs import _render
    from pcs._store import get_backend
    from pcs.query import OLDEST_FIRST, RunFilter, attach

    backend = get_backend()
    nested = RunFilter(since_ms=record.info.start_time, top_level=False)
    found = backend.iter_search([record.info.experiment_id], nested.filter_string(),
                                OLDEST_FIRST)
    (root,) = attach([_render.Node(record)], found)
    return [node.record.info.run_id for node in root.walk()]


def _export(runs: tuple[str, ...], output: str, include_artifacts: bool,
            as_json: bool) -> None:
    from pcs.portable import export_runs
    from pcs.registry import InMemoryRegistry

    _store()
    ids: list[str] = []
    for prefix in runs:
        ids.extend(i for i in _with_descendants(_find(prefix)) if i not in ids)
    registry = InMemoryRegistry()
    show = len(ids) > PROGRESS_THRESHOLD and not as_json

    def one(run_id: str) -> None:
        export_runs(run_id, registry, children=False, include_artifacts=include_artifacts)

    if show:
        with click.progressbar(ids, label="exporting", file=sys.stderr) as bar:
            for run_id in bar:
                one(run_id)
    else:
        for run_id in ids:
            one(run_id)
    registry.to_yaml(output)
    if as_json:
        _echo_json({"file": output, "runs": ids})
    else:
        click.echo(f"exported {len(ids)} run(s) to {output}")


def _import(path: str, experiment: str | None, as_json: bool) -> None:
    from pcs._store import get_backend
    from pcs.experiments import experiment_for_new_run
    from pcs.portable import import_runs
    from pcs.registry import Registry

    uri = _store(create=True)
    registry = Registry.from_yaml(path)
    count = len(registry.get_run_specs())
    experiment_id = experiment_for_new_run(get_backend(uri), experiment, None, nested=False)
    if count > PROGRESS_THRESHOLD and not as_json:
        with click.progressbar(length=count, label="importing", file=sys.stderr) as bar:
            mapping = import_runs(registry, experiment_id=experiment_id,
                                  progress=lambda old, new: bar.update(1))
    else:
        mapping = import_runs(registry, experiment_id=experiment_id)
    if as_json:
        _echo_json(mapping)
        return
    click.echo(f"imported {len(mapping)} run(s) from {path} into {uri}")
    for old, new in mapping.items():
        click.echo(f"  {old} -> {new}")


# -- ui ------------------------------------------------------------------------------------
def server_available() -> bool:
    """True when the full ``mlflow`` package (with its web UI) is installed."""
    import importlib.metadata
    import importlib.util

    try:
        importlib.metadata.distribution("mlflow")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("flask") is not None


def _ui(host: str, port: int, experiment: str | None) -> None:
    import subprocess

    from pcs._store import get_backend
    from pcs.query import experiment_ids

    if not server_available():
        fail(f"`pcs ui` runs MLflow's web UI, which mlflow-skinny lacks. Install it: "
             f"{UI_INSTALL}")
    uri = _store()
    ids = experiment_ids(get_backend(uri), experiment) or ["0"]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    click.echo(f"MLflow UI for {uri}")
    click.echo(f"runs page: http://{shown}:{port}/#/experiments/{ids[0]}/runs")
    click.echo("(Ctrl-C stops it)")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", host, "--port", str(port)]
    try:
        code = subprocess.call(command)
    except KeyboardInterrupt:
        code = 0
    if code:
        fail(f"`mlflow ui` exited with status {code} (is port {port} free? try --port)")


# -- the commands --------------------------------------------------------------------------
def _build() -> click.Group:
    @click.group(cls=_Cli, help="pcs: nested, replayable run tracking on MLflow. The store is "
                 "MLFLOW_TRACKING_URI (default sqlite:///mlflow.db).")
    @click.version_option(package_name="pcs")
    def cli() -> None:
        _quiet_library_logs()

    @cli.command(help="The run tree: top-level runs newest first, nested runs under them "
                      "(status, duration, name, short id).")
    @_runs_command
    def runs(experiment: str | None, status: str | None, name: str | None, since: str | None,
             limit: int, as_json: bool) -> None:
        _runs(experiment, status, name, since, limit, as_json)

    @cli.command(help="`pcs runs` with whole run ids.")
    @_runs_command
    def status(experiment: str | None, status: str | None, name: str | None, since: str | None,
               limit: int, as_json: bool) -> None:
        _runs(experiment, status, name, since, limit, as_json, full_ids=True)

    @cli.command(help="One run: status, error, arguments, return value, code identity, "
                      "environment, params, metrics, lineage, children. RUN: an id or unique "
                      "prefix.")
    @click.argument("run")
    @_json_option
    def show(run: str, as_json: bool) -> None:
        from pcs import _report
        from pcs._store import get_backend

        _store()
        report = _report.describe(get_backend(), _find(run))
        _echo_json(report) if as_json else click.echo(_report.show_text(report))

    @cli.command(help="Output -> input lineage around a tracked call: the calls whose "
                      "returned values it received, and the calls that received its. "
                      "RUN: an id or unique prefix.")
    @click.argument("run")
    @click.option("--format", "fmt", type=click.Choice(["text", "dot", "svg"]),
                  default="text", show_default=True,
                  help="text; Graphviz DOT; SVG (drawn by Graphviz's dot program).")
    @click.option("--depth", type=click.IntRange(0, 20), default=3, show_default=True,
                  help="How many links away to follow.")
    def lineage(run: str, fmt: str, depth: int) -> None:
        from pcs import lineage as lineage_module
        from pcs._store import get_backend
        from pcs.query import wrap

        _store()
        backend = get_backend()
        found = lineage_module.graph(wrap(backend, _find(run)), depth)
        click.echo(lineage_module.render(found, fmt), nl=False)

    @cli.command(help="Replay a tracked call: run it again with its recorded arguments and "
                      "check the code did not change. Run it where the code is importable.")
    @click.argument("run")
    @click.option("--allow-code-drift", is_flag=True,
                  help="Replay even if the code changed since the run (the diff is logged).")
    @click.option("--trust-pickles", is_flag=True,
                  help="An argument pcs could not record may be loaded from its producer's "
                       "pickled return value (lineage); only for stores you trust.")
    @_json_option
    def rerun(run: str, allow_code_drift: bool, trust_pickles: bool, as_json: bool) -> None:
        _rerun(run, allow_code_drift, as_json, trust_pickles)

    @cli.command(help="What differs between two runs: arguments, code, status, return value, "
                      "params, environment.")
    @click.argument("run_a")
    @click.argument("run_b")
    @_json_option
    def diff(run_a: str, run_b: str, as_json: bool) -> None:
        from pcs import _report

        _store()
        report = _report.diff(_find(run_a), _find(run_b))
        _echo_json(report) if as_json else click.echo(_report.diff_text(report))

    @cli.command("export", help="Write runs, and every pcs run nested under them, to a YAML "
                                "registry file that `pcs import` reads.")
    @click.argument("runs", nargs=-1, required=True)
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
                  help="The file to write.")
    @click.option("--include-artifacts", is_flag=True,
                  help="Also copy every artifact file (default: only what replay needs).")
    @_json_option
    def export_command(runs: tuple[str, ...], output: str, include_artifacts: bool,
                       as_json: bool) -> None:
        _export(runs, output, include_artifacts, as_json)

    @cli.command("import", help="Recreate the runs of a file written by `pcs export` in this "
                                "store (verified first; importing twice adds nothing).")
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option("--experiment", "-e", metavar="NAME",
                  help="Into this experiment (created if missing). Default: $PCS_EXPERIMENT, "
                       "else the default experiment.")
    @_json_option
    def import_command(file: str, experiment: str | None, as_json: bool) -> None:
        _import(file, experiment, as_json)

    @cli.command(help="Deliver journals left by dead processes and mark their open runs KILLED.")
    @click.option("--journal-dir", type=click.Path(file_okay=False), default=None,
                  help="Journal directory (default: $PCS_JOURNAL_DIR or ./.pcs/journal).")
    @click.option("--store", default=None, metavar="URI",
                  help="Deliver to this tracking store (default: MLFLOW_TRACKING_URI or "
                       "MLflow's default). Only journals recorded for it are delivered.")
    @_json_option
    def recover(journal_dir: str | None, store: str | None, as_json: bool) -> None:
        _recover(journal_dir, store, as_json)

    @cli.command(help="Start MLflow's web UI on this store (needs the full mlflow package) "
                      "and print the URL of the runs page.")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", "-p", type=click.IntRange(1, 65535), default=5000, show_default=True)
    @click.option("--experiment", "-e", metavar="NAME",
                  help="The experiment whose runs page to print (default: $PCS_EXPERIMENT, "
                       "else the default experiment).")
    def ui(host: str, port: int, experiment: str | None) -> None:
        _ui(host, port, experiment)

    return cli


def _rerun(prefix: str, allow_code_drift: bool, as_json: bool,
           trust_pickles: bool = False) -> None:
    from pcs import conventions
    from pcs._store import get_backend
    from pcs.component_run import ComponentRun
    from pcs.query import wrap
    from pcs.replay import rerun

    _store()
    record = _find(prefix)
    run = wrap(get_backend(), record)
    if not isinstance(run, ComponentRun):
        fail(f"run {record.info.run_id} is a pcs.run() block, not a tracked call; only "
             "tracked calls can be replayed.")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: the user's modules
    new = rerun(run, allow_code_drift, reraise=False, trust_pickles=trust_pickles)
    info, tags = new.info, new.data.tags
    result = {"original": record.info.run_id, "run": info.run_id, "status": info.status,
              "reproduced": tags.get(conventions.REPRODUCED_TAG),
              "error": tags.get(conventions.ERROR_TYPE_TAG)}
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"rerun of {record.info.run_id}: run {info.run_id} {info.status}, "
                   f"reproduced: {result['reproduced'] or 'unknown'}")
    if info.status != "FINISHED" and result["reproduced"] != "True":
        fail(f"the replayed call ended {info.status} ({result['error']}); see "
             f"`pcs show {info.run_id[-8:]}`")


def _recover(journal_dir: str | None, store: str | None, as_json: bool) -> None:
    from pcs.recovery import recover as run_recovery

    report = run_recovery(journal_dir, store=store)
    if as_json:
        _echo_json({"journals": report.journals, "records": report.records,
                    "killed_runs": report.killed_runs, "failed": report.failed,
                    "damaged": report.damaged})
    else:
        click.echo(str(report))
        for run_id in report.killed_runs:
            click.echo(f"  KILLED {run_id}")
    if report.failed:
        for path in report.failed:
            click.echo(f"  not delivered (kept): {path}", err=True)
        raise SystemExit(1)


def main() -> None:
    """Entry point of the ``pcs`` console script."""
    _build()(prog_name="pcs")


if __name__ == "__main__":
    main()

