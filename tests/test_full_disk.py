"""MODEL_DIR on a disk that fills up during a run: a real small filesystem (tmpfs), not a
simulated error. The run stops with one line, leaves no partial checkpoint or result, and
once there is room the rerun resumes from its last complete checkpoint to the record an
uninterrupted run writes."""

import json
import os
import subprocess

import pytest

from hpo.cli.main import main

pytestmark = pytest.mark.integration  # conftest: the test tiers

RUN = ["run", "--strategy=fixed", "--gin_file=test.gin", "--gin.TRAIN_STEPS=12"]
RESULT_FIELDS = ("test_bleu", "dev_bleu", "test_chrf", "dev_loss", "hparams", "train_steps", "dev_history")


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB tmpfs: room for the tiny model's first checkpoint and little else."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk test mounts a tmpfs: it needs root (these machines run the suite as root)",
                    pytrace=False)
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_disk_that_fills_stops_in_one_line_and_the_rerun_resumes_to_the_same_record(small_disk, tmp_path,
                                                                                      capsys):
    out = small_disk / "out"
    assert main([*RUN, f"--model_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    run_dir = out / "fixed" / "seed0"
    assert err == [f"hpo: error: {run_dir}/checkpoints: the disk is full (No space left on device); free space "
                   f"and run the same command again: it resumes from step 2, its last complete checkpoint"], err
    assert os.listdir(run_dir / "checkpoints") == ["2"]  # no partial checkpoint beside it
    assert sorted(os.listdir(run_dir / "data-checkpoints" / "process0")) == ["step2.data-00000-of-00001",
                                                                             "step2.index"]
    assert not (out / "comparison.json").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # room, freed
    assert main([*RUN, f"--model_dir={out}"]) == 0
    assert main([*RUN, f"--model_dir={tmp_path / 'whole'}"]) == 0  # uninterrupted, on an ordinary disk
    resumed, whole = (json.load(open(d / "comparison.json"))[0] for d in (out, tmp_path / "whole"))
    assert {k: resumed[k] for k in RESULT_FIELDS} == {k: whole[k] for k in RESULT_FIELDS}
