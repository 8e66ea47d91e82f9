"""Forward-mode guided steps (`Guided.mode = 'forward'`) against plain training: time per step and
the memory XLA plans for the step's program, each ÷ the plain step's.

A forward step carries one tangent of the training state per forward value through the update
(a `jax.jvp` each) and takes the guide pass; its horizon is the whole run, at a memory that does
not grow with it. Variants: the learning rate alone (the default config), four learning rates
(the global one and three per-group multipliers), and the paper regime (configs/paper.gin: LAMB,
six values) with all six forward and as shipped (the learning rate forward, five one step ahead),
each beside its one-step step. As bench/horizon.py: paired
timings (A B A B ...), and `Compiled.memory_analysis` for memory (the same on every machine). The
step programs donate their input state, as the trainer's do.
"""

import functools
import statistics
from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.horizon import configured
from bench.measure import compiled, planned_mib, synthetic_batch, timed
from hpo.engine import guided_step
from hpo.engine.trainer import init_state, train_step
from hpo.method import groups as param_groups, hyper, optim

SIX = ["learning_rate", "beta1", "beta2", "eps", "weight_decay", "label_smoothing"]
# (label, gin files, tuned values, groups, forward values)
VARIANTS = (
    ("learning rate", ("default.gin",), ["learning_rate"], None, None),
    ("4 learning rates", ("default.gin",), ["learning_rate"], "embeddings_encoder_decoder", None),
    ("paper regime, six values", ("default.gin", "paper.gin"), SIX, None, SIX),
    ("paper regime as shipped", ("default.gin", "paper.gin"), SIX, None, None),  # the learning rate forward
)


def _variant(gin_files, bindings, tune, groups, forward, repeats: int) -> Dict:
    exp, size, length, vocab, par = configured(gin_files, bindings)
    model, rng = exp.model, np.random.RandomState(0)
    values = exp.base_hparams()
    groups = param_groups.resolve(groups)
    tuned = [*tune, *map(param_groups.rate_name, groups)]
    specs = {k: hyper.DEFAULT_SPECS[k if not param_groups.is_group_rate(k) else "learning_rate"] for k in tuned}
    specs = {k: hyper.HparamSpec(**{**s.__dict__, "init": s.init if s.init is not None else values.get(k, 0.01)})
             for k, s in specs.items()}
    tx = optim.make_optimizer(exp.optimizer, {**values, **{k: s.init for k, s in specs.items()}}, groups or None)
    plain_values = {k: jnp.float32(v) for k, v in {**values, **{k: s.init for k, s in specs.items()}}.items()}
    lengths = exp.data.task_feature_lengths
    train, guide = synthetic_batch(rng, size, length, vocab), synthetic_batch(rng, size, length, vocab)
    fresh = lambda tuner=None: par.put_state(init_state(model, tx, 0, lengths, tuner))  # noqa: E731
    state = fresh()
    plain = compiled(par.jit_step(lambda s, b: train_step(s, b, plain_values, model=model, tx=tx,
                                                          schedule=exp.schedule)),
                     state, par.put_batch(train))
    out = {"model_params": int(sum(x.size for x in jax.tree.leaves(state.params))),
           "batch": f"{size}x{length}", "optimizer": exp.optimizer.name, "tuned": tuned,
           "plain_mib": planned_mib(plain)}
    fixed = {k: v for k, v in values.items() if k not in specs}
    batch = par.put_batch({"train": train, "guide": guide})
    steps = {}
    for mode in ("one_step", "forward"):
        tuning = hyper.Tuning(specs=specs, fixed_values=fixed, meta_tx=optax.adam(1e-3), mode=mode,
                              forward=forward or [k for k in tuned if k == "learning_rate"
                                                  or param_groups.is_group_rate(k)], groups=groups or None)
        gstate = fresh(lambda carry, tuning=tuning: tuning.init(2 * repeats + 4, carry))
        step = compiled(par.jit_step(functools.partial(guided_step.guided_update, model=model, tx=tx,
                                                       schedule=exp.schedule, tuning=tuning)), gstate, batch)
        out[f"{mode}_mib"] = planned_mib(step)
        out[f"{mode}_mib_ratio"] = out[f"{mode}_mib"] / out["plain_mib"]
        out[f"{mode}_forward_values"] = len(tuning.forward_names)
        _, gstate = timed(step, gstate, [batch])  # warm-up
        steps[mode] = [step, gstate]
    _, state = timed(plain, state, [par.put_batch(train)])
    ratios = {mode: [] for mode in steps}
    for _ in range(repeats):
        for mode, entry in steps.items():
            p, state = timed(plain, state, [par.put_batch(train)])
            g, entry[1] = timed(entry[0], entry[1], [batch])
            ratios[mode].append(g / p)
    for mode in steps:
        out[f"{mode}_step_ratio"] = statistics.median(ratios[mode])
    return out


def forward_costs(gin_files: Sequence[str] = (), bindings: Sequence[str] = (), repeats: int = 5,
                  variants: Sequence[str] = tuple(v[0] for v in VARIANTS)) -> Dict[str, Dict]:
    """{variant: {'one_step_step_ratio', 'forward_step_ratio', 'one_step_mib_ratio', 'forward_mib_ratio', ...}}
    for the named `variants`; `gin_files` go after each variant's own."""
    return {label: _variant([*files, *gin_files], bindings, tune, groups, forward, repeats)
            for label, files, tune, groups, forward in VARIANTS if label in variants}
