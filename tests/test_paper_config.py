"""configs/paper.gin, the paper's regime: LAMB, warm-up scaled to the budget, six hyper-parameters learned."""

import os

import gin
import numpy as np
import pytest

from hpo.cli import gin_config
from hpo.core.errors import UserError
from hpo.flow.schedules import read_schedule
from hpo.method import optim
from hpo.strategies.guided import Guided

SIX = ["learning_rate", "beta1", "beta2", "eps", "weight_decay", "label_smoothing"]


def test_warmup_fraction_scales_the_warmup_with_the_budget():
    for total in (200, 2000):
        schedule = optim.learning_rate_schedule("constant * linear_warmup * rsqrt_decay", 0.1,
                                                warmup_steps=10000, total_steps=total, warmup_fraction=0.1)
        peak = total // 10  # replaces warmup_steps
        assert float(schedule(0)) == 0.0
        assert float(schedule(peak // 2)) == pytest.approx(float(schedule(peak)) / 2, rel=1e-5)
        assert float(schedule(peak)) == pytest.approx(0.1 / np.sqrt(peak), rel=1e-5)
        assert float(schedule(total)) < float(schedule(peak))
    for bad in (-0.1, 1.5, float("nan"), "a tenth"):
        with pytest.raises(UserError, match="warmup_fraction"):
            optim.learning_rate_schedule(warmup_fraction=bad)


def test_paper_gin_leaves_the_task_and_its_budget_dependent_settings_alone():
    gin_config.parse(["default.gin", "paper.gin"], ["MODEL_DIR = '/tmp/unused'"])
    assert gin.query_parameter("Guided.travel") == 2.0  # default.gin's: 1e-2 for its 200 steps
    assert gin.query_parameter("Guided.mode") == "forward"  # the shipped configs' guided variant
    assert gin.query_parameter("%TRAIN_STEPS") == 200
    assert gin.query_parameter("Guided.tune") == SIX
    gin_config.parse(["paper.gin"], [])  # alone, on base.gin's task
    assert gin.query_parameter("OptimizerConfig.name") == "lamb"


def _learning_rates_logged(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    import tensorflow as tf
    events = EventAccumulator(os.path.join(run_dir, "train"), size_guidance={"tensors": 0})
    events.Reload()
    # The summary at step s+1 holds the rate step s was taken with.
    return np.array([float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("learning_rate")])


@pytest.mark.integration
def test_a_guided_run_in_the_paper_regime_learns_all_six_with_lamb_and_warmup(tiny_experiment):
    exp = tiny_experiment("TRAIN_STEPS = 20", "Experiment.checkpoint_every = 20",
                          gin_files=("test.gin", "paper.gin"))
    strategy = Guided()
    assert strategy.bound == 10.0 and strategy.tune == tuple(SIX)
    record = strategy.run(exp, seed=0)

    assert "OptimizerConfig.name = 'lamb'" in record["gin_config"] and exp.optimizer.beta1 == 0.9
    assert record["guided"]["tune"] == SIX
    assert record["guided"]["guide_batch_size"] == exp.batch_size
    assert all(count == 0 for count in record["nonfinite_hypergrad_steps"].values())
    schedule = read_schedule(os.path.join(exp.model_dir, record["schedule_file"]))
    for name in SIX:
        values = schedule[name]
        assert len(values) == 20 and np.isfinite(values).all(), name
        assert values[-1] != values[0], f"{name} was not learned"  # moved by the meta-optimizer
        assert np.isfinite(list(record["learned_schedule"][name].values())).all(), name

    # Warm-up over 10% of the 20 steps: rate 0 at step 0, half the peak at step 1,
    # the peak at step 2, then 1/sqrt(step); each times the learned multiplier.
    logged = _learning_rates_logged(os.path.join(exp.model_dir, record["run_dir"]))
    np.testing.assert_allclose(logged, np.array([float(exp.schedule(s)) for s in range(20)])
                               * schedule["learning_rate"], rtol=1e-5, atol=1e-12)
    assert logged[0] == 0.0 < logged[1] < logged[2] and logged[-1] < logged[2]
