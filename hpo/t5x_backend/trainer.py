"""hpo's T5X trainers: T5X's `Trainer`, stepping with the hyper-parameter values a strategy chooses.

`ValuesTrainer` takes step t with `values_at(t)` (constants or a replayed
schedule); `GuidedTrainer` learns the values with the guided method, through
`hyper.Tuning.step`, the same code as the built-in engine's. Otherwise the step
is T5X's: microbatched gradients (`accumulate_grads_microbatched`),
`apply_grads`, and one pjit-partitioned function over the train-state axes.
The learning rate of a step is `learning_rate_fn(step)` times the
learning-rate multiplier, as on the built-in engine.
"""

import copy
import functools
from typing import Callable, Dict, Mapping

import clu.metrics
import jax.numpy as jnp
from t5x import losses
from t5x import trainer as trainer_lib

from hpo import hyper
from hpo.progress import progress_bar
from hpo.t5x_backend import optim as t5x_optim

GUIDE = "guide/"  # the guide batch travels in the same batch, under these keys
DEV_LOSS = "hpo/cross_entropy"  # eval metric: token-mean cross-entropy, no smoothing or z-loss


def cross_entropy(model, params, batch) -> tuple:
    """(summed token cross-entropy, token count) without dropout, label smoothing or z-loss:
    the guide loss and the dev loss, as on the built-in engine."""
    logits = model._compute_logits(params, batch, dropout_rng=None)  # noqa: SLF001  (T5X models' forward pass)
    total, _, weight = losses.compute_weighted_cross_entropy(
        logits, batch["decoder_target_tokens"], batch.get("decoder_loss_weights"), label_smoothing=0.0, z_loss=0.0)
    return total, weight


def _step_number(train_state) -> jnp.ndarray:
    # T5X restores the step of a checkpoint as float32; it indexes schedules here.
    return jnp.asarray(train_state.step).astype(jnp.int32)


def _with_label_smoothing(model, value):
    # T5X's loss_fn reads the model's label smoothing: a copy carries the step's (traced) value.
    model = copy.copy(model)
    model._label_smoothing = value  # noqa: SLF001
    return model


def _averages(values: Mapping[str, jnp.ndarray]) -> Dict[str, clu.metrics.Average]:
    return {k: clu.metrics.Average.from_model_output(jnp.reshape(v, [1]).astype(jnp.float32))
            for k, v in values.items()}


class ValuesTrainer(trainer_lib.Trainer):
    """T5X's trainer with each step's hyper-parameter values given by `values_at(step)`."""

    def __init__(self, *args, values_at: Callable = None, train_steps: int = None, **kwargs):
        self._values_at = values_at
        self._train_steps = train_steps
        self._bar = self._bar_context = None
        super().__init__(*args, **kwargs)
        self._injected = t5x_optim.injected_names(self._model.optimizer_def)

    def update(self, train_state, batch, values):
        """One T5X training update taken with `values` (traced scalars): (new state, metrics)."""
        step = train_state.step
        learning_rate = self._learning_rate_fn(step) * values.get("learning_rate", 1.0)
        model = self._model
        if "label_smoothing" in values:
            model = _with_label_smoothing(model, values["label_smoothing"])
        grads, metrics, flax_mutables = trainer_lib.accumulate_grads_microbatched(
            model, train_state, batch, self._get_step_rng(step), self._num_microbatches,
            self._partitioner.data_partition_spec)
        train_state = t5x_optim.set_values(train_state, self._injected, values, learning_rate)
        return trainer_lib.apply_grads(
            train_state, grads, metrics, learning_rate, self._weight_metrics_computer,
            other_state_variables={"flax_mutables": flax_mutables} if flax_mutables else None)

    def step(self, train_state, batch):
        values = self._values_at(_step_number(train_state))
        train_state, metrics = self.update(train_state, batch, values)
        metrics.update(_averages({f"hparams/{k}": v for k, v in values.items()}))
        return train_state, metrics

    @functools.cached_property
    def _partitioned_train_step(self):
        return self._partition_step(self.step)

    def _partition_step(self, step_fn):
        return self._partitioner.partition(
            step_fn, in_axis_resources=(self._train_state_axes, self._partitioner.data_partition_spec),
            out_axis_resources=(self._train_state_axes, None), donate_argnums=(0,))

    @functools.cached_property
    def _partitioned_eval_step(self):
        def eval_step(train_state, batch):
            metrics = trainer_lib.eval_step(self._model, train_state, batch)
            total, weight = cross_entropy(self._model, train_state.params, batch)
            return {**metrics, DEV_LOSS: clu.metrics.Average(total=total, count=weight)}

        return self._partitioner.partition(
            eval_step, in_axis_resources=(self._train_state_axes, self._partitioner.data_partition_spec),
            out_axis_resources=None)

    def train(self, batch_iter, num_steps: int, start_step: int = None):
        if self._bar is None:  # one bar for the run; T5X calls train() once per stats period
            self._bar_context = progress_bar("train", total=self._train_steps or 0, completed=int(start_step or 0))
            self._bar = self._bar_context.__enter__()
        return super().train(_Counted(batch_iter, self._bar), num_steps, start_step)

    def close(self):
        if self._bar_context is not None:
            self._bar_context.__exit__(None, None, None)
            self._bar = self._bar_context = None
        super().close()


class GuidedTrainer(ValuesTrainer):
    """T5X's trainer taking the guided method's step; the tuner lives in the optimizer state."""

    def __init__(self, *args, tuning: hyper.Tuning, **kwargs):
        self._tuning = tuning
        super().__init__(*args, **kwargs)

    def step(self, train_state, batch, tune: bool = True):
        """A tuned step, or with `tune=False` a plain one between tuned steps (`Tuning.step`)."""
        train = {k: v for k, v in batch.items() if not k.startswith(GUIDE)}
        guide = {k[len(GUIDE):]: v for k, v in batch.items() if k.startswith(GUIDE)}

        def guide_loss_of(aux):
            total, weight = cross_entropy(self._model, aux[0].params, guide)
            return total / jnp.maximum(weight, 1.0)

        step = _step_number(train_state)
        guide_loss, (updated, metrics), values, tuner, grads = self._tuning.step(
            t5x_optim.tuner_of(train_state), step, functools.partial(self.update, train_state, train),
            guide_loss_of, tune)
        logged = hyper.step_metrics(guide_loss, values, grads, self._learning_rate_fn(step))
        del logged["learning_rate"]  # apply_grads logs the rate the step used
        metrics.update(_averages(logged))
        return t5x_optim.with_tuner(updated, tuner), metrics

    def compile_train(self, batch) -> None:
        super().compile_train(batch)
        if self._tuning.update_every > 1:  # the plain steps between tuned ones: a second program
            plain = self._partitioner.compile(self._partition_step(functools.partial(self.step, tune=False)),
                                              self.train_state, batch)
            self._compiled_train_step = _Cadence(self._tuning, self._compiled_train_step, plain)

    def train(self, batch_iter, num_steps: int, start_step: int = None):
        if self._tuning.update_every > 1 and not isinstance(self._compiled_train_step, _Cadence):
            # T5X did not compile ahead (compile_train): both kinds compile on their first call.
            self._compiled_train_step = _Cadence(self._tuning, self._partitioned_train_step, self._partition_step(
                functools.partial(self.step, tune=False)))
        if isinstance(self._compiled_train_step, _Cadence):
            self._compiled_train_step.next_step = int(start_step if start_step is not None else self.train_state.step)
        return super().train(batch_iter, num_steps, start_step)


class _Cadence:
    """T5X's train loop calls one step function: this one calls the tuned program on tuned steps
    and the plain one between, counting steps on the host from `next_step`."""

    def __init__(self, tuning: hyper.Tuning, tuned, plain):
        self._tuning, self._tuned, self._plain = tuning, tuned, plain
        self.next_step = 0

    def __call__(self, train_state, batch):
        step_fn = self._tuned if self._tuning.due(self.next_step) else self._plain
        self.next_step += 1
        return step_fn(train_state, batch)


class _Counted:
    """A batch iterator that advances a progress bar."""

    def __init__(self, iterator, bar):
        self._iterator, self._bar = iterator, bar

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._iterator)
        self._bar.advance()
        return batch
