"""No recompilation after the first step: a real run traces each of its steps once.

Counters inside the step functions run only while jax traces them (a
compiled call never re-enters the Python body), so a count above one means
a later step or evaluation was traced, and compiled, again.
"""

import functools

import pytest

from hpo.engine import experiment as experiment_module
from hpo.engine.models import decoding
from hpo.strategies.fixed import Fixed

pytestmark = pytest.mark.integration  # conftest: the test tiers


def _counting(fn, counts, key):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        counts[key] += 1
        return fn(*args, **kwargs)
    return wrapper


def test_train_eval_and_decode_steps_are_traced_once(tiny_experiment, monkeypatch):
    # Evaluations at steps 2 and 4; 12 dev sentences make a full and a padded eval batch.
    exp = tiny_experiment("TRAIN_STEPS = 4", "Experiment.eval_every = 2", "Experiment.dev_eval_examples = 12")
    counts = {"train": 0, "eval": 0, "decode": 0}
    monkeypatch.setattr(experiment_module, "train_step", _counting(experiment_module.train_step, counts, "train"))
    monkeypatch.setattr(experiment_module, "eval_step", _counting(experiment_module.eval_step, counts, "eval"))
    monkeypatch.setattr(decoding, "greedy_decode", _counting(decoding.greedy_decode, counts, "decode"))
    record = Fixed().run(exp, seed=0)
    assert [h["step"] for h in record["dev_history"]] == [2, 4]
    assert counts["train"] == 1, f"train step traced {counts['train']} times in 4 steps"
    assert counts["eval"] == 1, f"eval step traced {counts['eval']} times in 2 evaluations"
    # Decoding (2 dev evaluations, final dev and test) is jitted per model and shape
    # across the whole session, so an earlier test may already have compiled it.
    assert counts["decode"] <= 1, f"greedy decoding traced {counts['decode']} times"
