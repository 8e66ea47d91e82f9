"""The guided step on the built-in engine: `hpo.method.hyper.Tuning.step` around `apply_update`.

`guided_update` is the strategy's step function; `train_window` is a tuned window of
`Guided.horizon` updates; `guide_loss` is one update's guide loss as a function of the raw
values (the reference the hyper-gradient tests differentiate).
"""

import jax

from hpo.engine.trainer import apply_update
from hpo.method.hyper import Tuning, activate_all, step_metrics


def guide_loss(raw, state, batch, *, model, tx, schedule, specs, fixed_values):
    """G(λ(raw)) on the built-in engine: the guide loss after one training update taken with λ(raw).

    Returns (G, (params, opt_state, training loss, values)).
    """
    values = {**fixed_values, **activate_all(specs, raw)}
    guide, (params, opt_state, loss) = _lookahead(values, state, batch, model=model, tx=tx, schedule=schedule)
    return guide, (params, opt_state, loss, values)


def _lookahead(values, state, batch, *, model, tx, schedule):
    params, opt_state, loss = apply_update(state, batch["train"], values, model=model, tx=tx, schedule=schedule)
    guide = model.mean_loss(params, batch["guide"], train=False)  # no dropout, no smoothing
    return guide, (params, opt_state, loss)


def train_window(state, batches, hparams, *, model, tx, schedule):
    """`apply_update` on each of the stacked `batches` in turn, all with the values `hparams`:
    (params, opt_state, last loss). Rematerialised, so differentiating it keeps one step's
    activations at a time (and each step's parameters and optimizer state)."""
    @jax.checkpoint
    def one(carry, batch):
        step, params, opt_state = carry
        at = state.replace(step=step, params=params, opt_state=opt_state)
        params, opt_state, loss = apply_update(at, batch, hparams, model=model, tx=tx, schedule=schedule)
        return (step + 1, params, opt_state), loss

    (_, params, opt_state), losses = jax.lax.scan(one, (state.step, state.params, state.opt_state), batches)
    return params, opt_state, losses[-1]


def guided_update(state, batch, *, model, tx, schedule, tuning: Tuning, tune: bool = True):
    """One guided step of the built-in engine on {"train": batch, "guide": batch}: (new state, metrics);
    `tune=False`: a step between tuned ones (`Tuning.step`). A tuned step with `tuning.horizon` K > 1
    is a window: K stacked train batches (and guide batches, of which the last is used), K steps.

    Under jit with a data-sharded batch the guide loss is the global mean, so
    its gradient is already averaged across devices.
    """
    window = tune and tuning.horizon > 1
    train = train_window if window else apply_update

    def update(carry, values):
        params, opt_state = carry
        params, opt_state, loss = train(state.replace(params=params, opt_state=opt_state), batch["train"], values,
                                        model=model, tx=tx, schedule=schedule)
        return (params, opt_state), loss

    guide_batch = jax.tree.map(lambda x: x[-1], batch["guide"]) if window else batch["guide"]
    guide_loss = lambda carry: model.mean_loss(carry[0], guide_batch, train=False)  # noqa: E731
    guide, (params, opt_state), loss, values, tuner, grads = tuning.step(
        state.tuner, state.step, (state.params, state.opt_state), update, guide_loss, tune)
    metrics = {"loss": loss, **step_metrics(guide, values, grads, schedule(state.step))}
    steps = tuning.horizon if window else 1
    return state.replace(step=state.step + steps, params=params, opt_state=opt_state, tuner=tuner), metrics
