"""Plots of a comparison: learned hyper-parameter trajectories, and the anytime plot (best dev BLEU so
far against compute, per table row the mean over seeds with a min–max band).

Figures are drawn on matplotlib's Agg canvas directly, not through pyplot, so
no global backend is set and nothing stays open; each PNG is saved to a
temporary file in its directory and renamed into place.
"""

import bisect
import io
import math
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from hpo.core import io as hpo_io
from hpo.core.errors import UserError
from hpo.flow.schedules import read_schedule
from hpo.report.record_sets import ModelDirs, as_list, load_records, resolve
from hpo.report.row_groups import group_runs

PLOTS_DIR = "plots"
TRAJECTORIES_FILE = "hparam_trajectories.png"
BEST_SO_FAR_FILE = "best_so_far.png"
PBT_FILE = "pbt_members.png"
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

def _schedule(path: Optional[str]) -> Optional[Tuple[List[float], Dict[str, List[float]]]]:
    """(steps, {name: values}) of a learned schedule, None where there is none to plot."""
    try:
        schedule = read_schedule(path) if path else None
    except UserError:
        return None
    if schedule is None:
        return None
    return schedule["step"].astype(float).tolist(), {k: v.tolist() for k, v in schedule.items() if k != "step"}


def plot_trajectories(records: Sequence[Dict], model_dir: str, out_path: str) -> Optional[str]:
    """One panel per learned hyper-parameter, one line per guided run (a seed of a table row): a
    colour per seed when there is one row, else a colour per row (its seeds alike) with the
    legend below the panels; None without guided schedules."""
    guided = [(g, r) for g in group_runs(records) if g.strategy == "guided" and g.replay_mode is None
              for r in g.records]
    schedules = [_schedule(resolve(r, model_dir, r.get("schedule_file"))) for _, r in guided]
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
    """(compute in train-step equivalents, best dev BLEU so far) points of one run: an Optuna study's
    over its trials, a PBT population's over its rounds (`anytime`), else the run's dev history."""
    if record.get("trials"):
        return _trial_curve(record["trials"])
    if record.get("anytime"):
        return _anytime_curve(record)
    return _history_curve(record)


def _history_curve(record: Dict) -> Tuple[List[float], List[float]]:
    # A step costs compute_steps / train_steps plain steps (a guided step also pays its guide pass).
    compute, steps = record.get("compute_steps"), record.get("train_steps")
    scale = compute / steps if compute and steps else 1.0
    points = [(h["step"] * scale, h["bleu"]) for h in record.get("dev_history") or []
              if h.get("step") is not None and h.get("bleu") is not None]
    return _running_best(points + _final(record))


def _anytime_curve(record: Dict) -> Tuple[List[float], List[float]]:
    """The population's best member at the end of each round (dev BLEU on part of dev, where measured)."""
    points = [(float(a["compute_steps"]), float(a["dev_bleu"])) for a in record["anytime"]
              if a.get("compute_steps") is not None and a.get("dev_bleu") is not None]
    return _running_best(points + _final(record))


def _final(record: Dict) -> List[Tuple[float, float]]:
    """The final model's point (its whole dev set), where recorded."""
    compute, bleu = record.get("compute_steps"), record.get("dev_bleu")
    return [] if compute is None or bleu is None else [(float(compute), float(bleu))]


def _running_best(points: Sequence[Tuple[float, float]]) -> Tuple[List[float], List[float]]:
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


def mean_band(curves: Sequence[Tuple[List[float], List[float]]]):
    """(grid, mean, min, max) over seeds of best-so-far step curves, each carried forward from its last
    point, on their points' compute from where the last seed starts to where the first one ends (where
    every seed has a value); empty where those do not overlap."""
    start, end = max(xs[0] for xs, _ in curves), min(xs[-1] for xs, _ in curves)
    grid = sorted({x for xs, _ in curves for x in xs if start <= x <= end})
    values = [[ys[bisect.bisect_right(xs, x) - 1] for xs, ys in curves] for x in grid]
    return grid, [statistics.fmean(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def anytime_figure(records: Sequence[Dict]):
    """The anytime plot: one panel per task, best dev BLEU so far against compute, one line per table row
    (strategy) with its mean over seeds and a min–max band; a row whose runs have one point each (fixed:
    its final compute and dev BLEU) is a point with a min–max bar. None if nothing to draw."""
    curves: Dict[str, List[Tuple[str, Tuple[List[float], List[float]]]]] = {}
    for group in group_runs(records):
        for record in group.records:
            curve = _final_curve(record) if group.strategy == "fixed" else best_so_far(record)
            if curve[0]:
                curves.setdefault(group.task, []).append((group.label, curve))
    if not curves:
        return None
    fig, axes = _figure(len(curves))
    for ax, (task, runs) in zip(axes, curves.items()):
        _plot_runs(ax, runs)
        _log_if_wide(ax, "x", [x for _, (xs, _) in runs for x in xs])
        ax.set(title=task, xlabel="compute (train-step equivalents)",
               ylabel="best dev BLEU so far\n(mean over seeds, band: min–max)")
        ax.legend(fontsize="small")
    return fig


def _final_curve(record: Dict) -> Tuple[List[float], List[float]]:
    return _running_best(_final(record))


def plot_best_so_far(records: Sequence[Dict], model_dir: str, out_path: str) -> Optional[str]:
    """plots/best_so_far.png: the anytime plot (anytime_figure); None if nothing to draw.
    (`model_dir` is unused: the records hold every point.)"""
    fig = anytime_figure(records)
    return None if fig is None else _save(fig, out_path)


def _plot_runs(ax, runs) -> None:
    """`runs`: (row label, curve) of each seed; one line, or point, and band per row, a colour each."""
    rows: Dict[str, List[Tuple[List[float], List[float]]]] = {}
    for label, curve in runs:
        rows.setdefault(label, []).append(curve)
    for index, (label, curves) in enumerate(rows.items()):
        colour = f"C{index % 10}"
        if all(len(xs) == 1 for xs, _ in curves):  # final results only: a point
            xs, ys = [x for (x,), _ in curves], [y for _, (y,) in curves]
            ax.plot([statistics.fmean(xs)], [statistics.fmean(ys)], marker="o", linestyle="none",
                    color=colour, label=label)
            if len(curves) > 1:
                ax.vlines(statistics.fmean(xs), min(ys), max(ys), color=colour, linewidth=1.2)
            continue
        grid, mean, low, high = mean_band(curves)
        if not grid:
            continue
        ax.plot(grid, mean, drawstyle="steps-post", marker="o", markersize=3, linewidth=1.2,
                color=colour, label=label)
        if len(curves) > 1:
            ax.fill_between(grid, low, high, step="post", alpha=0.2, color=colour, linewidth=0)


# ---------------------------------------------------------------- PBT members

def pbt_figure(records: Sequence[Dict], max_runs: int = 4):
    """Each PBT run's members (a row of panels per run, the first `max_runs`): dev loss at each round's
    end and every searched value against the step, a colour per member; an exploit is a dashed jump
    at its step from the target's dev loss to its source's (which the target now is) and an x at the
    target's new values. None without PBT records."""
    runs = [r for r in records if r.get("strategy") == "pbt" and isinstance(r.get("pbt"), dict)][:max_runs]
    if not runs:
        return None
    names = list(dict.fromkeys(n for r in runs for n in r["pbt"].get("search_space", {})))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.2 * (1 + len(names)), 3.2 * len(runs)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(runs), 1 + len(names), squeeze=False)
    for axes, record in zip(grid, runs):
        pbt = record["pbt"]
        for m in pbt["members"]:
            colour = f"C{m['member'] % 10}"
            rounds = [(i, s) for i, s in enumerate(m.get("scores") or []) if s and s.get("dev_loss") is not None]
            axes[0].plot([s["step"] for _, s in rounds], [s["dev_loss"] for _, s in rounds], marker="o",
                         markersize=3, linewidth=1.2, color=colour, label=f"member {m['member']}")
            for ax, name in zip(axes[1:], names):  # a round's value from its start to its end
                starts = [i * pbt["interval"] for i, _ in rounds]
                values = [s.get("values", {}).get(name) for _, s in rounds]
                if values and None not in values:
                    ax.plot(starts + [rounds[-1][1]["step"]], values + values[-1:], drawstyle="steps-post",
                            linewidth=1.2, color=colour)
        for e in pbt.get("exploits", []):
            ends = [pbt["members"][e[k]]["scores"][e["round"]] or {} for k in ("target", "source")]
            losses = [end.get("dev_loss") for end in ends]
            colour = f"C{e['target'] % 10}"
            if None not in losses:
                axes[0].plot([e["step"]] * 2, losses, linestyle="--", marker="x", color=colour, linewidth=1)
            for ax, name in zip(axes[1:], names):
                ax.plot([e["step"]], [e["values"][name]], marker="x", markersize=7, color=colour, linestyle="none")
        axes[0].set(title=f"{record.get('task')} seed {record.get('seed')}: dev loss", xlabel="training step")
        axes[0].legend(fontsize="small")
        for ax, name in zip(axes[1:], names):
            _log_if_wide(ax, "y", [e["values"][name] for e in pbt.get("exploits", [])] +
                         [s["values"][name] for m in pbt["members"] for s in m.get("scores") or []
                          if s and name in s.get("values", {})])
            ax.set(title=f"{name} (x: an exploit's new value)", xlabel="training step")
    fig.suptitle("pbt: members, exploits (--x: copied the source's checkpoint)")
    return fig


def plot_pbt_members(records: Sequence[Dict], out_path: str) -> Optional[str]:
    """plots/pbt_members.png (pbt_figure); None without PBT records."""
    fig = pbt_figure(records)
    return None if fig is None else _save(fig, out_path)


# ---------------------------------------------------------------- writing

def write_plots(model_dir: ModelDirs, records: Sequence[Dict] = None, out_dir: str = None) -> List[str]:
    """plots/hparam_trajectories.png, best_so_far.png and pbt_members.png (those with data) -> their paths."""
    dirs = as_list(model_dir)
    records = load_records(dirs) if records is None else records
    plots_dir = os.path.join(out_dir or dirs[0], PLOTS_DIR)
    written = [plot_trajectories(records, dirs[0], os.path.join(plots_dir, TRAJECTORIES_FILE)),
               plot_best_so_far(records, dirs[0], os.path.join(plots_dir, BEST_SO_FAR_FILE)),
               plot_pbt_members(records, os.path.join(plots_dir, PBT_FILE))]
    return [path for path in written if path]
