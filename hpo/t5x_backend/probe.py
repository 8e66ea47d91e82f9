"""`hpo probe --backend=t5x`: the probe's run (`hpo.run.probe`) on T5X: its model and train state from
scratch as `t5x.train` makes them (the same seed gives the same state), its input pipeline with
the guide split beside (`data.guided_dataset_fn`), its partitioner, and hpo's T5X update taking
the values of each step (`ValuesTrainer.update`)."""

import copy
from typing import Mapping

import jax
import jax.numpy as jnp
from t5x import optimizers as t5x_optimizers
from t5x import utils

from hpo.core.errors import UserError
from hpo.method import groups as param_groups
from hpo.t5x_backend import data, optim as t5x_optim
from hpo.t5x_backend.trainer import GUIDE, ValuesTrainer, cross_entropy, split_guide


class T5xRun:
    """What the probe needs of an engine (as `hpo.run.probe.BuiltinRun`), on T5X. `batches` comes
    first: the train state's shapes are those of the pipeline's batches, as in `t5x.train`."""

    def __init__(self, experiment, first_values: Mapping[str, float], groups=None):
        del first_values  # T5X's optimizer holds every settable value already (`check_settable`)
        if experiment.first_step:
            raise UserError("hpo probe on T5X starts from scratch; the configuration starts from an initial "
                            "checkpoint (INITIAL_CHECKPOINT_PATH)")
        self._experiment, self._model = experiment, experiment.model
        if groups:  # a replayed schedule's per-group rates (`Guided.groups`)
            t5x_optim.require_optax(self._model.optimizer_def, "probe")
            self._model = copy.copy(self._model)
            self._model.optimizer_def = t5x_optimizers.OptaxWrapper(
                param_groups.chain_rates(experiment.model.optimizer_def.optax_optimizer, groups))
        self._partitioner = experiment.train_args["partitioner"]
        self._spec = None

    def batches(self, seed: int, guide_batch_size: int, guide_refresh_every: int):
        experiment = self._experiment
        if guide_batch_size != experiment.batch_size:
            raise UserError(f"probe: on T5X the guide batch is as large as the training batch "
                            f"({experiment.batch_size}), not {guide_batch_size}: T5X feeds one batch shape")
        data.require_guide_split(experiment.task)
        cfg = experiment.seeded(experiment.data_cfg, seed)
        layout = self._partitioner.get_data_layout(cfg.batch_size)
        dataset = data.guided_dataset_fn(guide_refresh_every)(cfg, layout.shard_id, layout.num_shards,
                                                              self._model.FEATURE_CONVERTER_CLS)
        self._spec = {k: v for k, v in dataset.element_spec.items() if not k.startswith(GUIDE)}
        return ({"train": train, "guide": guide} for train, guide in map(split_guide, dataset.as_numpy_iterator()))

    def initial_state(self, seed: int):
        init_rng, trainer_rng = jax.random.split(jax.random.PRNGKey(seed))  # as t5x.train splits its seed
        initializer = utils.TrainStateInitializer(
            optimizer_def=self._model.optimizer_def, init_fn=self._model.get_initial_variables,
            input_shapes={k: tuple(v.shape) for k, v in self._spec.items()},
            input_types={k: v.dtype.as_numpy_dtype for k, v in self._spec.items()}, partitioner=self._partitioner)
        state, axes = initializer.from_scratch(init_rng), initializer.train_state_axes
        args = self._experiment.trainer_args
        trainer = ValuesTrainer(model=self._model, train_state=state, partitioner=self._partitioner, eval_names=[],
                                summary_dir=None, train_state_axes=axes, rng=trainer_rng,
                                learning_rate_fn=args["learning_rate_fn"],
                                num_microbatches=args.get("num_microbatches"))
        batch_spec = self._partitioner.data_partition_spec
        # No donation: the probe's copies all start from the same state.
        self._step = self._partitioner.partition(lambda s, b, v: trainer.update(s, b, v)[0],
                                                 in_axis_resources=(axes, batch_spec, None), out_axis_resources=axes)
        self._loss = self._partitioner.partition(lambda s, b: cross_entropy(self._model, s.params, b),
                                                 in_axis_resources=(axes, batch_spec), out_axis_resources=None)
        return state

    def step(self, state, batch, values: Mapping[str, float]):
        return self._step(state, batch, {k: jnp.asarray(v, jnp.float32) for k, v in values.items()})

    def guide_loss(self, state, batch) -> float:
        total, weight = self._loss(state, batch)
        return float(total) / max(float(weight), 1.0)
