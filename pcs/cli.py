"""The ``pcs`` command line: ``pcs recover`` and ``pcs status``."""

from __future__ import annotations

import sys

import click

__all__ = ["main"]


def _build() -> click.Group:
    @click.group(help="pcs: nested, replayable run tracking on MLflow.")
    @click.version_option(package_name="pcs")
    def cli() -> None:
        pass

    @cli.command(help="Deliver journals left by dead processes and mark their open runs KILLED.")
    @click.option("--journal-dir", type=click.Path(file_okay=False), default=None,
                  help="Journal directory (default: $PCS_JOURNAL_DIR or ./.pcs/journal).")
    @click.option("--store", default=None, metavar="URI",
                  help="Deliver to this tracking store (default: MLFLOW_TRACKING_URI or "
                       "MLflow's default). Only journals recorded for it are delivered.")
    def recover(journal_dir: str | None, store: str | None) -> None:
        from pcs.recovery import recover as run_recovery

        report = run_recovery(journal_dir, store=store)
        click.echo(str(report))
        for run_id in report.killed_runs:
            click.echo(f"  KILLED {run_id}")
        if report.failed:
            for path in report.failed:
                click.echo(f"  not delivered (kept): {path}", err=True)
            sys.exit(1)

    @cli.command(help="Print every pcs run of the tracking store (MLFLOW_TRACKING_URI).")
    def status() -> None:
        from pcs._store import current_tracking_uri, probe_store
        from pcs.exceptions import StoreError
        from pcs.run import Run

        uri = current_tracking_uri()
        problem = probe_store(uri)
        if problem is not None:
            click.echo(f"pcs status: {problem}. Check MLFLOW_TRACKING_URI.", err=True)
            sys.exit(1)
        try:
            Run.print_all_status()
        except StoreError as exc:
            click.echo(f"pcs status: {exc}", err=True)
            sys.exit(1)

    return cli


def main() -> None:
    """Entry point of the ``pcs`` console script."""
    _build()(prog_name="pcs")


if __name__ == "__main__":
    main()
