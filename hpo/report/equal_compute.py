"""What a strategy's run had to show at a compute budget: the claims' and the table's equal-compute numbers.

Compute is in plain-train-step equivalents (the records' `compute_steps`). At a
budget, per seed:

- Optuna: the best trial by its study's objective (a dev metric) among the
  trials finished within the budget, in study order. Every trial's compute
  counts toward the spend, a pruned or failed one's too (the steps it ran), but
  only a completed trial can be selected. Its scores come from the record's
  `trials` entry (older records kept only the study's selected trial's).
- Any other strategy (fixed, guided, PBT): its final result, once the budget
  covers its whole compute. PBT's population has no test score before it ends.
"""

import math
from typing import Dict, List, NamedTuple, Optional, Sequence

from hpo.report.claim_stats import GLUE_AVERAGE, Metric, TEST_BLEU, number
from hpo.report.record_sets import is_glue

OPTUNA = "optuna"
# A trial's fields that replace the study's record's in the run it stands for (result keys of both
# evaluations: a trial entry carries its evaluation's; the rest are the selected trial's, so they go).
TRIAL_FIELDS = ("dev_bleu", "dev_loss", "test_bleu", "test_chrf", "dev_chrf", "bleu_signature", "chrf_signature",
                "hypotheses", "test_sentences", "glue", "glue_average", "finetune")
RTOL = 1e-9  # compute sums in float


class Reached(NamedTuple):
    """A seed's run at a budget: `run` a record (for Optuna: its selected trial as a record) or None, and why not."""
    run: Optional[Dict]
    why: str  # empty when reached


def compute(record: Dict) -> Optional[float]:
    return number(record.get("compute_steps"))


def within(spent: float, budget: float) -> bool:
    return spent <= budget * (1 + RTOL)


def at_budget(record: Dict, budget: float, of: str = "the budget") -> Reached:
    """The record's best dev-selected result that `budget` compute could have bought (see the module);
    `of` names the budget in the reason when none."""
    if record.get("strategy") == OPTUNA:
        return optuna_within(record, budget, of)
    spent = compute(record)
    if spent is None:
        return Reached(None, "recorded no compute")
    if not within(spent, budget):
        return Reached(None, f"needs {spent / budget:.2f}× {of} ({spent:.0f} vs {budget:.0f} train-step equivalents)"
                       if budget else f"needs {spent:.0f} train-step equivalents")
    return Reached(record, "")


def optuna_within(record: Dict, budget: float, of: str = "the budget") -> Reached:
    """The study's best completed trial among those finished within `budget` (study order), as a record
    whose compute is what those trials spent; the first of equals, as Optuna."""
    trials = record.get("trials") if isinstance(record.get("trials"), list) else []
    objective, higher = _objective(record)
    spent, best, best_value, seen = 0.0, None, None, 0
    for trial in trials:
        if not within(spent + _cost(trial), budget):
            break
        spent, seen = spent + _cost(trial), seen + 1
        value = _value(trial, objective)
        if _completed(trial) and value is not None and (
                best_value is None or (value > best_value if higher else value < best_value)):
            best, best_value = trial, value
    if best is None:
        first = next((i for i, t in enumerate(trials) if _completed(t)), None)
        why = ("completed no trial" if first is None else
               f"completed no trial within {of} ({budget:.0f} train-step equivalents; the study had spent "
               f"{_spent_through(trials, first):.0f} by its first completed trial, "
               f"{trials[first].get('number', first)})")
        return Reached(None, why)
    return Reached(_trial_run(record, best, spent, seen), "")


def _objective(record: Dict):
    study = record.get("study") if isinstance(record.get("study"), dict) else {}
    objective = study.get("objective") or ("dev_loss" if is_glue(record) else "dev_bleu")
    return objective, objective != "dev_loss"


def _cost(trial: Dict) -> float:
    """What the trial spent, all its attempts (older entries: the steps it ran)."""
    cost = number(trial.get("compute_steps"))
    return (number(trial.get("steps_run")) or 0.0) if cost is None else cost


def _value(trial: Dict, objective: str) -> Optional[float]:
    """Its study's value (NaN for a diverged trial: none), else its dev metric of that name."""
    return number(trial["objective"]) if "objective" in trial else number(trial.get(objective))


def _completed(trial: Dict) -> bool:
    return str(trial.get("state", "")).upper().endswith("COMPLETE")


def _spent_through(trials: Sequence[Dict], last: int) -> float:
    return sum(_cost(t) for t in trials[:last + 1])


def _trial_run(record: Dict, trial: Dict, spent: float, seen: int) -> Dict:
    """The selected trial as the study's record would have been, had the study stopped there. A trial
    without its own scores (an older record) keeps the record's only where it is the study's selected one."""
    study = record.get("study") if isinstance(record.get("study"), dict) else {}
    selected = trial.get("number") is not None and trial.get("number") == study.get("best_trial")
    base = record if selected else {k: v for k, v in record.items() if k not in TRIAL_FIELDS and k != "diverged"}
    return {**base, **{k: trial[k] for k in TRIAL_FIELDS if trial.get(k) is not None},
            "compute_steps": spent, "selected_trial": trial.get("number"), "trials_within": seen}


# ---------------------------------------------------------------- the table's section

def multiples(largest_ratio: Optional[float]) -> List[int]:
    """1, 2, 4, ... up to the first that covers `largest_ratio` (the most compute any row spent ÷ its fixed's)."""
    out = [1]
    while largest_ratio is not None and out[-1] * (1 + RTOL) < largest_ratio:
        out.append(out[-1] * 2)
    return out


def row_cells(runs: Sequence[Dict], fixed_compute: Optional[float], metric: Metric,
              factors: Sequence[int]) -> List[Dict]:
    """One cell per multiple: the metric's mean over the seeds that reach a result within it, and how many."""
    cells = []
    for factor in factors:
        budget = None if fixed_compute is None else factor * fixed_compute
        values = [] if budget is None else [metric.value(r.run) for r in (at_budget(run, budget) for run in runs)
                                            if r.run is not None]
        values = [v for v in values if v is not None]
        cells.append({"multiple": factor, "compute_steps": budget,
                      "mean": math.fsum(values) / len(values) if values else None,
                      "seeds": len(values), "of": len(runs)})
    return cells


def table_section(groups) -> List[List[Dict]]:
    """The section's cells of each group (row_groups.Group), in order: multiples of the group's baseline
    fixed row's compute (its mean over seeds), per benchmark up to the first covering every run's compute."""
    out: List[List[Dict]] = [[] for _ in groups]
    for glue in (False, True):
        mine = [(i, g, _fixed_compute(g)) for i, g in enumerate(groups) if g.glue == glue]
        ratios = [c / fixed for _, g, fixed in mine if fixed for c in map(compute, g.records) if c is not None]
        factors = multiples(max(ratios, default=None))
        for i, group, fixed in mine:
            out[i] = row_cells(group.records, fixed, GLUE_AVERAGE if glue else TEST_BLEU, factors)
    return out


def _fixed_compute(group) -> Optional[float]:
    values = [] if group.baseline is None else [c for c in map(compute, group.baseline.records) if c is not None]
    return math.fsum(values) / len(values) if values else None
