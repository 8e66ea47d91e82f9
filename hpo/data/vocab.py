"""SentencePiece vocabularies trained locally and cached (no download)."""

import io
import os
from typing import Iterable

import seqio
import sentencepiece as spm

from hpo.core.errors import UserError

# seqio's conventions: 0 is padding (and the decoder's start token), 1 is EOS.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


def train_sentencepiece(path: str, sentences: Iterable[str], vocab_size: int) -> None:
    """Trains a unigram SentencePiece model on `sentences` and writes it to `path`.

    `hard_vocab_limit=False` lets SentencePiece stop below `vocab_size` when
    the text does not support that many pieces instead of refusing.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        minloglevel=2, num_threads=2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(model.getvalue())
    os.replace(tmp, path)


def load_vocabulary(path: str, extra_ids: int = 0) -> seqio.SentencePieceVocabulary:
    if not os.path.isfile(path):
        raise UserError(f"vocabulary file not found: {path}")
    return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)


def cached_vocabulary(path: str, sentences: Iterable[str], vocab_size: int,
                      extra_ids: int = 0) -> seqio.SentencePieceVocabulary:
    """Loads the vocabulary at `path`, training it first if it is not there."""
    if not os.path.isfile(path):
        train_sentencepiece(path, sentences, vocab_size)
    return load_vocabulary(path, extra_ids)
