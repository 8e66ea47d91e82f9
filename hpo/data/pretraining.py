"""Span-corruption pretraining tasks and the vocabulary they share with fine-tuning.

- `synthetic_pretraining`: documents of the embedded English-like language
  (`hpo.data.synthetic`, source side), generated from a seed on first use and
  cached under data_dir() (no download);
- `c4_span_corruption`: TFDS `c4`, as T5 pretrains, wherever TFDS has the
  data prepared (it is never downloaded here).

Both have splits train / guide / dev: the guide split (for the guided
strategy) is carved out of training data and disjoint from it. Examples go
through T5's steps: text -> targets, tokenize, concatenate and split into
chunks, span corruption, EOS.

Every pretraining and GLUE task takes its vocabulary from `t5_vocabulary()`,
so a pretrained model's embeddings mean the same when it is fine-tuned.
"""

import functools
import hashlib
import os
import string

import gin
import seqio
import tensorflow as tf

from hpo import io as hpo_io
from hpo.data import span_corruption as corruption
from hpo.data import synthetic, tasks, vocab as vocab_lib
from hpo.errors import UserError
from hpo.glue import formats

SPLITS = ("train", "guide", "dev")
# Sentences of the embedded language the default vocabulary is trained on;
# its few hundred word types each occur many times in this many sentences.
VOCAB_SENTENCES = 10000
# How often GLUE prompts and labels occur there: frequent enough that field
# names become pieces (SentencePiece still splits rare words like labels).
GLUE_REPEATS = 50
_VOCAB_RECIPE = "embedded-v1"  # change when _vocabulary_text changes: retrains cached models


# --- The shared vocabulary ------------------------------------------------------------

@gin.configurable
def t5_vocabulary(path: str = None, vocab_size: int = 2000,
                  extra_ids: int = 100) -> seqio.SentencePieceVocabulary:
    """The SentencePiece vocabulary of every pretraining and GLUE task, with sentinels.

    With `path`, that model (e.g. T5's public cc_all.32000 model) plus
    `extra_ids` sentinel ids. Without, a model trained on the embedded
    language and the GLUE prompt and label words, cached under data_dir();
    SentencePiece stops below `vocab_size` when the text supports fewer
    pieces. Repeated calls return the same object.
    """
    if extra_ids < 0:
        raise UserError(f"t5_vocabulary.extra_ids must be >= 0, got {extra_ids}")
    if path is None:
        if vocab_size <= 0:
            raise UserError(f"t5_vocabulary.vocab_size must be positive, got {vocab_size}")
        recipe = repr((_VOCAB_RECIPE, VOCAB_SENTENCES, GLUE_REPEATS, formats.TASKS,
                       formats.LABELS, formats.TEXT_FIELDS))
        key = hashlib.sha1(recipe.encode()).hexdigest()[:12]
        path = os.path.join(tasks.data_dir(), "t5_vocabulary", f"spm{vocab_size}-{key}.model")
        if not os.path.isfile(path):
            vocab_lib.train_sentencepiece(path, _vocabulary_text(), vocab_size)
    elif not os.path.isfile(path):
        raise UserError(f"vocabulary file not found: {path}")
    return _load(os.path.abspath(path), os.path.getmtime(path), extra_ids)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float, extra_ids: int) -> seqio.SentencePieceVocabulary:
    del mtime  # part of the cache key only: a retrained file is loaded afresh
    return vocab_lib.load_vocabulary(path, extra_ids)


def glue_targets():
    """Every target string GLUE fine-tuning uses: label names and STS-B's "0.0".."5.0"."""
    targets = []
    for task in formats.TASKS:
        if task in formats.REGRESSION:
            targets += [formats.target_text(task, step / 5) for step in range(26)]
        else:
            targets += [formats.target_text(task, i) for i in range(len(formats.LABELS[task]))]
    return list(dict.fromkeys(targets))


def _vocabulary_text():
    sentences = [s for s, _ in synthetic.generate_corpus(0, VOCAB_SENTENCES, 1, 1)["train"]]
    yield from sentences
    # GLUE inputs as fine-tuning writes them ("mrpc sentence1: ... sentence2: ...").
    for sentence in sentences[:GLUE_REPEATS]:
        for task in formats.TASKS:
            yield formats.to_text(task, {field: sentence for field in formats.TEXT_FIELDS[task]})
    labels = " ".join(glue_targets())
    for _ in range(GLUE_REPEATS):
        yield labels
    # Every printable ASCII character, so that real English (GLUE's) is never unknown.
    for _ in range(10):
        yield " ".join(string.ascii_letters + string.digits + string.punctuation)


# --- Tasks ----------------------------------------------------------------------------

def _register(name: str, source: seqio.DataSource, noise_density: float,
              mean_noise_span_length: float) -> seqio.Task:
    # Re-registering keeps a task in step with the current gin config.
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    feature = seqio.Feature(t5_vocabulary(), add_eos=True)
    corrupt = functools.partial(corruption.span_corruption, noise_density=noise_density,
                                mean_noise_span_length=mean_noise_span_length)
    return seqio.TaskRegistry.add(
        name, source=source,
        preprocessors=[functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
                       seqio.preprocessors.tokenize,
                       seqio.CacheDatasetPlaceholder(),  # as T5: corruption differs each epoch
                       corrupt,
                       seqio.preprocessors.append_eos_after_trim],
        output_features={"inputs": feature, "targets": feature})


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
    directory = os.path.join(tasks.data_dir(), "synthetic_pretraining",
                             f"seed{seed}-train{num_train}-dev{num_dev}-doc{sentences_per_document}")
    files = {split: os.path.join(directory, f"{split}.txt") for split in ("train", "dev")}
    if not all(os.path.isfile(f) for f in files.values()):
        per_doc = sentences_per_document
        corpus = synthetic.generate_corpus(seed, num_train * per_doc, num_dev * per_doc, 1)
        for split, path in files.items():
            sentences = [source for source, _ in corpus[split]]
            documents = [" ".join(sentences[i:i + per_doc]) for i in range(0, len(sentences), per_doc)]
            hpo_io.write_text(path, "".join(doc + "\n" for doc in documents))
    every = tasks._guide_every(guide_fraction)
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
def c4_task(name: str = "c4_span_corruption", tfds_name: str = "c4/en:3.0.1",
            tfds_data_dir: str = None, guide_fraction: float = 0.01,
            noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> seqio.Task:
    """TFDS C4's "text": guide = the first guide_fraction of train, dev = validation.

    3.0.1 is the version T5 pretrained on; TFDS reads it from prepared files
    (its code builds 3.1.0, which `tfds_name="c4/en:3.1.0"` selects).
    """
    source = seqio.TfdsDataSource(tfds_name=tfds_name, splits=c4_splits(guide_fraction),
                                  tfds_data_dir=tfds_data_dir)
    return _register(name, source, noise_density, mean_noise_span_length)


def c4_splits(guide_fraction: float) -> dict:
    """Our split names -> TFDS C4 splits: the guide is train's first guide_fraction."""
    pct = round(guide_fraction * 100, 6)
    if not 0 < pct < 100:
        raise UserError(f"guide_fraction must be in (0, 1), got {guide_fraction}")
    return {"train": f"train[{pct}%:]", "guide": f"train[:{pct}%]", "dev": "validation"}
