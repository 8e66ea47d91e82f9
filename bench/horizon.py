"""Long-horizon guided windows (`Guided.horizon` K) against plain training: time per
training step and the memory XLA plans for the step's program.

A tuned window of K steps trains K steps, then takes the guide pass and the
reverse pass through all K updates (each step's forward again, rematerialised,
and a Hessian-vector product). Time ÷ plain step is timed over windows, paired
(A B A B ...). Memory is the compiled program's own plan (arguments, outputs
and temporaries: `Compiled.memory_analysis`), the same on every machine, where
a CPU has no device peak counter.
"""

import functools
import statistics
from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.measure import compiled, planned_mib, synthetic_batch, timed
from hpo.cli import gin_config
from hpo.engine import guided_step
from hpo.engine.experiment import Experiment
from hpo.engine.trainer import DataParallel, init_state, train_step
from hpo.method import hyper, optim

def configured(gin_files: Sequence[str], bindings: Sequence[str]):
    """The configured experiment, its batch size, target length and vocabulary size, and the
    data-parallel placement of the engine."""
    gin_config.parse(list(gin_files), ["MODEL_DIR = '/tmp/hpo-bench'", *bindings])
    exp = Experiment()
    return exp, exp.data.batch_size, exp.data.task_feature_lengths["targets"], exp.model.config.vocab_size, \
        DataParallel()


def horizon_costs(gin_files: Sequence[str] = ("default.gin",), bindings: Sequence[str] = (),
                  horizons: Sequence[int] = (1, 4, 16), repeats: int = 5) -> Dict:
    """{'plain_step_s', 'plain_mib', 'step_ratio@K', 'mib@K', 'mib_ratio@K'} for each horizon K."""
    exp, size, length, vocab, par = configured(gin_files, bindings)
    model, rng = exp.model, np.random.RandomState(0)
    values = exp.base_hparams()
    tx = optim.make_optimizer(exp.optimizer, values)
    plain_values = {k: jnp.float32(v) for k, v in values.items()}
    lengths = exp.data.task_feature_lengths
    train = [synthetic_batch(rng, size, length, vocab) for _ in range(max(horizons))]
    guide = synthetic_batch(rng, size, length, vocab)
    state = par.put_state(init_state(model, tx, 0, lengths))
    plain = compiled(par.jit_step(lambda s, b: train_step(s, b, plain_values, model=model, tx=tx,
                                                          schedule=exp.schedule)), state, par.put_batch(train[0]))
    out = {"model_params": int(sum(x.size for x in jax.tree.leaves(state.params))),
           "batch": f"{size}x{length}", "optimizer": exp.optimizer.name, "plain_mib": planned_mib(plain)}
    specs = {"learning_rate": hyper.DEFAULT_SPECS["learning_rate"]}
    meta = optax.adam(3e-3)
    fixed = {k: v for k, v in values.items() if k not in specs}
    plain_times = []
    for k in horizons:
        tuning = hyper.Tuning(specs=specs, fixed_values=fixed, meta_tx=meta, horizon=k)
        batches = train[:k]
        stack = (lambda rows: jax.tree.map(lambda *r: np.stack(r), *rows)) if k > 1 else (lambda rows: rows[0])
        batch = par.put_batch({"train": stack(batches), "guide": stack([guide] * k)}, stacked=k > 1)
        tuner = hyper.init_tuner(specs, {"learning_rate": 1.0}, meta, (repeats + 1) * k)
        gstate = par.put_state(init_state(model, tx, 0, lengths, tuner))
        window = compiled(par.jit_step(functools.partial(guided_step.guided_update, model=model, tx=tx,
                                                         schedule=exp.schedule, tuning=tuning), stacked=k > 1),
                          gstate, batch)
        out[f"mib@{k}"] = planned_mib(window)
        out[f"mib_ratio@{k}"] = out[f"mib@{k}"] / out["plain_mib"]
        _, gstate = timed(window, gstate, [batch])  # warm-up
        _, state = timed(plain, state, [par.put_batch(train[0])])
        ratios = []
        for _ in range(repeats):
            p, state = timed(plain, state, [par.put_batch(b) for b in batches])
            g, gstate = timed(window, gstate, [batch])
            plain_times.append(p / k)
            ratios.append(g / p)
        out[f"step_ratio@{k}"] = statistics.median(ratios)
    out["plain_step_s"] = statistics.median(plain_times)
    return out
