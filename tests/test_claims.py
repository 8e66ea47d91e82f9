"""The paper's claims as verdicts (hpo.report.claims): hand-made records whose answer is known, the outputs,
and one tiny `hpo run --claims` that runs the replays."""

import json
import os

import pytest

from hpo.cli.main import main
from hpo.report import claim_stats, claims, table
from test_table import REFERENCES, TASK, _decoded, glue_record, record, write_records
from test_table_configurations import gin_config

GARBAGE = [f"zz{i} qq yy xx" for i in range(len(REFERENCES))]
HALF = REFERENCES[:20] + GARBAGE[20:]


def by_claim(entries, claim, guided=None):
    found = [v for v in entries if v["claim"] == claim and (guided is None or v["rows"]["guided"] == guided)]
    assert len(found) == 1, [v["text"] for v in entries]
    return found[0]


def decoded_runs(model_dir, strategy, hyps, bleus, **fields):
    """One run per seed with test hypotheses and references on disk."""
    return [_decoded(model_dir, record(strategy, seed=seed, test_bleu=bleu, **fields), hyps)
            for seed, bleu in enumerate(bleus)]


def verdicts_of(records, model_dir):
    return claims.verdicts(records, str(model_dir))


# ---------------------------------------------------------------- 1. guided vs fixed

@pytest.mark.parametrize("guided_hyps, fixed_hyps, verdict", [
    (REFERENCES, GARBAGE, claims.SUPPORTED), (GARBAGE, REFERENCES, claims.CONTRADICTED),
    (HALF, HALF, claims.NOT_SIGNIFICANT)])
def test_guided_vs_fixed_verdicts(tmp_path, guided_hyps, fixed_hyps, verdict):
    better = guided_hyps is REFERENCES
    records = (decoded_runs(tmp_path, "fixed", fixed_hyps, [10.0, 11.0, 12.0] if better else [30.0, 32.0, 34.0]) +
               decoded_runs(tmp_path, "guided", guided_hyps, [30.0, 32.0, 34.0] if better else [10.0, 11.0, 12.0],
                            compute_steps=150.0))
    if verdict == claims.NOT_SIGNIFICANT:
        records = [{**r, "test_bleu": 20.0} for r in records]
    v = by_claim(verdicts_of(records, tmp_path), "guided_vs_fixed")
    assert v["verdict"] == verdict and v["rows"] == {"guided": "guided", "compared": "fixed"}
    assert v["seeds"] == [0, 1, 2] and v["left_out"] == []
    if verdict == claims.NOT_SIGNIFICANT:
        assert v["p_value"] == 1.0  # identical outputs
        assert v["guided"]["mean"] == v["compared"]["mean"] == 20.0
    else:
        assert v["p_value"] < claims.ALPHA
        high, low = ((v["guided"], v["compared"]) if better else (v["compared"], v["guided"]))
        assert (high["mean"], high["sd"], low["mean"], low["sd"]) == pytest.approx((32.0, 2.0, 11.0, 1.0))
    assert v["guided"]["compute_steps"] == 150.0 and v["compared"]["compute_steps"] == 100.0
    assert "pooled" in v["test"] and f"{3 * len(REFERENCES)} test sentences" in v["test"]
    assert v["text"].startswith(f"1. guided vs fixed ({TASK}): {verdict}. guided ")
    assert "compute 150 vs 100 train-step equivalents per seed (×1.50)" in v["text"]


def test_seeds_are_paired_and_the_rest_said(tmp_path):
    records = (decoded_runs(tmp_path, "fixed", GARBAGE, [10.0, 11.0, 12.0]) +
               decoded_runs(tmp_path, "guided", REFERENCES, [30.0, None, 34.0, 35.0]))
    records[4]["diverged"] = {"step": 30, "reason": "NaN loss"}
    v = by_claim(verdicts_of(records, tmp_path), "guided_vs_fixed")
    assert v["seeds"] == [0, 2] and v["guided"]["mean"] == 32.0 and v["compared"]["mean"] == 11.0
    assert v["left_out"] == ["seed 1 (guided diverged)", "seed 3 (guided only)"]
    assert "left out: seed 1 (guided diverged); seed 3 (guided only)" in v["text"]


def test_numbers_without_hypotheses_are_not_tested_for_want_of_a_p_value(tmp_path):
    records = [record("fixed", test_bleu=10.0), record("guided", test_bleu=30.0)]
    v = by_claim(verdicts_of(records, tmp_path), "guided_vs_fixed")
    assert v["verdict"] == claims.NOT_TESTED and v["p_value"] is None
    assert v["guided"]["mean"] == 30.0 and "no test hypotheses with references on disk" in v["reason"]
    assert "no p-value: no test hypotheses" in v["text"]


def test_missing_strategies_are_not_tested_with_the_reason(tmp_path):
    only_fixed = verdicts_of([record("fixed"), record("optuna")], tmp_path)
    assert [(v["number"], v["verdict"]) for v in only_fixed] == [(1, "not tested")] + [(2, "not tested")] * 5 + [
        (3, "not tested"), (4, "not tested")]
    pbt_vs_optuna = by_claim(only_fixed, "pbt_vs_optuna_equal_compute")
    assert all(f"no guided run of {TASK}" in v["text"] for v in only_fixed[:-1] if v is not pbt_vs_optuna)
    assert pbt_vs_optuna["reason"] == f"no PBT run of {TASK}"
    assert "no T5 runs" in only_fixed[-1]["reason"]
    no_baseline = verdicts_of([record("guided"), record("fixed", train_steps=50)], tmp_path)
    reasons = {v["claim"]: v["reason"] for v in no_baseline}
    assert reasons["guided_vs_fixed"] == f"no fixed run of {TASK} on guided's setup and budget (100 steps)"
    assert reasons["guided_vs_optuna"] == f"no Optuna study of {TASK} on guided's setup and budget"
    assert reasons["guided_vs_optuna_equal_compute"] == reasons["guided_vs_optuna"]
    assert reasons["guided_vs_pbt"] == reasons["guided_vs_pbt_equal_compute"] == (
        f"no PBT run of {TASK} on guided's setup and budget")
    assert reasons["schedule_vs_constant"].startswith(
        "no replays of guided's learned schedule as constants (`hpo run --claims`")


# ---------------------------------------------------------------- 2. guided vs the best Optuna trial

def test_guided_vs_optuna_with_compute_of_each(tmp_path):
    records = (decoded_runs(tmp_path, "optuna", REFERENCES, [40.0, 41.0], compute_steps=500.0, train_runs=5) +
               decoded_runs(tmp_path, "guided", HALF, [20.0, 21.0], compute_steps=110.0))
    v = by_claim(verdicts_of(records, tmp_path), "guided_vs_optuna")
    assert v["verdict"] == claims.CONTRADICTED and v["rows"]["compared"] == "optuna"
    assert (v["guided"]["compute_steps"], v["compared"]["compute_steps"]) == (110.0, 500.0)
    assert "compute 110 vs 500 train-step equivalents per seed (×0.22)" in v["text"]


def test_several_configurations_each_guided_row_against_its_own_rows(tmp_path):
    """Two guided configurations on the default setup, one guided and one fixed on another setup (LAMB),
    two Optuna studies on the default setup: each verdict names the rows it compared."""
    setup = {"Guided.tune": ["learning_rate"]}
    lamb = {**setup, "OptimizerConfig.name": "lamb"}
    gin = gin_config(str(tmp_path), **setup)
    records = [record("fixed", seed=s, gin_config=gin) for s in (0, 1)]
    records += [record("fixed", seed=0, gin_config=gin_config(str(tmp_path), **lamb), run_dir="lamb/fixed")]
    records += [record("guided", seed=s, gin_config=gin_config(str(tmp_path), **setup, **{"Guided.horizon": k}),
                       run_dir=f"k{k}/guided/seed{s}") for s in (0, 1) for k in (1, 4)]
    records += [record("guided", seed=0, gin_config=gin_config(str(tmp_path), **lamb), run_dir="lamb/guided")]
    records += [record("optuna", seed=s, gin_config=gin, study={"n_trials": n}, run_dir=f"n{n}/optuna/seed{s}")
                for s, n in ((0, 5), (1, 5), (0, 20))]
    rows = table.build_rows(records, str(tmp_path))
    guided_rows = [r for r in rows if r["strategy"].startswith("guided")]
    entries = verdicts_of(records, tmp_path)
    # six per guided row, the task's PBT vs Optuna (no PBT run), GLUE's (no T5 runs)
    assert len(guided_rows) == 3 and len(entries) == 3 * 6 + 1 + 1
    for row in guided_rows:
        assert by_claim(entries, "guided_vs_fixed", row["strategy"])["rows"]["compared"] == row["baseline"]
    assert len({r["baseline"] for r in guided_rows}) == 2  # the LAMB guided row has the LAMB fixed row
    optuna = [by_claim(entries, "guided_vs_optuna", r["strategy"]) for r in guided_rows]
    default_setup = [v for v in optuna if v["rows"]["compared"]]  # (no hypotheses on disk: no p-values)
    assert len(default_setup) == 2 and {v["rows"]["compared"] for v in default_setup} == {"optuna (study.n_trials=5)"}
    assert all("one of 2 Optuna rows on this setup" in v["text"] for v in default_setup)
    assert [v["reason"] for v in optuna if not v["rows"]["compared"]][0].startswith("no Optuna study")


# ---------------------------------------------------------------- 3. the schedule vs its best constant

def replay(model_dir, mode, seed, hyps, schedule=None, **fields):
    schedule = schedule or os.path.join(str(model_dir), f"guided/seed{seed}/hparams.csv")
    rec = record("fixed", seed=seed, replay={"file": schedule, "mode": mode, "hparams": ["learning_rate"]},
                 **fields)
    return _decoded(model_dir, rec, hyps)


def schedule_records(model_dir, replay_loss=2.0):
    guided = [_decoded(model_dir, record("guided", seed=s, test_bleu=30.0 + s, dev_loss=2.0,
                                         schedule_file=f"guided/seed{s}/hparams.csv", compute_steps=150.0),
                       REFERENCES) for s in (0, 1)]
    replays = [replay(model_dir, "schedule", s, REFERENCES, test_bleu=30.0 + s, dev_loss=replay_loss) for s in (0, 1)]
    # the mean has the better dev BLEU, the final value the better test BLEU: dev picks
    replays += [replay(model_dir, "mean", s, GARBAGE, test_bleu=10.0 + s, dev_bleu=25.0) for s in (0, 1)]
    replays += [replay(model_dir, "final", s, HALF, test_bleu=20.0 + s, dev_bleu=18.0) for s in (0, 1)]
    return guided + replays


def test_schedule_vs_its_best_constant_by_dev_and_the_replay_reproduces(tmp_path):
    v = by_claim(verdicts_of(schedule_records(tmp_path), tmp_path), "schedule_vs_constant")
    assert v["verdict"] == claims.SUPPORTED and v["best_constant"] == "mean"
    assert v["rows"] == {"guided": "guided", "compared": "fixed (replay mean)"}
    assert (v["guided"]["mean"], v["compared"]["mean"]) == (30.5, 10.5)
    assert v["constants"]["final"]["mean"] == 20.5 and v["constants"]["final"]["selection"] == 18.0
    assert v["reproduction"]["reproduced"] is True and [s["seed"] for s in v["reproduction"]["seeds"]] == [0, 1]
    assert "fixed (replay schedule) reproduces guided (dev loss within 0.1% on seeds 0, 1)." in v["text"]
    assert "the best by dev BLEU compared: fixed (replay mean) 10.50 ± 0.71 (dev BLEU 25.00)" in v["text"]


def test_a_replay_that_does_not_reproduce_guided_is_said(tmp_path):
    v = by_claim(verdicts_of(schedule_records(tmp_path, replay_loss=2.1), tmp_path), "schedule_vs_constant")
    assert v["reproduction"]["reproduced"] is False
    assert "fixed (replay schedule) does NOT reproduce guided (dev loss seed 0: 2.1000 vs 2.0000" in v["text"]


def test_only_replays_of_the_guided_runs_own_schedule_count(tmp_path):
    guided = record("guided", schedule_file="guided/seed0/hparams.csv")
    others = [replay(tmp_path, mode, 0, HALF, schedule="/elsewhere/guided/seed0/hparams.csv")
              for mode in ("mean", "final")]
    wrong_seed = replay(tmp_path, "mean", 1, HALF)
    v = by_claim(verdicts_of([guided, *others, wrong_seed], tmp_path), "schedule_vs_constant")
    assert v["verdict"] == claims.NOT_TESTED and v["reason"].startswith("no replays of guided's learned schedule")
    moved = [{**r, "_model_dir": str(tmp_path)} for r in (guided, replay(tmp_path, "mean", 0, HALF,
                                                                              schedule="/old/place/guided/seed0/hparams.csv"))]
    assert by_claim(verdicts_of(moved, tmp_path), "schedule_vs_constant")["best_constant"] == "mean"


# ---------------------------------------------------------------- 4. GLUE

def glue_runs(strategy, averages, **fields):
    return [glue_record(strategy, seed=s, glue_average=a, **fields) for s, a in enumerate(averages)]


@pytest.mark.parametrize("guided, verdict, p", [
    ([55.0, 56.0, 52.0, 58.0, 51.0, 60.0], claims.SUPPORTED, 2 / 64),
    ([45.0, 44.0, 48.0, 42.0, 49.0, 40.0], claims.CONTRADICTED, 2 / 64),
    ([55.0, 56.0, 52.0], claims.NOT_SIGNIFICANT, 2 / 8)])  # 3 seeds: the smallest p is 0.25
def test_glue_guided_vs_fixed_pretraining(guided, verdict, p):
    records = glue_runs("fixed", [50.0] * 6) + glue_runs("guided", guided, compute_steps=900.0)
    entries = verdicts_of(records, ".")
    v = by_claim(entries, "glue_guided_vs_fixed")
    assert v["verdict"] == verdict and v["p_value"] == pytest.approx(p) and v["metric"] == "GLUE average"
    assert v["guided"]["mean"] == pytest.approx(sum(guided) / len(guided)) and v["compared"]["mean"] == 50.0
    assert "sign-flip" in v["test"] and "compute 900 vs 600" in v["text"]
    assert v["text"].startswith("4. guided-pretrained vs fixed-pretrained GLUE average (synthetic_pretraining "
                                "(synthetic)): ")
    assert by_claim(entries, "guided_vs_fixed")["reason"] == "no translation runs"


def test_sign_flip_test():
    assert claim_stats.sign_flip_p([]) is None
    assert claim_stats.sign_flip_p([0.0, 0.0]) == 1.0
    assert claim_stats.sign_flip_p([1.0, 2.0, 3.0]) == 0.25
    assert claim_stats.sign_flip_p([1.0, -1.0, 2.0, 2.0]) == 0.375  # flips reaching |mean| ≥ 1: 6 of 16


# ---------------------------------------------------------------- outputs

def test_verdicts_in_markdown_latex_and_verdicts_json(tmp_path):
    model_dir = str(tmp_path / "run")
    records = (decoded_runs(model_dir, "fixed", GARBAGE, [10.0, 11.0]) +
               decoded_runs(model_dir, "guided", REFERENCES, [30.0, 31.0]) + glue_runs("guided", [50.0]))
    write_records(model_dir, records)
    out = str(tmp_path / "out")
    paths = table.write_table(model_dir, out)
    with open(paths["json"]) as f:
        assert isinstance(json.load(f), list)  # rows, as before
    with open(os.path.join(out, claims.VERDICTS_FILE)) as f:
        saved = json.load(f)
    second = ["guided_vs_optuna", "guided_vs_optuna_equal_compute", "guided_vs_pbt", "guided_vs_pbt_equal_compute",
              "pbt_vs_optuna_equal_compute", "schedule_vs_constant"]
    assert [v["claim"] for v in saved] == ["guided_vs_fixed", *second, "glue_guided_vs_fixed", *second]
    assert saved[0]["verdict"] == claims.SUPPORTED and saved[7]["verdict"] == claims.NOT_TESTED
    with open(paths["md"]) as f:
        md = f.read()
    assert md.split("### Claims\n\n")[1].splitlines()[:2] == [f"- {saved[0]['text']}", f"- {saved[1]['text']}"]
    with open(paths["tex"]) as f:
        tex = f.read()
    assert r"\begin{itemize}" in tex and r"\item 1. guided vs fixed (synthetic\_translation): supported." in tex
    assert "30.50 $\\pm$ 0.71" in tex and tex.count(r"\item ") == len(saved)
    markdown, written = table.write_report(model_dir, out)
    assert "### Claims" in markdown and os.path.join(out, claims.VERDICTS_FILE) in written


def test_claims_without_a_guided_run_recorded_is_a_one_line_error(tmp_path, capsys):
    code = main(["run", "--strategy=fixed", "--claims", "--gin_file=test.gin", f"--model_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("hpo: error: --claims replays the guided runs' schedules: no guided run of seed 0")
    assert not os.path.exists(os.path.join(tmp_path, "comparison.json"))


@pytest.mark.integration
def test_hpo_run_claims_runs_the_replays_and_the_verdict_says_so(tmp_path, capsys):
    """The one training test: guided on configs/test.gin (4 steps), then its three replays."""
    assert main(["run", "--strategy=guided", "--claims", "--gin_file=test.gin", f"--model_dir={tmp_path}"]) == 0
    printed = capsys.readouterr().out
    for mode in ("schedule", "mean", "final"):
        assert f"fixed (replay {mode}) seed 0:" in printed
    with open(os.path.join(tmp_path, claims.VERDICTS_FILE)) as f:
        v = by_claim(json.load(f), "schedule_vs_constant")
    assert v["verdict"] != claims.NOT_TESTED and set(v["constants"]) == {"mean", "final"}
    assert v["reproduction"]["reproduced"] is True  # the replay takes guided's values step by step
    assert f"- {v['text']}" in printed and "reproduces guided" in v["text"]
