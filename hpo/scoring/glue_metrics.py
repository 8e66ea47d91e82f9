"""GLUE scores of decoded text-to-text predictions, with scikit-learn and scipy.

The metrics are T5's (`t5.evaluation.metrics`), all ×100: CoLA Matthews
correlation; MRPC and QQP F1 (of class 1, "equivalent"/"duplicate") and
accuracy; STS-B Pearson and Spearman correlation; accuracy for the rest.
A task's score is the mean of its metrics.

A prediction that names no label is invalid and counted as wrong, as T5 does:
for CoLA it becomes a class of its own (-1), never right, as in T5's
`sklearn_metrics_wrapper("matthews_corrcoef")` on unparsed labels: flipping
it instead would turn a model that emits no labels into a perfect negative
correlation (-100). Other classification predictions become a class other
than the reference's (for binary tasks, T5's `f1_score_with_invalid` flip), and an STS-B prediction
becomes INVALID_SIMILARITY (T5's `string_to_float` default), outside the 0-5
range, so it lowers both correlations. `glue_formats.parse_prediction` also rejects
STS-B numbers outside 0-5; those get the same value.
"""

import statistics
from typing import Callable, Dict, List, Mapping, Sequence

from scipy import stats
from sklearn import metrics as sk_metrics

from hpo.scoring import glue_formats

INVALID_SIMILARITY = -1.0
INVALID_CLASS = -1  # CoLA: an unparsed prediction is its own class for the Matthews correlation

Metric = Callable[[List[float], List[float]], float]


def _accuracy(references, predictions) -> float:
    return sk_metrics.accuracy_score(references, predictions)


def _f1(references, predictions) -> float:
    # No predicted and no true positives: F1 is 0 (sklearn would warn, then say the same).
    return sk_metrics.f1_score(references, predictions, pos_label=1, zero_division=0.0)


def _matthews(references, predictions) -> float:
    return sk_metrics.matthews_corrcoef(references, predictions)


def _correlation(test) -> Metric:
    def correlation(references, predictions) -> float:
        # Constant predictions (a model that always says "2.6") carry no information:
        # the correlation is undefined (scipy returns nan); score it 0, as sklearn's MCC does.
        if len(set(references)) < 2 or len(set(predictions)) < 2:
            return 0.0
        return float(test(references, predictions).statistic)
    return correlation


# The metrics of each GLUE task, by the name they are reported under.
METRICS: Dict[str, Dict[str, Metric]] = {
    "cola": {"matthews_corr": _matthews},
    "sst2": {"accuracy": _accuracy},
    "mrpc": {"f1": _f1, "accuracy": _accuracy},
    "qqp": {"f1": _f1, "accuracy": _accuracy},
    "stsb": {"pearson": _correlation(stats.pearsonr), "spearman": _correlation(stats.spearmanr)},
    "mnli": {"accuracy": _accuracy},
    "qnli": {"accuracy": _accuracy},
    "rte": {"accuracy": _accuracy},
}


def score_task(task: str, predictions: Sequence[str], references: Sequence[str]) -> Dict:
    """{"metrics": {name: value ×100}, "score", "invalid", "num_examples"} of one task's predictions.

    `task` may be split-qualified ("mnli_mismatched"). References must be valid
    target strings (`glue_formats.target_text`); predictions may be anything.
    """
    name = glue_formats.benchmark(task)
    if len(predictions) != len(references):
        raise ValueError(f"{task}: {len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError(f"{task}: nothing to score")
    targets = [_as_label(name, _parse_reference(task, text)) for text in references]
    parsed = [glue_formats.parse_prediction(task, text) for text in predictions]
    guesses = [_counted_wrong(name, target) if value is None else _as_label(name, value)
               for value, target in zip(parsed, targets)]
    scores = {metric: 100.0 * float(fn(targets, guesses)) for metric, fn in METRICS[name].items()}
    return {"metrics": scores, "score": statistics.fmean(scores.values()),
            "invalid": sum(value is None for value in parsed), "num_examples": len(references)}


def _parse_reference(task: str, text: str) -> float:
    value = glue_formats.parse_prediction(task, text)
    if value is None:
        raise ValueError(f"{task}: reference {text!r} is not a label")
    return value


def _as_label(name: str, value: float):
    """Class indices as ints (sklearn compares them with pos_label=1), similarities as floats."""
    return value if name in glue_formats.REGRESSION else int(value)


def _counted_wrong(name: str, target):
    """What an invalid prediction scores as: a class other than the target's, or INVALID_SIMILARITY."""
    if name in glue_formats.REGRESSION:
        return INVALID_SIMILARITY
    if name == "cola":
        return INVALID_CLASS
    return (target + 1) % len(glue_formats.LABELS[name])


def glue_average(task_scores: Mapping[str, float]) -> float:
    """The GLUE average of task scores (each the mean of its metrics), as T5 computes it.

    T5's `compute_avg_glue` (t5/evaluation/eval_utils.py) puts each metric in a
    group by benchmark (METRIC_NAMES: "MNLIm" and "MNLImm" are both in group
    "MNLI"), averages within a group, then averages the groups equally: MNLI
    matched and mismatched count once together, as one task. Unlike T5, which
    needs all eight tasks, this averages over the tasks given, whichever they are.
    """
    if not task_scores:
        raise ValueError("no GLUE task scores to average")
    groups: Dict[str, List[float]] = {}
    for task, score in task_scores.items():
        groups.setdefault(glue_formats.benchmark(task), []).append(float(score))
    return statistics.fmean(statistics.fmean(scores) for scores in groups.values())
