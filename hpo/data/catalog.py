"""`get_task(name)`: the seqio task or mixture called `name`, built (and registered) by
the family of hpo's tasks that knows the name, else from seqio's registry."""

import seqio

from hpo.core.errors import UserError
from hpo.data import glue_tasks, pretraining, tasks

FAMILIES = (tasks, pretraining, glue_tasks)  # each has builder_for(name): its builder of task `name`, or None


def get_task(name: str) -> seqio.Task:
    for family in FAMILIES:
        builder = family.builder_for(name)
        if builder is not None:
            return builder(name)
    if name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names():
        return seqio.get_mixture_or_task(name)
    raise UserError(f"unknown task '{name}' (built in: synthetic_translation, parallel_corpus, "
                    f"wmtYY_xxyy such as wmt14_deen, synthetic_pretraining, c4_span_corruption; "
                    f"GLUE: glue_<task>, glue_tsv_<task>, synthetic_<cola|sst2|mrpc|stsb>; "
                    f"or a seqio task registered by an imported module)")
