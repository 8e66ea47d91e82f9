"""Hyper-parameters as learnable scalars: parameterisations and the guided method, engine-neutral.

Each tuned hyper-parameter k has a raw unconstrained value r_k and an
activation λ_k = act_k(r_k) that keeps it in range (shared/docs/guided-hpo.md).
`Tuning.step` is one step of the method, written once for both training
backends: a training update with the current values, the guide loss of the
updated model, its gradient with respect to the raw values (through the
optimizer update), and a meta-optimizer step on them; it imports no engine.
`hpo.engine.guided_step.guided_update` is that step on the built-in engine,
hpo.t5x_backend's trainer the T5X one.

Two ways to take that gradient (`Tuning.mode`): 'one_step' differentiates
through the last update (or window of `horizon` updates) in reverse mode,
treating the state before it as a constant (the paper's method); 'forward'
carries, for each forward-tuned value, the tangent of the training state with
respect to it through every update since the start (Franceschi et al. 2017's
real-time hyper-gradient, discounted as in Donini et al. 2020), so the
hyper-gradient sees the whole run at the memory of one tangent per value.
"""

import dataclasses
from typing import Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

from hpo.core.errors import UserError, finite_number

PARAMETERISATIONS = ("exp", "sigmoid", "softplus", "identity")
MODES = ("one_step", "forward")


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
        for name in ("floor", "ceiling", "steepness", *(("init",) if self.init is not None else ())):
            finite_number(getattr(self, name), f"hyper-parameter spec field '{name}'")
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


def sanitize(grads, bound: float = 10.0, clip: Optional[float] = None):
    """NaN -> 0 and ±inf -> ±bound, then an optional clip to [-clip, clip]."""
    def fix(g):
        g = jnp.nan_to_num(g, nan=0.0, posinf=bound, neginf=-bound)
        return jnp.clip(g, -clip, clip) if clip else g
    return jax.tree.map(fix, grads)


@dataclasses.dataclass(frozen=True)
class Tuning:
    """What the guided method tunes and how; the same object drives either training backend.

    `fixed_values` are the hyper-parameters that are not tuned; the guide
    batch has `guide_batch_size` rows (None: the training batch) and is
    replaced every `guide_refresh_every` steps (0: one batch for the run).
    A tuned step is a window of `horizon` training steps taken with the same
    values; the hyper-gradient is that of the guide loss after the window,
    through all of its updates (1: the reference's one-step lookahead).
    ±inf hyper-gradients become ±`bound` (the reference's 10: a larger push
    also inflates Adam's second moment for hundreds of steps). `groups` (name ->
    regex, `hpo.method.groups`): each group's learning-rate multiplier
    `learning_rate/<name>`, tuned among `specs`, scales its parameters' updates.
    `mode` 'forward': the values named in `forward` take forward-mode
    hyper-gradients with discount `discount` μ (`propagate`); the others keep
    the one-step gradient. μ = 0 is the one-step method itself.
    """
    specs: Mapping[str, HparamSpec]
    fixed_values: Mapping[str, float]
    meta_tx: optax.GradientTransformation
    update_every: int = 1
    bound: float = 10.0
    clip: Optional[float] = None
    guide_batch_size: Optional[int] = None
    guide_refresh_every: int = 0
    horizon: int = 1
    groups: Optional[Mapping[str, str]] = None
    mode: str = "one_step"
    forward: Sequence[str] = ()
    discount: float = 1.0

    @property
    def forward_names(self) -> Tuple[str, ...]:
        """The tuned values whose state tangents are carried: none in one-step mode or at μ = 0,
        which is then the one-step method's program, bit for bit."""
        if self.mode != "forward" or self.discount == 0:
            return ()
        return tuple(k for k in self.specs if k in self.forward)

    def initial_values(self) -> Dict[str, float]:
        return {**self.fixed_values, **{k: s.init for k, s in self.specs.items()}}

    def init(self, train_steps: int, carry=None):
        """The tuner state: raw values, meta-optimizer state, counters and the schedule so far;
        given `carry` (the training state), in forward mode also its tangents (`zero_tangents`)."""
        tuner = init_tuner(self.specs, {k: s.init for k, s in self.specs.items()}, self.meta_tx, train_steps)
        if self.forward_names and carry is not None:
            return with_tangent(tuner, self.zero_tangents(carry))
        return tuner

    def zero_tangents(self, carry):
        """Each forward value's tangent of the training state `carry`: zero at the run's start."""
        return {k: jax.tree.map(jnp.zeros_like, carry) for k in self.forward_names}

    def due(self, step: int, train_steps: int = None) -> bool:
        """Whether step `step` (a host int) starts a tuned window: `step(..., tune=True)`. A window
        that would run past `train_steps` is not taken; those last steps are plain ones."""
        fits = train_steps is None or step + self.horizon <= train_steps
        return step % self.update_every == 0 and fits

    def meta_updates(self, first_step: int, end_step: int) -> int:
        """How many tuned steps (meta-optimizer updates) a run over [first_step, end_step) takes: a
        tuned window takes `horizon` steps, the steps between are plain."""
        count, step = 0, first_step
        while step < end_step:
            tuned = self.due(step, end_step)
            count, step = count + tuned, step + (self.horizon if tuned else 1)
        return count

    def step(self, tuner, step, carry, update: Callable, guide_loss: Callable, tune: bool = True):
        """The method's step, whatever trains the model (the built-in engine or T5X).

        `carry` is the training state the values act on (parameters, optimizer
        state); `update(carry, values)` takes the training update with the
        hyper-parameter values `values` (on a tuned step: the window's `horizon`
        updates) and returns (new carry, aux); `guide_loss(carry)` is the guide
        loss of a model. On a tuned step (`tune`, every `update_every` steps:
        `due(step)`) the guide loss of the updated model is differentiated with
        respect to the raw values, and the meta-optimizer moves them. One-step
        values are differentiated through the window's updates, the carry at its
        start being a constant (truncation); forward values through every update
        since the start, by their carried tangents. The steps between
        (`tune=False`) are `update(carry, values)` alone, with no guide pass
        (compute 1 + g / update_every plain steps; forward tangents are carried
        through them too), and log the last guide loss and hyper-gradients. The
        engines compile the two kinds as two programs and pick one on the host
        (a lax.cond inside one program cost about 3% per step on CPU).

        Returns (guide loss, new carry, aux, values the step used, new tuner, sanitised hyper-gradients).
        """
        specs, forward = self.specs, self.forward_names

        def values_of(raw):
            return {**self.fixed_values, **activate_all(specs, raw)}

        def one_step_grads(raw, names):
            """Reverse mode through this step's update: (guide loss, (new carry, aux, values)), grads."""
            def objective(moved):
                values = values_of({**raw, **moved})
                new, aux = update(carry, values)
                return guide_loss(new), (new, aux, values)
            return jax.value_and_grad(objective, has_aux=True)({k: raw[k] for k in names})

        raw = tuner.raw
        if not tune:
            values = values_of(raw)
            if forward:
                new, aux, tangent, _ = self.propagate(carry, update, values_of, raw, tuner.tangent)
                tuner = tuner._replace(tangent=tangent)
            else:
                new, aux = update(carry, values)
        else:
            if forward:  # the other tuned values: their derivative through this update alone (one step)
                others = [k for k in specs if k not in forward]
                new, aux, tangent, this_step = self.propagate(carry, update, values_of, raw, tuner.tangent, others)
                guide, grads = self.forward_grads(new, guide_loss, {**tangent, **this_step})
                grads = {k: grads[k] for k in specs}
                values = values_of(raw)
            else:
                (guide, (new, aux, values)), grads = one_step_grads(raw, list(specs))
            finite = {k: jnp.isfinite(grads[k]) for k in specs}
            nonfinite = {k: tuner.nonfinite[k] + (~finite[k]).astype(jnp.int32) for k in specs}
            grads = sanitize(grads, self.bound, self.clip)
            updates, meta_state = self.meta_tx.update(grads, tuner.meta_state, raw)
            tuner = tuner._replace(raw=optax.apply_updates(raw, updates), meta_state=meta_state,
                                   nonfinite=nonfinite, last=Measured(guide, grads))
            if forward:  # a tangent that went non-finite starts afresh, as if from this step
                tuner = tuner._replace(tangent={
                    k: jax.tree.map(lambda z, ok=finite[k]: jnp.where(ok, z, jnp.zeros_like(z)), t)
                    for k, t in tangent.items()})
        # The learned schedule: the values each step was taken with (a tuned window's steps: the same).
        rows = jnp.tile(jnp.stack([values[k] for k in specs])[None], (self.horizon if tune else 1, 1))
        trajectory = jax.lax.dynamic_update_slice(tuner.trajectory, rows.astype(tuner.trajectory.dtype),
                                                  (jnp.asarray(step, jnp.int32), jnp.int32(0)))
        tuner = tuner._replace(trajectory=trajectory)
        return tuner.last.guide_loss, new, aux, values, tuner, tuner.last.hypergrad

    def propagate(self, carry, update: Callable, values_of: Callable, raw, tangent, fresh: Sequence[str] = ()):
        """The update with the current values, and each forward value k's tangent carried through it:
        Z_k ← μ·(∂update/∂carry)·Z_k + ∂update/∂raw_k, one `jax.jvp` of the update per value; for
        each value in `fresh`, its tangent through this update alone, ∂update/∂raw_k (the carry a
        constant: only what depends on the value is differentiated, e.g. the elementwise optimizer
        update for β1).

        Returns (new carry, aux, new tangents, fresh tangents). The update's own computation is the
        same in every jvp, and XLA computes it once (its common-subexpression pass: measured, the
        FLOPs of one update plus two per carried tangent).
        """
        floats, rebuild = _inexact(carry)
        forward = [k for k in self.specs if k in self.forward]  # at μ = 0 too (tests compare it)

        def moved(floats_in, raw_moved):
            new, aux = update(rebuild(floats_in), values_of({**raw, **raw_moved}))
            return _inexact(new)[0], (new, aux)

        def unit(k, names):
            return {j: jnp.asarray(float(j == k), raw[j].dtype) for j in names}

        at = {k: raw[k] for k in forward}
        new = aux = None
        out = {}
        for k in forward:
            stored, rebuild_tangent = _inexact(tangent[k])
            z = stored if self.discount == 1 else [self.discount * x for x in stored]
            _, dz, (new, aux) = jax.jvp(moved, (floats, at), (z, unit(k, forward)), has_aux=True)
            out[k] = rebuild_tangent([x.astype(s.dtype) for x, s in zip(dz, stored)])
        this_step = {}
        for k in fresh:
            _, dz, (new, aux) = jax.jvp(lambda r: moved(floats, r), ({j: raw[j] for j in fresh},), (unit(k, fresh),),
                                        has_aux=True)
            this_step[k] = rebuild([x.astype(s.dtype) for x, s in zip(dz, floats)])
        return new, aux, out, this_step

    @staticmethod
    def forward_grads(new, guide_loss: Callable, tangent):
        """(guide loss of `new`, {k: ∇G · Z_k}): the forward values' hyper-gradients."""
        floats, rebuild = _inexact(new)
        guide, grad = jax.value_and_grad(lambda f: guide_loss(rebuild(f)))(floats)
        grads = {}
        for k, z in tangent.items():
            zs = _inexact(z)[0]
            grads[k] = sum(jnp.vdot(g, x.astype(g.dtype)) for g, x in zip(grad, zs)).astype(jnp.float32)
        return guide, grads


def _inexact(tree):
    """(the tree's floating-point leaves, rebuild(leaves) -> the tree with those leaves): what
    differentiates in a training state (its integer counters do not)."""
    leaves, treedef = jax.tree.flatten(tree)
    floating = [jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in leaves]

    def rebuild(new_floats):
        it = iter(new_floats)
        return jax.tree.unflatten(treedef, [next(it) if f else x for x, f in zip(leaves, floating)])

    return [x for x, f in zip(leaves, floating) if f], rebuild


def step_metrics(guide, values, grads, base_learning_rate) -> Dict[str, jnp.ndarray]:
    """What a guided step logs, on either backend: guide loss, the learning rate used, values, hyper-gradients."""
    metrics = {"guide_loss": guide, "learning_rate": base_learning_rate * values.get("learning_rate", 1.0)}
    metrics.update({f"hparams/{k}": v for k, v in values.items()})
    metrics.update({f"hypergrad/{k}": g for k, g in grads.items()})
    return metrics


class Measured(NamedTuple):
    """What the last tuned step measured, logged on the plain steps between (update_every > 1)."""
    guide_loss: jax.Array
    hypergrad: Dict[str, jax.Array]


class TunerState(NamedTuple):
    """The guided method's state (an optax-style NamedTuple of arrays), carried in the training
    state and checkpointed with it. Checkpoints name its entries by field: these names are the
    keys of the dict it was before, so older checkpoints restore into it."""
    raw: Dict[str, jax.Array]  # each value before its activation: what the meta-optimizer moves
    meta_state: optax.OptState
    nonfinite: Dict[str, jax.Array]  # tuned steps whose hyper-gradient was NaN/inf (sanitised): in the record
    last: Measured
    trajectory: jax.Array  # [train_steps, values]: each step's values; NaN rows: steps not taken


# In forward mode the state also carries each forward value's tangent of the training state. A
# type of its own, not an optional field: a None field would be an entry that checkpoints of
# the other mode lack.
ForwardTunerState = NamedTuple("ForwardTunerState", [*TunerState.__annotations__.items(), ("tangent", Dict)])


def with_tangent(tuner: TunerState, tangent) -> ForwardTunerState:
    return ForwardTunerState(*tuner[:len(TunerState._fields)], tangent)


def without_tangent(tuner) -> TunerState:
    return TunerState(*tuner[:len(TunerState._fields)])


def init_tuner(specs: Mapping[str, HparamSpec], inits: Mapping[str, float], meta_tx, train_steps: int) -> TunerState:
    raw = {k: jnp.asarray(specs[k].inverse(inits[k]), jnp.float32) for k in specs}
    return TunerState(raw=raw, meta_state=meta_tx.init(raw), nonfinite={k: jnp.zeros([], jnp.int32) for k in specs},
                      last=Measured(jnp.full([], jnp.nan, jnp.float32), {k: jnp.zeros([], jnp.float32) for k in specs}),
                      # NaN rows: steps this run has not taken (all before an initial checkpoint's step, on T5X).
                      trajectory=jnp.full((train_steps, len(specs)), jnp.nan, jnp.float32))
