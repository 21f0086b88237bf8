"""pcs.conventions is the one home of every name pcs writes into MLflow, and the
docs' mapping table says the same thing."""

from __future__ import annotations

import re
from pathlib import Path

import pcs
from pcs import conventions
from pcs.component_run import ComponentRun

_CONCEPTS = Path(__file__).resolve().parent.parent / "docs" / "concepts.rst"


def _mapping_table() -> str:
    text = _CONCEPTS.read_text()
    return text[text.index("How pcs maps onto MLflow"):text.index("Errors\n------")]


def test_every_name_is_in_the_docs_mapping_table() -> None:
    table = _mapping_table()
    missing = [name for name, value in conventions.NAMES.items() if f"``{value}" not in table]
    assert not missing, f"add these to the table in docs/concepts.rst: {missing}"


def test_the_docs_mapping_table_names_only_defined_names() -> None:
    literals = re.findall(r"``((?:pcs|mlflow|arg|init)\.[^`=<]*)", _mapping_table())
    values = set(conventions.NAMES.values())
    unknown = [lit for lit in literals if not any(lit.startswith(v) for v in values)]
    assert literals
    assert not unknown, unknown


def test_names_are_unique_and_namespaced() -> None:
    values = list(conventions.NAMES.values())
    assert len(values) == len(set(values))
    assert all(v.startswith(("pcs.", "mlflow.", "arg.", "init.")) for v in values)


def test_class_constants_are_the_conventions() -> None:
    assert pcs.Run.PCS_RUN_TAG == conventions.RUN_TAG
    assert ComponentRun.REGISTRY_ARTIFACT == conventions.REGISTRY_ARTIFACT
    assert ComponentRun.IS_COMPONENT_RUN_TAG == conventions.COMPONENT_RUN_TAG


def test_a_recorded_call_carries_the_conventional_names(tracking_uri: str) -> None:
    @pcs.tracked
    def double(x: int) -> int:
        return 2 * x

    assert double(21) == 42
    assert pcs.flush(30)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    (run,) = client.search_runs(["0"], f"tags.`{conventions.COMPONENT_RUN_TAG}` = 'True'")
    tags = run.data.tags
    assert tags[conventions.RUN_TAG] == "True"
    assert tags[conventions.ENTRY_POINT_TAG].endswith("double")
    assert tags[conventions.REPRODUCIBLE_TAG] == "True"
    assert run.data.params[f"{conventions.ARGUMENT_PARAM_PREFIX}x"] == "21"
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert conventions.REGISTRY_ARTIFACT in paths
