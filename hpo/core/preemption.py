"""Preemption: a spot VM or preemptible TPU gets SIGTERM, then a hard kill some seconds later.

While `hpo run` watches (`watching`), SIGTERM or SIGINT asks the run to stop: the trainer
finishes its current step, writes a checkpoint (state, data position, tuner; an Optuna
trial is marked for retry) and raises `Preempted`, and the CLI exits with 128 + the
signal's number (143, 130). A rerun resumes at that step. A stop that takes longer than
`Preemption.grace_seconds` ends the process at that moment anyway: orbax writes
checkpoints atomically, so the rerun resumes from the last complete one. A second signal
ends it at once.
"""

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from typing import Optional

import gin

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested: Optional[int] = None


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Preemption:
    """`grace_seconds`: the longest a signalled run takes to stop (providers give 30 s)."""
    grace_seconds: float = 10.0


class Preempted(BaseException):
    """The run stopped at a signal, its checkpoint written. A BaseException, as KeyboardInterrupt
    is, so that no `except Exception` (Optuna's trial loop) takes it for a failed run."""

    def __init__(self, signum: int, where: str = ""):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name}{', ' + where if where else ''}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def watching(grace_seconds: float):
    """SIGTERM and SIGINT ask the run to stop while the block runs (call it in the main thread).

    Python runs a signal handler in the main thread only between bytecodes, which may be long
    after the signal (a compilation, a device step). So the handler only notes it: the C-level
    handler writes each signal to a pipe (`signal.set_wakeup_fd`) whose reader, a thread of its
    own, starts the grace period the moment the signal arrives."""
    global _requested
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    deadlines = []

    def arrived(signum: int) -> None:
        global _requested
        if _requested is not None:  # a second signal: now
            os._exit(128 + signum)
        _requested = signum
        print(f"hpo: {signal.Signals(signum).name}: finishing the step, checkpointing, stopping "
              f"(within {grace_seconds:g} s)", file=sys.stderr, flush=True)
        deadline = threading.Timer(grace_seconds, os._exit, args=(128 + signum,))
        deadline.daemon = True
        deadline.start()
        deadlines.append(deadline)

    def reader() -> None:
        while True:
            signums = os.read(read_end, 16)
            if not signums:  # the block ended
                return
            for signum in signums:
                arrived(signum)

    thread = threading.Thread(target=reader, name="hpo-preemption", daemon=True)
    _requested = None
    thread.start()
    previous = {signum: signal.signal(signum, lambda signum, frame: None) for signum in SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, old in previous.items():
            signal.signal(signum, old)
        os.close(write_end)
        thread.join()
        os.close(read_end)
        for deadline in deadlines:
            deadline.cancel()
        _requested = None


def requested() -> Optional[int]:
    """The signal that asked this process to stop, if one did."""
    return _requested


def check(where: str = "") -> None:
    """Raises Preempted if a signal asked to stop (call it where stopping loses nothing)."""
    if _requested is not None:
        raise Preempted(_requested, where)
