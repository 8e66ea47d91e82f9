"""Training tokens/s of the engine's train step ÷ a bare Flax + optax loop, and MFU.

Both sides train the same module from the same parameters on one fixed,
pre-fetched device batch (data loading is out of the ratio), timed in turn
(A B A B ...) so machine noise hits both; the ratio is the median of the
per-pair ratios. Tokens are the positions a step processes, encoder plus
decoder (batch × (inputs + targets)).
"""

import statistics
import time
from typing import Dict, Sequence

import jax

from bench import reference_loop
from bench.measure import peak_flops, train_flops_per_example, xla_cost
from hpo.cli import gin_config
from hpo.core.errors import UserError
from hpo.data import pipeline
from hpo.engine.experiment import Experiment
from hpo.engine.trainer import DataParallel, init_state
from hpo.strategies.fixed import Fixed

def experiment(gin_files: Sequence[str] = ("default.gin",), bindings: Sequence[str] = ()) -> Experiment:
    """An Experiment from base.gin + `gin_files` + `bindings`, writing nowhere that matters."""
    gin_config.parse(list(gin_files), ["MODEL_DIR = '/tmp/hpo-bench'", *bindings])
    return Experiment()


def engine_step_fn(exp: Experiment):
    """(step_fn(state, batch), optimizer): `hpo.engine.trainer.train_step` as `Fixed.run` hands it to the Trainer."""
    values_at, _ = Fixed().step_values(exp)
    return exp.fixed_step(values_at)


def engine_step(exp: Experiment, par: DataParallel):
    """(jitted step, optimizer): the fixed strategy's step, jitted as `Trainer.fit` does."""
    step_fn, tx = engine_step_fn(exp)
    return par.jit_step(step_fn), tx


def _timed(step, carry, batch):
    start = time.perf_counter()
    carry, out = step(carry, batch)
    jax.block_until_ready((carry, out))
    return time.perf_counter() - start, carry, out


def train_throughput(gin_files: Sequence[str] = ("default.gin",), bindings: Sequence[str] = (),
                     repeats: int = 20, seed: int = 0) -> Dict[str, object]:
    """Engine and reference tokens/s, their ratio (engine ÷ reference), model FLOPs and MFU."""
    exp = experiment(gin_files, bindings)
    if exp.label_smoothing:
        raise UserError("the throughput benchmark's bare loop has no label smoothing: leave it at 0")
    lengths = dict(exp.data.task_feature_lengths)
    par = DataParallel()
    batch = par.put_batch(next(pipeline.train_batches(exp.data, seed=seed)))
    engine, tx = engine_step(exp, par)
    engine_state = par.put_state(init_state(exp.model, tx, seed, lengths))
    ref_tx = reference_loop.reference_optimizer(exp)
    reference = reference_loop.reference_step(exp.model.module, ref_tx, exp.model.z_loss)
    ref_carry = par.put_state(reference_loop.reference_init(ref_tx, engine_state.params, engine_state.rng))
    for _ in range(2):  # compile, then one more step each so both run on warm caches
        _, engine_state, _ = _timed(engine, engine_state, batch)
        _, ref_carry, _ = _timed(reference, ref_carry, batch)
    engine_times, ref_times = [], []
    for _ in range(repeats):
        t, engine_state, metrics = _timed(engine, engine_state, batch)
        engine_times.append(t)
        t, ref_carry, ref_loss = _timed(reference, ref_carry, batch)
        ref_times.append(t)
    engine_cost, ref_cost = xla_cost(engine, engine_state, batch), xla_cost(reference, ref_carry, batch)
    size = exp.data.batch_size
    tokens = size * (lengths["inputs"] + lengths["targets"])
    flops = size * train_flops_per_example(exp.model.config, lengths["inputs"], lengths["targets"])
    engine_s, ref_s = statistics.median(engine_times), statistics.median(ref_times)
    device = jax.devices()[0]
    peak = peak_flops(device.device_kind)
    return {
        "model_params": int(sum(x.size for x in jax.tree.leaves(engine_state.params))),
        "dtype": exp.model.config.dtype, "batch": f"{size}x({lengths['inputs']}+{lengths['targets']})",
        "device_kind": device.device_kind, "devices": par.num_devices, "repeats": repeats,
        "engine_step_s": engine_s, "reference_step_s": ref_s,
        "engine_tokens_per_s": tokens / engine_s, "reference_tokens_per_s": tokens / ref_s,
        "engine_over_reference": statistics.median(r / e for e, r in zip(engine_times, ref_times)),
        # Same model, batch, dropout and optimizer: both sides reach the same loss.
        "engine_last_loss": float(metrics["loss"]), "reference_last_loss": float(ref_loss),
        "model_flops_per_step": flops,
        # Deterministic, noise-free view of the same comparison: the extra work the engine's graph does.
        "engine_over_reference_xla_flops": _ratio(engine_cost["flops"], ref_cost["flops"]),
        "engine_over_reference_xla_bytes": _ratio(engine_cost["bytes"], ref_cost["bytes"]),
        "engine_mfu": flops / engine_s / (peak * par.num_devices) if peak else None,
    }


def _ratio(a, b):
    return a / b if a and b else None
