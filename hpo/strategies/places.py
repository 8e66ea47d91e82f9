"""The places of a study: how `n_trials` survives killed workers and racing ones.

A *place* is one of the `n_trials` trials the user asked for. A new trial opens
a place; when its worker dies, the trial is failed and retried as a WAITING
trial with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback),
which keeps the place and resumes the run in its directory. A place is done
when its latest attempt finished (complete, pruned, or failed for a reason of
its own, which the objective records). A new trial past the last place is
surplus: two workers raced for the last place, and the later one stands down.

Failing a dead worker's trial and queueing its retry are two writes. A worker
killed between them leaves the place *lost*: its latest attempt failed with no
reason and no retry follows. The next worker queues the retry; if two do at
once, the later retry is a *duplicate* (the same retry history as an earlier
trial) and stands down, so a place never runs twice at the same time.
"""

import os
import socket
from datetime import datetime, timedelta
from typing import Dict, List

from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState


def original(trial: FrozenTrial) -> int:
    """The number of the trial that opened this trial's place."""
    retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return trial.number if retried is None else retried


def _history(trial: FrozenTrial) -> tuple:
    """The attempts this retry follows (empty for a place's first trial)."""
    return tuple(trial.system_attrs.get("retry_history", ()))


def _duplicates(trials: List[FrozenTrial]) -> set:
    """The numbers of duplicate retries, in one pass in number order: a second retry of one
    failed attempt (two workers repaired a lost place at once), or a retry of a duplicate."""
    seen, duplicates = set(), set()
    for t in sorted(trials, key=lambda t: t.number):
        history = _history(t)
        if history and (history in seen or history[-1] in duplicates):
            duplicates.add(t.number)
        seen.add(history)
    return duplicates


def is_duplicate(trial: FrozenTrial, trials: List[FrozenTrial]) -> bool:
    return trial.number in _duplicates(trials)


def _openers(trials: List[FrozenTrial]) -> List[FrozenTrial]:
    return sorted((t for t in trials if original(t) == t.number), key=lambda t: t.number)


def index(trial: FrozenTrial, trials: List[FrozenTrial]) -> int:
    """The position of this trial's place: 0 for the study's first place."""
    return sum(t.number < original(trial) for t in _openers(trials))


def is_surplus(trial: FrozenTrial, trials: List[FrozenTrial], n_trials: int) -> bool:
    return original(trial) == trial.number and index(trial, trials) >= n_trials


def places(trials: List[FrozenTrial], n_trials: int) -> Dict[int, List[FrozenTrial]]:
    """Place (its first trial's number) -> its attempts in order, for the first `n_trials` places."""
    kept, duplicates = {t.number: [] for t in _openers(trials)[:n_trials]}, _duplicates(trials)
    for t in sorted(trials, key=lambda t: t.number):
        if original(t) in kept and t.number not in duplicates:
            kept[original(t)].append(t)
    return kept


def lost(trials: List[FrozenTrial], n_trials: int) -> List[FrozenTrial]:
    """The places' latest attempts that failed with no reason recorded: their worker died
    (or was stopped) and no retry was queued."""
    latest = [a[-1] for a in places(trials, n_trials).values()]
    return [t for t in latest if t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs]


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
        return _older(trial.datetime_start, grace_seconds)
    return is_gone(worker)


def can_repair(trial: FrozenTrial, grace_seconds: float) -> bool:
    """A lost trial whose retry no one is about to queue: the worker that failed it (or, failed
    without a failer named, the trial's own worker) is gone, or it failed over a grace ago."""
    attrs = trial.user_attrs
    failer = (attrs["failed_by"] if attrs.get("failed_by_of") == trial.number
              else attrs.get("worker") if attrs.get("worker_of") == trial.number else None)
    return (failer is not None and is_gone(failer)) or _older(trial.datetime_complete, grace_seconds)


def _older(moment, seconds: float) -> bool:
    return datetime.now() - (moment or datetime.now()) > timedelta(seconds=seconds)


def is_gone(worker: str) -> bool:
    """A worker (`host:pid`) that is a process of this host no longer running."""
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
