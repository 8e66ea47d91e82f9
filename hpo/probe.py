"""`hpo probe`: will one-step guidance pick too small a learning rate on this task?

From the initial state and from states along the configured run (the fixed
strategy's values), copies of the model train for each horizon at a grid of
learning-rate multipliers, on the training batches the run sees next, and the
guide loss after each is compared. The guide loss is the guided strategy's: the
loss without dropout or smoothing on its guide batch (same source, size and
refresh as `Guided.*`). Where the one-step best multiplier is below the longest
horizon's, the guided strategy's one-step lookahead is biased towards too small a
rate (the short-horizon bias). One compiled step serves the run and every copy.
"""

import csv
import dataclasses
import functools
import io
import math
import os
from typing import Dict, List, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from hpo import io as hpo_io, optim
from hpo.data import pipeline
from hpo.errors import UserError, non_negative_int, positive_int
from hpo.trainer import init_state, train_step

JSON_FILE, CSV_FILE, PLOT_FILE = "probe.json", "probe.csv", os.path.join("plots", "probe.png")
# Where the probe's default states lie, as fractions of TRAIN_STEPS (0, 10, 25, 50, 150 of 200).
DEFAULT_FROM_FRACTIONS = (0.0, 0.05, 0.125, 0.25, 0.75)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Probe:
    """The probe's grid: states (`from_steps`, None: 0, 5%, 12.5%, 25% and 75% of
    TRAIN_STEPS), `horizons` (training steps taken from each state) and learning-rate
    `multipliers` (as Guided's and Fixed's learning_rate: a multiplier on the schedule)."""
    from_steps: Optional[Sequence[int]] = None
    horizons: Sequence[int] = (1, 5, 20, 50)
    multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)

    def grid(self, train_steps: int) -> "Probe":
        """The grid checked, sorted and without repeats; UserError for bad input."""
        steps = self.from_steps
        if steps is None:
            steps = [round(f * train_steps) for f in DEFAULT_FROM_FRACTIONS]
        steps = [non_negative_int(s, "Probe.from_steps: a step") for s in _listed(steps, "Probe.from_steps")]
        beyond = [s for s in steps if s > train_steps]
        if beyond:
            raise UserError(f"Probe.from_steps: step {beyond[0]} is beyond TRAIN_STEPS ({train_steps})")
        horizons = [positive_int(h, "Probe.horizons: a horizon") for h in _listed(self.horizons, "Probe.horizons")]
        multipliers = [_positive(m) for m in _listed(self.multipliers, "Probe.multipliers")]
        return Probe(*(tuple(sorted(set(x))) for x in (steps, horizons, multipliers)))


def _listed(values, name: str) -> list:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise UserError(f"{name} must be a list of numbers, got {values!r}")
    if not values:
        raise UserError(f"{name} is empty")
    return list(values)


def _positive(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise UserError(f"Probe.multipliers: a multiplier must be a positive number, got {value!r}")
    return float(value)


def parse_steps(text: str) -> List[int]:
    """--probe_steps=0,25,50: the states to probe from."""
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--probe_steps: expected steps such as '0,25,50', got '{text}'") from None


# ---------------------------------------------------------------- measuring

class _Stream:
    """The run's {"train", "guide"} batches by step, read once, kept while a later step may need them."""

    def __init__(self, batches):
        self._batches, self._kept, self._first = batches, [], 0

    def __getitem__(self, step: int):
        while self._first + len(self._kept) <= step:
            self._kept.append(next(self._batches))
        return self._kept[step - self._first]

    def forget_before(self, step: int) -> None:
        drop = max(0, min(step - self._first, len(self._kept)))
        self._kept, self._first = self._kept[drop:], self._first + drop


def run_values(experiment) -> Dict[str, float]:
    """The values the probed run trains with: the fixed strategy's configured ones (a replay is not followed)."""
    from hpo.strategies import get_strategy
    overrides = get_strategy("fixed").hparams
    for name in overrides:
        experiment.check_settable(name, "fixed")
    return {**experiment.base_hparams(), **overrides}


def guide_settings(experiment) -> Dict[str, int]:
    """The guided strategy's guide batches, as `Guided.*` configures them: size, and steps between refreshes."""
    from hpo.strategies import get_strategy
    tuning = get_strategy("guided").tuning(experiment)
    return {"guide_batch_size": tuning.guide_batch_size, "guide_refresh_every": tuning.guide_refresh_every}


def make_steps(model, tx, schedule):
    """(train_step, the guided strategy's guide loss: no dropout, no smoothing), each compiled once.

    The copies step one after another, not as one `jax.vmap`ped program: on CPU the
    vmapped step of 7 copies of the demo's model took 2.9 s against 1.6 s for 7 calls,
    and one copy at a time keeps a large model's activations to one copy's.
    """
    return (jax.jit(functools.partial(train_step, model=model, tx=tx, schedule=schedule)),
            jax.jit(functools.partial(model.mean_loss, train=False)))


def probe_seed(experiment, grid: Probe, seed: int, progress=None) -> List[Dict]:
    """One row per (from-step, horizon): the guide loss at each multiplier."""
    values = run_values(experiment)
    tx = optim.make_optimizer(experiment.optimizer, values)
    train, guide_loss = make_steps(experiment.model, tx, experiment.schedule)
    at = {m: {**values, "learning_rate": m} for m in {*grid.multipliers, values["learning_rate"]}}
    at = {m: {k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()} for m, hparams in at.items()}

    def step(state, batch, multiplier):
        return train(state, batch, at[multiplier])[0]

    guide = guide_settings(experiment)
    stream = _Stream(pipeline.train_and_guide_batches(experiment.data, seed, guide["guide_batch_size"],
                                                      guide["guide_refresh_every"]))
    state = init_state(experiment.model, tx, seed, dict(experiment.data.task_feature_lengths))
    run_multiplier, multipliers = values["learning_rate"], grid.multipliers
    rows, step_of_state = [], 0
    for start in grid.from_steps:
        for t in range(step_of_state, start):  # the run itself, to the next state probed
            state = step(state, stream[t]["train"], run_multiplier)
        step_of_state = start
        stream.forget_before(start)
        before = float(guide_loss(state.params, stream[start]["guide"]))
        copies, taken = [state] * len(multipliers), 0
        for horizon in grid.horizons:
            for t in range(start + taken, start + horizon):
                copies = [step(c, stream[t]["train"], m) for c, m in zip(copies, multipliers)]
            taken = horizon
            # The guide batch the guided strategy pairs with the last of these steps.
            guide_batch = stream[start + horizon - 1]["guide"]
            losses = np.array([float(guide_loss(c.params, guide_batch)) for c in copies])
            rows.append(row(seed, start, horizon, grid.multipliers, losses, before))
            if progress:
                progress(rows[-1])
    return rows


def row(seed: int, from_step: int, horizon: int, multipliers, losses, before: float) -> Dict:
    finite = np.isfinite(losses)
    best = multipliers[int(np.nanargmin(np.where(finite, losses, np.nan)))] if finite.any() else None
    return {"seed": seed, "from_step": from_step, "horizon": horizon, "guide_loss_before": before,
            "losses": [float(x) for x in losses], "best_multiplier": best}


# ---------------------------------------------------------------- the verdict

def verdict(rows: Sequence[Dict], horizons: Sequence[int]) -> str:
    """One line: is the shortest horizon's best multiplier below the longest's, and from which states?"""
    short, long = min(horizons), max(horizons)
    if short == long:
        return "verdict: one horizon only: give Probe.horizons two or more to compare"
    best = {(r["seed"], r["from_step"], r["horizon"]): r["best_multiplier"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    states = sorted({(r["seed"], r["from_step"]) for r in rows}, key=lambda s: (s[1], s[0]))
    name = (lambda s: str(s[1])) if len(seeds) == 1 else (lambda s: f"{s[1]} (seed {s[0]})")
    groups = {"below": [], "equal to": [], "above": []}
    for state in states:
        a, b = best[(*state, short)], best[(*state, long)]
        if a is not None and b is not None:
            groups["below" if a < b else "above" if a > b else "equal to"].append(name(state))
    others = "; ".join(f"{key} it from {_listing(v)}" for key, v in groups.items() if v and key != "below")
    others = f" ({others})" if others else ""
    short_name = "one-step" if short == 1 else f"{short}-step"
    if groups["below"]:
        return (f"verdict: {short_name} guidance is biased towards too small a rate on this task: the {short}-step "
                f"best multiplier is below the {long}-step best from {_listing(groups['below'])}{others}")
    return (f"verdict: no sign that {short_name} guidance picks too small a rate: the {short}-step best "
            f"multiplier is never below the {long}-step best{others}")


def _listing(states: Sequence[str]) -> str:
    return f"step{'s' if len(states) > 1 else ''} {', '.join(states)}"


# ---------------------------------------------------------------- outputs

def _steps(n: int) -> str:
    return f"{n} step{'s' if n != 1 else ''}"


def progress_line(r: Dict) -> str:
    best = _times(r["best_multiplier"]) if r["best_multiplier"] is not None else "none finite"
    return f"seed {r['seed']}, from step {r['from_step']}, {_steps(r['horizon'])}: best {best}"


def _times(m: float) -> str:
    return f"×{m:g}"


def markdown(rows: Sequence[Dict], multipliers: Sequence[float]) -> str:
    """The table: per (from-step, horizon) the guide loss at each multiplier, and the best."""
    seeds = len({r["seed"] for r in rows}) > 1
    head = [*(["seed"] if seeds else []), "from step", "steps", "before", *map(_times, multipliers), "best"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [*([str(r["seed"])] if seeds else []), str(r["from_step"]), str(r["horizon"]),
                 f"{r['guide_loss_before']:.3f}", *(f"{x:.3f}" for x in r["losses"]),
                 _times(r["best_multiplier"]) if r["best_multiplier"] is not None else "none finite"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Dict], multipliers: Sequence[float]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["seed", "from_step", "horizon", "guide_loss_before", *(f"x{m:g}" for m in multipliers),
                     "best_multiplier"])
    for r in rows:
        writer.writerow([r["seed"], r["from_step"], r["horizon"], repr(r["guide_loss_before"]),
                         *map(repr, r["losses"]), "" if r["best_multiplier"] is None else repr(r["best_multiplier"])])
    return out.getvalue()


def _finite_or_none(x: float):
    return x if math.isfinite(x) else None  # JSON has no NaN


def write_results(model_dir: str, report: Dict) -> List[str]:
    """probe.json, probe.csv and plots/probe.png in `model_dir` (each written, then renamed); their paths."""
    paths = [os.path.join(model_dir, name) for name in (JSON_FILE, CSV_FILE, PLOT_FILE)]
    rows = [{**r, "losses": [_finite_or_none(x) for x in r["losses"]],
             "guide_loss_before": _finite_or_none(r["guide_loss_before"])} for r in report["rows"]]
    hpo_io.write_json(paths[0], {**report, "rows": rows})
    hpo_io.write_text(paths[1], csv_text(report["rows"], report["multipliers"]))
    hpo_io.write_bytes(paths[2], plot_png(report["rows"], report["multipliers"]))
    return paths


def plot_png(rows: Sequence[Dict], multipliers: Sequence[float]) -> bytes:
    """Guide loss against multiplier, one line per horizon (and seed), one panel per from-step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    starts = sorted({r["from_step"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    horizons = sorted({r["horizon"] for r in rows})
    fig = Figure(figsize=(3.6 * len(starts), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(starts), squeeze=False, sharey=True)[0]
    colours = {h: f"C{i}" for i, h in enumerate(horizons)}
    for ax, start in zip(axes, starts):
        for r in (r for r in rows if r["from_step"] == start):
            label = _steps(r["horizon"]) + (f", seed {r['seed']}" if len(seeds) > 1 else "")
            ax.plot(multipliers, r["losses"], marker="o", ms=3, color=colours[r["horizon"]], label=label,
                    linestyle=("-", "--", ":", "-.")[seeds.index(r["seed"]) % 4])
            if r["best_multiplier"] is not None:
                ax.plot([r["best_multiplier"]], [min(x for x in r["losses"] if math.isfinite(x))], marker="*",
                        ms=11, color=colours[r["horizon"]])
        ax.set_xscale("log", base=2)
        ax.set_xticks(multipliers, [_times(m) for m in multipliers])
        ax.minorticks_off()
        ax.set_xlabel("learning-rate multiplier")
        ax.set_title(f"from step {start}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("guide loss after training")
    axes[-1].legend(fontsize=8)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    return png.getvalue()


def probe(experiment, grid: Probe, seeds: Sequence[int], progress=None) -> Dict:
    """Runs the probe for each seed; the report that `write_results` writes."""
    grid = grid.grid(experiment.train_steps)
    rows = [r for seed in seeds for r in probe_seed(experiment, grid, seed, progress)]
    return {"task": experiment.task, "train_steps": experiment.train_steps, "seeds": list(seeds),
            "run_values": run_values(experiment), **guide_settings(experiment), "from_steps": list(grid.from_steps),
            "horizons": list(grid.horizons), "multipliers": list(grid.multipliers), "rows": rows,
            "verdict": verdict(rows, grid.horizons)}
