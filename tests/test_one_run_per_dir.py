"""Two `hpo run` on one MODEL_DIR by mistake: the run being trained belongs to its process;
the other stops at once, in one line naming it, on either engine."""

import json
import os
import subprocess
import sys

import pytest

from hpo.cli.main import main

pytestmark = pytest.mark.integration  # conftest: the test tiers

HOLD = """import sys, time
from hpo.core import io
with io.training(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""


def _hold(run_dir):
    """`run_dir` held by another live process, as by an `hpo run` training it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


@pytest.mark.parametrize("engine, run_dir", [(["--gin_file=test.gin"], "fixed/seed0"),
                                             (["--backend=t5x", "--gin_file=t5x/test.gin"], "t5x/fixed/seed0")],
                         ids=["builtin", "t5x"])
def test_a_run_another_process_trains_stops_at_once_naming_it(engine, run_dir, tmp_path, capsys, request):
    if "--backend=t5x" in engine:
        request.getfixturevalue("t5x_gin")
    args = ["run", "--strategy=fixed", *engine, f"--model_dir={tmp_path}"]
    holder = _hold(tmp_path / run_dir)
    try:
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{run_dir} is being trained by another hpo run" in err[0], err
        assert f"pid {holder.pid} on " in err[0]
        assert os.listdir(tmp_path / run_dir) == ["run.lock"]  # nothing of its own written
        assert not (tmp_path / "comparison.json").exists()
    finally:
        holder.kill()  # its holder gone, even by kill -9, the OS has dropped the lock: the run trains
        holder.wait()
    assert main(args) == 0
    assert [r["seed"] for r in json.load(open(tmp_path / "comparison.json"))] == [0]
