"""The comparison table: one row per task × strategy from MODEL_DIR/comparison.json.

A row aggregates its seeds (mean and sample sd of BLEU and chrF), its cost
(training runs, steps, compute relative to the task's fixed row, wall time)
and, where both rows' test hypotheses and references are on disk, sacrebleu's
paired-bootstrap p-value against fixed. Records of GLUE runs (`"benchmark":
"glue"`: pretrain, then fine-tune on GLUE) make rows of their own: the GLUE
average and each task's score, invalid predictions, pretraining dev loss and
the same cost columns. Written as Markdown and LaTeX (a BLEU table and a GLUE
table, each where it has rows), CSV and JSON (one list, with a `benchmark`
column); `report` writes those and the plots.
"""

import csv
import io
import os
import statistics
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from hpo import io as hpo_io, records as hpo_records
from hpo.errors import UserError
from hpo.glue import formats as glue_formats

ModelDirs = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]

# Known strategies first, in this order; others follow alphabetically.
STRATEGY_ORDER = ("fixed", "guided", "optuna")
# load_records tags each record with its model dir: run_dir, hypotheses and
# schedule_file are relative to it, and two dirs may hold the same run key.
MODEL_DIR_FIELD = "_model_dir"
FORMATS = ("md", "csv", "json", "tex")
BOOTSTRAP_SAMPLES = 1000
BASELINE = "fixed"
BLEU, GLUE = "bleu", "glue"

# BLEU row columns, in the order CSV writes them after `benchmark` (JSON rows also carry
# `hparams_mean`; GLUE rows fill the shared ones, then GLUE_*_COLUMNS, see csv_columns).
COLUMNS = (
    "task", "strategy", "seeds", "seed_list", "diverged",
    "test_bleu_mean", "test_bleu_sd", "dev_bleu_mean", "dev_bleu_sd",
    "test_chrf_mean", "test_chrf_sd", "dev_chrf_mean", "dev_chrf_sd",
    "p_value", "p_value_seed", "train_runs", "total_train_steps", "compute_steps_mean",
    "relative_compute", "wall_seconds", "hparams", "bleu_signature",
)
# Columns only GLUE rows fill; `glue_<task>_mean` and `_sd` of each task present go between.
GLUE_HEAD_COLUMNS = ("synthetic", "glue_average_mean", "glue_average_sd")
GLUE_TAIL_COLUMNS = ("invalid_predictions", "predictions", "dev_loss_mean", "dev_loss_sd")


# ---------------------------------------------------------------- records

def as_list(model_dirs: ModelDirs) -> List[str]:
    if isinstance(model_dirs, (str, os.PathLike)):
        return [os.fspath(model_dirs)]
    return [os.fspath(d) for d in model_dirs]


def load_records(model_dirs: ModelDirs) -> List[Dict]:
    """Every record of the model dirs, tagged with its dir. Missing input is a UserError."""
    dirs, out = as_list(model_dirs), []
    for model_dir in dirs:
        out.extend({**r, MODEL_DIR_FIELD: hpo_io.abspath(model_dir)} for r in _read_comparison(model_dir))
    if not out:
        raise UserError(f"no result records in {', '.join(dirs)}")
    return out


def _read_comparison(model_dir: str) -> List[Dict]:
    path = os.path.join(model_dir, hpo_records.COMPARISON_FILE)
    if not hpo_io.isdir(model_dir):
        raise UserError(f"no such model dir: {model_dir}")
    if not hpo_io.isfile(path):
        raise UserError(f"no {hpo_records.COMPARISON_FILE} in {model_dir} (nothing has run there)")
    try:
        loaded = hpo_io.read_json(path)
    except ValueError as e:  # JSON or UTF-8 decoding
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(loaded, list) or not all(isinstance(r, dict) for r in loaded):
        raise UserError(f"{path}: expected a list of result records")
    return loaded


def dedupe(records: Sequence[Dict]) -> List[Dict]:
    """The last record of each run: a rerun replaces its earlier record, never adds to it."""
    latest = {}
    for record in records:
        key = (record.get(MODEL_DIR_FIELD), *hpo_records.record_key(record))
        latest.pop(key, None)  # the rerun takes the later position
        latest[key] = record
    return list(latest.values())


def resolve(record: Dict, model_dir: str, rel: Optional[str]) -> Optional[str]:
    """A path stored relative to the record's model dir, made usable from here."""
    if not rel:
        return None
    return os.path.join(record.get(MODEL_DIR_FIELD) or model_dir, rel)


def backend(record: Dict) -> str:
    return str(record.get("backend") or "builtin")  # records from before backends were built-in runs


def row_label(record: Dict) -> str:
    """The strategy, with runs that replayed a schedule set apart ('fixed (replay mean)') and
    runs of another backend than the built-in engine marked ('guided [t5x]')."""
    strategy, replay = str(record.get("strategy")), record.get("replay")
    label = strategy
    if replay:
        mode = replay.get("mode") if isinstance(replay, dict) else None
        label = f"{strategy} (replay {mode})" if mode else f"{strategy} (replay)"
    return label if backend(record) == "builtin" else f"{label} [{backend(record)}]"


def sort_key(record: Dict) -> tuple:
    """Task, then fixed, fixed replays, guided, optuna, others alphabetically; also the row's identity."""
    strategy = str(record.get("strategy"))
    rank = STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER)
    return str(record.get("task")), rank, strategy, bool(record.get("replay")), row_label(record)


def _is_baseline(record: Dict) -> bool:
    return record.get("strategy") == BASELINE and not record.get("replay")


def is_glue(record: Dict) -> bool:
    return record.get("benchmark") == GLUE


def _group_key(record: Dict) -> tuple:
    """BLEU rows first, in sort_key order; then GLUE rows, real and synthetic data apart;
    each backend's rows together (compared with that backend's fixed run)."""
    task, *rest = sort_key(record)
    return (is_glue(record), task, bool(record.get("glue_synthetic")), backend(record) != "builtin",
            backend(record), *rest)


def _baseline_key(record: Dict) -> tuple:
    return _group_key(record)[:5]


# ---------------------------------------------------------------- rows

def build_rows(records: Sequence[Dict], model_dir: str) -> List[Dict]:
    """One row per benchmark × task × strategy label, in table order: BLEU rows, then GLUE rows
    (see COLUMNS, GLUE_*_COLUMNS for the fields; GLUE rows also carry `glue_tasks`).

    `model_dir` resolves relative paths of records that load_records did not tag.
    Standard deviations are sample sds (ddof=1) and None for a single seed.
    """
    groups: Dict[tuple, List[Dict]] = {}
    for record in dedupe(records):
        groups.setdefault(_group_key(record), []).append(record)
    ordered = [groups[k] for k in sorted(groups)]
    baselines = {_baseline_key(g[0]): g for g in ordered if _is_baseline(g[0])}
    return [(_glue_row if is_glue(g[0]) else _row)(g, baselines.get(_baseline_key(g[0])), model_dir)
            for g in ordered]


def _row(group: List[Dict], baseline: Optional[List[Dict]], model_dir: str) -> Dict:
    first = group[0]
    compared = baseline is not None and baseline is not group
    p_value, p_seed = _p_value(group, baseline, model_dir) if compared else (None, None)
    return {
        "benchmark": BLEU, "task": first.get("task"), "strategy": row_label(first),
        "seeds": len(group), "seed_list": sorted(r.get("seed") for r in group),
        **_stats(group, "test_bleu"), **_stats(group, "dev_bleu"),
        **_stats(group, "test_chrf"), **_stats(group, "dev_chrf"),
        "p_value": p_value, "p_value_seed": p_seed,
        **_cost(group, baseline),
        "bleu_signature": _common_signature(group),
        "diverged": _diverged(group),
    }


def _glue_row(group: List[Dict], baseline: Optional[List[Dict]], model_dir: str) -> Dict:
    """Seeds' GLUE average and task scores (mean ± sd), invalid predictions summed over tasks and seeds."""
    first = group[0]
    results = [_glue_results(r) for r in group]
    tasks = glue_order(task for res in results for task in res)
    return {
        "benchmark": GLUE, "task": first.get("task"), "strategy": row_label(first),
        "synthetic": bool(first.get("glue_synthetic")),
        "seeds": len(group), "seed_list": sorted(r.get("seed") for r in group),
        **_summary("glue_average", [_glue_average(r) for r in group]),
        **_task_summaries(results, tasks),
        "glue_tasks": tasks,
        "invalid_predictions": sum(int(t.get("invalid") or 0) for res in results for t in res.values()),
        "predictions": sum(int(t.get("num_examples") or 0) for res in results for t in res.values()),
        **_stats(group, "dev_loss"),
        **_cost(group, baseline),
        "diverged": _diverged(group),
    }


def _task_summaries(results: List[Dict[str, Dict]], tasks: Sequence[str]) -> Dict[str, Optional[float]]:
    """glue_<task>_mean and _sd of each task's score, over the seeds that have it."""
    out: Dict[str, Optional[float]] = {}
    for task in tasks:
        out.update(_summary(f"glue_{task}", [res[task].get("score") for res in results if task in res]))
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


def _glue_average(record: Dict) -> Optional[float]:
    """The record's own average; else T5's average of the task scores it has."""
    if record.get("glue_average") is not None:
        return float(record["glue_average"])
    from hpo.glue import metrics
    scores = {t: r["score"] for t, r in _glue_results(record).items()
              if r.get("score") is not None and t.split("_")[0] in glue_formats.TASKS}
    return metrics.glue_average(scores) if scores else None


def _cost(group: List[Dict], baseline: Optional[List[Dict]]) -> Dict:
    """Training runs, steps, compute (and relative to the baseline row), wall time, mean hyper-parameters."""
    compute = _mean(r.get("compute_steps") for r in group)
    base_compute = _mean(r.get("compute_steps") for r in baseline) if baseline else None
    hparams = _hparam_means(group)
    return {
        "train_runs": sum(_train_runs(r) for r in group),
        "total_train_steps": sum(_total_train_steps(r) for r in group),
        "compute_steps_mean": compute,
        "relative_compute": compute / base_compute if compute is not None and base_compute else None,
        "wall_seconds": sum(float(r.get("wall_seconds") or 0.0) for r in group),
        "hparams": format_hparams(hparams), "hparams_mean": hparams,
    }


def _mean(values) -> Optional[float]:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _stats(group: List[Dict], field: str) -> Dict[str, Optional[float]]:
    return _summary(field, [r.get(field) for r in group])


def _summary(name: str, values) -> Dict[str, Optional[float]]:
    """{name_mean, name_sd} of the values that are present; the sd needs two."""
    present = [float(v) for v in values if v is not None]
    return {f"{name}_mean": statistics.fmean(present) if present else None,
            f"{name}_sd": statistics.stdev(present) if len(present) > 1 else None}


def _diverged(group: List[Dict]) -> List[Dict]:
    """The runs of a row whose loss became NaN or infinite: {seed, step, reason} each."""
    return [{"seed": r.get("seed"), **r["diverged"]} for r in group if r.get("diverged")]


def _seeds_cell(row: Dict) -> str:
    diverged = row.get("diverged") or []
    if not diverged:
        return str(row["seeds"])
    if len(diverged) == row["seeds"]:
        return f"{row['seeds']} (diverged at step {', '.join(str(d['step']) for d in diverged)})"
    return f"{row['seeds']} ({len(diverged)} diverged)"


def _train_runs(record: Dict) -> int:
    runs = record.get("train_runs")
    return 1 if runs is None else int(runs)


def _total_train_steps(record: Dict) -> int:
    """Steps actually trained: the record's own total (optuna: trials stop early) wins."""
    if record.get("total_train_steps") is not None:
        return int(record["total_train_steps"])
    if record.get("diverged"):
        return int(record["diverged"]["step"])
    return int(record.get("train_steps") or 0) * _train_runs(record)


def _hparam_means(group: List[Dict]) -> Dict[str, float]:
    values: Dict[str, List[float]] = {}
    for record in group:
        for name, value in (record.get("hparams") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(name, []).append(float(value))
    return {name: statistics.fmean(v) for name, v in sorted(values.items())}


def format_hparams(means: Dict[str, float]) -> str:
    return ", ".join(f"{name}={value:.3g}" for name, value in means.items())


def _common_signature(group: List[Dict]) -> Optional[str]:
    signatures = sorted({r["bleu_signature"] for r in group if r.get("bleu_signature")})
    if len(signatures) <= 1:
        return signatures[0] if signatures else None
    return "differs across seeds: " + " ; ".join(signatures)


# ---------------------------------------------------------------- significance

def _p_value(group: List[Dict], baseline, model_dir: str) -> Tuple[Optional[float], Optional[int]]:
    """(p, seed) of the first common seed (0 first) where both decoded the same test set."""
    mine, base = _by_seed(group), _by_seed(baseline)
    common = sorted(set(mine) & set(base), key=lambda s: (s != 0, s))
    for seed in common:
        test_set = _same_test_set(base[seed], mine[seed], model_dir)
        if test_set is not None:
            return paired_bootstrap_p(*test_set, name=row_label(group[0])), seed
    return None, None


def _by_seed(group: List[Dict]) -> Dict[int, Dict]:
    return {r.get("seed"): r for r in group}  # later records (another model dir) win


def _same_test_set(baseline: Dict, system: Dict, model_dir: str):
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
    test = PairedTest(named_systems=[(BASELINE, list(baseline)), (name, list(system))],
                      metrics={"BLEU": BLEU()}, references=[list(references)],
                      test_type="bs", n_samples=BOOTSTRAP_SAMPLES)
    _, scores = test()
    # scores: {"System": names, metric name: [baseline Result, system Result]}
    results = next(v for k, v in scores.items() if k != "System")
    return float(results[1].p_value)


# ---------------------------------------------------------------- formats

HEADER = ("task", "strategy", "seeds", "test BLEU", "dev BLEU", "test chrF", "p vs fixed",
          "train runs", "train steps", "compute ÷ fixed", "wall s", "hyper-parameters")
NONE = "–"
# GLUE task names as T5's papers print them; others as they are.
GLUE_TASK_NAMES = {
    "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
    "mnli_matched": "MNLI-m", "mnli_mismatched": "MNLI-mm", "qnli": "QNLI", "rte": "RTE",
}
GLUE_NOTE = ("GLUE scores ×100, mean ± sd over seeds. A task's score is the mean of its metrics "
             "(MRPC, QQP: F1 and accuracy; STS-B: Pearson and Spearman); the average is T5's, "
             "over the tasks each run evaluated, MNLI matched and mismatched counting as one task; "
             "invalid predictions (no label) count as wrong.")


def split_rows(rows: Sequence[Dict]) -> Tuple[List[Dict], List[Dict]]:
    """(BLEU rows, GLUE rows), each in table order."""
    return ([r for r in rows if r.get("benchmark", BLEU) != GLUE],
            [r for r in rows if r.get("benchmark") == GLUE])


def _cells(row: Dict) -> List[str]:
    """The display cells of a row, shared by Markdown and LaTeX (which escapes them)."""
    p = row.get("p_value")
    return [
        str(row["task"]), row["strategy"], _seeds_cell(row),
        _mean_sd(row, "test_bleu"), _mean_sd(row, "dev_bleu"), _mean_sd(row, "test_chrf"),
        NONE if p is None else f"{p:.3g} (seed {row['p_value_seed']})",
        *_cost_cells(row),
    ]


def _cost_cells(row: Dict) -> List[str]:
    return [str(row["train_runs"]), str(row["total_train_steps"]),
            _num(row["relative_compute"], "{:.2f}"), _num(row["wall_seconds"], "{:.0f}"),
            row["hparams"] or NONE]


def _glue_columns(rows: Sequence[Dict]) -> List[str]:
    """The GLUE tasks of any of the rows, in GLUE's order: one table column each."""
    return glue_order(task for row in rows for task in row.get("glue_tasks") or ())


def _glue_header(tasks: Sequence[str]) -> List[str]:
    return ["task", "strategy", "seeds", "GLUE average", *(GLUE_TASK_NAMES.get(t, t) for t in tasks),
            "invalid predictions", "pretrain dev loss", *HEADER[-5:]]


def _glue_cells(row: Dict, tasks: Sequence[str]) -> List[str]:
    task = f"{row['task']} (synthetic)" if row.get("synthetic") else str(row["task"])
    return [task, row["strategy"], _seeds_cell(row), _mean_sd(row, "glue_average"),
            *(_mean_sd(row, f"glue_{t}") for t in tasks),
            str(row["invalid_predictions"]), _mean_sd(row, "dev_loss", "{:.3f}"), *_cost_cells(row)]


def _mean_sd(row: Dict, field: str, fmt: str = "{:.2f}") -> str:
    mean, sd = row.get(f"{field}_mean"), row.get(f"{field}_sd")
    if mean is None:
        return NONE
    return fmt.format(mean) if sd is None else f"{fmt.format(mean)} ± {fmt.format(sd)}"


def _num(value, fmt: str) -> str:
    return NONE if value is None else fmt.format(value)


def _signature_notes(rows: List[Dict]) -> List[Tuple[str, str]]:
    """(what, signature): one for the whole table when all rows agree, else one per row."""
    signatures = {row["bleu_signature"] for row in rows if row.get("bleu_signature")}
    if len(signatures) == 1:
        return [("BLEU signature", signatures.pop())]
    return [(f"BLEU signature ({row['task']}, {row['strategy']})", row["bleu_signature"])
            for row in rows if row.get("bleu_signature")]


class Table(NamedTuple):
    title: str  # empty when it is the only table
    header: List[str]
    body: List[List[str]]
    signatures: List[Tuple[str, str]]  # (what, BLEU signature)
    note: str = ""


def _tables(rows: Sequence[Dict]) -> List[Table]:
    """The BLEU table and the GLUE table, each where it has rows (the BLEU table, empty, where
    neither has); titled only when both are there."""
    bleu, glue = split_rows(rows)
    tables = []
    if bleu or not glue:
        tables.append(Table("BLEU", list(HEADER), [_cells(r) for r in bleu], _signature_notes(bleu)))
    if glue:
        tasks = _glue_columns(glue)
        body = [_glue_cells(r, tasks) for r in glue]
        tables.append(Table("GLUE", _glue_header(tasks), body, [], GLUE_NOTE))
    return tables if len(tables) > 1 else [tables[0]._replace(title="")]


def format_markdown(rows: List[Dict]) -> str:
    """GitHub pipe tables, scores as mean ± sd, then the BLEU signature(s) or the GLUE note."""
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    sections = []
    for table in _tables(rows):
        lines = ([f"### {table.title}", ""] if table.title else [])
        lines += [line(table.header), "|" + "---|" * len(table.header)]
        lines += [line(cells) for cells in table.body]
        notes = [f"{what}: `{signature}`" for what, signature in table.signatures]
        notes += [table.note] if table.note else []
        sections.append("\n".join(lines + ([""] + notes if notes else [])))
    return "\n\n".join(sections) + "\n"


def csv_columns(rows: Sequence[Dict]) -> List[str]:
    """`benchmark`, COLUMNS, then the GLUE-only columns where there are GLUE rows."""
    glue = split_rows(rows)[1]
    if not glue:
        return ["benchmark", *COLUMNS]
    tasks = [f"glue_{t}_{stat}" for t in _glue_columns(glue) for stat in ("mean", "sd")]
    return ["benchmark", *COLUMNS, *GLUE_HEAD_COLUMNS, *tasks, *GLUE_TAIL_COLUMNS]


def format_csv(rows: List[Dict]) -> str:
    """Every column of csv_columns, raw numbers; seed lists space-separated, None empty."""
    columns = csv_columns(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return out.getvalue()


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):  # diverged runs
        return "; ".join(" ".join(f"{k}={x}" for k, x in v.items()) for v in value)
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "±": r"$\pm$", "–": "--", "÷": r"$\div$", "×": r"$\times$",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(c, c) for c in str(text))


def format_latex(rows: List[Dict]) -> str:
    """Plain `tabular`s (no packages needed), every cell escaped; notes as comments."""
    def line(cells):
        return " & ".join(tex_escape(c) for c in cells) + r" \\"

    sections = []
    for table in _tables(rows):
        header = table.header
        lines = [f"% {table.title}"] if table.title else []
        lines += [r"\begin{tabular}{lll" + "r" * (len(header) - 4) + "l}", r"\hline", line(header), r"\hline"]
        lines += [line(cells) for cells in table.body]
        lines += [r"\hline", r"\end{tabular}"]
        lines += [f"% {what}: {signature}" for what, signature in table.signatures]
        lines += [f"% {table.note}"] if table.note else []
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


# ---------------------------------------------------------------- writing

def _write_formats(rows: List[Dict], out_dir: str) -> Dict[str, str]:
    paths = {fmt: os.path.join(out_dir, f"table.{fmt}") for fmt in FORMATS}
    hpo_io.write_text(paths["md"], format_markdown(rows))
    hpo_io.write_text(paths["csv"], format_csv(rows))
    hpo_io.write_json(paths["json"], rows)
    hpo_io.write_text(paths["tex"], format_latex(rows))
    return paths


def write_table(model_dir: ModelDirs, out_dir: str = None) -> Dict[str, str]:
    """table.{md,csv,json,tex} from the records of one or several model dirs -> {format: path}.

    They go to `out_dir`, by default the first model dir; each is written atomically.
    """
    dirs = as_list(model_dir)
    rows = build_rows(load_records(dirs), dirs[0])
    return _write_formats(rows, out_dir or dirs[0])


def write_report(model_dirs: ModelDirs, out_dir: str = None) -> Tuple[str, List[str]]:
    """Writes the tables and the plots -> (the Markdown table, the paths written)."""
    from hpo import plots
    dirs = as_list(model_dirs)
    records = load_records(dirs)
    rows = build_rows(records, dirs[0])
    paths = list(_write_formats(rows, out_dir or dirs[0]).values())
    paths += plots.write_plots(dirs, records=records, out_dir=out_dir)
    return format_markdown(rows), paths


def report(model_dirs: ModelDirs, out_dir: str = None) -> str:
    """Writes the tables and the plots; returns the Markdown table (for `hpo run` to print)."""
    return write_report(model_dirs, out_dir)[0]

