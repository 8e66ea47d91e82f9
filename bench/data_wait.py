"""How much of the training loop's time goes to waiting for data.

Runs the engine's step fed by the real `pipeline.train_batches` as
`Trainer.fit` does (`put_batch(next(data))`, then the step) and reports the
fraction of the loop's wall time spent in `next(data)` and the host-to-device
copy. Unlike `Trainer.fit` the loop waits for each step to finish, so every
millisecond counted is one in which the device sat idle for want of data (with
asynchronous dispatch the Trainer can only hide some of it); the background
pipeline meanwhile had a whole step to prepare the next batch.
"""

import time
from typing import Dict, Sequence

import jax

from bench.throughput import engine_step, experiment
from hpo.data import pipeline
from hpo.engine.trainer import DataParallel, init_state


def data_wait(gin_files: Sequence[str] = ("default.gin",), bindings: Sequence[str] = (),
              steps: int = 30, warmup: int = 2, seed: int = 0) -> Dict[str, float]:
    """{'data_wait_fraction': ..., 'data_wait_ms_per_step': ..., 'step_s': ..., 'pipeline_startup_s': ...}."""
    exp = experiment(gin_files, bindings)
    par = DataParallel()
    step, tx = engine_step(exp, par)
    state = par.put_state(init_state(exp.model, tx, seed, exp.data.task_feature_lengths))
    start = time.perf_counter()
    data = pipeline.train_batches(exp.data, seed=seed)
    next(data)
    startup = time.perf_counter() - start
    waited, total = 0.0, 0.0
    for i in range(warmup + steps):  # the first steps compile and fill the prefetch buffer
        start = time.perf_counter()
        batch = par.put_batch(next(data))
        fetched = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready((state, metrics))
        if i >= warmup:
            waited += fetched - start
            total += time.perf_counter() - start
    return {"steps": steps, "data_wait_fraction": waited / total, "data_wait_ms_per_step": 1e3 * waited / steps,
            "step_s": total / steps, "pipeline_startup_s": startup}
