import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hpo.engine.models.losses import cross_entropy


def _case():
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 11))
    targets = jnp.array([[3, 4, 1, 0, 0], [5, 1, 0, 0, 0]])
    return logits, targets, (targets > 0).astype(jnp.float32)


def test_plain_cross_entropy_matches_optax():
    logits, targets, weights = _case()
    total, count = cross_entropy(logits, targets, weights)
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    assert float(count) == 5
    np.testing.assert_allclose(total, jnp.sum(ref * weights), rtol=1e-5)


def test_label_smoothing_matches_optax_smooth_labels_up_to_a_constant():
    logits, targets, weights = _case()
    alpha, vocab = 0.1, logits.shape[-1]
    total, _ = cross_entropy(logits, targets, weights, label_smoothing=alpha)
    # T5X's smoothing puts alpha/(V-1) on every wrong class and subtracts the entropy floor.
    soft = jax.nn.one_hot(targets, vocab) * (1 - alpha - alpha / (vocab - 1)) + alpha / (vocab - 1)
    ref = optax.softmax_cross_entropy(logits, soft)
    floor = -((1 - alpha) * np.log(1 - alpha) + alpha * np.log(alpha / (vocab - 1)))
    np.testing.assert_allclose(total, jnp.sum((ref - floor) * weights), rtol=1e-5)


def test_z_loss_adds_log_z_squared():
    logits, targets, weights = _case()
    base, _ = cross_entropy(logits, targets, weights)
    with_z, _ = cross_entropy(logits, targets, weights, z_loss=0.5)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    np.testing.assert_allclose(with_z - base, 0.5 * jnp.sum(log_z ** 2 * weights), rtol=1e-5)


@pytest.mark.integration
def test_label_smoothing_is_differentiable():
    logits, targets, weights = _case()
    grad = jax.grad(lambda a: cross_entropy(logits, targets, weights, label_smoothing=a)[0])(0.1)
    assert np.isfinite(grad) and grad != 0
    # A perfect prediction costs nothing whatever the smoothing (the floor is subtracted).
    assert float(cross_entropy(logits, targets, weights, label_smoothing=0.0)[0]) > 0
