"""The guided strategy: hyper-parameters learned during one training run.

The paper's method (shared/docs/guided-hpo.md), described once as a
`hyper.Tuning` that either backend turns into its train step: each step trains
with the current values, and a meta-optimizer moves the values down the
gradient of the guide loss of the updated model. Its record carries the
learned schedule.
"""

import dataclasses
import os
from typing import Dict, Mapping, Sequence

import gin
import jax
import numpy as np
import optax

from hpo.core import io as hpo_io
from hpo.core.errors import UserError, finite_number, positive_int
from hpo.data import catalog
from hpo.flow.schedules import GROUPS_FILE, SCHEDULE_FILE, summarise, write_schedule
from hpo.method import groups as param_groups, hyper
from hpo.strategies.base import Strategy



# A raw value moves at most about one meta learning rate per meta-update under these
# meta-optimizers (Adam's step is lr · m/√v, |m/√v| ≲ 1), so a travel T over M updates is lr T/M.
BOUNDED_STEP_META_OPTIMIZERS = ("adam", "adamw", "adamax", "adamaxw", "nadam", "nadamw", "radam", "lion",
                                "amsgrad", "adabelief", "rmsprop", "sign_sgd")
DEFAULT_TRAVEL = 2.0


@gin.configurable
class Guided(Strategy):
    """Online, gradient-based tuning of `tune` (any of learning_rate, beta1, beta2,
    decay_rate, eps, weight_decay, label_smoothing).

    `specs` overrides the reference parameterisations, e.g.
    {'learning_rate': {'steepness': 2.0}}; `meta_optimizer` names an optax
    optimizer; `guide_batch_size` None means the training batch size;
    `guide_refresh` is 'fixed' (one batch for the run, the reference's default),
    'step', 'epoch', or a number of steps; values change every `update_every` steps,
    and only those steps take a guide pass (the others are plain training steps).
    `horizon` K > 1: the hyper-gradient is that of the guide loss
    after K training steps taken with the same values, through all K updates
    (rematerialised), and values change every K steps; 1 is the reference's
    one-step lookahead. `hypergrad_bound`: ±inf hyper-gradients become ±bound.
    `groups`: a preset name (`hpo.method.groups.PRESETS`) or {name: regex over
    parameter paths}; each group gets a learning-rate multiplier `learning_rate/<name>` on
    its parameters' updates, tuned with `tune` (the global `learning_rate` multiplies every
    parameter's rate and is tuned only if `tune` names it; `tune` may then be empty).

    `mode`: 'one_step' (the paper's method: the gradient through the last update, or
    window) or 'forward' (the values in `forward`, None: the learning-rate multipliers,
    take the gradient through every update since the start, carried forward as a
    tangent of the training state, discounted by `discount` μ in [0, 1] per step
    (None: 1, no truncation; 0: the one-step method); the other tuned values keep the
    one-step gradient).

    `travel`: how far a raw value may move over the run (in raw units: e^travel for
    the learning-rate multiplier); the meta learning rate is travel ÷ the run's
    meta-updates (train steps ÷ update_every, or ÷ horizon), so one setting means
    the same at any budget. `meta_learning_rate`, when given, is used as it is instead.
    """

    name = "guided"

    def __init__(self, tune: Sequence[str] = ("learning_rate",), specs: Mapping[str, Mapping] = None,
                 meta_optimizer: str = "adam", meta_learning_rate: float = None, travel: float = None,
                 guide_batch_size: int = None, guide_refresh="fixed", update_every: int = 1,
                 hypergrad_bound: float = 10.0, hypergrad_clip: float = None, horizon: int = 1,
                 groups=None, mode: str = "one_step", forward: Sequence[str] = None, discount: float = None):
        if isinstance(tune, str):
            tune = (tune,)
        self.groups = param_groups.resolve(groups)
        unknown = set(tune) - set(hyper.DEFAULT_SPECS)
        if unknown or not (tune or self.groups):
            raise UserError(f"guided: cannot tune {sorted(unknown) or 'nothing'} "
                            f"(choose from {', '.join(hyper.DEFAULT_SPECS)})")
        if update_every <= 0:
            raise UserError("guided: update_every must be positive")
        if not isinstance(meta_optimizer, str) or not callable(getattr(optax, meta_optimizer, None)):
            raise UserError(f"guided: unknown meta-optimizer optax.{meta_optimizer}")
        if meta_learning_rate is not None and not finite_number(meta_learning_rate, "Guided.meta_learning_rate") > 0:
            raise UserError(f"Guided.meta_learning_rate must be positive, got {meta_learning_rate}")
        if meta_learning_rate is None:
            travel = DEFAULT_TRAVEL if travel is None else travel
            if not finite_number(travel, "Guided.travel") > 0:
                raise UserError(f"Guided.travel must be positive, got {travel}")
            if meta_optimizer not in BOUNDED_STEP_META_OPTIMIZERS:
                raise UserError(f"Guided.travel assumes a meta-optimizer whose step is about its learning rate "
                                f"({', '.join(BOUNDED_STEP_META_OPTIMIZERS[:3])}, ...); with optax.{meta_optimizer} "
                                f"give Guided.meta_learning_rate")
        if guide_batch_size is not None:
            positive_int(guide_batch_size, "Guided.guide_batch_size")
        positive_int(horizon, "Guided.horizon")
        if horizon > 1 and update_every != 1 and update_every % horizon:
            raise UserError(f"guided: update_every ({update_every}) must be 1 or a multiple of the "
                            f"horizon ({horizon}): a tuned window is `horizon` steps")
        tuned = [*tune, *map(param_groups.rate_name, self.groups)]
        self._check_specs(tuned, specs)
        self.forward, self.discount = self._check_mode(mode, forward, discount, horizon, tuned)
        self.tune = tuple(tune)
        self.spec_overrides = dict(specs or {})
        self.mode = mode
        self.settings = dict(meta_optimizer=meta_optimizer, meta_learning_rate=meta_learning_rate, travel=travel,
                             guide_batch_size=guide_batch_size, guide_refresh=guide_refresh,
                             update_every=update_every, horizon=horizon,
                             **({"groups": self.groups} if self.groups else {}), mode=mode,
                             **({"forward": list(self.forward), "discount": self.discount} if mode == "forward" else {}))
        self.bound, self.clip = hypergrad_bound, hypergrad_clip

    @staticmethod
    def _check_mode(mode, forward, discount, horizon: int, tuned: Sequence[str]):
        """(forward names, discount) for `mode`; UserError for settings that do not fit it."""
        if mode not in hyper.MODES:
            raise UserError(f"Guided.mode must be one of {', '.join(map(repr, hyper.MODES))}, got {mode!r}")
        if mode == "one_step":
            given = [name for name, v in (("forward", forward), ("discount", discount)) if v is not None]
            if given:
                raise UserError(f"Guided.{given[0]} applies to Guided.mode = 'forward' (the mode is 'one_step')")
            return (), None
        if horizon > 1:
            raise UserError("Guided.horizon applies to Guided.mode = 'one_step': forward mode sees every "
                            "update since the start (use update_every for fewer meta-updates)")
        discount = 1.0 if discount is None else finite_number(discount, "Guided.discount")
        if not 0 <= discount <= 1:
            raise UserError(f"Guided.discount must be in [0, 1], got {discount}")
        if forward is None:  # the learning-rate multipliers, global and per group
            forward = [k for k in tuned if k == "learning_rate" or param_groups.is_group_rate(k)]
        forward = [forward] if isinstance(forward, str) else list(forward)
        untuned = [k for k in forward if k not in tuned]
        if untuned:
            raise UserError(f"Guided.forward: '{untuned[0]}' is not tuned (tuned: {', '.join(tuned)})")
        if not forward:
            raise UserError("Guided.forward names no tuned value: forward mode needs one (e.g. 'learning_rate')")
        return tuple(dict.fromkeys(forward)), float(discount)

    @staticmethod
    def _check_specs(tune: Sequence[str], specs) -> None:
        """Guided.specs: overrides of tuned hyper-parameters' fields, each a valid HparamSpec."""
        if specs is None:
            return
        if not isinstance(specs, Mapping):
            raise UserError(f"Guided.specs must map hyper-parameter names to fields, got {specs!r}")
        fields = [f.name for f in dataclasses.fields(hyper.HparamSpec)]
        for name, override in specs.items():
            if name not in tune:
                raise UserError(f"Guided.specs: '{name}' is not tuned (Guided.tune: {', '.join(tune)})")
            if not isinstance(override, Mapping) or set(override) - set(fields):
                bad = sorted(set(override) - set(fields)) if isinstance(override, Mapping) else override
                raise UserError(f"Guided.specs['{name}']: unknown field {bad} (fields: {', '.join(fields)})")
            try:
                hyper.HparamSpec(**{**_default_spec(name).__dict__, **override})
            except UserError as e:
                raise UserError(f"Guided.specs['{name}']: {e}") from None

    def specs(self, experiment) -> Dict[str, hyper.HparamSpec]:
        configured = experiment.base_hparams()
        specs = {}
        for name in self.tune:
            experiment.check_settable(name, "guided")
            base = hyper.DEFAULT_SPECS[name]
            fields = {**({"init": configured.get(name, 0.0)} if base.init is None else {}),
                      **self.spec_overrides.get(name, {})}
            specs[name] = hyper.HparamSpec(**{**base.__dict__, **fields})
        for name in map(param_groups.rate_name, self.groups):
            specs[name] = hyper.HparamSpec(**{**_default_spec(name).__dict__, **self.spec_overrides.get(name, {})})
        return specs

    def tuning(self, experiment) -> hyper.Tuning:
        if self.groups:
            _check_groups(self.groups, experiment)
        specs = self.specs(experiment)
        tuning = hyper.Tuning(
            specs=specs, fixed_values={k: v for k, v in experiment.base_hparams().items() if k not in specs},
            meta_tx=optax.identity(), update_every=self.settings["update_every"], horizon=self.settings["horizon"],
            bound=self.bound, clip=self.clip,
            guide_batch_size=self.settings["guide_batch_size"] or experiment.batch_size,
            guide_refresh_every=self._refresh_every(experiment), groups=self.groups or None,
            mode=self.mode, forward=self.forward, discount=1.0 if self.discount is None else self.discount)
        rate = self.meta_learning_rate(tuning, experiment)
        return dataclasses.replace(tuning, meta_tx=getattr(optax, self.settings["meta_optimizer"])(learning_rate=rate))

    def meta_learning_rate(self, tuning: hyper.Tuning, experiment) -> float:
        """The meta learning rate: given, or `travel` ÷ the meta-updates of this experiment's run."""
        if self.settings["meta_learning_rate"] is not None:
            return float(self.settings["meta_learning_rate"])
        return self.settings["travel"] / max(1, _meta_updates(tuning, experiment))

    def run(self, experiment, seed: int) -> Dict:
        tuning = self.tuning(experiment)
        names = list(tuning.specs)
        updates, rate = _meta_updates(tuning, experiment), self.meta_learning_rate(tuning, experiment)
        run_dir = experiment.run_dir(self.name, seed)

        def record_extra(tuner):
            steps, trajectory = taken(np.asarray(jax.device_get(tuner.trajectory)))
            write_schedule(os.path.join(run_dir, SCHEDULE_FILE), names, trajectory, steps)
            if self.groups:  # what a fixed replay of the schedule's group columns scales
                hpo_io.write_json(os.path.join(run_dir, GROUPS_FILE), self.groups)
            return {"hparams": {**tuning.fixed_values, **{k: float(trajectory[-1, i]) for i, k in enumerate(names)}},
                    "learned_schedule": summarise(names, trajectory),
                    "nonfinite_hypergrad_steps": {k: int(v) for k, v in jax.device_get(tuner.nonfinite).items()},
                    "schedule_file": os.path.relpath(os.path.join(run_dir, SCHEDULE_FILE), experiment.model_dir),
                    "guided": {**self.settings, "tune": names, "guide_batch_size": tuning.guide_batch_size,
                               "specs": {k: s.__dict__ for k, s in tuning.specs.items()},
                               # what the run used: the meta learning rate, derived or given, and its travel
                               "meta_updates": updates, "meta_learning_rate": rate, "travel": rate * updates}}

        return experiment.train_guided(
            self.name, seed, tuning, run_dir=run_dir, record_extra=record_extra,
            step_cost=step_cost(tuning, experiment.batch_size))

    def _refresh_every(self, experiment) -> int:
        refresh = self.settings["guide_refresh"]
        if refresh == "fixed":
            return 0
        if refresh == "step":
            return 1
        if refresh == "epoch":
            # Steps per pass over the training split (an upper bound when examples are packed).
            examples = sum(1 for _ in catalog.get_task(experiment.task).source.get_dataset("train"))
            return max(1, examples // experiment.batch_size)
        if isinstance(refresh, int) and refresh > 0:
            return refresh
        raise UserError(f"guided: guide_refresh must be 'fixed', 'step', 'epoch' or a positive "
                        f"number of steps, got {refresh!r}")


def _meta_updates(tuning: hyper.Tuning, experiment) -> int:
    """The tuned steps of a run of `experiment` (on T5X from an initial checkpoint's step)."""
    first = getattr(experiment, "first_step", 0)
    return tuning.meta_updates(first, first + experiment.train_steps)


def _default_spec(name: str) -> hyper.HparamSpec:
    """The reference's spec of a tuned name; a group's multiplier is learned as the learning rate is."""
    return hyper.DEFAULT_SPECS["learning_rate" if param_groups.is_group_rate(name) else name]


def _check_groups(groups, experiment) -> None:
    """Before anything trains: every group holds a parameter of this model, none holds one twice."""
    param_groups.labels(groups, experiment.param_shapes())


# A reverse pass through one training step of a window, in plain-step units: the step's
# forward again (rematerialised) and a Hessian-vector product (about two gradients).
REVERSE_STEP_COST = 3.0
# A forward value's tangent carried through one training step: each matrix product of the
# step's forward and backward passes gets two more, one per operand that varies (XLA counts
# 2.0 plain steps of FLOPs per tangent on the demo's model, the update itself computed once).
TANGENT_COST = 2.0


def step_cost(tuning: hyper.Tuning, batch_size: int) -> float:
    """Compute per training step in plain-step units: a tuned window of K steps every P steps
    (P = max(update_every, K)) adds its guide pass and reverse passes through K - 1 steps
    (the last step's is the one-step lookahead's, which the reference counts as free). In
    forward mode every step also carries a tangent per forward value; a tuned step's tangents of
    the other values through its update alone are elementwise (the optimizer's values), but label
    smoothing's runs through the backward pass: a tangent's cost (XLA: 1.8 plain steps)."""
    guide = tuning.guide_batch_size / batch_size
    forward = tuning.forward_names
    if forward:
        smoothing = "label_smoothing" in tuning.specs and "label_smoothing" not in forward
        return 1.0 + TANGENT_COST * len(forward) + (guide + TANGENT_COST * smoothing) / tuning.update_every
    period = max(tuning.update_every, tuning.horizon)
    return 1.0 + (guide + REVERSE_STEP_COST * (tuning.horizon - 1)) / period


def taken(trajectory: np.ndarray):
    """(step numbers, rows) of the steps the run took: a run started from a T5X
    checkpoint of step N (fine-tuning) has no values for steps 0..N-1."""
    steps = np.flatnonzero(~np.isnan(trajectory).any(axis=1))
    return steps, trajectory[steps]
