"""@pcs.tracked on instance methods, and on the methods of tracked classes."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

import pcs
from pcs.component_run import ComponentRun


class Plain:
    def __init__(self, scale: int) -> None:
        self.scale = scale

    @pcs.tracked
    def apply(self, x: int) -> int:
        return self.scale * x


@pcs.tracked
class Model:
    def __init__(self, width: int, depth: int = 2) -> None:
        self.width = width
        self.depth = depth

    @pcs.tracked
    def predict(self, x: int) -> int:
        return self.width * self.depth * x


def test_method_of_plain_class_runs_but_is_not_reproducible(client: MlflowClient) -> None:
    assert Plain(3).apply(2) == 6
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    stored = client.get_run(run.identifier)
    assert stored.data.params == {"arg.x": "2"}
    assert stored.data.tags["pcs.entry_point"] == "apply"
    assert stored.data.tags["mlflow.runName"] == "Plain.apply(x=2)"  # see pcs._naming
    assert not run.is_reproducible
    assert "__init__" in run.not_reproducible_reasons[0]


def test_method_called_through_class() -> None:
    obj = Plain(5)
    assert Plain.apply(obj, 2) == 10
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    assert dict(run.run_command.argument_set.get_function_args("Plain", "apply")) == {"x": 2}


def test_method_of_tracked_class_records_init(client: MlflowClient) -> None:
    model = Model(4, depth=3)
    assert model.predict(2) == 24
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    assert run.is_reproducible
    args = run.run_command.argument_set
    assert dict(args.get_function_args("Model", "__init__")) == {"width": 4, "depth": 3}
    assert dict(args.get_function_args("Model", "predict")) == {"x": 2}
    assert run.run_command.entry_point == "predict"
    assert run.run_command.component.qualname == "Model"
    fresh = ComponentRun.from_existing_run_id(run.identifier)
    assert isinstance(fresh, ComponentRun)
    assert fresh.run_command == run.run_command


def test_tracked_class_is_the_same_class() -> None:
    model = Model(1)
    assert type(model) is Model
    assert isinstance(model, Model)
    assert Model.__init__.__name__ == "__init__"
    assert pcs.last_run() is None  # constructing is not a run


def test_methods_of_two_instances_differ() -> None:
    Model(1).predict(1)
    first = pcs.last_run()
    Model(2).predict(1)
    second = pcs.last_run()
    assert isinstance(first, ComponentRun)
    assert isinstance(second, ComponentRun)
    assert first.run_command != second.run_command


def test_subclass_of_tracked_class_records_its_own_init() -> None:
    class Wide(Model):
        def __init__(self, factor: int) -> None:
            super().__init__(width=10 * factor)

    Wide(2).predict(1)
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    args = run.run_command.argument_set.get_function_args(run.run_command.component.name,
                                                          "__init__")
    assert dict(args) == {"factor": 2}
