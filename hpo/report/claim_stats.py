"""The numbers behind a verdict: runs paired by seed, their summaries, and the two significance tests.

- Translation: sacrebleu's paired bootstrap over the test sentences of every seed pair
  pooled. Each seed's two runs decoded the same test set; their hypotheses are
  concatenated seed after seed (references repeated), so a resampled "sentence"
  is one (seed, sentence) pair and the test compares corpus BLEU over all of
  them. It resamples sentences, not training runs: seed-to-seed variance is
  shown (the sd) but not tested.
- GLUE: the references are not kept beside the predictions, so there is no
  bootstrap over examples; an exact paired sign-flip (permutation) test over
  the seeds' GLUE averages instead. With n seeds its smallest p is 2 / 2**n:
  0.25 for 3 seeds, 0.031 for 6.
"""

import itertools
import math
import random
import statistics
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from hpo.report import significance
from hpo.report.glue_rows import glue_average_of  # the row's own definition of a run's GLUE average

SIGN_FLIP_EXACT_UP_TO = 16  # seeds; beyond, a seeded Monte Carlo sample of the flips
SIGN_FLIP_SAMPLES = 2 ** 16


def number(value) -> Optional[float]:
    """A finite number, else None (a hand-edited or diverged record)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class Metric(NamedTuple):
    name: str  # as the verdict says it
    field: str  # the record's field (glue: computed when absent)
    selection: str  # the dev field that picks the best constant (selection never sees test)
    higher_is_better_selection: bool

    def value(self, record: Dict) -> Optional[float]:
        return number(glue_average_of(record) if self.field == "glue_average" else record.get(self.field))

    def select(self, record: Dict) -> Optional[float]:
        return number(record.get(self.selection))


TEST_BLEU = Metric("test BLEU", "test_bleu", "dev_bleu", True)
GLUE_AVERAGE = Metric("GLUE average", "glue_average", "dev_loss", False)  # pretraining dev loss, as Optuna


class Pairs(NamedTuple):
    """Runs of two rows paired by seed: those both scored, and why the others were left out."""
    scored: List[Tuple[Dict, Dict]]  # (guided's run, the other row's run)
    left_out: List[str]


def pair(mine: Sequence[Dict], other: Sequence[Dict], metric: Metric, names: Tuple[str, str]) -> Pairs:
    theirs = {r.get("seed"): r for r in other}
    scored, left_out = [], []
    only_mine = [r.get("seed") for r in mine if r.get("seed") not in theirs]
    mine_seeds = {r.get("seed") for r in mine}
    only_theirs = [s for s in theirs if s not in mine_seeds]
    for run in mine:
        if run.get("seed") not in theirs:
            continue
        both = (run, theirs[run.get("seed")])
        missing = [name for name, r in zip(names, both) if metric.value(r) is None]
        if missing:
            why = " and ".join(f"{n} {'diverged' if r.get('diverged') else 'has no score'}"
                               for n, r in zip(names, both) if n in missing)
            left_out.append(f"seed {run.get('seed')} ({why})")
        else:
            scored.append(both)
    for name, seeds in zip(names, (only_mine, only_theirs)):
        if seeds:
            left_out.append(f"seed{'s' if len(seeds) > 1 else ''} {seed_list(seeds)} ({name} only)")
    return Pairs(scored, left_out)


def seed_list(seeds) -> str:
    return ", ".join(str(s) for s in seeds)


def summary(runs: Sequence[Dict], metric: Metric) -> Dict:
    """mean, sd (sample; None for one run) and compute (train-step equivalents per run) of the runs."""
    values = [metric.value(r) for r in runs]
    compute = [c for c in (number(r.get("compute_steps")) for r in runs) if c is not None]
    return {"mean": statistics.fmean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) > 1 else None,
            "compute_steps": statistics.fmean(compute) if compute else None}


def bleu_p_value(scored: Sequence[Tuple[Dict, Dict]], model_dir: str) -> Tuple[Optional[float], str]:
    """(p, how) of the paired bootstrap over the pooled test sentences of the seed pairs whose
    hypotheses and references are on disk; (None, why not) where none are."""
    baseline, system, references, seeds = [], [], [], []
    for mine, other in scored:
        test_set = significance.same_test_set(other, mine, model_dir)  # (baseline, system, refs)
        if test_set is not None:
            baseline += test_set[0]
            system += test_set[1]
            references += test_set[2]
            seeds.append(mine.get("seed"))
    if not seeds:
        return None, "no test hypotheses with references on disk for a paired bootstrap"
    p = significance.paired_bootstrap_p(baseline, system, references, name="guided")
    where = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seed_list(seeds)} pooled"
    return p, (f"paired bootstrap, {significance.BOOTSTRAP_SAMPLES} samples, over the {len(references)} "
               f"test sentences of {where}")


def sign_flip_p(differences: Sequence[float]) -> Optional[float]:
    """Two-sided exact paired sign-flip test of mean difference 0; None without differences."""
    if not differences:
        return None
    observed = abs(statistics.fmean(differences)) - 1e-12  # ties count as extreme
    n = len(differences)
    if n <= SIGN_FLIP_EXACT_UP_TO:
        flips = itertools.product((1.0, -1.0), repeat=n)
    else:
        rng = random.Random(12345)
        flips = ([rng.choice((1.0, -1.0)) for _ in range(n)] for _ in range(SIGN_FLIP_SAMPLES))
    total = extreme = 0
    for signs in flips:
        total += 1
        extreme += abs(statistics.fmean(s * d for s, d in zip(signs, differences))) >= observed
    return extreme / total


def glue_p_value(scored: Sequence[Tuple[Dict, Dict]], metric: Metric = GLUE_AVERAGE) -> Tuple[Optional[float], str]:
    p = sign_flip_p([metric.value(mine) - metric.value(other) for mine, other in scored])
    seeds = [mine.get("seed") for mine, _ in scored]
    return p, f"exact paired sign-flip test over seed{'s' if len(seeds) > 1 else ''} {seed_list(seeds)}"
