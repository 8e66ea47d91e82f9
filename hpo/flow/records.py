"""Result records and MODEL_DIR/comparison.json, the list every run adds itself to."""

import datetime
import os
from typing import Dict, List, Optional, Sequence

from hpo.core import io as hpo_io
from hpo.core.errors import UserError

COMPARISON_FILE = "comparison.json"
# A record is identified by these fields: re-running a run replaces its row.
KEY_FIELDS = ("task", "strategy", "seed", "run_dir")


def record_key(record: Dict) -> tuple:
    return tuple(record.get(k) for k in KEY_FIELDS)


def load(model_dir: str) -> List[Dict]:
    return read(os.path.join(model_dir, COMPARISON_FILE))


def read(path: str) -> List[Dict]:
    """The records of a comparison.json ([] if there is none); UserError if it is not one."""
    try:
        loaded = hpo_io.read_json(path, default=[])
    except ValueError as e:  # JSON or UTF-8 decoding
        raise UserError(f"{path}: not valid JSON ({str(e).splitlines()[0]}); fix it, or move it away "
                        f"to start a new comparison") from None
    if not isinstance(loaded, list) or not all(isinstance(r, dict) for r in loaded):
        got = "a list with other entries" if isinstance(loaded, list) else f"a JSON {type(loaded).__name__}"
        raise UserError(f"{path}: expected a list of result records, got {got}; fix it, or move it away "
                        f"to start a new comparison")
    return loaded


def add(model_dir: str, record: Dict) -> None:
    """Adds `record` to MODEL_DIR/comparison.json (atomically), replacing the same run's row.
    On several hosts the leader writes it."""
    from hpo.core import distributed
    if not distributed.is_leader():
        return
    path = os.path.join(model_dir, COMPARISON_FILE)
    with hpo_io.locked(path):
        records = [r for r in read(path) if record_key(r) != record_key(record)]
        records.append(record)
        hpo_io.write_json(path, records)


def find(model_dir: str, **fields) -> Dict:
    """The record whose fields equal `fields`, or None."""
    for record in load(model_dir):
        if all(record.get(k) == v for k, v in fields.items()):
            return record
    return None


def as_float(value) -> float:
    """A (float32) hyper-parameter value as the shortest decimal that rounds to it: 0.8, not 0.800000011920929."""
    import numpy as np
    return float(str(np.float32(value)))


def finished(experiment, strategy: str, seed: int, run_dir: str) -> Dict:
    """The record of a run that has finished (a re-run neither retrains nor duplicates it), or None.
    The leader reads it, so that every host makes the same decision."""
    from hpo.core import distributed
    done = None
    if distributed.is_leader():
        done = find(experiment.model_dir, task=experiment.task, strategy=strategy, seed=seed, run_dir=run_dir)
        done = done if done is not None and done.get("train_steps") == experiment.train_steps else None
    return distributed.broadcast(done)


def diverged_scores(experiment, diverged: Dict) -> Dict:
    """The scores of a run whose loss became NaN or infinite: none, and where it happened."""
    return {**{key: None for key in experiment.evaluation.result_keys}, "diverged": dict(diverged)}


# What a result depends on; a row averaging runs made with different versions is flagged in the table.
VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "seqio", "tensorflow", "tensorflow-datasets",
             "gin-config", "optuna", "sacrebleu")
T5X_ENGINE = ("t5x", "airio", "jestimator")
# The commit of google-research/t5x that the Makefile installs from GitHub and that
# ../shared/wheels' t5x-0.0.0+offline was built from (tests/test_versions.py keeps them equal).
T5X_COMMIT = "cc342d419ec3e3e9c4bf1df33c82330cafdc1e16"


def versions(backend: str) -> Dict[str, str]:
    """{package: version} of what a run on `backend` used (installed metadata; nothing is imported),
    with T5X's commit on the t5x backend: pip's record of a git install, else the pinned commit for
    the offline wheel built from it."""
    import importlib.metadata as metadata
    import json
    out = {}
    for name in (*VERSIONED, *(T5X_ENGINE if backend == "t5x" else ())):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    if "t5x" in out:
        direct = json.loads(metadata.distribution("t5x").read_text("direct_url.json") or "{}")
        commit = direct.get("vcs_info", {}).get("commit_id")
        out["t5x_commit"] = commit or (T5X_COMMIT if out["t5x"].endswith("+offline") else "unknown")
    return out


# Every record, whatever made it, starts with `identity` (KEY_FIELDS among it) and carries
# `origin`; between them, a run's fields (`run_record`) or a study's (OptunaSearch's record),
# and after them its strategy's and engine's own.


def identity(experiment, strategy: str, seed: int, run_dir: str) -> Dict:
    """What a record is of: task, benchmark, strategy, seed, engine, and the run dir that keys it."""
    return {"task": experiment.task, "benchmark": experiment.evaluation.benchmark, "strategy": strategy,
            "seed": seed, "backend": experiment.backend, "run_dir": run_dir}


def origin(backend: str, created: Optional[datetime.datetime] = None) -> Dict:
    """How it was made: the gin configuration (the table's rows group records by it), then
    `provenance`."""
    import gin
    return {"gin_config": gin.config_str(), **provenance(backend, created)}


def run_record(experiment, strategy: str, seed: int, run_dir: str, *, history: Sequence[Dict],
               wall_seconds: float, step_cost: float, num_params: int, scores: Dict) -> Dict:
    """The record of one finished training run, on any engine (`flow.backend` builds it)."""
    return {
        **identity(experiment, strategy, seed, run_dir),
        "dev_loss": history[-1].get("loss") if history else None,
        "train_steps": experiment.train_steps, "train_runs": 1,
        "compute_steps": experiment.train_steps * step_cost, "wall_seconds": wall_seconds,
        "hparams": {k: as_float(v) for k, v in experiment.base_hparams().items()},
        **scores,
        "num_params": num_params,
        "dev_history": list(history),
        **origin(experiment.backend),
    }


def provenance(backend: str, created: Optional[datetime.datetime] = None) -> Dict:
    """Where and with what a record was made: devices, versions, time (now, unless the
    record describes something finished earlier, such as a study's last trial)."""
    import jax
    import hpo
    created = created or datetime.datetime.now()
    return {"devices": f"{jax.device_count()}x{jax.devices()[0].platform}", "hpo_version": hpo.__version__,
            "versions": versions(backend),
            "created": created.astimezone(datetime.timezone.utc).isoformat(timespec="seconds")}
