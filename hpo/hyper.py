"""Hyper-parameters as learnable scalars: parameterisations and the guided update.

Each tuned hyper-parameter k has a raw unconstrained value r_k and an
activation λ_k = act_k(r_k) that keeps it in range (shared/docs/guided-hpo.md).
`guided_update` is one step of the method: a training update with the current
values, the guide loss of the updated model, its gradient with respect to the
raw values (through the optimizer update), and a meta-optimizer step on them.
"""

import dataclasses
import functools
from typing import Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from hpo.errors import UserError
from hpo.trainer import apply_update

PARAMETERISATIONS = ("exp", "sigmoid", "softplus", "identity")


@dataclasses.dataclass(frozen=True)
class HparamSpec:
    """How one hyper-parameter is learned. `init` None: the experiment's configured value."""
    parameterisation: str
    floor: float = 0.0
    ceiling: float = 1.0
    steepness: float = 1.0
    init: Optional[float] = None

    def __post_init__(self):
        if self.parameterisation not in PARAMETERISATIONS:
            raise UserError(f"unknown parameterisation '{self.parameterisation}' "
                            f"(choose from {', '.join(PARAMETERISATIONS)})")
        if self.steepness == 0 or (self.parameterisation == "sigmoid" and self.ceiling <= self.floor):
            raise UserError("a tuned hyper-parameter needs steepness != 0 and ceiling > floor")

    def activate(self, raw):
        x = self.steepness * raw
        if self.parameterisation == "exp":
            return self.floor + jnp.exp(x)
        if self.parameterisation == "sigmoid":
            return self.floor + (self.ceiling - self.floor) * jax.nn.sigmoid(x)
        if self.parameterisation == "softplus":
            return self.floor + jax.nn.softplus(x)
        return x

    def inverse(self, value: float) -> float:
        """The raw value whose activation is `value`, moved off saturating boundaries.

        A value on a boundary (weight decay 0 under a sigmoid, the reference's
        trap) would have an infinite raw value and a zero gradient forever;
        it starts a hair inside instead.
        """
        value = float(self.clip_inside(value))
        if self.parameterisation == "exp":
            x = jnp.log(value - self.floor)
        elif self.parameterisation == "sigmoid":
            p = (value - self.floor) / (self.ceiling - self.floor)
            x = jnp.log(p) - jnp.log1p(-p)
        elif self.parameterisation == "softplus":
            x = jnp.log(jnp.expm1(value - self.floor))
        else:
            x = value
        return float(x) / self.steepness

    def clip_inside(self, value: float) -> float:
        span = (self.ceiling - self.floor) if self.parameterisation == "sigmoid" else 1.0
        low = self.floor + 1e-9 * span if self.parameterisation != "identity" else -float("inf")
        high = self.ceiling - 1e-9 * span if self.parameterisation == "sigmoid" else float("inf")
        return min(max(value, low), high)


# The reference's parameterisations and ranges (init None: the configured value).
DEFAULT_SPECS = {
    "learning_rate": HparamSpec("exp", floor=0.0, init=1.0),
    "beta1": HparamSpec("sigmoid", 0.0, 1.0, init=0.9),
    "beta2": HparamSpec("sigmoid", 0.0, 1.0, init=0.999),
    "decay_rate": HparamSpec("sigmoid", 0.0, 1.0, init=0.8),
    "eps": HparamSpec("sigmoid", 1e-10, 1.0, init=1e-6),
    "weight_decay": HparamSpec("sigmoid", 0.0, 1.0),
    "label_smoothing": HparamSpec("exp", floor=0.0, init=1e-5),
}


def activate_all(specs: Mapping[str, HparamSpec], raw: Mapping[str, jnp.ndarray]) -> Dict[str, jnp.ndarray]:
    return {k: specs[k].activate(raw[k]) for k in specs}


def sanitize(grads, bound: float = 1e3, clip: Optional[float] = None):
    """NaN -> 0 and ±inf -> ±bound, then an optional clip to [-clip, clip]."""
    def fix(g):
        g = jnp.nan_to_num(g, nan=0.0, posinf=bound, neginf=-bound)
        return jnp.clip(g, -clip, clip) if clip else g
    return jax.tree.map(fix, grads)


def guide_loss(raw, state, batch, *, model, tx, schedule, specs, fixed_values):
    """G(λ(raw)): the guide loss after one training update taken with λ(raw).

    Returns (G, (params, opt_state, training loss, values)). θ_t and the
    optimizer state are constants here (one-step truncation).
    """
    values = {**fixed_values, **activate_all(specs, raw)}
    params, opt_state, loss = apply_update(state, batch["train"], values, model=model, tx=tx, schedule=schedule)
    guide = model.mean_loss(params, batch["guide"], train=False)  # no dropout, no smoothing
    return guide, (params, opt_state, loss, values)


def guided_update(state, batch, *, model, tx, schedule, specs, fixed_values, meta_tx,
                  update_every: int = 1, bound: float = 1e3, clip: Optional[float] = None):
    """One guided step on {"train": batch, "guide": batch}: (new state, metrics).

    Under jit with a data-sharded batch the guide loss is the global mean, so
    its gradient is already averaged across devices.
    """
    tuner = state.tuner
    loss_of_raw = functools.partial(guide_loss, state=state, batch=batch, model=model, tx=tx,
                                    schedule=schedule, specs=specs, fixed_values=fixed_values)
    (guide, (params, opt_state, loss, values)), grads = jax.value_and_grad(loss_of_raw, has_aux=True)(tuner["raw"])
    nonfinite = {k: tuner["nonfinite"][k] + (~jnp.isfinite(grads[k])).astype(jnp.int32) for k in specs}
    grads = sanitize(grads, bound, clip)
    updates, meta_state = meta_tx.update(grads, tuner["meta_state"], tuner["raw"])
    stepped = optax.apply_updates(tuner["raw"], updates)
    due = state.step % update_every == 0
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(due, n, o), new, old)  # noqa: E731
    new_tuner = {
        "raw": keep(stepped, tuner["raw"]),
        "meta_state": keep(meta_state, tuner["meta_state"]),
        "nonfinite": nonfinite,  # steps whose hyper-gradient was NaN/inf (then sanitised): shown in the record
        # The learned schedule: the values each step was taken with.
        "trajectory": tuner["trajectory"].at[state.step].set(jnp.stack([values[k] for k in specs])),
    }
    metrics = {"loss": loss, "guide_loss": guide,
               "learning_rate": schedule(state.step) * values.get("learning_rate", 1.0)}
    metrics.update({f"hparams/{k}": values[k] for k in values})
    metrics.update({f"hypergrad/{k}": grads[k] for k in specs})
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, tuner=new_tuner), metrics


def init_tuner(specs: Mapping[str, HparamSpec], inits: Mapping[str, float], meta_tx, train_steps: int):
    raw = {k: jnp.asarray(specs[k].inverse(inits[k]), jnp.float32) for k in specs}
    return {"raw": raw, "meta_state": meta_tx.init(raw),
            "nonfinite": {k: jnp.zeros([], jnp.int32) for k in specs},
            "trajectory": jnp.zeros((train_steps, len(specs)), jnp.float32)}
