"""Fault points: the moments of a run where a fault does the most harm, named by phase, for the
kill harness (experiments/kill_harness.py). Inert unless the environment asks:

- `HPO_PHASE_FILE=PATH`: each point writes its phase there, so a harness that stops the
  process at any moment can say what it was doing;
- `HPO_STOP_AT=PHASE@N[:TERM][,PHASE@N…]`: at the N-th point of PHASE the process gets
  SIGKILL (SIGTERM with `:TERM`, a preemption), once: the first of the list to come. The
  phase and the time go to the phase file.

`point` is called in the middle of each phase: after a checkpoint's write has begun and before
it is committed, after a result file's contents are written and before its rename, with an
Optuna trial open in the storage, between a PBT round's checkpoint copies and its new state.
"""

import os
import signal
import time
from typing import Dict, Optional, Tuple

PHASES = ("training", "checkpoint", "evaluation", "record", "optuna", "exploit")

_setup = None  # (pid, the phase file's descriptor or None, [(phase, n, signal)])
_counts: Dict[str, int] = {}


def point(phase: str) -> None:
    global _setup
    if _setup is None or _setup[0] != os.getpid():  # read in the process that runs (warm tests fork)
        _setup = _read_environment()
        _counts.clear()
    _, fd, stops = _setup
    if fd is not None:
        os.pwrite(fd, phase.ljust(16).encode(), 0)
    if not stops:
        return
    _counts[phase] = _counts.get(phase, 0) + 1
    for stop_phase, n, signum in stops:
        if stop_phase == phase and _counts[phase] == n:
            if fd is not None:
                os.pwrite(fd, f"{phase} {time.time():.3f}".ljust(32).encode(), 16)
            _setup = (*_setup[:2], [])  # one stop a process: a preemption's clean stop runs on unhindered
            os.kill(os.getpid(), signum)


def _read_environment():
    path = os.environ.get("HPO_PHASE_FILE")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if path else None
    stops = []
    for item in filter(None, os.environ.get("HPO_STOP_AT", "").split(",")):
        where, _, how = item.partition(":")
        phase, _, n = where.partition("@")
        if phase not in PHASES or not n.isdigit() or how not in ("", "TERM"):
            raise ValueError(f"HPO_STOP_AT: {item} is not PHASE@N[:TERM] with PHASE one of {', '.join(PHASES)}")
        stops.append((phase, int(n), signal.SIGTERM if how else signal.SIGKILL))
    return os.getpid(), fd, stops


def read_phase(path: str) -> Tuple[str, Optional[str], Optional[float]]:
    """From a process's HPO_PHASE_FILE: (the phase it wrote last, 'start-up' if none; the phase
    and the time of the HPO_STOP_AT stop it sent itself, None and None if it sent none)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return "start-up", None, None
    stop = text[16:].split()
    return (text[:16].strip() or "start-up", *((stop[0], float(stop[1])) if len(stop) == 2 else (None, None)))
