"""What every row says of its seeds' runs: mean and sample sd, cost, divergence, hyper-parameters."""

import statistics
from typing import Dict, List, Optional, Sequence


def mean(values) -> Optional[float]:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def summary(name: str, values) -> Dict[str, Optional[float]]:
    """{name_mean, name_sd} of the values that are present; the sd (sample, ddof=1) needs two."""
    present = [float(v) for v in values if v is not None]
    return {f"{name}_mean": statistics.fmean(present) if present else None,
            f"{name}_sd": statistics.stdev(present) if len(present) > 1 else None}


def stats(runs: Sequence[Dict], field: str) -> Dict[str, Optional[float]]:
    return summary(field, [r.get(field) for r in runs])


def cost(runs: Sequence[Dict], baseline: Optional[Sequence[Dict]]) -> Dict:
    """Training runs, steps, compute (and relative to the baseline's), wall time, mean hyper-parameters."""
    compute = mean(r.get("compute_steps") for r in runs)
    base_compute = mean(r.get("compute_steps") for r in baseline) if baseline else None
    hparams = hparam_means(runs)
    return {
        "train_runs": sum(train_runs(r) for r in runs),
        "total_train_steps": sum(total_train_steps(r) for r in runs),
        "compute_steps_mean": compute,
        "relative_compute": compute / base_compute if compute is not None and base_compute else None,
        "wall_seconds": sum(float(r.get("wall_seconds") or 0.0) for r in runs),
        "hparams": format_hparams(hparams), "hparams_mean": hparams,
    }


def diverged(runs: Sequence[Dict]) -> List[Dict]:
    """The runs whose loss became NaN or infinite: {seed, step, reason} each."""
    return [{"seed": r.get("seed"), **r["diverged"]} for r in runs if r.get("diverged")]


def train_runs(record: Dict) -> int:
    runs = record.get("train_runs")
    return 1 if runs is None else int(runs)


def total_train_steps(record: Dict) -> int:
    """Steps actually trained: the record's own total (optuna: trials stop early) wins."""
    if record.get("total_train_steps") is not None:
        return int(record["total_train_steps"])
    if record.get("diverged"):
        return int(record["diverged"]["step"])
    return int(record.get("train_steps") or 0) * train_runs(record)


def hparam_means(runs: Sequence[Dict]) -> Dict[str, float]:
    values: Dict[str, List[float]] = {}
    for record in runs:
        for name, value in (record.get("hparams") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(name, []).append(float(value))
    return {name: statistics.fmean(v) for name, v in sorted(values.items())}


def format_hparams(means: Dict[str, float]) -> str:
    return ", ".join(f"{name}={value:.3g}" for name, value in means.items())
