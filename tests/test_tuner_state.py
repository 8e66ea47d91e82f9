"""The guided tuner's typed state (`hyper.TunerState`): checkpoints written while it was a dict
of string keys restore into it, on the built-in engine (orbax) and on T5X (T5X's state dicts)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hpo.engine.checkpoints import Checkpointer
from hpo.engine.trainer import TrainState
from hpo.method import hyper

SPECS = {"learning_rate": hyper.DEFAULT_SPECS["learning_rate"], "beta1": hyper.DEFAULT_SPECS["beta1"]}
PARAMS = {"dense": {"kernel": jnp.ones((3, 2), jnp.float32)}}


def _tuning(forward: bool) -> hyper.Tuning:
    return hyper.Tuning(specs=SPECS, fixed_values={}, meta_tx=optax.adam(0.01),
                        **({"mode": "forward", "forward": ("learning_rate",)} if forward else {}))


def _old_dict(tuning: hyper.Tuning, steps: int, carry=None) -> dict:
    """The tuner as hpo stored it before it was typed (written out here, as that code made it):
    a dict of string keys, its values moved from the initial ones (a restore must read them)."""
    raw = {k: jnp.asarray(SPECS[k].inverse(SPECS[k].init), jnp.float32) + 0.5 for k in SPECS}
    old = {"raw": raw, "meta_state": tuning.meta_tx.init(raw),
           "nonfinite": {k: jnp.asarray(2, jnp.int32) for k in SPECS},
           "last": {"guide_loss": jnp.asarray(3.25, jnp.float32),
                    "hypergrad": {k: jnp.asarray(-0.5, jnp.float32) for k in SPECS}},
           "trajectory": jnp.arange(4 * len(SPECS), dtype=jnp.float32).reshape(4, len(SPECS))}
    if carry is not None:
        old["tangent"] = {k: jax.tree.map(lambda x: jnp.full_like(x, 0.75), carry) for k in tuning.forward_names}
    return old


def _assert_same(typed, old: dict):
    """Each entry of the old dict, where the typed state keeps it."""
    where = {"raw": typed.raw, "meta_state": typed.meta_state, "nonfinite": typed.nonfinite,
             "last": {"guide_loss": typed.last.guide_loss, "hypergrad": typed.last.hypergrad},
             "trajectory": typed.trajectory, **({"tangent": typed.tangent} if "tangent" in old else {})}
    assert jax.tree.structure(where) == jax.tree.structure(old)
    for a, b in zip(jax.tree.leaves(where), jax.tree.leaves(old), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_builtin_checkpoints_of_the_dict_tuner_restore_into_the_typed_one(tmp_path):
    for forward in (False, True):
        tuner = _tuning(forward).init(4, carry=(PARAMS, {}))
        assert type(tuner) is (hyper.ForwardTunerState if forward else hyper.TunerState)
        state = TrainState(step=jnp.zeros([], jnp.int32), params=PARAMS, opt_state={},
                           rng=jax.random.PRNGKey(0), tuner=tuner)
        old = _old_dict(_tuning(forward), 4, carry=(PARAMS, {}) if forward else None)
        directory = str(tmp_path / f"forward{forward}")
        writer = Checkpointer(directory)
        writer.save(3, state.replace(tuner=old), meta={"step": 3})
        writer.close()
        restored, meta = Checkpointer(directory).restore_latest(state)
        assert meta["step"] == 3 and type(restored.tuner) is type(tuner)
        _assert_same(restored.tuner, old)


def test_t5x_checkpoints_of_the_dict_tuner_restore_into_the_typed_one():
    from t5x import optimizers, train_state as train_state_lib
    from hpo.t5x_backend import optim as t5x_optim
    for forward in (False, True):  # T5X keeps the tangents beside the tuner: the tuner is the same
        tuning = _tuning(forward)
        wrapper = optimizers.OptaxWrapper(t5x_optim.carrying_tuner(optax.sgd(0.1), tuning, 4))
        typed = train_state_lib.FlaxOptimTrainState.create(wrapper, {"params": PARAMS})
        assert type(typed.param_states.tuner) is hyper.TunerState
        old = _old_dict(tuning, 4)
        old_state = t5x_optim.with_param_states(typed, typed.param_states._replace(tuner=old))
        stored = old_state.state_dict()  # what T5X's checkpointer writes
        assert jax.tree.structure(stored) == jax.tree.structure(typed.state_dict())
        restored = typed.restore_state(stored)
        assert type(restored.param_states.tuner) is hyper.TunerState
        _assert_same(restored.param_states.tuner, old)
        _assert_same(hyper.without_tangent(t5x_optim.tuner_of(restored)), old)
