"""hpo's T5X trainers: T5X's `Trainer`, stepping with the hyper-parameter values a strategy chooses.

`ValuesTrainer` takes step t with `values_at(t)` (constants or a replayed
schedule); `GuidedTrainer` learns the values with the guided method, through
`hyper.Tuning.step`, the same code as the built-in engine's. Otherwise the step
is T5X's: microbatched gradients (`accumulate_grads_microbatched`),
`apply_grads`, and one pjit-partitioned function over the train-state axes.
The learning rate of a step is `learning_rate_fn(step)` times the
learning-rate multiplier, as on the built-in engine; per-group multipliers
(`learning_rate/<group>`) scale their groups' updates (`param_groups.chain_rates`).
"""

import copy
import functools
from typing import Callable, Dict, Mapping

import clu.metrics
import jax
import jax.numpy as jnp
from t5x import losses
from t5x import trainer as trainer_lib

from hpo.core import preemption
from hpo.core.progress import progress_bar
from hpo.method import hyper
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

    def __init__(self, *args, values_at: Callable = None, train_steps: int = None,
                 after_period: Callable = None, **kwargs):
        self._values_at = values_at
        self._train_steps = train_steps
        self._after_period = after_period  # called after each of T5X's train() calls (a stats period)
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
        train_state = t5x_optim.set_group_rates(train_state, values)  # Guided.groups' multipliers, if any
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
        summary = super().train(_Counted(batch_iter, self._bar), num_steps, start_step)
        if self._after_period is not None:
            self._after_period()
        first = int(start_step if start_step is not None else 0)
        if preemption.requested() is not None and first + num_steps < (self._train_steps or 0):
            # T5X's own hook: its loop writes an emergency checkpoint (state and data position)
            # and re-raises; the experiment turns it into hpo's stop. The last call is left to
            # end, with T5X's final evaluation and checkpoint.
            raise trainer_lib.PreemptionError(f"stopped after step {first + num_steps}")
        return summary

    def close(self):
        if self._bar_context is not None:
            self._bar_context.__exit__(None, None, None)
            self._bar = self._bar_context = None
        super().close()


class GuidedTrainer(ValuesTrainer):
    """T5X's trainer taking the guided method's step; the tuner lives in the optimizer state.

    With `horizon` K > 1 a tuned step is a window: K updates with the same values in one
    program over K batches (`window`), differentiated through all K, as on the built-in engine.
    """

    def __init__(self, *args, tuning: hyper.Tuning, **kwargs):
        self._tuning = tuning
        super().__init__(*args, **kwargs)

    def step(self, train_state, batch, tune: bool = True):
        """A tuned step, or with `tune=False` a plain one between tuned steps (`Tuning.step`)."""
        train, guide = split_guide(batch)
        return self._guided(train_state, lambda state, values: self.update(state, train, values), guide, tune)

    def window(self, train_state, batches):
        """A tuned window: one update per batch of `batches` (K of them), all with the same values,
        rematerialised; the guide loss is the last guide batch's. (state, [each step's metrics])."""
        train, guides = split_guide(jax.tree.map(lambda *b: jnp.stack(b), *batches))
        guide = jax.tree.map(lambda x: x[-1], guides)

        def steps(state, values):
            one = jax.checkpoint(lambda state, batch: self.update(state, batch, values))
            return jax.lax.scan(one, state, train)

        train_state, metrics = self._guided(train_state, steps, guide, tune=True, window=len(batches))
        return train_state, [jax.tree.map(lambda m, i=i: m[i], metrics) for i in range(len(batches))]

    def _guided(self, train_state, train, guide, tune: bool, window: int = 0):
        """`train(state, values)` -> (state, metrics): the update(s) the values act on."""
        def update(carry, values):
            updated, metrics = train(t5x_optim.with_carry(train_state, carry), values)
            return t5x_optim.carry_of(updated), (updated, metrics)

        def guide_loss(carry):
            total, weight = cross_entropy(self._model, carry[0], guide)
            return total / jnp.maximum(weight, 1.0)

        step = _step_number(train_state)
        guide_loss, _, (updated, metrics), values, tuner, grads = self._tuning.step(
            t5x_optim.tuner_of(train_state), step, t5x_optim.carry_of(train_state), update, guide_loss, tune)
        logged = hyper.step_metrics(guide_loss, values, grads, self._learning_rate_fn(step))
        del logged["learning_rate"]  # apply_grads logs the rate the step used
        logged = _averages(logged)
        if window:  # every step of the window logs them
            logged = jax.tree.map(lambda x: jnp.broadcast_to(x, (window, *x.shape)), logged)
        metrics.update(logged)
        return t5x_optim.with_tuner(updated, tuner), metrics

    @functools.cached_property
    def _partitioned_window(self):
        return self._partition_step(self.window)

    @functools.cached_property
    def _partitioned_plain_step(self):
        return self._partition_step(functools.partial(self.step, tune=False))

    def _cadence(self, tuned, plain) -> "_Cadence":
        """The step function when tuned steps (windows) and plain ones alternate."""
        tuned = self._partitioned_window if self._tuning.horizon > 1 else tuned
        return _Cadence(self._tuning, tuned, plain, self._train_steps)

    @property
    def _alternates(self) -> bool:
        return self._tuning.update_every > 1 or self._tuning.horizon > 1

    def compile_train(self, batch) -> None:
        if self._tuning.horizon == 1:
            super().compile_train(batch)  # the tuned step (a window compiles on its first call)
        if self._alternates:  # the plain steps: a second program
            plain = self._partitioner.compile(self._partitioned_plain_step, self.train_state, batch)
            self._compiled_train_step = self._cadence(self._compiled_train_step, plain)

    def train(self, batch_iter, num_steps: int, start_step: int = None):
        if self._alternates:
            if not isinstance(self._compiled_train_step, _Cadence):
                # T5X did not compile ahead (compile_train): both kinds compile on their first call.
                self._compiled_train_step = self._cadence(self._partitioned_train_step, self._partitioned_plain_step)
            first = int(start_step if start_step is not None else self.train_state.step)
            batch_iter = self._compiled_train_step.start(batch_iter, first, first + num_steps)
        return super().train(batch_iter, num_steps, start_step)


def split_guide(batch):
    """(train batch, guide batch): the guide batch travels under the GUIDE keys."""
    return ({k: v for k, v in batch.items() if not k.startswith(GUIDE)},
            {k[len(GUIDE):]: v for k, v in batch.items() if k.startswith(GUIDE)})


class _Cadence:
    """T5X's train loop calls one step function per batch: this one calls the tuned program on
    tuned steps and the plain one between, counting steps on the host.

    A tuned window of `horizon` K > 1 steps is one program over K batches: its first call takes
    the window's other K - 1 batches from the loop's iterator itself, and the loop's next K - 1
    calls (handed no batch by `start`'s iterator) return the state after the window and the
    metrics of its later steps. A window never crosses the end of T5X's `train()` call, where
    T5X evaluates and checkpoints (hpo checks that its periods are multiples of K); one that
    would is taken as plain steps.
    """

    def __init__(self, tuning: hyper.Tuning, tuned, plain, train_steps: int = None):
        self._tuning, self._tuned, self._plain, self._train_steps = tuning, tuned, plain, train_steps
        self.next_step, self._end, self._source, self._later = 0, None, None, []

    def start(self, batch_iter, first_step: int, end_step: int):
        """For a `train()` call over steps [first_step, end_step): the iterator its loop pulls."""
        self.next_step, self._end, self._source = first_step, end_step, batch_iter
        return _Batches(self)

    def __call__(self, train_state, batch):
        step, horizon = self.next_step, self._tuning.horizon
        self.next_step += 1
        if self._later:
            return train_state, self._later.pop(0)
        fits = self._end is None or step + horizon <= self._end
        if not (self._tuning.due(step, self._train_steps) and fits):
            return self._plain(train_state, batch)
        if horizon == 1:
            return self._tuned(train_state, batch)
        batches = (batch, *(next(self._source) for _ in range(horizon - 1)))
        train_state, metrics = self._tuned(train_state, batches)
        self._later = list(metrics[1:])
        return train_state, metrics[0]


class _Batches:
    """The loop's iterator while a `_Cadence` runs: no batch for a window's later steps."""

    def __init__(self, cadence: _Cadence):
        self._cadence = cadence

    def __iter__(self):
        return self

    def __next__(self):
        return None if self._cadence._later else next(self._cadence._source)  # noqa: SLF001


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
