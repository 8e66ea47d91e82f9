"""Imports every module that defines gin configurables, so gin knows their names."""

from hpo import strategies  # noqa: F401
from hpo.core import preemption  # noqa: F401
from hpo.data import glue_tasks, pipeline, pretraining, registry, shared_vocabulary, tasks  # noqa: F401
from hpo.engine import experiment, glue_finetune  # noqa: F401
from hpo.engine.models import seq2seq  # noqa: F401
from hpo.method import optim  # noqa: F401
from hpo.run import probe  # noqa: F401  (Probe.* in a gin file shared by `hpo run` and `hpo probe`)
