"""SIGKILL at random moments, reruns, and nothing lost: the kill harness on a tiny config."""

import os
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import kill_harness  # noqa: E402
import warm  # noqa: E402
from hpo.core import faults  # noqa: E402

pytestmark = pytest.mark.integration  # conftest: the test tiers


def test_twenty_one_stops_lose_nothing_a_third_of_them_preemptions(tmp_path):
    """Seven stops per strategy, in every phase (training, checkpoint write, evaluation, record
    write, Optuna's trial) and at random moments. Guided in forward mode: its tangents go with
    each checkpoint (one-step guided resumes are tested by test_guided.py and test_horizon.py).
    Every third stop is SIGTERM: the run exits with 143 within its grace, its newest checkpoint
    at the step it stopped (the rerun's start)."""
    report = kill_harness.run(str(tmp_path), ["--gin_file=test.gin", "--gin.TRAIN_STEPS=20",
                                              "--gin.Guided.mode='forward'", "--gin.Preemption.grace_seconds=8"],
                              kills_per_strategy=7, window=2.0, n_trials=3, launch=warm.Hpo, preempt_every=3)
    print(kill_harness.describe(report))  # shown with -s, and with a failure
    kills, preemptions = report["kills"], report["preemptions"]
    assert {s: len(k) for s, k in kills.items()} == {"fixed": 7, "guided": 7, "optuna": 7}, kills
    for strategy, stops in kills.items():  # every phase stopped in at least once (the harness checks it too)
        assert set(kill_harness.phases_of(strategy)) <= {k.split(" ")[0] for k in stops}, (strategy, stops)
    assert report["problems"] == []
    stopped = [p for stops in preemptions.values() for p in stops if p["status"] == 143]
    assert len(stopped) >= 4 and all(p["seconds"] < 8 + 5 for p in stopped), preemptions
    assert any(p["step"] for p in stopped), preemptions  # mid-training: checked against its checkpoint


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Five fault points; a SIGTERM is noted and the process goes on (as hpo's handler lets a run finish its step).
POINTS = ("import signal\nfrom hpo.core import faults\n"
          "signal.signal(signal.SIGTERM, lambda *_: print('SIGTERM', flush=True))\n"
          "for phase in ['training', 'record', 'training', 'record', 'training']:\n"
          "    faults.point(phase); print(phase, flush=True)\n")


def test_a_fault_point_stops_its_process_at_the_nth_point_of_its_phase(tmp_path):
    phase_file = str(tmp_path / "phase")

    def run(stop_at):
        env = {**os.environ, "HPO_PHASE_FILE": phase_file, "HPO_STOP_AT": stop_at}
        done = subprocess.run([sys.executable, "-c", POINTS], env=env, capture_output=True, text=True, cwd=REPO)
        return done.returncode, done.stdout.split()

    assert run("training@4:TERM,record@2") == (-signal.SIGKILL, ["training", "record", "training"])
    last, stopped, sent = faults.read_phase(phase_file)
    assert last == stopped == "record" and sent is not None
    # One stop a process: the SIGTERM's, after which it carries on to its end.
    assert run("record@1:TERM,training@2") == (0, ["training", "SIGTERM", "record", "training", "record", "training"])
    assert run("record@3:TERM") == (0, ["training", "record", "training", "record", "training"])  # never reached
    assert faults.read_phase(phase_file) == ("training", None, None)


def test_a_pbt_population_stopped_six_times_loses_nothing(tmp_path):
    """PBT (3 members, 3 rounds, 2 exploits) stopped in every phase — a member's training, a
    checkpoint write (a segment's or an exploit's copy), an evaluation, a write of the
    population's state — and at a random moment, every third stop a SIGTERM: every member's
    steps, scores, values and lineage, every exploit, the schedule and the row equal the
    uninterrupted population's."""
    report = kill_harness.run(str(tmp_path), ["--gin_file=test.gin", "--gin.TRAIN_STEPS=12", "--gin.Pbt.population=3",
                                              "--gin.Pbt.interval=4", "--gin.Preemption.grace_seconds=8"],
                              kills_per_strategy=6, window=2.0, launch=warm.Hpo, preempt_every=3, strategies=("pbt",))
    print(kill_harness.describe(report))
    stops = report["kills"]["pbt"]
    assert len(stops) == 6, stops
    assert set(kill_harness.phases_of("pbt")) <= {k.split(" ")[0] for k in stops}, stops
    assert report["problems"] == []
