"""The optimizer side of T5X runs: injected hyper-parameters, the guided tuner, partition rules.

A T5X train state holds the optimizer state of `OptaxWrapper(tx)`. Values a
strategy sets live there, in the state of `optax.inject_hyperparams(...)`, so
they are checkpointed, restored and partitioned with everything else (T5X's
`OptaxWrapper.apply_gradient` drops hyper-parameters passed to it). The
guided strategy's tuner (raw values, meta-optimizer state, the schedule so far)
rides in the same state, in a `TunedState` around the user's optimizer state.
Per-group learning-rate multipliers (`Guided.groups`) are a transformation
chained after the user's optimizer (`param_groups.chain_rates`), their values in its state.
"""

from typing import Any, Dict, NamedTuple, Optional

import gin
import jax
import optax
from t5x import adafactor as t5x_adafactor
from t5x import optimizers as t5x_optimizers

from hpo.core.errors import UserError
from hpo.flow import records
from hpo.method import groups as param_groups, hyper, optim

INJECTED_STATES = optim.INJECTED_STATES
# Our names for hyper-parameters -> the argument names optax factories give them.
OPTAX_NAMES = {
    "learning_rate": ("learning_rate",),
    "beta1": ("beta1", "b1", "momentum"),
    "beta2": ("beta2", "b2"),
    "decay_rate": ("decay_rate",),
    "eps": ("eps",),
    "weight_decay": ("weight_decay", "weight_decay_rate"),
}
USE_OPTAX = "use the optax one: --gin_file=t5x/optax_adafactor.gin"


@gin.configurable(module="hpo_t5x")
def optax_optimizer(name: str = "adafactor", **hparams) -> optax.GradientTransformation:
    """hpo's optax optimizer (`hpo.method.optim`) for a T5X model's `OptaxWrapper`.

    Every hyper-parameter is injected; its learning rate is set each step by
    hpo's trainers to `Trainer.learning_rate_fn(step)` times the learning-rate
    multiplier, as T5X's own Adafactor takes its rate from that function.
    """
    return optim.make_optimizer(optim.OptimizerConfig(name=name, **hparams))


class TunedState(NamedTuple):
    """The user's optimizer state, the guided tuner beside it, and in forward mode the tangents of
    (parameters, `inner`) with respect to each forward value (partitioned as what they shadow)."""
    inner: Any
    tuner: Any
    tangent: Any = None


def carrying_tuner(tx: optax.GradientTransformation, tuning, train_steps: int) -> optax.GradientTransformation:
    """`tx` whose state also holds the tuner of `tuning` (`hyper.Tuning.init`, a schedule of
    `train_steps` rows); updates pass it through unchanged."""

    tuner = _stored(tuning.init(train_steps))  # here: T5X traces `init`, and the tuner's inits are host values

    def init(params):
        inner = tx.init(params)
        return TunedState(inner, tuner, _stored(tuning.zero_tangents((params, inner))))

    def update(updates, state, params=None):
        updates, inner = tx.update(updates, state.inner, params)
        return updates, state._replace(inner=inner)

    return optax.GradientTransformation(init, update)


def set_group_rates(train_state, values: Dict[str, Any]):
    """The train state with the step's group multipliers (`learning_rate/<g>` in `values`) in its
    optimizer's `param_groups.chain_rates` state; unchanged when the optimizer has no groups."""
    if not param_groups.rates_of(values):
        return train_state
    return with_param_states(train_state, param_groups.set_rates(train_state.param_states, values))


def tuner_of(train_state):
    """The tuner `hyper.Tuning.step` takes: the stored one, with its forward-mode tangents (stored
    apart, partitioned as what they shadow) if there are any."""
    states = train_state.param_states
    tuner = _rekeyed(states.tuner, lambda k: k.replace(_SLASH, "/"))
    if states.tangent:
        return hyper.with_tangent(tuner, _rekeyed(states.tangent, lambda k: k.replace(_SLASH, "/")))
    return tuner


def with_tuner(train_state, tuner):
    states = train_state.param_states._replace(tuner=_stored(hyper.without_tangent(tuner)))
    if isinstance(tuner, hyper.ForwardTunerState):
        states = states._replace(tangent=_stored(tuner.tangent))
    return with_param_states(train_state, states)


def carry_of(train_state):
    """What the hyper-parameters act on: (parameters, the user's optimizer state)."""
    return train_state.params, train_state.param_states.inner


def with_carry(train_state, carry):
    params, inner = carry
    state = train_state.replace_params(params)
    return with_param_states(state, state.param_states._replace(inner=inner))


# T5X's checkpoints name state entries by their keys joined with '/' (OptaxWrapper.state_dict):
# a group's multiplier, 'learning_rate/<g>', is stored as 'learning_rate:<g>' in the tuner.
_SLASH = ":"


def _stored(tuner):
    return _rekeyed(tuner, lambda k: k.replace("/", _SLASH))


def _rekeyed(tree, rename):
    """`tree` with every dict key (at any depth, through optax's NamedTuple states) renamed."""
    if isinstance(tree, dict):
        return {rename(k): _rekeyed(v, rename) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_rekeyed(v, rename) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(_rekeyed(v, rename) for v in tree)
    return tree


def with_param_states(train_state, param_states):
    optimizer = train_state._optimizer  # noqa: SLF001  (T5X's train state offers no setter)
    return train_state.replace(_optimizer=optimizer.replace(state=optimizer.state.replace(param_states=param_states)))


# --- injected hyper-parameters ---------------------------------------------------------

def _find_injected(optax_state):
    leaves, treedef = jax.tree_util.tree_flatten(optax_state, is_leaf=lambda x: isinstance(x, INJECTED_STATES))
    found = [i for i, leaf in enumerate(leaves) if isinstance(leaf, INJECTED_STATES)]
    return leaves, treedef, (found[0] if found else None)


def injected_names(optimizer_def) -> Dict[str, str]:
    """Our name -> the optax name, for every hyper-parameter the optimizer injects."""
    if not isinstance(optimizer_def, t5x_optimizers.OptaxWrapper):
        return {}
    leaves, _, index = _find_injected(optimizer_def.optax_optimizer.init({}))
    if index is None:
        return {}
    present = leaves[index].hyperparams
    return {ours: next(n for n in names if n in present)
            for ours, names in OPTAX_NAMES.items() if any(n in present for n in names)}


def injected_values(optimizer_def) -> Dict[str, float]:
    """The configured value of each injected hyper-parameter, by our names."""
    names = injected_names(optimizer_def)
    if not names:
        return {}
    leaves, _, index = _find_injected(optimizer_def.optax_optimizer.init({}))
    return {ours: records.as_float(leaves[index].hyperparams[theirs]) for ours, theirs in names.items()}


def set_values(train_state, names: Dict[str, str], values: Dict[str, Any], learning_rate):
    """The train state with the step's values (and its learning rate) written into the injected state."""
    if not names:
        return train_state
    leaves, treedef, index = _find_injected(train_state.param_states)
    injected = leaves[index]
    hyperparams = dict(injected.hyperparams)
    for ours, theirs in names.items():
        value = learning_rate if ours == "learning_rate" else values.get(ours)
        if value is not None:
            hyperparams[theirs] = jax.numpy.asarray(value, hyperparams[theirs].dtype)
    leaves[index] = injected._replace(hyperparams=hyperparams)
    return with_param_states(train_state, jax.tree_util.tree_unflatten(treedef, leaves))


def check_settable(optimizer_def, name: str, who: str) -> None:
    """UserError unless hpo's T5X trainers can set hyper-parameter `name` of `optimizer_def`."""
    if name in optim.LOSS_HPARAMS:
        return
    if isinstance(optimizer_def, t5x_adafactor.Adafactor):
        if name == "learning_rate":
            return  # passed to Adafactor.apply_gradient with every step
        raise UserError(f"{who}: T5X's adafactor.Adafactor keeps '{name}' out of the train state; {USE_OPTAX}")
    names = injected_names(optimizer_def)
    if name not in names:
        kind = type(optimizer_def).__name__
        raise UserError(f"{who}: the T5X optimizer ({kind}) does not inject '{name}' "
                        f"(injected: {', '.join(names) or 'none'}); wrap it in optax.inject_hyperparams "
                        f"or {USE_OPTAX}")


def require_optax(optimizer_def, who: str) -> None:
    if not isinstance(optimizer_def, t5x_optimizers.OptaxWrapper):
        raise UserError(f"{who}: the T5X optimizer must be an optax one (OptaxWrapper) to carry the tuned "
                        f"values in the train state, not {type(optimizer_def).__name__}; {USE_OPTAX}")


# --- partition rules T5X lacks for current optax ---------------------------------------

def _replicated(tree):
    return jax.tree.map(lambda _: None, tree)


def _derive(state, params_axes):
    return t5x_optimizers.OptaxStatePartitionRules.derive_optax_logical_axes(state, params_axes)


def _injected_rule(state, params_axes):
    # Hyper-parameters replicated; the inner state follows the parameters' axes.
    if isinstance(state, optax.InjectStatefulHyperparamsState):
        return optax.InjectStatefulHyperparamsState(
            count=None, hyperparams=_replicated(state.hyperparams),
            hyperparams_states=_replicated(state.hyperparams_states),
            inner_state=_derive(state.inner_state, params_axes))
    return optax.InjectHyperparamsState(count=None, hyperparams=_replicated(state.hyperparams),
                                        inner_state=_derive(state.inner_state, params_axes))


def _factored_rule(state, params_axes):
    # Row and column statistics are vectors (replicated); an unfactored second
    # moment has its parameter's shape and axes.
    def v_axes(axes, v) -> Optional[Any]:
        shape = getattr(v, "shape", ())
        return axes if axes is not None and len(shape) == len(axes) and shape != (1,) else None
    return optax.FactoredState(count=None, v_row=_replicated(state.v_row), v_col=_replicated(state.v_col),
                               v=jax.tree.map(v_axes, params_axes, state.v))


def _tuned_rule(state, params_axes):
    # A tangent has the axes of what it shadows: the parameters and the inner state.
    inner = _derive(state.inner, params_axes)
    return TunedState(inner=inner, tuner=_replicated(state.tuner),
                      tangent={k: (params_axes, inner) for k in (state.tangent or {})})


def _group_rates_rule(state, params_axes):
    return param_groups.GroupRatesState(rates=_replicated(state.rates))


def register_partition_rules() -> None:
    rules = t5x_optimizers.OptaxStatePartitionRules._RULES  # noqa: SLF001  (T5X's registry of rules)
    rules.setdefault(param_groups.GroupRatesState, _group_rates_rule)
    rules.setdefault(optax.InjectStatefulHyperparamsState, _injected_rule)
    rules.setdefault(optax.FactoredState, _factored_rule)
    rules.setdefault(TunedState, _tuned_rule)


register_partition_rules()
