import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hpo.core.errors import UserError
from hpo.method import optim


def _params():
    return {"w": jnp.arange(12.0).reshape(4, 3) / 10, "b": jnp.ones(3)}


def _grads():
    return jax.tree.map(lambda p: jnp.sin(p) + 0.5, _params())


@pytest.mark.parametrize("name", ["adafactor", "adam", "adamw", "lamb"])
def test_hyperparameters_are_injected_not_baked_in(name):
    config = optim.OptimizerConfig(name=name, beta1=0.9 if name == "adafactor" else None)
    tx = optim.make_optimizer(config)
    state = tx.init(_params())
    assert set(state.hyperparams) == set(config.hparams())
    # The same state with a doubled learning rate gives a different update.
    small, _ = tx.update(_grads(), optim.set_hparams(state, {"learning_rate": 0.01}), _params())
    large, _ = tx.update(_grads(), optim.set_hparams(state, {"learning_rate": 0.02}), _params())
    np.testing.assert_allclose(large["w"], 2 * small["w"], rtol=1e-5)


def test_adam_matches_optax_adam():
    config = optim.OptimizerConfig(name="adam", beta1=0.8, beta2=0.99, eps=1e-7)
    ours = optim.make_optimizer(config)
    ref = optax.adam(0.1, b1=0.8, b2=0.99, eps=1e-7, eps_root=optim.EPS_ROOT)
    s1, s2 = ours.init(_params()), ref.init(_params())
    s1 = optim.set_hparams(s1, {"learning_rate": 0.1, "label_smoothing": 0.3})  # unknown keys ignored
    u1, _ = ours.update(_grads(), s1, _params())
    u2, _ = ref.update(_grads(), s2, _params())
    np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)


def test_adafactor_defaults_are_t5x_but_for_a_float32_safe_eps():
    hp = optim.OptimizerConfig().hparams()
    assert hp == {"learning_rate": 1.0, "decay_rate": 0.8, "eps": 1e-20}


def test_bad_optimizer_settings_are_user_errors():
    with pytest.raises(UserError, match="unknown optimizer"):
        optim.OptimizerConfig(name="sgdx")
    with pytest.raises(UserError, match="no hyper-parameter 'beta2'"):
        optim.OptimizerConfig(name="adafactor", beta2=0.99)


def test_schedule_factors():
    rsqrt = optim.learning_rate_schedule("constant * rsqrt_decay", 1.0, warmup_steps=100, total_steps=1000)
    assert float(rsqrt(0)) == pytest.approx(0.1)
    assert float(rsqrt(400)) == pytest.approx(0.05)
    warm = optim.learning_rate_schedule("constant * linear_warmup * linear_decay", 2.0,
                                        warmup_steps=10, total_steps=110)
    assert float(warm(5)) == pytest.approx(1.0)
    assert float(warm(60)) == pytest.approx(1.0)
    assert float(warm(110)) == pytest.approx(0.0)
    cos = optim.learning_rate_schedule("constant * cosine_decay", 1.0, warmup_steps=0, total_steps=100)
    assert float(cos(50)) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(UserError, match="unknown learning-rate factor"):
        optim.learning_rate_schedule("constant * bogus")
