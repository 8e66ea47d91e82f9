"""The preemption watch itself: a signal is noted at once, a stop raises Preempted with the
shell's status, a run that does not stop within its grace is ended, and all is undone after."""

import os
import signal
import subprocess
import sys
import time

import pytest

from hpo.core import preemption


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_asks_to_stop_and_the_stop_has_the_shells_status(signum, status):
    before = signal.getsignal(signum)
    with preemption.watching(grace_seconds=60):
        preemption.check("nothing asked yet")  # no signal: no stop
        os.kill(os.getpid(), signum)
        deadline = time.time() + 30
        while preemption.requested() is None and time.time() < deadline:
            time.sleep(0.01)
        assert preemption.requested() == signum
        with pytest.raises(preemption.Preempted) as stop:
            preemption.check("at step 7")
        assert stop.value.exit_status == status and str(stop.value).endswith(", at step 7")
    assert preemption.requested() is None and signal.getsignal(signum) == before


IGNORES_IT = """
import os, signal, time
from hpo.core import preemption
with preemption.watching(grace_seconds=1.0):
    os.kill(os.getpid(), signal.SIGTERM)
    while True:  # busy, never checking: the grace period ends the process
        sum(range(1000))
"""


def test_a_run_that_does_not_stop_within_its_grace_is_ended_with_143():
    start = time.time()
    result = subprocess.run([sys.executable, "-c", IGNORES_IT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 143, result.stderr[-2000:]
    assert "hpo: SIGTERM: finishing the step, checkpointing, stopping (within 1 s)" in result.stderr
    assert time.time() - start < 100  # not the test's timeout: the deadline ended it


def test_preemption_grace_is_a_positive_number(tmp_path, capsys):
    from hpo.cli.main import main
    assert main(["run", "--strategy=fixed", "--gin_file=test.gin", "--gin.Preemption.grace_seconds=0",
                 f"--model_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hpo: error: Preemption.grace_seconds must be a positive number, got 0"], err
