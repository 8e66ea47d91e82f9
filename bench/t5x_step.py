"""T5X against the built-in engine, and hpo's steps under T5X (`make bench`, section t5x).

    python -m bench.t5x_step SIZE REPEATS   # prints the figures as JSON

On one network size, batch and optimizer (hpo's optax Adafactor in both), in
one process, with steps timed in turn (A B A B ...):
- tokens/s of T5X's own train step (`t5x.trainer.Trainer`, as `t5x.train` runs it)
  and of the built-in engine's, and their ratio;
- hpo's T5X trainer for fixed values ÷ T5X's own step (what taking values costs);
- hpo's guided step under T5X ÷ its plain step (guide batch = training batch).
Sizes: T5X's tiny.gin and hpo's mini (configs/t5x/models/mini.gin, the same
dimensions as configs/models/t5_1_1_mini.gin). Each size runs in a process of
its own: T5X's gin files register T5X's configurables, and hpo's base.gin then
finds `DatasetConfig` ambiguous.
"""

import json
import subprocess
import sys
import statistics
import tempfile
import time
from typing import Dict

import jax
import numpy as np

from bench.throughput import engine_step, experiment
from hpo.data import pipeline
from hpo.engine.trainer import DataParallel, init_state

# The embedded demo's task, as configs/default.gin sets it (both sides read the same data).
DEMO_TASK = ["synthetic_translation_task.words_per_category = 20", "synthetic_translation_task.num_dev = 200",
             "synthetic_translation_task.num_test = 200"]
SIZES = {
    "tiny": ("t5x/examples/t5/t5_1_1/tiny.gin", ["T5Config.emb_dim = 8", "T5Config.num_heads = 4",
                                                  "T5Config.head_dim = 3", "T5Config.mlp_dim = 16"]),
    "mini": ("t5x/models/mini.gin", []),  # base.gin's network is the mini
}


def _t5x_parts(model_gin: str, batch_size: int, length: int):
    import gin
    import t5x.train
    from hpo.cli import t5x_gin as t5x_config
    model_dir = tempfile.mkdtemp(prefix="hpo-bench-t5x-")
    t5x_config.parse([model_gin, "t5x/translation.gin"], [
        *DEMO_TASK, f"MODEL_DIR = '{model_dir}'", f"BATCH_SIZE = {batch_size}", "DROPOUT_RATE = 0.0",
        f"TASK_FEATURE_LENGTHS = {{'inputs': {length}, 'targets': {length}}}",
        "network.T5Config.dtype = 'float32'"])
    bindings = gin.get_bindings(t5x.train.train)
    return bindings["model"], bindings["partitioner"], dict(gin.get_bindings(t5x.trainer.Trainer))


def _t5x_state(model, partitioner, batch):
    from t5x import utils
    shapes = {k: v.shape for k, v in batch.items()}
    types = {k: v.dtype for k, v in batch.items()}
    init = utils.TrainStateInitializer(model.optimizer_def, model.get_initial_variables, shapes, partitioner, types)
    return init.from_scratch(jax.random.PRNGKey(0)), init.train_state_axes


def _paired(a, a_state, b, b_state, batch_a, batch_b, repeats: int):
    """Median seconds of A and of B, and the median of the pairwise ratios A/B."""
    def timed(step, state, batch):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(state)
        return time.perf_counter() - start, state

    for _ in range(2):  # compile, then once more on warm caches
        _, a_state = timed(a, a_state, batch_a)
        _, b_state = timed(b, b_state, batch_b)
    times_a, times_b = [], []
    for _ in range(repeats):
        t, a_state = timed(a, a_state, batch_a)
        times_a.append(t)
        t, b_state = timed(b, b_state, batch_b)
        times_b.append(t)
    return (statistics.median(times_a), statistics.median(times_b),
            statistics.median(x / y for x, y in zip(times_a, times_b)))


def t5x_vs_engine(size: str = "tiny", batch_size: int = 32, length: int = 32, repeats: int = 20) -> Dict:
    import optax
    from t5x import optimizers, trainer as trainer_lib
    from hpo.method import hyper
    from hpo.t5x_backend import optim as t5x_optim
    from hpo.t5x_backend.trainer import GUIDE, GuidedTrainer, ValuesTrainer

    model_gin, builtin_bindings = SIZES[size]
    # The built-in engine on the same dimensions, batch and Adafactor (its gin parsed first).
    exp = experiment(["default.gin"], [*builtin_bindings, f"BATCH_SIZE = {batch_size}",
                                       "T5Config.dropout_rate = 0.0", "T5Config.dtype = 'float32'",
                                       f"TASK_FEATURE_LENGTHS = {{'inputs': {length}, 'targets': {length}}}"])
    par = DataParallel()
    engine, tx = engine_step(exp, par)
    data = pipeline.DatasetConfig("synthetic_translation", {"inputs": length, "targets": length}, batch_size)
    batch = next(pipeline.train_batches(data))
    guide = next(pipeline.train_batches(data, split="guide"))
    engine_state = par.put_state(init_state(exp.model, tx, 0, exp.data.task_feature_lengths))

    model, partitioner, trainer_args = _t5x_parts(model_gin, batch_size, length)
    state, axes = _t5x_state(model, partitioner, batch)
    common = dict(model=model, partitioner=partitioner, eval_names=[], summary_dir=None, train_state_axes=axes,
                  rng=jax.random.PRNGKey(1), **trainer_args)
    stock = trainer_lib.Trainer(train_state=state, **common)
    values = {"learning_rate": 1.0, **t5x_optim.injected_values(model.optimizer_def), "label_smoothing": 0.0}
    ours = ValuesTrainer(train_state=state, values_at=lambda step: values, **common)
    t5x_batch = jax.device_put(batch)
    t5x_s, engine_s, t5x_over_engine = _paired(
        stock._partitioned_train_step, state, engine, engine_state, t5x_batch, par.put_batch(batch), repeats)
    state, _ = _t5x_state(model, partitioner, batch)  # steps donate their input state
    ours_s, stock_s, ours_over_stock = _paired(
        ours._partitioned_train_step, state, stock._partitioned_train_step, _t5x_state(model, partitioner, batch)[0],
        t5x_batch, t5x_batch, repeats)

    # Guided under T5X: the tuner rides in the optimizer state.
    tuning = hyper.Tuning(specs={"learning_rate": hyper.DEFAULT_SPECS["learning_rate"]},
                          fixed_values={k: v for k, v in values.items() if k != "learning_rate"},
                          meta_tx=optax.adam(1e-2))
    tuned_model = _with_optimizer(model, optimizers.OptaxWrapper(
        t5x_optim.carrying_tuner(model.optimizer_def.optax_optimizer, tuning, 2 * repeats + 8)))
    guided_state, guided_axes = _t5x_state(tuned_model, partitioner, batch)
    guided = GuidedTrainer(train_state=guided_state, tuning=tuning,
                           **{**common, "model": tuned_model, "train_state_axes": guided_axes})
    both = jax.device_put({**batch, **{GUIDE + k: v for k, v in guide.items()}})
    state, _ = _t5x_state(model, partitioner, batch)
    guided_s, plain_s, guided_over_plain = _paired(
        guided._partitioned_train_step, guided_state, ours._partitioned_train_step, state, both, t5x_batch, repeats)
    tokens = batch_size * 2 * length
    return {
        "size": size, "batch": f"{batch_size}x({length}+{length})", "repeats": repeats,
        "model_params": int(sum(np.size(x) for x in jax.tree.leaves(state.params))),
        "t5x_tokens_per_s": tokens / t5x_s, "engine_tokens_per_s": tokens / engine_s,
        "t5x_over_engine_step_time": t5x_over_engine,
        "hpo_t5x_over_t5x_step_time": ours_over_stock, "hpo_t5x_step_s": ours_s, "t5x_step_s": stock_s,
        "guided_over_plain_t5x": guided_over_plain, "guided_step_s": guided_s, "plain_step_s": plain_s,
    }


def _with_optimizer(model, optimizer_def):
    import copy
    model = copy.copy(model)
    model.optimizer_def = optimizer_def
    return model


def in_subprocess(size: str, repeats: int) -> Dict:
    out = subprocess.run([sys.executable, "-m", "bench.t5x_step", size, str(repeats)], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench.t5x_step {size} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(t5x_vs_engine(sys.argv[1], repeats=int(sys.argv[2]))))
