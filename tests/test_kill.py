"""SIGKILL at random moments, reruns, and nothing lost: the kill harness on a tiny config."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import kill_harness  # noqa: E402
import warm  # noqa: E402


def test_twenty_one_stops_lose_nothing_a_third_of_them_preemptions(tmp_path):
    """Guided in forward mode: its tangents go with each checkpoint (one-step guided resumes are
    tested by test_guided.py and test_horizon.py). Every third stop is SIGTERM: the run exits
    with 143 within its grace, its newest checkpoint at the step it stopped (the rerun's start)."""
    report = kill_harness.run(str(tmp_path), ["--gin_file=test.gin", "--gin.TRAIN_STEPS=20",
                                              "--gin.Guided.mode='forward'", "--gin.Preemption.grace_seconds=8"],
                              kills_per_strategy=7, window=2.0, n_trials=3, launch=warm.Hpo, preempt_every=3)
    kills, preemptions = report["kills"], report["preemptions"]
    assert sum(map(len, kills.values())) >= 21, kills
    assert kills["fixed"] and kills["guided"] and kills["optuna"], kills
    assert report["problems"] == []
    stopped = [p for stops in preemptions.values() for p in stops if p["status"] == 143]
    assert len(stopped) >= 4 and all(p["seconds"] < 8 + 5 for p in stopped), preemptions
    assert any(p["step"] for p in stopped), preemptions  # mid-training: checked against its checkpoint
