"""Is a row's test BLEU different from its baseline's? sacrebleu's paired bootstrap on one common seed."""

import os
from typing import Dict, List, Optional, Sequence, Tuple

from hpo.core import io as hpo_io
from hpo.report.record_sets import resolve

BOOTSTRAP_SAMPLES = 1000
BASELINE_NAME = "fixed"


def p_value(runs: Sequence[Dict], baseline: Sequence[Dict], model_dir: str,
            name: str = "system") -> Tuple[Optional[float], Optional[int]]:
    """(p, seed) of the first common seed (0 first) where both decoded the same test set.

    `runs` and `baseline` hold one run per seed; `model_dir` resolves paths of
    records that carry no model dir of their own.
    """
    mine, base = _by_seed(runs), _by_seed(baseline)
    common = sorted(set(mine) & set(base), key=lambda s: (s != 0, s))
    for seed in common:
        test_set = same_test_set(base[seed], mine[seed], model_dir)
        if test_set is not None:
            return paired_bootstrap_p(*test_set, name=name), seed
    return None, None


def _by_seed(runs: Sequence[Dict]) -> Dict[int, Dict]:
    return {r.get("seed"): r for r in runs}


def same_test_set(baseline: Dict, system: Dict, model_dir: str):
    """(baseline hyps, system hyps, references) when both are on disk and aligned, else None."""
    hyp_paths = [resolve(r, model_dir, r.get("hypotheses")) for r in (baseline, system)]
    hyps = [_read_lines(p) for p in hyp_paths]
    refs = [lines for lines in (_read_lines(_references_path(p)) for p in hyp_paths) if lines is not None]
    if None in hyps or not refs or any(r != refs[0] for r in refs):
        return None  # no references, or the two runs saw different test sets
    if not refs[0] or any(len(h) != len(refs[0]) for h in hyps):
        return None
    return hyps[0], hyps[1], refs[0]


def _references_path(hyp_path: Optional[str]) -> Optional[str]:
    """`<stem>.ref` beside `<stem>.hyp` (what evaluate writes), else `test.ref` in that dir."""
    if not hyp_path:
        return None
    for path in (os.path.splitext(hyp_path)[0] + ".ref", os.path.join(os.path.dirname(hyp_path), "test.ref")):
        if hpo_io.isfile(path):
            return path
    return None


def _read_lines(path: Optional[str]) -> Optional[List[str]]:
    if not path or not hpo_io.isfile(path):
        return None
    text = hpo_io.read_text(path)
    if not text:
        return []
    # split on "\n" only: str.splitlines would also split on characters inside a sentence.
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


def paired_bootstrap_p(baseline: Sequence[str], system: Sequence[str], references: Sequence[str],
                       name: str = "system") -> float:
    """sacrebleu's paired bootstrap test of BLEU (seeded by SACREBLEU_SEED, 12345 by default).

    Identical outputs differ in nothing: p = 1 (sacrebleu's estimate would be 1 / (samples + 1)).
    """
    if list(baseline) == list(system):
        return 1.0
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest
    test = PairedTest(named_systems=[(BASELINE_NAME, list(baseline)), (name, list(system))],
                      metrics={"BLEU": BLEU()}, references=[list(references)],
                      test_type="bs", n_samples=BOOTSTRAP_SAMPLES)
    _, scores = test()
    # scores: {"System": names, metric name: [baseline Result, system Result]}
    results = next(v for k, v in scores.items() if k != "System")
    return float(results[1].p_value)
