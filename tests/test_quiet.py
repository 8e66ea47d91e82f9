"""`hpo run` shows hpo's own lines only; --verbose shows the libraries' too."""

import os
import subprocess
import sys

import pytest

from hpo.cli.main import main
from hpo.core import quiet

RUN = ["run", "--strategy=fixed,optuna", "--gin_file=test.gin", "--gin.OptunaSearch.n_trials=1"]
NOISE = ("cuda drivers", "cuInit", "absl::InitializeLog", "oneDNN", "ExperimentalWarning", "FutureWarning",
         "A new study created", "Using an existing study")


def _hpo(*args):
    return subprocess.run([sys.executable, "-m", "hpo.cli.main", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.integration
def test_run_is_quiet_and_verbose_is_not(tmp_path):
    model_dir = f"--model_dir={tmp_path}"
    quiet_run = _hpo(*RUN, model_dir)
    assert quiet_run.returncode == 0, quiet_run.stderr[-2000:]
    output = quiet_run.stdout + quiet_run.stderr
    assert not [pattern for pattern in NOISE if pattern in output], output[-3000:]
    assert "fixed    seed 0: test BLEU" in quiet_run.stdout and "optuna   seed 0: test BLEU" in quiet_run.stdout
    # stderr: a line per Optuna trial, in hpo's words, and nothing else.
    assert quiet_run.stderr.startswith("optuna trial 0: "), quiet_run.stderr[-3000:]
    assert len(quiet_run.stderr.splitlines()) == 1 and "learning_rate=" in quiet_run.stderr
    # The same command again, verbose: the finished runs are skipped, the study opened again.
    verbose = _hpo(*RUN, model_dir, "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "Using an existing study" in verbose.stderr and "ExperimentalWarning" in verbose.stderr


def test_verbose_is_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--verbose" in capsys.readouterr().out


def test_held_stderr_is_shown_only_on_failure(capfd):
    with quiet._stderr_held():
        os.write(2, b"start-up chatter\n")
    with pytest.raises(ImportError), quiet._stderr_held():
        os.write(2, b"why it failed\n")
        raise ImportError("broken install")
    assert capfd.readouterr().err == "why it failed\n"


def test_trial_line():
    assert quiet._trial_line("Trial 3 finished with value: 0.3477876590866581 and parameters: "
                             "{'learning_rate': 1.252065381499947, 'optimizer': 'adam', 'layers': 2, 'tied': True}. "
                             "Best is trial 1 with value: 0.40413923043860756.") == \
        "optuna trial 3: 0.3478  learning_rate=1.252, optimizer=adam, layers=2, tied=True  (best: trial 1, 0.4041)"
    assert quiet._trial_line("Trial 4 pruned. pruned at step 8") == "optuna: Trial 4 pruned. pruned at step 8"
