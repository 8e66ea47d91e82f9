"""The Optuna strategy: Bayesian optimisation over full training runs.

Each trial is a fixed-strategy run in its own directory; the objective is a
dev metric (selection never sees test), and the record reports the test
scores of the selected trial. The study is a plain Optuna study in an
SQLAlchemy storage (SQLite in MODEL_DIR by default, PostgreSQL for many
workers): several `hpo run` processes on one storage share its trials, a
re-run continues it up to the configured total, and a trial left RUNNING by a
killed process is failed by its missed heartbeat and retried.
"""

import math
import os
import time
from typing import Dict, Mapping

import gin
import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from hpo import distributed, io as hpo_io
from hpo.errors import UserError
from hpo.strategies.base import Strategy
from hpo.strategies.fixed import Fixed

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
DEFAULT_SPACE = {"learning_rate": {"low": 0.1, "high": 10.0, "log": True}}


@gin.configurable
class OptunaSearch(Strategy):
    """`search_space` maps a hyper-parameter to {'low', 'high', 'log'} (a float
    range) or {'choices': [...]}; `n_trials` is the study's total, whoever runs it."""

    name = "optuna"

    def __init__(self, search_space: Mapping[str, Mapping] = None, n_trials: int = 8,
                 sampler: str = "tpe", objective: str = "dev_bleu", pruner: str = None,
                 storage: str = None, study_name: str = None, heartbeat_seconds: int = 60,
                 startup_trials: int = 10):
        self.space = dict(search_space or DEFAULT_SPACE)
        for name, spec in self.space.items():
            if not ("choices" in spec or ("low" in spec and "high" in spec)):
                raise UserError(f"optuna: search space of '{name}' needs 'low' and 'high', or 'choices'")
        if n_trials <= 0:
            raise UserError("optuna: n_trials must be positive")
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

    def study(self, experiment, seed: int) -> optuna.Study:
        if self.storage_url is None and hpo_io.is_url(experiment.model_dir):
            raise UserError(f"optuna: MODEL_DIR {experiment.model_dir} is not a local directory, where the "
                            f"default SQLite study would live: give OptunaSearch.storage (e.g. a PostgreSQL URL)")
        url = self.storage_url or f"sqlite:///{os.path.join(experiment.model_dir, 'optuna', 'study.db')}"
        # Workers that start together on a new SQLite file would race to create its tables.
        lock = url[len("sqlite:///"):] if url.startswith("sqlite:///") else os.path.join(experiment.model_dir, "optuna")
        with hpo_io.locked(lock):
            storage = RDBStorage(url, heartbeat_interval=self.heartbeat, grace_period=2 * self.heartbeat,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
            model_based = dict(seed=seed, n_startup_trials=self.startup_trials)
            samplers = {"tpe": lambda: optuna.samplers.TPESampler(**model_based),
                        "gp": lambda: optuna.samplers.GPSampler(**model_based),
                        "random": lambda: optuna.samplers.RandomSampler(seed=seed)}
            pruners = {None: optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
                       "hyperband": optuna.pruners.HyperbandPruner}
            return optuna.create_study(
                study_name=self.study_name or default_study_name(experiment, seed), storage=storage,
                sampler=samplers[self.sampler_name](), pruner=pruners[self.pruner_name](),
                direction="maximize" if self.objective == "dev_bleu" else "minimize", load_if_exists=True)

    def surplus(self, trial) -> bool:
        """A trial past the study's total that is not a retry: two workers started one for the
        last place, and it stands down (whatever state a busy storage left it in)."""
        return trial.number >= self.n_trials and RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) is None

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
            # Two workers may both start a trial for the last place; the later
            # one stands down (a retried trial keeps its place).
            if self.surplus(trial):
                raise optuna.TrialPruned("surplus: the study already has its total")
            values = self.suggest(trial)
            run_dir = experiment.run_dir(self.name, seed, f"trial_{trial.number}")
            trial.set_user_attr("run_dir", os.path.relpath(run_dir, experiment.model_dir))
            distributed.broadcast({"values": values, "run_dir": run_dir})  # other hosts train it with us

            def report(step, scores):
                trial.set_user_attr("steps_run", step)
                key = "bleu" if self.objective == "dev_bleu" else "loss"
                if key not in scores:  # the last step: the trial's final value follows
                    return
                trial.report(scores[key], step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step}")

            try:
                record = Fixed(hparams=values).run(experiment, seed, run_dir=run_dir, on_eval=report,
                                                   write_record=False)
            except optuna.TrialPruned:
                raise
            except Exception as e:  # recorded with its reason; the study goes on
                trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:500])
                raise
            for key in (*experiment.evaluation.result_keys, "wall_seconds", "compute_steps"):
                trial.set_user_attr(key, record.get(key))
            trial.set_user_attr("steps_run", experiment.train_steps)
            value = record[self.objective]
            if value is None or not math.isfinite(value) or not math.isfinite(record["dev_loss"] or math.nan):
                trial.set_user_attr("fail_reason", "non-finite loss")
                raise FloatingPointError(f"trial {trial.number}: non-finite dev loss")
            return value

        callback = optuna.study.MaxTrialsCallback(self.n_trials, states=None)  # running ones count too
        optuna.storages.fail_stale_trials(study)  # a killed worker's RUNNING trial, to be retried
        if _count(study) < self.n_trials:
            study.optimize(objective, callbacks=[callback], catch=(Exception,), gc_after_trial=True)
        self._wait_for_other_workers(study)
        distributed.broadcast(None)  # no more trials
        try:
            record = self._record(experiment, seed, study, time.time() - start)
        except UserError as e:
            distributed.broadcast({"error": str(e)})
            raise
        return distributed.broadcast({"record": record})["record"]

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

    def _wait_for_other_workers(self, study) -> None:
        """Another worker may still be running the last trials: the record should include them
        (a dead worker's trial is failed by its missed heartbeat, which ends the wait)."""
        while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            optuna.storages.fail_stale_trials(study)
            time.sleep(min(5, self.heartbeat))

    def _record(self, experiment, seed, study, wall) -> Dict:
        trials = [t for t in study.get_trials(deepcopy=False)
                  if t.state in FINISHED and not self.surplus(t)]
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            reasons = {t.user_attrs.get("fail_reason", t.state.name) for t in trials}
            raise UserError(f"optuna: no trial completed ({'; '.join(sorted(reasons))})")
        best = study.best_trial
        attrs = best.user_attrs
        steps = sum(t.user_attrs.get("steps_run", 0) for t in trials)
        record = {
            "task": experiment.task, "benchmark": experiment.evaluation.benchmark, "strategy": self.name,
            "seed": seed, "backend": experiment.backend, "run_dir": attrs["run_dir"],
            **{key: attrs.get(key) for key in experiment.evaluation.result_keys},
            "train_steps": experiment.train_steps, "train_runs": len(trials),
            "total_train_steps": steps, "compute_steps": float(steps),
            "wall_seconds": sum(t.user_attrs.get("wall_seconds", 0.0) for t in trials) or wall,
            "hparams": {**experiment.base_hparams(), **best.params},
            "trials": [{"number": t.number, "state": t.state.name, "params": t.params,
                        "dev_bleu": t.user_attrs.get("dev_bleu"), "dev_loss": t.user_attrs.get("dev_loss"),
                        "objective": t.value,
                        "steps_run": t.user_attrs.get("steps_run", 0),
                        "compute_steps": float(t.user_attrs.get("steps_run", 0)),
                        "fail_reason": t.user_attrs.get("fail_reason")} for t in trials],
            "study": {"name": study.study_name, "sampler": self.sampler_name, "pruner": self.pruner_name,
                      "startup_trials": self.startup_trials,
                      "objective": self.objective, "n_trials": self.n_trials, "best_trial": best.number},
        }
        from hpo import records
        records.add(experiment.model_dir, record)
        return record


def default_study_name(experiment, seed: int) -> str:
    """`<task>-seed<N>` for the built-in engine, `<task>-<backend>-seed<N>` for another."""
    backend = "" if experiment.backend == "builtin" else f"-{experiment.backend}"
    return f"{experiment.task}{backend}-seed{seed}"


def _count(study) -> int:
    return len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
