"""Imports every module that defines gin configurables, so gin knows their names."""

from hpo import experiment, optim  # noqa: F401
from hpo.data import pipeline, tasks  # noqa: F401
from hpo.models import seq2seq  # noqa: F401
from hpo import strategies  # noqa: F401
from hpo.data import glue, pretraining, registry, shared_vocabulary  # noqa: F401
from hpo.glue import finetune  # noqa: F401
from hpo import probe  # noqa: F401  (Probe.* in a gin file shared by `hpo run` and `hpo probe`)
from hpo import preemption  # noqa: F401
