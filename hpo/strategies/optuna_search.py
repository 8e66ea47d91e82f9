"""The Optuna strategy: Bayesian optimisation over full training runs.

Each trial is a fixed-strategy run in its own directory; the objective is a
dev metric (selection never sees test), and the record reports the test
scores of the selected trial. The study is a plain Optuna study in an
SQLAlchemy storage (SQLite in MODEL_DIR by default, PostgreSQL for many
workers): several `hpo run` processes on one storage share its trials, a
re-run continues it up to the configured total, and a trial left RUNNING by a
killed process is failed (at once on its own host, else by its missed
heartbeat) and retried in its directory; see `places` for the bookkeeping.
"""

import copy
import math
import os
import time
from typing import Dict, Mapping

import gin
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from hpo.core import distributed, faults, io as hpo_io, preemption
from hpo.core.errors import Diverged, UserError, positive_number
from hpo.flow import records
from hpo.strategies import places
from hpo.strategies.base import Strategy
from hpo.strategies.fixed import Fixed
from hpo.strategies.storage import creation_lock, first_heartbeat, open_storage

DEFAULT_SPACE = {"learning_rate": {"low": 0.1, "high": 10.0, "log": True}}


@gin.configurable
class OptunaSearch(Strategy):
    """`search_space` maps a hyper-parameter to {'low', 'high', 'log'} (a float
    range) or {'choices': [...]}; `n_trials` is the study's total, whoever runs it."""

    name = "optuna"

    def __init__(self, search_space: Mapping[str, Mapping] = None, n_trials: int = 8,
                 sampler: str = "tpe", objective: str = "dev_bleu", pruner: str = None,
                 storage: str = None, study_name: str = None, heartbeat_seconds: int = 60,
                 startup_trials: int = 10, reconnect_seconds: float = 120.0):
        self.space = dict(search_space or DEFAULT_SPACE)
        for name, spec in self.space.items():
            if not ("choices" in spec or ("low" in spec and "high" in spec)):
                raise UserError(f"optuna: search space of '{name}' needs 'low' and 'high', or 'choices'")
            if "choices" in spec and not list(spec["choices"]):
                raise UserError(f"optuna: search space of '{name}' has an empty choice list")
            if "low" in spec and not spec["low"] <= spec["high"]:
                raise UserError(f"optuna: search space of '{name}' has low {spec['low']} > high {spec['high']}")
            if spec.get("log") and "low" in spec and spec["low"] <= 0:
                raise UserError(f"optuna: search space of '{name}' is logarithmic but low {spec['low']} is not > 0")
        if not isinstance(n_trials, int) or n_trials <= 0:
            raise UserError(f"optuna: OptunaSearch.n_trials must be a positive integer, got {n_trials!r}")
        if sampler not in ("tpe", "gp", "random"):
            raise UserError("optuna: sampler must be 'tpe', 'gp' or 'random'")
        if objective not in ("dev_bleu", "dev_loss"):
            raise UserError("optuna: objective must be 'dev_bleu' or 'dev_loss'")
        if startup_trials < 0:
            raise UserError("optuna: startup_trials must be non-negative")
        if pruner not in (None, "median", "hyperband"):
            raise UserError("optuna: pruner must be None, 'median' or 'hyperband'")
        self.n_trials, self.sampler_name, self.objective, self.pruner_name = n_trials, sampler, objective, pruner
        self.storage_url, self.study_name, self.heartbeat = storage, study_name, heartbeat_seconds
        self.startup_trials = startup_trials  # random trials before TPE or GP model the space
        self.reconnect_seconds = positive_number(reconnect_seconds, "OptunaSearch.reconnect_seconds")

    def study(self, experiment, seed: int) -> optuna.Study:
        url = self.url(experiment)
        with hpo_io.locked(creation_lock(url, experiment.model_dir)):
            # Retried without limit: a place is never lost to preemptions; a retry inherits
            # the reports its run made, so pruning sees the whole curve.
            storage = open_storage(url, reconnect_seconds=self.reconnect_seconds,
                                   heartbeat_interval=self.heartbeat, grace_period=2 * self.heartbeat,
                                   heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                       max_retry=None, inherit_intermediate_values=True))
            pruners = {None: optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
                       "hyperband": optuna.pruners.HyperbandPruner}
            return optuna.create_study(
                study_name=self.study_name or default_study_name(experiment, seed), storage=storage,
                sampler=self.sampler(seed, 0), pruner=pruners[self.pruner_name](),
                direction="maximize" if self.objective == "dev_bleu" else "minimize", load_if_exists=True)

    def url(self, experiment, who: str = "optuna") -> str:
        """The storage: OptunaSearch.storage, else an SQLite file in a local MODEL_DIR."""
        if self.storage_url is None and hpo_io.is_url(experiment.model_dir):
            raise UserError(f"{who}: MODEL_DIR {experiment.model_dir} is not a local directory, where the "
                            f"default SQLite study would live: give OptunaSearch.storage (e.g. a PostgreSQL URL)")
        return self.storage_url or f"sqlite:///{os.path.join(experiment.model_dir, 'optuna', 'study.db')}"

    def sampler(self, seed: int, place: int) -> optuna.samplers.BaseSampler:
        """The sampler for the trial of the `place`-th place, seeded by both."""
        seed = seed * 100_003 + place
        model_based = dict(seed=seed, n_startup_trials=self.startup_trials)
        return {"tpe": lambda: optuna.samplers.TPESampler(**model_based),
                "gp": lambda: optuna.samplers.GPSampler(**model_based),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed)}[self.sampler_name]()

    def suggest(self, trial: optuna.Trial) -> Dict[str, float]:
        values = {}
        for name, spec in self.space.items():
            if "choices" in spec:
                values[name] = trial.suggest_categorical(name, list(spec["choices"]))
            else:
                values[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
        return values

    def run(self, experiment, seed: int) -> Dict:
        if self.objective not in experiment.evaluation.objectives:
            raise UserError(f"optuna: objective '{self.objective}' is not measured by this experiment "
                            f"(choose from {', '.join(experiment.evaluation.objectives)})")
        if not distributed.is_leader():
            return self._follow(experiment, seed)
        study = self.study(experiment, seed)
        start = time.time()

        def objective(trial):
            faults.point("optuna")  # the trial open in the storage, not yet told
            trials = study.get_trials(deepcopy=False)  # in number order
            if places.is_surplus(trials[trial.number], trials, self.n_trials):
                raise optuna.TrialPruned("surplus: the study already has its total")
            if places.is_duplicate(trials[trial.number], trials):
                raise optuna.TrialPruned("duplicate: another retry of this place came first")
            try:
                return self._train(study, trial, trials, experiment, seed)
            except optuna.TrialPruned:
                raise
            except preemption.Preempted:  # its checkpoint written: the rerun (or another worker) resumes it
                trial.set_user_attr("preempted", True)  # not a fail_reason: that would mark the place done
                _fail_and_retry(study, trial._trial_id)  # noqa: SLF001
                raise
            except Diverged as e:  # a result, not an error: the trial fails (a NaN value) and the study goes on
                trial.set_user_attr("fail_reason", str(e))
                trial.set_user_attr("diverged", {"step": e.step, "reason": e.reason})
                trial.set_user_attr("steps_run", e.step)
                return math.nan
            except Exception as e:  # recorded with its reason (a failure without one is a lost attempt)
                trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:500])
                raise

        while True:  # until every place is done, whichever worker runs it
            preemption.check(f"{experiment.run_dir(self.name, seed)}, between trials")
            self._fail_dead_trials(study)
            trials = study.get_trials(deepcopy=False)
            if any(t.state == TrialState.WAITING for t in trials) or places.opened(trials, self.n_trials) < self.n_trials:
                try:
                    study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
                except Exception as e:  # noqa: BLE001
                    # The storage gone for good while Optuna ends a trial: Optuna's own clean-up
                    # then fails on it too (an UnboundLocalError in optuna 4/5); say what happened.
                    raise _user_error_in(e) or e

            elif any(t.state == TrialState.RUNNING for t in trials) or places.lost(trials, self.n_trials):
                time.sleep(min(5, self.heartbeat))  # another worker's; its end (or death) ends the wait
            else:
                break
        distributed.broadcast(None)  # no more trials
        try:
            record = self._record(experiment, seed, study, time.time() - start)
        except UserError as e:
            distributed.broadcast({"error": str(e)})
            raise
        return distributed.broadcast({"record": record})["record"]

    def _train(self, study, trial, trials, experiment, seed: int) -> float:
        """Runs the trial's place (a retry resumes its run) and returns the objective."""
        me, place = trials[trial.number], places.original(trials[trial.number])
        # Seeded by the place, the sampler proposes what an uninterrupted study would
        # have, and workers that ask at once get different proposals.
        study.sampler = self.sampler(seed, places.index(me, trials))
        # A named worker's trial has a heartbeat, so it goes stale when the worker dies; an
        # unnamed one is dead once older than the grace (`places.is_dead`).
        first_heartbeat(study._storage, trial._trial_id)  # noqa: SLF001
        trial.set_user_attr("worker", places.this_worker())
        trial.set_user_attr("worker_of", trial.number)
        steps_before = trial.user_attrs.get("steps_run", 0)  # an earlier attempt's (a retry)
        trial.set_user_attr("steps_before", steps_before)
        values = self.suggest(trial)
        # A retry resumes its place's run from that run's last checkpoint.
        run_dir = experiment.run_dir(self.name, seed, f"trial_{place}")
        trial.set_user_attr("run_dir", os.path.relpath(run_dir, experiment.model_dir))
        distributed.broadcast({"values": values, "run_dir": run_dir})  # other hosts train it with us

        def report(step, scores):
            trial.set_user_attr("steps_run", max(step, steps_before))
            key = "bleu" if self.objective == "dev_bleu" else "loss"
            if key not in scores:  # the last step: the trial's final value follows
                return
            trial.report(scores[key], step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        record = Fixed(hparams=values).run(experiment, seed, run_dir=run_dir, on_eval=report, write_record=False)
        for key in (*experiment.evaluation.result_keys, "wall_seconds", "compute_steps"):
            trial.set_user_attr(key, record.get(key))
        trial.set_user_attr("steps_run", experiment.train_steps)
        value = record[self.objective]
        if value is None or not math.isfinite(value) or not math.isfinite(record["dev_loss"] or math.nan):
            trial.set_user_attr("fail_reason", "non-finite loss")
            return math.nan
        return value

    def _fail_dead_trials(self, study) -> None:
        """Fails the trials of dead workers (on this host at once, elsewhere by their missed
        heartbeats) and queues their retries, and the retries of lost places."""
        optuna.storages.fail_stale_trials(study)
        grace = 2 * self.heartbeat
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if places.is_dead(trial, grace_seconds=grace):
                try:
                    _fail_and_retry(study, trial._trial_id)  # noqa: SLF001
                except UpdateFinishedTrialError:  # another worker failed it first
                    pass
        retry = study._storage.get_heartbeat_stale_trial_callback()  # noqa: SLF001
        for trial in places.lost(study.get_trials(deepcopy=False), self.n_trials):
            if places.can_repair(trial, grace_seconds=grace):
                _queue_retry(study, retry, trial)

    def _follow(self, experiment, seed: int) -> Dict:
        """A host other than the leader: trains every trial the leader starts, in step with it,
        and returns the leader's record. The leader alone talks to the study."""
        while True:
            trial = distributed.broadcast(None)
            if trial is None:
                break
            try:
                Fixed(hparams=trial["values"]).run(experiment, seed, run_dir=trial["run_dir"],
                                                   on_eval=lambda step, scores: None, write_record=False)
            except Exception:  # noqa: BLE001  (pruned or failed: the leader records it and goes on)
                pass
        outcome = distributed.broadcast(None)
        if "error" in outcome:
            raise UserError(outcome["error"])
        return outcome["record"]

    def _record(self, experiment, seed, study, wall) -> Dict:
        attempts = places.places(study.get_trials(deepcopy=False), self.n_trials)
        trials = [a[-1] for a in attempts.values()]
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        diverged = not complete and all(t.user_attrs.get("diverged") for t in trials)  # a result, as a run's
        if not complete and not diverged:
            reasons = {t.user_attrs.get("fail_reason", t.state.name) for t in trials}
            raise UserError(f"optuna: no trial completed ({'; '.join(sorted(reasons))})")
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best = pick(complete, key=lambda t: t.value) if complete else None  # the first of equals, as Optuna
        attrs = best.user_attrs if best else {}
        # Every step a place's attempts ran counts, a killed attempt's up to its last report.
        steps = {n: sum(max(0, t.user_attrs.get("steps_run", 0) - t.user_attrs.get("steps_before", 0)) for t in a)
                 for n, a in attempts.items()}
        record = {
            # The study's directory keys the row (the selected trial changes as the study grows).
            **records.identity(experiment, self.name, seed,
                               os.path.relpath(experiment.run_dir(self.name, seed), experiment.model_dir)),
            "selected_run_dir": attrs.get("run_dir"),
            **{key: attrs.get(key) for key in experiment.evaluation.result_keys},
            "train_steps": experiment.train_steps, "train_runs": len(trials),
            "total_train_steps": sum(steps.values()), "compute_steps": float(sum(steps.values())),
            "wall_seconds": sum(t.user_attrs.get("wall_seconds") or 0.0 for t in trials) or wall,
            "hparams": {**experiment.base_hparams(), **(best.params if best else {})},
            # Each trial's scores (test too): the table and the claims select among the trials
            # finished within a smaller budget, and report the selected one's test score.
            "trials": [{"number": n, "state": t.state.name, "params": t.params,
                        "dev_bleu": t.user_attrs.get("dev_bleu"), "dev_loss": t.user_attrs.get("dev_loss"),
                        **{key: t.user_attrs.get(key) for key in experiment.evaluation.result_keys},
                        "objective": t.value, "attempts": len(attempts[n]),
                        "steps_run": t.user_attrs.get("steps_run", 0), "compute_steps": float(steps[n]),
                        "fail_reason": t.user_attrs.get("fail_reason")}
                       for n, t in zip(attempts, trials)],
            "study": {"name": study.study_name, "sampler": self.sampler_name, "pruner": self.pruner_name,
                      "startup_trials": self.startup_trials,
                      "objective": self.objective, "n_trials": self.n_trials,
                      "best_trial": places.original(best) if best else None},
            # As of the study's last finished trial: a finished study revisited gives the same record.
            **records.origin(experiment.backend, created=max(
                (t.datetime_complete for t in trials if t.datetime_complete), default=None)),
        }
        if diverged:
            record["diverged"] = {"step": min(t.user_attrs["diverged"]["step"] for t in trials),
                                  "reason": "every trial diverged"}
        records.add(experiment.model_dir, record)
        return record


def _user_error_in(error: BaseException):
    """The UserError `error` was raised while handling (or is), if any."""
    for _ in range(10):
        if error is None or isinstance(error, UserError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _fail_and_retry(study, trial_id: int) -> None:
    """Fails a RUNNING trial and queues its retry (same parameters, resuming its run). The
    failer is named first: if it dies between the two, a later worker repairs the place."""
    storage = study._storage  # noqa: SLF001  (as optuna.storages.fail_stale_trials does)
    number = storage.get_trial(trial_id).number
    storage.set_trial_user_attr(trial_id, "failed_by", places.this_worker())
    storage.set_trial_user_attr(trial_id, "failed_by_of", number)
    if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
        _queue_retry(study, storage.get_heartbeat_stale_trial_callback(), storage.get_trial(trial_id))


def _queue_retry(study, retry, trial) -> None:
    # Optuna's callback appends to the failed trial's own retry history list: give it a copy, not
    # the storage's cached trial (whose history would then name the trial itself).
    retry(study, copy.deepcopy(trial))


def default_study_name(experiment, seed: int) -> str:
    """`<task>-seed<N>` for the built-in engine, `<task>-<backend>-seed<N>` for another."""
    backend = "" if experiment.backend == "builtin" else f"-{experiment.backend}"
    return f"{experiment.task}{backend}-seed{seed}"
