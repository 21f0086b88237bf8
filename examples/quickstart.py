"""pcs quickstart: nested, replayable runs in the local MLflow store.

Run it with ``make demo`` (or ``python examples/quickstart.py``). It writes to
the tracking store MLflow resolves: ``MLFLOW_TRACKING_URI`` if set, else
``sqlite:///mlflow.db`` in the working directory. Afterwards, with the
``server`` extra installed, ``mlflow ui`` shows the same tree.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from mlflow.tracking import MlflowClient

import pcs

DOCUMENTS = ["The cat sat", "on the mat", "and pcs tracked it all"]


@pcs.tracked
def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """A tracked function: each call is a ComponentRun with its arguments."""
    return (text.lower() if lowercase else text).split()


@pcs.tracked
def score(text: str, weight: float = 1.0) -> float:
    """Calls another tracked function: the runs nest by themselves."""
    return weight * len(tokenize(text))


@pcs.tracked
async def fetch(doc_id: int, delay: float) -> str:
    """A tracked coroutine: gathered siblings each nest under the enclosing run."""
    await asyncio.sleep(delay)
    return DOCUMENTS[doc_id]


@pcs.tracked
class Model:
    """A tracked class: its __init__ arguments make its tracked methods replayable."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    @pcs.tracked
    def predict(self, text: str) -> float:
        return score(text, weight=self.weight)


async def fetch_all() -> list[str]:
    async with pcs.run("fetch-all"):
        # Reversed sleeps: the coroutines finish in the opposite order they started.
        return list(await asyncio.gather(*(fetch(i, (3 - i) / 20) for i in range(3))))


def main() -> str:
    with pcs.run("quickstart", tags={"example": "quickstart"}) as root:
        root.log_param("documents", len(DOCUMENTS))
        docs = asyncio.run(fetch_all())
        # A thread pool: pcs.bind carries the run context into the worker threads.
        with ThreadPoolExecutor(max_workers=3) as pool:
            scores = list(pool.map(pcs.bind(score), docs))
        root.log_metric("total_score", sum(scores))
        prediction = Model(weight=0.5).predict("a tracked method call")
        root.log_metric("prediction", prediction)
    pcs.flush()  # runs are written in the background: wait before reading with MlflowClient
    return root.identifier


def print_tree(root_id: str) -> None:
    """Read the runs back with the stock MLflow client and print their tree."""
    client = MlflowClient()
    runs = client.search_runs(["0"], "tags.`pcs.is_run` = 'True'", max_results=1000)
    children: dict[str | None, list[object]] = {}
    for r in runs:
        children.setdefault(r.data.tags.get("mlflow.parentRunId"), []).append(r)

    def show(run: object, depth: int) -> None:
        tags, params = run.data.tags, run.data.params  # type: ignore[attr-defined]
        args = ", ".join(f"{k[4:]}={v}" for k, v in sorted(params.items()) if k.startswith("arg."))
        kind = "call" if tags.get("pcs.is_component_run") == "True" else "run "
        name = tags.get("mlflow.runName", "").split("(", 1)[0]  # a call's name shows arguments
        status = run.info.status  # type: ignore[attr-defined]
        print(f"{'    ' * depth}{kind} {name}({args}) {status}")
        for child in sorted(children.get(run.info.run_id, []),  # type: ignore[attr-defined]
                            key=lambda c: c.info.start_time):  # type: ignore[attr-defined]
            show(child, depth + 1)

    show(client.get_run(root_id), 0)


if __name__ == "__main__":
    root_id = main()
    print(f"Recorded run {root_id} in {MlflowClient().tracking_uri}:\n")
    print_tree(root_id)
    print("\nSee them in the MLflow UI: pip install -e '.[server]' && mlflow ui")
