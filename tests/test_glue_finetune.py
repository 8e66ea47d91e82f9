"""T5's second experiment end to end on a tiny budget: span-corruption pretraining
with each strategy, the same fine-tuning on GLUE-format tasks, GLUE rows."""

import json
import os

import pytest

from hpo.cli.main import main
from hpo.scoring import glue_metrics

pytestmark = pytest.mark.integration  # conftest: the test tiers

TINY_T5 = ["--gin_file=t5/embedded.gin", "--gin_file=test.gin",
           "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
           "--gin.synthetic_pretraining_task.num_train=300", "--gin.synthetic_pretraining_task.num_dev=16",
           "--gin.synthetic_glue_task.num_train=64", "--gin.synthetic_glue_task.num_dev=16",
           "--gin.GlueFinetuning.train_steps=3", "--gin.GlueFinetuning.batch_size=8",
           "--gin.GlueFinetuning.task_feature_lengths={'inputs': 48, 'targets': 4}",
           "--gin.GlueFinetuning.tasks=['cola', 'stsb']",  # a classification and a regression task
           "--gin.OptunaSearch.n_trials=1"]


def test_pretrain_finetune_score_with_every_strategy(tmp_path, capsys):
    assert main(["run", *TINY_T5, "--strategy=fixed,guided,optuna", f"--model_dir={tmp_path}"]) == 0
    records = json.load(open(tmp_path / "comparison.json"))
    assert sorted(r["strategy"] for r in records) == ["fixed", "guided", "optuna"]
    for record in records:
        assert record["benchmark"] == "glue" and record["task"] == "synthetic_pretraining"
        assert record["glue_synthetic"] is True
        assert sorted(record["glue"]) == ["cola", "stsb"]
        for result in record["glue"].values():
            assert result["num_examples"] == 16 and 0 <= result["invalid"] <= 16
        scores = {k: v["score"] for k, v in record["glue"].items()}
        assert record["glue_average"] == pytest.approx(glue_metrics.glue_average(scores))
        assert record["dev_loss"] > 0 and record["finetune"]["train_steps"] == 3
    guided = next(r for r in records if r["strategy"] == "guided")
    assert guided["compute_steps"] == pytest.approx(2 * guided["train_steps"])
    assert "learned_schedule" in guided
    optuna = next(r for r in records if r["strategy"] == "optuna")
    assert optuna["train_runs"] == 1 and optuna["study"]["objective"] == "dev_loss"
    fixed = next(r for r in records if r["strategy"] == "fixed")
    run_dir = tmp_path / fixed["run_dir"]
    assert (run_dir / "finetune" / "checkpoints").is_dir()
    predictions = (run_dir / "glue" / "synthetic_cola.dev.pred").read_text().splitlines()
    assert len(predictions) == 16
    out = capsys.readouterr().out
    assert "GLUE average" in out and "(synthetic)" in out and "CoLA" in out
    # Re-running finds every result: no training, no new rows.
    assert main(["run", *TINY_T5, "--strategy=fixed,guided,optuna", f"--model_dir={tmp_path}"]) == 0
    assert json.load(open(tmp_path / "comparison.json")) == records


def test_optuna_cannot_select_on_bleu_in_a_glue_experiment(tmp_path, capsys):
    rc = main(["run", *TINY_T5, "--strategy=optuna", "--gin.OptunaSearch.objective='dev_bleu'",
               f"--model_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "dev_bleu" in err[0] and "dev_loss" in err[0]
    assert not os.path.exists(tmp_path / "comparison.json")
