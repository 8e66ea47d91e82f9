"""Every comparison also at equal compute (hpo.report.equal_compute): Optuna's trials within a budget, the claims'
equal-compute lines (PBT too), the table's `at equal compute` section and the anytime plot. No training."""

import os

from hpo.report import claims, equal_compute as ec, formats, plots, table
from test_claims import GARBAGE, HALF, by_claim, decoded_runs, verdicts_of
from test_table import PNG_MAGIC, REFERENCES, TASK, record, write_lines


def trial(number, state, cost, dev=None, test=None, **fields):
    return {"number": number, "state": state, "compute_steps": cost, "dev_bleu": dev, "test_bleu": test,
            "objective": dev if state == "COMPLETE" else None, **fields}


# a failed trial partly run (60 of 100 steps), then a pruned one with the best dev BLEU of all
TRIALS = [trial(0, "COMPLETE", 100.0, dev=20.0, test=19.0), trial(1, "FAIL", 60.0),
          {**trial(2, "PRUNED", 50.0, dev=30.0), "objective": 30.0}, trial(3, "COMPLETE", 100.0, dev=25.0, test=24.0)]


def optuna(seed=0, trials=TRIALS, study=None, **fields):
    return record("optuna", seed=seed, trials=trials, compute_steps=sum(t["compute_steps"] for t in trials),
                  study=study or {"objective": "dev_bleu", "best_trial": 3}, test_bleu=24.0, dev_bleu=25.0, **fields)


# ---------------------------------------------------------------- selection within a budget

def test_partly_run_trials_spend_their_steps_and_are_never_selected():
    at = ec.optuna_within(optuna(), 300.0)
    # 100 + 60 + 50 = 210 spent before trial 3: it fits 310, not 300; the pruned trial is never picked
    assert at.run["selected_trial"] == 0 and at.run["test_bleu"] == 19.0 and at.run["compute_steps"] == 210.0
    assert at.run["trials_within"] == 3 and "hypotheses" not in at.run  # the study's selected trial's, dropped
    at = ec.optuna_within(optuna(), 310.0)
    assert (at.run["selected_trial"], at.run["test_bleu"], at.run["compute_steps"]) == (3, 24.0, 310.0)
    assert at.run["hypotheses"] == optuna()["hypotheses"]  # the study's own selection: its record's scores


def test_no_trial_finished_within_the_budget_says_why():
    at = ec.optuna_within(optuna(), 99.0, of="guided's compute")
    assert at.run is None and at.why == ("completed no trial within guided's compute (99 train-step equivalents; "
                                         "the study had spent 100 by its first completed trial, 0)")
    assert ec.optuna_within(optuna(trials=TRIALS[1:3]), 1e6).why == "completed no trial"


def test_a_loss_objective_selects_the_lowest():
    trials = [trial(0, "COMPLETE", 100.0, test=10.0, dev_loss=2.0),
              trial(1, "COMPLETE", 100.0, test=20.0, dev_loss=1.0)]
    for t in trials:
        t["objective"] = t["dev_loss"]
    run = ec.optuna_within(optuna(trials=trials, study={"objective": "dev_loss"}), 200.0).run
    assert run["selected_trial"] == 1 and run["test_bleu"] == 20.0


def test_other_strategies_count_once_their_whole_compute_fits():
    pbt = record("pbt", compute_steps=800.0)
    assert ec.at_budget(pbt, 800.0).run is pbt
    assert ec.at_budget(pbt, 200.0, of="guided's compute").why == (
        "needs 4.00× guided's compute (800 vs 200 train-step equivalents)")
    assert ec.multiples(8.0) == [1, 2, 4, 8] and ec.multiples(5.2) == [1, 2, 4, 8] and ec.multiples(None) == [1]


# ---------------------------------------------------------------- claim 2 at equal compute

def optuna_on_disk(model_dir, seeds=(0, 1)):
    """Studies whose trial 0 decoded garbage and trial 2 the references (the study's selection), a
    failed trial between them partly run: at 200 steps only trial 0 has finished."""
    out = []
    for seed in seeds:
        trials = [trial(0, "COMPLETE", 100.0, dev=10.0, test=5.0), trial(1, "FAIL", 60.0),
                  trial(2, "COMPLETE", 100.0, dev=40.0, test=50.0)]
        for t, hyps in ((trials[0], GARBAGE), (trials[2], REFERENCES)):
            t["hypotheses"] = f"optuna/seed{seed}/trial_{t['number']}/test.hyp"
            write_lines(os.path.join(model_dir, t["hypotheses"]), hyps)
            write_lines(os.path.join(model_dir, os.path.dirname(t["hypotheses"]), "test.ref"), REFERENCES)
        out.append(record("optuna", seed=seed, trials=trials, compute_steps=260.0, test_bleu=50.0, dev_bleu=40.0,
                          hypotheses=trials[2]["hypotheses"], study={"objective": "dev_bleu", "best_trial": 2}))
    return out


def test_the_answer_flips_at_guideds_compute(tmp_path):
    records = decoded_runs(tmp_path, "guided", HALF, [25.0, 26.0], compute_steps=200.0) + optuna_on_disk(tmp_path)
    entries = verdicts_of(records, tmp_path)
    unequal, equal = by_claim(entries, "guided_vs_optuna"), by_claim(entries, "guided_vs_optuna_equal_compute")
    assert unequal["verdict"] == claims.CONTRADICTED and unequal["compared"]["mean"] == 50.0
    # the failed trial's 60 steps count: trial 2 would end at 260 > 200, so trial 0 is Optuna's number
    assert equal["verdict"] == claims.SUPPORTED and equal["compared"]["mean"] == 5.0
    assert equal["p_value"] < claims.ALPHA and equal["compared"]["compute_steps"] == 160.0
    assert equal["text"].startswith(f"2. guided vs Optuna at guided's compute ({TASK}): supported. ")
    assert ("optuna at guided's compute: per seed, the best trial by its study's objective among the trials "
            "finished within guided's compute in study order; a pruned or failed trial's steps count toward "
            "the spend, and it is never selected; seed 0: trial 0, the best of the 2 finished within 200"
            ) in equal["text"]
    assert "compute 200 vs 160 train-step equivalents per seed (×1.25)" in equal["text"]


def test_no_trial_within_guideds_compute_is_not_tested_with_the_reason(tmp_path):
    records = [record("guided", seed=s, compute_steps=90.0) for s in (0, 1)] + [optuna(s) for s in (0, 1)]
    v = by_claim(verdicts_of(records, tmp_path), "guided_vs_optuna_equal_compute")
    assert v["verdict"] == claims.NOT_TESTED and v["rows"] == {"guided": "guided", "compared": "optuna"}
    assert v["reason"].startswith("seeds 0, 1: optuna completed no trial within guided's compute (90 train-step "
                                  "equivalents; the study had spent 100 by its first completed trial, 0); "
                                  "optuna at guided's compute: per seed, the best trial")
    assert "a pruned or failed trial's steps count toward the spend" in v["text"]


def test_a_seed_without_a_trial_within_budget_is_left_out_and_said(tmp_path):
    records = [record("guided", seed=0, compute_steps=90.0), record("guided", seed=1, compute_steps=120.0),
               optuna(0), optuna(1)]
    v = by_claim(verdicts_of(records, tmp_path), "guided_vs_optuna_equal_compute")
    assert v["seeds"] == [1] and v["compared"]["mean"] == 19.0
    assert v["left_out"][0].startswith("seed 0: optuna completed no trial within guided's compute (90 ")


# ---------------------------------------------------------------- PBT

def test_pbt_against_guided_and_optuna(tmp_path):
    records = ([record("guided", seed=s, compute_steps=200.0, test_bleu=21.0) for s in (0, 1)] +
               [optuna(s) for s in (0, 1)] +
               [record("pbt", seed=s, compute_steps=800.0, test_bleu=26.0) for s in (0, 1)])
    entries = verdicts_of(records, tmp_path)
    unequal = by_claim(entries, "guided_vs_pbt")
    assert unequal["rows"] == {"guided": "guided", "compared": "pbt"} and unequal["compared"]["mean"] == 26.0
    assert "compute 200 vs 800 train-step equivalents per seed (×0.25)" in unequal["text"]
    equal = by_claim(entries, "guided_vs_pbt_equal_compute")
    assert equal["verdict"] == claims.NOT_TESTED and equal["reason"] == (
        "seeds 0, 1: pbt needs 4.00× guided's compute (800 vs 200 train-step equivalents); pbt at guided's "
        "compute: PBT counts only at a compute covering its own: its population has no test score before it ends")
    versus = by_claim(entries, "pbt_vs_optuna_equal_compute")
    assert versus["rows"] == {"guided": "pbt", "compared": "optuna"}  # PBT is the subject
    assert versus["compared"]["mean"] == 24.0 and versus["compared"]["compute_steps"] == 310.0
    assert versus["text"].startswith(f"2. PBT vs Optuna at PBT's compute ({TASK}): not tested. pbt 26.00 ± 0.00 vs "
                                     "optuna 24.00 ± 0.00 test BLEU")
    cheap = [{**r, "compute_steps": 150.0} if r["strategy"] == "pbt" else r for r in records]
    reached = by_claim(verdicts_of(cheap, tmp_path), "guided_vs_pbt_equal_compute")
    assert reached["seeds"] == [0, 1] and reached["compared"]["mean"] == 26.0


def test_without_pbt_runs_its_verdicts_are_not_tested(tmp_path):
    entries = verdicts_of([record("fixed"), record("guided"), optuna()], tmp_path)
    assert by_claim(entries, "guided_vs_pbt")["reason"] == f"no PBT run of {TASK} on guided's setup and budget"
    assert by_claim(entries, "guided_vs_pbt_equal_compute")["verdict"] == claims.NOT_TESTED
    assert by_claim(entries, "pbt_vs_optuna_equal_compute")["text"] == (
        f"2. PBT vs Optuna at PBT's compute ({TASK}): not tested: no PBT run of {TASK}.")


# ---------------------------------------------------------------- the table's section

def test_the_tables_section_at_multiples_of_fixeds_compute():
    records = ([record("fixed", seed=s, test_bleu=20.0) for s in (0, 1)] +
               [record("guided", seed=s, compute_steps=200.0, test_bleu=21.0) for s in (0, 1)] +
               [optuna(0), optuna(1, trials=TRIALS[:2] + [trial(2, "COMPLETE", 100.0, dev=22.0, test=30.0)])] +
               [record("pbt", seed=0, compute_steps=800.0, test_bleu=26.0)])
    rows = {r["strategy"]: r for r in table.build_rows(records, ".")}
    cells = {label: [(c["multiple"], c["mean"], c["seeds"]) for c in row["equal_compute"]]
             for label, row in rows.items()}
    assert cells == {
        "fixed": [(1, 20.0, 2), (2, 20.0, 2), (4, 20.0, 2), (8, 20.0, 2)],
        "guided": [(1, None, 0), (2, 21.0, 2), (4, 21.0, 2), (8, 21.0, 2)],
        # seed 0: trial 0 by 2× (210 spent before trial 3), trial 3 by 4×; seed 1: its trial 2 (260) by 4×
        "optuna": [(1, 19.0, 2), (2, 19.0, 2), (4, 27.0, 2), (8, 27.0, 2)],
        "pbt": [(1, None, 0), (2, None, 0), (4, None, 0), (8, 26.0, 1)]}
    md = formats.format_markdown(list(rows.values()))
    assert ("### At equal compute\n\n| task | strategy | 1× fixed | 2× fixed | 4× fixed | 8× fixed |\n"
            "|---|---|---|---|---|---|\n") in md
    assert f"| {TASK} | guided | – | 21.00 | 21.00 | 21.00 |" in md
    assert f"| {TASK} | pbt | – | – | – | 26.00 |" in md
    assert r"1$\times$ fixed & 2$\times$ fixed" in formats.format_latex(list(rows.values()))
    csv_text = formats.format_csv(list(rows.values()))
    assert "equal_compute_1x_mean,equal_compute_1x_seeds,equal_compute_2x_mean" in csv_text.splitlines()[0]


def test_a_cell_says_when_not_every_seed_reached_it():
    records = [record("fixed", seed=s) for s in (0, 1)] + [record("guided", seed=0, compute_steps=100.0),
                                                           record("guided", seed=1, compute_steps=200.0)]
    rows = table.build_rows(records, ".")
    assert f"| {TASK} | guided | 20.00 (1 of 2 seeds) | 20.00 |" in formats.format_markdown(rows)


# ---------------------------------------------------------------- the anytime plot

def test_best_so_far_of_a_pbt_population_reads_its_rounds():
    pbt = record("pbt", compute_steps=400.0, dev_bleu=18.0, anytime=[
        {"compute_steps": 100.0, "dev_loss": 3.0, "dev_bleu": None},
        {"compute_steps": 200.0, "dev_loss": 2.5, "dev_bleu": 15.0},
        {"compute_steps": 300.0, "dev_loss": 2.4, "dev_bleu": 14.0},
        {"compute_steps": 400.0, "dev_loss": 2.0, "dev_bleu": 17.0}])
    assert plots.best_so_far(pbt) == ([200.0, 300.0, 400.0, 400.0], [15.0, 15.0, 17.0, 18.0])


def test_mean_band_carries_each_seed_forward_where_every_seed_has_a_point():
    grid, mean, low, high = plots.mean_band([([10.0, 30.0, 50.0], [1.0, 2.0, 4.0]), ([20.0, 40.0], [3.0, 5.0])])
    assert grid == [20.0, 30.0, 40.0]  # from the later start to the earlier end
    assert mean == [2.0, 2.5, 3.5] and low == [1.0, 2.0, 2.0] and high == [3.0, 3.0, 5.0]


def anytime_records():
    history = [{"step": 50, "loss": 2.0, "bleu": 15.0}]
    pbt_rounds = [{"compute_steps": 200.0 * k, "dev_loss": 3.0 - k / 4, "dev_bleu": 10.0 + k} for k in (1, 2, 3, 4)]
    return ([record("fixed", seed=s, dev_bleu=20.0 + s, dev_history=history) for s in (0, 1)] +
            [record("guided", seed=s, compute_steps=200.0, dev_history=history) for s in (0, 1)] +
            [optuna(s) for s in (0, 1)] +
            [record("pbt", seed=s, compute_steps=800.0, anytime=pbt_rounds) for s in (0, 1)])


def test_the_anytime_plot_one_line_per_strategy_fixed_a_point(tmp_path):
    fig = plots.anytime_figure(anytime_records())
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["fixed", "guided", "optuna", "pbt"]
    fixed = lines["fixed"]
    assert fixed.get_linestyle() == "None" and list(fixed.get_xdata()) == [100.0] and list(fixed.get_ydata()) == [20.5]
    assert all(lines[k].get_drawstyle() == "steps-post" for k in ("guided", "optuna", "pbt"))
    # rounds' best dev BLEU 11 ... 14, then the final model's 21 (its whole dev set)
    assert (list(lines["pbt"].get_xdata()), list(lines["pbt"].get_ydata())) == (
        [200.0, 400.0, 600.0, 800.0], [11.0, 12.0, 13.0, 21.0])
    assert len(ax.collections) == 1 + 3  # the fixed point's min–max bar, the lines' bands (two seeds each)
    assert "min–max" in ax.get_ylabel()
    path = plots.plot_best_so_far(anytime_records(), str(tmp_path), str(tmp_path / "b.png"))
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_a_single_seed_row_has_no_band():
    fig = plots.anytime_figure([r for r in anytime_records() if r["seed"] == 0])
    assert len(fig.axes[0].get_lines()) == 4 and not fig.axes[0].collections
    assert plots.anytime_figure([record("glue_only", dev_bleu=None)]) is None



# ---------------------------------------------------------------- PBT rows

def test_pbt_rows_are_told_apart_by_their_bindings_and_space_and_come_after_optuna():
    from test_table_configurations import gin_config
    space = {"learning_rate": {"low": 0.1, "high": 10.0, "log": True}}

    def pbt(seed, population, lr_high=10.0):
        return record("pbt", seed=seed, run_dir=f"p{population}-{lr_high}/pbt/seed{seed}",
                      gin_config=gin_config("/m", **{"Pbt.population": population, "Guided.horizon": 4}),
                      pbt={"search_space": {"learning_rate": {**space["learning_rate"], "high": lr_high}},
                           "best_member": seed})
    records = [pbt(0, 4), pbt(1, 4), pbt(0, 8), pbt(0, 4, lr_high=3.0), record("optuna"), record("alpha"),
               record("fixed", gin_config=gin_config("/m", **{"Pbt.population": 2}))]
    rows = table.build_rows(records, ".")
    assert [(r["strategy"].split(" ")[0], r["seeds"]) for r in rows] == [
        ("fixed", 1), ("optuna", 1), ("pbt", 2), ("pbt", 1), ("pbt", 1), ("alpha", 1)]
    assert [r["configuration"] for r in rows[2:5]] == [
        f'Pbt.population={n}, pbt.search_space={{"learning_rate": {{"high": {high}, "log": true, "low": 0.1}}}}'
        for n, high in ((4, 10.0), (4, 3.0), (8, 10.0))]
    # Pbt's bindings are no part of the setup: every row has the fixed row as its baseline
    assert {r["baseline"] for r in rows} == {"fixed"}
