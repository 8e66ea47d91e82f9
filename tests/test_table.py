"""`hpo table`: rows, formats, significance and plots from hand-made records (no training)."""

import csv
import json
import os

import pytest

from hpo.cli.main import main
from hpo.report import formats, plots, table

TASK = "synthetic_translation"
SIG = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLOURS, SIZES = ["red", "big", "old", "small", "black"] * 8, ["blue", "new", "wide", "flat"] * 10
REFERENCES = [f"the {a} cat sat on the {b} mat near house number {i} today"
              for i, (a, b) in enumerate(zip(COLOURS, SIZES))]


def record(strategy="fixed", seed=0, **fields):
    """A record as `hpo run` writes it, with round numbers."""
    replay = fields.get("replay")
    run_dir = f"{strategy}{'-replay-' + replay['mode'] if replay else ''}/seed{seed}"
    return {
        "task": TASK, "strategy": strategy, "seed": seed, "run_dir": run_dir,
        "test_bleu": 20.0, "dev_bleu": 21.0, "test_chrf": 40.0, "dev_chrf": 41.0,
        "bleu_signature": SIG, "hypotheses": f"{run_dir}/test.hyp",
        "train_steps": 100, "train_runs": 1, "compute_steps": 100.0, "wall_seconds": 10.0,
        "hparams": {"learning_rate": 1.0, "weight_decay": 0.0}, "dev_history": [],
        **fields,
    }


def write_records(model_dir, records):
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "comparison.json"), "w") as f:
        json.dump(records, f)
    return str(model_dir)


def write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def rows_by_label(records, model_dir="."):
    return {row["strategy"]: row for row in table.build_rows(records, str(model_dir))}


def test_rows_are_ordered_by_task_then_strategy():
    records = [record("optuna"), record("zeta"), record("guided"), record("alpha"),
               record("fixed", replay={"mode": "schedule"}), record("fixed", replay={"mode": "mean"}),
               record("fixed"), record("fixed", task="a_task")]
    rows = table.build_rows(records, ".")
    assert [(r["task"], r["strategy"]) for r in rows] == [
        ("a_task", "fixed"), (TASK, "fixed"),
        (TASK, "fixed (replay mean)"), (TASK, "fixed (replay schedule)"),
        (TASK, "guided"), (TASK, "optuna"), (TASK, "alpha"), (TASK, "zeta")]


def test_mean_and_sample_sd_by_hand():
    records = [record("guided", seed=s, test_bleu=b, dev_bleu=d, hparams={"learning_rate": lr})
               for s, b, d, lr in [(0, 20.0, 10.0, 1.0), (1, 22.0, 12.0, 2.0), (2, 27.0, 14.0, 6.0)]]
    row = rows_by_label(records)["guided"]
    assert row["seeds"] == 3 and row["seed_list"] == [0, 1, 2]
    assert row["test_bleu_mean"] == pytest.approx(23.0)
    # deviations -3, -1, 4: squares sum to 26, over n - 1 = 2 gives 13
    assert row["test_bleu_sd"] == pytest.approx(13 ** 0.5)
    assert row["dev_bleu_mean"] == pytest.approx(12.0) and row["dev_bleu_sd"] == pytest.approx(2.0)
    assert row["hparams_mean"] == {"learning_rate": pytest.approx(3.0)}
    assert row["hparams"] == "learning_rate=3"
    assert row["wall_seconds"] == pytest.approx(30.0) and row["train_runs"] == 3
    assert "23.00 ± 3.61" in formats.format_markdown([row])


def test_one_seed_has_no_sd():
    row = rows_by_label([record()])["fixed"]
    assert row["test_bleu_sd"] is None and row["test_bleu_mean"] == 20.0
    assert "| 20.00 |" in formats.format_markdown([row])


def test_duplicate_record_neither_duplicates_nor_double_counts():
    records = [record(seed=0, test_bleu=10.0), record(seed=1, test_bleu=30.0),
               record(seed=0, test_bleu=20.0)]  # a rerun of seed 0: the later record wins
    rows = table.build_rows(records, ".")
    assert len(rows) == 1
    row = rows[0]
    assert row["seeds"] == 2 and row["seed_list"] == [0, 1]
    assert row["test_bleu_mean"] == pytest.approx(25.0)
    assert row["train_runs"] == 2 and row["total_train_steps"] == 200 and row["wall_seconds"] == 20.0


def test_a_row_averaging_runs_made_with_different_versions_says_so():
    old, new = {"jax": "0.10.2", "optax": "0.2.8"}, {"jax": "0.11.2", "optax": "0.2.8"}
    records = [record(seed=0, versions=old), record(seed=1, versions=old), record(seed=2, versions=new),
               record("guided", seed=0, versions=new), record("guided", seed=1),  # an older record: no versions
               record("guided", seed=2, versions=new)]
    rows = rows_by_label(records)
    assert rows["fixed"]["mixed_versions"] == {"jax": {"0.10.2": [0, 1], "0.11.2": [2]}}
    assert rows["guided"]["mixed_versions"] == {}
    text = formats.format_markdown(list(rows.values()))
    assert ("fixed: averages runs made with different versions, so its spread mixes software with seeds: "
            "jax 0.10.2 (seeds 0, 1) vs 0.11.2 (seed 2).") in text
    assert "guided: averages" not in text
    assert json.loads(next(csv.DictReader(formats.format_csv(list(rows.values())).splitlines()))["mixed_versions"]) \
        == {"jax": {"0.10.2": [0, 1], "0.11.2": [2]}}


def test_relative_compute_and_train_steps():
    records = [record("fixed", seed=0, compute_steps=100.0), record("fixed", seed=1, compute_steps=100.0),
               record("guided", compute_steps=150.0),
               record("optuna", train_runs=8, compute_steps=520.0, total_train_steps=520),
               record("fixed", replay={"mode": "mean"}, compute_steps=100.0),
               record("guided", task="other", compute_steps=150.0)]
    rows = rows_by_label(records[:5])
    assert rows["fixed"]["relative_compute"] == pytest.approx(1.0)
    assert rows["fixed"]["total_train_steps"] == 200
    assert rows["guided"]["relative_compute"] == pytest.approx(1.5)
    assert rows["optuna"]["relative_compute"] == pytest.approx(5.2)
    # the record's own total wins over train_steps × train_runs (trials were pruned early)
    assert rows["optuna"]["total_train_steps"] == 520 and rows["optuna"]["train_runs"] == 8
    assert rows["fixed (replay mean)"]["relative_compute"] == pytest.approx(1.0)
    assert rows_by_label(records[5:])["guided"]["relative_compute"] is None  # no fixed row for that task


def test_differing_signatures_are_reported():
    records = [record(seed=0), record(seed=1, bleu_signature=SIG.replace("13a", "intl"))]
    assert rows_by_label(records)["fixed"]["bleu_signature"].startswith("differs across seeds")


def _decoded(model_dir, rec, hyps, refs=REFERENCES):
    write_lines(os.path.join(model_dir, rec["run_dir"], "test.hyp"), hyps)
    if refs is not None:
        write_lines(os.path.join(model_dir, rec["run_dir"], "test.ref"), refs)
    return rec


def test_p_value_small_when_one_system_is_the_references(tmp_path):
    garbage = [f"zz{i} qq yy xx" for i in range(len(REFERENCES))]
    records = [_decoded(tmp_path, record("fixed", seed=0), garbage),
               _decoded(tmp_path, record("fixed", seed=1), garbage),
               _decoded(tmp_path, record("guided", seed=1), REFERENCES),
               _decoded(tmp_path, record("guided", seed=2), REFERENCES)]
    rows = rows_by_label(records, tmp_path)
    assert rows["fixed"]["p_value"] is None
    guided = rows["guided"]
    assert 0.0 <= guided["p_value"] < 0.05 and guided["p_value_seed"] == 1  # the only common seed
    assert "(seed 1)" in formats.format_markdown(list(rows.values()))


def test_no_p_value_without_references_or_aligned_hypotheses(tmp_path):
    garbage = [f"zz{i}" for i in range(len(REFERENCES))]
    base = _decoded(tmp_path, record("fixed"), garbage)
    no_refs = _decoded(tmp_path, record("guided"), REFERENCES, refs=None)
    os.remove(os.path.join(tmp_path, "fixed/seed0/test.ref"))
    assert rows_by_label([base, no_refs], tmp_path)["guided"]["p_value"] is None
    _decoded(tmp_path, base, garbage)
    short = _decoded(tmp_path, record("optuna"), REFERENCES[:-1])
    missing = record("guided", seed=0, run_dir="nowhere", hypotheses="nowhere/test.hyp")
    other_seed = _decoded(tmp_path, record("alpha", seed=5), REFERENCES)
    rows = rows_by_label([base, short, missing, other_seed], tmp_path)
    assert [rows[k]["p_value"] for k in ("optuna", "guided", "alpha")] == [None, None, None]
    assert rows["alpha"]["p_value_seed"] is None


def _all_strategies(model_dir):
    """Records for every strategy, with a guided schedule and optuna trials on disk."""
    schedule = "guided/seed0/hparams.csv"
    os.makedirs(os.path.join(model_dir, "guided/seed0"))
    with open(os.path.join(model_dir, schedule), "w") as f:
        f.write("step,learning_rate,weight_decay\n")
        f.writelines(f"{s},{0.01 * (1 + s)!r},{0.1 + 0.001 * s!r}\n" for s in range(100))
    history = [{"step": 50, "loss": 2.0, "bleu": 15.0}, {"step": 100, "loss": 1.5, "bleu": 14.0}]
    trials = [{"number": 0, "state": "COMPLETE", "dev_bleu": 12.0, "compute_steps": 100.0},
              {"number": 1, "state": "PRUNED", "dev_bleu": 30.0, "compute_steps": 20.0},
              {"number": 2, "state": "COMPLETE", "dev_bleu": 18.0, "compute_steps": 100.0}]
    return [record("fixed", dev_history=history), record("fixed", seed=1),
            record("guided", schedule_file=schedule, compute_steps=150.0, dev_history=history),
            record("optuna", train_runs=3, compute_steps=220.0, total_train_steps=220, trials=trials),
            record("fixed", replay={"file": schedule, "mode": "schedule", "hparams": ["learning_rate"]})]


def test_write_table_formats_are_parseable(tmp_path):
    model_dir = write_records(tmp_path / "run", _all_strategies(tmp_path / "run"))
    out = str(tmp_path / "out")
    paths = table.write_table(model_dir, out)
    assert set(paths) == {"md", "csv", "json", "tex"}
    assert all(os.path.dirname(p) == out and os.path.isfile(p) for p in paths.values())
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["strategy"] for r in rows] == ["fixed", "fixed (replay schedule)", "guided", "optuna"]
    assert rows[0]["seed_list"] == "0 1" and float(rows[3]["relative_compute"]) == pytest.approx(2.2)
    with open(paths["json"]) as f:
        assert [r["seeds"] for r in json.load(f)] == [2, 1, 1, 1]
    with open(paths["md"]) as f:
        main_part, section = f.read().split("### At equal compute\n")
    table_lines = [line for line in main_part.splitlines() if line.startswith("|")]
    assert table_lines[0].startswith("| task | strategy |") and set(table_lines[1]) == {"|", "-"}
    assert len(table_lines) == 2 + 4
    section_lines = [line for line in section.splitlines() if line.startswith("|")]
    assert section_lines[0] == "| task | strategy | 1× fixed | 2× fixed | 4× fixed |" and len(section_lines) == 2 + 4
    with open(paths["tex"]) as f:
        tex = f.read()
    assert r"synthetic\_translation" in tex and r"learning\_rate" in tex
    assert "synthetic_translation" not in tex
    assert tex.count(r"\\") == (1 + 4) * 2 and tex.count(r"\begin{tabular}") == 2  # the table, its section
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]


def test_write_table_of_several_model_dirs(tmp_path):
    first = write_records(tmp_path / "a", [record(seed=0, test_bleu=10.0)])
    second = write_records(tmp_path / "b", [record(seed=1, test_bleu=30.0), record("guided")])
    table.write_table([first, second])
    with open(os.path.join(first, "table.json")) as f:
        rows = json.load(f)
    summary = [(r["strategy"], r["seeds"], r["test_bleu_mean"]) for r in rows]
    assert summary == [("fixed", 2, 20.0), ("guided", 1, 20.0)]


def test_latex_escapes_special_characters():
    escaped = r"a\_b 50\% \& \#1 \{x\} \textasciitilde{}\textasciicircum{}\$"
    assert formats.tex_escape("a_b 50% & #1 {x} ~^$") == escaped


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def test_plots_are_png(tmp_path):
    model_dir = write_records(tmp_path, _all_strategies(tmp_path))
    paths = plots.write_plots(model_dir)
    assert [os.path.basename(p) for p in paths] == ["hparam_trajectories.png", "best_so_far.png"]
    assert all(_is_png(p) for p in paths)
    assert not [p for p in os.listdir(tmp_path / "plots") if p.startswith(".tmp-")]


def test_best_so_far_curves():
    history = [{"step": 50, "loss": 2.0, "bleu": 15.0}, {"step": 100, "loss": 1.5, "bleu": 14.0}]
    guided = record("guided", compute_steps=150.0, dev_bleu=16.0, dev_history=history)
    assert plots.best_so_far(guided) == ([75.0, 150.0, 150.0], [15.0, 15.0, 16.0])
    trials = [{"state": "FAIL", "dev_bleu": None, "compute_steps": 10.0},
              {"state": "COMPLETE", "dev_bleu": 12.0, "compute_steps": 100.0},
              {"state": "PRUNED", "dev_bleu": 30.0, "compute_steps": 20.0},
              {"state": "COMPLETE", "dev_bleu": 18.0, "compute_steps": 100.0}]
    assert plots.best_so_far(record("optuna", trials=trials)) == ([110.0, 130.0, 230.0], [12.0, 12.0, 18.0])


def test_no_trajectory_plot_without_guided(tmp_path):
    assert plots.plot_trajectories([record()], str(tmp_path), str(tmp_path / "t.png")) is None
    assert not os.path.exists(tmp_path / "t.png")


def test_cli_table_prints_markdown_and_paths(tmp_path, capsys):
    model_dir = write_records(tmp_path / "run", _all_strategies(tmp_path / "run"))
    assert main(["table", model_dir, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| task | strategy |" in printed and "| optuna |" in printed
    assert os.path.join(str(tmp_path / "out"), "plots", "best_so_far.png") in printed


@pytest.mark.parametrize("make", ["missing", "empty_dir"])
def test_cli_table_bad_dir_is_a_one_line_error(tmp_path, capsys, make):
    model_dir = tmp_path / "run"
    if make == "empty_dir":
        model_dir.mkdir()
    assert main(["table", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpo: error: ") and str(model_dir) in err and err.count("\n") == 1


# ---------------------------------------------------------------- GLUE rows

PRETRAIN = "synthetic_pretraining"


def task_result(score, invalid=0, n=100):
    return {"metrics": {"score": score}, "score": score, "invalid": invalid, "num_examples": n,
            "synthetic": True}


def glue_record(strategy="fixed", seed=0, scores=None, invalid=0, **fields):
    """A GLUE record as the pretrain → fine-tune experiment writes it, with round numbers."""
    scores = scores or {"cola": 10.0, "sst2": 80.0, "mnli_matched": 60.0, "mnli_mismatched": 50.0}
    glue = {task: task_result(score, invalid) for task, score in scores.items()}
    return {
        "task": PRETRAIN, "benchmark": "glue", "strategy": strategy, "seed": seed,
        "run_dir": f"{strategy}/seed{seed}", "glue": glue, "glue_average": 50.0, "glue_synthetic": True,
        "dev_loss": 2.0, "train_steps": 300, "train_runs": 1, "compute_steps": 600.0,
        "finetune_steps": 200, "wall_seconds": 100.0, "hparams": {"learning_rate": 1.0},
        **fields,
    }


def test_glue_rows_mean_sd_invalid_and_compute():
    records = [glue_record("fixed", 0), glue_record("fixed", 1, compute_steps=400.0),
               glue_record("guided", 0, glue_average=40.0, dev_loss=2.0, invalid=1,
                           scores={"cola": 20.0, "sst2": 70.0}, compute_steps=750.0),
               glue_record("guided", 1, glue_average=46.0, dev_loss=3.0, invalid=2,
                           scores={"cola": 26.0, "sst2": 90.0}, compute_steps=750.0),
               glue_record("guided", 2, glue_average=49.0, dev_loss=4.0, invalid=0,
                           scores={"cola": 23.0}, compute_steps=750.0)]
    rows = table.build_rows(records, ".")
    assert [(r["benchmark"], r["task"], r["strategy"], r["seeds"]) for r in rows] == [
        ("glue", PRETRAIN, "fixed", 2), ("glue", PRETRAIN, "guided", 3)]
    fixed, guided = rows
    assert fixed["glue_tasks"] == ["cola", "sst2", "mnli_matched", "mnli_mismatched"]
    assert guided["glue_tasks"] == ["cola", "sst2"] and "glue_mnli_matched_mean" not in guided
    # averages 40, 46, 49: mean 45, deviations -5, 1, 4 -> squares 42 / 2 = 21
    assert guided["glue_average_mean"] == pytest.approx(45.0)
    assert guided["glue_average_sd"] == pytest.approx(21 ** 0.5)
    assert guided["glue_cola_mean"] == pytest.approx(23.0) and guided["glue_cola_sd"] == pytest.approx(3.0)
    # a seed without SST-2 results does not count as a zero
    assert guided["glue_sst2_mean"] == pytest.approx(80.0)
    assert guided["glue_sst2_sd"] == pytest.approx(200 ** 0.5)
    assert guided["invalid_predictions"] == 2 * 1 + 2 * 2 + 1 * 0 and guided["predictions"] == 500
    assert guided["dev_loss_mean"] == pytest.approx(3.0) and guided["dev_loss_sd"] == pytest.approx(1.0)
    assert guided["relative_compute"] == pytest.approx(1.5) and fixed["relative_compute"] == 1.0
    assert guided["train_runs"] == 3 and guided["total_train_steps"] == 900
    assert guided["wall_seconds"] == 300.0
    assert fixed["glue_average_sd"] == 0.0 and fixed["invalid_predictions"] == 0

    md, section = formats.format_markdown(rows).split("\n### At equal compute\n")
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert lines[0] == ("| task | strategy | seeds | GLUE average | CoLA | SST-2 | MNLI-m | MNLI-mm | "
                        "invalid predictions | pretrain dev loss | train runs | train steps | "
                        "compute ÷ fixed | wall s | hyper-parameters |")
    assert lines[3].startswith(f"| {PRETRAIN} (synthetic) | guided | 3 | 45.00 ± 4.58 | 23.00 ± 3.00 | "
                               "80.00 ± 14.14 | – | – | 6 | 3.000 ± 1.000 | 3 | 900 | 1.50 | 300 |")
    assert len(lines) == 2 + 2 and "BLEU" not in md and "###" not in md  # the GLUE table alone, untitled
    # then its section: fixed's mean compute is 500 (its seed 0 spent 600), guided's 750 (1.5×): reached at 2×
    assert [line for line in section.splitlines() if line.startswith("|")][2:] == [
        f"| {PRETRAIN} (synthetic) | fixed | 50.00 (1 of 2 seeds) | 50.00 |",
        f"| {PRETRAIN} (synthetic) | guided | – | 45.00 |"]
    assert "GLUE average, mean over seeds" in section and "BLEU" not in section


def test_glue_average_computed_when_the_record_lacks_it():
    scores = {"cola": 40.0, "sst2": 90.0, "mnli_matched": 80.0, "mnli_mismatched": 70.0}
    row = table.build_rows([glue_record(scores=scores, glue_average=None)], ".")[0]
    assert row["glue_average_mean"] == pytest.approx((40.0 + 90.0 + 75.0) / 3)  # MNLI m/mm count once


def test_glue_reruns_replace_and_synthetic_rows_stay_apart():
    records = [glue_record("guided", 0, glue_average=10.0), glue_record("guided", 1, glue_average=30.0),
               glue_record("guided", 0, glue_average=20.0),  # a rerun of seed 0: replaces it
               glue_record("guided", 0, glue_average=70.0, glue_synthetic=False, run_dir="real/seed0")]
    rows = table.build_rows(records, ".")
    assert [(r["synthetic"], r["seeds"], r["glue_average_mean"]) for r in rows] == [
        (False, 1, 70.0), (True, 2, 25.0)]
    cells = [line.split(" | ")[0] for line in formats.format_markdown(rows).splitlines()[2:4]]
    assert cells == [f"| {PRETRAIN}", f"| {PRETRAIN} (synthetic)"]


def _mixed(model_dir):
    return _all_strategies(model_dir) + [
        glue_record("fixed", 0, compute_steps=100.0), glue_record("fixed", 1, compute_steps=100.0),
        glue_record("guided", 0, compute_steps=300.0), glue_record("optuna", 0, train_runs=4,
                                                                   compute_steps=900.0, trials=[])]


def test_mixed_bleu_and_glue_records_in_every_format(tmp_path):
    model_dir = write_records(tmp_path / "run", _mixed(tmp_path / "run"))
    paths = table.write_table(model_dir, str(tmp_path / "out"))
    with open(paths["json"]) as f:
        rows = json.load(f)
    summary = [(r["benchmark"], r["strategy"], r["seeds"]) for r in rows]
    assert summary == [("bleu", "fixed", 2), ("bleu", "fixed (replay schedule)", 1),
                       ("bleu", "guided", 1), ("bleu", "optuna", 1),
                       ("glue", "fixed", 2), ("glue", "guided", 1), ("glue", "optuna", 1)]
    assert len({(r["benchmark"], r["task"], r["strategy"]) for r in rows}) == len(rows)
    # each benchmark's rows are compared with its own fixed row
    assert [r["relative_compute"] for r in rows] == pytest.approx([1.0, 1.0, 1.5, 2.2, 1.0, 3.0, 9.0])

    with open(paths["csv"], newline="") as f:
        reader = csv.DictReader(f)
        csv_rows = list(reader)
    assert reader.fieldnames[:len(formats.COLUMNS) + 1] == ["benchmark", *formats.COLUMNS]
    assert {"glue_average_mean", "glue_cola_mean", "glue_mnli_mismatched_sd", "invalid_predictions",
            "dev_loss_mean"} <= set(reader.fieldnames)
    assert [r["benchmark"] for r in csv_rows] == ["bleu"] * 4 + ["glue"] * 3
    assert csv_rows[0]["glue_average_mean"] == "" and csv_rows[4]["test_bleu_mean"] == ""
    assert float(csv_rows[4]["glue_average_mean"]) == 50.0 and csv_rows[4]["seed_list"] == "0 1"

    with open(paths["md"]) as f:
        md = f.read()
    tables, sections = md.split("### At equal compute (BLEU)")
    bleu_part, glue_part = tables.split("### GLUE")
    assert bleu_part.startswith("### BLEU\n\n| task | strategy | seeds | test BLEU |")
    assert sum(line.startswith("|") for line in bleu_part.splitlines()) == 2 + 4
    assert "BLEU signature: `" in bleu_part and "BLEU signature" not in glue_part
    assert sum(line.startswith("|") for line in glue_part.splitlines()) == 2 + 3
    assert f"| {PRETRAIN} (synthetic) | optuna | 1 | 50.00 |" in glue_part
    bleu_section, glue_section = sections.split("### At equal compute (GLUE)")
    assert sum(line.startswith("|") for line in bleu_section.splitlines()) == 2 + 4
    # an Optuna record without trial entries reached nothing: – at every multiple
    assert f"| {PRETRAIN} (synthetic) | optuna | – | – | – | – | – |" in glue_section

    with open(paths["tex"]) as f:
        tex = f.read()
    assert tex.count(r"\begin{tabular}") == 4 and tex.count(r"\\") == 2 * ((1 + 4) + (1 + 3))  # tables, sections
    assert r"synthetic\_pretraining (synthetic)" in tex and "MNLI-mm" in tex


def test_plots_skip_glue_records(tmp_path):
    """The best-so-far plot draws dev BLEU: GLUE records (no dev BLEU) are left out of it."""
    glue = [glue_record("guided", trials=[{"state": "COMPLETE", "dev_loss": 2.0, "compute_steps": 10.0}]),
            glue_record("fixed")]
    assert plots.plot_best_so_far(glue, str(tmp_path), str(tmp_path / "b.png")) is None
    model_dir = write_records(tmp_path / "run", _mixed(tmp_path / "run"))
    paths = plots.write_plots(model_dir)
    assert [os.path.basename(p) for p in paths] == ["hparam_trajectories.png", "best_so_far.png"]
    assert all(_is_png(p) for p in paths)


def test_cli_table_prints_both_tables(tmp_path, capsys):
    model_dir = write_records(tmp_path / "run", _mixed(tmp_path / "run"))
    assert main(["table", model_dir]) == 0
    printed = capsys.readouterr().out
    assert "### BLEU" in printed and "### GLUE" in printed and "| GLUE average |" in printed


def test_identical_outputs_are_not_significantly_different():
    from hpo.report.significance import paired_bootstrap_p
    hyps, refs = ["a b c", "d e"], ["a b c", "d f"]
    assert paired_bootstrap_p(hyps, hyps, refs) == 1.0
    assert paired_bootstrap_p(hyps, ["x y z", "d e"], refs) < 1.0
