"""Translation tasks as seqio tasks, each with train / guide / dev / test splits.

`builder_for(name)` says which of its three families builds a task name
(`catalog.get_task` is the entry point for every task); each is built from
gin-configurable settings:

- `synthetic_translation`: the embedded language pair, generated from a seed
  on first use and cached with its SentencePiece vocabulary (no download);
- `parallel_corpus`: any local corpus, as TSV files or pairs of aligned files;
- `wmtYY_xxyy` (e.g. `wmt14_deen`, `wmt19_lten`): TFDS WMT pairs.

The guide split (for the guided strategy) is carved out of training data:
every n-th training pair (n = 1 / guide_fraction) for files, the first
guide_fraction of TFDS's train split for WMT. It is disjoint from train, and
dev and test are separate files or splits.
"""

import functools
import hashlib
import os
import re
from typing import Callable, Dict, List, Optional, Sequence, Union

import gin
import seqio
import tensorflow as tf

from hpo.core import io as hpo_io
from hpo.core.errors import UserError
from hpo.data import synthetic, vocab as vocab_lib
from hpo.data.prepared import PreparedTfdsSource
from hpo.data.registry import SPLITS, VALIDATION, add_text_task, data_dir, guide_every, guide_percent
from hpo.scoring import bleu

PathOrPair = Union[str, Sequence[str]]


def builder_for(name: str) -> Optional[Callable[[str], seqio.Task]]:
    """The function that builds translation task `name`, or None if it is not one."""
    if name == "synthetic_translation":
        return synthetic_translation_task
    if name == "parallel_corpus":
        return parallel_corpus_task
    if re.fullmatch(r"wmt\d\d_[a-z]{4}", name):
        return wmt_task
    return None


# Translation tasks are scored with sacrebleu, also by seqio's evaluator (T5X's inference evaluation).
TRANSLATION_METRICS = (bleu.seqio_metric,)


# --- The embedded synthetic language pair --------------------------------------------

@gin.configurable
def synthetic_translation_task(name: str = "synthetic_translation", seed: int = 0,
                               num_train: int = 20000, num_dev: int = 500, num_test: int = 500,
                               vocab_size: int = 1000, guide_fraction: float = 0.01,
                               words_per_category: int = None) -> seqio.Task:
    """The embedded task: generated from `seed` on first use, then read from the cache.

    `words_per_category` limits the language to that many nouns, verbs,
    adjectives and adverbs each (None: all ~720 words).
    """
    for key, value in dict(num_train=num_train, num_dev=num_dev, num_test=num_test,
                           vocab_size=vocab_size).items():
        if value <= 0:
            raise UserError(f"synthetic_translation_task.{key} must be positive, got {value}")
    if words_per_category is not None and words_per_category < 2:
        raise UserError(f"synthetic_translation_task.words_per_category must be at least 2, "
                        f"got {words_per_category}")
    words = f"-words{words_per_category}" if words_per_category else ""
    directory = os.path.join(data_dir(), "synthetic_translation",
                             f"seed{seed}-train{num_train}-dev{num_dev}-test{num_test}{words}")
    files = {split: os.path.join(directory, f"{split}.tsv") for split in ("train", "dev", "test")}
    if not all(os.path.isfile(f) for f in files.values()):
        corpus = synthetic.generate_corpus(seed, num_train, num_dev, num_test, words_per_category)
        for split, pairs in corpus.items():
            hpo_io.write_text(files[split], "".join(f"{s}\t{t}\n" for s, t in pairs), every_host=True)
    vocabulary = vocab_lib.cached_vocabulary(
        os.path.join(directory, f"spm{vocab_size}.model"), _train_text(files["train"]), vocab_size)
    counts = {"train": num_train, "dev": num_dev, "test": num_test}
    return add_text_task(name, _file_source(files, guide_fraction, counts), vocabulary,
                     metric_fns=TRANSLATION_METRICS)


# --- Local parallel corpora ---------------------------------------------------------

@gin.configurable
def parallel_corpus_task(name: str = "parallel_corpus", train: PathOrPair = gin.REQUIRED,
                         dev: PathOrPair = gin.REQUIRED, test: PathOrPair = gin.REQUIRED,
                         vocab: str = None, vocab_size: int = 8000,
                         guide_fraction: float = 0.01) -> seqio.Task:
    """A local corpus: each split a TSV file (source<TAB>target) or a pair of aligned files.

    Without `vocab` (a SentencePiece model path), a vocabulary is trained on
    the training data and cached under data_dir().
    """
    files = {"train": train, "dev": dev, "test": test}
    counts = {split: _check_parallel_files(split, spec) for split, spec in files.items()}
    if vocab is None:
        key = hashlib.sha1(repr((_signature(train), vocab_size)).encode()).hexdigest()[:12]
        path = os.path.join(data_dir(), "parallel_corpus", key, f"spm{vocab_size}.model")
        vocabulary = vocab_lib.cached_vocabulary(path, _train_text(train), vocab_size)
    else:
        vocabulary = vocab_lib.load_vocabulary(vocab)
    return add_text_task(name, _file_source(files, guide_fraction, counts), vocabulary,
                     metric_fns=TRANSLATION_METRICS)


def _paths(spec: PathOrPair) -> list:
    return [spec] if isinstance(spec, str) else list(spec)


def _signature(spec: PathOrPair):
    return [(os.path.abspath(p), os.path.getmtime(p), os.path.getsize(p)) for p in _paths(spec)]


def _check_parallel_files(split: str, spec: PathOrPair) -> int:
    """The number of pairs in a split's files; UserError if they are unusable.

    Lines are read as the pipeline reads them (`_read_lines`): CRLF line ends are accepted.
    An empty line, a TSV line without exactly one tab or with an empty side, and files of a
    pair with different numbers of lines are refused, naming the file and line. Sentences
    longer than the task's feature lengths are not an error: the pipeline truncates them
    (seqio's `append_eos_after_trim`, as T5 does).
    """
    paths = _paths(spec)
    if len(paths) not in (1, 2):
        raise UserError(f"{split}: give a TSV file or two aligned files, got {len(paths)} paths")
    counts = []
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"{split} data file not found: {path}")
        lines = _read_lines(path)
        if not any(line.strip() for line in lines):
            raise UserError(f"{split} data file is empty: {path}")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                raise UserError(f"{path}:{number}: empty line (every line must hold "
                                f"{'a source<TAB>target pair' if len(paths) == 1 else 'a sentence'})")
            if len(paths) == 1:
                tabs = line.count("\t")
                if tabs != 1:
                    raise UserError(f"{path}:{number}: expected 'source<TAB>target', found {tabs} tabs"
                                    f"{' (a tab inside a sentence?)' if tabs > 1 else ''}")
                source, target = line.split("\t")
                if not source.strip() or not target.strip():
                    raise UserError(f"{path}:{number}: empty {'source' if not source.strip() else 'target'} "
                                    f"in 'source<TAB>target'")
        counts.append(len(lines))
    if len(counts) == 2 and counts[0] != counts[1]:
        raise UserError(f"{split} files are not aligned: {paths[0]} has {counts[0]} lines, "
                        f"{paths[1]} has {counts[1]}")
    return counts[0]


def _read_lines(path: str) -> List[str]:
    """A data file's lines as tf.data.TextLineDataset reads them: split at '\\n' only, one
    trailing '\\r' removed (a CRLF file gives the lines of its LF twin). UserError unless UTF-8."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); convert the file "
                        f"to UTF-8") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _train_text(spec: PathOrPair):
    """Both sides of a corpus, one sentence at a time, for vocabulary training."""
    for path in _paths(spec):
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield from (part for part in line.rstrip("\n").split("\t") if part)


def _read_pairs(spec: PathOrPair) -> tf.data.Dataset:
    paths = _paths(spec)
    if len(paths) == 1:
        def split_line(line):
            parts = tf.strings.split(line, "\t", maxsplit=1)
            return {"inputs": parts[0], "targets": parts[1]}
        return tf.data.TextLineDataset(paths[0]).map(split_line)
    pairs = tf.data.Dataset.zip(tuple(tf.data.TextLineDataset(p) for p in paths))
    return pairs.map(lambda s, t: {"inputs": s, "targets": t})


def _file_source(files: Dict[str, PathOrPair], guide_fraction: float,
                 counts: Dict[str, int]) -> seqio.DataSource:
    every = guide_every(guide_fraction)
    guide = -(-counts["train"] // every)  # indices 0, every, 2 * every, ...
    sizes = {**counts, "train": counts["train"] - guide, "guide": guide, VALIDATION: counts["dev"]}

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed  # one file per split; seqio shuffles examples
        if split in ("dev", VALIDATION, "test"):
            return _read_pairs(files["dev" if split == VALIDATION else split])
        keep_guide = split == "guide"
        indexed = _read_pairs(files["train"]).enumerate()
        chosen = indexed.filter(lambda i, ex: tf.equal(i % every == 0, keep_guide))
        return chosen.map(lambda i, ex: ex)

    # Known sizes let the pipeline size its shuffle buffer (seqio's in-memory cache stays off).
    return seqio.FunctionDataSource(dataset_fn, splits=(*SPLITS, VALIDATION), num_input_examples=sizes)


# --- TFDS WMT pairs -------------------------------------------------------------------

@gin.configurable
def wmt_task(name: str, vocab: str = None, vocab_size: int = 32000, vocab_examples: int = 200000,
             guide_fraction: float = 0.01, splits: Dict[str, str] = None,
             tfds_version: str = "1.0.0", tfds_data_dir: str = None) -> seqio.Task:
    """`wmtYY_xxyy`: TFDS `wmtYY_translate`, translating xx into yy (one of them English).

    Runs wherever TFDS has the data prepared (it is never downloaded here).
    Default splits: dev = validation, test = test; WMT19 has no test split in
    TFDS, so there dev and test are the two halves of validation.
    """
    year, pair = name[3:5], name.split("_")[1]
    source, target = pair[:2], pair[2:]
    if "en" not in (source, target) or source == target:
        raise UserError(f"task '{name}': one side of a WMT pair must be English (e.g. wmt14_deen)")
    config = f"{source if target == 'en' else target}-en"
    tfds_name = f"wmt{year}_translate/{config}:{tfds_version}"
    pct = guide_percent(guide_fraction)
    default_eval = ({"dev": "validation[:50%]", "test": "validation[50%:]"} if year == "19"
                    else {"dev": "validation", "test": "test"})
    split_map = {"train": f"train[{pct}%:]", "guide": f"train[:{pct}%]", **default_eval, **(splits or {})}
    split_map[VALIDATION] = split_map["dev"]
    source_ds = PreparedTfdsSource(tfds_name, split_map, tfds_data_dir)
    if vocab is None:
        path = os.path.join(data_dir(), "wmt", f"{tfds_name.replace('/', '_').replace(':', '-')}-spm{vocab_size}.model")
        sentences = _tfds_text(source_ds, (source, target), vocab_examples)
        vocabulary = vocab_lib.cached_vocabulary(path, sentences, vocab_size)
    else:
        vocabulary = vocab_lib.load_vocabulary(vocab)
    to_pair = functools.partial(_select_pair, source=source, target=target)
    return add_text_task(name, source_ds, vocabulary, preprocessors=[to_pair], metric_fns=TRANSLATION_METRICS)


def _select_pair(dataset, source, target):
    return dataset.map(lambda ex: {"inputs": ex[source], "targets": ex[target]})


def _tfds_text(source_ds, languages, limit):
    dataset = source_ds.get_dataset("train", shuffle=False).take(limit)
    for example in dataset.as_numpy_iterator():
        for lang in languages:
            yield example[lang].decode("utf-8")
