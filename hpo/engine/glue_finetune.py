"""Scoring a pretraining run by fine-tuning it on GLUE (T5's second experiment).

`GlueFinetuning` is an experiment evaluation (like `hpo.engine.evaluate.Translation`):
when a pretraining run ends, its parameters are fine-tuned on a mixture of the
GLUE tasks in T5's text-to-text format, with one fixed configuration shared
by every row, so rows differ only in how pretraining was tuned. Each task's
dev split is then decoded and scored with the standard GLUE glue_metrics.
Selection (Optuna) uses the pretraining dev loss; GLUE's dev sets are the
reported scores, as in T5 (GLUE's test labels are not public).
"""

import dataclasses
import functools
import hashlib
import os
from typing import Callable, Dict, Mapping, Sequence

import gin
import jax
import seqio

from hpo.core import io as hpo_io
from hpo.data import catalog, glue_tasks, pipeline
from hpo.engine.evaluate import decode_inputs
from hpo.engine.models.seq2seq import DecodeConfig
from hpo.engine.trainer import TrainState, Trainer, train_step
from hpo.method import optim
from hpo.scoring import glue_metrics

EMBEDDED_TASKS = ("cola", "sst2", "mrpc", "stsb")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class GlueFinetuning:
    """Fine-tunes every pretrained model the same way, then scores GLUE dev sets.

    `source` is 'synthetic' (embedded, no download), 'tfds' (glue/*) or 'tsv'
    (the official GLUE files under `glue_tsv_task.directory`); `tasks` are GLUE
    names (cola, sst2, mrpc, qqp, stsb, mnli, mnli_mismatched, qnli, rte).
    The defaults follow T5: Adafactor at a constant 1e-3, examples-proportional mixing.
    """
    benchmark = "glue"
    splits = ()  # a pretraining task: GLUE's own tasks are scored
    objectives = ("dev_loss",)  # pretraining dev loss: GLUE dev is what gets reported
    result_keys = ("dev_loss", "glue", "glue_average", "glue_synthetic", "finetune")

    source: str = "synthetic"
    tasks: Sequence[str] = EMBEDDED_TASKS
    train_steps: int = 200
    batch_size: int = 32
    task_feature_lengths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"inputs": 64, "targets": 8})
    learning_rate: float = 1e-3
    optimizer: optim.OptimizerConfig = dataclasses.field(
        default_factory=lambda: optim.OptimizerConfig(name="adafactor"))
    dev_examples: int = None  # per task; None: the whole dev split
    decode: DecodeConfig = dataclasses.field(default_factory=DecodeConfig)

    def task_names(self):
        return glue_tasks.glue_task_names(self.source, self.tasks)

    def dev_metrics(self, experiment):
        return None  # intermediate evaluations: the pretraining dev loss alone

    def data(self) -> pipeline.DatasetConfig:
        return pipeline.DatasetConfig(mixture_or_task_name=_mixture(self.task_names()),
                                      task_feature_lengths=dict(self.task_feature_lengths),
                                      batch_size=self.batch_size)

    def score(self, engine, fit, run_dir: str, seed: int) -> Dict:
        """Record fields of a finished pretraining run (`fit`: its engine's end of training): the
        engine fine-tunes it (resumable, in run_dir/finetune), and its predictions are scored."""
        predict, finetune_seconds = engine.finetune(fit, self, run_dir, seed)
        return self.scores(predict, run_dir, finetune_seconds)

    def scores(self, predict: Callable, run_dir: str, finetune_seconds: float) -> Dict:
        """Record fields of a fine-tuned model, whichever engine fine-tuned it: each task's dev
        split decoded by `predict(data, inputs)` (its predictions kept) and scored."""
        by_variant = {glue_tasks.variant(name): self._score_task(predict, name, run_dir) for name in self.task_names()}
        return {
            "glue": by_variant,
            "glue_average": glue_metrics.glue_average({k: v["score"] for k, v in by_variant.items()}),
            "glue_synthetic": all(v["synthetic"] for v in by_variant.values()),
            "finetune": {"tasks": self.task_names(), "train_steps": self.train_steps,
                         "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                         "optimizer": self.optimizer.name, "wall_seconds": finetune_seconds},
        }

    def _score_task(self, predict: Callable, name: str, run_dir: str) -> Dict:
        data = dataclasses.replace(self.data(), mixture_or_task_name=name)
        inputs, _, references = pipeline.eval_examples(data, "dev", self.dev_examples)
        predictions = predict(data, inputs)
        hpo_io.write_text(os.path.join(run_dir, "glue", f"{name}.dev.pred"),
                          "".join(p + "\n" for p in predictions))
        return {**glue_metrics.score_task(glue_tasks.variant(name), predictions, references), "task": name,
                "synthetic": glue_tasks.is_synthetic(name)}

    @staticmethod
    def summary(record: Dict) -> str:
        tasks = "  ".join(f"{k} {v['score']:.1f}" for k, v in record["glue"].items())
        return f"GLUE average {record['glue_average']:.2f}  ({tasks})"


def finetune(experiment, fit, glue: GlueFinetuning, run_dir: str, seed: int):
    """The built-in engine's fine-tuning of `fit`'s pretrained parameters (resumable, in
    run_dir/finetune): (predict(data, inputs) by the fine-tuned model, its seconds)."""
    values = {**glue.optimizer.hparams(), "learning_rate": 1.0, "label_smoothing": 0.0}
    tx = optim.make_optimizer(glue.optimizer, values)
    constant = lambda step: glue.learning_rate  # noqa: E731
    step = functools.partial(train_step, model=experiment.model, tx=tx, schedule=constant)
    params = fit.state.params
    state = TrainState(step=jax.numpy.zeros([], jax.numpy.int32), params=params, opt_state=tx.init(params),
                       rng=jax.random.fold_in(fit.state.rng, 1), tuner={})
    data = glue.data()
    trainer = Trainer(os.path.join(run_dir, "finetune"), glue.train_steps,
                      checkpoint_every=experiment.checkpoint_every, log_every=experiment.log_every)
    tuned = trainer.fit(state, lambda s, b: step(s, b, values), lambda: pipeline.train_batches(data, seed=seed))

    def predict(data, inputs):
        return decode_inputs(experiment.model, tuned.state.params, inputs, pipeline.vocabulary(data),
                             data.task_feature_lengths["targets"], glue.decode,
                             label=f"decode {data.mixture_or_task_name}")
    return predict, tuned.wall_seconds


def _mixture(names: Sequence[str]) -> str:
    """A seqio mixture of the fine-tuning tasks, examples-proportional as in T5's GLUE mixture."""
    key = hashlib.sha1(",".join(names).encode()).hexdigest()[:10]
    name = f"hpo_glue_mixture_{key}"
    rates = []
    for task_name in names:
        task = catalog.get_task(task_name)  # builds and registers it
        try:
            rates.append((task_name, float(task.num_input_examples("train"))))
        except (KeyError, ValueError, TypeError):  # TFDS without split metadata (mock data)
            rates.append((task_name, 1.0))
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, rates)
    return name
