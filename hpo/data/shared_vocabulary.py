"""The SentencePiece vocabulary every pretraining and GLUE task shares, with T5's sentinels,
so that a pretrained model's embeddings mean the same when it is fine-tuned."""

import functools
import hashlib
import os
import string

import gin
import seqio

from hpo.core.errors import UserError
from hpo.data import synthetic, vocab as vocab_lib
from hpo.data.registry import data_dir
from hpo.scoring import glue_formats

# Sentences of the embedded language the default vocabulary is trained on;
# its few hundred word types each occur many times in this many sentences.
VOCAB_SENTENCES = 10000
# How often GLUE prompts and labels occur there: frequent enough that field
# names become pieces (SentencePiece still splits rare words like labels).
GLUE_REPEATS = 50
_VOCAB_RECIPE = "embedded-v1"  # change when _vocabulary_text changes: retrains cached models


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
        recipe = repr((_VOCAB_RECIPE, VOCAB_SENTENCES, GLUE_REPEATS, glue_formats.TASKS,
                       glue_formats.LABELS, glue_formats.TEXT_FIELDS))
        key = hashlib.sha1(recipe.encode()).hexdigest()[:12]
        path = os.path.join(data_dir(), "t5_vocabulary", f"spm{vocab_size}-{key}.model")
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
    for task in glue_formats.TASKS:
        if task in glue_formats.REGRESSION:
            targets += [glue_formats.target_text(task, step / 5) for step in range(26)]
        else:
            targets += [glue_formats.target_text(task, i) for i in range(len(glue_formats.LABELS[task]))]
    return list(dict.fromkeys(targets))


def _vocabulary_text():
    sentences = [s for s, _ in synthetic.generate_corpus(0, VOCAB_SENTENCES, 1, 1)["train"]]
    yield from sentences
    # GLUE inputs as fine-tuning writes them ("mrpc sentence1: ... sentence2: ...").
    for sentence in sentences[:GLUE_REPEATS]:
        for task in glue_formats.TASKS:
            yield glue_formats.to_text(task, {field: sentence for field in glue_formats.TEXT_FIELDS[task]})
    labels = " ".join(glue_targets())
    for _ in range(GLUE_REPEATS):
        yield labels
    # Every printable ASCII character, so that real English (GLUE's) is never unknown.
    for _ in range(10):
        yield " ".join(string.ascii_letters + string.digits + string.punctuation)
