"""SIGKILL at random moments, reruns, and nothing lost: the kill harness on a tiny config."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import kill_harness  # noqa: E402
import warm  # noqa: E402


def test_twenty_one_kills_lose_nothing(tmp_path):
    """Guided in forward mode: its tangents go with each checkpoint (one-step guided resumes are
    tested by test_guided.py and test_horizon.py)."""
    report = kill_harness.run(str(tmp_path), ["--gin_file=test.gin", "--gin.TRAIN_STEPS=20",
                                              "--gin.Guided.mode='forward'"],
                              kills_per_strategy=7, window=2.0, n_trials=3, launch=warm.Hpo)
    kills = report["kills"]
    assert sum(map(len, kills.values())) >= 21, kills
    assert kills["fixed"] and kills["guided"] and kills["optuna"], kills
    assert report["problems"] == []
