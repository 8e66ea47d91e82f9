"""Span-corruption pretraining tasks.

- `synthetic_pretraining`: documents of the embedded English-like language
  (`hpo.data.synthetic`, source side), generated from a seed on first use and
  cached under data_dir() (no download);
- `c4_span_corruption`: TFDS `c4/en`, as T5 pretrains, wherever TFDS has the
  data prepared (it is never downloaded here).

Both have splits train / guide / dev: the guide split (for the guided
strategy) is carved out of training data and disjoint from it. Examples go
through T5's steps: text -> targets, tokenize, concatenate and split into
chunks, span corruption, EOS.

Every pretraining and GLUE task takes its vocabulary from
`shared_vocabulary.t5_vocabulary()`, so a pretrained model's embeddings mean the
same when it is fine-tuned.
"""

import functools
import os
from typing import Callable, Optional

import gin
import seqio
import tensorflow as tf

from hpo.core import io as hpo_io
from hpo.core.errors import UserError
from hpo.data import span_corruption as corruption, synthetic
from hpo.data.prepared import PreparedTfdsSource
from hpo.data.registry import add_task, data_dir, guide_every, guide_percent
from hpo.data.shared_vocabulary import t5_vocabulary

SPLITS = ("train", "guide", "dev")


def builder_for(name: str) -> Optional[Callable[[str], seqio.Task]]:
    """The function that builds pretraining task `name`, or None if it is not one."""
    return {"synthetic_pretraining": synthetic_pretraining_task, "c4_span_corruption": c4_task}.get(name)


def _register(name: str, source: seqio.DataSource, noise_density: float,
              mean_noise_span_length: float) -> seqio.Task:
    feature = seqio.Feature(t5_vocabulary(), add_eos=True)
    corrupt = functools.partial(corruption.span_corruption, noise_density=noise_density,
                                mean_noise_span_length=mean_noise_span_length)
    return add_task(
        name, source, {"inputs": feature, "targets": feature},
        [functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
         seqio.preprocessors.tokenize,
         seqio.CacheDatasetPlaceholder(),  # as T5: corruption differs each epoch
         corrupt,
         seqio.preprocessors.append_eos_after_trim])


@gin.configurable
def synthetic_pretraining_task(name: str = "synthetic_pretraining", seed: int = 0,
                               num_train: int = 20000, num_dev: int = 500,
                               sentences_per_document: int = 4, guide_fraction: float = 0.01,
                               noise_density: float = 0.15,
                               mean_noise_span_length: float = 3.0) -> seqio.Task:
    """Documents of `sentences_per_document` embedded-language sentences, one per line.

    Generated from `seed` on first use, then read from the cache. The guide
    split is every n-th training document (n = 1 / guide_fraction).
    """
    for key, value in dict(num_train=num_train, num_dev=num_dev,
                           sentences_per_document=sentences_per_document).items():
        if value <= 0:
            raise UserError(f"synthetic_pretraining_task.{key} must be positive, got {value}")
    directory = os.path.join(data_dir(), "synthetic_pretraining",
                             f"seed{seed}-train{num_train}-dev{num_dev}-doc{sentences_per_document}")
    files = {split: os.path.join(directory, f"{split}.txt") for split in ("train", "dev")}
    if not all(os.path.isfile(f) for f in files.values()):
        per_doc = sentences_per_document
        corpus = synthetic.generate_corpus(seed, num_train * per_doc, num_dev * per_doc, 1)
        for split, path in files.items():
            sentences = [source for source, _ in corpus[split]]
            documents = [" ".join(sentences[i:i + per_doc]) for i in range(0, len(sentences), per_doc)]
            hpo_io.write_text(path, "".join(doc + "\n" for doc in documents), every_host=True)
    every = guide_every(guide_fraction)
    guide = -(-num_train // every)  # documents 0, every, 2 * every, ...

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed  # one file per split; seqio shuffles examples
        lines = tf.data.TextLineDataset(files["dev" if split == "dev" else "train"])
        if split != "dev":
            keep_guide = split == "guide"
            lines = lines.enumerate().filter(lambda i, _: tf.equal(i % every == 0, keep_guide))
            lines = lines.map(lambda _, line: line)
        return lines.map(lambda line: {"text": line})

    sizes = {"train": num_train - guide, "guide": guide, "dev": num_dev}
    source = seqio.FunctionDataSource(dataset_fn, splits=SPLITS, num_input_examples=sizes)
    return _register(name, source, noise_density, mean_noise_span_length)


@gin.configurable
def c4_task(name: str = "c4_span_corruption", tfds_name: str = "c4/en:3.1.0",
            tfds_data_dir: str = None, guide_fraction: float = 0.01,
            noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> seqio.Task:
    """TFDS C4's "text": guide = the first guide_fraction of train, dev = validation.

    3.1.0 is the version the installed TFDS's code builds (`tfds build c4/en`).
    T5 pretrained on 3.0.1, which current TFDS no longer defines: TFDS reads it
    only from files prepared by an older TFDS, e.g.
    `c4_task.tfds_name = 'c4/en:3.0.1'` with `c4_task.tfds_data_dir` set to
    the folder that holds c4/en/3.0.1; without them it fails with "Dataset c4
    cannot be loaded at version 3.0.1".
    """
    source = PreparedTfdsSource(tfds_name, c4_splits(guide_fraction), tfds_data_dir)
    return _register(name, source, noise_density, mean_noise_span_length)


def c4_splits(guide_fraction: float) -> dict:
    """Our split names -> TFDS C4 splits: the guide is train's first guide_fraction."""
    pct = guide_percent(guide_fraction)
    return {"train": f"train[{pct}%:]", "guide": f"train[:{pct}%]", "dev": "validation"}
