"""GLUE fine-tuning data as seqio tasks, in T5's text-to-text format, from three sources.

- `glue_<task>`, and `glue_mnli_mismatched`: TFDS `glue/<task>:2.0.0`; runs
  where TFDS has the data prepared (it is never downloaded here);
- `glue_tsv_<task>`, and `glue_tsv_mnli_mismatched`: the official GLUE
  download layout (CoLA/train.tsv, ...) under `glue_tsv_task.directory`;
- `synthetic_<task>` for cola, sst2, mrpc and stsb: small stand-ins generated
  offline (`hpo.data.synthetic_glue`), cached under data_dir() in the same
  layout, and labelled synthetic.

Every task has the splits "train" and "dev" (GLUE's validation; test labels
are hidden), inputs such as "cola sentence: ..." and the label word as target
(`hpo.scoring.glue_formats`), and the T5 vocabulary shared with pretraining.
"""

import csv
import dataclasses
import functools
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import gin
import seqio
import tensorflow as tf

from hpo.core import io as hpo_io
from hpo.core.errors import UserError
from hpo.data import synthetic_glue
from hpo.data.prepared import PreparedTfdsSource
from hpo.data.registry import add_text_task, data_dir
from hpo.data.shared_vocabulary import t5_vocabulary
from hpo.scoring import glue_formats

SPLITS = ("train", "dev")
VARIANTS = glue_formats.TASKS + ("mnli_mismatched",)  # MNLI scored on its mismatched dev set
SYNTHETIC_TASKS = synthetic_glue.TASKS
PREFIXES = {"tsv": "glue_tsv_", "tfds": "glue_", "synthetic": "synthetic_"}  # longest first


def glue_task_names(source: str, tasks: Union[str, Sequence[str]]) -> List[str]:
    """The seqio task names of GLUE tasks (e.g. "cola", "mnli_mismatched") from a
    source: "synthetic", "tfds" or "tsv"."""
    if source not in PREFIXES:
        raise UserError(f"unknown GLUE source '{source}' (choose from {', '.join(PREFIXES)})")
    allowed = SYNTHETIC_TASKS if source == "synthetic" else VARIANTS
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    for task in names:
        if task not in allowed:
            raise UserError(f"no {source} GLUE task '{task}' (choose from {', '.join(allowed)})")
    return [PREFIXES[source] + task for task in names]


def _split_name(name: str) -> Optional[Tuple[str, str]]:
    """(source, variant) of one of our GLUE task names, else None."""
    for source, prefix in PREFIXES.items():
        variant = name[len(prefix):]
        if name.startswith(prefix) and variant in (SYNTHETIC_TASKS if source == "synthetic" else VARIANTS):
            return source, variant
    return None


def glue_benchmark(task_name: str) -> str:
    """The GLUE benchmark a task stands for: "synthetic_cola" -> "cola",
    "glue_tsv_mnli_mismatched" -> "mnli"."""
    parts = _split_name(task_name)
    if parts is None:
        raise UserError(f"'{task_name}' is not a GLUE task (glue_<task>, glue_tsv_<task> or "
                        f"synthetic_<task>)")
    return glue_formats.benchmark(parts[1])


def variant(task_name: str) -> str:
    """The GLUE task a task name scores as: "synthetic_cola" -> "cola",
    "glue_mnli_mismatched" -> "mnli_mismatched"."""
    parts = _split_name(task_name)
    if parts is None:
        raise UserError(f"'{task_name}' is not a GLUE task")
    return parts[1]


def is_synthetic(task_name: str) -> bool:
    """Whether a task's data is generated (the embedded stand-ins), not real GLUE data."""
    return task_name.startswith(PREFIXES["synthetic"])


def builder_for(name: str) -> Optional[Callable[[str], seqio.Task]]:
    """The function that builds GLUE task `name`, or None if it is not one."""
    parts = _split_name(name)
    if parts is None:
        return None
    return {"tfds": glue_tfds_task, "tsv": glue_tsv_task, "synthetic": synthetic_glue_task}[parts[0]]


# --- TFDS -----------------------------------------------------------------------------

@gin.configurable
def glue_tfds_task(name: str, tfds_data_dir: str = None, tfds_version: str = "2.0.0") -> seqio.Task:
    """`glue_<task>`: TFDS `glue/<task>` (train, and validation as dev)."""
    variant = name[len(PREFIXES["tfds"]):]
    benchmark = glue_formats.benchmark(variant)
    dev = {"mnli": "validation_matched",
           "mnli_mismatched": "validation_mismatched"}.get(variant, "validation")
    source = PreparedTfdsSource(f"glue/{benchmark}:{tfds_version}", {"train": "train", "dev": dev}, tfds_data_dir)
    to_text = functools.partial(tfds_to_text, benchmark=benchmark)
    return add_text_task(name, source, t5_vocabulary(), preprocessors=[to_text])


def tfds_to_text(dataset: tf.data.Dataset, benchmark: str) -> tf.data.Dataset:
    """TFDS GLUE examples -> {"inputs", "targets"} strings, as `glue_formats.to_text`
    and `glue_formats.target_text` write them."""
    keys = sorted(glue_formats.TEXT_FIELDS[benchmark])

    def convert(example):
        parts = [benchmark]
        for key in keys:
            parts += [f" {key}: ", example[key]]
        if benchmark in glue_formats.REGRESSION:
            # Nearest 0.2 in float64, half to even like Python's round(); "%.1f".
            score = tf.round(tf.cast(example["label"], tf.float64) * 5) / 5
            target = tf.strings.as_string(score, precision=1)
        else:
            target = tf.gather(tf.constant(glue_formats.LABELS[benchmark]), example["label"])
        return {"inputs": tf.strings.join(parts), "targets": target}

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


# --- Local TSV files in the official layout -------------------------------------------

@dataclasses.dataclass(frozen=True)
class Layout:
    """One task's files: folder, columns (a header in every file but CoLA's train
    and dev), the column of each text field and of the label."""
    folder: str
    columns: Tuple[str, ...]
    fields: Mapping[str, str]
    label: str
    header: bool = True


LAYOUTS: Dict[str, Layout] = {
    "cola": Layout("CoLA", ("source", "label", "original_label", "sentence"),
                   {"sentence": "sentence"}, "label", header=False),
    "sst2": Layout("SST-2", ("sentence", "label"), {"sentence": "sentence"}, "label"),
    "mrpc": Layout("MRPC", ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                   {"sentence1": "#1 String", "sentence2": "#2 String"}, "Quality"),
    "qqp": Layout("QQP", ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
                  {"question1": "question1", "question2": "question2"}, "is_duplicate"),
    "stsb": Layout("STS-B", ("index", "genre", "filename", "year", "old_index", "source1", "source2",
                             "sentence1", "sentence2", "score"),
                   {"sentence1": "sentence1", "sentence2": "sentence2"}, "score"),
    "mnli": Layout("MNLI", ("index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                            "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
                            "sentence1", "sentence2", "label1", "gold_label"),
                   {"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label"),
    "qnli": Layout("QNLI", ("index", "question", "sentence", "label"),
                   {"question": "question", "sentence": "sentence"}, "label"),
    "rte": Layout("RTE", ("index", "sentence1", "sentence2", "label"),
                  {"sentence1": "sentence1", "sentence2": "sentence2"}, "label"),
}


def tsv_paths(directory: str, variant: str) -> Dict[str, str]:
    """The train and dev files of a task in the official layout."""
    dev = {"mnli": "dev_matched.tsv", "mnli_mismatched": "dev_mismatched.tsv"}.get(variant, "dev.tsv")
    folder = os.path.join(directory, LAYOUTS[glue_formats.benchmark(variant)].folder)
    return {"train": os.path.join(folder, "train.tsv"), "dev": os.path.join(folder, dev)}


@gin.configurable
def glue_tsv_task(name: str, directory: str = None) -> seqio.Task:
    """`glue_tsv_<task>`: the official GLUE files under `directory` (CoLA/, SST-2/, MRPC/, ...)."""
    if not directory:
        raise UserError(f"task '{name}' reads local GLUE files: set glue_tsv_task.directory "
                        f"to the folder that holds CoLA/, SST-2/, MRPC/, ...")
    return _tsv_task(name, directory, name[len(PREFIXES["tsv"]):])


def _tsv_task(name: str, directory: str, variant: str) -> seqio.Task:
    pairs = {split: read_tsv(path, variant) for split, path in tsv_paths(directory, variant).items()}

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed  # one file per split; seqio shuffles examples
        inputs, targets = zip(*pairs[split])
        return tf.data.Dataset.from_tensor_slices({"inputs": list(inputs), "targets": list(targets)})

    source = seqio.FunctionDataSource(dataset_fn, splits=SPLITS,
                                      num_input_examples={split: len(p) for split, p in pairs.items()})
    return add_text_task(name, source, t5_vocabulary())


def read_tsv(path: str, variant: str) -> List[Tuple[str, str]]:
    """(inputs, targets) texts of one GLUE file; UserError naming the file and line if it is unusable."""
    if not os.path.isfile(path):
        raise UserError(f"GLUE data file not found: {path}")
    stat = os.stat(path)
    return list(_read_tsv(os.path.abspath(path), stat.st_mtime_ns, stat.st_size, variant))


@functools.lru_cache(maxsize=32)
def _read_tsv(path: str, mtime_ns: int, size: int, variant: str) -> Tuple[Tuple[str, str], ...]:
    del mtime_ns, size  # cache keys: a changed file is read again
    benchmark = glue_formats.benchmark(variant)
    layout = LAYOUTS[benchmark]
    pairs = []
    # utf-8-sig: MRPC's files start with a byte-order mark.
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns = layout.columns
        if layout.header:
            columns = tuple(next(reader, ()))
            missing = [c for c in (*layout.fields.values(), layout.label) if c not in columns]
            if missing:
                raise UserError(f"{path}:1: the header has no column '{missing[0]}'")
        index = {column: i for i, column in enumerate(columns)}
        for row in reader:
            if not row:
                continue  # blank line
            where = f"{path}:{reader.line_num}"
            if len(row) != len(columns):
                raise UserError(f"{where}: expected {len(columns)} tab-separated fields, got {len(row)}")
            fields = {field: row[index[column]] for field, column in layout.fields.items()}
            label = _label(benchmark, row[index[layout.label]], where)
            pairs.append((glue_formats.to_text(benchmark, fields), glue_formats.target_text(benchmark, label)))
    if not pairs:
        raise UserError(f"GLUE data file has no examples: {path}")
    return tuple(pairs)


def _label(benchmark: str, value: str, where: str) -> Union[int, float]:
    """A label as a class index (from its name or number) or, for STS-B, a 0-5 score."""
    if benchmark in glue_formats.REGRESSION:
        try:
            score = float(value)
        except ValueError:
            score = float("nan")
        if not 0 <= score <= 5:
            raise UserError(f"{where}: bad score {value!r} (expected a number from 0 to 5)")
        return score
    names = glue_formats.LABELS[benchmark]
    if value in names:
        return names.index(value)
    if value.isdigit() and int(value) < len(names):
        return int(value)
    raise UserError(f"{where}: bad label {value!r} (expected one of {', '.join(names)}, "
                    f"or 0-{len(names) - 1})")


def write_tsv(path: str, variant: str, examples: Sequence[Mapping]) -> None:
    """Writes examples (text fields and "label") as one file of the official layout."""
    layout = LAYOUTS[glue_formats.benchmark(variant)]
    keys = {column: field for field, column in layout.fields.items()}
    keys[layout.label] = "label"
    lines = ["\t".join(layout.columns)] if layout.header else []
    for example in examples:  # columns we do not read (ids, genre, ...) say "synthetic"
        lines.append("\t".join(str(example[keys[c]]) if c in keys else "synthetic" for c in layout.columns))
    hpo_io.write_text(path, "".join(line + "\n" for line in lines), every_host=True)


# --- Synthetic stand-ins --------------------------------------------------------------

@gin.configurable
def synthetic_glue_task(name: str, seed: int = 0, num_train: int = 2000, num_dev: int = 200) -> seqio.Task:
    """`synthetic_<task>`: generated from `seed` on first use, then read from the cache."""
    for key, value in dict(num_train=num_train, num_dev=num_dev).items():
        if value <= 0:
            raise UserError(f"synthetic_glue_task.{key} must be positive, got {value}")
    variant = name[len(PREFIXES["synthetic"]):]
    directory = os.path.join(data_dir(), "synthetic_glue", f"seed{seed}-train{num_train}-dev{num_dev}")
    paths = tsv_paths(directory, variant)
    if not all(os.path.isfile(p) for p in paths.values()):
        splits = synthetic_glue.generate(variant, seed, num_train, num_dev)
        for split, path in paths.items():
            write_tsv(path, variant, splits[split])
    return _tsv_task(name, directory, variant)
