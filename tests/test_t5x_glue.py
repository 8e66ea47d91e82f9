"""T5 pretraining -> GLUE on the T5X backend (its own file: with test_t5x.py the suite's
longest, so the two can run on separate workers)."""

import os

import numpy as np
import pytest

from test_t5x import _finish, _hpo, _records

pytestmark = pytest.mark.integration  # conftest: the test tiers


def test_t5_pretraining_scored_on_glue_with_every_strategy(tmp_path):
    """T5X pretraining (span corruption) with each strategy, each model then fine-tuned by a
    second T5X run and scored on GLUE dev: GLUE rows, as on the built-in engine."""
    out = _finish(_hpo("run", "--backend=t5x", "--gin_file=t5x/test_glue.gin", "--strategy=fixed,guided,optuna",
                       f"--model_dir={tmp_path}"))
    records = _records(str(tmp_path))
    assert sorted(records) == ["fixed", "guided", "optuna"]
    for strategy, record in records.items():
        assert record["backend"] == "t5x" and record["benchmark"] == "glue"
        assert sorted(record["glue"]) == ["cola", "stsb"] and record["glue_synthetic"] is True
        assert all(r["num_examples"] == 16 for r in record["glue"].values())
        assert np.isfinite(record["glue_average"]) and np.isfinite(record["dev_loss"])
        assert record["finetune"]["train_steps"] == 2 and record["wall_seconds"] > record["finetune"]["wall_seconds"]
        run = os.path.join(str(tmp_path), record.get("selected_run_dir") or record["run_dir"])
        assert "checkpoint_2" in os.listdir(os.path.join(run, "finetune"))  # T5X's own fine-tuning run
        assert len(open(os.path.join(run, "glue", "synthetic_cola.dev.pred")).read().splitlines()) == 16
        assert f"| {strategy} [t5x] |" in out
    assert records["optuna"]["study"]["objective"] == "dev_loss"
    assert records["guided"]["learned_schedule"]["learning_rate"]["final"] != 1.0
