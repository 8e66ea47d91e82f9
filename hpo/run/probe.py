"""`hpo probe`: will one-step guidance pick too small a learning rate on this task?

From the initial state and from states along the configured run (the fixed
strategy's values), copies of the model train for each horizon at a grid of
learning-rate multipliers, on the training batches the run sees next, and the
guide loss after each is compared. The guide loss is the guided strategy's: the
loss without dropout or smoothing on its guide batch (same source, size and
refresh as `Guided.*`). Where the one-step best multiplier is below the longest
horizon's, the guided strategy's one-step lookahead is biased towards too small a
rate (the short-horizon bias). Other hyper-parameters (`Probe.values`) are probed
the same way, one at a time, each over its own grid of values, the others at the
run's. One compiled step serves the run and every copy.

The run probed is the fixed strategy's: the configured values, or a learned
schedule replayed step by step (`Fixed.replay`, e.g. a forward-mode guided run's
hparams.csv). Each row also holds the run's own value at its state, and a second
verdict says where the run's values lie against the longest horizon's best, and
whether a schedule moved them away from it.
"""

import csv
import dataclasses
import functools
import io
import math
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from hpo.core import io as hpo_io
from hpo.core.errors import UserError, comma_list, non_negative_int, positive_int
from hpo.data import pipeline
from hpo.engine.trainer import init_state, train_step
from hpo.method import optim

JSON_FILE, CSV_FILE, PLOT_FILE = "probe.json", "probe.csv", os.path.join("plots", "probe.png")
RATE = "learning_rate"  # probed as multipliers (Probe.multipliers); other values as they are
# Where the probe's default states lie, as fractions of TRAIN_STEPS (0, 10, 25, 50, 150 of 200).
DEFAULT_FROM_FRACTIONS = (0.0, 0.05, 0.125, 0.25, 0.75)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Probe:
    """The probe's grid: states (`from_steps`, None: 0, 5%, 12.5%, 25% and 75% of
    TRAIN_STEPS), `horizons` (training steps taken from each state), learning-rate
    `multipliers` (as Guided's and Fixed's learning_rate: a multiplier on the schedule),
    and `values`: other hyper-parameters to probe, {name: [values]}, e.g. {'beta1': [0.5, 0.9]}."""
    from_steps: Optional[Sequence[int]] = None
    horizons: Sequence[int] = (1, 5, 20, 50)
    multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    values: Optional[Mapping[str, Sequence[float]]] = None

    @property
    def grids(self) -> Dict[str, Sequence[float]]:
        """Each probed hyper-parameter's grid, the learning rate's (multipliers) first."""
        return {RATE: self.multipliers, **(self.values or {})}

    def grid(self, experiment) -> "Probe":
        """The grid checked against `experiment`, sorted and without repeats; UserError for bad input."""
        train_steps = experiment.train_steps
        steps = self.from_steps
        if steps is None:
            steps = [round(f * train_steps) for f in DEFAULT_FROM_FRACTIONS]
        steps = [non_negative_int(s, "Probe.from_steps: a step") for s in _listed(steps, "Probe.from_steps")]
        beyond = [s for s in steps if s > train_steps]
        if beyond:
            raise UserError(f"Probe.from_steps: step {beyond[0]} is beyond TRAIN_STEPS ({train_steps})")
        horizons = [positive_int(h, "Probe.horizons: a horizon") for h in _listed(self.horizons, "Probe.horizons")]
        multipliers = [_positive(m) for m in _listed(self.multipliers, "Probe.multipliers")]
        values = _checked_values(self.values)
        for name in values:
            experiment.check_settable(name, "Probe.values")
        return Probe(*(tuple(sorted(set(x))) for x in (steps, horizons, multipliers)),
                     values={k: tuple(sorted(set(v))) for k, v in values.items()})


def _checked_values(values) -> Dict[str, List[float]]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise UserError(f"Probe.values must map hyper-parameter names to lists of values, got {values!r}")
    for name in values:
        if name == RATE:
            raise UserError("Probe.values: the learning rate is probed as multipliers: set Probe.multipliers")
        if name not in (*optim.OPTIMIZER_HPARAMS, *optim.LOSS_HPARAMS):
            raise UserError(f"Probe.values: unknown hyper-parameter '{name}' (choose from "
                            f"{', '.join(n for n in (*optim.OPTIMIZER_HPARAMS, *optim.LOSS_HPARAMS) if n != RATE)})")
    return {name: [optim.check_hparam(name, v, "Probe.values") for v in _listed(grid, f"Probe.values['{name}']")]
            for name, grid in values.items()}


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
        return [int(s) for s in comma_list("--probe_steps", text, "step")]
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


def run_schedule(experiment, probed: Sequence[str] = ()):
    """(step -> the values the probed run trains with at that step, the fixed strategy's replay
    description or {}, its parameter groups or None): the fixed strategy's values, constant or a
    replayed schedule (`Fixed.replay`). A probed hyper-parameter the optimizer leaves unset
    (Adafactor's beta1) is 0 there, as in the guided strategy: present in the optimizer's state,
    and no momentum."""
    from hpo.strategies import get_strategy
    fixed = get_strategy("fixed")
    values_at, info = fixed.step_values(experiment)
    base = experiment.base_hparams()
    zeros = {k: 0.0 for k in probed if k not in base}
    return (lambda step: {**zeros, **{k: float(v) for k, v in values_at(step).items()}}), info, \
        fixed.replay_groups or None


def run_values(experiment, probed: Sequence[str] = ()) -> Dict[str, float]:
    """The values the probed run trains with at its first step (`run_schedule`)."""
    return run_schedule(experiment, probed)[0](0)


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


class BuiltinRun:
    """What the probe needs of an engine, on the built-in one: a run's first state, a training step
    with given values, the guide loss of a state, and the run's {"train", "guide"} batches."""

    def __init__(self, experiment, first_values: Mapping[str, float], groups=None):
        self._experiment = experiment
        self._tx = optim.make_optimizer(experiment.optimizer, first_values, groups)
        self._train, self._loss = make_steps(experiment.model, self._tx, experiment.schedule)

    def initial_state(self, seed: int):
        return init_state(self._experiment.model, self._tx, seed, dict(self._experiment.data.task_feature_lengths))

    def step(self, state, batch, values: Mapping[str, float]):
        return self._train(state, batch, {k: jnp.asarray(v, jnp.float32) for k, v in values.items()})[0]

    def guide_loss(self, state, batch) -> float:
        return float(self._loss(state.params, batch))

    def batches(self, seed: int, guide_batch_size: int, guide_refresh_every: int):
        return pipeline.train_and_guide_batches(self._experiment.data, seed, guide_batch_size, guide_refresh_every)


def engine_run(experiment, first_values, groups=None):
    """The probe's run on the experiment's engine (`BuiltinRun` or T5X's)."""
    if experiment.backend == "t5x":
        from hpo.t5x_backend.probe import T5xRun
        return T5xRun(experiment, first_values, groups)
    return BuiltinRun(experiment, first_values, groups)


def probe_seed(experiment, grid: Probe, values_at: Callable[[int], Dict[str, float]], seed: int, progress=None,
               groups=None) -> List[Dict]:
    """One row per (hyper-parameter, from-step, horizon): the guide loss at each value of its grid,
    the run training with `values_at(step)` (`run_schedule`)."""
    run = engine_run(experiment, values_at(0), groups)
    # A copy per (name, value) of the grids; the run itself steps with its own values (None).
    settings = [(name, v) for name, grid_values in grid.grids.items() for v in grid_values]

    def step(state, batch, setting, t):
        return run.step(state, batch, values_at(t) if setting is None else {**values_at(t), setting[0]: setting[1]})

    guide = guide_settings(experiment)
    stream = _Stream(run.batches(seed, guide["guide_batch_size"], guide["guide_refresh_every"]))
    state = run.initial_state(seed)
    rows, step_of_state = [], 0
    for start in grid.from_steps:
        for t in range(step_of_state, start):  # the run itself, to the next state probed
            state = step(state, stream[t]["train"], None, t)
        step_of_state = start
        stream.forget_before(start)
        before = run.guide_loss(state, stream[start]["guide"])
        copies, taken = [state] * len(settings), 0
        for horizon in grid.horizons:
            for t in range(start + taken, start + horizon):
                copies = [step(c, stream[t]["train"], setting, t) for c, setting in zip(copies, settings)]
            taken = horizon
            # The guide batch the guided strategy pairs with the last of these steps.
            guide_batch = stream[start + horizon - 1]["guide"]
            losses = np.array([run.guide_loss(c, guide_batch) for c in copies])
            for name, grid_values in grid.grids.items():
                mine = [i for i, (n, _) in enumerate(settings) if n == name]
                rows.append(row(seed, start, horizon, grid_values, losses[mine], before, name,
                                values_at(start).get(name)))
                if progress:
                    progress(rows[-1])
    return rows


def row(seed: int, from_step: int, horizon: int, grid_values, losses, before: float, hparam: str = RATE,
        run_value: Optional[float] = None) -> Dict:
    """`run_value`: the run's own value of `hparam` at `from_step` (the learning rate's: its multiplier)."""
    finite = np.isfinite(losses)
    best = grid_values[int(np.nanargmin(np.where(finite, losses, np.nan)))] if finite.any() else None
    return {"seed": seed, "hparam": hparam, "from_step": from_step, "horizon": horizon,
            "guide_loss_before": before, "losses": [float(x) for x in losses], "best_value": best,
            "run_value": run_value}


# ---------------------------------------------------------------- the verdict

def verdict(rows: Sequence[Dict], horizons: Sequence[int], hparam: str = RATE) -> str:
    """One line: is the shortest horizon's best value of `hparam` below the longest's, and from which states?"""
    short, long = min(horizons), max(horizons)
    if short == long:
        return "verdict: one horizon only: give Probe.horizons two or more to compare"
    rows = [r for r in rows if r.get("hparam", RATE) == hparam]
    best = {(r["seed"], r["from_step"], r["horizon"]): r["best_value"] for r in rows}
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
    if hparam != RATE:  # which way another value's bias hurts depends on the value: the comparison only
        found = "; ".join(f"{key} it from {_listing(v)}" for key, v in groups.items() if v)
        return f"verdict ({hparam}): the {short}-step best value compared with the {long}-step best: {found or 'none finite'}"
    if groups["below"]:
        return (f"verdict: {short_name} guidance is biased towards too small a rate on this task: the {short}-step "
                f"best multiplier is below the {long}-step best from {_listing(groups['below'])}{others}")
    return (f"verdict: no sign that {short_name} guidance picks too small a rate: the {short}-step best "
            f"multiplier is never below the {long}-step best{others}")


def run_verdict(rows: Sequence[Dict], horizons: Sequence[int], hparam: str = RATE) -> str:
    """One line: where the run's own value lies against the longest horizon's best at each state
    probed, and whether the run's values (a replayed schedule) moved away from it between states."""
    long = max(horizons)
    rows = sorted((r for r in rows if r.get("hparam", RATE) == hparam and r["horizon"] == long
                   and r.get("run_value") is not None and r["best_value"] is not None),
                  key=lambda r: (r["seed"], r["from_step"]))
    what = "multiplier" if hparam == RATE else f"{hparam}"
    if not rows:
        return f"verdict (the run's {what}): no state with a finite {long}-step best"
    seeds = len({r["seed"] for r in rows}) > 1
    name = (lambda r: f"{r['from_step']} (seed {r['seed']})") if seeds else (lambda r: str(r["from_step"]))
    groups = {"below": [], "equal to": [], "above": []}
    away = []
    for i, r in enumerate(rows):
        run, best = r["run_value"], r["best_value"]
        same = math.isclose(run, best, rel_tol=1e-6)  # a float32 value of the run against the grid's
        groups["equal to" if same else "below" if run < best else "above"].append(name(r))
        before = rows[i - 1] if i and rows[i - 1]["seed"] == r["seed"] else None
        if before is not None and abs(run - best) > abs(before["run_value"] - best) \
                and (run - before["run_value"]) * (best - before["run_value"]) < 0:
            away.append(f"{before['from_step']}-{name(r)}")
    found = "; ".join(f"{key} it from {_listing(v)}" for key, v in groups.items() if v)
    moved = (f"; it moved away from it over steps {', '.join(away)}" if away else
             "; it never moved away from it between the states probed")
    return f"verdict (the run's {what}): compared with the {long}-step best: {found}{moved}"


def _listing(states: Sequence[str]) -> str:
    return f"step{'s' if len(states) > 1 else ''} {', '.join(states)}"


# ---------------------------------------------------------------- outputs

def _steps(n: int) -> str:
    return f"{n} step{'s' if n != 1 else ''}"


def progress_line(r: Dict) -> str:
    best = _value(r["hparam"], r["best_value"]) if r["best_value"] is not None else "none finite"
    what = "" if r["hparam"] == RATE else f" {r['hparam']}"
    return f"seed {r['seed']}, from step {r['from_step']}, {_steps(r['horizon'])}:{what} best {best}"


def _value(hparam: str, v: float) -> str:
    return f"×{v:g}" if hparam == RATE else f"{v:g}"


def _of(rows: Sequence[Dict], hparam: str) -> List[Dict]:
    return [r for r in rows if r["hparam"] == hparam]


def markdown(rows: Sequence[Dict], grids: Mapping[str, Sequence[float]]) -> str:
    """A table per probed hyper-parameter: per (from-step, horizon) the guide loss at each value, and the best."""
    seeds = len({r["seed"] for r in rows}) > 1
    tables = []
    for hparam, grid_values in grids.items():
        head = [*(["seed"] if seeds else []), "from step", "steps", "before",
                *(_value(hparam, v) for v in grid_values), "best", "run"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in _of(rows, hparam):
            cells = [*([str(r["seed"])] if seeds else []), str(r["from_step"]), str(r["horizon"]),
                     f"{r['guide_loss_before']:.3f}", *(f"{x:.3f}" for x in r["losses"]),
                     _value(hparam, r["best_value"]) if r["best_value"] is not None else "none finite",
                     _value(hparam, r["run_value"]) if r.get("run_value") is not None else ""]
            lines.append("| " + " | ".join(cells) + " |")
        title = "learning-rate multiplier" if hparam == RATE else hparam
        tables.append(("" if len(grids) == 1 else f"{title}:\n\n") + "\n".join(lines) + "\n")
    return "\n".join(tables)


def csv_text(rows: Sequence[Dict], hparam: str, grid_values: Sequence[float]) -> str:
    """One hyper-parameter's rows: a column per value (the learning rate's: x<multiplier>)."""
    out = io.StringIO()
    writer = csv.writer(out)
    columns = [f"x{v:g}" if hparam == RATE else f"{hparam}={v:g}" for v in grid_values]
    writer.writerow(["seed", "from_step", "horizon", "guide_loss_before", *columns,
                     "best_multiplier" if hparam == RATE else "best_value",
                     "run_multiplier" if hparam == RATE else "run_value"])
    for r in _of(rows, hparam):
        writer.writerow([r["seed"], r["from_step"], r["horizon"], repr(r["guide_loss_before"]),
                         *map(repr, r["losses"]), "" if r["best_value"] is None else repr(r["best_value"]),
                         "" if r.get("run_value") is None else repr(r["run_value"])])
    return out.getvalue()


def _finite_or_none(x: float):
    return x if math.isfinite(x) else None  # JSON has no NaN


def _named(path: str, hparam: str) -> str:
    """probe.csv, plots/probe.png for the learning rate; probe-<name>.csv, plots/probe-<name>.png for another."""
    if hparam == RATE:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}-{hparam}{ext}"


def write_results(model_dir: str, report: Dict) -> List[str]:
    """probe.json, and per probed hyper-parameter a CSV and a plot, in `model_dir` (each written,
    then renamed); their paths."""
    paths = [os.path.join(model_dir, JSON_FILE)]
    rows = [{**r, "losses": [_finite_or_none(x) for x in r["losses"]],
             "guide_loss_before": _finite_or_none(r["guide_loss_before"])} for r in report["rows"]]
    hpo_io.write_json(paths[0], {**report, "rows": rows})
    for hparam, grid_values in report["grids"].items():
        csv_path, plot_path = (os.path.join(model_dir, _named(f, hparam)) for f in (CSV_FILE, PLOT_FILE))
        hpo_io.write_text(csv_path, csv_text(report["rows"], hparam, grid_values))
        hpo_io.write_bytes(plot_path, plot_png(_of(report["rows"], hparam), grid_values, hparam))
        paths += [csv_path, plot_path]
    return paths


def plot_png(rows: Sequence[Dict], multipliers: Sequence[float], hparam: str = RATE) -> bytes:
    """Guide loss against the value (multiplier), one line per horizon (and seed), one panel per from-step."""
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
            if r["best_value"] is not None:
                ax.plot([r["best_value"]], [min(x for x in r["losses"] if math.isfinite(x))], marker="*",
                        ms=11, color=colours[r["horizon"]])
        if hparam == RATE or min(multipliers) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(multipliers, [_value(hparam, m) for m in multipliers])
        ax.minorticks_off()
        ax.set_xlabel("learning-rate multiplier" if hparam == RATE else hparam)
        ax.set_title(f"from step {start}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("guide loss after training")
    axes[-1].legend(fontsize=8)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    return png.getvalue()


def probe(experiment, grid: Probe, seeds: Sequence[int], progress=None) -> Dict:
    """Runs the probe for each seed; the report that `write_results` writes."""
    grid = grid.grid(experiment)
    values_at, replay, groups = run_schedule(experiment, list(grid.values))
    rows = [r for seed in seeds for r in probe_seed(experiment, grid, values_at, seed, progress, groups)]
    verdicts = {hparam: verdict(rows, grid.horizons, hparam) for hparam in grid.grids}
    run_verdicts = {hparam: run_verdict(rows, grid.horizons, hparam) for hparam in grid.grids}
    return {"task": experiment.task, "train_steps": experiment.train_steps, "seeds": list(seeds),
            "run_values": values_at(0), **replay, **guide_settings(experiment), "from_steps": list(grid.from_steps),
            "horizons": list(grid.horizons), "multipliers": list(grid.multipliers),
            "grids": {k: list(v) for k, v in grid.grids.items()}, "rows": rows,
            "verdict": verdicts[RATE], "verdicts": verdicts, "run_verdicts": run_verdicts}
