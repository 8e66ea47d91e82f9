"""A bare Flax + optax training step: the yardstick the engine's step is timed against.

Same flax module, initial parameters, dropout, loss (cross-entropy plus
z-loss, no label smoothing) and Adafactor settings as `hpo.engine.trainer.train_step`
under the fixed strategy, but written the way a minimal training script
would be: a constant learning rate baked into `optax.adafactor` (no
`inject_hyperparams`, no schedule in the graph), a tuple of arrays for the
state, one `jax.jit` with the state donated.
"""

import functools
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import optax

Carry = Tuple[Any, Any, jax.Array, jax.Array]  # params, optimizer state, dropout key, step


def reference_optimizer(exp) -> optax.GradientTransformation:
    """hpo.method.optim's Adafactor for `exp`, with the learning rate fixed at the schedule's step-0 value.

    The default schedule (`constant * rsqrt_decay`, 10k warm-up steps) is flat
    at 0.01 for the first 10k steps, so a constant is what a bare loop would use.
    """
    if exp.optimizer.name != "adafactor":
        raise ValueError(f"the reference loop mirrors Adafactor only, not '{exp.optimizer.name}'")
    values = exp.optimizer.hparams()  # decay_rate, eps, learning_rate multiplier, optional beta1 / weight_decay
    learning_rate = float(exp.schedule(0)) * values["learning_rate"]
    return optax.adafactor(
        learning_rate, decay_rate=values["decay_rate"], momentum=values.get("beta1"), eps=values["eps"],
        dtype_momentum=None, weight_decay_rate=values.get("weight_decay"),
        clipping_threshold=exp.optimizer.clipping_threshold, multiply_by_parameter_scale=True,
        min_dim_size_to_factor=128)


def reference_init(tx: optax.GradientTransformation, params, dropout_rng: jax.Array) -> Carry:
    """Initial state from copies of `params` and the dropout key (the engine donates its own buffers)."""
    params, dropout_rng = jax.device_put((params, dropout_rng), may_alias=False)
    return params, jax.jit(tx.init)(params), dropout_rng, jnp.zeros([], jnp.int32)


def reference_step(module, tx: optax.GradientTransformation, z_loss: float):
    """jit(step)(carry, batch) -> (carry, mean token loss), the carry donated."""

    def loss_fn(params, batch, rng):
        logits = module.apply(
            {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"], encoder_segment_ids=batch.get("encoder_segment_ids"),
            decoder_segment_ids=batch.get("decoder_segment_ids"), enable_dropout=True, rngs={"dropout": rng})
        token_loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["decoder_target_tokens"])
        token_loss += z_loss * jnp.square(jax.nn.logsumexp(logits, axis=-1))
        weights = batch["decoder_loss_weights"]
        return jnp.sum(token_loss * weights) / jnp.maximum(jnp.sum(weights), 1.0)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(carry: Carry, batch):
        params, opt_state, rng, count = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, jax.random.fold_in(rng, count))
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, rng, count + 1), loss

    return step
