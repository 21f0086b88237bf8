"""Reproducing runs: record in one store, export, import into another, rerun, compare.

Run it from an empty temporary directory::

    cd "$(mktemp -d)" && /path/to/pcs/.venv/bin/python /path/to/pcs/examples/replay.py

It creates two MLflow tracking stores there: ``store-a.db``, where the runs
are recorded, and ``store-b.db``, "another machine" (a child process) into
which they are imported and where they are replayed. The tracked code is in
``replay_pipeline.py`` next to this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

STORE_A = "sqlite:///store-a.db"
STORE_B = "sqlite:///store-b.db"
EXPORT = Path("export") / "runs.yaml"


def record_and_export() -> None:
    """Machine A: record a tree of runs, replay one here, export the tree."""
    os.environ["MLFLOW_TRACKING_URI"] = STORE_A
    from replay_pipeline import evaluate

    import pcs

    with pcs.run("experiment") as root:
        evaluate(0.5, 20_000)
        original = pcs.last_run()  # evaluate's ComponentRun
    if not isinstance(original, pcs.ComponentRun):
        raise SystemExit("evaluate() was not recorded; check the warnings logged by pcs")
    print(f"[A] recorded {original.run_command!r} as run {original.identifier}")

    # Replay on the same store: the code is verified, the call runs again as a new
    # tracked run tagged pcs.rerun_of, and the outcomes are compared.
    again = original.rerun()
    print(f"[A] rerun {again.identifier}: pcs.reproduced = "
          f"{again.data.tags['pcs.reproduced']}")

    registry = pcs.export_runs(root)  # the tree, its specs and every artifact
    registry.to_yaml(EXPORT)
    artifacts = sorted(p.name[:12] for p in EXPORT.with_name("runs.yaml.artifacts").iterdir())
    print(f"[A] exported {len(registry.spec_ids('runs'))} runs to {EXPORT} "
          f"(+ {len(artifacts)} artifacts by sha256: {', '.join(artifacts)}...)")


def import_and_replay(path: str) -> None:
    """Machine B: import, replay the imported run, compare; show what is refused."""
    import pcs

    mapping = pcs.import_runs(path)  # verifies every spec hash and artifact digest first
    again = pcs.import_runs(path)  # importing twice adds nothing
    print(f"[B] imported {len(mapping)} runs into {os.environ['MLFLOW_TRACKING_URI']}; "
          f"importing again reused them all: {again == mapping}")

    registry = pcs.Registry.from_yaml(path)
    evaluate_id = next(
        run_id for run_id, spec in registry.get_run_specs().items()
        if spec["tags"].get("pcs.entry_point") == "evaluate"
    )
    imported = pcs.ComponentRun.from_registry(registry, evaluate_id)
    print(f"[B] run {evaluate_id} of A is run {imported.identifier} here")

    # Imported runs are not evidence that their code is safe to import: allow it.
    try:
        imported.rerun()
    except pcs.UnsafeReplayError as exc:
        print(f"[B] refused by default: {str(exc).split('): ', 1)[-1][:120]}...")
    with pcs.run("replay-on-b"):
        new = imported.rerun(allowed_modules=["replay_pipeline"])
    comparison = imported.compare(new)
    print(f"[B] replayed as run {new.identifier}; compared with the import:")
    print("    " + str(comparison).replace("\n", "\n    "))

    # A changed byte anywhere in the export is refused before anything is written.
    text = Path(path).read_text()
    tampered = Path(path).with_name("tampered.yaml")
    tampered.write_text(text.replace("arg.factor: '0.5'", "arg.factor: '0.7'", 1))
    try:
        pcs.import_runs(tampered)
    except pcs.SpecIntegrityError as exc:
        print(f"[B] tampered export refused: {str(exc)[:120]}...")
    else:
        raise SystemExit("the tampered export was not refused")


def show_store(uri: str) -> None:
    """The runs of a store, as the stock MLflow client reads them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs(["0"], max_results=1000, order_by=["attributes.start_time ASC"])
    names = {r.info.run_id: r.info.run_name for r in runs}
    print(f"\n{uri}:")
    for r in runs:
        tags = r.data.tags
        parent = names.get(tags.get("mlflow.parentRunId", ""), "-")
        notes = [f"{k}={tags[k][-8:]}" for k in ("pcs.imported_from", "pcs.rerun_of",
                                                 "pcs.reproduced") if k in tags]
        print(f"  {r.info.run_name:<18} parent={parent:<12} {r.info.status:<9} "
              f"{' '.join(notes)}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--import":
        import_and_replay(sys.argv[2])
        return
    record_and_export()
    env = dict(os.environ, MLFLOW_TRACKING_URI=STORE_B)
    subprocess.run([sys.executable, __file__, "--import", str(EXPORT)], env=env, check=True)
    show_store(STORE_A)
    show_store(STORE_B)


if __name__ == "__main__":
    main()
