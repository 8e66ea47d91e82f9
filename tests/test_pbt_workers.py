"""One PBT population trained by four `hpo run` workers on one MODEL_DIR and one storage
(SQLite, PostgreSQL), one of them killed inside a member's segment: nothing is lost, nothing
runs twice, and the population decides as one worker alone does.

The members' training is a fast stand-in (the coordination is what this tests: who trains
which member's segment, who plans and copies a round, who writes the row); tests/test_pbt.py
and the kill harness run real members.
"""

import json
import math
import os
import pathlib
import time
import types
from collections import Counter

import optuna
import pytest

import warm
from hpo.cli import gin_config
from hpo.core import faults
from hpo.engine.experiment import Experiment
from hpo.flow import records
from hpo.strategies.population_store import PopulationStore

pytestmark = pytest.mark.integration  # conftest: the test tiers

SEGMENT_SECONDS = 0.5


def _checkpoints(member_dir):
    folder = os.path.join(member_dir, "ckpt")
    return sorted(int(n.split(".")[0]) for n in os.listdir(folder)) if os.path.isdir(folder) else []


def _read(member_dir, step):
    with open(os.path.join(member_dir, "ckpt", f"{step}.json")) as f:
        return json.load(f)


def _write(member_dir, step, checkpoint):
    os.makedirs(os.path.join(member_dir, "ckpt"), exist_ok=True)
    path = os.path.join(member_dir, "ckpt", f"{step}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(checkpoint, f)
    os.rename(path + ".tmp", path)


def _fit(checkpoint, step):
    return types.SimpleNamespace(state=None, diverged=None, eval_history=[{"step": step, "loss": 10.0 - checkpoint["w"]}])


def fake_train_member(self, program, member_dir, seed, values, until):
    """A member's segment: w grows fastest at learning rate 3; a checkpoint (w and the values)
    at its end. Each segment leaves `started` (its step and this pid) and `ran-<step>`, which
    only one run may create."""
    done = _checkpoints(member_dir)
    if until in done:  # a segment whose checkpoint was written: restored, not trained again
        return _fit(_read(member_dir, until), until)
    start = done[-1] if done else 0
    checkpoint = _read(member_dir, start) if done else {"w": 0.0, "values": dict(values)}
    os.makedirs(member_dir, exist_ok=True)
    with open(os.path.join(member_dir, "started"), "a") as f:
        f.write(f"{until} {os.getpid()}\n")
    if os.environ.get("HPO_STOP_AT"):  # the worker to be killed holds its member until another trains
        while len(list(pathlib.Path(member_dir).parent.glob("member_*/started"))) < 2:
            time.sleep(0.05)
    faults.point("training")  # inside the segment: where HPO_STOP_AT=training@N stops this worker
    time.sleep(SEGMENT_SECONDS)
    rate = checkpoint["values"]["learning_rate"]
    w = checkpoint["w"] + (until - start) / (1.0 + math.log(rate / 3.0) ** 2)
    with open(os.path.join(member_dir, f"ran-{until}"), "x") as f:  # "x": a second run fails
        f.write(str(os.getpid()))
    checkpoint = {"w": w, "values": checkpoint["values"]}
    _write(member_dir, until, checkpoint)
    return _fit(checkpoint, until)


def fake_copy_member(self, program, source_dir, target_dir, seed, step, values):
    for later in _checkpoints(target_dir):
        if later >= step:
            os.remove(os.path.join(target_dir, "ckpt", f"{later}.json"))
    _write(target_dir, step, {"w": _read(source_dir, step)["w"], "values": dict(values)})


def fake_member_record(self, strategy, seed, run_dir, fit, member_dir, member_seed, wall_seconds, compute_steps):
    w = 10.0 - fit.eval_history[-1]["loss"]
    scores = {"dev_bleu": w, "dev_chrf": w, "test_bleu": w - 1.0, "test_chrf": w - 1.0, "bleu_signature": "sig",
              "chrf_signature": "sig", "hypotheses": None, "test_sentences": 16}
    record = records.run_record(self, strategy, seed, os.path.relpath(run_dir, self.model_dir),
                                history=fit.eval_history, wall_seconds=wall_seconds, step_cost=1.0,
                                num_params=0, scores=scores)
    record["compute_steps"] = float(compute_steps)
    return record


def _worker(i, model_dir, storage, count):
    """Worker i of `count` (a process of its own: tests/warm.py) on the shared population."""
    from hpo.cli.main import main
    Experiment.member_program = lambda self, names, groups=None: types.SimpleNamespace(streams={})
    Experiment.train_member, Experiment.copy_member = fake_train_member, fake_copy_member
    Experiment.member_record = fake_member_record
    gin_config.parse(["test.gin"], [f"MODEL_DIR = '{model_dir}'"])
    # Worker 0 starts alone; the others join once it is inside its first segment, so it always
    # has one to be killed in, however the machine schedules four processes.
    deadline = time.monotonic() + 120
    while i > 0 and not list(pathlib.Path(model_dir).glob("pbt/seed0/member_*/started")):
        assert time.monotonic() < deadline, "worker 0 never started a segment"
        time.sleep(0.05)
    return main(["run", "--strategy=pbt", "--gin_file=test.gin", f"--model_dir={model_dir}", "--gin.TRAIN_STEPS=6",
                 "--gin.Pbt.population=4", "--gin.Pbt.interval=2", f"--gin.Pbt.storage={storage!r}"])


def _population(record):
    return {k: record["pbt"][k] for k in ("exploits", "best_member", "members")} | {
        "dev_loss": record["dev_loss"], "anytime": record["anytime"], "compute_steps": record["compute_steps"]}


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_four_workers_train_one_population_and_survive_a_kill(tmp_path, database, request):
    alone = tmp_path / "alone"
    alone.mkdir()
    reference = warm.Process(_worker, 0, str(alone), f"sqlite:///{alone}/population.db", 1)
    assert reference.wait(timeout=300) == 0, reference.communicate()[1][-3000:]

    shared = tmp_path / "shared"
    shared.mkdir()
    storage = f"sqlite:///{shared}/population.db" if database == "sqlite" else request.getfixturevalue("postgres_url")
    # Worker 0 kills itself (SIGKILL) inside its first segment, holding that member's lock, once
    # another worker trains.
    workers = [warm.Process(_worker, i, str(shared), storage, 4,
                            env={"HPO_STOP_AT": "training@1" if i == 0 else ""}) for i in range(4)]
    assert workers[0].wait(timeout=300) == -9, workers[0].communicate()[1][-3000:]
    for w in workers[1:]:
        assert w.ended(timeout=300) == 0, w.communicate()[1][-3000:]

    # Nothing run twice: each member's segment ran to its end once; the one worker 0 was inside
    # was started twice, first by worker 0, and finished by another.
    started, killed = {}, []
    for member in sorted(shared.glob("pbt/seed0/member_*")):
        lines = [line.split() for line in (member / "started").read_text().splitlines()]
        started[member.name] = Counter(step for step, _ in lines)
        assert sorted(int(p.name.split("-")[1]) for p in member.glob("ran-*")) == sorted(int(s) for s in started[member.name])
        killed += [(member.name, step) for step, pid in lines
                   if pid == str(workers[0].pid) and (member / f"ran-{step}").read_text() != pid]
    twice = [(m, s) for m, counts in started.items() for s, n in counts.items() if n > 1]
    assert len(killed) == 1 and twice == killed, (started, killed)
    pids = {line.split()[1] for m in shared.glob("pbt/seed0/member_*") for line in (m / "started").read_text().splitlines()}
    assert len(pids - {str(workers[0].pid)}) >= 2, pids  # the population was shared, not trained by one

    # Nothing lost: the population and its row are those of one worker alone; one row, one state.
    ours, theirs = (json.load(open(d / "comparison.json")) for d in (shared, alone))
    assert len(ours) == 1 and ours[0]["strategy"] == "pbt"
    assert _population(ours[0]) == _population(theirs[0])
    assert len(ours[0]["pbt"]["exploits"]) == 2 and ours[0]["compute_steps"] == 24.0
    name, = [n for n in optuna.get_all_study_names(storage) if n.startswith("pbt-")]
    state = PopulationStore(storage, name, str(shared), 10.0).read()
    assert state["round"] == 2 and state["pending"] is None and state["record"]["created"] == ours[0]["created"]
