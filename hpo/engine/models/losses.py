"""Token-level cross-entropy with label smoothing and z-loss (as in T5X)."""

import jax
import jax.numpy as jnp


def cross_entropy(logits, targets, weights, label_smoothing=0.0, z_loss=0.0):
    """Returns (sum of weighted per-token losses, sum of weights).

    Label smoothing spreads `label_smoothing` of the mass uniformly over the
    vocabulary; the smoothed loss minus its minimum (the confidence entropy)
    keeps a perfect prediction at loss 0, as in T5X. `label_smoothing` may be a
    traced value: the guided strategy differentiates through it. z-loss
    penalises log(Z)^2 to keep the softmax normaliser near 1.
    """
    vocab = logits.shape[-1]
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    normalizing = -(_xlogx(confidence) + (vocab - 1) * _xlogx(low))
    soft_targets = jax.nn.one_hot(targets, vocab) * (confidence - low) + low
    log_z = jax.nn.logsumexp(logits, axis=-1)
    log_probs = logits - log_z[..., None]
    loss = -jnp.sum(soft_targets * log_probs, axis=-1) - normalizing
    loss = loss + z_loss * jnp.square(log_z)
    return jnp.sum(loss * weights), jnp.sum(weights)


def _xlogx(x):
    # x * log(x) with 0 log 0 = 0, safe for gradients at 0.
    safe = jnp.where(x > 0, x, 1.0)
    return jnp.where(x > 0, x * jnp.log(safe), 0.0)
