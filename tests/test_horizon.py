"""Long-horizon guided tuning (`Guided.horizon` K): the hyper-gradient through K training steps."""

import functools
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import DiesAt
from hpo.engine import guided_step
from hpo.engine.trainer import apply_update, init_state, train_step
from hpo.flow.schedules import read_schedule
from hpo.method import hyper, optim
from hpo.strategies.guided import Guided, step_cost
from test_guided import LENGTHS, _batch, _model

pytestmark = pytest.mark.integration  # conftest: the test tiers


def _stacked(seeds):
    batches = [_batch(s) for s in seeds]
    return jax.tree.map(lambda *rows: np.stack(rows), *batches)


def _adam_state(model, dtype):
    gin.clear_config()  # OptimizerConfig is configurable: no bindings of an earlier test's parse
    config = optim.OptimizerConfig(name="adam")
    values = {**config.hparams(), "learning_rate": 1.0, "beta1": 0.9, "label_smoothing": 0.1}
    tx = optim.make_optimizer(config, values)
    plain = {k: jnp.asarray(v, dtype) for k, v in values.items()}
    schedule = lambda step: jnp.asarray(0.01, dtype)  # noqa: E731
    state = init_state(model, tx, 0, LENGTHS)
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, schedule=schedule))  # (op by op is slower)
    for i in range(2):  # non-trivial optimizer moments
        state, _ = step(state, _batch(i), plain)
    return state, tx, schedule, values


def test_a_window_of_one_step_is_the_one_step_lookahead():
    model = _model()
    state, tx, schedule, values = _adam_state(model, jnp.float32)
    hparams = {k: jnp.float32(v) for k, v in values.items()}
    one = jax.jit(functools.partial(apply_update, model=model, tx=tx, schedule=schedule))
    window = jax.jit(functools.partial(guided_step.train_window, model=model, tx=tx, schedule=schedule))
    expected, got = one(state, _batch(5), hparams), window(state, _stacked([5]), hparams)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    specs = {"learning_rate": hyper.DEFAULT_SPECS["learning_rate"]}
    fixed = {k: v for k, v in values.items() if k not in specs}
    raw = {"learning_rate": jnp.float32(0.0)}
    reference = jax.grad(lambda r: guided_step.guide_loss(r, state, {"train": _batch(5), "guide": _batch(6)}, model=model,
                                                    tx=tx, schedule=schedule, specs=specs, fixed_values=fixed)[0])

    def through_window(r):
        params, _, _ = guided_step.train_window(state, _stacked([5]), {**fixed, **hyper.activate_all(specs, r)},
                                          model=model, tx=tx, schedule=schedule)
        return model.mean_loss(params, _batch(6), train=False)

    assert float(jax.grad(through_window)(raw)["learning_rate"]) == pytest.approx(
        float(reference(raw)["learning_rate"]), rel=1e-5)


def test_window_hypergradient_equals_finite_differences():
    """K = 3: the gradient of the guide loss after three updates, through all three, in float64."""
    names = ["learning_rate", "beta1", "label_smoothing"]
    with jax.enable_x64(True):
        model = _model("float64")
        state, tx, schedule, values = _adam_state(model, jnp.float64)
        specs = {k: hyper.DEFAULT_SPECS[k] for k in names}
        fixed = {k: v for k, v in values.items() if k not in specs}
        batches = _stacked([5, 6, 7])

        def loss(raw):
            hparams = {**fixed, **hyper.activate_all(specs, raw)}
            params, _, _ = guided_step.train_window(state, batches, hparams, model=model, tx=tx, schedule=schedule)
            return model.mean_loss(params, _batch(9), train=False)

        raw = {k: jnp.asarray(specs[k].inverse(values[k]), jnp.float64) for k in names}
        grads = jax.grad(loss)(raw)
        h = 1e-4
        for k in names:
            fd = (float(loss({**raw, k: raw[k] + h})) - float(loss({**raw, k: raw[k] - h}))) / (2 * h)
            assert fd != 0.0, k
            assert abs(float(grads[k]) - fd) <= 1e-4 * abs(fd) + 1e-9, (k, float(grads[k]), fd)
        # It is not the one-step lookahead's gradient: the earlier updates matter.
        one = jax.grad(lambda r: guided_step.guide_loss(r, state, {"train": _batch(5), "guide": _batch(9)}, model=model,
                                                  tx=tx, schedule=schedule, specs=specs, fixed_values=fixed)[0])(raw)
        assert abs(float(one["learning_rate"]) - float(grads["learning_rate"])) > 1e-3 * abs(float(grads["learning_rate"]))


def _horizon_experiment(tiny_experiment, *extra):
    return tiny_experiment("TRAIN_STEPS = 10", "Experiment.checkpoint_every = 3", "Experiment.log_every = 1",
                           "Guided.horizon = 4", "Guided.meta_learning_rate = 0.05", *extra)


def test_a_guided_run_with_a_horizon_moves_values_once_per_window_and_resumes(tiny_experiment, tmp_path,
                                                                              monkeypatch):
    from hpo.data import pipeline
    exp = _horizon_experiment(tiny_experiment)
    whole = Guided().run(exp, seed=0)
    lr = read_schedule(os.path.join(exp.model_dir, whole["schedule_file"]))["learning_rate"]
    # Windows of steps 0-3 and 4-7 (values fixed within, moved after); 8 and 9 do not make a window.
    assert len(set(lr[0:4])) == 1 and len(set(lr[4:8])) == 1 and lr[4] != lr[0]
    assert lr[8] == lr[9] != lr[4]
    assert whole["guided"]["horizon"] == 4
    tuning = Guided(horizon=4).tuning(exp)
    assert whole["compute_steps"] == pytest.approx(10 * step_cost(tuning, exp.batch_size))
    assert step_cost(tuning, exp.batch_size) == pytest.approx(1 + (1 + 3 * 3) / 4)

    # Killed inside the second window (the checkpoint is at its start, step 4): resumed, the same run.
    real = pipeline.train_and_guide_batches
    other = _horizon_experiment(tiny_experiment, f"MODEL_DIR = '{tmp_path / 'resumed'}'")
    monkeypatch.setattr(pipeline, "train_and_guide_batches", lambda *a, **k: DiesAt(real(*a, **k), at=6))
    with pytest.raises(KeyboardInterrupt):
        Guided().run(other, seed=0)
    assert os.listdir(os.path.join(other.run_dir("guided", 0), "checkpoints"))
    monkeypatch.setattr(pipeline, "train_and_guide_batches", real)
    resumed = Guided().run(other, seed=0)
    again = read_schedule(os.path.join(other.model_dir, resumed["schedule_file"]))["learning_rate"]
    np.testing.assert_array_equal(again, lr)
    assert resumed["dev_loss"] == whole["dev_loss"]
