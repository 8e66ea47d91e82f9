"""`hpo probe`: the grid it was asked for, its files, its losses checked against train_step, bad input."""

import contextlib
import csv
import io
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpo.cli import gin_config
from hpo.cli.main import main
from hpo.data import pipeline
from hpo.engine.experiment import Experiment
from hpo.engine.trainer import init_state, train_step
from hpo.method import optim
from hpo.run.probe import row, run_verdict, verdict

TINY = ["probe", "--gin_file=test.gin"]
GRID = ["--probe_steps=0,2", "--gin.Probe.horizons=[2,1]", "--gin.Probe.multipliers=[4,0.5,1]",
        "--gin.Probe.values={'beta1': [0.9, 0.5]}"]  # Adafactor's momentum: none in the run (0)


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """One probe of the tiny model: (model dir, probe.json, stdout)."""
    model_dir = tmp_path_factory.mktemp("probe")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*TINY, f"--model_dir={model_dir}", *GRID]) == 0
    return model_dir, json.load(open(model_dir / "probe.json")), out.getvalue()


def _rows_of(report, hparam="learning_rate"):
    return [r for r in report["rows"] if r["hparam"] == hparam]


@pytest.mark.integration
def test_it_writes_the_grid_it_was_asked_for(probed):
    model_dir, report, out = probed
    assert (report["from_steps"], report["horizons"], report["multipliers"]) == ([0, 2], [1, 2], [0.5, 1.0, 4.0])
    assert report["grids"] == {"learning_rate": [0.5, 1.0, 4.0], "beta1": [0.5, 0.9]}
    assert report["run_values"]["beta1"] == 0.0
    for hparam, csv_name, plot_name in [("learning_rate", "probe.csv", "probe.png"),
                                        ("beta1", "probe-beta1.csv", "probe-beta1.png")]:
        rows = _rows_of(report, hparam)
        assert [(r["from_step"], r["horizon"]) for r in rows] == [(0, 1), (0, 2), (2, 1), (2, 2)]
        with open(model_dir / csv_name) as f:
            table = list(csv.DictReader(f))
        assert [(int(r["from_step"]), int(r["horizon"])) for r in table] == [(0, 1), (0, 2), (2, 1), (2, 2)]
        assert (model_dir / "plots" / plot_name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert report["verdicts"][hparam] in out
    assert [k for k in table[0] if "=" in k] == ["beta1=0.5", "beta1=0.9"]
    assert "| from step | steps |" in out and report["verdict"] == report["verdicts"]["learning_rate"]
    assert out.count("verdict:") == 1 and out.count("verdict (beta1):") == 1


@pytest.mark.integration
def test_every_loss_is_finite_and_the_best_is_the_argmin(probed):
    _, report, _ = probed
    for r in report["rows"]:
        assert all(math.isfinite(x) for x in [*r["losses"], r["guide_loss_before"]]), r
        assert r["best_value"] == report["grids"][r["hparam"]][int(np.argmin(r["losses"]))]
        assert len(set(r["losses"])) == len(r["losses"])  # the value made a difference


@pytest.mark.integration
@pytest.mark.parametrize("hparam", ["learning_rate", "beta1"])
def test_horizon_one_equals_one_train_step_at_that_value(probed, tmp_path, hparam):
    """Recomputed here: the run's first training batch, one train_step at the probed value (the
    learning rate's: a multiplier), the guide loss without dropout on the guided strategy's first
    guide batch (its defaults: the training batch's size, one batch for the run)."""
    _, report, _ = probed
    gin_config.parse(["test.gin"], [f"MODEL_DIR = '{tmp_path}'"])
    experiment = Experiment()
    values = {**experiment.base_hparams(), "beta1": 0.0}  # the probe's optimizer state has a momentum
    tx = optim.make_optimizer(experiment.optimizer, values)
    state = init_state(experiment.model, tx, 0, dict(experiment.data.task_feature_lengths))
    batch = next(pipeline.train_and_guide_batches(experiment.data, 0, experiment.batch_size, 0))
    step = jax.jit(functools.partial(train_step, model=experiment.model, tx=tx, schedule=experiment.schedule))
    guide_loss = jax.jit(functools.partial(experiment.model.mean_loss, train=False))  # the guided strategy's
    first = next(r for r in _rows_of(report, hparam) if (r["from_step"], r["horizon"]) == (0, 1))
    for v, probed_loss in zip(report["grids"][hparam], first["losses"]):
        hparams = {k: jnp.asarray(x, jnp.float32) for k, x in {**values, hparam: v}.items()}
        trained, _ = step(state, batch["train"], hparams)
        assert probed_loss == pytest.approx(float(guide_loss(trained.params, batch["guide"])), rel=1e-5), v


@pytest.mark.integration
def test_the_states_probed_are_the_runs_own(probed):
    """The run trains at ×1: the state at step 2 is the ×1 copy after 2 steps from step 0."""
    _, report, _ = probed
    rows = {(r["from_step"], r["horizon"]): r for r in _rows_of(report)}
    at_one = report["multipliers"].index(1.0)
    assert rows[(2, 1)]["guide_loss_before"] == pytest.approx(rows[(0, 2)]["losses"][at_one], rel=1e-5)
    assert rows[(0, 2)]["guide_loss_before"] == rows[(0, 1)]["guide_loss_before"]


@pytest.mark.integration
def test_a_replayed_schedule_is_the_run_probed(tmp_path):
    """With Fixed.replay (a learned schedule) the run steps with the schedule's values: the state at
    step 2 is two train_steps at its rates, and each row holds the run's multiplier at its state."""
    schedule = tmp_path / "hparams.csv"
    schedule.write_text("step,learning_rate\n0,0.5\n1,2.0\n2,3.0\n3,0.25\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*TINY, f"--model_dir={tmp_path / 'probe'}", "--probe_steps=0,2", "--gin.Probe.horizons=[1,2]",
                     "--gin.Probe.multipliers=[1,4]", f"--gin.Fixed.replay={schedule}"]) == 0
    report = json.load(open(tmp_path / "probe" / "probe.json"))
    assert report["replay"]["mode"] == "schedule" and report["run_values"]["learning_rate"] == 0.5
    assert [(r["from_step"], r["run_value"]) for r in report["rows"]] == [(0, 0.5), (0, 0.5), (2, 3.0), (2, 3.0)]
    assert report["run_verdicts"]["learning_rate"] in out.getvalue()

    gin_config.parse(["test.gin"], [f"MODEL_DIR = '{tmp_path}'"])
    experiment = Experiment()
    values = experiment.base_hparams()
    tx = optim.make_optimizer(experiment.optimizer, values)
    state = init_state(experiment.model, tx, 0, dict(experiment.data.task_feature_lengths))
    batches = pipeline.train_and_guide_batches(experiment.data, 0, experiment.batch_size, 0)
    step = jax.jit(functools.partial(train_step, model=experiment.model, tx=tx, schedule=experiment.schedule))
    for rate in (0.5, 2.0):
        batch = next(batches)
        state, _ = step(state, batch["train"], {k: jnp.float32(v) for k, v in {**values, "learning_rate": rate}.items()})
    guide = next(batches)["guide"]  # one guide batch for the run: the same in every batch
    at_two = next(r for r in report["rows"] if r["from_step"] == 2)
    assert at_two["guide_loss_before"] == pytest.approx(
        float(experiment.model.mean_loss(state.params, guide, train=False)), rel=1e-5)


def test_the_runs_verdict_says_where_its_values_lie_and_where_they_moved():
    rows = [{"seed": 0, "hparam": "learning_rate", "from_step": s, "horizon": 50, "best_value": best,
             "run_value": run} for s, best, run in ((0, 4.0, 1.0), (25, 4.0, 0.5), (50, 2.0, 2.0), (75, 1.0, 3.0))]
    line = run_verdict(rows, [1, 50])
    assert line == ("verdict (the run's multiplier): compared with the 50-step best: below it from steps 0, 25; "
                    "equal to it from step 50; above it from step 75; it moved away from it over steps 0-25, 50-75")
    towards = [{**r, "run_value": r["best_value"] / 2} for r in rows]
    assert run_verdict(towards, [1, 50]).endswith("it never moved away from it between the states probed")


@pytest.mark.parametrize("flags, message", [
    (["--gin.Probe.multipliers=[]"], "Probe.multipliers is empty"),
    (["--gin.Probe.multipliers=[1, -2]"], "Probe.multipliers: a multiplier must be a positive number, got -2"),
    (["--gin.Probe.horizons=[1, 0]"], "Probe.horizons: a horizon must be positive, got 0"),
    (["--gin.Probe.horizons=[]"], "Probe.horizons is empty"),
    (["--probe_steps=0,5"], "Probe.from_steps: step 5 is beyond TRAIN_STEPS (4)"),
    (["--gin.Probe.from_steps=[-1]"], "Probe.from_steps: a step must be an integer >= 0, got -1"),
    (["--probe_steps=0,x"], "--probe_steps: expected steps such as '0,25,50', got '0,x'"),
    (["--probe_steps=0,,2"], "--probe_steps: an empty item in '0,,2'"),
    (["--probe_steps=2,2"], "--probe_steps: step 2 is given twice"),
    (["--seeds=1,1"], "--seeds: seed 1 is given twice"),
    (["--gin.Probe.values={'beta2': [0.9]}"], "Probe.values: 'beta2' is not a hyper-parameter of optimizer"),
    (["--gin.Probe.values={'learning_rate': [2.0]}"], "Probe.values: the learning rate is probed as multipliers"),
    (["--gin.Probe.values={'beta1': [1.5]}"], "Probe.values: beta1 must be in [0, 1), got 1.5"),
    (["--gin.Probe.values={'beta1': []}"], "Probe.values['beta1'] is empty"),
])
def test_bad_input_is_one_line_and_exit_2(flags, message, tmp_path, capsys):
    assert main([*TINY, f"--model_dir={tmp_path / 'out'}", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hpo: error: {message}"), err
    assert not (tmp_path / "out").exists()


def test_the_best_ignores_a_diverged_copy():
    assert row(0, 0, 1, [1.0, 2.0, 4.0], np.array([3.0, 2.0, np.nan]), 4.0)["best_value"] == 2.0
    assert row(0, 0, 1, [1.0, 2.0], np.array([np.inf, np.nan]), 4.0)["best_value"] is None


def _rows(best):
    return [{"seed": 0, "from_step": s, "horizon": h, "best_value": m} for (s, h), m in best.items()]


def test_the_verdict_compares_the_shortest_and_the_longest_horizon():
    biased = verdict(_rows({(0, 1): 16.0, (0, 50): 8.0, (25, 1): 1.0, (25, 50): 8.0, (50, 1): 2.0,
                            (50, 50): 2.0}), [1, 50])
    assert biased.startswith("verdict: one-step guidance is biased towards too small a rate")
    assert "below the 50-step best from step 25 (equal to it from step 50; above it from step 0)" in biased
    fine = verdict(_rows({(0, 1): 16.0, (0, 5): 8.0}), [1, 5])
    assert fine.startswith("verdict: no sign that one-step guidance picks too small a rate")
    assert "one horizon only" in verdict(_rows({(0, 1): 2.0}), [1])


def test_another_values_verdict_says_where_its_one_step_best_lies():
    rows = [{**r, "hparam": "beta1"} for r in _rows({(0, 1): 0.5, (0, 5): 0.9, (5, 1): 0.9, (5, 5): 0.9})]
    assert verdict(rows, [1, 5], "beta1") == ("verdict (beta1): the 1-step best value compared with the 5-step "
                                              "best: below it from step 0; equal to it from step 5")
