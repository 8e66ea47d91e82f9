"""The fixed strategy: one run with the configured hyper-parameter values."""

import functools
from typing import Dict, Mapping

import gin
import jax.numpy as jnp

from hpo import optim
from hpo.errors import UserError
from hpo.strategies.base import Strategy
from hpo.trainer import train_step


@gin.configurable
class Fixed(Strategy):
    """Trains once with constant hyper-parameters: the configured ones, updated by `hparams`."""

    name = "fixed"

    def __init__(self, hparams: Mapping[str, float] = None):
        self.hparams = dict(hparams or {})

    def values(self, experiment) -> Dict[str, float]:
        values = experiment.base_hparams()
        unknown = set(self.hparams) - set(values)
        if unknown:
            raise UserError(f"fixed: '{sorted(unknown)[0]}' is not a hyper-parameter of this "
                            f"experiment (it has {', '.join(sorted(values))})")
        values.update({k: float(v) for k, v in self.hparams.items()})
        return values

    def run(self, experiment, seed: int) -> Dict:
        values = self.values(experiment)
        tx = optim.make_optimizer(experiment.optimizer, values)
        constants = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
        step = functools.partial(train_step, model=experiment.model, tx=tx, schedule=experiment.schedule)
        record = experiment.train_and_evaluate(
            self.name, seed, lambda state, batch: step(state, batch, constants), tx,
            record_extra=lambda state: {"hparams": values})
        return record
