"""What every task family shares, so that none imports another: the data cache, split
names, carving the guide split out of training data, and (re-)registering with seqio.

The families are `tasks` (translation), `pretraining` (span corruption) and `glue`
(GLUE fine-tuning); `catalog.get_task(name)` finds a task in whichever builds it.
"""

import os
from typing import Sequence

import gin
import seqio

from hpo.core.errors import UserError

SPLITS = ("train", "guide", "dev", "test")
# T5X's run configs evaluate on 'validation': there it is another name for dev.
VALIDATION = "validation"


@gin.configurable
def data_dir(path: str = None) -> str:
    """Where generated corpora and vocabularies are cached."""
    path = path or os.environ.get("HPO_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "hpo")
    return os.path.abspath(path)


def guide_every(guide_fraction: float) -> int:
    """For files: every n-th training example goes to the guide split."""
    if not 0 < guide_fraction < 1:
        raise UserError(f"guide_fraction must be in (0, 1), got {guide_fraction}")
    return max(2, round(1 / guide_fraction))


def guide_percent(guide_fraction: float) -> float:
    """For TFDS: the guide split is this first percentage of train (`train[:p%]`)."""
    pct = round(guide_fraction * 100, 6)
    if not 0 < pct < 100:
        raise UserError(f"guide_fraction must be in (0, 1), got {guide_fraction}")
    return pct


def add_task(name: str, source: seqio.DataSource, output_features, preprocessors: Sequence,
             metric_fns: Sequence = ()) -> seqio.Task:
    """Registers task `name`, replacing an earlier one: a task stays in step with the gin config."""
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(name, source=source, preprocessors=list(preprocessors),
                                  output_features=output_features, metric_fns=list(metric_fns))


def add_text_task(name: str, source: seqio.DataSource, vocabulary: seqio.Vocabulary,
                  preprocessors: Sequence = (), metric_fns: Sequence = ()) -> seqio.Task:
    """A text-to-text task: `preprocessors` give {"inputs", "targets"} strings, then tokenize and EOS."""
    feature = seqio.Feature(vocabulary, add_eos=True)
    return add_task(name, source, {"inputs": feature, "targets": feature},
                    [*preprocessors, seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
                    metric_fns)
