"""Plots of a comparison: learned hyper-parameter trajectories, best-so-far dev BLEU against compute.

Figures are drawn on matplotlib's Agg canvas directly, not through pyplot, so
no global backend is set and nothing stays open; each PNG is saved to a
temporary file in its directory and renamed into place.
"""

import csv
import io
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

from hpo import io as hpo_io
from hpo.table_groups import group_runs
from hpo.table_records import ModelDirs, as_list, load_records, resolve

PLOTS_DIR = "plots"
TRAJECTORIES_FILE = "hparam_trajectories.png"
BEST_SO_FAR_FILE = "best_so_far.png"
MAX_COLUMNS = 3


# ---------------------------------------------------------------- figures

def _figure(panels: int):
    """A figure with `panels` axes in rows of at most MAX_COLUMNS; the spare axes hidden."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    columns = min(panels, MAX_COLUMNS)
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(4.8 * columns, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _save(fig, out_path: str) -> str:
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    hpo_io.write_bytes(out_path, png.getvalue())
    return out_path


def _log_if_wide(ax, axis: str, values: Sequence[float]) -> None:
    """Log scale where all values are positive and span more than 10×."""
    if values and min(values) > 0 and max(values) > 10 * min(values):
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


# ---------------------------------------------------------------- trajectories

def read_schedule(path: Optional[str]) -> Optional[Tuple[List[float], Dict[str, List[float]]]]:
    """(steps, {name: values}) of a learned-schedule CSV (`step,<names...>`), None if unreadable."""
    if not path or not hpo_io.isfile(path):
        return None
    rows = list(csv.DictReader(io.StringIO(hpo_io.read_text(path))))
    if not rows or "step" not in rows[0]:
        return None
    names = [k for k in rows[0] if k != "step"]
    try:
        return [float(r["step"]) for r in rows], {k: [float(r[k]) for r in rows] for k in names}
    except (TypeError, ValueError):
        return None


def plot_trajectories(records: Sequence[Dict], model_dir: str, out_path: str) -> Optional[str]:
    """One panel per learned hyper-parameter, one line per guided run (a seed of a table row): a
    colour per seed when there is one row, else a colour per row (its seeds alike) with the
    legend below the panels; None without guided schedules."""
    guided = [(g, r) for g in group_runs(records) if g.strategy == "guided" and g.replay_mode is None
              for r in g.records]
    schedules = [read_schedule(resolve(r, model_dir, r.get("schedule_file"))) for _, r in guided]
    series = [(g, r, s) for (g, r), s in zip(guided, schedules) if s]
    if not series:
        return None
    names = list(dict.fromkeys(n for *_, (_, values) in series for n in values))
    several_tasks = len({g.task for g, *_ in series}) > 1
    rows = list(dict.fromkeys((g.task, g.label) for g, *_ in series))
    several_rows = len(rows) > len({task for task, _ in rows})
    fig, axes = _figure(len(names))
    labelled = {}
    for ax, name in zip(axes, names):
        for group, record, (steps, values) in series:
            if name not in values:
                continue
            row = (group.task, group.label)
            what = " ".join([*([group.task] if several_tasks else []), *([group.label] if several_rows else [])])
            seeds = [r.get("seed") for g, r, _ in series if (g.task, g.label) == row]
            key, colour = (row, rows.index(row)) if several_rows else ((row, record.get("seed")), len(labelled))
            label = (f"{what} (seeds {', '.join(map(str, seeds))})" if several_rows
                     else " ".join([what, f"seed {record.get('seed')}"]).strip())
            colour = labelled.setdefault(key, f"C{colour % 10}")
            ax.plot(steps, values[name], linewidth=1, color=colour,
                    label=label if ax is axes[0] else None)
        _log_if_wide(ax, "y", [v for *_, (_, values) in series for v in values.get(name, [])])
        ax.set(title=name, xlabel="training step")
    handles, labels = axes[0].get_legend_handles_labels()
    if several_rows or len(labels) > 4:  # below the panels, clear of the lines
        unique = dict(zip(labels, handles))
        fig.legend(list(unique.values()), list(unique), loc="outside lower center", fontsize="small")
    else:
        axes[0].legend(fontsize="small")
    fig.suptitle("guided: learned hyper-parameters")
    return _save(fig, out_path)


# ---------------------------------------------------------------- best so far

def best_so_far(record: Dict) -> Tuple[List[float], List[float]]:
    """(compute in train-step equivalents, best dev BLEU so far) points of one run."""
    if record.get("trials"):
        return _trial_curve(record["trials"])
    return _history_curve(record)


def _history_curve(record: Dict) -> Tuple[List[float], List[float]]:
    # A step costs compute_steps / train_steps plain steps (a guided step also pays its guide pass).
    compute, steps = record.get("compute_steps"), record.get("train_steps")
    scale = compute / steps if compute and steps else 1.0
    points = [(h["step"] * scale, h["bleu"]) for h in record.get("dev_history") or []
              if h.get("step") is not None and h.get("bleu") is not None]
    if compute is not None and record.get("dev_bleu") is not None:
        points.append((float(compute), float(record["dev_bleu"])))  # the final model
    xs, ys, best = [], [], -math.inf
    for x, bleu in sorted(points):
        best = max(best, bleu)
        xs.append(x)
        ys.append(best)
    return xs, ys


def _trial_curve(trials: Sequence[Dict]) -> Tuple[List[float], List[float]]:
    """Compute adds up over every trial (pruned and failed ones spent it too); the best over completed."""
    xs, ys, spent, best = [], [], 0.0, None
    for trial in trials:
        spent += float(trial.get("compute_steps") or 0.0)
        bleu = trial.get("dev_bleu")
        if str(trial.get("state", "")).upper().endswith("COMPLETE") and bleu is not None:
            best = bleu if best is None else max(best, bleu)
        if best is not None:
            xs.append(spent)
            ys.append(best)
    return xs, ys


def plot_best_so_far(records: Sequence[Dict], model_dir: str, out_path: str) -> Optional[str]:
    """One panel per task; one line per run (seed), one colour per table row; None if nothing to draw."""
    curves: Dict[str, List[Tuple[str, Tuple[List[float], List[float]]]]] = {}
    for group in group_runs(records):
        for record in group.records:
            curve = best_so_far(record)
            if curve[0]:
                curves.setdefault(group.task, []).append((group.label, curve))
    if not curves:
        return None
    fig, axes = _figure(len(curves))
    for ax, (task, runs) in zip(axes, curves.items()):
        _plot_runs(ax, runs)
        _log_if_wide(ax, "x", [x for _, (xs, _) in runs for x in xs])
        ax.set(title=task, xlabel="compute (train-step equivalents)", ylabel="best dev BLEU so far")
        ax.legend(fontsize="small")
    return _save(fig, out_path)


def _plot_runs(ax, runs) -> None:
    colours: Dict[str, str] = {}
    for label, (xs, ys) in runs:
        first = label not in colours
        colours.setdefault(label, f"C{len(colours) % 10}")
        ax.plot(xs, ys, drawstyle="steps-post", marker="o", markersize=3, linewidth=1.2,
                color=colours[label], label=label if first else None)


# ---------------------------------------------------------------- writing

def write_plots(model_dir: ModelDirs, records: Sequence[Dict] = None, out_dir: str = None) -> List[str]:
    """plots/hparam_trajectories.png and plots/best_so_far.png (those with data) -> their paths."""
    dirs = as_list(model_dir)
    records = load_records(dirs) if records is None else records
    plots_dir = os.path.join(out_dir or dirs[0], PLOTS_DIR)
    written = [plot_trajectories(records, dirs[0], os.path.join(plots_dir, TRAJECTORIES_FILE)),
               plot_best_so_far(records, dirs[0], os.path.join(plots_dir, BEST_SO_FAR_FILE))]
    return [path for path in written if path]
