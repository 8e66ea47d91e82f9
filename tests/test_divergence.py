"""A run whose loss becomes NaN stops at once and is a row marked diverged, not 0 BLEU."""

import csv
import json
import math
import os

import pytest

from hpo.cli.main import main

pytestmark = pytest.mark.integration  # conftest: the test tiers

TINY = ["--gin_file=test.gin", "--gin.TRAIN_STEPS=40"]


def test_diverged_runs_stop_and_are_rows_marked_diverged(tmp_path, capsys):
    rc = main(["run", *TINY, "--strategy=fixed,guided", f"--model_dir={tmp_path}",
               "--gin.learning_rate_schedule.base_learning_rate=1e5"])  # the learning rate ×1e5
    assert rc == 0
    out = capsys.readouterr().out
    records = {r["strategy"]: r for r in json.load(open(tmp_path / "comparison.json"))}
    for strategy, record in records.items():
        diverged = record["diverged"]
        # Checked at least every 10 steps (test.gin checkpoints every 2: checked there too).
        assert diverged["step"] <= 10 and ("nan" in diverged["reason"] or "inf" in diverged["reason"]), record
        assert record["test_bleu"] is None and record["dev_bleu"] is None
        # The trainer's own count: it stopped at that step, before any checkpoint could keep a
        # NaN state (test.gin checkpoints every 2 steps, and the check runs at each).
        kept = [int(s) for s in os.listdir(tmp_path / record["run_dir"] / "checkpoints") if s.isdigit()]
        assert max(kept, default=0) == diverged["step"] - 2, (kept, diverged)
        assert record["compute_steps"] < record["train_steps"]
        assert f"{strategy:<8} seed 0: diverged at step {diverged['step']}" in out
    # The guided strategy's hyper-parameters stay finite, in the record and in its learned schedule.
    assert all(math.isfinite(v) for v in records["guided"]["hparams"].values())
    with open(tmp_path / records["guided"]["schedule_file"]) as f:
        assert all(math.isfinite(float(v)) for row in csv.DictReader(f) for v in row.values() if v != "")
    table = (tmp_path / "table.md").read_text()
    assert table.count("1 (diverged at step") == 2


def test_a_diverging_optuna_trial_fails_and_the_study_goes_on(tmp_path, capsys):
    rc = main(["run", *TINY, "--strategy=optuna", f"--model_dir={tmp_path}", "--gin.TRAIN_STEPS=8",
               "--gin.OptunaSearch.n_trials=3", "--gin.OptunaSearch.sampler='random'",
               "--gin.OptunaSearch.search_space={'learning_rate': {'choices': [1.0, 1e5]}}"])
    assert rc == 0, capsys.readouterr().err
    record = json.load(open(tmp_path / "comparison.json"))[0]
    trials = [(t["number"], t["params"]["learning_rate"], t["state"]) for t in record["trials"]]
    # Seed 0 draws 1e5 first: the study goes on after a diverged trial.
    assert trials == [(0, 1e5, "FAIL"), (1, 1e5, "FAIL"), (2, 1.0, "COMPLETE")], trials
    failed = [t for t in record["trials"] if t["state"] == "FAIL"]
    assert all(t["fail_reason"].startswith("diverged at step") for t in failed)
    assert record["hparams"]["learning_rate"] == 1.0 and record["test_bleu"] is not None
    assert "diverged" not in record
