"""Translate a split, detokenise, and score with sacrebleu (BLEU and chrF).

`Translation` is the experiment's default evaluation: what a finished run is
scored on (dev and test BLEU) and what intermediate evaluations add to the
dev loss (BLEU on part of dev). Other evaluations (GLUE fine-tuning, in
hpo.engine.glue_finetune) offer the same methods. An evaluation scores a run
on either engine through the engine's `decode_split` and `decoding` (`score`);
`dev_metrics` is the built-in engine's (T5X evaluates with its own inference).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Callable, Dict, List, Tuple

import gin
import numpy as np

from hpo.core import faults, io as hpo_io, preemption
from hpo.core.progress import progress_bar
from hpo.data import pipeline
from hpo.scoring.bleu import score

if TYPE_CHECKING:  # the T5X engine scores with this module without loading the built-in model
    from hpo.engine.models.seq2seq import DecodeConfig, Seq2SeqModel


def decode_inputs(model: Seq2SeqModel, params, inputs: np.ndarray, vocabulary, max_len: int,
                  decode: DecodeConfig, label: str = "decode") -> List[str]:
    """Detokenised translations of encoder inputs [N, L], in order."""
    hypotheses = []
    size = decode.batch_size
    with progress_bar(label, total=len(inputs)) as bar:
        for start in range(0, len(inputs), size):
            preemption.check(label)  # decoding is long: a stop need not wait for its end
            chunk = inputs[start:start + size]
            # Pad the last chunk to a full batch so decoding compiles once.
            padded = np.pad(chunk, ((0, size - len(chunk)), (0, 0)))
            tokens = np.asarray(model.predict(params, padded, max_len, decode.method,
                                              decode.beam_size, decode.alpha))[: len(chunk)]
            hypotheses.extend(vocabulary.decode(until_eos(row)) for row in tokens)
            bar.advance(len(chunk))
    return hypotheses


def until_eos(row: np.ndarray) -> List[int]:
    ids = row.tolist()
    return ids[: ids.index(1)] if 1 in ids else [i for i in ids if i != 0]


def decode_split(model: Seq2SeqModel, params, data: pipeline.DatasetConfig, split: str, decode: DecodeConfig,
                 limit: int = None) -> Tuple[List[str], List[str]]:
    """(hypotheses, references) of `split` (its first `limit` examples if given)."""
    inputs, _, references = pipeline.eval_examples(data, split, limit)
    vocabulary = pipeline.vocabulary(data)
    faults.point("evaluation")
    return decode_inputs(model, params, inputs, vocabulary, data.task_feature_lengths["targets"], decode,
                         label=f"decode {split}"), references


def score_split(hypotheses: List[str], references: List[str], hypotheses_path: str = None) -> Dict[str, object]:
    """Scores of a decoded split; the hypotheses go to `hypotheses_path` (one per line) if given."""
    if hypotheses_path:  # references beside them, for paired significance tests
        hpo_io.write_text(hypotheses_path, "".join(h + "\n" for h in hypotheses))
        hpo_io.write_text(os.path.splitext(hypotheses_path)[0] + ".ref", "".join(r + "\n" for r in references))
    return {**score(hypotheses, references), "num_sentences": len(references)}


def record_fields(dev: Dict, test: Dict, run_dir: str, model_dir: str) -> Dict:
    """A translation run's record fields from the scores of its dev and test splits."""
    return {"test_bleu": test["bleu"], "test_chrf": test["chrf"],
            "dev_bleu": dev["bleu"], "dev_chrf": dev["chrf"],
            "bleu_signature": test["bleu_signature"], "chrf_signature": test["chrf_signature"],
            "test_sentences": test["num_sentences"],
            "hypotheses": os.path.relpath(os.path.join(run_dir, "test.hyp"), model_dir)}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Translation:
    """Scores a translation run: dev and test BLEU/chrF with sacrebleu, hypotheses kept."""
    benchmark = "bleu"
    splits = ("dev", "test")  # what the task must have
    objectives = ("dev_bleu", "dev_loss")  # what Optuna may select on
    # Record fields an Optuna trial keeps, so the study's record can report its best trial.
    result_keys = ("dev_bleu", "dev_loss", "test_bleu", "test_chrf", "dev_chrf", "bleu_signature",
                   "chrf_signature", "hypotheses", "test_sentences")

    def dev_metrics(self, experiment) -> Callable[..., Dict[str, float]]:
        """params -> metrics added to the dev loss at intermediate evaluations."""
        def bleu(params):
            scores = score_split(*decode_split(experiment.model, params, experiment.data, "dev", experiment.decode,
                                               limit=experiment.dev_eval_examples))
            return {"bleu": scores["bleu"]}
        return bleu

    def score(self, engine, fit, run_dir: str, seed: int) -> Dict:
        """Record fields of a finished run (`fit`: its engine's end of training): dev and test
        decoded by the engine, scored, and their hypotheses kept in `run_dir`."""
        dev, test = (score_split(*engine.decode_split(fit, split), os.path.join(run_dir, f"{split}.hyp"))
                     for split in ("dev", "test"))
        return {**record_fields(dev, test, run_dir, engine.model_dir), "decode": engine.decoding()}

    @staticmethod
    def summary(record: Dict) -> str:
        return (f"test BLEU {record['test_bleu']:.2f}  chrF {record['test_chrf']:.2f}  "
                f"dev BLEU {record['dev_bleu']:.2f}")
