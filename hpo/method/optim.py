"""Optimizers and learning-rate schedules, all through optax.

Every tunable hyper-parameter is injected with `optax.inject_hyperparams`, so
the train step writes the values of the current step into the optimizer state
(`set_hparams`) instead of baking them into a closure. That one mechanism
serves constant values (fixed), replayed schedules and values the guided
strategy differentiates through.

The learning rate a step uses is `schedule(step) * hparams["learning_rate"]`:
the hyper-parameter is a *multiplier* on the configured base schedule (1.0 by
default), as in the guided method.
"""

import dataclasses
import inspect
import math
from typing import Callable, Mapping, Optional

import gin
import jax
import jax.numpy as jnp
import optax

from hpo.core.errors import UserError, finite_number, non_negative_int, positive_int
from hpo.method import groups as param_groups

# What optax.inject_hyperparams' optimizers keep their values in (the first, of optax >= 0.1.8).
INJECTED_STATES = (optax.InjectStatefulHyperparamsState, optax.InjectHyperparamsState)

# Canonical names of the hyper-parameters a strategy may set or tune.
OPTIMIZER_HPARAMS = ("learning_rate", "beta1", "beta2", "decay_rate", "eps", "weight_decay")
LOSS_HPARAMS = ("label_smoothing",)


def _adafactor(learning_rate, decay_rate=0.8, beta1=None, eps=1e-20, weight_decay=None,
               clipping_threshold=1.0):
    # T5X's defaults (factored second moments, parameter-scale updates, no
    # momentum) but for eps: T5X's 1e-30 makes the hyper-gradient of decay_rate
    # NaN in float32 wherever a row got no gradient (d rsqrt(v)/dv at v = 1e-30
    # overflows); 1e-20 keeps it finite and is as negligible next to real g^2.
    # Momentum is kept in the parameters' dtype (float32 unless they are float64).
    return optax.adafactor(
        learning_rate, decay_rate=decay_rate, momentum=beta1, eps=eps, dtype_momentum=None,
        weight_decay_rate=weight_decay, clipping_threshold=clipping_threshold,
        multiply_by_parameter_scale=True, min_dim_size_to_factor=128)


# Inside the square root of Adam's second moment: without it the derivative of
# sqrt(v) at v = 0 (a parameter that got no gradient) is infinite, and the
# hyper-gradient of beta2 is NaN (the reference's "beta2 was unusable").
EPS_ROOT = 1e-16


def _adam(learning_rate, beta1=0.9, beta2=0.999, eps=1e-8):
    return optax.adam(learning_rate, b1=beta1, b2=beta2, eps=eps, eps_root=EPS_ROOT)


def _adamw(learning_rate, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-4):
    return optax.adamw(learning_rate, b1=beta1, b2=beta2, eps=eps, eps_root=EPS_ROOT, weight_decay=weight_decay)


def _lamb(learning_rate, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0):
    return optax.lamb(learning_rate, b1=beta1, b2=beta2, eps=eps, eps_root=EPS_ROOT, weight_decay=weight_decay)


_FACTORIES = {"adafactor": _adafactor, "adam": _adam, "adamw": _adamw, "lamb": _lamb}
_ACCEPTS = {
    "adafactor": ("learning_rate", "decay_rate", "beta1", "eps", "weight_decay"),
    "adam": ("learning_rate", "beta1", "beta2", "eps"),
    "adamw": ("learning_rate", "beta1", "beta2", "eps", "weight_decay"),
    "lamb": ("learning_rate", "beta1", "beta2", "eps", "weight_decay"),
}


# Where each hyper-parameter's values make sense: (lowest, highest, whether the highest is excluded).
_RANGES = {
    "learning_rate": (0.0, math.inf, False),  # a multiplier on the schedule (0: parameters stay)
    "beta1": (0.0, 1.0, True),
    "beta2": (0.0, 1.0, True),
    "decay_rate": (0.0, math.inf, False),
    "eps": (0.0, math.inf, False),
    "weight_decay": (0.0, math.inf, False),
    "label_smoothing": (0.0, 1.0, True),
}


def check_hparam(name: str, value, who: str) -> float:
    """`value` as a float, or UserError if hyper-parameter `name` cannot take it (`who` says
    where it was set, e.g. 'Fixed.hparams')."""
    value = finite_number(value, f"{who}: {name}")
    low, high, open_high = _RANGES.get(name, (-math.inf, math.inf, False))
    if value < low or value > high or (open_high and value == high):
        wanted = f"in [{low:g}, {high:g})" if open_high else f">= {low:g}"
        raise UserError(f"{who}: {name} must be {wanted}, got {value:g}")
    return value


def accepts(optimizer: str, hparam: str) -> bool:
    """Whether `optimizer` has the injectable hyper-parameter `hparam`."""
    return hparam in _ACCEPTS[optimizer]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Which optimizer, and its hyper-parameters (None: the optimizer's default).

    `learning_rate` is the multiplier on the schedule; `beta1` for Adafactor
    turns on momentum (T5X's default is none).
    """
    name: str = "adafactor"
    learning_rate: float = 1.0
    beta1: Optional[float] = None
    beta2: Optional[float] = None
    decay_rate: Optional[float] = None
    eps: Optional[float] = None
    weight_decay: Optional[float] = None
    clipping_threshold: float = 1.0  # Adafactor's update clipping

    def __post_init__(self):
        if self.name not in _FACTORIES:
            raise UserError(f"unknown optimizer '{self.name}' (choose from {', '.join(_FACTORIES)})")
        for key in OPTIMIZER_HPARAMS:
            value = getattr(self, key)
            if value is not None and key not in _ACCEPTS[self.name]:
                raise UserError(f"optimizer '{self.name}' has no hyper-parameter '{key}'")
            if value is not None:
                check_hparam(key, value, "OptimizerConfig")
        if self.clipping_threshold is not None and finite_number(
                self.clipping_threshold, "OptimizerConfig.clipping_threshold") <= 0:
            raise UserError(f"OptimizerConfig.clipping_threshold must be positive (or None), "
                            f"got {self.clipping_threshold}")

    def hparams(self) -> dict:
        """The injected hyper-parameters with their configured or default values."""
        defaults = _factory_defaults(self.name)
        out = {}
        for key in _ACCEPTS[self.name]:
            value = getattr(self, key)
            value = defaults.get(key) if value is None else value
            if value is not None:
                out[key] = float(value)
        return out


def _factory_defaults(name: str) -> dict:
    sig = inspect.signature(_FACTORIES[name])
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def make_optimizer(config: OptimizerConfig, hparams: Optional[Mapping[str, float]] = None,
                   groups: Optional[Mapping[str, str]] = None) -> optax.GradientTransformation:
    """An injected-hyper-parameter optax optimizer, chained with `groups`' learning-rate
    multipliers (`hpo.method.groups.chain_rates`) if any.

    `hparams` (default: `config.hparams()`) names which hyper-parameters exist
    in the state; an optimizer hyper-parameter that a strategy tunes must be
    present here, e.g. Adafactor's `beta1`.
    """
    values = dict(config.hparams() if hparams is None else hparams)
    kwargs = {k: v for k, v in values.items() if k in _ACCEPTS[config.name]}
    extra = {"clipping_threshold": config.clipping_threshold} if config.name == "adafactor" else {}
    factory = optax.inject_hyperparams(_FACTORIES[config.name], static_args=tuple(extra))
    return param_groups.chain_rates(factory(**kwargs, **extra), groups)


def set_hparams(opt_state, values: Mapping[str, jnp.ndarray]):
    """Returns `opt_state` (of `make_optimizer`'s optimizer) with its injected hyper-parameters
    and group multipliers overwritten by `values`.

    Keys absent from the optimizer (e.g. `label_smoothing`) are ignored, so the
    same dict of a step's values can be passed to loss and optimizer.
    """
    def set_in(state):
        if not isinstance(state, INJECTED_STATES):
            return state
        hyperparams = dict(state.hyperparams)
        for key, value in values.items():
            if key in hyperparams:
                hyperparams[key] = jnp.asarray(value, hyperparams[key].dtype)
        return state._replace(hyperparams=hyperparams)

    injected = jax.tree.map(set_in, opt_state, is_leaf=lambda x: isinstance(x, INJECTED_STATES))
    return param_groups.set_rates(injected, values)


@gin.configurable
def learning_rate_schedule(factors: str = "constant * rsqrt_decay",
                           base_learning_rate: float = 1.0,
                           warmup_steps: int = 1000,
                           total_steps: int = 10000,
                           decay_factor: float = 0.5,
                           steps_per_decay: int = 20000,
                           warmup_fraction: Optional[float] = None) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """T5X's learning-rate factors: the schedule is the product of the named factors.

    constant: base_learning_rate; linear_warmup: min(1, step / warmup_steps);
    rsqrt_decay: 1 / sqrt(max(step, warmup_steps)); linear_decay and
    cosine_decay: from 1 at the end of warm-up down to 0 at total_steps;
    decay_every: decay_factor ** (step // steps_per_decay).
    `warmup_fraction` (in [0, 1]), when set, replaces warmup_steps by that share
    of total_steps, so one config keeps its shape at any budget.
    """
    if not isinstance(factors, str):
        raise UserError(f"learning_rate_schedule.factors must be a string such as 'constant * rsqrt_decay', "
                        f"got {factors!r}")
    names = [n.strip() for n in factors.split("*")]
    unknown = [n for n in names if n not in _FACTOR_FNS]
    if unknown:
        raise UserError(f"unknown learning-rate factor '{unknown[0]}' (choose from {', '.join(_FACTOR_FNS)})")
    positive_int(total_steps, "TRAIN_STEPS", "learning_rate_schedule.total_steps")
    if warmup_fraction is not None:
        if not 0 <= finite_number(warmup_fraction, "learning_rate_schedule.warmup_fraction") <= 1:
            raise UserError(f"learning_rate_schedule.warmup_fraction must be in [0, 1], got {warmup_fraction}")
        warmup_steps = round(warmup_fraction * total_steps)
    non_negative_int(warmup_steps, "learning_rate_schedule.warmup_steps")
    finite_number(base_learning_rate, "learning_rate_schedule.base_learning_rate")
    args = dict(base=base_learning_rate, warmup=warmup_steps, total=total_steps,
                decay_factor=decay_factor, steps_per_decay=steps_per_decay)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        value = jnp.ones([], jnp.float32)
        for name in names:
            value = value * _FACTOR_FNS[name](step, **args)
        return value

    return schedule


def _progress(step, warmup, total):
    return jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)


_FACTOR_FNS = {
    "constant": lambda step, base, **_: jnp.asarray(base, jnp.float32),
    "linear_warmup": lambda step, warmup, **_: jnp.minimum(1.0, step / max(warmup, 1)),
    "rsqrt_decay": lambda step, warmup, **_: jax.lax.rsqrt(jnp.maximum(step, max(warmup, 1))),
    "linear_decay": lambda step, warmup, total, **_: 1.0 - _progress(step, warmup, total),
    "cosine_decay": lambda step, warmup, total, **_: 0.5 * (1.0 + jnp.cos(math.pi * _progress(step, warmup, total))),
    "decay_every": lambda step, decay_factor, steps_per_decay, **_: decay_factor ** jnp.floor(step / steps_per_decay),
}

