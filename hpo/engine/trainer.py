"""The one trainer every strategy runs on: pure jitted steps and the loop around them.

`train_step(state, batch, hparams)` is a pure function of the hyper-parameter
values of the step (a dict of scalars). Fixed runs pass constants or a
replayed schedule; the guided strategy differentiates `apply_update` with
respect to them. The loop (`Trainer.fit`) adds data, progress, summaries,
periodic evaluation and orbax checkpoints, and resumes where it stopped.
"""

import dataclasses
import math
import time
from typing import Any, Callable, Dict, Iterator, Mapping, NamedTuple, Optional, Sequence, Union

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hpo.core import distributed, faults, preemption
from hpo.core.progress import progress_bar
from hpo.engine.checkpoints import Checkpointer
from hpo.method import optim

Batch = Mapping[str, jnp.ndarray]
StepFn = Callable[[Any, Batch], Any]


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: Any
    opt_state: Any
    rng: jnp.ndarray
    tuner: Any = None  # strategy state that must survive a resume (guided: raw hparams, meta-optimizer)


def init_state(model, tx: optax.GradientTransformation, seed: int, lengths, tuner=None) -> TrainState:
    """`tuner`: the strategy's state, or a function of (params, optimizer state) that makes it."""
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init(init_rng, lengths)
    opt_state = jax.jit(tx.init)(params)
    if callable(tuner):
        tuner = tuner((params, opt_state))
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=opt_state,
                      rng=dropout_rng, tuner={} if tuner is None else tuner)


def apply_update(state: TrainState, batch: Batch, hparams: Mapping[str, jnp.ndarray], *, model, tx, schedule):
    """One optimizer step with the given hyper-parameter values: (params, opt_state, loss).

    Differentiable with respect to `hparams`: the learning rate enters as
    schedule(step) * hparams["learning_rate"] through the injected optimizer
    state, label smoothing through the loss. A `tx` chained with parameter groups
    (`optim.make_optimizer(..., groups)`) also multiplies group g's updates by
    hparams["learning_rate/g"], set in its state as the other values are.
    """
    rng = jax.random.fold_in(state.rng, state.step)
    smoothing = hparams.get("label_smoothing", 0.0)

    def loss_fn(params):
        total, weight = model.loss(params, batch, rng, smoothing, train=True)
        return total / jnp.maximum(weight, 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    values = dict(hparams)
    values["learning_rate"] = schedule(state.step) * hparams.get("learning_rate", 1.0)
    opt_state = optim.set_hparams(state.opt_state, values)
    updates, opt_state = tx.update(grads, opt_state, state.params)
    return optax.apply_updates(state.params, updates), opt_state, loss


def train_step(state: TrainState, batch: Batch, hparams, *, model, tx, schedule):
    params, opt_state, loss = apply_update(state, batch, hparams, model=model, tx=tx, schedule=schedule)
    metrics = {"loss": loss, "learning_rate": schedule(state.step) * hparams.get("learning_rate", 1.0)}
    metrics.update({f"hparams/{k}": v for k, v in hparams.items()})
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params, batch: Batch, *, model):
    """(summed loss, token count) without dropout, smoothing or z-loss."""
    return model.loss(params, batch, train=False)


class DataParallel:
    """Replicated state, batches split over all devices (of every host) along the batch axis.

    On several hosts every host holds the same global batch and feeds its own
    devices their rows of it, so a run trains on the same batches whatever the
    number of hosts; evaluation runs on each host's copy of the parameters.
    """

    def __init__(self, devices=None):
        devices = np.asarray(devices if devices is not None else jax.devices())
        self.mesh = Mesh(devices, ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch = NamedSharding(self.mesh, PartitionSpec("data"))

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    def put_state(self, state):
        return self._put(state, self.replicated)

    def put_batch(self, batch, stacked: bool = False):
        return self._put(batch, self.stacked_batch if stacked else self.batch)

    @property
    def stacked_batch(self):
        """Batches stacked along a new leading axis (a guided window's): split along the batch axis."""
        return NamedSharding(self.mesh, PartitionSpec(None, "data"))

    @staticmethod
    def _put(tree, sharding):
        if jax.process_count() == 1:
            return jax.device_put(tree, sharding)
        return jax.tree.map(lambda x: jax.make_array_from_callback(np.shape(x), sharding,
                                                                   lambda index: np.asarray(x)[index]), tree)

    @staticmethod
    def local(tree):
        """This host's copy of a replicated tree (on one host: the tree itself)."""
        if jax.process_count() == 1:
            return tree
        return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)

    def jit_step(self, fn: StepFn, stacked: bool = False):
        """jit a (state, batch) -> (state, metrics) function; the old state is donated."""
        return jax.jit(fn, in_shardings=(self.replicated, self.stacked_batch if stacked else self.batch),
                       out_shardings=(self.replicated, self.replicated), donate_argnums=0)


class StepSchedule(NamedTuple):
    """Step functions, each compiled once, and the one step t takes: `fns[which(t)]` (the
    guided strategy's tuned steps and the plain steps between them). `spans[i]`: how many
    steps `fns[i]` takes at once (None: one each); such a function gets that many batches,
    stacked along a new leading axis."""
    fns: Sequence[StepFn]
    which: Callable[[int], int]
    spans: Optional[Sequence[int]] = None


def _crossed(step: int, taken: int, every: int) -> bool:
    """Whether the last `taken` steps, ending at `step`, passed a multiple of `every`."""
    return every > 0 and step // every != (step - taken) // every


@dataclasses.dataclass
class Trainer:
    """The loop: steps, progress, summaries, evaluation hooks and checkpoints."""
    run_dir: str
    train_steps: int
    checkpoint_every: int = 500
    log_every: int = 50
    eval_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    check_every: int = 10  # steps between checks for a non-finite loss (each waits for the device)
    parallel: DataParallel = dataclasses.field(default_factory=DataParallel)

    def fit(self, state: TrainState, step_fn: Union[StepFn, StepSchedule], batches: Callable[[], Iterator[Batch]],
            evaluate: Optional[Callable[[TrainState], Dict[str, float]]] = None,
            on_eval: Optional[Callable[[int, Dict[str, float]], None]] = None,
            until: Optional[int] = None) -> "FitResult":
        """Trains until `train_steps` (or step `until`: a PBT member's segment, which ends with
        an evaluation and a checkpoint as a run does), resuming from the newest checkpoint in run_dir.

        `batches()` is the run's stream of batches from its start, with
        `save(path)` and `restore(path)` (`pipeline.Batches`): a checkpoint saves
        its position beside the state. `evaluate` (dev metrics) runs every
        `eval_every` steps and at the end, and its result goes to the summaries
        and to `on_eval` (e.g. Optuna pruning).
        """
        checkpointer = Checkpointer(f"{self.run_dir}/checkpoints", self.keep_checkpoints,
                                    data_directory=f"{self.run_dir}/data-checkpoints",
                                    settings={"TRAIN_STEPS": self.train_steps})  # a resume must not change it
        restored = checkpointer.restore_latest(state)
        elapsed, history = 0.0, []
        if restored is not None:
            state, meta = restored
            elapsed, history = meta["elapsed_seconds"], meta["eval_history"]
        state = self.parallel.put_state(state)
        step = int(self.parallel.local(state.step))
        steps = step_fn if isinstance(step_fn, StepSchedule) else StepSchedule((step_fn,), lambda t: 0)
        spans = steps.spans or [1] * len(steps.fns)
        jitted = [self.parallel.jit_step(fn, stacked=n > 1) for fn, n in zip(steps.fns, spans)]
        train_writer, eval_writer = (_summary_writer(f"{self.run_dir}/{name}") for name in ("train", "eval"))
        start, diverged = time.time(), None
        end = self.train_steps if until is None else until
        data = batches()
        if restored is not None:
            checkpointer.restore_data(step, data)

        def save(eval_pending: bool = False):
            meta = {"elapsed_seconds": elapsed + time.time() - start, "eval_history": history,
                    "data_position": step, "eval_pending": eval_pending}
            checkpointer.save(step, state, meta, data)

        def dev_eval() -> Optional[Dict]:
            """Dev metrics at `step`, recorded; or the divergence they show."""
            faults.point("evaluation")
            try:
                scores = evaluate(state.replace(params=self.parallel.local(state.params)))
            except preemption.Preempted:  # a stop mid-evaluation: the rerun evaluates this step first
                if checkpointer.latest_step() != step:  # else a resumed pending evaluation, stopped again
                    save(eval_pending=True)
                raise
            if not math.isfinite(scores.get("loss", 0.0)):
                return {"step": step, "reason": f"dev loss {scores['loss']}"}
            history.append({"step": step, **scores})
            eval_writer.write_scalars(step, scores)
            if on_eval:
                distributed.call_on_leader(on_eval, step, scores)
            return None

        try:
            with progress_bar("train", total=end, completed=step) as bar:
                if restored is not None and restored[1].get("eval_pending"):
                    diverged = dev_eval()
                while step < end and not diverged:
                    faults.point("training")
                    which = steps.which(step)
                    n = spans[which]
                    batch = next(data) if n == 1 else _stack([next(data) for _ in range(n)])
                    state, metrics = jitted[which](state, self.parallel.put_batch(batch, stacked=n > 1))
                    step += n
                    bar.advance(n)
                    last = step == end
                    checked = _crossed(step, n, self.check_every) or _crossed(step, n, self.checkpoint_every) or last
                    logged = _crossed(step, n, self.log_every)
                    if checked or logged:
                        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                        if not math.isfinite(values["loss"]):  # before a checkpoint could keep it
                            diverged = {"step": step, "reason": f"train loss {values['loss']}"}
                            break
                        if logged or last:
                            train_writer.write_scalars(step, values)
                            bar.note(f"loss {values['loss']:.3f}")
                    if evaluate and (last or _crossed(step, n, self.eval_every)):
                        diverged = dev_eval()
                        if diverged:
                            break
                    stopping = preemption.requested() is not None and not last
                    if last or _crossed(step, n, self.checkpoint_every) or stopping:
                        save()
                    if stopping:  # the checkpoint is finished (below) before the stop: a rerun resumes here
                        preemption.check(f"{self.run_dir} at step {step}")
            train_writer.flush()
            eval_writer.flush()
        finally:
            checkpointer.close()
            train_writer.close()
            eval_writer.close()
        return FitResult(self.parallel.local(state), elapsed + time.time() - start, history, diverged)


def _stack(batches):
    return jax.tree.map(lambda *rows: np.stack(rows), *batches)


def _summary_writer(directory: str):
    # TensorBoard summaries from the leader only; the other hosts' are the same. clu (and the
    # TensorFlow it loads) is imported here, by a run that writes, not by the step functions.
    from clu import metric_writers
    return metric_writers.SummaryWriter(directory) if distributed.is_leader() else metric_writers.MultiWriter([])


@dataclasses.dataclass
class FitResult:
    state: TrainState
    wall_seconds: float
    eval_history: list
    diverged: Optional[Dict] = None  # {"step", "reason"} when the loss stopped being finite
