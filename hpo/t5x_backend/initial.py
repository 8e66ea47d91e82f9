"""Where a T5X run starts when its directory has no checkpoint yet: from scratch, from the
user's initial checkpoint (T5X's `finetune.gin`), or from parameters in memory (GLUE
fine-tuning of a pretrained run).

hpo checkpoints the input pipeline with every run (exact resume), and T5X then
also restores a pipeline from the *initial* checkpoint: one that has none (every
public T5X checkpoint) fails, and one of another task's pipeline fails or, worse,
sets the position. So hpo restores the initial checkpoint itself, with the
configured optimizer and without a pipeline, and T5X resumes from the run's own
checkpoints as usual. A guided run keeps the restored optimizer state as the
inner state of its tuner's (`optim.TunedState`), the tuner starting afresh; a
guided run's checkpoint gives any run its parameters and its inner optimizer state
(its tuner and tangents belong to the run that learned them).
"""

import dataclasses
import functools
import os
from typing import Callable, Optional

import jax
import optax
import orbax.checkpoint as ocp
from etils import epath
from t5x import checkpoints_utils, optimizers as t5x_optimizers, utils

from hpo.core.errors import UserError
from hpo.method import groups as param_groups
from hpo.t5x_backend import optim as t5x_optim


class StartingState(utils.TrainStateInitializer):
    """T5X's initializer whose first state is `start(self, scratch)`, `scratch` being T5X's
    from-scratch state of the run's optimizer (`train(train_state_initializer_cls=...)`)."""

    def __init__(self, optimizer_def, init_fn, input_shapes, partitioner, input_types=None, *,
                 start: Callable):
        super().__init__(optimizer_def, init_fn, input_shapes, partitioner, input_types)
        self.init_fn, self.input_shapes, self.input_types = init_fn, input_shapes, input_types
        self.partitioner, self._start = partitioner, start

    def from_scratch(self, init_rng):
        return self._start(self, super().from_scratch(init_rng))


def initializer(start: Callable):
    return functools.partial(StartingState, start=start)


def initial_step(restore_cfg: Optional[utils.RestoreCheckpointConfig]) -> int:
    """The step of the initial checkpoint the user's configuration names (0: none)."""
    path = _initial_path(restore_cfg)
    if path is None:
        return 0
    try:
        return checkpoints_utils.get_step_from_checkpoint_dir(path)[1]
    except ValueError:
        raise UserError(f"initial checkpoint: '{path}' is not a T5X checkpoint directory "
                        f"(checkpoint_<step>)") from None


def without_initial(checkpoint_cfg: utils.CheckpointConfig) -> utils.CheckpointConfig:
    """The user's checkpointing, minus the initial checkpoint (hpo restores it itself)."""
    if _initial_path(checkpoint_cfg.restore) is None:
        return checkpoint_cfg
    return dataclasses.replace(checkpoint_cfg, restore=dataclasses.replace(checkpoint_cfg.restore, path=None))


def from_initial_checkpoint(restore_cfg, optimizer_def) -> Callable:
    """`start` for a run initialised from the user's initial checkpoint (None: from scratch).

    The checkpoint is restored as T5X restores it for the configured optimizer
    `optimizer_def` (parameters, step and optimizer state), without an input pipeline.
    """
    path = _initial_path(restore_cfg)
    if path is None:
        return lambda init, scratch: scratch
    cfg = dataclasses.replace(restore_cfg, mode="specific", restore_dataset=False)
    optimizer_def = _as_stored(optimizer_def, path)

    def start(init: StartingState, scratch):
        configured = utils.TrainStateInitializer(optimizer_def, init.init_fn, init.input_shapes, init.partitioner,
                                                 init.input_types)
        restored, _ = utils.create_checkpoint_manager_and_restore(
            configured, init.partitioner, cfg, path, jax.random.PRNGKey(0), save_checkpoint_cfg=None,
            model_dir=os.path.dirname(path), ds_iter=None, use_orbax=True)
        return graft(scratch, restored)

    return start


def _as_stored(optimizer_def, path: str):
    """`optimizer_def` as a guided run stores it, if the checkpoint at `path` is one's.

    A guided run's optimizer state is `optim.TunedState(inner, tuner, tangent)`, its inner
    state chained with group multipliers if it tuned groups. T5X restores what the target
    has of the checkpoint: a target with an empty tuner, tangents and multipliers restores
    the parameters and the user's optimizer state, and leaves the rest to the run that
    learned it (see `graft`).
    """
    state_dir = epath.Path(path) / "state"
    if not (isinstance(optimizer_def, t5x_optimizers.OptaxWrapper) and state_dir.exists()):
        return optimizer_def  # T5X restores it (or says why not)
    stored = ocp.PyTreeCheckpointHandler().metadata(state_dir).tree
    states = stored.get("state", {}).get("param_states", {})
    if not {"inner", "tuner"} <= set(states):
        return optimizer_def
    grouped = set(states["inner"]) == {"0", "1"} and "rates" in states["inner"]["1"]
    tx = optimizer_def.optax_optimizer

    def init(params):
        inner = tx.init(params)
        return t5x_optim.TunedState((inner, param_groups.GroupRatesState({})) if grouped else inner, {}, {})

    return t5x_optimizers.OptaxWrapper(optax.GradientTransformation(init, _never))


def _never(*_):
    raise AssertionError("a restore target's optimizer never updates")


def _users(param_states):
    """The user's optimizer state in a state restored through `_as_stored`."""
    if isinstance(param_states, t5x_optim.TunedState):
        param_states = param_states.inner
        if isinstance(param_states, tuple) and isinstance(param_states[-1], param_groups.GroupRatesState):
            param_states = param_states[0]
    return param_states


def from_params(params) -> Callable:
    """`start` for a run whose parameters are `params`, with a fresh optimizer state at step 0."""
    return lambda init, scratch: scratch.replace_params(params)


def graft(target, restored):
    """`target` (the run's scratch state) with the parameters, step and optimizer state of
    `restored`; a tuner in `target` stays as it is (it starts afresh), one in `restored` is
    dropped (it belongs to the run that learned it)."""
    param_states = _users(restored.param_states)
    if isinstance(target.param_states, t5x_optim.TunedState):
        param_states = target.param_states._replace(inner=param_states)
    state = t5x_optim.with_param_states(target.replace_params(restored.params), param_states)
    state = state.replace_step(restored.step)
    return state.replace_flax_mutables(restored.flax_mutables) if restored.flax_mutables else state


def _initial_path(restore_cfg) -> Optional[str]:
    path = getattr(restore_cfg, "path", None)
    if path is None or (not isinstance(path, str) and not path):
        return None
    if not isinstance(path, str):
        raise UserError("initial checkpoint: RestoreCheckpointConfig.path must be one path in training")
    return path
