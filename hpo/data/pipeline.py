"""Batches for training and examples for evaluation, from seqio tasks."""

import dataclasses
from typing import Callable, List, Mapping, Tuple

import gin
import numpy as np
import seqio
import tensorflow as tf

from hpo.core.errors import UserError, positive_int
from hpo.data import catalog

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
        if not isinstance(self.mixture_or_task_name, str) or not self.mixture_or_task_name:
            raise UserError(f"MIXTURE_OR_TASK_NAME must name a task, got {self.mixture_or_task_name!r}")
        positive_int(self.batch_size, "BATCH_SIZE", "DatasetConfig.batch_size")
        lengths = self.task_feature_lengths
        if (not isinstance(lengths, Mapping) or set(lengths) != {"inputs", "targets"}
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in lengths.values())):
            raise UserError(f"TASK_FEATURE_LENGTHS must give positive integer 'inputs' and 'targets' "
                            f"lengths, got {lengths!r}")
        positive_int(self.shuffle_buffer_size, "DatasetConfig.shuffle_buffer_size")


def vocabulary(config: DatasetConfig) -> seqio.Vocabulary:
    return catalog.get_task(config.mixture_or_task_name).output_features["targets"].vocabulary


class Batches:
    """An endless stream of numpy batches from a tf.data pipeline, whose position is saved
    and restored with tf.data's own iterator checkpoints: resuming at step 100,000 costs
    what it costs at step 100, and gives exactly the batches an uninterrupted run sees."""

    def __init__(self, dataset: tf.data.Dataset):
        self._iterator = iter(dataset)
        self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)

    def __iter__(self):
        return self

    def __next__(self):
        return tf.nest.map_structure(lambda t: t.numpy(), next(self._iterator))

    def save(self, path: str) -> None:
        self._checkpoint.write(path)

    def restore(self, path: str) -> None:
        self._checkpoint.read(path).assert_consumed()


def train_dataset(config: DatasetConfig, split: str = "train", seed: int = 0,
                  batch_size: int = None) -> tf.data.Dataset:
    """Endless shuffled batches of `split` in the encoder-decoder feature layout; the order
    is a function of `seed` alone."""
    task = catalog.get_task(config.mixture_or_task_name)
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
    return ds.batch(batch_size or config.batch_size, drop_remainder=True)


def train_batches(config: DatasetConfig, split: str = "train", seed: int = 0, batch_size: int = None) -> Batches:
    """`train_dataset` as a checkpointable stream of numpy batches."""
    return Batches(train_dataset(config, split, seed, batch_size).prefetch(tf.data.AUTOTUNE))


def stream_maker(config: DatasetConfig, seed: int) -> Callable[[], Batches]:
    """A function that starts `train_batches(config, seed=seed)` afresh, the dataset built once
    (building it takes seconds; a PBT member starts its stream at every segment)."""
    dataset = train_dataset(config, seed=seed).prefetch(tf.data.AUTOTUNE)
    return lambda: Batches(dataset)


def with_guide(train: tf.data.Dataset, guide: tf.data.Dataset, refresh_every: int) -> tf.data.Dataset:
    """(training batch, guide batch) pairs: guide batch i serves steps i*refresh_every ...
    (i+1)*refresh_every - 1; refresh_every 0: the first guide batch serves the whole run.
    One pipeline, so one checkpoint holds both positions (both backends use it)."""
    if refresh_every:
        guide = guide.flat_map(lambda batch: tf.data.Dataset.from_tensors(batch).repeat(refresh_every))
    else:
        guide = guide.take(1).cache().repeat()
    return tf.data.Dataset.zip((train, guide))


def train_and_guide_batches(config: DatasetConfig, seed: int, guide_size: int, refresh_every: int) -> Batches:
    """{"train", "guide"} batches for the guided strategy: the guide batch comes from the guide
    split and, like the training batches, is a function of the seed and the step alone."""
    pairs = with_guide(train_dataset(config, seed=seed),
                       train_dataset(config, split="guide", seed=seed, batch_size=guide_size), refresh_every)
    return Batches(pairs.map(lambda t, g: {"train": t, "guide": g}).prefetch(tf.data.AUTOTUNE))


def _split_size(task: seqio.Task, split: str):
    try:
        return task.num_input_examples(split)
    except (KeyError, ValueError):  # TFDS without split metadata (e.g. mock data)
        return None


def eval_examples(config: DatasetConfig, split: str, limit: int = None
                  ) -> Tuple[np.ndarray, List[str], List[str]]:
    """(encoder inputs [N, L] padded, source texts, reference texts) of `split`, in order."""
    task = catalog.get_task(config.mixture_or_task_name)
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
    task = catalog.get_task(config.mixture_or_task_name)
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
