"""Every name pcs writes into MLflow, defined once.

A pcs run is a stock MLflow run; what makes it a pcs run is the tags, params
and artifacts named here. Other tools (the MLflow UI, ``mlflow.search_runs``,
a notebook) can rely on these names: they are part of pcs's public interface,
and changing one is a breaking change. The table "How pcs maps onto MLflow"
in ``docs/concepts.rst`` is checked against :data:`NAMES` by the test suite.

Example: find the runs of one tracked function with stock MLflow::

    from mlflow import MlflowClient
    from pcs import conventions

    runs = MlflowClient().search_runs(
        ["0"], f"tags.`{conventions.ENTRY_POINT_TAG}` = 'train:fit'"
    )
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ARGUMENT_ARTIFACT_DIR",
    "ARGUMENT_PARAM_PREFIX",
    "CODE_DRIFT_ARTIFACT",
    "CODE_DRIFT_TAG",
    "COMPONENT_RUN_TAG",
    "ENTRY_POINT_TAG",
    "ENVIRONMENT_DRIFT_ARTIFACT",
    "ENVIRONMENT_DRIFT_TAG",
    "ERROR_TYPE_TAG",
    "IMPORTED_FROM_TAG",
    "IMPORTED_PARENT_TAG",
    "IMPORTED_STATUS_TAG",
    "IMPORTING_FROM_TAG",
    "INIT_PARAM_PREFIX",
    "INPUTS_FROM_TAG",
    "INPUTS_TAG",
    "LINEAGE_SVG_ARTIFACT",
    "LOCAL_RUN_ID_TAG",
    "MAX_PARAM_KEY_LENGTH",
    "MAX_PARAM_VALUE_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "NAMES",
    "NOT_REPRODUCIBLE_REASON_TAG",
    "OVERRIDES_TAG",
    "PARENT_RUN_ID_TAG",
    "REAPED_TAG",
    "REBUILT_INPUTS_TAG",
    "REGISTRY_ARTIFACT",
    "REPRODUCED_TAG",
    "REPRODUCIBLE_TAG",
    "RERUN_OF_TAG",
    "RETURN_VALUE_ARTIFACT",
    "RETURN_VALUE_ERROR_TAG",
    "RUN_COMMAND_ID_TAG",
    "RUN_NAME_TAG",
    "RUN_TAG",
    "TRACEBACK_ARTIFACT",
    "USER_TAG",
]

# -- MLflow's own tags, which pcs sets -------------------------------------------------
PARENT_RUN_ID_TAG: Final = "mlflow.parentRunId"
"""The enclosing run's id: how the MLflow UI draws nesting."""
RUN_NAME_TAG: Final = "mlflow.runName"
"""The run's name (a tracked call: its qualified name plus up to two telling arguments,
``train(lr=0.1)``; see :mod:`pcs._naming`)."""
USER_TAG: Final = "mlflow.user"
"""The user who ran the program."""

# -- every pcs run -----------------------------------------------------------------------
RUN_TAG: Final = "pcs.is_run"
"""``True`` on every run pcs created."""
ERROR_TYPE_TAG: Final = "pcs.error.type"
"""A failed run: the qualified name of the exception's type."""
TRACEBACK_ARTIFACT: Final = "pcs.traceback.txt"
"""A failed run: the formatted traceback."""
LOCAL_RUN_ID_TAG: Final = "pcs.local_run_id"
"""Stores that choose run ids themselves (servers): the id the run had in the program."""
REAPED_TAG: Final = "pcs.reaped"
"""A run ended KILLED by recovery or at exit: why (for example ``process 123 died``)."""

# -- tracked calls (ComponentRuns) -------------------------------------------------------
COMPONENT_RUN_TAG: Final = "pcs.is_component_run"
"""``True`` on the run of a tracked call."""
RUN_COMMAND_ID_TAG: Final = "pcs.run_command_id"
"""The content id of the call's RunCommand (code identity + entry point + arguments)."""
ENTRY_POINT_TAG: Final = "pcs.entry_point"
"""The callable, as ``module:qualified.name``."""
REPRODUCIBLE_TAG: Final = "pcs.reproducible"
"""``True`` when every argument was captured exactly, so the call can be replayed."""
NOT_REPRODUCIBLE_REASON_TAG: Final = "pcs.not_reproducible_reason"
"""Why a call cannot be replayed (which argument could not be captured, and why)."""
RETURN_VALUE_ERROR_TAG: Final = "pcs.return_value.error"
"""The return value could not be stored: why (the call itself succeeded)."""
ARGUMENT_PARAM_PREFIX: Final = "arg."
"""Params ``arg.<name>``: captured arguments small enough for MLflow's param limits."""
INIT_PARAM_PREFIX: Final = "init."
"""Params ``init.<name>`` on the runs of a tracked class's methods: its ``__init__`` arguments."""
REGISTRY_ARTIFACT: Final = "pcs.run_command_registry.yaml"
"""The call's RunCommand, Component and ArgumentSet specs (a pcs Registry file)."""
RETURN_VALUE_ARTIFACT: Final = "pcs.return_value"
"""Stem of the return value's artifact: ``pcs.return_value.<json|yaml|pickle>``."""
ARGUMENT_ARTIFACT_DIR: Final = "pcs.arguments"
"""Large argument values, one file per value: ``pcs.arguments/<sha256>.json``."""

# -- replay --------------------------------------------------------------------------------
RERUN_OF_TAG: Final = "pcs.rerun_of"
"""A replayed run: the id of the run it replays."""
REPRODUCED_TAG: Final = "pcs.reproduced"
"""A replayed run: ``True`` when its outcome equals the original's."""
CODE_DRIFT_TAG: Final = "pcs.code_drift"
"""A run replayed with ``allow_code_drift=True`` whose code had changed."""
CODE_DRIFT_ARTIFACT: Final = "pcs.code_drift.diff"
"""Such a run: what changed (a unified diff of the source)."""
OVERRIDES_TAG: Final = "pcs.rerun_overrides"
"""A replayed run: the names of the arguments supplied with ``overrides``."""
REBUILT_INPUTS_TAG: Final = "pcs.rerun_inputs_from"
"""A replayed run: the arguments taken from their producers' logged return values
(lineage), as JSON ``{argument: producing run id}``."""
ENVIRONMENT_DRIFT_TAG: Final = "pcs.environment_drift"
"""A replayed run whose environment differs from the original's, as plugins see it
(``pcs_environment_drift``; the environment plugin compares the installed packages)."""
ENVIRONMENT_DRIFT_ARTIFACT: Final = "pcs.environment_drift.txt"
"""Such a run: the differences, one per line."""

# -- lineage ---------------------------------------------------------------------------------
INPUTS_FROM_TAG: Final = "pcs.inputs_from"
"""A tracked call that received a value another tracked call returned: the producing runs'
ids, sorted and comma-separated (see :mod:`pcs.lineage`)."""
INPUTS_TAG: Final = "pcs.inputs"
"""Such a call: JSON ``{argument path: producing run id}`` (``model``, ``data[0]``...)."""
LINEAGE_SVG_ARTIFACT: Final = "pcs.lineage.svg"
"""A top-level run inside whose tree tracked calls passed values to each other: the picture
of those edges (producer → consumer, labelled with the argument), drawn with Graphviz by the
``lineage_svg`` plugin."""

# -- export / import -----------------------------------------------------------------------
IMPORTED_FROM_TAG: Final = "pcs.imported_from"
"""An imported run: its id in the store it was exported from."""
IMPORTING_FROM_TAG: Final = "pcs.importing_from"
"""A run whose import is under way (removed when the import completes)."""
IMPORTED_PARENT_TAG: Final = "pcs.imported_parent"
"""An imported run whose parent was not imported: the parent's original id."""
IMPORTED_STATUS_TAG: Final = "pcs.imported_status"
"""An imported run that was not finished when exported: its status then."""

# -- MLflow's limits that pcs relies on -------------------------------------------------------
MAX_PARAM_VALUE_LENGTH: Final = 6000
MAX_PARAM_KEY_LENGTH: Final = 250
MAX_TAG_VALUE_LENGTH: Final = 8000

#: Every tag, param prefix and artifact name above, by constant name.
NAMES: Final[dict[str, str]] = {
    name: value
    for name, value in dict(globals()).items()
    if name.endswith(("_TAG", "_ARTIFACT", "_ARTIFACT_DIR", "_PREFIX")) and isinstance(value, str)
}
