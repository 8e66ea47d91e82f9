"""What resuming the input pipeline at step N costs: restoring its position from a tf.data
iterator checkpoint (what `Trainer.fit` does) against reading N batches from the start
(what a resumed run did before, linear in N).
"""

import os
import tempfile
import time
from typing import Dict, Sequence

from bench.throughput import experiment
from hpo.data import pipeline


def resume_times(gin_files: Sequence[str] = ("default.gin",), bindings: Sequence[str] = (),
                 positions: Sequence[int] = (100, 3000)) -> Dict[str, float]:
    """{'restore_s@N': ..., 'skip_s@N': ..., 'checkpoint_mib@N': ...} for each position N."""
    exp = experiment(gin_files, bindings)
    out = {"batch": f"{exp.data.batch_size}x{exp.data.task_feature_lengths['targets']}"}
    with tempfile.TemporaryDirectory() as directory:
        for n in positions:
            data = pipeline.train_batches(exp.data, seed=0)
            start = time.perf_counter()
            for _ in range(n):
                next(data)
            out[f"skip_s@{n}"] = time.perf_counter() - start  # reading n batches, as before
            path = f"{directory}/step{n}"
            data.save(path)
            start = time.perf_counter()
            resumed = pipeline.train_batches(exp.data, seed=0)
            resumed.restore(path)
            next(resumed)
            out[f"restore_s@{n}"] = time.perf_counter() - start
            out[f"checkpoint_mib@{n}"] = _size(directory, f"step{n}") / 2 ** 20
    return out


def _size(directory: str, prefix: str) -> int:
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory) if f.startswith(prefix))
