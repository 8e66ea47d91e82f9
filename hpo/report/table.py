"""The comparison table: one row per task × strategy × configuration from MODEL_DIR/comparison.json.

A row aggregates the seeds of one configuration (row_groups, run_config):
mean and sample sd of BLEU and chrF, its cost (training runs, steps, compute
relative to its baseline fixed row, wall time) and, where both rows' test
hypotheses and references are on disk, sacrebleu's paired-bootstrap p-value
against that row (significance). Records of GLUE runs (`"benchmark": "glue"`:
pretrain, then fine-tune on GLUE) make rows of their own (glue_rows). Written
as Markdown and LaTeX (a BLEU table and a GLUE table, each where it has rows),
CSV and JSON (one list, with a `benchmark` column) by formats; `report`
writes those and the plots.

The parts: record_sets (reading model dirs), run_config (what a configuration
is), row_groups (rows' runs, labels, order, baselines), stats (what a
row says of its seeds), bleu_rows and glue_rows (the two kinds of rows),
significance (the paired bootstrap), formats (the four formats), plots;
claims (the paper's claims as verdicts, below the tables and in verdicts.json).
"""

from typing import Dict, List, Sequence, Tuple

from hpo.report import claims, equal_compute, plots
from hpo.report.bleu_rows import bleu_row
from hpo.report.formats import format_markdown, write_formats
from hpo.report.glue_rows import glue_row
from hpo.report.record_sets import ModelDirs, as_list, load_records
from hpo.report.row_groups import group_runs


def build_rows(records: Sequence[Dict], model_dir: str) -> List[Dict]:
    """One row per benchmark × task × strategy × configuration, in table order: BLEU rows, then GLUE
    rows (see formats.COLUMNS, GLUE_*_COLUMNS, CONFIGURATION_COLUMNS for the fields; GLUE rows
    also carry `glue_tasks`, every row `hparams_mean` and `equal_compute`: the cells of the table's
    `at equal compute` section, {multiple, compute_steps, mean, seeds, of} each, see equal_compute).

    `model_dir` resolves relative paths of records that load_records did not tag.
    Standard deviations are sample sds (ddof=1) and None for a single seed.
    """
    groups = group_runs(records)
    return [{**(glue_row if group.glue else bleu_row)(group, model_dir), "equal_compute": cells}
            for group, cells in zip(groups, equal_compute.table_section(groups))]


def write_table(model_dir: ModelDirs, out_dir: str = None) -> Dict[str, str]:
    """table.{md,csv,json,tex} from the records of one or several model dirs -> {format: path}, the
    claims' verdicts in the Markdown and LaTeX and in verdicts.json beside them (hpo.report.claims).

    They go to `out_dir`, by default the first model dir; each is written atomically.
    """
    dirs = as_list(model_dir)
    records = load_records(dirs)
    rows, verdicts = build_rows(records, dirs[0]), claims.verdicts(records, dirs[0])
    claims.write(verdicts, out_dir or dirs[0])
    return write_formats(rows, out_dir or dirs[0], verdicts)


def write_report(model_dirs: ModelDirs, out_dir: str = None) -> Tuple[str, List[str]]:
    """Writes the tables, the verdicts and the plots -> (the Markdown tables and verdicts, the paths written)."""
    dirs = as_list(model_dirs)
    records = load_records(dirs)
    rows, verdicts = build_rows(records, dirs[0]), claims.verdicts(records, dirs[0])
    paths = list(write_formats(rows, out_dir or dirs[0], verdicts).values())
    paths.append(claims.write(verdicts, out_dir or dirs[0]))
    paths += plots.write_plots(dirs, records=records, out_dir=out_dir)
    return format_markdown(rows, verdicts), paths


def report(model_dirs: ModelDirs, out_dir: str = None) -> str:
    """Writes the tables and the plots; returns the Markdown table (for `hpo run` to print)."""
    return write_report(model_dirs, out_dir)[0]
