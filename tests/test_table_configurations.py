"""`hpo table`: a row is one task × strategy × configuration; a seed counts once (hand-made records)."""

import csv
import json
import os

import pytest

from hpo.report import formats, plots, run_config, table
from hpo.report.row_groups import group_runs
from test_table import _decoded, record, write_records, REFERENCES

HEADER = "# Parameters for {}:\n# " + "=" * 78 + "\n"


def gin_config(model_dir, **bindings):
    """A gin config as gin.config_str() writes it: macros, then one section per configurable."""
    macros = {"MODEL_DIR": model_dir, "TRAIN_STEPS": 200, **{k: v for k, v in bindings.items() if "." not in k}}
    sections = {}
    for name, value in bindings.items():
        if "." in name:
            sections.setdefault(name.rsplit(".", 1)[0], []).append(f"{name} = {value!r}")
    text = HEADER.format("Macros").replace("Parameters for Macros:", "Macros:")
    text += "".join(f"{k} = {v!r}\n" for k, v in sorted(macros.items()))
    for configurable, lines in sorted(sections.items()):
        text += "\n" + HEADER.format(configurable) + "\n".join(lines) + "\n"
    return text


def grid_record(model_dir, multiplier, seed=0, **fields):
    """A fixed run of experiments/lr_grid.sh: `--gin.Fixed.hparams="{'learning_rate': M}"` in its own dir."""
    gin = gin_config(str(model_dir), **{"Fixed.hparams": {"learning_rate": multiplier},
                                        "Guided.tune": ["learning_rate"], "OptunaSearch.n_trials": 5})
    return record("fixed", seed=seed, gin_config=gin, hparams={"learning_rate": multiplier, "weight_decay": 0.0},
                  **fields)


def json_rows(path):
    with open(path) as f:
        return json.load(f)


def test_learning_rate_grid_dirs_make_one_row_per_multiplier(tmp_path):
    """lr_grid.sh's dirs at ×1 and ×3, both seed 0: two rows of one seed, not one row of 'two seeds'."""
    lr1 = write_records(tmp_path / "lr1.0", [grid_record(tmp_path / "lr1.0", 1.0, test_bleu=15.6)])
    lr3 = write_records(tmp_path / "lr3.0", [grid_record(tmp_path / "lr3.0", 3.0, test_bleu=24.7)])
    paths = table.write_table([lr1, lr3], str(tmp_path / "out"))
    rows = json_rows(paths["json"])
    assert [(r["strategy"], r["seeds"], r["test_bleu_mean"], r["test_bleu_sd"]) for r in rows] == [
        ("fixed (learning_rate=1)", 1, 15.6, None), ("fixed (learning_rate=3)", 1, 24.7, None)]
    assert [r["configuration"] for r in rows] == ["learning_rate=1", "learning_rate=3"]
    assert [r["hparams"] for r in rows] == ["learning_rate=1, weight_decay=0", "learning_rate=3, weight_decay=0"]
    # neither ran the configured defaults (both set Fixed.hparams): the first dir given is the baseline
    assert [r["baseline"] for r in rows] == ["fixed (learning_rate=1)"] * 2
    with open(paths["md"]) as f:
        md = f.read()
    assert "| fixed (learning_rate=3) | 1 | 24.70 |" in md
    assert "against fixed (learning_rate=1) for fixed (learning_rate=3)" in md
    with open(paths["csv"], newline="") as f:
        reader = csv.DictReader(f)
        csv_rows = list(reader)
    assert reader.fieldnames[-len(formats.CONFIGURATION_COLUMNS):] == list(formats.CONFIGURATION_COLUMNS)
    assert csv_rows[1]["configuration"] == "learning_rate=3"

    reversed_rows = table.build_rows(table.load_records([lr3, lr1]), lr3)
    assert [r["baseline"] for r in reversed_rows] == ["fixed (learning_rate=3)"] * 2


def test_a_default_run_joins_the_grid_run_of_equal_values_and_is_the_baseline(tmp_path):
    """`hpo run` without Fixed.hparams in a third dir: the same configuration as the ×1 grid run."""
    lr3 = write_records(tmp_path / "lr3.0", [grid_record(tmp_path / "lr3.0", 3.0)])
    lr1 = write_records(tmp_path / "lr1.0", [grid_record(tmp_path / "lr1.0", 1.0, seed=1)])
    default = grid_record(tmp_path / "default", 1.0, test_bleu=30.0)
    default["gin_config"] = default["gin_config"].replace("Fixed.hparams = {'learning_rate': 1.0}\n", "")
    write_records(tmp_path / "default", [default, record("guided", gin_config=default["gin_config"])])
    rows = table.build_rows(table.load_records([lr3, lr1, str(tmp_path / "default")]), lr3)
    assert [(r["strategy"], r["seed_list"], r["baseline"]) for r in rows] == [
        ("fixed (learning_rate=1)", [0, 1], "fixed (learning_rate=1)"),
        ("fixed (learning_rate=3)", [0], "fixed (learning_rate=1)"), ("guided", [0], "fixed (learning_rate=1)")]
    assert rows[0]["test_bleu_mean"] == pytest.approx(25.0)


def test_the_same_run_in_two_dirs_counts_once(tmp_path):
    first = write_records(tmp_path / "a", [record(seed=0, test_bleu=10.0), record(seed=1, test_bleu=12.0)])
    second = write_records(tmp_path / "b", [record(seed=0, test_bleu=30.0)])
    paths = table.write_table([first, second], str(tmp_path / "out"))
    (row,) = json_rows(paths["json"])
    assert row["seeds"] == 2 and row["seed_list"] == [0, 1] and row["train_runs"] == 2
    assert row["test_bleu_mean"] == pytest.approx(21.0)  # seed 0 from b (the dir given last), seed 1 from a
    used, ignored = os.path.join(second, "fixed/seed0"), os.path.join(first, "fixed/seed0")
    assert row["duplicates"] == [{"seed": 0, "used": used, "ignored": [ignored]}]
    with open(paths["md"]) as f:
        md = f.read()
    assert f"seed 0: recorded 2 times, counted once; used {used}, left out {ignored}" in md


def test_runs_differing_only_in_model_dir_are_one_row(tmp_path):
    gin = dict(**{"Fixed.hparams": {}, "learning_rate_schedule.base_learning_rate": 1.0})
    records = [record(seed=0, gin_config=gin_config(str(tmp_path / "a"), **gin), _model_dir=str(tmp_path / "a")),
               record(seed=1, gin_config=gin_config(str(tmp_path / "b"), **gin, **{"Experiment.model_dir": "/b"}),
                      _model_dir=str(tmp_path / "b"))]
    (row,) = table.build_rows(records, str(tmp_path))
    assert (row["strategy"], row["seeds"], row["seed_list"], row["configuration"]) == ("fixed", 2, [0, 1], "")
    assert row["baseline"] == "fixed" and row["relative_compute"] == 1.0


def test_other_strategies_bindings_do_not_split_a_row_their_own_do():
    def guided(seed, meta, trials):
        gin = gin_config(f"/m{meta}", **{"Guided.meta_learning_rate": meta, "OptunaSearch.n_trials": trials})
        return record("guided", seed=seed, gin_config=gin, hparams={"learning_rate": 1.0 + seed},
                      _model_dir=f"/m{meta}")

    def fixed(seed, meta, trials):
        return record(seed=seed, gin_config=guided(seed, meta, trials)["gin_config"], _model_dir=f"/m{meta}")
    records = [fixed(0, 0.01, 5), fixed(1, 0.003, 9), guided(0, 0.01, 5), guided(1, 0.01, 9), guided(0, 0.003, 5)]
    rows = table.build_rows(records, ".")
    assert [(r["strategy"], r["seed_list"]) for r in rows] == [
        ("fixed", [0, 1]),
        ("guided (Guided.meta_learning_rate=0.003)", [0]), ("guided (Guided.meta_learning_rate=0.01)", [0, 1])]
    assert [r["baseline"] for r in rows] == ["fixed"] * 3


def test_baseline_is_the_fixed_run_on_the_same_setup_with_the_configured_defaults(tmp_path):
    garbage = [f"zz{i}" for i in range(len(REFERENCES))]

    def run(strategy, setup, override=None, hyps=REFERENCES):
        gin = {"OptimizerConfig.name": setup, **({"Fixed.hparams": override} if override else {})}
        run_dir = f"{strategy}-{setup}-{bool(override)}/seed0"
        rec = record(strategy, gin_config=gin_config("/m", **gin), run_dir=run_dir, hypotheses=f"{run_dir}/test.hyp",
                     hparams={"learning_rate": (override or {}).get("learning_rate", 1.0)},
                     compute_steps=100.0 if strategy == "fixed" else 150.0)
        return _decoded(tmp_path, rec, hyps)
    records = [run("fixed", "adafactor", {"learning_rate": 3.0}),  # given first, yet not the defaults
               run("fixed", "adafactor", hyps=garbage), run("fixed", "lamb"),
               run("guided", "adafactor"), run("guided", "lamb")]
    rows = {r["strategy"]: r for r in table.build_rows(records, str(tmp_path))}
    adafactor, lamb = "fixed (learning_rate=1, OptimizerConfig.name=adafactor)", "fixed (learning_rate=1, " \
                                                                                 "OptimizerConfig.name=lamb)"
    assert list(rows) == [adafactor, lamb, "fixed (learning_rate=3, OptimizerConfig.name=adafactor)",  # defaults first
                          "guided (OptimizerConfig.name=adafactor)", "guided (OptimizerConfig.name=lamb)"]
    assert [r["baseline"] for r in rows.values()] == [adafactor, lamb, adafactor, adafactor, lamb]
    assert rows["guided (OptimizerConfig.name=lamb)"]["relative_compute"] == pytest.approx(1.5)
    # guided decoded the references everywhere; only adafactor's default fixed run decoded garbage
    assert rows["guided (OptimizerConfig.name=lamb)"]["p_value"] == 1.0
    assert rows["guided (OptimizerConfig.name=adafactor)"]["p_value"] < 0.05


def test_replays_of_each_seeds_schedule_are_one_row_per_mode():
    def replay(seed, mode, names=("learning_rate",), weight_decay=0.0):
        return record("fixed", seed=seed, hparams={"learning_rate": 0.5 + seed, "weight_decay": weight_decay},
                      replay={"file": f"/m/guided/seed{seed}/hparams.csv", "mode": mode, "hparams": list(names)})
    records = [replay(0, "mean"), replay(1, "mean"), replay(0, "final"), replay(2, "mean", weight_decay=0.1)]
    rows = table.build_rows(records, ".")
    assert [(r["strategy"], r["seed_list"]) for r in rows] == [
        ("fixed (replay final)", [0]), ("fixed (replay mean; weight_decay=0)", [0, 1]),
        ("fixed (replay mean; weight_decay=0.1)", [2])]


def test_replays_of_schedules_learned_with_other_guided_settings_are_rows_of_their_own():
    """Two dirs of `hpo run --claims`, one-step and horizon-16 guided: each seed's replays are of
    different schedules, so neither counts as the other's seed (and the label says why)."""
    def replay(model_dir, horizon):
        gin = gin_config(model_dir, **{"Guided.horizon": horizon, "Guided.tune": ["learning_rate"]})
        return record("fixed", seed=0, gin_config=gin, _model_dir=model_dir, hparams={"learning_rate": 0.7},
                      replay={"file": f"{model_dir}/guided/seed0/hparams.csv", "mode": "mean",
                              "hparams": ["learning_rate"]})
    rows = table.build_rows([replay("/one", 1), replay("/sixteen", 16)], ".")
    assert [(r["strategy"], r["seed_list"]) for r in rows] == [
        ("fixed (replay mean; Guided.horizon=1)", [0]), ("fixed (replay mean; Guided.horizon=16)", [0])]


def test_optuna_rows_by_study_settings_not_by_study_name():
    def optuna(seed, n_trials):
        study = {"name": f"task-seed{seed}", "sampler": "tpe", "n_trials": n_trials, "best_trial": seed}
        return record("optuna", seed=seed, study=study, hparams={"learning_rate": 2.0 + seed},
                      run_dir=f"optuna{n_trials}/seed{seed}")
    rows = table.build_rows([optuna(0, 5), optuna(1, 5), optuna(0, 20)], ".")
    assert [(r["strategy"], r["seed_list"]) for r in rows] == [
        ("optuna (study.n_trials=5)", [0, 1]), ("optuna (study.n_trials=20)", [0])]


def test_labels_cut_short_stay_unique_and_the_configuration_has_everything():
    records = [record(seed=0, hparams={"a": 1.0, "b": 1.0, "c": 1.0, "d": d}, _model_dir=f"/m{d}")
               for d in (1.0, 2.0, 3.0)]
    for rec in records[1:]:
        rec["hparams"].update(a=2.0, b=2.0, c=2.0)
    rows = table.build_rows(records, ".")
    assert [r["strategy"] for r in rows] == [
        "fixed (a=1, b=1, c=1, +1 more)", "fixed (a=2, b=2, c=2, +1 more)", "fixed (a=2, b=2, c=2, +1 more) #2"]
    assert rows[2]["configuration"] == "a=2, b=2, c=2, d=3"


def test_a_record_without_gin_config_or_with_a_broken_one():
    with_gin = record(seed=0, gin_config=gin_config("/m", TRAIN_STEPS=100))
    broken = record(seed=1, gin_config="this is = = not gin")
    rows = table.build_rows([with_gin, record(seed=2), broken], ".")
    assert [(r["strategy"], r["seed_list"], r["baseline"]) for r in rows] == [
        ("fixed", [0], "fixed"), ("fixed (no readable gin config)", [1, 2], "fixed")]
    assert run_config.gin_bindings(None) is None and run_config.gin_bindings(broken["gin_config"]) is None


def test_plots_colour_rows_by_configuration(tmp_path):
    history = [{"step": 50, "loss": 2.0, "bleu": 15.0}]
    lr1, lr3 = (write_records(tmp_path / f"lr{m}", [grid_record(tmp_path / f"lr{m}", m, dev_history=history)])
                for m in (1.0, 3.0))
    written = plots.write_plots([lr1, lr3], out_dir=str(tmp_path / "out"))
    assert [os.path.basename(p) for p in written] == ["best_so_far.png"]
    drawn = []

    class Axes:
        def plot(self, xs, ys, **kwargs):
            drawn.append((kwargs["label"], kwargs["color"]))
    groups = group_runs(table.load_records([lr1, lr3]))
    plots._plot_runs(Axes(), [(g.label, plots.best_so_far(r)) for g in groups for r in g.records])
    assert drawn == [("fixed (learning_rate=1)", "C0"), ("fixed (learning_rate=3)", "C1")]


def test_runs_without_gin_config_are_told_apart_by_budget_and_compared_at_theirs():
    """Optuna's records carry no gin config: their budget (train_steps) still sets rows and baselines apart."""
    records = [record(seed=0, train_steps=100, run_dir="short/seed0", compute_steps=100.0),
               record(seed=0, train_steps=200, run_dir="long/seed0", compute_steps=200.0),
               record("optuna", seed=0, train_steps=200, compute_steps=800.0, study={"n_trials": 4})]
    rows = table.build_rows(records, ".")
    assert [(r["strategy"], r["baseline"], r["relative_compute"]) for r in rows] == [
        ("fixed (train_steps=100)", "fixed (train_steps=100)", 1.0),
        ("fixed (train_steps=200)", "fixed (train_steps=200)", 1.0), ("optuna", "fixed (train_steps=200)", 4.0)]
