"""BLEU and chrF with sacrebleu: for our scoring, and as a seqio metric function (T5X's evaluation)."""

import logging
from typing import Dict, Sequence

import sacrebleu

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


def seqio_metric(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
    """A seqio metric function: corpus BLEU and chrF of detokenised predictions."""
    scores = score(predictions, targets)
    return {"bleu": scores["bleu"], "chrf": scores["chrf"]}
