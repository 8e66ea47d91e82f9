"""The places of a study: how `n_trials` survives killed workers and racing ones.

A *place* is one of the `n_trials` trials the user asked for. A new trial opens
a place; when its worker dies, the trial is failed and retried as a WAITING
trial with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback),
which keeps the place and resumes the run in its directory. A place is done
when its latest attempt finished (complete, pruned, or failed for a reason of
its own). A new trial past the last place is surplus: two workers raced for
the last place, and the later one stands down.
"""

import os
import socket
from datetime import datetime, timedelta
from typing import Dict, List

from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial


def original(trial: FrozenTrial) -> int:
    """The number of the trial that opened this trial's place."""
    retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return trial.number if retried is None else retried


def _openers(trials: List[FrozenTrial]) -> List[FrozenTrial]:
    return sorted((t for t in trials if original(t) == t.number), key=lambda t: t.number)


def index(trial: FrozenTrial, trials: List[FrozenTrial]) -> int:
    """The position of this trial's place: 0 for the study's first place."""
    return sum(t.number < original(trial) for t in _openers(trials))


def is_surplus(trial: FrozenTrial, trials: List[FrozenTrial], n_trials: int) -> bool:
    return original(trial) == trial.number and index(trial, trials) >= n_trials


def places(trials: List[FrozenTrial], n_trials: int) -> Dict[int, List[FrozenTrial]]:
    """Place (its first trial's number) -> its attempts in order, for the first `n_trials` places."""
    kept = {t.number: [] for t in _openers(trials)[:n_trials]}
    for t in sorted(trials, key=lambda t: t.number):
        if original(t) in kept:
            kept[original(t)].append(t)
    return kept


def opened(trials, n_trials: int) -> int:
    return len(places(trials, n_trials))


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_dead(trial: FrozenTrial, grace_seconds: float) -> bool:
    """A RUNNING trial whose worker is known to be gone: a process of this host
    that no longer exists (a rerun after a kill need not wait for the heartbeat
    to go stale), or a trial killed before it named its worker."""
    worker = trial.user_attrs.get("worker")
    if worker is None or trial.user_attrs.get("worker_of") != trial.number:
        started = trial.datetime_start or datetime.now()
        return datetime.now() - started > timedelta(seconds=grace_seconds)
    host, pid = worker.rsplit(":", 1)
    if host != socket.gethostname() or worker == this_worker():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False
