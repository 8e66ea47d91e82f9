"""The trainer: resume equals an uninterrupted run; data parallelism equals one device."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import DiesAt
from hpo.data import pipeline
from hpo.strategies.fixed import Fixed

pytestmark = pytest.mark.integration  # conftest: the test tiers


def test_resume_after_a_kill_gives_the_same_loss_as_an_uninterrupted_run(tiny_experiment, tmp_path, monkeypatch):
    exp = tiny_experiment("TRAIN_STEPS = 6", "Experiment.checkpoint_every = 2")
    whole = Fixed().run(exp, seed=0)

    real = pipeline.train_batches

    def killed_after_three(config, *args, **kwargs):  # the process dies after step 3; the last checkpoint is step 2
        return DiesAt(real(config, *args, **kwargs), at=3)

    other = tiny_experiment("TRAIN_STEPS = 6", "Experiment.checkpoint_every = 2",
                            f"MODEL_DIR = '{tmp_path / 'interrupted'}'")
    monkeypatch.setattr(pipeline, "train_batches", killed_after_three)
    try:
        Fixed().run(other, seed=0)
        raise AssertionError("the run should have been interrupted")
    except KeyboardInterrupt:
        pass
    assert sorted(os.listdir(other.run_dir("fixed", 0, "checkpoints"))) == ["2"]
    monkeypatch.setattr(pipeline, "train_batches", real)
    resumed = Fixed().run(other, seed=0)
    assert resumed["dev_loss"] == whole["dev_loss"]
    assert resumed["test_bleu"] == whole["test_bleu"]
    np.testing.assert_array_equal(
        open(os.path.join(other.model_dir, resumed["hypotheses"])).read(),
        open(os.path.join(exp.model_dir, whole["hypotheses"])).read())


def test_data_parallel_loss_equals_one_device(tmp_path):
    script = textwrap.dedent(f"""
        import functools, jax, numpy as np
        from hpo.cli import gin_config as config
        from hpo.data import pipeline
        from hpo.engine.experiment import Experiment
        from hpo.engine.trainer import DataParallel, init_state, train_step
        from hpo.method import optim
        config.parse(["test.gin"], ["MODEL_DIR = '{tmp_path}'", "BATCH_SIZE = 8"])
        exp = Experiment()
        assert jax.device_count() == 4
        hp = {{k: np.float32(v) for k, v in exp.base_hparams().items()}}
        losses = []
        for devices in (jax.devices()[:1], jax.devices()):
            par = DataParallel(devices)
            tx = optim.make_optimizer(exp.optimizer)
            step = par.jit_step(lambda s, b: train_step(s, b, hp, model=exp.model, tx=tx, schedule=exp.schedule))
            state = par.put_state(init_state(exp.model, tx, 0, exp.data.task_feature_lengths))
            data = pipeline.train_batches(exp.data)
            run = []
            for _ in range(3):
                state, m = step(state, par.put_batch(next(data)))
                run.append(float(m["loss"]))
            losses.append(run)
        print(losses)
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
        """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
