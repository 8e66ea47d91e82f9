"""Hyper-gradients through T5X's update: hpo's GuidedTrainer against finite
differences (one step, and a window of steps), and the cadence of tuned and plain steps that
T5X's loop takes. Split from test_t5x.py (runs of `hpo run` on T5X live there)."""

import functools

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("t5x_gin")  # conftest: T5X's configurables forgotten after each test


def _t5x_guided_trainer(tmp_path, horizon=1, bindings=(), groups=None, **modes):
    """hpo's GuidedTrainer on test.gin's T5X model (learning rate, Adafactor's decay rate and
    label smoothing tuned; with `groups`, their multipliers too), a state two steps in, and a
    maker of random batches. `modes`: Tuning's mode, forward and discount."""
    import jax
    import jax.numpy as jnp
    import optax
    from t5x import optimizers, train_state as train_state_lib
    from hpo.cli import t5x_gin
    from hpo.method import groups as param_groups, hyper
    from hpo.t5x_backend import optim as t5x_optim, trainer as t5x_trainer
    import gin
    import t5x.train

    t5x_gin.parse(["t5x/test.gin"], [f"MODEL_DIR = '{tmp_path}'", *bindings])
    train_args = gin.get_bindings(t5x.train.train)
    model, partitioner = train_args["model"], train_args["partitioner"]
    specs = {"learning_rate": hyper.DEFAULT_SPECS["learning_rate"],
             "decay_rate": hyper.DEFAULT_SPECS["decay_rate"],
             "label_smoothing": hyper.HparamSpec("exp", init=0.1)}
    specs.update({param_groups.rate_name(g): hyper.DEFAULT_SPECS["learning_rate"] for g in groups or ()})
    tuning = hyper.Tuning(specs=specs, fixed_values={"eps": 1e-20}, meta_tx=optax.adam(1e-2), horizon=horizon,
                          groups=groups, **modes)
    model.optimizer_def = optimizers.OptaxWrapper(t5x_optim.carrying_tuner(
        param_groups.chain_rates(model.optimizer_def.optax_optimizer, groups), tuning, 8))
    rng = np.random.RandomState(0)

    def batch():
        targets = rng.randint(2, 300, (8, 16)).astype(np.int32)
        targets[:, 12:] = 0
        return {"encoder_input_tokens": rng.randint(2, 300, (8, 16)).astype(np.int32),
                "decoder_input_tokens": np.pad(targets, ((0, 0), (1, 0)))[:, :-1],
                "decoder_target_tokens": targets, "decoder_loss_weights": (targets > 0).astype(np.float32)}

    shapes = {k: v.shape for k, v in batch().items()}
    variables = model.get_initial_variables(jax.random.PRNGKey(0), shapes, {k: jnp.int32 for k in shapes})
    state = train_state_lib.FlaxOptimTrainState.create(model.optimizer_def, variables)
    trainer = t5x_trainer.GuidedTrainer(
        model=model, train_state=state, partitioner=partitioner, eval_names=[], summary_dir=None,
        train_state_axes=None, rng=jax.random.PRNGKey(1), learning_rate_fn=lambda step: 0.1,
        num_microbatches=None, tuning=tuning)
    update = jax.jit(trainer.update)
    for _ in range(2):  # Adafactor's second-moment decay has no effect on the first step
        state, _ = update(state, batch(), tuning.initial_values())
    return trainer, state, batch


def _assert_finite_differences(guide_loss, raw, reported, h=2e-2):
    """Each reported hyper-gradient equals the central difference of `guide_loss` (a function of
    the raw values) in that raw value; T5X's network keeps float32 parameters: h well above rounding."""
    for name, value in reported.items():
        up = float(guide_loss({**raw, name: raw[name] + h}))
        down = float(guide_loss({**raw, name: raw[name] - h}))
        fd = (up - down) / (2 * h)
        # The estimate's own error: float32 rounding of the two losses (a few ulps of the loss,
        # summed over many tokens), divided by 2h; plus 2% for the O(h^2) truncation.
        rounding = 8 * np.finfo(np.float32).eps * max(abs(up), abs(down)) / (2 * h)
        assert abs(fd) > 3 * rounding, (name, fd, rounding)  # the check below can tell a wrong gradient
        assert abs(value - fd) <= 2e-2 * abs(fd) + rounding, (name, value, fd, rounding)


@pytest.mark.integration
def test_t5x_hypergradients_equal_finite_differences(tmp_path):
    """The guided step through T5X's update (learning rate, Adafactor's decay rate and label
    smoothing, the last second order through T5X's custom-gradient cross-entropy), with per-group
    multipliers (`Guided.groups`: an optax transformation after T5X's optimizer, its values in the
    train state) that scale their own parameters' updates alone."""
    import jax
    from hpo.method import groups as param_groups, hyper
    from hpo.t5x_backend import optim as t5x_optim, trainer as t5x_trainer

    groups = param_groups.PRESETS["encoder_decoder"]
    trainer, state, batch = _t5x_guided_trainer(tmp_path, groups=groups)
    tuning, model, specs = trainer._tuning, trainer._model, trainer._tuning.specs
    train, guide = batch(), batch()
    combined = {**train, **{t5x_trainer.GUIDE + k: v for k, v in guide.items()}}
    raw = t5x_optim.tuner_of(state).raw
    values = {**tuning.fixed_values, **hyper.activate_all(specs, raw)}
    # What T5X's checkpoints save and restore ('/'-joined state keys): the multipliers' names survive.
    restored = state.restore_state(jax.tree.map(np.zeros_like, state.state_dict()))
    restored = restored.restore_state(state.state_dict())
    same = functools.partial(np.array_equal, equal_nan=True)  # the tuner's last guide loss: NaN before a step
    assert jax.tree.all(jax.tree.map(same, t5x_optim.tuner_of(restored), t5x_optim.tuner_of(state)))

    @jax.jit
    def guide_loss(raw):
        updated, _ = trainer.update(state, train, {**tuning.fixed_values, **hyper.activate_all(specs, raw)})
        total, weight = t5x_trainer.cross_entropy(model, updated.params, guide)
        return total / weight

    _, metrics = jax.jit(trainer.step)(state, combined)
    assert set(specs) == {"learning_rate", "decay_rate", "label_smoothing", *map(param_groups.rate_name, groups)}
    _assert_finite_differences(guide_loss, raw, {k: float(metrics[f"hypergrad/{k}"].compute()) for k in specs})
    # A step between tuned ones (update_every > 1) is T5X's update with the current values.
    plain, _ = jax.jit(functools.partial(trainer.step, tune=False))(state, combined)
    update = jax.jit(trainer.update)
    expected = update(state, train, values)[0].params
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(plain.param_states.tuner.raw["learning_rate"], raw["learning_rate"])
    # The encoder's multiplier doubled: the encoder's updates double, every other parameter's stays.
    doubled = update(state, train, {**values, "learning_rate/encoder": 2.0})[0].params
    flat = lambda params: jax.tree_util.tree_flatten_with_path(params)[0]  # noqa: E731
    for (keys, before), (_, one), (_, two) in zip(flat(state.params), flat(expected), flat(doubled)):
        path = param_groups.path_of(keys)
        if path.startswith("encoder/"):
            np.testing.assert_allclose(two - before, 2 * (one - before), rtol=1e-4, atol=1e-6)
            assert np.any(one != before), path
        else:
            np.testing.assert_array_equal(two, one)


@pytest.mark.integration
def test_t5x_window_hypergradients_equal_finite_differences(tmp_path):
    """A window of 2 T5X updates with the same values (`Guided.horizon = 2`, one scanned and
    rematerialised program): its state is the two updates', and its hyper-gradients are those of
    the guide loss after both, as differentiating the two updates written out gives them."""
    import jax
    from hpo.method import hyper
    from hpo.t5x_backend import trainer as t5x_trainer

    one_layer = ["network.T5Config.num_encoder_layers = 1", "network.T5Config.num_decoder_layers = 1"]
    trainer, state, batch = _t5x_guided_trainer(tmp_path, horizon=2, bindings=one_layer)  # less to compile
    tuning, model, specs = trainer._tuning, trainer._model, trainer._tuning.specs
    trains, guides = [batch() for _ in range(2)], [batch() for _ in range(2)]
    window = tuple({**t, **{t5x_trainer.GUIDE + k: v for k, v in g.items()}} for t, g in zip(trains, guides))
    raw = state.param_states.tuner.raw

    def updates_and_guide_loss(raw):
        values, updated = {**tuning.fixed_values, **hyper.activate_all(specs, raw)}, state
        for train in trains:
            updated, _ = trainer.update(updated, train, values)
        total, weight = t5x_trainer.cross_entropy(model, updated.params, guides[-1])
        return total / weight, updated.params

    after, metrics = jax.jit(trainer.window)(state, window)
    assert len(metrics) == 2 and int(after.step) == int(state.step) + 2
    reported = {k: float(metrics[-1][f"hypergrad/{k}"].compute()) for k in specs}
    (guide_loss, unrolled), grads = jax.jit(jax.value_and_grad(updates_and_guide_loss, has_aux=True))(raw)
    # The same parameters as the two updates, up to float32 rounding (relative to the update's size:
    # Adafactor divides by second moments, so two programs' roundings differ most in small entries).
    flat = lambda params: jax.flatten_util.ravel_pytree(params)[0]  # noqa: E731
    difference = np.linalg.norm(flat(after.params) - flat(unrolled))
    assert difference <= 1e-4 * np.linalg.norm(flat(unrolled) - flat(state.params)), difference
    assert reported["learning_rate"] < 0 and abs(reported["decay_rate"]) > 0
    for name in specs:
        assert reported[name] == pytest.approx(float(grads[name]), rel=1e-3, abs=1e-7), name
    # And that derivative is the loss's own: a central difference (Adafactor clips updates, which
    # kinks the loss about 0.01-0.02 away in the raw rate; h stays inside).
    _assert_finite_differences(jax.jit(lambda raw: updates_and_guide_loss(raw)[0]), raw,
                               {"learning_rate": reported["learning_rate"]}, h=5e-3)
    assert after.param_states.tuner.raw["learning_rate"] != raw["learning_rate"]  # moved once, at its end


def _t5x_loop(cadence, source, state, first, end):
    """What T5X's `Trainer.train` does with the step function: a batch, a step, per step."""
    batches, metrics = cadence.start(source, first, end), []
    for _ in range(first, end):
        state, m = cadence(state, next(batches))
        metrics.append(m)
    return state, metrics


@pytest.mark.parametrize("update_every, train_steps, chunks, expected", [
    (1, 5, [(0, 2), (2, 4), (4, 5)], "w0 w1 w2 w3 p4"),  # the last window would pass the end
    (1, 5, [(0, 3), (3, 5)], "w0 w1 p2 w3 w4"),  # nor does one cross a train() call
    (4, 8, [(0, 8)], "w0 w1 p2 p3 w4 w5 p6 p7")])
def test_t5x_cadence_takes_a_window_of_horizon_batches(update_every, train_steps, chunks, expected):
    import optax
    from hpo.method import hyper
    from hpo.t5x_backend.trainer import _Cadence
    tuning = hyper.Tuning(specs={}, fixed_values={}, meta_tx=optax.adam(1e-2), horizon=2,
                          update_every=update_every)
    window = lambda state, batches: (state + batches, [f"w{b}" for b in batches])  # noqa: E731
    plain = lambda state, batch: (state + (batch,), f"p{batch}")  # noqa: E731
    cadence, source, state, metrics = _Cadence(tuning, window, plain, train_steps), iter(range(100)), (), []
    for first, end in chunks:
        state, more = _t5x_loop(cadence, source, state, first, end)
        metrics += more
    assert state == tuple(range(train_steps)) and next(source) == train_steps  # each batch once, in order
    assert " ".join(metrics) == expected


def test_t5x_cadence_takes_tuned_steps_every_update_every_steps():
    """T5X's loop calls one step function: hpo's picks the tuned or the plain program by step."""
    import optax
    from hpo.method import hyper
    from hpo.t5x_backend.trainer import _Cadence
    tuning = hyper.Tuning(specs={}, fixed_values={}, meta_tx=optax.adam(1e-2), update_every=3)
    cadence = _Cadence(tuning, lambda state, batch: ("tuned", state), lambda state, batch: ("plain", state))
    cadence.next_step = 4  # as after resuming at step 4
    assert [cadence(step, None) for step in range(4, 11)] == [
        ("plain", 4), ("plain", 5), ("tuned", 6), ("plain", 7), ("plain", 8), ("tuned", 9), ("plain", 10)]
