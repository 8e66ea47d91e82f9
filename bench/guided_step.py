"""Guided-step time ÷ plain-step time, same model and training batch.

The ideal is about 1 + g for a guide batch g times the training batch (one
extra forward and backward pass on the guide batch; the vector-Jacobian
product through the optimizer update is elementwise). Targets: ≤ 1.20 at
g = 1/4 and ≤ 1.9 at g = 1. With `update_every` k only every k-th step takes the
guide pass: the ideal is 1 + g / k (target ≤ 1.05 at k = 16, g = 1), timed over
windows of k steps.
"""

import functools
import itertools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.measure import synthetic_batch, timed
from hpo.cli import gin_config
from hpo.engine import guided_step
from hpo.engine.experiment import Experiment
from hpo.engine.trainer import DataParallel, init_state, train_step
from hpo.method import hyper, optim


def _paired(plain, plain_state, guided, guided_state, train, guide, repeats, window=1):
    """Plain and guided windows of `window` steps in turn (A B A B ...), so machine noise
    hits both alike."""
    _, plain_state = timed(plain, plain_state, train[:1])  # compile both
    _, guided_state = timed(guided, guided_state, [{"train": train[0], "guide": guide}])
    plain_times, guided_times = [], []
    for i in range(repeats):
        batches = [train[(i + j) % len(train)] for j in range(window)]
        t, plain_state = timed(plain, plain_state, batches)
        plain_times.append(t)
        t, guided_state = timed(guided, guided_state, [{"train": b, "guide": guide} for b in batches])
        guided_times.append(t)
    ratios = [g / p for g, p in zip(guided_times, plain_times)]
    return statistics.median(plain_times), statistics.median(guided_times), statistics.median(ratios)


def guided_step_ratios(gin_files=("default.gin",), repeats=20, guide_fractions=(0.25, 1.0),
                       cadences=(4, 16)):
    """{'plain_step_s': ..., 'guided_step_s@g': ..., 'ratio@g': ..., 'ratio@update_every=k': ...}
    for the configured model (the cadences with g = 1)."""
    gin_config.parse(list(gin_files), ["MODEL_DIR = '/tmp/hpo-bench'", "T5Config.dropout_rate = 0.0"])
    exp = Experiment()
    model, size = exp.model, exp.data.batch_size
    length = exp.data.task_feature_lengths["targets"]
    vocab = model.config.vocab_size
    rng = np.random.RandomState(0)
    par = DataParallel()
    train = [par.put_batch(synthetic_batch(rng, size, length, vocab)) for _ in range(4)]
    values = exp.base_hparams()
    tx = optim.make_optimizer(exp.optimizer, values)
    plain_values = {k: jnp.float32(v) for k, v in values.items()}
    plain = par.jit_step(lambda s, b: train_step(s, b, plain_values, model=model, tx=tx, schedule=exp.schedule))
    state = init_state(model, tx, 0, exp.data.task_feature_lengths)
    out = {"model_params": int(sum(x.size for x in jax.tree.leaves(state.params))),
           "batch": f"{size}x{length}", "optimizer": exp.optimizer.name, "devices": jax.device_count()}
    specs = {"learning_rate": hyper.DEFAULT_SPECS["learning_rate"]}
    meta = optax.adam(3e-3)
    fixed = {k: v for k, v in values.items() if k not in specs}
    def paired(g, update_every=1, repeats=repeats):
        tuning = hyper.Tuning(specs=specs, fixed_values=fixed, meta_tx=meta, update_every=update_every)
        tuned, between = (par.jit_step(functools.partial(guided_step.guided_update, model=model, tx=tx,
                                                         schedule=exp.schedule, tuning=tuning, tune=tune))
                          for tune in (True, False))
        guide = par.put_batch(synthetic_batch(rng, max(1, int(size * g)), length, vocab))
        tuner = hyper.init_tuner(specs, {"learning_rate": 1.0}, meta, (repeats + 1) * update_every + 2)
        gstate = par.put_state(init_state(model, tx, 0, exp.data.task_feature_lengths, tuner))
        if update_every > 1:  # as the Trainer does: the program each step takes, chosen on the host
            _, gstate = timed(between, gstate, [{"train": train[0], "guide": guide}])  # compile it
            steps = itertools.count(1)
            guided = lambda state, batch: (tuned if tuning.due(next(steps)) else between)(state, batch)  # noqa: E731
        else:
            guided = tuned
        fresh = init_state(model, tx, 0, exp.data.task_feature_lengths)  # steps donate their input state
        return _paired(plain, par.put_state(fresh), guided, gstate, train, guide, repeats, window=update_every)

    for g in guide_fractions:
        plain_s, guided_s, ratio = paired(g)
        out[f"plain_step_s@g={g}"] = plain_s
        out[f"guided_step_s@g={g}"] = guided_s
        out[f"ratio@g={g}"] = ratio
    for k in cadences:  # windows of k steps: fewer of them for the same time
        out[f"ratio@update_every={k}"] = paired(1.0, k, repeats=max(10, 2 * repeats // k))[2]
    return out
