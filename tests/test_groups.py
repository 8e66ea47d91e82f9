"""Per-group learned learning rates (`Guided.groups`): hyper-gradients, the update, a run's record, bad input."""

import csv
import functools
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpo.core.errors import UserError
from hpo.engine import guided_step
from hpo.engine.trainer import apply_update, init_state, train_step
from hpo.flow import records
from hpo.flow.schedules import read_schedule
from hpo.method import groups as param_groups, hyper, optim
from hpo.report import claims, plots
from hpo.strategies.fixed import Fixed
from hpo.strategies.guided import Guided
from test_guided import LENGTHS, _batch, _model

GROUPS = param_groups.PRESETS["embeddings_encoder_decoder"]
RATES = [param_groups.rate_name(g) for g in GROUPS]


def _trained_state(model, optimizer, values, dtype, lr=0.01, groups=None):
    tx = optim.make_optimizer(optim.OptimizerConfig(name=optimizer), values, groups)
    schedule = lambda step: jnp.asarray(lr, dtype)  # noqa: E731
    state = init_state(model, tx, 0, LENGTHS)
    plain = {k: jnp.asarray(v, dtype) for k, v in values.items()}
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, schedule=schedule))
    for i in range(2):  # non-trivial optimizer moments
        state, _ = step(state, _batch(i), plain)
    return state, tx, schedule


@pytest.mark.integration
@pytest.mark.parametrize("optimizer", ["adam", "adafactor"])
def test_group_hypergradients_equal_finite_differences(optimizer):
    with jax.enable_x64(True):
        model = _model("float64")
        config = optim.OptimizerConfig(name=optimizer)
        values = {**config.hparams(), "learning_rate": 1.0}
        state, tx, schedule = _trained_state(model, optimizer, values, jnp.float64,
                                             lr=0.01 if optimizer == "adam" else 0.1, groups=GROUPS)
        names = ["learning_rate", *RATES]  # the global multiplier tuned beside the groups'
        specs = {k: hyper.DEFAULT_SPECS["learning_rate"] for k in names}
        fixed = {k: v for k, v in values.items() if k not in specs}
        loss = functools.partial(guided_step.guide_loss, state=state, batch={"train": _batch(5), "guide": _batch(6)},
                                 model=model, tx=tx, schedule=schedule, specs=specs, fixed_values=fixed)
        # Off 1.0, so that each multiplier's gradient is taken at a point of its own.
        raw = {k: jnp.asarray(specs[k].inverse(v), jnp.float64) for k, v in zip(names, [1.0, 0.5, 2.0, 1.5])}
        # One compiled program for the gradient and the finite differences' losses.
        value_and_grad = jax.jit(jax.value_and_grad(lambda r: loss(r)[0]))
        grads = value_and_grad(raw)[1]
        guide = lambda r: float(value_and_grad(r)[0])  # noqa: E731
        h = 1e-4
        for k in names:
            fd = (guide({**raw, k: raw[k] + h}) - guide({**raw, k: raw[k] - h})) / (2 * h)
            assert fd != 0.0, (optimizer, k)
            assert abs(float(grads[k]) - fd) <= 1e-4 * abs(fd) + 1e-9, (optimizer, k, float(grads[k]), fd)


def _paths(tree):
    return [param_groups.path_of(keys) for keys, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


@pytest.mark.integration
def test_a_group_multiplier_scales_its_parameters_updates_alone():
    model = _model()
    values = {**optim.OptimizerConfig(name="adam").hparams(), "learning_rate": 1.0}
    state, tx, schedule = _trained_state(model, "adam", values, jnp.float32)
    # The same state, its optimizer chained with the groups' multipliers (optax's chain state).
    grouped_tx = optim.make_optimizer(optim.OptimizerConfig(name="adam"), values, GROUPS)
    grouped_state = state.replace(opt_state=(state.opt_state, grouped_tx.init(state.params)[1]))
    update = jax.jit(functools.partial(apply_update, model=model, tx=tx, schedule=schedule))
    grouped = jax.jit(functools.partial(apply_update, model=model, tx=grouped_tx, schedule=schedule))
    hparams = {k: jnp.float32(v) for k, v in values.items()}
    ungrouped = update(state, _batch(5), hparams)
    ones = grouped(grouped_state, _batch(5), {**hparams, **{k: jnp.float32(1.0) for k in RATES}})
    without_rates = lambda out: (out[0], out[1][0], out[2])  # noqa: E731  (the multipliers' own state aside)
    for a, b in zip(jax.tree.leaves(ungrouped), jax.tree.leaves(without_rates(ones))):
        # Multipliers of 1: the ungrouped update, but for rounding (another program, fused otherwise).
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)

    doubled = grouped(grouped_state, _batch(5), {**hparams, **{k: jnp.float32(1.0) for k in RATES},
                                                 "learning_rate/encoder": jnp.float32(2.0)})
    for path, before, one, two in zip(_paths(state.params), jax.tree.leaves(state.params),
                                      jax.tree.leaves(ones[0]), jax.tree.leaves(doubled[0])):
        if path.startswith("encoder/"):
            np.testing.assert_allclose(two - before, 2 * (one - before), rtol=1e-4, atol=1e-7)
            assert np.any(one != before), path
        else:
            np.testing.assert_array_equal(two, one)
    for a, b in zip(jax.tree.leaves(ones[1][0]), jax.tree.leaves(doubled[1][0])):
        np.testing.assert_array_equal(a, b)  # the moments see gradients, not multipliers

    window = guided_step.train_window(grouped_state, jax.tree.map(lambda x: x[None], _batch(5)),
                                      {**hparams, **{k: jnp.float32(1.0) for k in RATES}, "learning_rate/encoder": 2.0},
                                      model=model, tx=grouped_tx, schedule=schedule)
    for a, b in zip(jax.tree.leaves(window[0]), jax.tree.leaves(doubled[0])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # a long-horizon window scales the same


@pytest.mark.integration
def test_a_guided_run_learns_one_rate_per_group(tiny_experiment, tmp_path, monkeypatch):
    exp = tiny_experiment("TRAIN_STEPS = 5", "Guided.groups = 'embeddings_encoder_decoder'",
                          "Guided.meta_learning_rate = 0.05")
    record = Guided().run(exp, seed=0)
    path = os.path.join(exp.model_dir, record["schedule_file"])
    with open(path) as f:
        assert next(csv.reader(f)) == ["step", "learning_rate", *RATES]
    schedule = read_schedule(path)
    finals = [float(schedule[k][-1]) for k in RATES]
    assert all(float(schedule[k][0]) == pytest.approx(1.0) for k in RATES)
    assert len(set(finals)) == len(RATES), finals  # each group's rate took a path of its own
    assert set(record["learned_schedule"]) == {"learning_rate", *RATES}
    assert [record["hparams"][k] for k in RATES] == finals
    assert record["guided"]["groups"] == GROUPS and record["guided"]["tune"] == ["learning_rate", *RATES]

    titles = []  # the trajectories plot: a panel per column
    monkeypatch.setattr(plots, "_save", lambda fig, out: titles.extend(
        ax.get_title() for ax in fig.axes if ax.get_visible()) or out)
    assert plots.plot_trajectories(records.load(exp.model_dir), exp.model_dir, str(tmp_path / "t.png"))
    assert titles == ["learning_rate", *RATES]

    # The fixed strategy replays the group columns on the run's groups (groups.json beside the CSV).
    replay = Fixed(replay=path).run(exp, seed=0)
    assert replay["hparams"] == {**replay["hparams"], **{k: float(schedule[k][0]) for k in RATES}}
    assert replay["dev_loss"] == pytest.approx(record["dev_loss"], rel=claims.REPRODUCTION_RTOL)
    ungrouped = Fixed(replay=_without(path, RATES, tmp_path)).run(  # the same, but no groups
        exp, seed=0, run_dir=str(tmp_path / "ungrouped-run"))
    assert abs(ungrouped["dev_loss"] - record["dev_loss"]) > claims.REPRODUCTION_RTOL * record["dev_loss"]


def _without(path, columns, tmp_path) -> str:
    """A copy of schedule `path` without `columns`."""
    with open(path) as f:
        rows = [{k: v for k, v in row.items() if k not in columns} for row in csv.DictReader(f)]
    out = tmp_path / "ungrouped" / "hparams.csv"
    out.parent.mkdir()
    with open(out, "w") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(out)


def test_replaying_group_rates_needs_their_groups(tiny_experiment, tmp_path):
    path = tmp_path / "guided" / "hparams.csv"
    path.parent.mkdir()
    path.write_text("step,learning_rate,learning_rate/encoder\n0,1.0,1.0\n1,1.1,0.9\n")
    exp = tiny_experiment("TRAIN_STEPS = 2")
    with pytest.raises(UserError, match=r"per-group learning rates \(encoder\) but no groups.json beside it"):
        Fixed(replay=str(path)).run(exp, seed=0)
    (path.parent / "groups.json").write_text('{"encoder": ')
    with pytest.raises(UserError, match="groups.json is not JSON"):
        Fixed(replay=str(path)).run(exp, seed=0)
    (path.parent / "groups.json").write_text('{"decoder": "^decoder/"}')
    with pytest.raises(UserError, match="names groups decoder, the schedule encoder"):
        Fixed(replay=str(path)).run(exp, seed=0)
    (path.parent / "groups.json").write_text('{"encoder": "^nothing/"}')
    with pytest.raises(UserError, match=r"Guided.groups\['encoder'\]: the regex '\^nothing/' matches no parameter"):
        Fixed(replay=str(path)).run(exp, seed=0)


def test_groups_alone_may_be_tuned_and_presets_resolve():
    gin.clear_config()  # Guided is configurable: no bindings of an earlier test
    assert Guided(tune=[], groups="encoder_decoder").groups == param_groups.PRESETS["encoder_decoder"]
    with pytest.raises(UserError, match="cannot tune nothing"):
        Guided(tune=[])
    with pytest.raises(UserError, match=r"Guided.groups\['x'\]: not a regex"):
        Guided(groups={"x": "("})
    with pytest.raises(UserError, match="'learning_rate/encoder' is not tuned"):
        Guided(specs={"learning_rate/encoder": {"steepness": 2.0}})
    Guided(groups="encoder_decoder", specs={"learning_rate/encoder": {"steepness": 2.0}})
    with pytest.raises(UserError, match=r"Guided.specs\['learning_rate/encoder'\]: unknown field \['steep'\]"):
        Guided(groups="encoder_decoder", specs={"learning_rate/encoder": {"steep": 2.0}})

