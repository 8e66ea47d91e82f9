"""The command line end to end on a tiny budget, and every bad-input case."""

import json
import os
import subprocess
import sys

import pytest

from hpo.cli.main import main

TINY = ["--strategy=fixed", "--gin_file=test.gin"]


def _hpo(*args, env=None, unset=()):
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    return subprocess.run([sys.executable, "-m", "hpo.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_run_end_to_end_then_rerun_skips(tmp_path):
    model_dir = str(tmp_path / "run")
    first = _hpo("run", *TINY, f"--model_dir={model_dir}", unset=["JAX_COMPILATION_CACHE_DIR"])
    assert first.returncode == 0, first.stderr[-2000:]
    records = json.load(open(os.path.join(model_dir, "comparison.json")))
    assert len(records) == 1
    record = records[0]
    for field in ("task", "strategy", "seed", "test_bleu", "dev_bleu", "test_chrf", "bleu_signature",
                  "train_steps", "wall_seconds", "hparams", "gin_config"):
        assert field in record
    assert record["strategy"] == "fixed" and record["train_steps"] == 4
    assert "TRAIN_STEPS = 4" in record["gin_config"]
    assert "test BLEU" in first.stdout
    assert os.listdir(os.path.join(os.environ["HPO_DATA_DIR"], "jax-cache"))  # compiled steps kept for re-runs
    hyps = open(os.path.join(model_dir, record["hypotheses"])).read().splitlines()
    assert len(hyps) == record["test_sentences"] == 16
    # The same command again: nothing retrained, no duplicate row.
    second = _hpo("run", *TINY, f"--model_dir={model_dir}")
    assert second.returncode == 0
    assert json.load(open(os.path.join(model_dir, "comparison.json"))) == records


def test_gin_overrides_and_seeds(tmp_path):
    rc = main(["run", *TINY, "--seeds=1,2", f"--gin.MODEL_DIR={tmp_path}", "--gin.TRAIN_STEPS=2",
               "--gin.Experiment.log_every=1"])
    assert rc == 0
    records = json.load(open(tmp_path / "comparison.json"))
    assert sorted(r["seed"] for r in records) == [1, 2]
    assert all(r["train_steps"] == 2 for r in records)


def _bad_inputs(tmp_path):
    tsv = tmp_path / "ok.tsv"
    tsv.write_text("a b\tc d\n")
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    (tmp_path / "x.de").write_text("a\nb\n")
    (tmp_path / "x.en").write_text("a\n")
    corpus = ["--gin_file=tasks/parallel_corpus.gin", f"--gin.parallel_corpus_task.dev={tsv}",
              f"--gin.parallel_corpus_task.test={tsv}"]
    return {
        "gin syntax": (["--gin.TRAIN_STEPS=(1,"], "gin"),
        "unknown binding": (["--gin.NoSuchThing.value=1"], "NoSuchThing"),
        "unknown task": (["--gin.MIXTURE_OR_TASK_NAME=nope"], "unknown task"),
        "missing data file": ([*corpus, f"--gin.parallel_corpus_task.train={tmp_path}/none.tsv"], "not found"),
        "empty data file": ([*corpus, f"--gin.parallel_corpus_task.train={empty}"], "empty"),
        "misaligned files": ([*corpus, f"--gin.parallel_corpus_task.train=('{tmp_path}/x.de', '{tmp_path}/x.en')"],
                             "not aligned"),
        "zero steps": (["--gin.TRAIN_STEPS=0"], "TRAIN_STEPS must be positive"),
        "negative steps": (["--gin.TRAIN_STEPS=-5"], "TRAIN_STEPS must be positive"),
        "unknown strategy": (["--strategy=magic"], "unknown strategy"),
        "mistyped value": (["--gin.TRAIN_STEPS=ten"], "bad configuration"),
        "missing gin file": (["--gin_file=nowhere.gin"], "nowhere.gin"),
        "bad seeds": (["--seeds=a,b"], "--seeds"),
        "tiny language": (["--gin.synthetic_translation_task.words_per_category=1"], "words_per_category"),
        "negative startup trials": (["--strategy=optuna", "--gin.OptunaSearch.startup_trials=-1"], "startup_trials"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs(__import__("pathlib").Path("/tmp"))))
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    args, message = _bad_inputs(tmp_path)[case]
    model_dir = tmp_path / "out"
    rc = main(["run", *TINY, f"--model_dir={model_dir}", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("hpo: error:") and message in err[0], err
    assert not (model_dir / "comparison.json").exists()


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    result = _hpo("run", *TINY, f"--model_dir={tmp_path}", "--gin.TRAIN_STEPS=0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("hpo: error: TRAIN_STEPS must be positive, got 0")
    assert not (tmp_path / "comparison.json").exists()


def test_help_explains_every_flag():
    result = _hpo("run", "--help")
    assert result.returncode == 0
    for flag in ("--strategy", "--seeds", "--model_dir", "--gin_file", "--gin_search_paths", "--gin.KEY=VALUE"):
        assert flag in result.stdout
