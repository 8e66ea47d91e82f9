"""The rows as Markdown, CSV, LaTeX and JSON: a BLEU table and a GLUE table, each where it has rows,
then each one's `at equal compute` section (equal_compute).

Markdown and LaTeX show the same cells (LaTeX escapes them) and notes: the
BLEU signature(s), GLUE's scoring, which fixed row a row was compared with
where that is not the task's only fixed row, and seeds recorded more than once.
CSV and JSON carry every field, raw (CSV: the section as `equal_compute_<k>x_{mean,seeds}` columns).
"""

import csv
import io
import json
import os
from typing import Dict, List, NamedTuple, Sequence, Tuple

from hpo.core import io as hpo_io
from hpo.report import claim_text
from hpo.report.glue_rows import glue_order
from hpo.report.record_sets import GLUE

FORMATS = ("md", "csv", "json", "tex")
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
# Every row's, last, so that the columns above keep their places: what sets the row apart from the
# task's other rows of its strategy, the label of the fixed row it is compared with, seeds recorded twice,
# and the packages its runs were made with at different versions.
CONFIGURATION_COLUMNS = ("configuration", "baseline", "duplicates", "mixed_versions")

HEADER = ("task", "strategy", "seeds", "test BLEU", "dev BLEU", "test chrF", "p vs fixed",
          "train runs", "train steps", "compute ÷ fixed", "wall s", "hyper-parameters")
NONE = "–"
# GLUE task names as T5's papers print them; others as they are.
GLUE_TASK_NAMES = {
    "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
    "mnli_matched": "MNLI-m", "mnli_mismatched": "MNLI-mm", "qnli": "QNLI", "rte": "RTE",
}
EQUAL_COMPUTE_NOTE = (
    "{metric}, mean over seeds, of the dev-selected result each row's runs had reached within k× the compute of "
    "its baseline fixed row: fixed, guided and PBT runs their final result once k× covers their compute; Optuna "
    "the best trial by its study's objective among the trials finished within k×, in study order (a pruned or "
    "failed trial's steps count toward the spend; it is never selected). – where no seed had one; "
    "(n of m seeds) where not every seed had.")
GLUE_NOTE = ("GLUE scores ×100, mean ± sd over seeds. A task's score is the mean of its metrics "
             "(MRPC, QQP: F1 and accuracy; STS-B: Pearson and Spearman); the average is T5's, "
             "over the tasks each run evaluated, MNLI matched and mismatched counting as one task; "
             "invalid predictions (no label) count as wrong.")


def split_rows(rows: Sequence[Dict]) -> Tuple[List[Dict], List[Dict]]:
    """(BLEU rows, GLUE rows), each in table order."""
    return ([r for r in rows if r.get("benchmark") != GLUE], [r for r in rows if r.get("benchmark") == GLUE])


# ---------------------------------------------------------------- cells

def _cells(row: Dict) -> List[str]:
    """The display cells of a BLEU row, shared by Markdown and LaTeX (which escapes them)."""
    p = row.get("p_value")
    return [
        str(row["task"]), row["strategy"], seeds_cell(row),
        _mean_sd(row, "test_bleu"), _mean_sd(row, "dev_bleu"), _mean_sd(row, "test_chrf"),
        NONE if p is None else f"{p:.3g} (seed {row['p_value_seed']})",
        *_cost_cells(row),
    ]


def seeds_cell(row: Dict) -> str:
    diverged = row.get("diverged") or []
    if not diverged:
        return str(row["seeds"])
    if len(diverged) == row["seeds"]:
        return f"{row['seeds']} (diverged at step {', '.join(str(d['step']) for d in diverged)})"
    return f"{row['seeds']} ({len(diverged)} diverged)"


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


def _task_cell(row: Dict) -> str:
    return f"{row['task']} (synthetic)" if row.get("synthetic") else str(row["task"])


def _glue_cells(row: Dict, tasks: Sequence[str]) -> List[str]:
    return [_task_cell(row), row["strategy"], seeds_cell(row), _mean_sd(row, "glue_average"),
            *(_mean_sd(row, f"glue_{t}") for t in tasks),
            str(row["invalid_predictions"]), _mean_sd(row, "dev_loss", "{:.3f}"), *_cost_cells(row)]


def _mean_sd(row: Dict, field: str, fmt: str = "{:.2f}") -> str:
    mean, sd = row.get(f"{field}_mean"), row.get(f"{field}_sd")
    if mean is None:
        return NONE
    return fmt.format(mean) if sd is None else f"{fmt.format(mean)} ± {fmt.format(sd)}"


def _num(value, fmt: str) -> str:
    return NONE if value is None else fmt.format(value)


# ---------------------------------------------------------------- notes

def _signature_notes(rows: List[Dict]) -> List[Tuple[str, str]]:
    """(what, signature): one for the whole table when all rows agree, else one per row."""
    signatures = {row["bleu_signature"] for row in rows if row.get("bleu_signature")}
    if len(signatures) == 1:
        return [("BLEU signature", signatures.pop())]
    return [(f"BLEU signature ({row['task']}, {row['strategy']})", row["bleu_signature"])
            for row in rows if row.get("bleu_signature")]


def _baseline_notes(rows: Sequence[Dict]) -> List[str]:
    """Which fixed row each row was compared with, where that row is one of several fixed configurations."""
    compared: Dict[Tuple[str, str], List[str]] = {}
    for row in rows:
        baseline = row.get("baseline")
        if baseline and baseline != row["strategy"] and not _plain_fixed(baseline):
            compared.setdefault((str(row["task"]), baseline), []).append(row["strategy"])
    return [f"{task}: p vs fixed and compute ÷ fixed against {baseline} for {', '.join(labels)}."
            for (task, baseline), labels in compared.items()]


def _plain_fixed(label: str) -> bool:
    return label == "fixed" or label.startswith("fixed [")


def _duplicate_notes(rows: Sequence[Dict]) -> List[str]:
    return [f"{row['task']}, {row['strategy']}, seed {d['seed']}: recorded {1 + len(d['ignored'])} times, "
            f"counted once; used {d['used']}, left out {', '.join(d['ignored'])}."
            for row in rows for d in row.get("duplicates") or ()]


def _version_notes(rows: Sequence[Dict]) -> List[str]:
    def seeds(listed):
        return f"seed{'s' if len(listed) > 1 else ''} {', '.join(map(str, listed))}"
    return [f"{row['task']}, {row['strategy']}: averages runs made with different versions, so its spread "
            f"mixes software with seeds: " + "; ".join(
                f"{package} " + " vs ".join(f"{version} ({seeds(listed)})" for version, listed in by.items())
                for package, by in row["mixed_versions"].items()) + "."
            for row in rows if row.get("mixed_versions")]


class Table(NamedTuple):
    title: str  # empty when it is the only table
    header: List[str]
    body: List[List[str]]
    signatures: List[Tuple[str, str]]  # (what, BLEU signature)
    notes: List[str]
    align: str = ""  # LaTeX column alignment; empty: the rows' tables'


def _tables(rows: Sequence[Dict]) -> List[Table]:
    """The BLEU table and the GLUE table, each where it has rows (the BLEU table, empty, where
    neither has); titled only when both are there. Then their `at equal compute` sections."""
    bleu, glue = split_rows(rows)
    tables = []
    if bleu or not glue:
        tables.append(Table("BLEU", list(HEADER), [_cells(r) for r in bleu], _signature_notes(bleu),
                            _baseline_notes(bleu) + _duplicate_notes(bleu) + _version_notes(bleu)))
    if glue:
        tasks = _glue_columns(glue)
        tables.append(Table("GLUE", _glue_header(tasks), [_glue_cells(r, tasks) for r in glue], [],
                            [GLUE_NOTE] + _baseline_notes(glue) + _duplicate_notes(glue) + _version_notes(glue)))
    tables = tables if len(tables) > 1 else [tables[0]._replace(title="")]
    return tables + _equal_compute_tables(rows)


def _equal_compute_tables(rows: Sequence[Dict]) -> List[Table]:
    """Each benchmark's `at equal compute` section, where its rows have one; named for its benchmark
    only when both are there."""
    parts = [(name, metric, [r for r in part if r.get("equal_compute")])
             for name, metric, part in zip(("BLEU", "GLUE"), ("Test BLEU", "GLUE average"), split_rows(rows))]
    parts = [p for p in parts if p[2]]
    tables = []
    for name, metric, part in parts:
        factors = list(dict.fromkeys(c["multiple"] for r in part for c in r["equal_compute"]))
        header = ["task", "strategy", *(f"{k}× fixed" for k in factors)]
        body = [[_task_cell(r), r["strategy"], *_equal_compute_cells(r, factors)] for r in part]
        title = "At equal compute" + (f" ({name})" if len(parts) > 1 else "")
        tables.append(Table(title, header, body, [], [EQUAL_COMPUTE_NOTE.format(metric=metric)],
                            "ll" + "r" * len(factors)))
    return tables


def _equal_compute_cells(row: Dict, factors: Sequence[int]) -> List[str]:
    cells = {c["multiple"]: c for c in row["equal_compute"]}
    return [_equal_compute_cell(cells.get(k)) for k in factors]


def _equal_compute_cell(cell) -> str:
    if not cell or cell["mean"] is None:
        return NONE
    return f"{cell['mean']:.2f}" + ("" if cell["seeds"] == cell["of"] else f" ({cell['seeds']} of {cell['of']} seeds)")


# ---------------------------------------------------------------- formats

def format_markdown(rows: Sequence[Dict], verdicts: Sequence[Dict] = ()) -> str:
    """GitHub pipe tables, scores as mean ± sd, then the BLEU signature(s) or the GLUE note and other notes;
    then the claims' verdicts (hpo.report.claims), where given."""
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    sections = []
    for table in _tables(rows):
        lines = ([f"### {table.title}", ""] if table.title else [])
        lines += [line(table.header), "|" + "---|" * len(table.header)]
        lines += [line(cells) for cells in table.body]
        notes = [f"{what}: `{signature}`" for what, signature in table.signatures] + table.notes
        sections.append("\n".join(lines + ([""] + notes if notes else [])))
    sections += [claim_text.markdown(verdicts).rstrip("\n")] if verdicts else []
    return "\n\n".join(sections) + "\n"


def csv_columns(rows: Sequence[Dict]) -> List[str]:
    """`benchmark`, COLUMNS, the GLUE-only columns where there are GLUE rows, the `at equal compute`
    section's, CONFIGURATION_COLUMNS."""
    glue = split_rows(rows)[1]
    if not glue:
        return ["benchmark", *COLUMNS, *_equal_compute_columns(rows), *CONFIGURATION_COLUMNS]
    tasks = [f"glue_{t}_{stat}" for t in _glue_columns(glue) for stat in ("mean", "sd")]
    return ["benchmark", *COLUMNS, *GLUE_HEAD_COLUMNS, *tasks, *GLUE_TAIL_COLUMNS, *_equal_compute_columns(rows),
            *CONFIGURATION_COLUMNS]


def _equal_compute_columns(rows: Sequence[Dict]) -> List[str]:
    """`equal_compute_<k>x_mean` and `_seeds` of each multiple any row has (the section's cells)."""
    factors = sorted({c["multiple"] for r in rows for c in r.get("equal_compute") or ()})
    return [f"equal_compute_{k}x_{stat}" for k in factors for stat in ("mean", "seeds")]


def _csv_row(row: Dict) -> Dict:
    """The row with its section's cells as columns."""
    cells = {f"equal_compute_{c['multiple']}x_{stat}": c[stat] for c in row.get("equal_compute") or ()
             for stat in ("mean", "seeds")}
    return {**row, **cells}


def format_csv(rows: Sequence[Dict]) -> str:
    """Every column of csv_columns, raw numbers; seed lists space-separated, None empty."""
    columns = csv_columns(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in map(_csv_row, rows):
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return out.getvalue()


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, dict):  # mixed versions
        return json.dumps(value, sort_keys=True) if value else ""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):  # diverged runs, duplicates
        return "; ".join(" ".join(f"{k}={_csv_value(x)}" for k, x in v.items()) for v in value)
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


def format_latex(rows: Sequence[Dict], verdicts: Sequence[Dict] = ()) -> str:
    """Plain `tabular`s (no packages needed), every cell escaped; notes as comments; then the claims'
    verdicts as a list, where given."""
    def line(cells):
        return " & ".join(tex_escape(c) for c in cells) + r" \\"

    sections = []
    for table in _tables(rows):
        header = table.header
        lines = [f"% {table.title}"] if table.title else []
        align = table.align or "lll" + "r" * (len(header) - 4) + "l"
        lines += [r"\begin{tabular}{" + align + "}", r"\hline", line(header), r"\hline"]
        lines += [line(cells) for cells in table.body]
        lines += [r"\hline", r"\end{tabular}"]
        lines += [f"% {what}: {signature}" for what, signature in table.signatures]
        lines += [f"% {note}" for note in table.notes]
        sections.append("\n".join(lines))
    sections += [claim_text.latex(verdicts, tex_escape).rstrip("\n")] if verdicts else []
    return "\n\n".join(sections) + "\n"


def write_formats(rows: List[Dict], out_dir: str, verdicts: Sequence[Dict] = ()) -> Dict[str, str]:
    """table.{md,csv,json,tex} in `out_dir`, each written atomically -> {format: path}. The verdicts go
    into the Markdown and LaTeX (table.json stays a list of rows: claims.write writes verdicts.json)."""
    paths = {fmt: os.path.join(out_dir, f"table.{fmt}") for fmt in FORMATS}
    hpo_io.write_text(paths["md"], format_markdown(rows, verdicts))
    hpo_io.write_text(paths["csv"], format_csv(rows))
    hpo_io.write_json(paths["json"], rows)
    hpo_io.write_text(paths["tex"], format_latex(rows, verdicts))
    return paths
