"""A T5X experiment: what `t5x.train` is configured to do, run by hpo's strategies.

The strategies call it as they call the built-in `Experiment`:
`train_fixed(values_at)` and `train_guided(tuning)`. Each run is one call of
T5X's `train()` with the user's gin configuration and a few things hpo sets:
the run's directory (`MODEL_DIR/t5x/<strategy>/seed<N>`), the seed, hpo's
trainer (T5X's, taking the strategy's values), checkpointed input pipelines
(a resumed run sees the same batches), and an action that collects T5X's
evaluations. A run configured to start from an initial checkpoint (T5X's
`finetune.gin`) starts there (`initial`). Then dev and test are decoded with
T5X's inference and scored or, with `T5xExperiment.evaluation =
@GlueFinetuning()`, the pretrained model is fine-tuned on GLUE by another T5X
run and scored there (`glue`).
"""

import copy
import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import gin
import jax
import jax.numpy as jnp
import t5x.train as t5x_train
from t5x import optimizers as t5x_optimizers
from t5x import trainer as trainer_lib
from t5x import utils

from hpo.core import distributed, io as hpo_io, preemption
from hpo.core.errors import UserError
from hpo.data import catalog, pipeline
from hpo.engine.evaluate import Translation
from hpo.flow import backend
from hpo.flow.backend import Trained
from hpo.method import groups as param_groups, hyper
from hpo.t5x_backend import data, initial, optim as t5x_optim
from hpo.t5x_backend import evaluate as t5x_evaluate
from hpo.t5x_backend.evaluate import EvalReport
from hpo.t5x_backend.trainer import GuidedTrainer, ValuesTrainer

WALL_FILE = "hpo-wall.json"  # seconds spent by earlier, interrupted invocations of a run


@gin.configurable
class T5xExperiment:
    """`evaluation`: how a finished run is scored — `Translation()` (default: BLEU on dev and
    test) or `GlueFinetuning()` (T5 pretraining scored by GLUE fine-tuning, in `glue`)."""
    backend = "t5x"

    def __init__(self, evaluation=None):
        self.evaluation = evaluation or Translation()
        try:  # gin builds the model, partitioner and datasets configured for `train`
            self.train_args = dict(gin.get_bindings(t5x_train.train))
            self.trainer_args = dict(gin.get_bindings(trainer_lib.Trainer))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001  (anything the user's T5X configuration raises)
            raise UserError(f"T5X configuration: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") \
                from e
        missing = [k for k in ("model", "train_dataset_cfg", "partitioner", "total_steps", "model_dir")
                   if self.train_args.get(k) is None]
        if missing:
            raise UserError(f"T5X configuration: train.{missing[0]} is not bound (include a T5X run config "
                            f"such as t5x/configs/runs/pretrain.gin, or hpo's t5x/translation.gin)")
        self.model = self.train_args["model"]
        self.data_cfg: utils.DatasetConfig = self.train_args["train_dataset_cfg"]
        self.model_dir = hpo_io.abspath(self.train_args["model_dir"])
        # T5X counts steps from the initial checkpoint's (fine-tuning): the run ends at `total_steps`.
        self.first_step = initial.initial_step(getattr(self.train_args.get("checkpoint_cfg"), "restore", None))
        relative = self.train_args.get("relative_steps")
        self.total_steps = self.first_step + int(relative) if relative else int(self.train_args["total_steps"])
        self.train_steps = self.total_steps - self.first_step  # the steps a run takes
        if self.train_steps <= 0:
            raise UserError(f"TRAIN_STEPS must be positive, got {self.train_steps}" if not self.first_step else
                            f"TRAIN_STEPS ({self.total_steps}) counts the initial checkpoint's steps "
                            f"({self.first_step}) on T5X: it must be larger")
        if not isinstance(self.data_cfg.mixture_or_task_name, str):
            raise UserError("T5X configuration: train_dataset_cfg.mixture_or_task_name must name a task")
        task = catalog.get_task(self.task)  # hpo's task families register themselves by name
        needed = set(self.evaluation.splits)
        if needed - set(task.splits):
            raise UserError(f"--backend=t5x scores translation tasks on their dev and test splits; task "
                            f"'{self.task}' has no {' or '.join(sorted(needed - set(task.splits)))} split "
                            f"(T5 pretraining: T5xExperiment.evaluation = @GlueFinetuning())")
        trainer_cls = self.train_args.get("trainer_cls")
        # A trainer class of the user's own: fixed runs may use it as it is; hpo cannot step it.
        self.user_trainer = None if _is_t5x_trainer(trainer_cls) else trainer_cls

    @property
    def task(self) -> str:
        return self.data_cfg.mixture_or_task_name

    @property
    def batch_size(self) -> int:
        return self.data_cfg.batch_size

    def run_dir(self, strategy: str, seed: int, *parts: str) -> str:
        return os.path.join(self.model_dir, self.backend, strategy, f"seed{seed}", *parts)

    def base_hparams(self) -> Dict[str, float]:
        """The learning-rate multiplier (1), the optimizer's injected values and the model's label smoothing."""
        injected = t5x_optim.injected_values(self.model.optimizer_def)
        injected.pop("learning_rate", None)  # the rate itself comes from Trainer.learning_rate_fn
        return {"learning_rate": 1.0, **injected,
                "label_smoothing": float(getattr(self.model, "_label_smoothing", 0.0))}

    def check_settable(self, name: str, who: str) -> None:
        if self.user_trainer is not None:
            raise UserError(f"{who}: train.trainer_cls is bound to {self.user_trainer.__name__}, a trainer of "
                            f"your own, which cannot take hpo's values; bind it to t5x.trainer.Trainer")
        t5x_optim.check_settable(self.model.optimizer_def, name, who)

    # --- what strategies call -------------------------------------------------------------

    def param_shapes(self):
        """The model's parameters as shapes (`jax.eval_shape`), for checks before anything trains."""
        converter = self.model.FEATURE_CONVERTER_CLS(pack=False)
        lengths = converter.get_model_feature_lengths(self.data_cfg.task_feature_lengths)
        shapes, types = {k: (1, n) for k, n in lengths.items()}, {k: jnp.int32 for k in lengths}
        return jax.eval_shape(lambda: self.model.get_initial_variables(jax.random.PRNGKey(0), shapes, types))["params"]

    def train_fixed(self, strategy: str, seed: int, values_at: Callable, groups=None, **kwargs) -> Dict:
        """`groups`: the parameter groups of `learning_rate/<g>` values (a replayed `Guided.groups` run)."""
        if self.user_trainer is not None:  # runs as T5X runs it, so only with the configured values
            base = self.base_hparams()
            changed = sorted(k for k, v in values_at(0).items() if abs(float(v) - base.get(k, float(v))) > 1e-12)
            if changed or groups:
                raise UserError(f"{strategy}: train.trainer_cls is {self.user_trainer.__name__}, a trainer of "
                                f"your own, which cannot take hpo's values ({', '.join(changed or groups)})")
            return self._train(strategy, seed, self.user_trainer, **kwargs)
        trainer = _bound(ValuesTrainer, values_at=values_at)
        return self._train(strategy, seed, trainer, model=self._with_groups(groups, strategy) if groups else None,
                           **kwargs)

    def _with_groups(self, groups, strategy: str):
        """The model, its optimizer chained with `groups`' rates (which hpo's trainers set each step)."""
        if not groups:
            return self.model
        t5x_optim.require_optax(self.model.optimizer_def, strategy)
        model = copy.copy(self.model)
        model.optimizer_def = t5x_optimizers.OptaxWrapper(
            param_groups.chain_rates(self.model.optimizer_def.optax_optimizer, groups))
        return model

    def train_guided(self, strategy: str, seed: int, tuning: hyper.Tuning, **kwargs) -> Dict:
        if self.user_trainer is not None:
            raise UserError(f"guided: train.trainer_cls is bound to {self.user_trainer.__name__}; the guided "
                            f"strategy brings its own trainer (leave train.trainer_cls = @trainer.Trainer)")
        optimizer_def = self.model.optimizer_def
        t5x_optim.require_optax(optimizer_def, strategy)
        if tuning.horizon > 1:
            self._check_windows(tuning.horizon)
        if tuning.guide_batch_size != self.batch_size:
            raise UserError(f"guided: on T5X the guide batch is as large as the training batch "
                            f"({self.batch_size}), not {tuning.guide_batch_size}: T5X feeds one batch shape")
        data.require_guide_split(self.task)
        model = copy.copy(self.model)
        model.optimizer_def = t5x_optimizers.OptaxWrapper(  # the schedule is indexed by T5X's step
            t5x_optim.carrying_tuner(param_groups.chain_rates(optimizer_def.optax_optimizer, tuning.groups),
                                     tuning, self.total_steps))
        trainer = _bound(GuidedTrainer, tuning=tuning)
        return self._train(strategy, seed, trainer, model=model,
                           get_dataset_fn=data.guided_dataset_fn(tuning.guide_refresh_every), **kwargs)

    def _check_windows(self, horizon: int) -> None:
        """T5X's loop stops to evaluate and checkpoint every period, counted from the first step;
        a tuned window of `horizon` steps must not straddle a stop."""
        save = getattr(self.train_args.get("checkpoint_cfg"), "save", None)
        stops = {"the initial checkpoint's step": self.first_step,
                 "EVAL_PERIOD": self.train_args.get("eval_period"),
                 "the checkpoint period": getattr(save, "period", None),
                 "train.stats_period": self.train_args.get("stats_period")}
        wrong = [f"{name} ({value})" for name, value in stops.items() if value and value % horizon]
        if wrong:
            raise UserError(f"guided: Guided.horizon {horizon} on T5X needs {' and '.join(wrong)} to be "
                            f"a multiple of it: T5X evaluates and checkpoints there, and a tuned window "
                            f"of {horizon} steps cannot stop in the middle")

    # --- PBT's members: each segment one T5X train() call from the member's checkpoint ---------

    def member_program(self, names, groups=None):
        """The members' model: the configured one, its optimizer chained with the groups' rates
        (`groups`: of the `learning_rate/<g>` values). T5X compiles each train() call (a member's
        values are constants of its segment, kept in the population's state, not in the checkpoint)."""
        if self.user_trainer is not None:
            raise UserError(f"pbt: train.trainer_cls is bound to {self.user_trainer.__name__}; PBT sets its "
                            f"members' values with hpo's trainer (leave train.trainer_cls = @trainer.Trainer)")
        return self._with_groups(groups, "pbt")

    def train_member(self, program, run_dir: str, seed: int, values, until: int) -> "FitResult":
        """Trains (or resumes) a member up to step `until` of the run (T5X's step: the initial
        checkpoint's plus `until`), where T5X checkpoints and evaluates it."""
        end = self.first_step + until
        checkpoints = _checkpoint_steps(run_dir)
        if end in checkpoints and not _has_history(run_dir, end):
            # Killed between T5X's last checkpoint of the segment and its evaluation: T5X would not
            # evaluate a run already at its end, so the segment's last period is taken again (exact).
            if not any(s < end for s in checkpoints):
                raise UserError(f"pbt: {run_dir} has a checkpoint of step {end} without its evaluation, and no "
                                f"earlier one to take that period again from; remove {run_dir} to start it over")
            hpo_io.rmtree(checkpoints[end])
        history = []
        report = EvalReport(self.task, history, end, None,
                            calls_on_infer=self.train_args.get("infer_eval_dataset_cfg") is not None)
        constant = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
        start = initial.from_initial_checkpoint(getattr(self.train_args.get("checkpoint_cfg"), "restore", None),
                                                self.model.optimizer_def)
        trainer, state, wall = self.run_t5x(
            run_dir, seed, _bound(ValuesTrainer, values_at=lambda step: constant), program, end,
            actions=report.actions(), train_dataset_cfg=self.seeded(self.data_cfg, seed),
            train_state_initializer_cls=initial.initializer(start))
        by_step = {h["step"]: h for h in [*_history(run_dir), *history]}  # a period taken again: its latest
        hpo_io.write_json(os.path.join(run_dir, HISTORY_FILE), [by_step[k] for k in sorted(by_step)])
        return FitResult(state, wall, _history(run_dir), report.diverged, trainer, program)

    def copy_member(self, program, source_dir: str, target_dir: str, seed: int, step: int, values) -> None:
        """PBT's exploit: the target's T5X checkpoint of `step` becomes the source's (parameters,
        optimizer state and, T5X's checkpoints holding it, the input pipeline's position), its
        later ones go. Its new values are the population's to give (not in T5X's checkpoint)."""
        end = self.first_step + step
        source = _checkpoint_steps(source_dir).get(end)
        if source is None:
            raise UserError(f"pbt: {source_dir} has no checkpoint of step {end} to copy; remove "
                            f"{os.path.dirname(source_dir)} to start this population over")

        def copy():  # by the leader alone: hosts that share MODEL_DIR would race for each file
            for number, path in _checkpoint_steps(target_dir).items():
                if number >= end:
                    hpo_io.rmtree(path)
            hpo_io.copytree(source, os.path.join(target_dir, f"checkpoint_{end}"))
            kept = [h for h in _history(source_dir) if h["step"] <= end]
            hpo_io.write_json(os.path.join(target_dir, HISTORY_FILE), kept)
        distributed.call_on_leader(copy)

    def member_record(self, strategy: str, seed: int, run_dir: str, fit, member_dir: str, member_seed: int,
                      wall_seconds: float, compute_steps: float) -> Dict:
        """The record of a population whose best member is `fit` (restored at its end)."""
        trained = self._trained(fit, member_dir, member_seed)
        return backend.population_record(self, strategy, seed, run_dir, trained, wall_seconds, compute_steps)

    # --- one run ------------------------------------------------------------------------------

    def _train(self, strategy: str, seed: int, trainer_cls, *, model=None, get_dataset_fn=None,
               on_eval: Optional[Callable] = None, **run) -> Dict:
        """One T5X train() call with `trainer_cls` through the run flow (`backend.train_and_record`,
        which takes `run`'s keywords)."""
        model = model or self.model
        if on_eval is not None and self.first_step:  # strategies count the steps of the run
            on_eval = lambda step, scores, report=on_eval: report(step - self.first_step, scores)  # noqa: E731

        def train(run_dir: str) -> Trained:
            history = []
            infer_cfg = self.train_args.get("infer_eval_dataset_cfg")
            report = EvalReport(self.task, history, self.total_steps, on_eval, calls_on_infer=infer_cfg is not None)
            start = initial.from_initial_checkpoint(getattr(self.train_args.get("checkpoint_cfg"), "restore", None),
                                                    self.model.optimizer_def)
            overrides = {"actions": report.actions(), "train_dataset_cfg": self.seeded(self.data_cfg, seed),
                         "train_state_initializer_cls": initial.initializer(start)}
            if get_dataset_fn is not None:
                overrides["get_dataset_fn"] = get_dataset_fn
            trainer, train_state, wall = self.run_t5x(run_dir, seed, trainer_cls, model, self.total_steps, **overrides)
            distributed.stop_everywhere(report.stopped)  # Optuna pruned the trial (the leader decides)
            return self._trained(FitResult(train_state, wall, history, report.diverged, trainer, model), run_dir, seed)
        return backend.train_and_record(self, strategy, seed, train, **run)

    def _trained(self, fit: "FitResult", run_dir: str, seed: int) -> Trained:
        state, diverged = fit.state, fit.diverged
        tuner = t5x_optim.tuner_of(state) if isinstance(state.param_states, t5x_optim.TunedState) else None
        return Trained(fit.eval_history, fit.wall_seconds, diverged, diverged and diverged["step"] - self.first_step,
                       backend.num_params(state.params), _local(tuner),
                       lambda: self.evaluation.score(self, fit, run_dir, seed), {"t5x": self._description()})

    def run_t5x(self, run_dir: str, seed: int, trainer_cls, model, total_steps: int, trainer_args=None,
                **overrides):
        """One call of T5X's `train()` with the user's configuration, `overrides` and what hpo
        sets for every run; (trainer, final train state, seconds spent over all invocations).
        `trainer_args` (default: the user's `Trainer` bindings) go to hpo's trainers."""
        made = {}
        trainer_args = self.trainer_args if trainer_args is None else trainer_args
        wall_file = os.path.join(run_dir, WALL_FILE)
        earlier = (hpo_io.read_json(wall_file, default={}) or {}).get("seconds", 0.0)
        start = time.time()

        def spent() -> None:  # with each period too, so that the time survives a kill
            hpo_io.write_json(wall_file, {"seconds": earlier + time.time() - start})

        def make_trainer(**kwargs):
            if trainer_cls is self.user_trainer:
                made["trainer"] = trainer_cls(**kwargs)
            else:
                made["trainer"] = trainer_cls(**kwargs, **trainer_args, train_steps=total_steps, after_period=spent)
            return made["trainer"]

        args = {**self.train_args, "model": model, "model_dir": run_dir, "random_seed": seed,
                "trainer_cls": make_trainer, "total_steps": total_steps, "relative_steps": None,
                "checkpoint_cfg": _checkpointing_data(self.train_args.get("checkpoint_cfg")),
                "concurrent_metrics": False, **overrides}
        try:
            _, train_state = t5x_train.train(**args)
        except trainer_lib.PreemptionError:  # its emergency checkpoint written (see ValuesTrainer.train)
            step = int(utils.get_local_data(made["trainer"].train_state.step))
            raise preemption.Preempted(preemption.requested(), f"{run_dir} at step {step}") from None
        except ValueError as e:  # T5X's word for a configuration it cannot run (vocabulary, periods, sizes)
            raise UserError(f"T5X: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") \
                from e
        finally:
            spent()
        return made["trainer"], train_state, earlier + time.time() - start

    def seeded(self, cfg: utils.DatasetConfig, seed: int) -> utils.DatasetConfig:
        # T5X's run configs leave the training data's seed to the clock; a run is a function of its seed.
        return cfg if cfg.seed is not None else dataclasses.replace(cfg, seed=seed)

    # --- what evaluations call to score a finished run (`Translation.score`, `GlueFinetuning.score`)

    def decode_split(self, fit: "FitResult", split: str) -> Tuple[List[str], List[str]]:
        """(hypotheses, references) of the task's `split`, decoded by T5X's inference."""
        config = pipeline.DatasetConfig(self.task, dict(self.data_cfg.task_feature_lengths), self._infer_batch_size())
        return t5x_evaluate.decode_split(fit.model, self.train_args["partitioner"], fit.state,
                                         self.state_axes(fit.state), config, split, config.batch_size)

    def decoding(self) -> Dict:
        """How runs are decoded, for their records."""
        decode_fn = getattr(self.model, "_decode_fn", None)
        return {"method": getattr(decode_fn, "__name__", str(decode_fn)), "batch_size": self._infer_batch_size()}

    def finetune(self, fit: "FitResult", glue, run_dir: str, seed: int):
        from hpo.t5x_backend import glue_finetune  # loaded by a GLUE configuration, not by every run
        return glue_finetune.finetune(self, fit.state, glue, run_dir, seed)

    def state_axes(self, train_state):
        """The mesh axes of a train state's arrays (as T5X's initializer derives them)."""
        return self.train_args["partitioner"].get_mesh_axes(train_state)

    def _infer_batch_size(self) -> int:
        infer_cfg = self.train_args.get("infer_eval_dataset_cfg")
        return infer_cfg.batch_size if infer_cfg is not None else self.batch_size

    def _description(self) -> Dict:
        partitioner = self.train_args["partitioner"]
        mesh = partitioner.mesh
        return {"partitioner": type(partitioner).__name__,
                "mesh": {name: int(size) for name, size in mesh.shape.items()},
                "optimizer": type(self.model.optimizer_def).__name__,
                "num_microbatches": self.trainer_args.get("num_microbatches")}


def _is_t5x_trainer(cls) -> bool:
    """T5X's Trainer itself, or the subclass gin makes of it to apply its bindings."""
    stock = trainer_lib.Trainer
    return cls is None or cls is stock or (isinstance(cls, type) and cls.__bases__ == (stock,)
                                           and cls.__name__ == stock.__name__)


def _bound(cls, **fixed):
    def make(**kwargs):
        return cls(**kwargs, **fixed)
    return make


def _checkpointing_data(checkpoint_cfg):
    """The user's checkpoint settings, plus the input pipeline's position (exact resume); an
    initial checkpoint is restored by hpo (`initial`), not by T5X."""
    if checkpoint_cfg is None or checkpoint_cfg.save is None:
        raise UserError("T5X configuration: utils.CheckpointConfig.save is not set; runs must checkpoint "
                        "to resume (T5X's run configs set it)")
    checkpoint_cfg = initial.without_initial(checkpoint_cfg)
    return dataclasses.replace(checkpoint_cfg, save=dataclasses.replace(checkpoint_cfg.save, save_dataset=True))


class FitResult(NamedTuple):
    """A T5X run's (or member's segment's) end, as the built-in trainer's FitResult."""
    state: Any
    wall_seconds: float
    eval_history: list
    diverged: Optional[Dict]
    trainer: Any
    model: Any  # the model it trained (its optimizer chained with hpo's transformations)


HISTORY_FILE = "hpo-dev-history.json"  # a PBT member's dev history over its segments (and its lineage's)


def _history(run_dir: str) -> list:
    return hpo_io.read_json(os.path.join(run_dir, HISTORY_FILE), default=[]) or []


def _has_history(run_dir: str, step: int) -> bool:
    return any(h.get("step") == step for h in _history(run_dir))


def _checkpoint_steps(run_dir: str) -> Dict[int, str]:
    """{step: path} of T5X's finished checkpoints in a run dir (`checkpoint_<step>`)."""
    if not hpo_io.isdir(run_dir):
        return {}
    found = {}
    for name in hpo_io.listdir(run_dir):
        name = name.rstrip("/")
        number = name[len("checkpoint_"):]
        if name.startswith("checkpoint_") and number.isdigit():
            found[int(number)] = os.path.join(run_dir, name)
    return found


def _local(tree):
    return None if tree is None else jax.tree.map(lambda x: utils.get_local_data(x), tree)
