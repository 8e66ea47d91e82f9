"""Peak memory of a short real training run, measured in a fresh process.

The child (`python -m bench.memory --child ...`) trains with `Trainer.fit`
(real data pipeline, checkpoints, summaries) and prints its own peak RSS and,
where the backend keeps them (GPU, TPU), the device's peak bytes in use. Its
own RUSAGE_SELF is used rather than the parent's RUSAGE_CHILDREN, which is
the maximum over every child the parent ever waited for.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from typing import Dict, Optional, Sequence

import jax

_MARK = "bench.memory result: "


def training_memory(gin_files: Sequence[str] = ("default.gin",), bindings: Sequence[str] = (),
                    steps: int = 10, share_compilation_cache: bool = False, timeout: float = 600
                    ) -> Dict[str, Optional[float]]:
    """{'peak_rss_mib': ..., 'device_peak_mib': ... or None, 'steps': ...} of a `steps`-step run.

    `share_compilation_cache` hands the parent's persistent compilation cache
    (if any) to the child: faster (tests), but the child then skips compiling.
    """
    with tempfile.TemporaryDirectory(prefix="hpo-bench-memory-") as run_dir:
        command = [sys.executable, "-m", "bench.memory", "--child", "--run_dir", run_dir, "--steps", str(steps),
                   *[f"--gin={g}" for g in gin_files], *[f"--bind={b}" for b in bindings]]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        if share_compilation_cache and jax.config.jax_compilation_cache_dir:
            env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
            env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(
                jax.config.jax_persistent_cache_min_compile_time_secs)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"memory benchmark child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1][len(_MARK):])


def _child(run_dir: str, steps: int, gin_files: Sequence[str], bindings: Sequence[str]) -> None:
    from bench.throughput import engine_step_fn, experiment
    from hpo.data import pipeline
    from hpo.engine.trainer import Trainer, init_state

    exp = experiment(gin_files, bindings)
    trainer = Trainer(run_dir, steps, checkpoint_every=max(1, steps // 2), log_every=max(1, steps // 4))
    step_fn, tx = engine_step_fn(exp)
    state = init_state(exp.model, tx, 0, exp.data.task_feature_lengths)
    trainer.fit(state, step_fn, lambda: pipeline.train_batches(exp.data))
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)
    print(_MARK + json.dumps({"steps": steps, "peak_rss_mib": rss,
                              "device_peak_mib": peak / 2 ** 20 if peak is not None else None}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--gin", action="append", default=[])
    parser.add_argument("--bind", action="append", default=[])
    args = parser.parse_args()
    _child(args.run_dir, args.steps, args.gin or ["default.gin"], args.bind)
