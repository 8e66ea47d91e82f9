"""Translate a split, detokenise, and score with sacrebleu (BLEU and chrF)."""

import logging
import os
from typing import Dict, List, Sequence

import numpy as np
import sacrebleu

from hpo import io as hpo_io
from hpo.data import pipeline
from hpo.models.seq2seq import DecodeConfig, Seq2SeqModel
from hpo.progress import progress_bar

# The embedded language writes its period as a separate token; sacrebleu's
# 13a tokenizer splits it anyway, so its "forgot to detokenize?" warning is noise.
logging.getLogger("sacrebleu").setLevel(logging.ERROR)


def score(hypotheses: Sequence[str], references: Sequence[str]) -> Dict[str, object]:
    """Corpus BLEU and chrF, each with the sacrebleu signature that reproduces it."""
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    refs = [list(references)]
    return {
        "bleu": bleu.corpus_score(list(hypotheses), refs).score,
        "chrf": chrf.corpus_score(list(hypotheses), refs).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def translate(model: Seq2SeqModel, params, inputs: np.ndarray, vocabulary, max_len: int,
              decode: DecodeConfig, label: str = "decode") -> List[str]:
    """Detokenised translations of encoder inputs [N, L], in order."""
    hypotheses = []
    size = decode.batch_size
    with progress_bar(label, total=len(inputs)) as bar:
        for start in range(0, len(inputs), size):
            chunk = inputs[start:start + size]
            # Pad the last chunk to a full batch so decoding compiles once.
            padded = np.pad(chunk, ((0, size - len(chunk)), (0, 0)))
            tokens = np.asarray(model.predict(params, padded, max_len, decode.method,
                                              decode.beam_size, decode.alpha))[: len(chunk)]
            hypotheses.extend(vocabulary.decode(_until_eos(row)) for row in tokens)
            bar.advance(len(chunk))
    return hypotheses


def _until_eos(row: np.ndarray) -> List[int]:
    ids = row.tolist()
    return ids[: ids.index(1)] if 1 in ids else [i for i in ids if i != 0]


def evaluate_split(model: Seq2SeqModel, params, data: pipeline.DatasetConfig, split: str,
                   decode: DecodeConfig, hypotheses_path: str = None, limit: int = None) -> Dict[str, object]:
    """Scores of `split`; the hypotheses go to `hypotheses_path` (one per line) if given."""
    inputs, _, references = pipeline.eval_examples(data, split, limit)
    vocabulary = pipeline.vocabulary(data)
    hypotheses = translate(model, params, inputs, vocabulary, data.task_feature_lengths["targets"],
                           decode, label=f"decode {split}")
    if hypotheses_path:  # references beside them, for paired significance tests
        hpo_io.write_text(hypotheses_path, "".join(h + "\n" for h in hypotheses))
        hpo_io.write_text(os.path.splitext(hypotheses_path)[0] + ".ref", "".join(r + "\n" for r in references))
    return {**score(hypotheses, references), "num_sentences": len(references)}
