"""The Optuna strategy: reproducible, resumable, robust to failures, shareable by workers.

Most tests replace the training run of a trial by a fast stand-in (the study
mechanics are what they test); one runs real tiny trials end to end.
"""

import json
import os
import threading
import time

import optuna
import pytest

import warm
from hpo.cli import gin_config
from hpo.flow import records
from hpo.strategies import fixed, places
from hpo.strategies.optuna_search import OptunaSearch

SPACE = {"learning_rate": {"low": 0.1, "high": 10.0, "log": True}, "label_smoothing": {"choices": [0.0, 0.1]}}


def fake_run(self, experiment, seed, run_dir=None, **kwargs):
    """A stand-in for a training run: dev BLEU peaks at learning_rate 3."""
    lr = self.hparams["learning_rate"]
    if lr > 9.0:
        raise FloatingPointError("diverged")
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "ran"), "x") as f:  # "x": a second run of this trial would fail
        f.write(str(os.getpid()))
    return _fake_result(self, experiment, run_dir)


def _fake_result(self, experiment, run_dir):
    import math
    lr = self.hparams["learning_rate"]
    bleu = 50.0 - 10.0 * (math.log(lr) - math.log(3.0)) ** 2
    return {"dev_bleu": bleu, "dev_loss": 1.0, "test_bleu": bleu - 1, "test_chrf": 60.0, "dev_chrf": 61.0,
            "wall_seconds": 0.1, "compute_steps": 4.0, "bleu_signature": "sig",
            "hypotheses": os.path.relpath(os.path.join(run_dir, "test.hyp"), experiment.model_dir),
            "test_sentences": 16}


@pytest.fixture
def fake_training(monkeypatch):
    monkeypatch.setattr(fixed.Fixed, "run", fake_run)


def _trials(record):
    return [(t["number"], t["state"], t["params"].get("learning_rate")) for t in record["trials"]]


@pytest.mark.integration
def test_study_is_reproducible_from_its_seed(tiny_experiment, tmp_path, fake_training):
    a = OptunaSearch(SPACE, n_trials=3).run(tiny_experiment(), seed=7)
    b = OptunaSearch(SPACE, n_trials=3).run(tiny_experiment(f"MODEL_DIR = '{tmp_path / 'again'}'"), seed=7)
    assert _trials(a) == _trials(b) and len(a["trials"]) == 3
    c = OptunaSearch(SPACE, n_trials=3).run(tiny_experiment(f"MODEL_DIR = '{tmp_path / 'other'}'"), seed=8)
    assert _trials(c) != _trials(a)


@pytest.mark.integration
def test_startup_trials_set_when_the_sampler_starts_modelling(tiny_experiment, tmp_path, fake_training):
    early = OptunaSearch(SPACE, n_trials=5, startup_trials=2).run(tiny_experiment(), seed=7)
    late = OptunaSearch(SPACE, n_trials=5).run(tiny_experiment(f"MODEL_DIR = '{tmp_path / 'late'}'"), seed=7)
    assert _trials(early)[:2] == _trials(late)[:2]  # the same seeded random start
    assert _trials(early)[2:] != _trials(late)[2:]  # then TPE against still random
    assert early["study"]["startup_trials"] == 2


@pytest.mark.integration
def test_rerun_counts_trials_as_a_total(tiny_experiment, fake_training):
    exp = tiny_experiment()
    assert len(OptunaSearch(SPACE, n_trials=2).run(exp, seed=0)["trials"]) == 2
    assert len(OptunaSearch(SPACE, n_trials=2).run(exp, seed=0)["trials"]) == 2  # nothing new
    record = OptunaSearch(SPACE, n_trials=4).run(exp, seed=0)
    assert [t["number"] for t in record["trials"]] == [0, 1, 2, 3]
    rows = json.load(open(os.path.join(exp.model_dir, "comparison.json")))
    assert len(rows) == 1 and rows[0]["train_runs"] == 4


@pytest.mark.integration
def test_selection_uses_dev_and_reports_the_selected_trial(tiny_experiment, fake_training):
    record = OptunaSearch({"learning_rate": {"choices": [1.0, 3.0, 5.0]}}, n_trials=6,
                          sampler="random").run(tiny_experiment(), seed=0)
    assert record["hparams"]["learning_rate"] == 3.0
    assert record["dev_bleu"] == pytest.approx(50.0) and record["test_bleu"] == pytest.approx(49.0)


@pytest.mark.integration
def test_each_trial_keeps_its_scores_test_too(tiny_experiment, fake_training):
    """At equal compute (equal_compute) a trial the study did not select can be the one reported."""
    record = OptunaSearch({"learning_rate": {"choices": [1.0, 3.0, 5.0]}}, n_trials=3,
                          sampler="random").run(tiny_experiment(), seed=0)
    for trial in record["trials"]:
        assert trial["test_bleu"] == pytest.approx(trial["dev_bleu"] - 1) and trial["test_chrf"] == 60.0
        assert trial["hypotheses"].endswith(f"trial_{trial['number']}/test.hyp") and trial["test_sentences"] == 16


@pytest.mark.integration
def test_a_failing_trial_is_recorded_and_the_study_goes_on(tiny_experiment, fake_training):
    space = {"learning_rate": {"choices": [9.5, 2.0]}}
    exp = tiny_experiment()
    record = OptunaSearch(space, n_trials=4, sampler="random").run(exp, seed=0)  # draws 2.0, 2.0, 9.5, 2.0
    states = [t["state"] for t in record["trials"]]
    assert len(states) == 4 and "FAIL" in states and "COMPLETE" in states
    failed = [t for t in record["trials"] if t["state"] == "FAIL"]
    assert all("diverged" in t["fail_reason"] for t in failed)
    assert record["hparams"]["learning_rate"] == 2.0


def slow_fake_run(self, experiment, seed, run_dir=None, **kwargs):
    """`fake_run` that takes a while, leaving a mark when it starts and when it is done."""
    import time
    if os.path.exists(os.path.join(run_dir, "done")):  # a finished run resumed (its result was not told)
        return _fake_result(self, experiment, run_dir)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "started"), "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(1.5)
    os.rename(os.path.join(run_dir, "started"), os.path.join(run_dir, "done"))
    return fake_run(self, experiment, seed, run_dir=run_dir, **kwargs)


def _shared_study_worker(i, tmp_path, storage, search=None):
    """Worker i ("host" i) of the shared study: a process of its own (tests/warm.py)."""
    import pathlib
    from hpo.cli.main import main
    fixed.Fixed.run = slow_fake_run
    places.socket.gethostname = lambda: f"host{i}"  # four machines, as far as the study sees
    gin_config.parse(["test.gin"], [f"MODEL_DIR = '{tmp_path}/w{i}'"])
    pathlib.Path(tmp_path, f"ready{i}").touch()
    while len(list(pathlib.Path(tmp_path).glob("ready*"))) < 4:  # all start together
        time.sleep(0.05)
    search = {"study_name": "shared", "heartbeat_seconds": 3, **(search or {})}
    bindings = [f"--gin.OptunaSearch.{k}={v!r}" for k, v in search.items()]
    return main(["run", "--strategy=optuna", "--gin_file=test.gin", f"--model_dir={tmp_path}/w{i}",
                 f"--gin.OptunaSearch.search_space={SPACE!r}", "--gin.OptunaSearch.n_trials=8",
                 f"--gin.OptunaSearch.storage={storage!r}", *bindings])


@pytest.mark.integration
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_four_workers_share_one_study_and_survive_a_kill(tmp_path, database, request):
    """Four workers ("hosts" 0-3) on one study; worker 0 is killed in the middle of a trial.
    The others fail it by its missed heartbeat and retry it: every place is done once."""
    storage = (f"sqlite:///{tmp_path / 'shared.db'}" if database == "sqlite"
               else request.getfixturevalue("postgres_url"))
    workers = [warm.Process(_shared_study_worker, i, str(tmp_path), storage) for i in range(4)]
    deadline = time.time() + 120
    while not list(tmp_path.glob("w0/optuna/seed0/trial_*/started")):  # worker 0 is mid-trial
        assert time.time() < deadline and workers[0].poll() is None, workers[0].communicate()[1][-3000:]
        time.sleep(0.05)
    workers[0].kill()
    for w in workers[1:]:
        assert w.ended(timeout=300) == 0, w.communicate()[1][-2000:]
    killed = int(list(tmp_path.glob("w0/optuna/seed0/trial_*/started"))[0].parent.name.split("_")[1])
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    attempts = places.places(trials, 8)
    assert len(attempts) == 8 and all(a[-1].state == optuna.trial.TrialState.COMPLETE for a in attempts.values())
    assert [t.state for t in attempts[killed]] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert attempts[killed][1].params == attempts[killed][0].params  # the same trial, run again
    assert all(len(a) == 1 for n, a in attempts.items() if n != killed)
    done = sorted(int(p.parent.name.split("_")[1]) for p in tmp_path.glob("w*/optuna/seed0/trial_*/done"))
    assert done == sorted(attempts), done  # each place ran to its end once (the retry under its first number)
    for w in ("w1", "w2", "w3"):  # every surviving worker reports the whole study
        record = json.load(open(tmp_path / w / "comparison.json"))[0]
        assert [t["number"] for t in record["trials"]] == sorted(attempts)
        assert [t["attempts"] for t in record["trials"] if t["number"] == killed] == [2]


def _worker_whose_heartbeats_miss(tmp_path, storage):
    """Host 0, whose heartbeat thread never reaches the storage (a SQLite file locked by other
    workers, a saturated server: the storage skips a missed heartbeat), and whose first write of
    any heartbeat misses too; then mid-trial for good."""
    import sqlalchemy
    from optuna.storages import RDBStorage
    from hpo.cli.main import main
    from hpo.strategies.storage import ReconnectingStorage
    ReconnectingStorage.record_heartbeat = lambda self, trial_id: None  # the thread's: all missed
    write, missed = RDBStorage.record_heartbeat, []

    def record_heartbeat(self, trial_id):
        if not missed:
            missed.append(trial_id)
            raise sqlalchemy.exc.OperationalError("UPDATE trial_heartbeats", {}, Exception("database is locked"))
        return write(self, trial_id)
    RDBStorage.record_heartbeat = record_heartbeat

    def endless_run(self, experiment, seed, run_dir=None, **kwargs):
        os.makedirs(run_dir, exist_ok=True)
        open(os.path.join(run_dir, "started"), "w").close()
        time.sleep(600)
    fixed.Fixed.run = endless_run
    places.socket.gethostname = lambda: "host0"
    gin_config.parse(["test.gin"], [f"MODEL_DIR = '{tmp_path}/w0'"])
    return main(["run", "--strategy=optuna", "--gin_file=test.gin", f"--model_dir={tmp_path}/w0",
                 f"--gin.OptunaSearch.search_space={SPACE!r}", "--gin.OptunaSearch.n_trials=1",
                 f"--gin.OptunaSearch.storage={storage!r}", "--gin.OptunaSearch.study_name='missed'",
                 "--gin.OptunaSearch.heartbeat_seconds=1"])


@pytest.mark.integration
def test_a_worker_killed_before_its_heartbeat_thread_wrote_is_still_retried(tmp_path, tiny_experiment,
                                                                             fake_training):
    """Optuna never fails a RUNNING trial that has no heartbeat: a worker killed before its
    heartbeat thread's first write landed left its place RUNNING, and every other worker
    waiting for it, for ever (CI saw four SQLite workers hang so)."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    worker = warm.Process(_worker_whose_heartbeats_miss, str(tmp_path), storage)
    deadline = time.time() + 120
    while not list(tmp_path.glob("w0/optuna/seed0/trial_*/started")):
        assert time.time() < deadline and worker.poll() is None, worker.communicate()[1][-3000:]
        time.sleep(0.05)
    worker.kill()
    exp = tiny_experiment(f"MODEL_DIR = '{tmp_path / 'w1'}'")
    search = OptunaSearch(SPACE, n_trials=1, storage=storage, study_name="missed", heartbeat_seconds=1)
    done = {}
    runner = threading.Thread(target=lambda: done.update(record=search.run(exp, seed=0)), daemon=True)
    runner.start()
    runner.join(timeout=90)  # a retry takes seconds; without a heartbeat the wait had no end
    assert "record" in done, "the killed worker's trial was never failed and retried"
    assert [(t["number"], t["state"], t["attempts"]) for t in done["record"]["trials"]] == [(0, "COMPLETE", 2)]


@pytest.mark.integration
def test_each_way_a_storage_fails_to_open_has_its_own_line(postgres_url):
    from helpers import PASSWORD, PASSWORD_USER
    from hpo.core.errors import UserError
    from hpo.strategies.storage import open_storage
    host = postgres_url.split("?")[1]
    cases = {f"postgresql://postgres@/no_such_db?{host}": "the server has no database 'no_such_db'",
             f"postgresql://{PASSWORD_USER}:wrong@/hpo?{host}": f"the server refused user '{PASSWORD_USER}'",
             f"postgresql://ghost@/hpo?{host}": "the server refused user 'ghost'"}
    for url, message in cases.items():
        with pytest.raises(UserError) as error:
            open_storage(url)
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)
        assert "wrong" not in str(error.value).split(":", 2)[1]  # the password is not shown
    open_storage(f"postgresql://{PASSWORD_USER}:{PASSWORD}@/{PASSWORD_USER}?{host}")  # the right one opens it


def test_no_postgresql_server_is_one_line_and_a_failure(monkeypatch):
    import glob
    import shutil
    from helpers import postgres_bindir
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    with pytest.raises(pytest.fail.Exception, match="^no PostgreSQL server found"):
        postgres_bindir()


def _done_places(tmp_path):
    return sorted(int(p.parent.name.split("_")[1]) for p in tmp_path.glob("w*/optuna/seed0/trial_*/done"))


def _all_inside_trials(tmp_path, workers, count=4):
    deadline = time.time() + 120
    while len(list(tmp_path.glob("w*/optuna/seed0/trial_*/started"))) < count:
        assert time.time() < deadline and all(w.poll() is None for w in workers)
        time.sleep(0.02)


@pytest.mark.integration
def test_four_workers_outlive_a_database_restart(tmp_path, postgres_server):
    """The server stops and starts again while all four workers are inside trials: they wait,
    reconnect and finish the study, every place done once."""
    workers = [warm.Process(_shared_study_worker, i, str(tmp_path), postgres_server.url,
                            {"study_name": "restart", "heartbeat_seconds": 5}) for i in range(4)]
    _all_inside_trials(tmp_path, workers)
    postgres_server.stop()
    time.sleep(3)
    postgres_server.start()
    errs = [w.communicate(timeout=300)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, errs
    assert not any("Traceback" in e for e in errs), errs
    assert any("optuna: lost the storage postgresql://postgres@/hpo" in e and "reconnecting for up to 120 s" in e
               for e in errs), errs
    trials = optuna.load_study(study_name="restart", storage=postgres_server.url).get_trials()
    attempts = places.places(trials, 8)
    assert len(attempts) == 8 and all(a[-1].state == optuna.trial.TrialState.COMPLETE for a in attempts.values())
    assert _done_places(tmp_path) == list(range(8))  # each place ran to its end once


@pytest.mark.integration
def test_workers_stop_in_one_line_when_the_database_stays_down_and_a_rerun_finishes(tmp_path, postgres_server):
    workers = [warm.Process(_shared_study_worker, i, str(tmp_path), postgres_server.url,
                            {"study_name": "down", "heartbeat_seconds": 5, "reconnect_seconds": 3}) for i in range(4)]
    _all_inside_trials(tmp_path, workers)
    postgres_server.stop()
    try:
        errs = [w.communicate(timeout=300)[1] for w in workers]
    finally:
        postgres_server.start()
    assert [w.returncode for w in workers] == [2] * 4, errs
    for err in errs:
        last = err.strip().splitlines()[-1]
        assert last.startswith("hpo: error: optuna: the storage postgresql://postgres@/hpo") and \
            "has been unreachable for 3 s" in last, err
        assert "Traceback" not in err, err
    rerun = warm.Process(_shared_study_worker, 0, str(tmp_path), postgres_server.url,
                         {"study_name": "down", "heartbeat_seconds": 5})
    for i in range(1, 4):
        (tmp_path / f"ready{i}").touch()
    assert rerun.wait(timeout=300) == 0, rerun.communicate()[1][-3000:]
    attempts = places.places(optuna.load_study(study_name="down", storage=postgres_server.url).get_trials(), 8)
    assert len(attempts) == 8 and all(a[-1].state == optuna.trial.TrialState.COMPLETE for a in attempts.values())


@pytest.mark.integration
def test_real_tiny_trials_end_to_end(tiny_experiment):
    exp = tiny_experiment("TRAIN_STEPS = 2")
    record = OptunaSearch({"learning_rate": {"low": 0.5, "high": 2.0, "log": True}}, n_trials=2).run(exp, seed=0)
    assert record["strategy"] == "optuna" and record["train_runs"] == 2
    assert record["total_train_steps"] == 4
    assert record["versions"] == records.versions("builtin") and record["hpo_version"]  # as every record
    assert os.path.exists(os.path.join(exp.model_dir, record["hypotheses"]))
    assert os.path.exists(os.path.join(exp.model_dir, "optuna", "study.db"))
    time.sleep(1.1)  # past the record's time resolution
    again = OptunaSearch({"learning_rate": {"low": 0.5, "high": 2.0, "log": True}}, n_trials=2).run(exp, seed=0)
    assert again == record  # a finished study revisited is the same row, made when its last trial ended


@pytest.mark.integration
def test_a_trial_left_running_by_a_killed_worker_is_retried(tiny_experiment, fake_training):
    import time
    exp = tiny_experiment()
    search = OptunaSearch(SPACE, n_trials=2, heartbeat_seconds=1)
    study = search.study(exp, seed=0)
    orphan = study.ask()  # a worker started this trial, sent one heartbeat, then died
    lr = orphan.suggest_float("learning_rate", 0.1, 10.0, log=True)
    orphan.suggest_categorical("label_smoothing", [0.0, 0.1])
    study._storage.record_heartbeat(orphan._trial_id)
    time.sleep(3)  # past the grace period of two heartbeats
    record = search.run(exp, seed=0)
    assert [t["number"] for t in record["trials"]] == [0, 2]  # place 0 retried as trial 1
    assert record["trials"][0]["state"] == "COMPLETE" and record["trials"][0]["attempts"] == 2
    assert record["trials"][0]["params"]["learning_rate"] == lr  # the orphan itself, run again


def _lost_trial(study, worker_of=None):
    """A trial whose worker died and whose failer died between failing it and queueing its
    retry: FAIL, with no reason recorded and no retry."""
    import subprocess
    gone = subprocess.Popen(["true"])
    gone.wait()
    trial = study.ask()
    lr = trial.suggest_float("learning_rate", 0.1, 10.0, log=True)
    trial.suggest_categorical("label_smoothing", [0.0, 0.1])
    trial.set_user_attr("worker", f"{places.socket.gethostname()}:{gone.pid}")
    trial.set_user_attr("worker_of", trial.number if worker_of is None else worker_of)
    study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
    return trial.number, lr


@pytest.mark.integration
def test_a_place_failed_without_its_retry_is_retried(tiny_experiment, fake_training):
    exp = tiny_experiment()
    search = OptunaSearch(SPACE, n_trials=2)
    study = search.study(exp, seed=0)
    lost, lr = _lost_trial(study)
    record = search.run(exp, seed=0)
    assert [(t["number"], t["state"], t["attempts"]) for t in record["trials"]] == [
        (lost, "COMPLETE", 2), (2, "COMPLETE", 1)]  # place 0 retried as trial 1
    assert record["trials"][0]["params"]["learning_rate"] == lr


@pytest.mark.integration
def test_two_retries_of_one_lost_attempt_run_it_once(tiny_experiment, fake_training):
    exp = tiny_experiment()
    search = OptunaSearch(SPACE, n_trials=1)
    study = search.study(exp, seed=0)
    lost, _ = _lost_trial(study)
    retry = study._storage.get_heartbeat_stale_trial_callback()
    for _ in range(2):  # two workers repaired it at once
        retry(study, study._storage.get_trial(study.get_trials()[lost]._trial_id))
    record = search.run(exp, seed=0)  # fake_run fails if a place's directory runs twice
    assert [(t["number"], t["state"], t["attempts"]) for t in record["trials"]] == [(lost, "COMPLETE", 2)]
    states = [t.state.name for t in optuna.load_study(study_name=study.study_name, storage=study._storage).trials]
    assert states == ["FAIL", "COMPLETE", "PRUNED"]  # the second retry stood down


def test_a_lost_trial_waits_for_a_living_failer_to_queue_its_retry():
    from datetime import datetime, timedelta
    now = datetime.now()
    failed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, values=None)
    failed.number, failed.datetime_complete = 4, now
    failed.set_user_attr("failed_by", places.this_worker())  # alive: it is about to queue the retry
    failed.set_user_attr("failed_by_of", 4)
    assert not places.can_repair(failed, grace_seconds=60)
    failed.datetime_complete = now - timedelta(seconds=61)
    assert places.can_repair(failed, grace_seconds=60)


@pytest.mark.integration
def test_a_lost_retry_is_retried_again(tiny_experiment, fake_training):
    """A place's second attempt lost too (its failer killed before queueing its retry): the
    third attempt runs the place (a retry's history is the storage's, never the trial itself)."""
    exp = tiny_experiment()
    search = OptunaSearch(SPACE, n_trials=1)
    study = search.study(exp, seed=0)
    first, lr = _lost_trial(study)
    study._storage.get_heartbeat_stale_trial_callback()(study, study._storage.get_trial(
        study.get_trials()[first]._trial_id))
    second = study.get_trials()[-1]
    study._storage.set_trial_state_values(second._trial_id, state=optuna.trial.TrialState.RUNNING)
    study._storage.set_trial_user_attr(second._trial_id, "worker", study.get_trials()[first].user_attrs["worker"])
    study._storage.set_trial_user_attr(second._trial_id, "worker_of", second.number)
    study._storage.set_trial_state_values(second._trial_id, state=optuna.trial.TrialState.FAIL)
    record = search.run(exp, seed=0)
    assert [(t["number"], t["state"], t["attempts"]) for t in record["trials"]] == [(first, "COMPLETE", 3)]
    assert record["trials"][0]["params"]["learning_rate"] == lr
