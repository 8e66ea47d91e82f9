"""The fixed strategy: one run with constant or replayed hyper-parameter values."""

import functools
import os
from typing import Callable, Dict, Mapping, Tuple

import gin
import jax.numpy as jnp

from hpo.core import io as hpo_io
from hpo.core.errors import UserError
from hpo.flow import records
from hpo.flow.schedules import GROUPS_FILE, read_schedule
from hpo.method import groups as param_groups, optim
from hpo.strategies.base import Strategy

REPLAY_MODES = ("schedule", "final", "mean")
REPLAY_SOURCES = ("guided", "pbt")  # the strategies whose hparams.csv a replay takes


@gin.configurable
class Fixed(Strategy):
    """Trains once with the configured hyper-parameters, updated by `hparams`.

    With `replay` (a learned-schedule CSV written by the guided strategy) the
    run takes the schedule step by step (`replay_mode='schedule'`; past its end
    the last value holds) or a constant derived from it ('final' or 'mean'),
    which tests whether a learned schedule beats a constant (`replay_of`: the strategy that
    learned it, guided or pbt, which names the run's directory and row). A schedule of per-group
    learning rates (`Guided.groups`) replays on the groups in its run's groups.json.
    """

    name = "fixed"

    def __init__(self, hparams: Mapping[str, float] = None, replay: str = None,
                 replay_mode: str = "schedule", replay_of: str = "guided"):
        if replay_mode not in REPLAY_MODES:
            raise UserError(f"fixed: replay_mode must be one of {', '.join(REPLAY_MODES)}")
        if hparams is not None and not isinstance(hparams, Mapping):
            raise UserError(f"Fixed.hparams must map hyper-parameter names to values, got {hparams!r}")
        self.hparams = dict(hparams or {})
        for name, value in self.hparams.items():
            if name not in (*optim.OPTIMIZER_HPARAMS, *optim.LOSS_HPARAMS):
                raise UserError(f"Fixed.hparams: unknown hyper-parameter '{name}' (choose from "
                                f"{', '.join((*optim.OPTIMIZER_HPARAMS, *optim.LOSS_HPARAMS))})")
            optim.check_hparam(name, value, "Fixed.hparams")
        if replay_of not in REPLAY_SOURCES:
            raise UserError(f"fixed: replay_of must be one of {', '.join(REPLAY_SOURCES)}, got {replay_of!r}")
        self.replay, self.replay_mode, self.replay_of = replay, replay_mode, replay_of

    def values(self, experiment) -> Dict[str, float]:
        # Replayed values start at the schedule's first; they must exist in the optimizer state
        # (a group's multiplier, in its groups' parameters).
        _, schedule = self._replayed
        overrides = {**{k: float(v[0]) for k, v in schedule.items()}, **self.hparams}
        for name in overrides:
            if not param_groups.is_group_rate(name):
                experiment.check_settable(name, "fixed")
        if self.replay_groups:
            param_groups.labels(self.replay_groups, experiment.param_shapes())
        return {**experiment.base_hparams(), **{k: float(v) for k, v in overrides.items()}}

    @functools.cached_property
    def _replayed(self) -> Tuple[int, Dict]:
        """(the step of the schedule's first row, its values per hyper-parameter), read once."""
        if not self.replay:
            return 0, {}
        schedule = read_schedule(self.replay)
        return int(schedule.pop("step")[0]), schedule

    @functools.cached_property
    def replay_groups(self) -> Dict[str, str]:
        """The parameter groups of a replayed schedule's per-group learning rates (`Guided.groups`,
        in the guided run's groups.json beside the schedule); {} when it has none."""
        _, schedule = self._replayed
        grouped = sorted(k[len(param_groups.PREFIX):] for k in schedule if param_groups.is_group_rate(k))
        if not grouped:
            return {}
        path = os.path.join(os.path.dirname(self.replay), GROUPS_FILE)
        try:
            groups = hpo_io.read_json(path)
        except ValueError as e:
            raise UserError(f"fixed: {path} is not JSON ({e})") from None
        if groups is None:
            raise UserError(f"fixed: {self.replay} has per-group learning rates ({', '.join(grouped)}) but no "
                            f"{GROUPS_FILE} beside it naming their parameters (a guided run writes one)")
        groups = param_groups.resolve(groups)
        if sorted(groups) != grouped:
            raise UserError(f"fixed: {path} names groups {', '.join(sorted(groups))}, the schedule "
                            f"{', '.join(grouped)}")
        return groups

    def step_values(self, experiment) -> Tuple[Callable, Dict]:
        """A function step -> the values that step trains with, plus a description for the record."""
        values = {k: jnp.asarray(v, jnp.float32) for k, v in self.values(experiment).items()}
        first, schedule = self._replayed
        if not schedule:
            return (lambda step: values), {}
        if self.replay_mode != "schedule":
            derive = (lambda v: v[-1]) if self.replay_mode == "final" else (lambda v: v.mean())
            values.update({k: jnp.asarray(derive(v), jnp.float32) for k, v in schedule.items()})
            return (lambda step: values), self._replay_info(schedule)
        tables = {k: jnp.asarray(v) for k, v in schedule.items()}

        def at(step):  # before its first row the schedule's first value holds, past its end the last
            return {**values, **{k: t[jnp.clip(step - first, 0, len(t) - 1)] for k, t in tables.items()}}

        return at, self._replay_info(schedule)

    def _replay_info(self, schedule) -> Dict:
        of = {} if self.replay_of == "guided" else {"of": self.replay_of}  # guided's: as records had it
        return {"replay": {"file": hpo_io.abspath(self.replay), "mode": self.replay_mode,
                           "hparams": sorted(schedule), **of}}

    def run(self, experiment, seed: int, run_dir: str = None, **kwargs) -> Dict:
        """One training run; `kwargs` go to the experiment's `train_fixed` (Optuna
        trials pass their own run_dir, a pruning hook and write_record=False)."""
        values_at, info = self.step_values(experiment)
        fixed = {k: records.as_float(v) for k, v in values_at(0).items()}
        source = "" if self.replay_of == "guided" else self.replay_of + "-"
        default_dir = experiment.run_dir(self.name + ("-replay-" + source + self.replay_mode if info else ""), seed)
        return experiment.train_fixed(
            self.name, seed, values_at, groups=self.replay_groups or None, run_dir=run_dir or default_dir,
            record_extra=lambda tuner: {"hparams": fixed, **info}, **kwargs)
