"""pcs demo: a small but real workflow, then the story told by the ``pcs`` command line.

Run it with ``make demo`` (or ``python examples/workflow.py``). It records into
the store MLflow resolves: ``MLFLOW_TRACKING_URI`` if set, else
``sqlite:///mlflow.db`` in the working directory. The workflow

1. loads data (a tracked function),
2. trains four models in a thread pool (``pcs.bind`` carries the run context into
   the worker threads), one tracked ``train`` call per learning rate,
3. evaluates each returned model (``evaluate`` receives the object ``train``
   returned: pcs records that lineage),
4. publishes the scores from asyncio tasks (a tracked coroutine),

then prints what ``pcs runs``, ``pcs show`` (one evaluation) and ``pcs rerun`` (the
same evaluation, replayed and compared) print. The tracked steps are in
``workflow_steps.py`` next to this file.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # workflow_steps, for pcs rerun too

from workflow_steps import Evaluator, LinearModel, load_data, publish, train

import pcs
import pcs.cli

EXPERIMENT = "pcs-demo"
LEARNING_RATES = (0.01, 0.03, 0.1, 0.3)


async def publish_all(results: list[tuple[float, float]]) -> list[str]:
    async with pcs.run("publish"):
        return list(await asyncio.gather(*(publish(lr, score) for lr, score in results)))


def workflow() -> str:
    """Record the workflow; return the run id of the best evaluation."""
    with pcs.run("workflow", experiment=EXPERIMENT, tags={"example": "workflow"}) as root:
        data = load_data(n=200, seed=7)
        with ThreadPoolExecutor(max_workers=4) as pool:
            models: list[LinearModel] = list(
                pool.map(pcs.bind(functools.partial(train, data)), LEARNING_RATES)
            )
        evaluator = Evaluator(metric="mse", threshold=0.05)
        results, evaluations = [], []
        for lr, model in zip(LEARNING_RATES, models, strict=True):
            score = evaluator.evaluate(model, data)
            evaluations.append((score["mse"], pcs.last_run()))
            results.append((lr, score["mse"]))
        root.log_metric("best_mse", min(mse for _lr, mse in results))
        for line in asyncio.run(publish_all(results)):
            print(f"  published {line}")
    pcs.flush()  # runs are written in the background: wait before reading them back
    _mse, best = min(evaluations, key=lambda pair: pair[0])
    if best is None:
        raise SystemExit("evaluate() was not recorded; check the warnings logged by pcs")
    return best.identifier


def pcs_command(*args: str) -> None:
    """Print what ``pcs ARGS...`` prints: the console script's own function, in this process."""
    print(f"\n$ pcs {' '.join(args)}", flush=True)
    sys.argv = ["pcs", *args]
    try:
        pcs.cli.main()
    except SystemExit as done:
        if done.code:
            raise
    sys.stdout.flush()


def main() -> None:
    print(f"Recording the workflow in experiment {EXPERIMENT!r}...")
    evaluation = workflow()
    pcs_command("runs", "--experiment", EXPERIMENT, "--limit", "1")
    pcs_command("show", evaluation[-8:])
    pcs_command("rerun", evaluation[-8:])
    print("\nSee the same runs in the MLflow UI: pcs ui  (needs pip install -e '.[server]')")


if __name__ == "__main__":
    main()
