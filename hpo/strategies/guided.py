"""The guided strategy: hyper-parameters learned during one training run.

The paper's method (shared/docs/guided-hpo.md), described once as a
`hyper.Tuning` that either backend turns into its train step: each step trains
with the current values, and a meta-optimizer moves the values down the
gradient of the guide loss of the updated model. Its record carries the
learned schedule.
"""

import csv
import dataclasses
import io
import os
from typing import Dict, Mapping, Sequence

import gin
import jax
import numpy as np
import optax

from hpo import groups as param_groups, hyper, io as hpo_io
from hpo.data import catalog
from hpo.errors import UserError, positive_int
from hpo.strategies.base import Strategy

SCHEDULE_FILE = "hparams.csv"
GROUPS_FILE = "groups.json"  # beside the schedule: Guided.groups, {name: regex}


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
    `groups`: a preset name (`hpo.groups.PRESETS`) or {name: regex over
    parameter paths}; each group gets a learning-rate multiplier `learning_rate/<name>` on
    its parameters' updates, tuned with `tune` (the global `learning_rate` multiplies every
    parameter's rate and is tuned only if `tune` names it; `tune` may then be empty).
    """

    name = "guided"

    def __init__(self, tune: Sequence[str] = ("learning_rate",), specs: Mapping[str, Mapping] = None,
                 meta_optimizer: str = "adam", meta_learning_rate: float = 3e-3,
                 guide_batch_size: int = None, guide_refresh="fixed", update_every: int = 1,
                 hypergrad_bound: float = 10.0, hypergrad_clip: float = None, horizon: int = 1,
                 groups=None):
        if isinstance(tune, str):
            tune = (tune,)
        self.groups = param_groups.resolve(groups)
        unknown = set(tune) - set(hyper.DEFAULT_SPECS)
        if unknown or not (tune or self.groups):
            raise UserError(f"guided: cannot tune {sorted(unknown) or 'nothing'} "
                            f"(choose from {', '.join(hyper.DEFAULT_SPECS)})")
        if update_every <= 0 or meta_learning_rate <= 0:
            raise UserError("guided: update_every and meta_learning_rate must be positive")
        if not isinstance(meta_optimizer, str) or not callable(getattr(optax, meta_optimizer, None)):
            raise UserError(f"guided: unknown meta-optimizer optax.{meta_optimizer}")
        if guide_batch_size is not None:
            positive_int(guide_batch_size, "Guided.guide_batch_size")
        positive_int(horizon, "Guided.horizon")
        if horizon > 1 and update_every != 1 and update_every % horizon:
            raise UserError(f"guided: update_every ({update_every}) must be 1 or a multiple of the "
                            f"horizon ({horizon}): a tuned window is `horizon` steps")
        self._check_specs([*tune, *map(param_groups.rate_name, self.groups)], specs)
        self.tune = tuple(tune)
        self.spec_overrides = dict(specs or {})
        self.meta_tx = getattr(optax, meta_optimizer)(learning_rate=meta_learning_rate)
        self.settings = dict(meta_optimizer=meta_optimizer, meta_learning_rate=meta_learning_rate,
                             guide_batch_size=guide_batch_size, guide_refresh=guide_refresh,
                             update_every=update_every, horizon=horizon,
                             **({"groups": self.groups} if self.groups else {}))
        self.bound, self.clip = hypergrad_bound, hypergrad_clip

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
        return hyper.Tuning(
            specs=specs, fixed_values={k: v for k, v in experiment.base_hparams().items() if k not in specs},
            meta_tx=self.meta_tx, update_every=self.settings["update_every"], horizon=self.settings["horizon"],
            bound=self.bound, clip=self.clip,
            guide_batch_size=self.settings["guide_batch_size"] or experiment.batch_size,
            guide_refresh_every=self._refresh_every(experiment), groups=self.groups or None)

    def run(self, experiment, seed: int) -> Dict:
        tuning = self.tuning(experiment)
        names = list(tuning.specs)
        run_dir = experiment.run_dir(self.name, seed)

        def record_extra(tuner):
            steps, trajectory = taken(np.asarray(jax.device_get(tuner["trajectory"])))
            write_schedule(os.path.join(run_dir, SCHEDULE_FILE), names, trajectory, steps)
            if self.groups:  # what a fixed replay of the schedule's group columns scales
                hpo_io.write_json(os.path.join(run_dir, GROUPS_FILE), self.groups)
            return {"hparams": {**tuning.fixed_values, **{k: float(trajectory[-1, i]) for i, k in enumerate(names)}},
                    "learned_schedule": summarise(names, trajectory),
                    "nonfinite_hypergrad_steps": {k: int(v) for k, v in jax.device_get(tuner["nonfinite"]).items()},
                    "schedule_file": os.path.relpath(os.path.join(run_dir, SCHEDULE_FILE), experiment.model_dir),
                    "guided": {**self.settings, "tune": names, "guide_batch_size": tuning.guide_batch_size,
                               "specs": {k: s.__dict__ for k, s in tuning.specs.items()}}}

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


def _default_spec(name: str) -> hyper.HparamSpec:
    """The reference's spec of a tuned name; a group's multiplier is learned as the learning rate is."""
    return hyper.DEFAULT_SPECS["learning_rate" if param_groups.is_group_rate(name) else name]


def _check_groups(groups, experiment) -> None:
    """Before anything trains: every group holds a parameter of this model, none holds one twice."""
    param_groups.labels(groups, experiment.param_shapes())


# A reverse pass through one training step of a window, in plain-step units: the step's
# forward again (rematerialised) and a Hessian-vector product (about two gradients).
REVERSE_STEP_COST = 3.0


def step_cost(tuning: hyper.Tuning, batch_size: int) -> float:
    """Compute per training step in plain-step units: a tuned window of K steps every P steps
    (P = max(update_every, K)) adds its guide pass and reverse passes through K - 1 steps
    (the last step's is the one-step lookahead's, which the reference counts as free)."""
    period = max(tuning.update_every, tuning.horizon)
    extra = tuning.guide_batch_size / batch_size + REVERSE_STEP_COST * (tuning.horizon - 1)
    return 1.0 + extra / period


def taken(trajectory: np.ndarray):
    """(step numbers, rows) of the steps the run took: a run started from a T5X
    checkpoint of step N (fine-tuning) has no values for steps 0..N-1."""
    steps = np.flatnonzero(~np.isnan(trajectory).any(axis=1))
    return steps, trajectory[steps]


def summarise(names, trajectory: np.ndarray) -> Dict[str, Dict[str, float]]:
    return {k: {"init": float(trajectory[0, i]), "final": float(trajectory[-1, i]),
                "mean": float(trajectory[:, i].mean()), "min": float(trajectory[:, i].min()),
                "max": float(trajectory[:, i].max())} for i, k in enumerate(names)}


def write_schedule(path: str, names, trajectory: np.ndarray, steps: Sequence[int]) -> None:
    """The learned schedule as CSV: one row per step, the values that step used."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["step", *names])
    for step, row in zip(steps, trajectory):
        writer.writerow([int(step), *(repr(float(v)) for v in row)])
    hpo_io.write_text(path, out.getvalue())


def read_schedule(path: str) -> Dict[str, np.ndarray]:
    if not hpo_io.isfile(path):
        raise UserError(f"schedule file not found: {path}")
    rows = list(csv.DictReader(io.StringIO(hpo_io.read_text(path))))
    if not rows or "step" not in rows[0]:
        raise UserError(f"{path}: not a learned-schedule CSV (needs a 'step' column and rows)")
    try:  # "step": the step each row was taken at (a fine-tuning run's start at its checkpoint's)
        return {k: np.array([float(r[k]) for r in rows], np.int32 if k == "step" else np.float32) for k in rows[0]}
    except (TypeError, ValueError):
        raise UserError(f"{path}: a value is not a number") from None
