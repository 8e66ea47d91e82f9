"""Batches for training and examples for evaluation, from seqio tasks."""

import dataclasses
import itertools
from typing import Iterator, List, Mapping, Tuple

import gin
import numpy as np
import seqio
import tensorflow as tf

from hpo.data import tasks
from hpo.errors import UserError

# tf.data only feeds the host: keep TensorFlow off the accelerators JAX uses
# (as the Flax WMT example does), or it would claim their memory.
tf.config.set_visible_devices([], "GPU")

# Random preprocessing (span corruption) of evaluation splits: the same every time,
# so dev losses compare across runs and strategies.
EVAL_SEED = 0


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """What to feed the trainer (T5X's DatasetConfig, trimmed to what we use)."""
    mixture_or_task_name: str = gin.REQUIRED
    task_feature_lengths: Mapping[str, int] = gin.REQUIRED
    batch_size: int = gin.REQUIRED
    pack: bool = True
    shuffle_buffer_size: int = 10000

    def __post_init__(self):
        if self.batch_size <= 0:
            raise UserError(f"batch size must be positive, got {self.batch_size}")
        lengths = dict(self.task_feature_lengths)
        if set(lengths) != {"inputs", "targets"} or min(lengths.values()) <= 0:
            raise UserError(f"TASK_FEATURE_LENGTHS must give positive 'inputs' and 'targets' "
                            f"lengths, got {lengths}")


def vocabulary(config: DatasetConfig) -> seqio.Vocabulary:
    return tasks.get_task(config.mixture_or_task_name).output_features["targets"].vocabulary


def train_batches(config: DatasetConfig, split: str = "train", seed: int = 0,
                  start_batch: int = 0, batch_size: int = None) -> Iterator[Mapping[str, np.ndarray]]:
    """Endless shuffled batches of `split` in the encoder-decoder feature layout.

    The order is a function of `seed` alone, so a resumed run skips
    `start_batch` batches and sees exactly what an uninterrupted run would.
    """
    task = tasks.get_task(config.mixture_or_task_name)
    lengths = dict(config.task_feature_lengths)
    # seqio shuffles after repeating: a buffer larger than the split would
    # make it read the split many times over before the first batch.
    options = {}
    if isinstance(task, seqio.Task):  # a mixture shuffles each of its tasks with seqio's default buffer
        size = _split_size(task, split)
        options["shuffle_buffer_size"] = min(config.shuffle_buffer_size, size) if size else config.shuffle_buffer_size
    ds = task.get_dataset(sequence_length=lengths, split=split, shuffle=True, seed=seed,
                          num_epochs=None, try_in_mem_cache=False, **options)
    ds = seqio.EncDecFeatureConverter(pack=config.pack)(ds, lengths)
    ds = ds.batch(batch_size or config.batch_size, drop_remainder=True)
    ds = ds.skip(start_batch).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


def train_and_guide_batches(config: DatasetConfig, seed: int, start: int, guide_size: int,
                            refresh_every: int) -> Iterator[Mapping[str, Mapping[str, np.ndarray]]]:
    """{"train", "guide"} batches from step `start` on, for the guided strategy.

    The guide batch comes from the guide split and is replaced every
    `refresh_every` steps (0: one batch for the whole run); like the training
    batches it is a function of the seed and the step alone.
    """
    train = train_batches(config, seed=seed, start_batch=start)
    guides = train_batches(config, split="guide", seed=seed, batch_size=guide_size,
                           start_batch=start // refresh_every if refresh_every else 0)
    guide = next(guides)
    for step in itertools.count(start):
        if refresh_every and step > start and step % refresh_every == 0:
            guide = next(guides)
        yield {"train": next(train), "guide": guide}


def _split_size(task: seqio.Task, split: str):
    try:
        return task.num_input_examples(split)
    except (KeyError, ValueError):  # TFDS without split metadata (e.g. mock data)
        return None


def eval_examples(config: DatasetConfig, split: str, limit: int = None
                  ) -> Tuple[np.ndarray, List[str], List[str]]:
    """(encoder inputs [N, L] padded, source texts, reference texts) of `split`, in order."""
    task = tasks.get_task(config.mixture_or_task_name)
    lengths = dict(config.task_feature_lengths)
    ds = task.get_dataset(sequence_length=lengths, split=split, shuffle=False, num_epochs=1,
                          seed=EVAL_SEED, try_in_mem_cache=False)
    if limit:
        ds = ds.take(limit)
    inputs, sources, references = [], [], []
    for ex in ds.as_numpy_iterator():
        tokens = ex["inputs"][: lengths["inputs"]]
        inputs.append(np.pad(tokens, (0, lengths["inputs"] - len(tokens))))
        sources.append(ex["inputs_pretokenized"].decode("utf-8"))
        references.append(ex["targets_pretokenized"].decode("utf-8"))
    if not inputs:
        raise UserError(f"split '{split}' of task '{config.mixture_or_task_name}' is empty")
    return np.stack(inputs).astype(np.int32), sources, references


def eval_batches(config: DatasetConfig, split: str, limit: int = None) -> List[Mapping[str, np.ndarray]]:
    """Unpacked, unshuffled batches of `split` for teacher-forced loss.

    The last batch is padded with all-zero rows (zero loss weight) so every
    batch has one shape and the eval step compiles once.
    """
    task = tasks.get_task(config.mixture_or_task_name)
    lengths = dict(config.task_feature_lengths)
    ds = task.get_dataset(sequence_length=lengths, split=split, shuffle=False, num_epochs=1,
                          seed=EVAL_SEED, try_in_mem_cache=False)
    if limit:
        ds = ds.take(limit)
    ds = seqio.EncDecFeatureConverter(pack=False)(ds, lengths).batch(config.batch_size)
    batches = []
    for batch in ds.as_numpy_iterator():
        missing = config.batch_size - len(batch["encoder_input_tokens"])
        batches.append({k: np.pad(v, ((0, missing),) + ((0, 0),) * (v.ndim - 1)) for k, v in batch.items()})
    return batches
