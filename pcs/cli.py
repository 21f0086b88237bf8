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
    def recover(journal_dir: str | None) -> None:
        from pcs.recovery import recover as run_recovery

        report = run_recovery(journal_dir)
        click.echo(str(report))
        for run_id in report.killed_runs:
            click.echo(f"  KILLED {run_id}")
        if report.failed:
            for path in report.failed:
                click.echo(f"  not delivered (kept): {path}", err=True)
            sys.exit(1)

    @cli.command(help="Print every pcs run of the tracking store (MLFLOW_TRACKING_URI).")
    def status() -> None:
        from pcs.run import Run

        Run.print_all_status()

    return cli


def main() -> None:
    """Entry point of the ``pcs`` console script."""
    _build()(prog_name="pcs")


if __name__ == "__main__":
    main()
