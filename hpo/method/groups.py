"""Per-group learning-rate multipliers (`Guided.groups`): which parameters each group holds, and its scaling.

A group is a regular expression searched (`re.search`) in a parameter's path,
its flax keys joined by '/' (`encoder/layers_0/mlp/wi_0/kernel`). Group g's
multiplier is the hyper-parameter `learning_rate/g`; it scales the optimizer's
update of that group's parameters: an optax transformation chained after the
optimizer (`chain_rates`), reading the step's multipliers from its state, where
the engines' steps write them (`set_rates`) before each update. The learning rate is the
last factor of Adam's, AdamW's and LAMB's optax chains, so there it is exactly
a per-group learning rate. Adafactor's chain scales by the rate before its
momentum and adds weight decay after it: with `beta1` or `weight_decay` set,
the multiplier also scales the momentum built from earlier steps and the decay
term, which the global rate does not. Parameters in no group keep the global
multiplier alone.
"""

import re
from typing import Dict, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from hpo.core.errors import UserError

PREFIX = "learning_rate/"
PRESETS = {
    "embeddings_encoder_decoder": {"embeddings": "^(shared_embedding|token_embedder)/",
                                   "encoder": "^encoder/", "decoder": "^decoder/"},
    "encoder_decoder": {"encoder": "^encoder/", "decoder": "^decoder/"},
}


def rate_name(group: str) -> str:
    """The hyper-parameter of group `group`'s multiplier (a column of hparams.csv)."""
    return PREFIX + group


def is_group_rate(name: str) -> bool:
    return name.startswith(PREFIX)


def resolve(groups, who: str = "Guided.groups") -> Dict[str, str]:
    """`Guided.groups` or `who` (a preset name, or a mapping name -> regex) as a checked mapping; {} for None."""
    if groups is None:
        return {}
    if isinstance(groups, str):
        if groups not in PRESETS:
            raise UserError(f"{who}: unknown preset '{groups}' (choose from {', '.join(PRESETS)}, "
                            f"or give {{name: regex}})")
        return dict(PRESETS[groups])
    if not isinstance(groups, Mapping) or not groups:
        raise UserError(f"{who} must be a preset name or a non-empty mapping of group names to "
                        f"regexes over parameter paths, got {groups!r}")
    for name, pattern in groups.items():
        if not isinstance(name, str) or not re.fullmatch(r"\w+", name):
            raise UserError(f"{who}: a group name must be letters, digits or '_', got {name!r}")
        if not isinstance(pattern, str):
            raise UserError(f"{who}['{name}']: expected a regex string, got {pattern!r}")
        try:
            re.compile(pattern)
        except re.error as e:
            raise UserError(f"{who}['{name}']: not a regex ({e})") from None
    return dict(groups)


def path_of(keys) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in keys)


def labels(groups: Mapping[str, str], params, who: str = "Guided.groups") -> Dict[str, Optional[str]]:
    """Parameter path -> its group (None: in no group). UserError for a parameter in two groups
    or a group that holds no parameter."""
    paths = [path_of(keys) for keys, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    found = {}
    for path in paths:
        hits = [g for g, pattern in groups.items() if re.search(pattern, path)]
        if len(hits) > 1:
            raise UserError(f"{who}: parameter '{path}' is in groups {' and '.join(hits)}; "
                            f"a parameter may be in one group only")
        found[path] = hits[0] if hits else None
    empty = [g for g in groups if g not in found.values()]
    if empty:
        raise UserError(f"{who}['{empty[0]}']: the regex {groups[empty[0]]!r} matches no parameter "
                        f"(paths look like '{paths[0]}')")
    return found


def scale_updates(updates, groups: Mapping[str, str], hparams: Mapping[str, jnp.ndarray]):
    """`updates` with each group's parameters' updates times its multiplier `hparams['learning_rate/<g>']`."""
    found = labels(groups, updates)

    def scale(keys, update):
        group = found[path_of(keys)]
        return update if group is None else update * jnp.asarray(hparams[rate_name(group)], update.dtype)

    return jax.tree_util.tree_map_with_path(scale, updates)


class GroupRatesState(NamedTuple):
    """Group name -> the multiplier of the coming update (the trainer sets it each step)."""
    rates: Dict[str, jnp.ndarray]


def scale_by_group_rates(groups: Mapping[str, str]) -> optax.GradientTransformation:
    """`scale_updates` as an optax transformation whose state holds the multipliers (initially 1, in
    the parameters' widest float type: the precision the scaled updates have)."""

    def init(params):
        # (T5X also calls it on trees of axis names, which have no dtype.)
        dtypes = [x.dtype for x in jax.tree.leaves(params) if hasattr(x, "dtype")]
        dtype = jnp.result_type(*dtypes) if dtypes else jnp.float32
        return GroupRatesState({g: jnp.ones([], dtype) for g in groups})

    def update(updates, state, params=None):
        del params
        return scale_updates(updates, groups, {rate_name(g): r for g, r in state.rates.items()}), state

    return optax.GradientTransformation(init, update)


def chain_rates(tx: optax.GradientTransformation, groups) -> optax.GradientTransformation:
    """`tx`, then each group's updates scaled by its multiplier (`set_rates` sets them); `tx` itself
    without groups."""
    return optax.chain(tx, scale_by_group_rates(groups)) if groups else tx


def set_rates(opt_state, values: Mapping[str, jnp.ndarray]):
    """`opt_state` with the step's group multipliers (`learning_rate/<g>` in `values`) in its
    `scale_by_group_rates` state; unchanged where it has none."""
    rates = rates_of(values)
    if not rates:
        return opt_state

    def set_in(state):
        if not isinstance(state, GroupRatesState):
            return state
        return GroupRatesState({g: jnp.asarray(rates[g], r.dtype) for g, r in state.rates.items()})

    return jax.tree.map(set_in, opt_state, is_leaf=lambda x: isinstance(x, GroupRatesState))


def rates_of(values: Mapping[str, jnp.ndarray]) -> Dict[str, jnp.ndarray]:
    """The group multipliers among a step's `values`, by group name."""
    return {k[len(PREFIX):]: v for k, v in values.items() if is_group_rate(k)}
