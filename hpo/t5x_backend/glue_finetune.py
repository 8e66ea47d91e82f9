"""T5 pretraining scored on GLUE, on T5X: each pretrained run is fine-tuned by a second T5X run.

As on the built-in engine (`hpo.engine.glue_finetune.GlueFinetuning`), every row is
fine-tuned the same way: the pretrained parameters, a fresh optimizer state of
`GlueFinetuning.optimizer` (optax, injected), the constant rate
`GlueFinetuning.learning_rate`, the examples-proportional mixture of the GLUE
tasks, `GlueFinetuning.train_steps` steps. The fine-tuning run is T5X's
`train()` with the user's partitioner and checkpointing, in `<run>/finetune`
(resumable); each task's dev split is then decoded by T5X's inference and
scored with the GLUE metrics.
"""

import copy
import os
from typing import Callable, Tuple

from t5x import optimizers as t5x_optimizers
from t5x import utils

from hpo.data import pipeline
from hpo.method import optim
from hpo.t5x_backend import initial, optim as t5x_optim
from hpo.t5x_backend.evaluate import decode
from hpo.t5x_backend.trainer import ValuesTrainer


def finetune(experiment, pretrained, glue, run_dir: str, seed: int) -> Tuple[Callable, float]:
    """The pretrained train state `pretrained` fine-tuned as `glue` says (resumable, in
    run_dir/finetune): (predict(data, inputs) by the fine-tuned model, its seconds).

    The fine-tuning run starts from `pretrained`'s parameter arrays and donates
    them: read anything else from `pretrained` before calling this.
    """
    model = copy.copy(experiment.model)
    model.optimizer_def = t5x_optimizers.OptaxWrapper(optim.make_optimizer(glue.optimizer))
    values = {**t5x_optim.injected_values(model.optimizer_def), "learning_rate": 1.0, "label_smoothing": 0.0}
    data = glue.data()
    train_cfg = utils.DatasetConfig(
        mixture_or_task_name=data.mixture_or_task_name, task_feature_lengths=dict(data.task_feature_lengths),
        split="train", batch_size=data.batch_size, shuffle=True, seed=seed, use_cached=False, pack=True)
    trainer_args = {**experiment.trainer_args, "learning_rate_fn": lambda step: glue.learning_rate}
    _, state, wall = experiment.run_t5x(
        os.path.join(run_dir, "finetune"), seed, _constant(ValuesTrainer, values), model, glue.train_steps,
        trainer_args=trainer_args, train_dataset_cfg=train_cfg, train_eval_dataset_cfg=None,
        infer_eval_dataset_cfg=None, eval_period=None, actions=None,
        train_state_initializer_cls=initial.initializer(initial.from_params(pretrained.params)))
    partitioner, axes = experiment.train_args["partitioner"], experiment.state_axes(state)

    def predict(task_data: pipeline.DatasetConfig, inputs):
        return decode(model, partitioner, state, axes, inputs, pipeline.vocabulary(task_data),
                      task_data.task_feature_lengths["targets"], data.batch_size,
                      label=f"decode {task_data.mixture_or_task_name}")
    return predict, wall


def _constant(trainer_cls, values):
    def make(**kwargs):
        return trainer_cls(**kwargs, values_at=lambda step: values)
    return make
