"""Scoring T5X runs: T5X's evaluations during training, T5X's inference for the final scores.

During training, T5X's own loops evaluate: teacher-forced dev loss (the
trainer's `hpo/cross_entropy`, as on the built-in engine) and, with an
`infer_eval_dataset_cfg`, dev BLEU from the task's seqio metric function.
`EvalReport`, a T5X action, collects them into the run's history and hands
them to the strategy (Optuna's pruning); it also stops a run whose train or
dev loss is no longer finite (`diverged`, as on the built-in engine). At the end, `decode_split` decodes dev
and test with T5X's partitioned inference (`utils.get_infer_fn` over the
model's `predict_batch`) and sacrebleu scores them, hypotheses kept.
"""

import math
from typing import Callable, Dict, List, Optional, Tuple

import jax
import numpy as np
import tensorflow as tf
from t5x import trainer as trainer_lib
from t5x import utils

from hpo.core.progress import progress_bar
from hpo.data import pipeline
from hpo.engine import evaluate
from hpo.t5x_backend.trainer import DEV_LOSS

# T5X's metric names -> the names of hpo's dev history (as on the built-in engine).
REPORTED = {DEV_LOSS: "loss", "bleu": "bleu", "chrf": "chrf"}


class EvalReport:
    """Keeps T5X's dev metrics of `task` per step in `history`; calls `on_eval(step, scores)`
    once per evaluation (after the inference eval if the run has one). If
    `on_eval` raises (Optuna pruning), T5X is asked to stop and the error is
    kept in `stopped`, for the experiment to raise once T5X has closed down."""

    def __init__(self, task: str, history: List[Dict], train_steps: int,
                 on_eval: Optional[Callable] = None, calls_on_infer: bool = False):
        self.task, self.history, self.train_steps = task, history, train_steps
        self.on_eval, self.calls_on_infer = on_eval, calls_on_infer
        self.stopped: Optional[BaseException] = None
        self.diverged: Optional[Dict] = None  # {"step", "reason"}

    def record(self, train_state, metrics_by_task, mode: str) -> bool:
        """T5X action semantics: True asks T5X to stop training."""
        step = int(utils.get_local_data(train_state.step))
        if mode == "TRAIN":  # T5X's train summary of the steps since the last one
            return self._diverges(step, "train", (metrics_by_task.get("train") or {}).get("loss"))
        metrics = metrics_by_task.get(self.task) or {}
        if self._diverges(step, "dev", metrics.get(DEV_LOSS)):
            return True
        if not self.history or self.history[-1]["step"] != step:
            self.history.append({"step": step})
        entry = self.history[-1]
        for theirs, ours in REPORTED.items():
            if theirs in metrics:
                entry[ours] = float(getattr(metrics[theirs], "value", metrics[theirs]))
        last_of_step = (mode == "INFER_EVAL") == self.calls_on_infer
        if not (self.on_eval and last_of_step and step < self.train_steps):
            return False  # the final scores follow the last step
        try:
            self.on_eval(step, {k: v for k, v in entry.items() if k != "step"})
        except BaseException as e:  # noqa: BLE001  (re-raised by the experiment after T5X stops)
            self.stopped = e
            return True
        return False

    def _diverges(self, step: int, which: str, loss) -> bool:
        value = float(getattr(loss, "value", loss)) if loss is not None else 0.0
        if math.isfinite(value):
            return False
        self.diverged = {"step": step, "reason": f"{which} loss {value}"}
        return True

    def actions(self) -> Dict[str, list]:
        """T5X's `train(actions=...)`: this report after each train summary and evaluation."""
        return {mode: [_Action(self, mode)] for mode in ("TRAIN", "TRAIN_EVAL", "INFER_EVAL")}


class _Action(trainer_lib.BaseAction):
    def __init__(self, report: EvalReport, mode: str):
        self.report, self.mode = report, mode

    def run(self, train_state, metrics_by_task) -> bool:
        return self.report.record(train_state, metrics_by_task, self.mode)


def decode_split(model, partitioner, train_state, train_state_axes, data: pipeline.DatasetConfig,
                 split: str, batch_size: int) -> Tuple[List[str], List[str]]:
    """(hypotheses, references) of `split`, decoded as T5X's inference does."""
    inputs, _, references = pipeline.eval_examples(data, split)
    hypotheses = decode(model, partitioner, train_state, train_state_axes, inputs, pipeline.vocabulary(data),
                        data.task_feature_lengths["targets"], batch_size, label=f"decode {split}")
    return hypotheses, references


def decode(model, partitioner, train_state, train_state_axes, inputs: np.ndarray, vocabulary, length: int,
           batch_size: int, label: str = "decode") -> List[str]:
    """Detokenised outputs for encoder inputs [N, L], from T5X's partitioned inference
    (`utils.get_infer_fn` over the model's `predict_batch`)."""
    zeros = np.zeros((len(inputs), length), np.int32)
    features = {"encoder_input_tokens": inputs, "decoder_input_tokens": zeros,
                "decoder_target_tokens": zeros, "decoder_loss_weights": zeros}
    infer = utils.get_infer_fn(model.predict_batch, batch_size, train_state_axes, partitioner)
    dataset = tf.data.Dataset.from_tensor_slices(features).enumerate()
    with progress_bar(label, total=len(inputs)) as bar:
        outputs = infer(dataset, train_state=train_state, rng=jax.random.PRNGKey(0))
        bar.advance(len(inputs))
    return [vocabulary.decode(evaluate.until_eos(np.asarray(tokens))) for _, tokens in outputs]
