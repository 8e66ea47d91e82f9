"""One experiment: a task, a model, an optimizer and a budget, all from gin.

The built-in engine (`hpo.flow.backend.Backend`). Strategies call `train_fixed` (fixed and
replayed values) or `train_guided` (guided updates), which differ only in their step
function; data, initialisation, the loop, checkpoints and scoring are shared, and
`hpo.flow.backend.train_and_record` does what every run does around its training.
"""

import dataclasses
import functools
import os
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Sequence, Tuple

import gin
import jax
import jax.numpy as jnp
import optax

from hpo.core import distributed, io as hpo_io, preemption
from hpo.core.errors import UserError, finite_number, non_negative_int, positive_int
from hpo.data import pipeline
from hpo.engine import evaluate, guided_step
from hpo.engine.checkpoints import Checkpointer
from hpo.engine.evaluate import Translation
from hpo.engine.models.seq2seq import DecodeConfig, Seq2SeqModel
from hpo.engine.models.t5 import T5Config
from hpo.flow import backend
from hpo.flow.backend import Trained
from hpo.method import hyper, optim
from hpo.engine.trainer import (
    DataParallel, FitResult, StepSchedule, Trainer, TrainState, eval_step, init_state, train_step,
)


class MemberProgram(NamedTuple):
    """What every member of a population runs (`Experiment.member_program`)."""
    step: Callable
    tx: optax.GradientTransformation
    evaluate: Callable
    streams: Dict[int, Callable]  # seed -> its data stream's maker, built once


@gin.configurable
@dataclasses.dataclass
class Experiment:
    model_dir: str = gin.REQUIRED
    data: pipeline.DatasetConfig = gin.REQUIRED
    network: Callable[..., T5Config] = T5Config  # called with the task's vocab_size
    optimizer: optim.OptimizerConfig = dataclasses.field(default_factory=optim.OptimizerConfig)
    schedule: Callable = gin.REQUIRED  # step -> base learning rate
    label_smoothing: float = 0.0
    z_loss: float = 1e-4
    train_steps: int = gin.REQUIRED
    eval_every: int = 0  # dev metrics every N steps (0: at the end only)
    dev_eval_examples: int = 200  # dev sentences decoded at intermediate evaluations
    checkpoint_every: int = 500
    log_every: int = 50
    decode: DecodeConfig = dataclasses.field(default_factory=DecodeConfig)
    evaluation: Any = dataclasses.field(default_factory=Translation)  # how a run is scored

    def __post_init__(self):
        positive_int(self.train_steps, "TRAIN_STEPS")
        if not isinstance(self.model_dir, (str, os.PathLike)) or not str(self.model_dir).strip():
            raise UserError(f"MODEL_DIR must be a directory path, got {self.model_dir!r}: give --model_dir")
        self.model_dir = hpo_io.abspath(self.model_dir)
        for name in ("checkpoint_every", "log_every"):
            positive_int(getattr(self, name), f"Experiment.{name}")
        non_negative_int(self.eval_every, "Experiment.eval_every")
        if self.dev_eval_examples is not None:  # None or 0: all of dev
            non_negative_int(self.dev_eval_examples, "Experiment.dev_eval_examples")
        if not 0 <= finite_number(self.label_smoothing, "Experiment.label_smoothing") < 1:
            raise UserError(f"Experiment.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        finite_number(self.z_loss, "Experiment.z_loss")

    @property
    def task(self) -> str:
        return self.data.mixture_or_task_name

    @functools.cached_property
    def model(self) -> Seq2SeqModel:
        vocab_size = pipeline.vocabulary(self.data).vocab_size
        padded = -(-vocab_size // 128) * 128  # a multiple of 128, as T5X pads its vocabularies
        return Seq2SeqModel(self.network(vocab_size=padded), z_loss=self.z_loss)

    backend = "builtin"

    @property
    def batch_size(self) -> int:
        return self.data.batch_size

    def base_hparams(self) -> Dict[str, float]:
        """The configured values of every hyper-parameter a strategy may set."""
        return {**self.optimizer.hparams(), "label_smoothing": float(self.label_smoothing)}

    def check_settable(self, name: str, who: str) -> None:
        """UserError unless a strategy can set hyper-parameter `name` in this experiment."""
        if name not in optim.LOSS_HPARAMS and not optim.accepts(self.optimizer.name, name):
            raise UserError(f"{who}: '{name}' is not a hyper-parameter of optimizer '{self.optimizer.name}'")

    def run_dir(self, strategy: str, seed: int, *parts: str) -> str:
        return os.path.join(self.model_dir, strategy, f"seed{seed}", *parts)

    # --- what strategies call: one run with given values, or one guided run -------------

    def fixed_step(self, values_at: Callable, groups=None) -> Tuple[Callable, optax.GradientTransformation]:
        """(step(state, batch), optimizer): the train step with the values `values_at(step)`."""
        tx = optim.make_optimizer(self.optimizer, {k: float(v) for k, v in values_at(0).items()}, groups)
        step = functools.partial(train_step, model=self.model, tx=tx, schedule=self.schedule)
        return (lambda state, batch: step(state, batch, values_at(state.step))), tx

    def param_shapes(self):
        """The model's parameters as shapes (`jax.eval_shape`), for checks before anything trains."""
        lengths = dict(self.data.task_feature_lengths)
        return jax.eval_shape(lambda: self.model.init(jax.random.PRNGKey(0), lengths))

    def train_fixed(self, strategy: str, seed: int, values_at: Callable, groups=None, **kwargs) -> Dict:
        """Trains with the values `values_at(step)` (constants or a replayed schedule); `groups`: the
        parameter groups of its `learning_rate/<g>` values (a replayed `Guided.groups` run)."""
        step, tx = self.fixed_step(values_at, groups)
        return self.train_and_evaluate(strategy, seed, step, tx, **kwargs)

    def train_guided(self, strategy: str, seed: int, tuning: hyper.Tuning, **kwargs) -> Dict:
        """Trains with hyper-parameters learned by the guided method."""
        # Every tuned optimizer hyper-parameter must exist in the injected state.
        tx = optim.make_optimizer(self.optimizer, tuning.initial_values(), tuning.groups)
        step = functools.partial(guided_step.guided_update, model=self.model, tx=tx, schedule=self.schedule,
                                 tuning=tuning)
        if tuning.update_every > 1 or tuning.horizon > 1:  # tuned steps (windows), plain ones: two programs
            step = StepSchedule((step, functools.partial(step, tune=False)),
                                lambda t: 0 if tuning.due(t, self.train_steps) else 1, spans=(tuning.horizon, 1))
        return self.train_and_evaluate(
            strategy, seed, step, tx, tuner=lambda carry: tuning.init(self.train_steps, carry),
            batches=lambda: pipeline.train_and_guide_batches(
                self.data, seed, tuning.guide_batch_size, tuning.guide_refresh_every), **kwargs)

    # --- what the PBT strategy calls: a population's members, segment by segment -------

    def member_program(self, names: Sequence[str], groups: Mapping[str, str] = None) -> MemberProgram:
        """The step, optimizer and dev evaluation every member of a population shares. A member's
        values live in its state (`tuner["values"]`), so values changed by an exploit need no
        new compilation, and a checkpoint holds the values its member trains with. `groups`: the
        parameter groups of the `learning_rate/<g>` multipliers among the values."""
        tx = optim.make_optimizer(self.optimizer, {**self.base_hparams(), **{k: 1.0 for k in names}}, groups)
        step = functools.partial(train_step, model=self.model, tx=tx, schedule=self.schedule)
        return MemberProgram(lambda state, batch: step(state, batch, state.tuner["values"]), tx,
                             self._dev_evaluator(), {})

    def _member_state(self, program: MemberProgram, seed: int, values: Mapping[str, float]) -> TrainState:
        tuner = {"values": {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}}
        return init_state(self.model, program.tx, seed, dict(self.data.task_feature_lengths), tuner)

    def _trainer(self, run_dir: str) -> Trainer:
        return Trainer(run_dir, self.train_steps, checkpoint_every=self.checkpoint_every,
                       log_every=self.log_every, eval_every=self.eval_every)

    def train_member(self, program: MemberProgram, run_dir: str, seed: int, values: Mapping[str, float],
                     until: int) -> FitResult:
        """Trains (or resumes) a member up to step `until`, where it is evaluated on dev and
        checkpointed; `values` are its values if it starts now (a checkpoint holds its own)."""
        if seed not in program.streams:
            program.streams[seed] = pipeline.stream_maker(self.data, seed)
        return self._trainer(run_dir).fit(self._member_state(program, seed, values), program.step,
                                          program.streams[seed], evaluate=program.evaluate, until=until)

    def copy_member(self, program: MemberProgram, source_dir: str, target_dir: str, seed: int, step: int,
                    values: Mapping[str, float]) -> None:
        """PBT's exploit: the target's checkpoint at `step` becomes the source's (parameters,
        optimizer state, dev history) with the target's new `values`. The target keeps its own
        data stream. Repeating it gives the same checkpoint (a rerun after a kill repeats it)."""
        template = self._member_state(program, seed, values)
        source = Checkpointer(f"{source_dir}/checkpoints", settings={"TRAIN_STEPS": self.train_steps})
        try:
            restored = source.restore_latest(template)
        finally:
            source.close()
        if restored is None or int(restored[0].step) != step:
            found = "none" if restored is None else f"step {int(restored[0].step)}"
            raise UserError(f"pbt: {source_dir} has no checkpoint of step {step} to copy ({found}); remove "
                            f"{os.path.dirname(source_dir)} to start this population over")
        state, meta = restored
        checkpoints = os.path.join(target_dir, "checkpoints")

        def remove_later():  # by the leader alone: hosts that share MODEL_DIR would race for each file
            for name in hpo_io.listdir(checkpoints) if hpo_io.isdir(checkpoints) else ():
                number = name.rstrip("/").split(".")[0]  # "7", or orbax's "7.orbax-checkpoint-tmp-…"
                if number.isdigit() and int(number) >= step:  # its own, or a partial copy
                    hpo_io.rmtree(os.path.join(checkpoints, name))
        distributed.call_on_leader(remove_later)
        target = Checkpointer(checkpoints, data_directory=f"{target_dir}/data-checkpoints",
                              settings={"TRAIN_STEPS": self.train_steps})
        try:
            # Saved as a trainer saves it: replicated over every host's devices (orbax saves no host-local array).
            target.save(step, DataParallel().put_state(state.replace(tuner=template.tuner)), meta)
        finally:
            target.close()

    def member_record(self, strategy: str, seed: int, run_dir: str, fit: FitResult, member_dir: str,
                      member_seed: int, wall_seconds: float, compute_steps: float) -> Dict:
        """The record of a population whose best member is `fit` (restored at its end)."""
        return backend.population_record(self, strategy, seed, run_dir, self._trained(fit, member_dir, member_seed),
                                         wall_seconds, compute_steps)

    def train_and_evaluate(self, strategy: str, seed: int, step_fn, tx, *, batches: Callable = None, tuner=None,
                           on_eval=None, **run) -> Dict:
        """One run of `step_fn(state, batch)`, the strategy's pure step, through the run flow
        (`backend.train_and_record`, which takes `run`'s keywords)."""
        def train(run_dir: str) -> Trained:
            state = init_state(self.model, tx, seed, dict(self.data.task_feature_lengths), tuner)
            batches_ = batches or (lambda: pipeline.train_batches(self.data, seed=seed))
            fit = self._trainer(run_dir).fit(state, step_fn, batches_, evaluate=self._dev_evaluator(), on_eval=on_eval)
            preemption.check(f"{run_dir}, trained, before scoring")  # the rerun scores it
            return self._trained(fit, run_dir, seed)
        return backend.train_and_record(self, strategy, seed, train, **run)

    def _trained(self, fit: FitResult, run_dir: str, seed: int) -> Trained:
        return Trained(fit.eval_history, fit.wall_seconds, fit.diverged, fit.diverged and fit.diverged["step"],
                       backend.num_params(fit.state.params), fit.state.tuner,
                       lambda: self.evaluation.score(self, fit, run_dir, seed))

    # --- what evaluations call to score a finished run (`Translation.score`, `GlueFinetuning.score`)

    def decode_split(self, fit: FitResult, split: str) -> Tuple[List[str], List[str]]:
        """(hypotheses, references) of the task's `split`, decoded by the trained model."""
        return evaluate.decode_split(self.model, fit.state.params, self.data, split, self.decode)

    def decoding(self) -> Dict:
        """How runs are decoded, for their records."""
        return dataclasses.asdict(self.decode)

    def finetune(self, fit: FitResult, glue, run_dir: str, seed: int):
        from hpo.engine import glue_finetune  # loaded by a GLUE configuration, not by every run
        return glue_finetune.finetune(self, fit, glue, run_dir, seed)

    def _dev_evaluator(self):
        batches = pipeline.eval_batches(self.data, "dev", self.dev_eval_examples)
        loss_fn = jax.jit(functools.partial(eval_step, model=self.model))
        extra = self.evaluation.dev_metrics(self)

        def evaluate(state: TrainState) -> Dict[str, float]:
            total = weight = 0.0
            for batch in batches:
                preemption.check("dev loss")
                t, w = loss_fn(state.params, batch)
                total, weight = total + float(t), weight + float(w)
            scores = {"loss": total / max(weight, 1.0)}
            # At the last step the final scoring decodes all of dev anyway (record: dev_bleu).
            if extra and int(state.step) < self.train_steps:
                scores.update(extra(state.params))
            return scores

        return evaluate
