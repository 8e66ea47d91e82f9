"""Forward-mode guided tuning (`Guided.mode = 'forward'`): hyper-gradients through the whole run."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import DiesAt
from hpo.core.errors import UserError
from hpo.engine import guided_step
from hpo.engine.trainer import apply_update
from hpo.flow.schedules import read_schedule
from hpo.method import hyper
from hpo.strategies.fixed import Fixed
from hpo.strategies.guided import Guided, step_cost
from test_guided import _batch
from test_horizon import _adam_state, _model, _stacked

NAMES = ["learning_rate", "beta1", "label_smoothing"]


def _tuning(values, forward, discount=1.0, names=NAMES):
    specs = {k: hyper.HparamSpec(**{**hyper.DEFAULT_SPECS[k].__dict__, "init": values[k]}) for k in names}
    # A meta-optimizer that never moves the values: the run is one of constant values.
    return hyper.Tuning(specs=specs, fixed_values={k: v for k, v in values.items() if k not in specs},
                        meta_tx=optax.set_to_zero(), mode="forward", forward=forward, discount=discount)


def _forward_run(state, tuning, model, tx, schedule, trains, guide):
    """`len(trains)` tuned steps of `guided_step.guided_update` whose meta-optimizer never moves the values:
    the hyper-gradients reported at the last (one program: the same run as plain steps before it)."""
    tuner = tuning.init(len(trains), (state.params, state.opt_state))
    state = state.replace(tuner=tuner)
    step = jax.jit(functools.partial(guided_step.guided_update, model=model, tx=tx, schedule=schedule, tuning=tuning))
    for train in trains:
        state, metrics = step(state, {"train": train, "guide": guide})
    return {k: float(metrics[f"hypergrad/{k}"]) for k in tuning.specs}, state


def _window_loss(state, tuning, model, tx, schedule, trains, guide, discount=1.0):
    """G after the steps `trains`, as a (jitted) function of the raw values: reverse mode through them
    all. With `discount` μ < 1 each step's incoming state carries μ of its derivative (value unchanged)."""
    def loss(raw):
        values = {**tuning.fixed_values, **hyper.activate_all(tuning.specs, raw)}
        at = state
        for train in trains:
            if discount != 1:
                at = jax.tree.map(lambda x: discount * x + (1 - discount) * jax.lax.stop_gradient(x)
                                  if jnp.issubdtype(x.dtype, jnp.inexact) else x, at)
            params, opt_state, _ = apply_update(at, train, values, model=model, tx=tx, schedule=schedule)
            at = at.replace(step=at.step + 1, params=params, opt_state=opt_state)
        return model.mean_loss(at.params, guide, train=False)
    return jax.jit(loss)


@pytest.fixture(scope="module")
def x64():
    """The float64 model, an Adam state two steps in, three training batches and a guide batch,
    shared by the float64 tests (each computes under `jax.enable_x64` again)."""
    with jax.enable_x64(True):
        model = _model("float64")
        state, tx, schedule, values = _adam_state(model, jnp.float64)
        trains, guide = [_batch(s) for s in (5, 6, 7)], _batch(9)
        return model, state, tx, schedule, values, trains, guide


@pytest.mark.integration
def test_forward_at_discount_one_is_the_gradient_through_every_step(x64):
    """μ = 1 over 3 steps with constant values: the hyper-gradient after them equals reverse mode
    through all three (`Guided.horizon = 3`'s window) and a float64 central difference."""
    with jax.enable_x64(True):
        model, state, tx, schedule, values, trains, guide = x64
        tuning = _tuning(values, forward=NAMES)
        reported, _ = _forward_run(state, tuning, model, tx, schedule, trains, guide)
        loss = _window_loss(state, tuning, model, tx, schedule, trains, guide)
        raw = {k: jnp.asarray(tuning.specs[k].inverse(values[k]), jnp.float64) for k in NAMES}
        window = jax.jit(jax.grad(lambda r: model.mean_loss(guided_step.train_window(
            state, _stacked([5, 6, 7]), {**tuning.fixed_values, **hyper.activate_all(tuning.specs, r)},
            model=model, tx=tx, schedule=schedule)[0], guide, train=False)))(raw)
        h = 1e-4
        for k in NAMES:
            fd = (float(loss({**raw, k: raw[k] + h})) - float(loss({**raw, k: raw[k] - h}))) / (2 * h)
            assert fd != 0.0, k
            assert reported[k] == pytest.approx(float(window[k]), rel=2e-6, abs=1e-12), k  # the raw values are float32
            assert abs(reported[k] - fd) <= 1e-4 * abs(fd) + 1e-9, (k, reported[k], fd)


@pytest.mark.integration
def test_forward_values_beside_one_step_values(x64):
    """Only the learning rate forward: its hyper-gradient sees all three steps, the others' see the
    last step alone (the one-step method's, from the state before it)."""
    with jax.enable_x64(True):
        model, state, tx, schedule, values, trains, guide = x64
        tuning = _tuning(values, forward=["learning_rate"])
        reported, after = _forward_run(state, tuning, model, tx, schedule, trains, guide)
        raw = {k: jnp.asarray(tuning.specs[k].inverse(values[k]), jnp.float64) for k in NAMES}
        whole = jax.jit(jax.grad(_window_loss(state, tuning, model, tx, schedule, trains, guide)))(raw)
        assert reported["learning_rate"] == pytest.approx(float(whole["learning_rate"]), rel=2e-6)
        # The state before the last step: two plain steps with the same values.
        before = state
        update = jax.jit(functools.partial(apply_update, model=model, tx=tx, schedule=schedule))
        for train in trains[:2]:
            params, opt_state, _ = update(before, train, {**values})
            before = before.replace(step=before.step + 1, params=params, opt_state=opt_state)
        last = jax.jit(jax.grad(_window_loss(before, tuning, model, tx, schedule, trains[2:], guide)))(raw)
        for k in ("beta1", "label_smoothing"):
            assert reported[k] == pytest.approx(float(last[k]), rel=2e-6), k  # float32 raw values
            assert abs(float(whole[k]) - float(last[k])) > 1e-3 * abs(float(last[k])), k  # they differ
        assert set(after.tuner.tangent) == {"learning_rate"}


@pytest.mark.integration
def test_a_discount_weighs_earlier_updates_by_its_powers(x64):
    """μ = 0.5: the carried derivative of the state shrinks by μ per update, which reverse mode gets
    from states whose derivative (not value) is scaled by μ at each step's start."""
    with jax.enable_x64(True):
        model, state, tx, schedule, values, trains, guide = x64
        tuning = _tuning(values, forward=NAMES, discount=0.5)
        reported, _ = _forward_run(state, tuning, model, tx, schedule, trains, guide)
        raw = {k: jnp.asarray(tuning.specs[k].inverse(values[k]), jnp.float64) for k in NAMES}
        discounted = jax.jit(jax.grad(_window_loss(state, tuning, model, tx, schedule, trains, guide,
                                                   discount=0.5)))(raw)
        whole = jax.jit(jax.grad(_window_loss(state, tuning, model, tx, schedule, trains, guide)))(raw)
        for k in NAMES:
            assert reported[k] == pytest.approx(float(discounted[k]), rel=2e-6, abs=1e-12), k  # the raw values are float32
        assert reported["learning_rate"] != pytest.approx(float(whole["learning_rate"]), rel=1e-3)


@pytest.mark.integration
def test_discount_zero_is_the_one_step_method():
    """μ = 0 runs the one-step method's program (bit for bit); the forward machinery at μ = 0
    agrees with it to float rounding, whatever tangent it carried."""
    model = _model()
    state, tx, schedule, values = _adam_state(model, jnp.float32)
    batches = [{"train": _batch(s), "guide": _batch(9)} for s in (5, 6, 7)]
    specs = {k: hyper.DEFAULT_SPECS[k] for k in NAMES}
    fixed = {k: v for k, v in values.items() if k not in specs}
    meta = optax.adam(0.05)
    runs = {}
    for mode in ("one_step", "forward"):
        tuning = hyper.Tuning(specs=specs, fixed_values=fixed, meta_tx=meta, mode=mode, forward=NAMES, discount=0.0)
        assert tuning.forward_names == ()
        at = state.replace(tuner=tuning.init(3, (state.params, state.opt_state)))
        step = jax.jit(functools.partial(guided_step.guided_update, model=model, tx=tx, schedule=schedule, tuning=tuning))
        for batch in batches:
            at, _ = step(at, batch)
        runs[mode] = at
    for a, b in zip(jax.tree.leaves(runs["one_step"]), jax.tree.leaves(runs["forward"])):
        np.testing.assert_array_equal(a, b)

    tuning = hyper.Tuning(specs=specs, fixed_values=fixed, meta_tx=meta, mode="forward", forward=NAMES, discount=0.0)
    carry = (state.params, state.opt_state)
    rng = np.random.RandomState(0)
    noise = {k: jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype)
                             if jnp.issubdtype(x.dtype, jnp.inexact) else x, carry) for k in NAMES}
    raw = {k: jnp.float32(specs[k].inverse(values[k])) for k in NAMES}

    def update(carry, values):
        params, opt_state, loss = apply_update(state.replace(params=carry[0], opt_state=carry[1]),
                                               batches[0]["train"], values, model=model, tx=tx, schedule=schedule)
        return (params, opt_state), loss

    guide_loss = lambda carry: model.mean_loss(carry[0], batches[0]["guide"], train=False)  # noqa: E731
    values_of = lambda r: {**fixed, **hyper.activate_all(specs, r)}  # noqa: E731
    @jax.jit
    def forward_grads(raw, noise):
        new, _, tangent, _ = tuning.propagate(carry, update, values_of, raw, noise)
        return tuning.forward_grads(new, guide_loss, tangent)[1]

    forward = forward_grads(raw, noise)
    one = jax.jit(jax.grad(lambda r: guide_loss(update(carry, values_of(r))[0])))(raw)
    for k in NAMES:
        assert forward[k] == pytest.approx(float(one[k]), rel=1e-4, abs=1e-7), k


def _forward_experiment(tiny_experiment, *extra):
    return tiny_experiment("TRAIN_STEPS = 8", "Experiment.checkpoint_every = 3", "Experiment.log_every = 1",
                           "Guided.mode = 'forward'", "Guided.tune = ['learning_rate', 'label_smoothing']",
                           "Guided.guide_refresh = 'step'", "Guided.travel = 0.4", *extra)


@pytest.mark.integration
def test_a_forward_run_resumes_to_the_same_record_and_replays(tiny_experiment, tmp_path, monkeypatch):
    from hpo.data import pipeline
    exp = _forward_experiment(tiny_experiment)
    whole = Guided().run(exp, seed=0)
    assert whole["guided"]["mode"] == "forward" and whole["guided"]["forward"] == ["learning_rate"]
    assert whole["guided"]["discount"] == 1.0
    assert whole["guided"]["meta_updates"] == 8 and whole["guided"]["meta_learning_rate"] == pytest.approx(0.05)
    tuning = Guided().tuning(exp)
    assert whole["compute_steps"] == pytest.approx(8 * step_cost(tuning, exp.batch_size))
    schedule = read_schedule(os.path.join(exp.model_dir, whole["schedule_file"]))
    assert len(np.unique(schedule["learning_rate"])) == 8  # moved by every step

    # Killed at step 5 (the checkpoint at step 3 holds the tangent): resumed, the same run.
    real = pipeline.train_and_guide_batches
    other = _forward_experiment(tiny_experiment, f"MODEL_DIR = '{tmp_path / 'resumed'}'")
    monkeypatch.setattr(pipeline, "train_and_guide_batches", lambda *a, **k: DiesAt(real(*a, **k), at=5))
    with pytest.raises(KeyboardInterrupt):
        Guided().run(other, seed=0)
    monkeypatch.setattr(pipeline, "train_and_guide_batches", real)
    resumed = Guided().run(other, seed=0)
    again = read_schedule(os.path.join(other.model_dir, resumed["schedule_file"]))
    for k in schedule:
        np.testing.assert_array_equal(again[k], schedule[k])
    assert resumed["dev_loss"] == whole["dev_loss"]

    # A run without its tangents after the resume would learn another schedule: they matter.
    import hpo.method.hyper
    monkeypatch.setattr(hpo.method.hyper.Tuning, "init", _init_with_noise(hpo.method.hyper.Tuning.init))
    noisy = Guided().run(_forward_experiment(tiny_experiment, f"MODEL_DIR = '{tmp_path / 'noisy'}'"), seed=0)
    assert noisy["learned_schedule"]["learning_rate"] != whole["learned_schedule"]["learning_rate"]

    replayed = Fixed(replay=os.path.join(exp.model_dir, whole["schedule_file"])).run(exp, seed=0)
    assert replayed["dev_loss"] == pytest.approx(whole["dev_loss"], rel=1e-3)


def _init_with_noise(init):
    def noisy(self, train_steps, carry=None):
        tuner = init(self, train_steps, carry)
        if hasattr(tuner, "tangent"):
            tuner = tuner._replace(tangent=jax.tree.map(
                lambda z: z + 1.0 if jnp.issubdtype(z.dtype, jnp.inexact) else z, tuner.tangent))
        return tuner
    return noisy


def test_travel_gives_the_meta_learning_rate_at_any_budget(tiny_experiment):
    for steps, horizon, expected in ((10, 1, 10), (20, 1, 20), (10, 4, 2)):  # windows at 0 and 4 (8 + 4 > 10)
        exp = tiny_experiment(f"TRAIN_STEPS = {steps}", f"Guided.horizon = {horizon}", "Guided.travel = 3.0")
        strategy = Guided()
        tuning = strategy.tuning(exp)
        assert tuning.meta_updates(0, steps) == expected
        assert strategy.meta_learning_rate(tuning, exp) == pytest.approx(3.0 / expected)
    exp = tiny_experiment("TRAIN_STEPS = 10", "Guided.update_every = 5")
    assert Guided().meta_learning_rate(Guided().tuning(exp), exp) == pytest.approx(2.0 / 2)  # the default travel
    exp = tiny_experiment("TRAIN_STEPS = 10", "Guided.meta_learning_rate = 0.25", "Guided.travel = 3.0")
    assert Guided().meta_learning_rate(Guided().tuning(exp), exp) == 0.25  # given: used as it is


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "backward"}, "Guided.mode must be one of"),
    ({"mode": "forward", "discount": 1.5}, "Guided.discount must be in"),
    ({"mode": "forward", "forward": ["beta1"]}, "'beta1' is not tuned"),
    ({"mode": "forward", "forward": []}, "names no tuned value"),
    ({"mode": "forward", "horizon": 4}, "Guided.horizon applies to Guided.mode = 'one_step'"),
    ({"discount": 0.9}, "Guided.discount applies to Guided.mode = 'forward'"),
    ({"travel": 0.0}, "Guided.travel must be positive"),
    ({"meta_optimizer": "sgd"}, "give Guided.meta_learning_rate"),
    ({"meta_learning_rate": -1.0}, "Guided.meta_learning_rate must be positive"),
])
def test_bad_forward_settings_are_one_line_errors(kwargs, match):
    import gin
    gin.clear_config()  # no bindings of an earlier test's parse
    with pytest.raises(UserError, match=match):
        Guided(**kwargs)


def test_step_cost_counts_each_tangent():
    specs = {k: hyper.DEFAULT_SPECS[k] for k in NAMES}
    base = dict(specs=specs, fixed_values={}, meta_tx=optax.adam(1.0), guide_batch_size=8)
    one = hyper.Tuning(**base, mode="forward", forward=["learning_rate"])
    three = hyper.Tuning(**base, mode="forward", forward=NAMES, update_every=2)
    assert step_cost(one, 8) > step_cost(hyper.Tuning(**base), 8)
    assert step_cost(three, 8) - step_cost(hyper.Tuning(**base, mode="forward", forward=NAMES), 8) \
        == pytest.approx(-0.5 * 1.0)  # the guide pass every other step
