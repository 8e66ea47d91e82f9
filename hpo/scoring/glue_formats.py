"""GLUE tasks as T5 writes them: a text input, a label word as the target.

As in T5 (`t5.data.preprocessors.glue`), the input is the benchmark name
followed by each text field as `key: value`, keys in sorted order, e.g.
"mrpc sentence1: ... sentence2: ..."; the target is the label's name, or for
STS-B the score rounded to the nearest 0.2 and written with one decimal.
"""

from typing import Dict, Mapping, Optional, Sequence

# Label names by class index, as TFDS `glue/*` and T5 name them.
LABELS: Dict[str, Sequence[str]] = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
}
REGRESSION = ("stsb",)
TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")

# The text fields of each task (TFDS feature names).
TEXT_FIELDS: Dict[str, Sequence[str]] = {
    "cola": ("sentence",), "sst2": ("sentence",),
    "mrpc": ("sentence1", "sentence2"), "qqp": ("question1", "question2"),
    "stsb": ("sentence1", "sentence2"), "mnli": ("hypothesis", "premise"),
    "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"),
}


def benchmark(task: str) -> str:
    """'mnli_matched' -> 'mnli': the GLUE task a (possibly split-qualified) name belongs to."""
    base = task.split("_")[0]
    if base not in TEXT_FIELDS:
        raise KeyError(f"not a GLUE task: {task}")
    return base


def to_text(task: str, fields: Mapping[str, str]) -> str:
    """The T5 input string of one example."""
    name = benchmark(task)
    return " ".join([name] + [f"{key}: {fields[key]}" for key in sorted(TEXT_FIELDS[name])])


def target_text(task: str, label) -> str:
    """The T5 target string of a label (a class index, or a 0-5 score for STS-B)."""
    name = benchmark(task)
    if name in REGRESSION:
        return f"{round(float(label) * 5) / 5:.1f}"
    return LABELS[name][int(label)]


def parse_prediction(task: str, text: str) -> Optional[float]:
    """The label a decoded string names (class index, or score for STS-B); None if invalid."""
    name = benchmark(task)
    text = text.strip()
    if name in REGRESSION:
        try:
            value = float(text)
        except ValueError:
            return None
        return value if 0.0 <= value <= 5.0 else None
    labels = LABELS[name]
    return float(labels.index(text)) if text in labels else None
