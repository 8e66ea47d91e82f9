"""The TFDS datasets a real run reads, taken from the gin file a user runs (parsed as `hpo run`
parses it), so that the mock-data tests build the very builder name, config and version."""

import tempfile

import seqio
import tensorflow_datasets as tfds

from hpo.cli import gin_config as config_lib
from hpo.engine.experiment import Experiment


def run_task_names(gin_file: str, *bindings: str) -> list:
    """The tasks `hpo run --gin_file=<gin_file>` trains on, then those it scores with (GLUE)."""
    config_lib.parse([gin_file], ["MODEL_DIR = '/unused'", *bindings])
    experiment = Experiment()
    scoring = getattr(experiment.evaluation, "task_names", list)()
    return [experiment.task, *scoring]


def assert_tfds_code_builds(task: seqio.Task) -> str:
    """TFDS's own version check, the one that failed for users at C4 3.0.1 ("cannot be loaded at
    version ..."): the installed TFDS's code must define the task's builder, config and version.
    Against an empty data dir, so files an older TFDS prepared on this machine cannot hide it.
    Returns the task's TFDS name."""
    assert isinstance(task.source, seqio.TfdsDataSource), task.name
    tfds_name = task.source.tfds_dataset.name
    name, kwargs = tfds.core.naming.parse_builder_name_kwargs(tfds_name)
    assert "version" in kwargs, f"{tfds_name}: a run should pin the version it reads"
    with tempfile.TemporaryDirectory() as empty:
        builder = tfds.builder_cls(str(name))(**kwargs, data_dir=empty)
    assert str(builder.version) == kwargs["version"], tfds_name
    return tfds_name
