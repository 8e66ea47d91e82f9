"""A translation row: its seeds' BLEU and chrF, the p-value against its baseline, its cost."""

from typing import Dict, List, Optional

from hpo.report import significance, stats
from hpo.report.row_groups import Group, identity

BLEU = "bleu"


def bleu_row(group: Group, model_dir: str) -> Dict:
    """`model_dir` resolves the paths of records that carry no model dir of their own."""
    runs, baseline = group.records, group.baseline
    compared = baseline is not None and baseline is not group
    p_value, p_seed = (significance.p_value(runs, baseline.records, model_dir, name=group.label)
                       if compared else (None, None))
    return {
        "benchmark": BLEU, **identity(group),
        **stats.stats(runs, "test_bleu"), **stats.stats(runs, "dev_bleu"),
        **stats.stats(runs, "test_chrf"), **stats.stats(runs, "dev_chrf"),
        "p_value": p_value, "p_value_seed": p_seed,
        **stats.cost(runs, baseline.records if baseline else None),
        "bleu_signature": common_signature(runs),
        "diverged": stats.diverged(runs),
    }


def common_signature(runs: List[Dict]) -> Optional[str]:
    signatures = sorted({r["bleu_signature"] for r in runs if r.get("bleu_signature")})
    if len(signatures) <= 1:
        return signatures[0] if signatures else None
    return "differs across seeds: " + " ; ".join(signatures)
