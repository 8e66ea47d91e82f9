"""The PBT strategy: exploit and explore, a population's run, its exploit copies and its row."""

import contextlib
import csv
import io
import json
import math
import os
import shutil

import gin
import jax
import numpy as np
import optuna
import orbax.checkpoint as ocp
import pytest

from hpo.core.errors import UserError
from hpo.strategies import population
from hpo.strategies.pbt import Pbt
from hpo.strategies.population_store import PopulationStore

SPACE = {"learning_rate": {"low": 0.1, "high": 10.0, "log": True}, "label_smoothing": {"low": 0.0, "high": 0.2},
         "beta1": {"choices": [0.0, 0.5, 0.9]}}


def test_the_bottom_quantile_copies_a_member_of_the_top():
    rng = np.random.default_rng(0)
    assert population.rank([3.0, 1.0, math.nan, 2.0], maximize=False) == [1, 3, 0, 2]  # diverged last
    assert population.rank([3.0, 1.0, None, 2.0], maximize=True) == [0, 3, 1, 2]
    assert [population.quantile_size(n, 0.25) for n in (2, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
    assert population.quantile_size(4, 0.5) == 2 and population.quantile_size(3, 0.5) == 1  # at most half
    pairs = population.exploits([5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 0.5, 7.0], False, 0.25, rng)
    assert [t for t, _ in pairs] == [5, 7] and {s for _, s in pairs} <= {6, 1}
    sources = {s for _ in range(50) for _, s in population.exploits([5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 0.5, 7.0],
                                                                     False, 0.25, rng)}
    assert sources == {1, 6}  # drawn from the whole top quantile


def test_explore_perturbs_by_a_factor_within_the_space_or_resamples():
    rng = np.random.default_rng(1)
    values = {"learning_rate": 4.0, "label_smoothing": 0.19, "beta1": 0.5}
    seen = {population.explore(values, SPACE, rng, [0.8, 1.25], 0.0)["learning_rate"] for _ in range(40)}
    assert seen == {3.2, 5.0}
    smoothing = {population.explore(values, SPACE, rng, [0.8, 1.25], 0.0)["label_smoothing"] for _ in range(40)}
    assert sorted(smoothing) == [pytest.approx(0.152), 0.2]  # 0.2375 clipped to the space's high
    assert {population.explore(values, SPACE, rng, [0.8, 1.25], 0.0)["beta1"] for _ in range(40)} == {0.0, 0.9}
    for _ in range(40):  # resampled: anywhere in the space
        new = population.explore(values, SPACE, rng, [0.8, 1.25], 1.0)
        assert 0.1 <= new["learning_rate"] <= 10 and 0 <= new["label_smoothing"] <= 0.2 and new["beta1"] in (0, .5, .9)
    drawn = [population.sample(SPACE, np.random.default_rng(s))["learning_rate"] for s in range(200)]
    assert min(drawn) < 0.3 and max(drawn) > 3  # log-uniform over two decades
    assert population.sample(SPACE, np.random.default_rng(7)) == population.sample(SPACE, np.random.default_rng(7))


@pytest.mark.parametrize("binding, message", [
    ("Pbt.population = 1", "Pbt.population must be an integer >= 2"),
    ("Pbt.quantile = 0.75", "Pbt.quantile must be in (0, 0.5]"),
    ("Pbt.resample_probability = 2.0", "Pbt.resample_probability must be in [0, 1]"),
    ("Pbt.factors = [0.8, -1]", "Pbt.factors must be positive numbers"),
    ("Pbt.metric = 'test_bleu'", "Pbt.metric must be 'dev_loss' or 'dev_bleu'"),
    ("Pbt.interval = 0", "Pbt.interval"),
    ("Pbt.groups = 'layers'", "Pbt.groups: unknown preset 'layers'"),
    ("Pbt.search_space = {'learning_rate/mlp': {'low': 0.5, 'high': 2.0}}",
     "Pbt.search_space tunes learning_rate/mlp, a group Pbt.groups does not define (its groups: none)"),
])
def test_bad_settings_are_one_line(tiny_experiment, binding, message):
    tiny_experiment(binding)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        Pbt()


@pytest.mark.integration
def test_per_group_rates_are_tuned_values(tmp_path):
    """Pbt.groups: a multiplier of the learning rate per group joins each member's values. With the
    decoder's fixed at 0, no member's decoder moves from its initialisation while its encoder does;
    the multipliers are columns of hparams.csv, and groups.json beside it names their groups (for
    fixed replays)."""
    from hpo.cli.main import main
    from hpo.method.groups import PRESETS
    space = {"learning_rate": {"low": 0.5, "high": 4.0, "log": True}, "learning_rate/decoder": {"choices": [0.0]}}
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", "--strategy=pbt", "--gin_file=test.gin", f"--model_dir={tmp_path}", "--gin.Pbt.population=2",
                     "--gin.Pbt.interval=2", "--gin.Pbt.groups='encoder_decoder'", f"--gin.Pbt.search_space={space!r}",
                     "--gin.Experiment.checkpoint_every=100"]) == 0
    record, = json.load(open(tmp_path / "comparison.json"))
    assert record["hparams"]["learning_rate/decoder"] == 0.0
    assert 0.25 <= record["hparams"]["learning_rate/encoder"] <= 4.0  # GROUP_RATE_SPACE: not in the space given
    with open(tmp_path / record["schedule_file"]) as f:
        rows = list(csv.DictReader(f))
    assert {"learning_rate", "learning_rate/encoder", "learning_rate/decoder"} <= set(rows[0])
    assert json.load(open(tmp_path / "pbt" / "seed0" / "groups.json")) == PRESETS["encoder_decoder"]
    experiment = _experiment(tmp_path)
    names = list(space) + ["learning_rate/encoder"]
    program = experiment.member_program(names, PRESETS["encoder_decoder"])
    targets = {e["target"] for e in record["pbt"]["exploits"]}
    assert len(targets) == 1
    for member in record["pbt"]["members"]:
        member_dir = tmp_path / "pbt" / "seed0" / f"member_{member['member']}"
        init = experiment._member_state(program, member["seed"], member["values"]).params
        (middle, _), (end, values) = (_restore(experiment, program, member_dir, member["seed"], step, names)
                                      for step in (2, 4))
        assert values["learning_rate/decoder"] == 0.0
        for before, after in [(middle, end)] + ([] if member["member"] in targets else [(init, middle)]):
            same = jax.tree.map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()), before, after)
            assert jax.tree.all(same["decoder"]) and not jax.tree.all(same["encoder"])


def test_the_search_space_is_optunas(tiny_experiment):
    tiny_experiment("OptunaSearch.search_space = {'learning_rate': {'low': 0.5, 'high': 2.0}}")
    assert Pbt().space == {"learning_rate": {"low": 0.5, "high": 2.0}}
    tiny_experiment()
    assert list(Pbt().space) == ["learning_rate"] and Pbt().space["learning_rate"]["log"]


def _restore(experiment, program, member_dir, seed, step, names=("learning_rate",)):
    """(params, tuner values) of a member's checkpoint at `step`."""
    template = experiment._member_state(program, seed, {**experiment.base_hparams(), **{k: 1.0 for k in names}})
    manager = ocp.CheckpointManager(os.path.join(member_dir, "checkpoints"), item_names=("state", "meta"))
    try:
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template)))["state"]
    finally:
        manager.close()
    return state.params, {k: float(v) for k, v in state.tuner["values"].items()}


@pytest.fixture(scope="module")
def pbt_run(tmp_path_factory):
    """`hpo run --strategy=pbt --claims`: three members, three rounds of two steps, then the
    replays of its schedule's constants. (model dir, its stdout)"""
    from hpo.cli.main import main
    model_dir = tmp_path_factory.mktemp("pbt")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["run", "--strategy=pbt", "--claims", *POPULATION, f"--model_dir={model_dir}"]) == 0
    return model_dir, out.getvalue()


POPULATION = ["--gin_file=test.gin", "--gin.TRAIN_STEPS=6", "--gin.Pbt.population=3", "--gin.Pbt.interval=2",
              "--gin.Experiment.checkpoint_every=100"]


def population_state(model_dir) -> dict:
    """The population's state as its workers store it: the default SQLite study in MODEL_DIR."""
    storage = f"sqlite:///{model_dir}/optuna/study.db"
    name, = [n for n in optuna.get_all_study_names(storage) if n.startswith("pbt-")]
    return PopulationStore(storage, name, str(model_dir), 10.0).read()


def _experiment(model_dir):
    from hpo.cli import gin_config
    from hpo.engine.experiment import Experiment
    gin_config.parse(["test.gin"], [f"MODEL_DIR = '{model_dir}'", "TRAIN_STEPS = 6", "Pbt.population = 3",
                                "Pbt.interval = 2", "Experiment.checkpoint_every = 100"])
    return Experiment()


@pytest.mark.integration
def test_a_population_exploits_explores_and_reports_its_best_member(pbt_run):
    """Three members, three rounds of two steps: after each of the first two rounds the worst
    member's checkpoint is the best one's (parameters bit for bit) with explored values; the row is
    the best member at the end, its compute the population's, its lineage in hparams.csv."""
    tmp_path, _ = pbt_run
    experiment = _experiment(tmp_path)
    record = next(r for r in json.load(open(tmp_path / "comparison.json")) if r["strategy"] == "pbt")
    pbt = Pbt()
    state = population_state(tmp_path)
    members, exploits = state["members"], state["exploits"]
    assert [len(m["scores"]) for m in members] == [3, 3, 3] and state["round"] == 2 and state["pending"] is None
    assert [(e["round"], e["step"]) for e in exploits] == [(0, 2), (1, 4)]
    for e in exploits:  # the worst of its round copies the best
        losses = [m["scores"][e["round"]]["dev_loss"] for m in members]
        assert e["target"] == int(np.argmax(losses)) and e["source"] == int(np.argmin(losses))
        assert e["values"]["learning_rate"] != members[e["source"]]["lineage"][-1][1]["learning_rate"] or \
            e["values"]["learning_rate"] in (0.1, 10.0)  # explored (or clipped at an end of the space)
    # The copy: the target's checkpoint at the exploit's step holds the source's parameters, its own values.
    program = experiment.member_program(["learning_rate"])
    last = exploits[-1]
    source = _restore(experiment, program, tmp_path / "pbt" / "seed0" / f"member_{last['source']}",
                      members[last["source"]]["seed"], last["step"])
    target = _restore(experiment, program, tmp_path / "pbt" / "seed0" / f"member_{last['target']}",
                      members[last["target"]]["seed"], last["step"])
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()), source[0], target[0]))
    assert target[1]["learning_rate"] == pytest.approx(last["values"]["learning_rate"])
    # The row: the best member at the end, the population's compute.
    final = [m["scores"][2]["dev_loss"] for m in members]
    best = int(np.argmin(final))
    assert record["pbt"]["best_member"] == best and record["dev_loss"] == pytest.approx(final[best], rel=1e-6)
    assert record["compute_steps"] == 18.0 and record["train_runs"] == 3 and record["train_steps"] == 6
    assert record["selected_run_dir"] == os.path.join("pbt", "seed0", f"member_{best}")
    assert [a["compute_steps"] for a in record["anytime"]] == [6.0, 12.0, 18.0]
    assert record["anytime"][0]["dev_loss"] == pytest.approx(min(m["scores"][0]["dev_loss"] for m in members))
    assert record["hparams"]["learning_rate"] == pytest.approx(members[best]["values"]["learning_rate"])
    # Its lineage step by step: each step's values are those its ancestor trained that step with,
    # found backwards from the best member through the exploits that made it.
    with open(tmp_path / record["schedule_file"]) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(6))
    ancestor, copied_from = best, {(e["step"], e["target"]): e["source"] for e in exploits}
    for r in (2, 1, 0):
        for step in range(2 * r, 2 * r + 2):
            assert float(rows[step]["learning_rate"]) == members[ancestor]["scores"][r]["values"]["learning_rate"]
        ancestor = copied_from.get((2 * r, ancestor), ancestor)
    assert record["dev_history"][-1]["step"] == 6 and record["test_bleu"] is not None
    # A rerun returns the row without training; other settings on the population (without its row) are refused.
    assert pbt.run(experiment, seed=0)["created"] == record["created"]
    for part in ("pbt", "optuna"):  # the population's checkpoints and its state (SQLite in MODEL_DIR)
        shutil.copytree(tmp_path / part, tmp_path / "elsewhere" / part)
    experiment = _experiment(tmp_path / "elsewhere")
    gin.bind_parameter("Pbt.quantile", 0.5)
    with pytest.raises(UserError, match="holds a population with other settings .*quantile 0.25 there, 0.5 here"):
        Pbt().run(experiment, seed=0)


@pytest.mark.integration
def test_an_exploit_repeated_after_a_kill_gives_the_same_checkpoint(tiny_experiment, tmp_path):
    """copy_member twice (a rerun repeats a round's copies): the target's checkpoint is the same."""
    experiment = tiny_experiment("Experiment.checkpoint_every = 100")
    program = experiment.member_program(["learning_rate"])
    values = {**experiment.base_hparams(), "learning_rate": 2.0}
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    experiment.train_member(program, a, 1, values, until=2)
    experiment.train_member(program, b, 2, values, until=2)
    explored = {**values, "learning_rate": 2.5}
    experiment.copy_member(program, a, b, 2, 2, explored)
    first = _restore(experiment, program, b, 2, 2)
    experiment.copy_member(program, a, b, 2, 2, explored)
    second = _restore(experiment, program, b, 2, 2)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool((np.asarray(x) == np.asarray(y)).all()), first[0], second[0]))
    assert first[1]["learning_rate"] == second[1]["learning_rate"] == 2.5
    with pytest.raises(UserError, match="has no checkpoint of step 4 to copy"):
        experiment.copy_member(program, a, b, 2, 4, explored)


def _member(i, losses, rates):
    return {"member": i, "scores": [{"step": 2 * (r + 1), "dev_loss": loss, "values": {"learning_rate": rate}}
                                    for r, (loss, rate) in enumerate(zip(losses, rates))]}


def test_the_members_plot_draws_each_member_and_marks_each_exploit():
    from hpo.report import plots
    record = {"strategy": "pbt", "task": "t", "seed": 0, "pbt": {
        "interval": 2, "search_space": {"learning_rate": {"low": 0.1, "high": 10.0, "log": True}},
        "members": [_member(0, [5.0, 4.0], [1.0, 1.0]), _member(1, [6.0, 4.5], [2.0, 1.25]),
                    _member(2, [5.5, 4.2], [0.5, 0.5])],
        "exploits": [{"round": 0, "step": 2, "target": 1, "source": 0, "values": {"learning_rate": 1.25}}]}}
    fig = plots.pbt_figure([record, {"strategy": "fixed"}])
    losses, rates = fig.axes
    member_lines = [line for line in losses.lines if line.get_linestyle() == "-"]
    assert len(member_lines) == 3 and list(member_lines[1].get_ydata()) == [6.0, 4.5]
    jumps = [line for line in losses.lines if line.get_linestyle() == "--"]
    assert len(jumps) == 1 and list(jumps[0].get_ydata()) == [6.0, 5.0] and list(jumps[0].get_xdata()) == [2, 2]
    marks = [line for line in rates.lines if line.get_marker() == "x"]
    assert len(marks) == 1 and list(marks[0].get_ydata()) == [1.25]
    assert list(rates.lines[1].get_ydata()) == [2.0, 1.25, 1.25]  # member 1's value per round, held to its end
    assert plots.pbt_figure([{"strategy": "guided"}]) is None


@pytest.mark.integration
def test_stops_inside_an_exploit_lose_nothing(tmp_path):
    """A population (2 members, 2 rounds) stopped by kill -9 in its exploit: after the first copy,
    inside the repeated copy's checkpoint write, and between the round's new state's write and its
    rename; each rerun goes on, and the population and its row equal an uninterrupted run's."""
    import warm
    args = ["run", "--strategy=pbt", "--gin_file=test.gin", "--gin.Pbt.population=2", "--gin.Pbt.interval=2",
            "--gin.Experiment.checkpoint_every=100"]

    def run(model_dir, stop=None):
        env = {"HPO_PHASE_FILE": str(tmp_path / "phase"), "HPO_STOP_AT": stop or ""}
        process = warm.Hpo([*args, f"--model_dir={model_dir}"], env)
        _, err = process.communicate(timeout=600)
        return process.returncode, err

    reference = run(tmp_path / "uninterrupted")
    assert reference[0] == 0, reference[1][-2000:]
    killed = tmp_path / "killed"
    for stop in ("exploit@1", "checkpoint@1", "record@1"):  # each rerun's first point of that phase
        status, err = run(killed, stop)
        assert status == -9, (stop, status, err[-2000:])
        from hpo.core import faults
        assert faults.read_phase(str(tmp_path / "phase"))[1] == stop.split("@")[0]
        state = population_state(killed)
        assert state["round"] == 0 and state["pending"] is not None, stop  # still inside the exploit
    status, err = run(killed)
    assert status == 0, err[-2000:]
    ours, theirs = (json.load(open(d / "comparison.json"))[0] for d in (killed, tmp_path / "uninterrupted"))
    assert ours["pbt"]["exploits"] == theirs["pbt"]["exploits"] and len(ours["pbt"]["exploits"]) == 1
    for a, b in zip(ours["pbt"]["members"], theirs["pbt"]["members"]):
        assert (a["scores"], a["lineage"], a["steps"]) == (b["scores"], b["lineage"], b["steps"])
    for field in ("dev_loss", "test_bleu", "dev_bleu", "hparams", "compute_steps", "anytime"):
        assert ours[field] == theirs[field], field


@pytest.mark.integration
def test_claims_replay_pbts_schedule_as_constants_for_claim_3(pbt_run):
    """`hpo run --strategy=pbt --claims`: its best member's lineage replayed as its mean and final
    constants (rows of their own), and PBT's claim 3 line against the better of them."""
    tmp_path, out = pbt_run
    records = json.load(open(tmp_path / "comparison.json"))
    pbt = next(r for r in records if r["strategy"] == "pbt")
    replays = {r["replay"]["mode"]: r for r in records if r["strategy"] == "fixed"}
    assert sorted(replays) == ["final", "mean"]  # no step-by-step replay: it could not reproduce PBT
    with open(tmp_path / pbt["schedule_file"]) as f:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(f)]
    for mode, value in (("final", rates[-1]), ("mean", float(np.float32(np.mean(np.float32(rates)))))):
        r = replays[mode]
        assert r["replay"]["of"] == "pbt" and r["run_dir"] == os.path.join(f"fixed-replay-pbt-{mode}", "seed0")
        assert r["hparams"]["learning_rate"] == pytest.approx(value, rel=1e-6)
        assert f"| fixed (replay pbt {mode}) |" in out
    verdicts = json.load(open(tmp_path / "verdicts.json"))
    (claim,) = [v for v in verdicts if v["claim"] == "pbt_schedule_vs_constant"]
    assert claim["rows"]["guided"] == "pbt" and claim["rows"]["compared"].startswith("fixed (replay pbt ")
    assert "no replays" not in (claim.get("reason") or "") and "Reproduction" not in claim["text"]
    assert not any(v["claim"] == "schedule_vs_constant" and v["verdict"] != "not tested" for v in verdicts)
