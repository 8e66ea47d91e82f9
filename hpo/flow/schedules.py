"""A learned schedule, as a run leaves it beside its record: `hparams.csv` (the values each step
used; guided and PBT write it, `Fixed.replay` and the plots read it) and `groups.json` (the
parameter groups of its `learning_rate/<g>` values)."""

import csv
import io
from typing import Dict, Sequence

import numpy as np

from hpo.core import io as hpo_io
from hpo.core.errors import UserError

SCHEDULE_FILE = "hparams.csv"
GROUPS_FILE = "groups.json"  # beside the schedule: Guided.groups, {name: regex}


def summarise(names, trajectory: np.ndarray) -> Dict[str, Dict[str, float]]:
    return {k: {"init": float(trajectory[0, i]), "final": float(trajectory[-1, i]),
                "mean": float(trajectory[:, i].mean()), "min": float(trajectory[:, i].min()),
                "max": float(trajectory[:, i].max())} for i, k in enumerate(names)}


def write_schedule(path: str, names, trajectory: np.ndarray, steps: Sequence[int]) -> None:
    """The learned schedule as CSV: one row per step, the values that step used."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["step", *names])
    for step, row in zip(steps, trajectory):
        writer.writerow([int(step), *(repr(float(v)) for v in row)])
    hpo_io.write_text(path, out.getvalue())


def read_schedule(path: str) -> Dict[str, np.ndarray]:
    """{"step": the steps, name: the values each used}; UserError if `path` is no schedule."""
    if not hpo_io.isfile(path):
        raise UserError(f"schedule file not found: {path}")
    rows = list(csv.DictReader(io.StringIO(hpo_io.read_text(path))))
    if not rows or "step" not in rows[0]:
        raise UserError(f"{path}: not a learned-schedule CSV (needs a 'step' column and rows)")
    try:  # "step": the step each row was taken at (a fine-tuning run's start at its checkpoint's)
        return {k: np.array([float(r[k]) for r in rows], np.int32 if k == "step" else np.float32) for k in rows[0]}
    except (TypeError, ValueError):
        raise UserError(f"{path}: a value is not a number") from None
