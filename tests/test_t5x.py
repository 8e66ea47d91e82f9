"""The T5X backend: every strategy through t5x.train, model parallelism, resume after a kill,
and bad input (hyper-gradients through T5X's update: test_t5x_hypergradients.py).

T5X is installed by `make test` (from ../shared/wheels, or GitHub at pinned
commits); these tests import it unconditionally, so a missing T5X fails them.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import warm
from hpo.cli.main import main
from hpo.flow import records as records_module

T5X = ["--backend=t5x", "--gin_file=t5x/test.gin"]
FORWARD = "--gin.Guided.mode='forward'"  # the module's guided runs: forward mode (finetuning's: one-step)
# T5X's PjitPartitioner, with 2 model partitions on a (2 data x 2 model) CPU mesh.
MODEL_PARALLEL = """
from __gin__ import dynamic_registration
import __main__ as train_script
from t5x import partitioning
from hpo.t5x_backend import partitioning as hpo_partitioning

train_script.train.partitioner = @hpo_partitioning.HostMeshPartitioner()
hpo_partitioning.HostMeshPartitioner:
  num_partitions = 2
  logical_axis_rules = @partitioning.standard_logical_axis_rules()
"""


pytestmark = pytest.mark.usefixtures("t5x_gin")  # conftest: T5X's configurables forgotten after each test


def _hpo(*args, env=None):
    """`hpo ARGS` in a process of its own (its own devices, killable), started warm."""
    return warm.Hpo(args, env)


def _finish(process, timeout=900):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


def _records(model_dir):
    return {r["strategy"]: r for r in json.load(open(os.path.join(model_dir, "comparison.json")))}


def _schedule(model_dir, record):
    with open(os.path.join(model_dir, record["schedule_file"])) as f:
        return [float(row["learning_rate"]) for row in csv.DictReader(f)]


# PBT with per-group rates, the decoder's fixed at 0 (so its parameters show the multiplier works).
PBT_SPACE = {"learning_rate": {"low": 0.1, "high": 10.0, "log": True}, "learning_rate/decoder": {"choices": [0.0]}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """fixed, guided (forward mode), two Optuna trials and PBT (2 members, 2 rounds, per-group
    rates) on T5X's tiny network, one device."""
    model_dir = str(tmp_path_factory.mktemp("t5x"))
    out = _finish(_hpo("run", *T5X, "--strategy=fixed,guided,optuna,pbt", "--gin.OptunaSearch.n_trials=2", FORWARD,
                       "--gin.Pbt.population=2", "--gin.Pbt.interval=2", "--gin.Pbt.groups='encoder_decoder'",
                       f"--gin.Pbt.search_space={PBT_SPACE!r}", f"--model_dir={model_dir}"))
    return model_dir, out


@pytest.mark.integration
def test_every_strategy_writes_a_t5x_row(runs):
    model_dir, out = runs
    records = _records(model_dir)
    assert sorted(records) == ["fixed", "guided", "optuna", "pbt"]
    for strategy, record in records.items():
        assert record["backend"] == "t5x" and record["train_steps"] == 4
        assert record["versions"] == records_module.versions("t5x")  # the engine's commit among them
        assert np.isfinite(record["test_bleu"]) and record["bleu_signature"].startswith("nrefs:1")
        hyps = open(os.path.join(model_dir, record["hypotheses"])).read().splitlines()
        assert len(hyps) == record["test_sentences"] == 16
        assert record["run_dir"].startswith(os.path.join("t5x", strategy))
        assert f"| {strategy} [t5x] |" in out
    fixed = records["fixed"]
    assert [h["step"] for h in fixed["dev_history"]] == [2, 4]  # T5X's evaluations, every EVAL_PERIOD
    assert all(np.isfinite(h["loss"]) and "bleu" in h for h in fixed["dev_history"])
    assert fixed["dev_loss"] == fixed["dev_history"][-1]["loss"]
    assert fixed["hparams"] == {"learning_rate": 1.0, "decay_rate": 0.8, "eps": 1e-20, "label_smoothing": 0.0}
    assert fixed["t5x"]["mesh"] == {"data": 1, "model": 1} and fixed["t5x"]["optimizer"] == "OptaxWrapper"
    # T5X's own artefacts: its checkpoints (with the input pipeline), config and summaries.
    run = os.path.join(model_dir, fixed["run_dir"])
    assert {"checkpoint_4", "config.gin", "train", "training_eval"} <= set(os.listdir(run))
    assert "dataset" in os.listdir(os.path.join(run, "checkpoint_4"))


@pytest.mark.integration
def test_guided_on_t5x_learns_and_writes_its_schedule(runs):
    model_dir, _ = runs
    guided = _records(model_dir)["guided"]
    schedule = _schedule(model_dir, guided)
    assert len(schedule) == 4 and schedule[0] == pytest.approx(1.0, rel=1e-6)
    assert schedule[-1] != schedule[0]  # the meta-optimizer moved it
    assert guided["learned_schedule"]["learning_rate"]["final"] == pytest.approx(schedule[-1])
    # Per step: the update, its tangent (2), a guide batch as large as the training batch (1).
    assert guided["compute_steps"] == 4 * (1 + 2 + 1)
    assert guided["nonfinite_hypergrad_steps"] == {"learning_rate": 0}
    assert guided["guided"]["mode"] == "forward" and guided["guided"]["forward"] == ["learning_rate"]
    assert len(set(schedule)) == 4  # moved by every step's hyper-gradient


@pytest.mark.integration
def test_optuna_on_t5x_runs_trials_as_t5x_runs(runs):
    model_dir, _ = runs
    optuna = _records(model_dir)["optuna"]
    assert optuna["train_runs"] == 2 and [t["state"] for t in optuna["trials"]] == ["COMPLETE", "COMPLETE"]
    assert optuna["study"]["name"] == "synthetic_translation-t5x-seed0"
    for trial in optuna["trials"]:
        assert os.path.isdir(os.path.join(model_dir, "t5x", "optuna", "seed0", f"trial_{trial['number']}",
                                          "checkpoint_4"))
    assert optuna["dev_bleu"] == max(t["dev_bleu"] for t in optuna["trials"])


@pytest.mark.integration
def test_pbt_on_t5x_copies_checkpoints_and_writes_its_row(runs):
    """Each member's segment is a T5X train() call from its checkpoint; the exploit copies the
    source's T5X checkpoint (input pipeline included) into the target; the row is the best member."""
    model_dir, _ = runs
    pbt = _records(model_dir)["pbt"]
    assert pbt["compute_steps"] == 8 and pbt["train_runs"] == 2 and pbt["t5x"]["mesh"] == {"data": 1, "model": 1}
    (exploit,) = pbt["pbt"]["exploits"]
    assert exploit["step"] == 2
    run = os.path.join(model_dir, pbt["run_dir"])
    source, target = (os.path.join(run, f"member_{exploit[k]}", "checkpoint_2") for k in ("source", "target"))
    files = sorted(os.path.relpath(os.path.join(root, f), source) for root, _, names in os.walk(source) for f in names)
    assert "dataset" in os.listdir(target) and files
    for name in files:  # the target's checkpoint of step 2 is the source's, byte for byte
        with open(os.path.join(source, name), "rb") as a, open(os.path.join(target, name), "rb") as b:
            assert a.read() == b.read(), name
    members = pbt["pbt"]["members"]
    best = pbt["pbt"]["best_member"]
    assert pbt["dev_loss"] == pytest.approx(min(m["scores"][1]["dev_loss"] for m in members), rel=1e-6)
    assert pbt["dev_loss"] == pytest.approx(members[best]["scores"][1]["dev_loss"], rel=1e-6)
    assert [h["step"] for h in pbt["dev_history"]] == [2, 4]  # its lineage's evaluations
    schedule = _schedule(model_dir, pbt)
    assert len(schedule) == 4 and schedule[2] == members[best]["scores"][1]["values"]["learning_rate"]
    import jax
    # Per-group rates (Pbt.groups) through T5X's optimizer: the decoder's multiplier 0 keeps each
    # member's decoder where its step 2 left it, while its encoder trains on.
    assert pbt["hparams"]["learning_rate/decoder"] == 0.0 and "learning_rate/encoder" in pbt["hparams"]
    for member in members:
        middle, end = (_t5x_params(os.path.join(run, f"member_{member['member']}", f"checkpoint_{s}")) for s in (2, 4))
        same = jax.tree.map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()), middle, end)
        assert jax.tree.all(same["decoder"]) and not jax.tree.all(same["encoder"]), member["member"]


def _t5x_params(checkpoint_dir):
    import orbax.checkpoint as ocp
    from etils import epath
    return ocp.PyTreeCheckpointHandler().restore(epath.Path(checkpoint_dir) / "state")["target"]


@pytest.mark.integration
def test_model_parallel_losses_equal_one_device_losses(runs, tmp_path):
    model_dir, _ = runs
    gin_file = tmp_path / "model_parallel.gin"
    gin_file.write_text(MODEL_PARALLEL)
    parallel_dir = str(tmp_path / "parallel")
    _finish(_hpo("run", *T5X, f"--gin_file={gin_file}", "--strategy=fixed,guided", FORWARD,
                 f"--model_dir={parallel_dir}", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}))
    one, four = _records(model_dir), _records(parallel_dir)
    for strategy in ("fixed", "guided"):
        assert four[strategy]["t5x"]["mesh"] == {"data": 2, "model": 2}
        losses = [[h["loss"] for h in r[strategy]["dev_history"]] for r in (one, four)]
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    np.testing.assert_allclose(_schedule(parallel_dir, four["guided"]), _schedule(model_dir, one["guided"]),
                               rtol=1e-4)
    info = open(os.path.join(parallel_dir, four["guided"]["run_dir"], "model-info.txt")).read()
    assert "partition spec (None, 'model')" in info  # parameters are split over the model axis
    # So are forward mode's tangents of them (T5X lists the train state's variables).
    tangents = [line for line in info.splitlines() if "param_states/tangent/learning_rate/0/" in line]
    assert any("kernel" in line and "partition spec (None, 'model')" in line for line in tangents), tangents[:3]


@pytest.mark.integration
def test_guided_resumes_after_a_kill_with_the_same_schedule(runs, tmp_path):
    model_dir, _ = runs
    resumed_dir = str(tmp_path / "resumed")
    checkpoint = os.path.join(resumed_dir, "t5x", "guided", "seed0", "checkpoint_2", "commit_success.txt")
    process = _hpo("run", *T5X, "--strategy=guided", FORWARD, f"--model_dir={resumed_dir}")
    while not os.path.exists(checkpoint) and process.poll() is None:
        time.sleep(0.02)
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL, "finished before it could be killed"
    assert not os.path.exists(os.path.join(resumed_dir, "comparison.json"))
    # The time the killed process spent, written with its periods: the record counts it.
    killed_seconds = json.load(open(os.path.join(os.path.dirname(os.path.dirname(checkpoint)), "hpo-wall.json")))
    assert killed_seconds["seconds"] > 0
    _finish(_hpo("run", *T5X, "--strategy=guided", FORWARD, f"--model_dir={resumed_dir}"))
    whole, resumed = _records(model_dir)["guided"], _records(resumed_dir)["guided"]
    assert resumed["wall_seconds"] > killed_seconds["seconds"]
    np.testing.assert_allclose(_schedule(resumed_dir, resumed), _schedule(model_dir, whole), rtol=1e-6)
    assert resumed["dev_loss"] == pytest.approx(whole["dev_loss"], rel=1e-6)
    assert len(json.load(open(os.path.join(resumed_dir, "comparison.json")))) == 1


@pytest.mark.integration
def test_guided_stopped_by_sigterm_resumes_at_its_step_with_the_same_schedule(runs, tmp_path):
    """A preemption on T5X: the stats period under way ends, T5X's emergency checkpoint is
    written at its step (T5X's own PreemptionError hook), the run exits with 143, and the
    rerun resumes there."""
    model_dir, _ = runs
    resumed_dir = str(tmp_path / "resumed")
    run_dir = os.path.join(resumed_dir, "t5x", "guided", "seed0")
    # A grace long enough for T5X's set-up and compilation on a loaded machine: the stop under
    # test is T5X's emergency checkpoint, not the deadline.
    process = _hpo("run", *T5X, "--strategy=guided", FORWARD, f"--model_dir={resumed_dir}",
                   "--gin.Preemption.grace_seconds=300")
    while not os.path.exists(os.path.join(run_dir, "run.lock")) and process.poll() is None:
        time.sleep(0.02)  # the run is taken: T5X sets up, compiles and trains its first period next
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err[-3000:]
    assert f"stopped by SIGTERM, {run_dir} at step 2" in err  # the first period's end (EVAL_PERIOD 2)
    assert sorted(int(d.split("_")[1]) for d in os.listdir(run_dir) if d.startswith("checkpoint_")) == [0, 2]
    assert not os.path.exists(os.path.join(resumed_dir, "comparison.json"))
    _finish(_hpo("run", *T5X, "--strategy=guided", FORWARD, f"--model_dir={resumed_dir}"))
    whole, resumed = _records(model_dir)["guided"], _records(resumed_dir)["guided"]
    np.testing.assert_allclose(_schedule(resumed_dir, resumed), _schedule(model_dir, whole), rtol=1e-6)
    assert resumed["dev_loss"] == pytest.approx(whole["dev_loss"], rel=1e-6)


FINETUNE = """
from __gin__ import dynamic_registration
import __main__ as train_script
from t5x.examples.t5 import network
from hpo.data import tasks

include 't5x/examples/t5/t5_1_1/tiny.gin'
include 't5x/configs/runs/finetune.gin'
include 't5x/optax_adafactor.gin'
include 't5x/translation_tasks.gin'

network.T5Config.dtype = 'float32'
DROPOUT_RATE = 0.0
BATCH_SIZE = 8
EVAL_PERIOD = 2
TASK_FEATURE_LENGTHS = {'inputs': 16, 'targets': 16}
train_script.train.eval_steps = 2
tasks.synthetic_translation_task.num_train = 400
tasks.synthetic_translation_task.num_dev = 16
tasks.synthetic_translation_task.num_test = 16
tasks.synthetic_translation_task.vocab_size = 300
"""


@pytest.mark.integration
@pytest.mark.parametrize("pretrained_by", ["fixed", "guided"])
def test_finetuning_a_t5x_checkpoint_with_every_strategy(runs, tmp_path, pretrained_by):
    """T5X's finetune.gin from a checkpoint without an input pipeline (as public T5X checkpoints
    are): the parameters are the checkpoint's, steps count from its step, guided's schedule too.
    A guided run's checkpoint (forward mode: tuner and tangents in its optimizer state) gives
    its parameters and its user optimizer's state; its tuner stays behind."""
    model_dir, _ = runs
    pretrained = _records(model_dir)[pretrained_by]
    initial = tmp_path / "pretrained" / "checkpoint_4"
    shutil.copytree(os.path.join(model_dir, pretrained["run_dir"], "checkpoint_4"), initial,
                    ignore=shutil.ignore_patterns("dataset"))
    gin_file = tmp_path / "finetune.gin"
    gin_file.write_text(FINETUNE)
    finetuned_dir = str(tmp_path / "finetuned")
    _finish(_hpo("run", "--backend=t5x", f"--gin_file={gin_file}", f"--gin.INITIAL_CHECKPOINT_PATH={initial}",
                 "--gin.TRAIN_STEPS=6", "--strategy=fixed,guided", "--gin.Fixed.hparams={'learning_rate': 0.0}",
                 f"--model_dir={finetuned_dir}"))
    records = _records(finetuned_dir)
    for record in records.values():
        assert record["train_steps"] == 2 and [h["step"] for h in record["dev_history"]] == [6]
    # At a learning rate of 0 the parameters stay the checkpoint's: the same dev loss as pretraining's last.
    assert records["fixed"]["dev_loss"] == pytest.approx(pretrained["dev_loss"], rel=1e-5)
    assert records["guided"]["dev_loss"] != pytest.approx(pretrained["dev_loss"], rel=1e-5)
    # The optimizer state went on from the checkpoint's: its count is 4 restored + 2 finetuned steps.
    counts = _optimizer_counts(os.path.join(finetuned_dir, records["fixed"]["run_dir"], "checkpoint_6"))
    assert counts and set(counts.values()) == {6}, counts
    with open(os.path.join(finetuned_dir, records["guided"]["schedule_file"])) as f:
        rows = list(csv.DictReader(f))
    # The tuner starts afresh at the configured rate, whatever the pretraining tuner had learned.
    assert [int(r["step"]) for r in rows] == [4, 5] and float(rows[0]["learning_rate"]) == pytest.approx(1.0)
    if pretrained_by == "guided":
        assert _schedule(model_dir, pretrained)[-1] != pytest.approx(1.0)
    assert records["guided"]["compute_steps"] == 4.0


def _optimizer_counts(checkpoint_dir):
    """The step counts of the optax states in a T5X checkpoint, by their path."""
    import jax
    import orbax.checkpoint as ocp
    from etils import epath
    state = ocp.PyTreeCheckpointHandler().restore(epath.Path(checkpoint_dir) / "state")
    return {jax.tree_util.keystr(k): int(v) for k, v in jax.tree_util.tree_flatten_with_path(state["state"])[0]
            if jax.tree_util.keystr(k).endswith("['count']")}


@pytest.mark.integration
def test_probe_on_t5x(tmp_path, capsys):
    """`hpo probe --backend=t5x`: T5X's model, pipeline and update; the state at step 2 is the run's
    own (the ×1 copy after two steps from step 0), and Adafactor's decay rate is probed too."""
    out = tmp_path / "probe"
    assert main(["probe", *T5X, f"--model_dir={out}", "--probe_steps=0,2", "--gin.Probe.horizons=[1,2]",
                 "--gin.Probe.multipliers=[1,4]", "--gin.Probe.values={'decay_rate': [0.5, 0.8]}"]) == 0
    report = json.load(open(out / "probe.json"))
    rows = {(r["hparam"], r["from_step"], r["horizon"]): r for r in report["rows"]}
    assert len(rows) == 8 and all(np.isfinite(r["losses"]).all() for r in rows.values())
    assert rows[("learning_rate", 2, 1)]["guide_loss_before"] == pytest.approx(
        rows[("learning_rate", 0, 2)]["losses"][0], rel=1e-5)
    assert len(set(rows[("learning_rate", 0, 2)]["losses"])) == 2  # the multiplier made a difference
    assert rows[("decay_rate", 0, 2)]["run_value"] == pytest.approx(0.8)
    printed = capsys.readouterr().out
    assert report["verdict"] in printed and "verdict (the run's decay_rate)" in printed
    assert main(["probe", *T5X, f"--model_dir={tmp_path / 'bad'}", "--gin.Guided.guide_batch_size=4"]) == 2
    assert "on T5X the guide batch is as large as the training batch" in capsys.readouterr().err


# --- bad input: one line, exit status 2, nothing written --------------------------------------

USER_TRAINER = """
from t5x import trainer


class MyTrainer(trainer.Trainer):
    pass
"""


def _fails(capsys, tmp_path, *args, match):
    model_dir = tmp_path / "run"
    assert main(["run", *args, f"--model_dir={model_dir}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hpo: error:") and match in err[0], err
    assert not (model_dir / "comparison.json").exists()


def test_no_t5x_installed_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "t5x.train", None)  # `import t5x.train` now fails
    _fails(capsys, tmp_path, *T5X, match="needs T5X, which is not installed")


@pytest.mark.integration
def test_the_builtin_engine_never_imports_t5x():
    code = "import sys, hpo.cli.configurables, hpo.cli.main, hpo.engine.experiment; print(sorted(m for m in sys.modules if m.startswith('t5x')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


def test_a_t5x_gin_file_that_does_not_parse(capsys, tmp_path):
    bad = tmp_path / "bad.gin"
    bad.write_text("from __gin__ import dynamic_registration\nnetwork.T5Config.emb_dim = = 3\n")
    _fails(capsys, tmp_path, *T5X, f"--gin_file={bad}", match="gin (T5X)")


def test_guided_with_a_trainer_class_of_the_users_own(capsys, tmp_path, monkeypatch):
    (tmp_path / "my_trainers.py").write_text(USER_TRAINER)
    monkeypatch.syspath_prepend(str(tmp_path))
    gin_file = tmp_path / "mine.gin"
    gin_file.write_text(textwrap.dedent("""
        from __gin__ import dynamic_registration
        import __main__ as train_script
        import my_trainers
        train_script.train.trainer_cls = @my_trainers.MyTrainer
        my_trainers.MyTrainer:
          num_microbatches = None
        """))
    _fails(capsys, tmp_path, *T5X, f"--gin_file={gin_file}", "--strategy=guided", match="MyTrainer")


def test_tuning_what_t5x_adafactor_keeps_out_of_the_train_state(capsys, tmp_path):
    gin_file = tmp_path / "t5x_adafactor.gin"
    gin_file.write_text("from __gin__ import dynamic_registration\nfrom t5x import adafactor\n"
                        "OPTIMIZER = @adafactor.Adafactor()\n")
    _fails(capsys, tmp_path, *T5X, f"--gin_file={gin_file}", "--strategy=guided",
           "--gin.Guided.tune=['decay_rate']", match="use the optax one")


def test_guided_on_a_task_without_a_guide_split(capsys, tmp_path, monkeypatch):
    (tmp_path / "no_guide.py").write_text(textwrap.dedent("""
        import seqio
        import tensorflow as tf
        from hpo.data import catalog

        vocabulary = catalog.get_task("synthetic_translation").output_features["targets"].vocabulary
        feature = seqio.Feature(vocabulary)
        source = seqio.FunctionDataSource(
            lambda split, shuffle_files, seed=None: tf.data.Dataset.from_tensors({"inputs": "a", "targets": "b"}),
            splits=("train", "dev", "test"))
        if "no_guide" not in seqio.TaskRegistry.names():
            seqio.TaskRegistry.add("no_guide", source=source, preprocessors=[seqio.preprocessors.tokenize],
                                   output_features={"inputs": feature, "targets": feature})
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    gin_file = tmp_path / "task.gin"
    gin_file.write_text("from __gin__ import dynamic_registration\nimport no_guide\n"
                        "MIXTURE_OR_TASK_NAME = 'no_guide'\n")
    _fails(capsys, tmp_path, *T5X, f"--gin_file={gin_file}", "--strategy=guided", match="no 'guide' split")


def test_a_guide_batch_of_another_size(capsys, tmp_path):
    _fails(capsys, tmp_path, *T5X, "--strategy=guided", "--gin.Guided.guide_batch_size=4",
           match="as large as the training batch")


@pytest.mark.integration
def test_a_task_t5x_cannot_score(capsys, tmp_path):
    _fails(capsys, tmp_path, *T5X, "--gin.MIXTURE_OR_TASK_NAME=synthetic_pretraining",
           match="has no test split")


def test_an_initial_checkpoint_that_is_not_one(capsys, tmp_path):
    gin_file = tmp_path / "finetune.gin"
    gin_file.write_text(FINETUNE)
    _fails(capsys, tmp_path, "--backend=t5x", f"--gin_file={gin_file}", f"--gin.INITIAL_CHECKPOINT_PATH={tmp_path}",
           "--gin.TRAIN_STEPS=6", match="is not a T5X checkpoint directory")


def test_train_steps_that_end_before_the_initial_checkpoint(capsys, tmp_path):
    gin_file = tmp_path / "finetune.gin"
    gin_file.write_text(FINETUNE)
    _fails(capsys, tmp_path, "--backend=t5x", f"--gin_file={gin_file}",
           f"--gin.INITIAL_CHECKPOINT_PATH={tmp_path / 'checkpoint_10'}", "--gin.TRAIN_STEPS=6",
           match="counts the initial checkpoint's steps (10)")


@pytest.mark.integration
def test_a_t5x_run_that_diverges_is_a_row_marked_diverged(tmp_path):
    """Learning rate ×1e30: the loss becomes NaN, T5X is stopped by hpo's action, and the row
    says where, with no scores (no decoding of a NaN model)."""
    out = _finish(_hpo("run", *T5X, "--strategy=fixed", "--gin.Fixed.hparams={'learning_rate': 1e30}",
                       f"--model_dir={tmp_path}"))
    record = _records(str(tmp_path))["fixed"]
    assert record["diverged"]["step"] <= 4 and "nan" in record["diverged"]["reason"]
    assert record["test_bleu"] is None and record["hypotheses"] is None
    assert record["compute_steps"] == record["diverged"]["step"]
    assert f"fixed    seed 0 (t5x): diverged at step {record['diverged']['step']}" in out


def test_a_horizon_whose_windows_would_straddle_an_evaluation(capsys, tmp_path):
    _fails(capsys, tmp_path, *T5X, "--strategy=guided", "--gin.Guided.horizon=4",
           match="needs EVAL_PERIOD (2) and the checkpoint period (2) to be a multiple of it")


@pytest.mark.integration
def test_a_guided_t5x_run_with_a_horizon_and_groups_and_its_replay(tmp_path):
    """Guided.horizon 2 and per-group rates in one T5X run: every value moves once per window;
    the fixed strategy's replay of its schedule, group columns included, reproduces it."""
    from hpo.report import claims
    model_dir = tmp_path / "run"
    one_layer = ["--gin.network.T5Config.num_encoder_layers=1", "--gin.network.T5Config.num_decoder_layers=1"]
    assert main(["run", *T5X, *one_layer, "--strategy=guided", "--gin.Guided.horizon=2",
                 "--gin.Guided.groups='encoder_decoder'", f"--model_dir={model_dir}"]) == 0
    record = _records(model_dir)["guided"]
    schedule_file = os.path.join(model_dir, record["schedule_file"])
    with open(schedule_file) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "learning_rate", "learning_rate/encoder", "learning_rate/decoder"]
    for name in list(rows[0])[1:]:
        values = [float(r[name]) for r in rows]
        assert len(values) == 4 and values[0] == values[1] and values[2] == values[3]  # windows 0-1, 2-3
        assert values[2] != values[0]  # moved once, after the first window
    assert [h["step"] for h in record["dev_history"]] == [2, 4]

    assert main(["run", *T5X, *one_layer, "--strategy=fixed", f"--gin.Fixed.replay='{schedule_file}'",
                 f"--model_dir={model_dir}"]) == 0
    replay = _records(model_dir)["fixed"]
    assert replay["replay"]["hparams"] == ["learning_rate", "learning_rate/decoder", "learning_rate/encoder"]
    assert replay["dev_loss"] == pytest.approx(record["dev_loss"], rel=claims.REPRODUCTION_RTOL)


def test_t5x_groups_that_match_no_parameter(capsys, tmp_path):
    _fails(capsys, tmp_path, *T5X, "--strategy=guided", "--gin.Guided.groups={'enc': '^encoder/', 'x': '^nothing'}",
           match="Guided.groups['x']: the regex '^nothing' matches no parameter (paths look like 'decoder/")
