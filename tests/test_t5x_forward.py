"""Forward mode on T5X (`Guided.mode = 'forward'`): hyper-gradients through every T5X update, the
tangents partitioned as what they shadow, and the paper's regime (t5x/paper.gin) end to end.
The helpers and the module's other T5X runs are in test_t5x.py."""

import csv
import functools
import os

import numpy as np
import pytest

from test_t5x import FORWARD, T5X, _finish, _hpo, _records
from test_t5x_hypergradients import _assert_finite_differences, _t5x_guided_trainer

pytestmark = pytest.mark.usefixtures("t5x_gin")  # conftest: T5X's configurables forgotten after each test


@pytest.mark.integration
def test_the_papers_regime_on_t5x_in_forward_mode(tmp_path):
    """t5x/paper.gin: LAMB from optax (its values in the train state), the reference's warm-up
    schedule as T5X's learning_rate_fn, six values guided, the learning rate in forward mode."""
    model_dir = str(tmp_path / "paper")
    _finish(_hpo("run", *T5X, "--gin_file=t5x/paper.gin", "--strategy=guided", FORWARD, f"--model_dir={model_dir}"))
    guided = _records(model_dir)["guided"]
    six = ["learning_rate", "beta1", "beta2", "eps", "weight_decay", "label_smoothing"]
    assert guided["guided"]["tune"] == six and guided["guided"]["forward"] == ["learning_rate"]
    assert guided["t5x"]["optimizer"] == "OptaxWrapper" and "name = 'lamb'" in guided["gin_config"]
    # Per step: the update, the learning rate's tangent (2), label smoothing's through the update (2), the guide.
    assert guided["compute_steps"] == 4 * (1 + 2 + 2 + 1)
    with open(os.path.join(model_dir, guided["schedule_file"])) as f:
        rows = list(csv.DictReader(f))
    for name in six:  # the warm-up's first step has rate 0 (no hyper-gradient); then every value moves
        assert float(rows[-1][name]) != float(rows[1][name]), name


# T5X's own finetune.gin with hpo's translation tasks, at test.gin's sizes.


@pytest.mark.integration
def test_t5x_forward_hypergradients_equal_the_gradient_through_every_update(tmp_path):
    """Forward mode on T5X (μ = 1), all three values forward: after a plain step and a tuned one,
    each hyper-gradient is that of the guide loss through both of T5X's updates (reverse mode
    through them, as `Guided.horizon = 2` takes it); the tangents shadow the train state and
    survive T5X's checkpoint format. At μ = 0 the step is the one-step method's, bit for bit."""
    import jax
    from hpo.method import hyper
    from hpo.t5x_backend import optim as t5x_optim, trainer as t5x_trainer

    one_layer = ["network.T5Config.num_encoder_layers = 1", "network.T5Config.num_decoder_layers = 1"]
    names = ["learning_rate", "decay_rate", "label_smoothing"]
    trainer, state, batch = _t5x_guided_trainer(tmp_path, bindings=one_layer, mode="forward", forward=names)
    tuning, model, specs = trainer._tuning, trainer._model, trainer._tuning.specs
    trains, guides = [batch() for _ in range(2)], [batch() for _ in range(2)]
    combined = [{**t, **{t5x_trainer.GUIDE + k: v for k, v in g.items()}} for t, g in zip(trains, guides)]
    raw = t5x_optim.tuner_of(state).raw
    tangent = t5x_optim.tuner_of(state).tangent
    assert set(tangent) == set(names)
    params_and_inner = jax.tree.structure(t5x_optim.carry_of(state))
    assert all(jax.tree.structure(t) == params_and_inner for t in tangent.values())

    after_plain, _ = jax.jit(functools.partial(trainer.step, tune=False))(state, combined[0])
    moved = t5x_optim.tuner_of(after_plain).tangent["learning_rate"]
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(moved[0]))  # carried through the update
    restored = after_plain.restore_state(jax.tree.map(np.zeros_like, after_plain.state_dict()))
    restored = restored.restore_state(after_plain.state_dict())  # T5X's checkpoint format, '/'-joined keys
    for a, b in zip(jax.tree.leaves(t5x_optim.tuner_of(restored).tangent), jax.tree.leaves(
            t5x_optim.tuner_of(after_plain).tangent)):
        np.testing.assert_array_equal(a, b)
    after, metrics = jax.jit(trainer.step)(after_plain, combined[1])
    reported = {k: float(metrics[f"hypergrad/{k}"].compute()) for k in specs}

    @jax.jit
    def through_both(raw):
        values, updated = {**tuning.fixed_values, **hyper.activate_all(specs, raw)}, state
        for train in trains:
            updated, _ = trainer.update(updated, train, values)
        total, weight = t5x_trainer.cross_entropy(model, updated.params, guides[-1])
        return total / weight

    grads = jax.grad(through_both)(raw)
    for name in specs:
        assert reported[name] == pytest.approx(float(grads[name]), rel=2e-3, abs=1e-7), name
    _assert_finite_differences(through_both, raw, {"learning_rate": reported["learning_rate"]}, h=5e-3)

    zero, _, _ = _t5x_guided_trainer(tmp_path, bindings=one_layer, mode="forward", forward=names, discount=0.0)
    one_step, _, _ = _t5x_guided_trainer(tmp_path, bindings=one_layer)
    for a, b in zip(jax.tree.leaves(jax.jit(zero.step)(state, combined[0])[0]),
                    jax.tree.leaves(jax.jit(one_step.step)(state, combined[0])[0])):
        np.testing.assert_array_equal(a, b)


def test_t5x_tangents_are_partitioned_as_what_they_shadow():
    """The partition rule of the tuner's state: each tangent has the axes of the parameters and of
    the optimizer state it is the derivative of; the tuner itself is replicated."""
    import jax
    import optax
    from jax.sharding import PartitionSpec
    from hpo.method import hyper
    from hpo.t5x_backend import optim as t5x_optim
    from t5x import optimizers

    params = {"dense": {"kernel": np.zeros((256, 512), np.float32)}, "scale": np.zeros((512,), np.float32)}
    axes = {"dense": {"kernel": PartitionSpec("embed", "mlp")}, "scale": PartitionSpec("embed")}
    tuning = hyper.Tuning(specs={"learning_rate": hyper.DEFAULT_SPECS["learning_rate"]}, fixed_values={},
                          meta_tx=optax.adam(1e-2), mode="forward", forward=["learning_rate"])
    tx = t5x_optim.carrying_tuner(optax.inject_hyperparams(optax.adam)(learning_rate=1.0), tuning, 4)
    state = tx.init(params)
    derived = optimizers.OptaxStatePartitionRules.derive_optax_logical_axes(state, axes)
    tangent_params, tangent_inner = derived.tangent["learning_rate"]
    assert tangent_params == axes
    assert tangent_inner == derived.inner
    assert derived.inner.inner_state[0].mu == axes  # Adam's first moment follows the parameters
    assert all(leaf is None for leaf in jax.tree.leaves(derived.tuner, is_leaf=lambda x: x is None))
