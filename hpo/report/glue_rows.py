"""A GLUE row (pretrain, then fine-tune on GLUE): the average and each task's score over seeds,
invalid predictions, pretraining dev loss, cost."""

from typing import Dict, Iterable, List, Optional, Sequence

from hpo.report import stats
from hpo.report.record_sets import GLUE
from hpo.report.row_groups import Group, identity
from hpo.scoring import glue_formats


def glue_row(group: Group, model_dir: str = None) -> Dict:
    """Seeds' GLUE average and task scores (mean ± sd), invalid predictions summed over tasks and seeds.
    (`model_dir` is unused: GLUE rows read nothing from disk.)"""
    runs, baseline = group.records, group.baseline
    results = [_glue_results(r) for r in runs]
    tasks = glue_order(task for res in results for task in res)
    return {
        "benchmark": GLUE, **identity(group),
        "synthetic": bool(runs[0].get("glue_synthetic")),
        **stats.summary("glue_average", [glue_average_of(r) for r in runs]),
        **_task_summaries(results, tasks),
        "glue_tasks": tasks,
        "invalid_predictions": sum(int(t.get("invalid") or 0) for res in results for t in res.values()),
        "predictions": sum(int(t.get("num_examples") or 0) for res in results for t in res.values()),
        **stats.stats(runs, "dev_loss"),
        **stats.cost(runs, baseline.records if baseline else None),
        "diverged": stats.diverged(runs),
    }


def _task_summaries(results: List[Dict[str, Dict]], tasks: Sequence[str]) -> Dict[str, Optional[float]]:
    """glue_<task>_mean and _sd of each task's score, over the seeds that have it."""
    out: Dict[str, Optional[float]] = {}
    for task in tasks:
        out.update(stats.summary(f"glue_{task}", [res[task].get("score") for res in results if task in res]))
    return out


def _glue_results(record: Dict) -> Dict[str, Dict]:
    """The record's per-task results ({task: {"score", "invalid", ...}}), malformed entries left out."""
    glue = record.get("glue")
    return {k: v for k, v in glue.items() if isinstance(v, dict)} if isinstance(glue, dict) else {}


def glue_order(tasks: Iterable[str]) -> List[str]:
    """Distinct task names in GLUE's order (matched before mismatched), unknown names last."""
    known = glue_formats.TASKS

    def order(task: str) -> tuple:
        base = task.split("_")[0]
        return (known.index(base) if base in known else len(known)), task
    return sorted(set(tasks), key=order)


def glue_average_of(record: Dict) -> Optional[float]:
    """The record's own average; else T5's average of the task scores it has."""
    if record.get("glue_average") is not None:
        return float(record["glue_average"])
    from hpo.scoring import glue_metrics
    scores = {t: r["score"] for t, r in _glue_results(record).items()
              if r.get("score") is not None and t.split("_")[0] in glue_formats.TASKS}
    return glue_metrics.glue_average(scores) if scores else None
