"""hpo's tasks in T5X runs: their vocabulary for gin, and the guide batches of guided runs.

T5X's `utils.get_dataset` reads hpo's seqio tasks like any other. A guided run
needs a guide batch with every training batch: `guided_dataset_fn` zips the
training batches with batches of the task's guide split (keys prefixed
`guide/`), so T5X's input pipeline shards, feeds and checkpoints both.
"""

import dataclasses

import seqio
from t5x import utils

from hpo.core.errors import UserError
from hpo.data import catalog, pipeline
from hpo.t5x_backend.trainer import GUIDE


def vocabulary(task: str) -> seqio.Vocabulary:
    """The task's vocabulary (T5X configs: `VOCABULARY = @hpo_data.vocabulary()`)."""
    return catalog.get_task(task).output_features["targets"].vocabulary


def padded_vocab_size(task: str, multiple: int = 128) -> int:
    """The vocabulary size rounded up as T5X pads it (`network.T5Config.vocab_size`)."""
    return -(-vocabulary(task).vocab_size // multiple) * multiple


def require_guide_split(task_name: str) -> None:
    task = catalog.get_task(task_name)
    for sub in seqio.get_subtasks(task):
        if "guide" not in sub.splits:
            raise UserError(f"guided: task '{sub.name}' has no 'guide' split (splits: {', '.join(sub.splits)}); "
                            f"hpo's tasks carve one out of their training data")


def guided_dataset_fn(refresh_every: int):
    """A T5X `get_dataset_fn` whose batches also carry a guide batch of the same size,
    replaced every `refresh_every` steps (0: one guide batch for the whole run)."""

    def get_dataset(cfg: utils.DatasetConfig, shard_id: int, num_shards: int, feature_converter_cls,
                    num_epochs=None, continue_from_last_checkpoint: bool = False):
        train = utils.get_dataset(cfg, shard_id, num_shards, feature_converter_cls, num_epochs,
                                  continue_from_last_checkpoint)
        guide = utils.get_dataset(dataclasses.replace(cfg, split="guide"), shard_id, num_shards,
                                  feature_converter_cls, num_epochs=None)
        return pipeline.with_guide(train, guide, refresh_every).map(
            lambda t, g: {**t, **{GUIDE + k: v for k, v in g.items()}})

    return get_dataset
