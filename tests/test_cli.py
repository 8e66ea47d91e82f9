"""The command line end to end on a tiny budget, and every bad-input case."""

import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import warm
from helpers import fill_the_disk
from hpo.cli.main import main
from hpo.flow import records as records_module

TINY = ["--strategy=fixed", "--gin_file=test.gin"]


def _hpo(*args, env=None, unset=()):
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    return subprocess.run([sys.executable, "-m", "hpo.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.integration
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
    assert record["versions"] == records_module.versions("builtin") and "jax" in record["versions"]
    assert "test BLEU" in first.stdout
    assert os.listdir(os.path.join(os.environ["HPO_DATA_DIR"], "jax-cache"))  # compiled steps kept for re-runs
    hyps = open(os.path.join(model_dir, record["hypotheses"])).read().splitlines()
    assert len(hyps) == record["test_sentences"] == 16
    # The same command again: nothing retrained, no duplicate row.
    second = _hpo("run", *TINY, f"--model_dir={model_dir}")
    assert second.returncode == 0
    assert json.load(open(os.path.join(model_dir, "comparison.json"))) == records


@pytest.mark.integration
def test_gin_overrides_and_seeds(tmp_path):
    rc = main(["run", *TINY, "--seeds=1,2", f"--gin.MODEL_DIR={tmp_path}", "--gin.TRAIN_STEPS=2",
               "--gin.Experiment.log_every=1"])
    assert rc == 0
    records = json.load(open(tmp_path / "comparison.json"))
    assert sorted(r["seed"] for r in records) == [1, 2]
    assert all(r["train_steps"] == 2 for r in records)


# --- Bad input: one line `hpo: error: ...` naming the file or flag, exit status 2, nothing written -----
#
# Each case is (arguments after `hpo run --strategy=fixed --gin_file=test.gin --model_dir=OUT`, text the
# message must hold, and optionally `prepare(out, monkeypatch)`). A case whose `prepare` is marked
# `on_results` runs against OUT = a copy of a finished tiny run (the `finished_run` fixture): its
# comparison.json must be byte for byte what it was. That run's fixed/seed1 holds a copy of seed 0's
# checkpoints and no record: an unfinished run, which `--seeds=1` resumes.
#
# Decided behaviour (pinned in tests/test_tasks.py): CRLF line ends are accepted (read as LF); an
# empty line in a data file is refused; a sentence longer than the feature length is truncated.

CORPUS = ["--gin_file=tasks/parallel_corpus.gin"]


def _corpus(tmp_path, train):
    return [*CORPUS, f"--gin.parallel_corpus_task.train={train}", f"--gin.parallel_corpus_task.dev={tmp_path}/ok.tsv",
            f"--gin.parallel_corpus_task.test={tmp_path}/ok.tsv"]


def _write_data_files(tmp_path):
    files = {"ok.tsv": b"a b\tc d\n", "empty.tsv": b"", "x.de": b"a\nb\n", "x.en": b"a\n",
             "latin1.tsv": b"ok\tok\ncaf\xe9\tcaf\xe9\n", "blank-line.tsv": b"a\tb\n\nc\td\n",
             "tab-in-target.tsv": b"a\tb\tc\n", "no-target.tsv": b"a b\t\n",
             "includes-missing.gin": b"include 'test.gin'\ninclude 'no_such_include.gin'\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)


def on_results(prepare=None):
    """`prepare` for a case that runs against a copy of the finished run."""
    def run(out, monkeypatch):
        if prepare:
            prepare(out, monkeypatch)
    run.on_results, run.inner = True, prepare
    return run


def _full_disk(out, monkeypatch):
    fill_the_disk(monkeypatch)


def _unwritable(out, monkeypatch):
    """MODEL_DIR mode 0500. As root (who may write there anyway) the refusal is simulated where files
    are created, as the OS would refuse them."""
    from hpo.core import io as hpo_io
    out.mkdir()
    out.chmod(0o500)
    if os.geteuid() == 0:
        real = hpo_io._open_temp

        def open_temp(directory, name):
            if os.path.abspath(directory) == str(out):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), directory)
            return real(directory, name)

        monkeypatch.setattr(hpo_io, "_open_temp", open_temp)


def _a_file(out, monkeypatch):
    out.write_text("not a directory\n")


def _comparison(text):
    def write(out, monkeypatch):
        (out / "comparison.json").write_text(text)
    return write


CHECKPOINT = "fixed/seed1/checkpoints/4"


def _garble_checkpoint(out, monkeypatch):
    """Same sizes, other bytes: every array chunk of the unfinished run's checkpoint overwritten."""
    chunks = out / CHECKPOINT / "state" / "ocdbt.process_0" / "d"
    for chunk in chunks.iterdir():
        size = chunk.stat().st_size
        chunk.write_bytes(bytes(range(256)) * (size // 256) + b"\x00" * (size % 256))


def _truncate_checkpoint(out, monkeypatch):
    manifest = out / CHECKPOINT / "state" / "manifest.ocdbt"
    manifest.write_bytes(manifest.read_bytes()[:5])


def _remove_from_checkpoint(part):
    def remove(out, monkeypatch):
        shutil.rmtree(out / CHECKPOINT / part)
    return remove


def _bad_inputs(tmp_path):
    """name -> (arguments, expected text in the message[, prepare(out, monkeypatch)])."""
    t = tmp_path
    return {
        # Gin files, bindings and the values users commonly set.
        "gin syntax": (["--gin.TRAIN_STEPS=(1,"], "gin"),
        "unknown binding": (["--gin.NoSuchThing.value=1"], "NoSuchThing"),
        "missing gin file": (["--gin_file=nowhere.gin"], "nowhere.gin"),
        "gin file including a missing file": ([f"--gin_file={t}/includes-missing.gin"],
                                              "no_such_include.gin"),
        "missing gin search path": ([f"--gin_search_paths={t}/no-such-dir"], "--gin_search_paths"),
        "unknown task": (["--gin.MIXTURE_OR_TASK_NAME=nope"], "unknown task 'nope'"),
        "zero steps": (["--gin.TRAIN_STEPS=0"], "TRAIN_STEPS must be positive"),
        "negative steps": (["--gin.TRAIN_STEPS=-5"], "TRAIN_STEPS must be positive"),
        "mistyped value": (["--gin.TRAIN_STEPS=ten"], "TRAIN_STEPS must be a positive integer, got 'ten'"),
        "fractional steps": (["--gin.TRAIN_STEPS=2.5"], "TRAIN_STEPS must be a positive integer, got 2.5"),
        "zero batch size": (["--gin.BATCH_SIZE=0"], "BATCH_SIZE must be positive"),
        "negative feature length": (["--gin.TASK_FEATURE_LENGTHS={'inputs': -16, 'targets': 16}"],
                                    "TASK_FEATURE_LENGTHS must give positive"),
        "zero checkpoint interval": (["--gin.Experiment.checkpoint_every=0"],
                                     "Experiment.checkpoint_every must be positive"),
        "label smoothing of 1.5": (["--gin.Experiment.label_smoothing=1.5"], "Experiment.label_smoothing"),
        "unknown optimizer": (["--gin.OptimizerConfig.name=sgd"], "unknown optimizer 'sgd'"),
        "beta1 of 1.5": (["--gin.OptimizerConfig.beta1=1.5"], "OptimizerConfig: beta1 must be in [0, 1)"),
        "unknown learning-rate factor": (["--gin.learning_rate_schedule.factors='constant * magic'"],
                                         "unknown learning-rate factor 'magic'"),
        "negative model width": (["--gin.T5Config.emb_dim=-32"], "T5Config.emb_dim must be positive"),
        "unknown decoding method": (["--gin.DecodeConfig.method=sample"], "DecodeConfig.method"),
        "tiny language": (["--gin.synthetic_translation_task.words_per_category=1"], "words_per_category"),
        # Strategies and hyper-parameters.
        "unknown strategy": (["--strategy=magic"], "unknown strategy 'magic'"),
        "empty strategy": (["--strategy="], "--strategy is empty"),
        "negative learning rate": (["--gin.Fixed.hparams={'learning_rate': -0.5}"],
                                   "Fixed.hparams: learning_rate must be >= 0, got -0.5"),
        "unknown hyper-parameter": (["--gin.Fixed.hparams={'lr': 0.5}"], "unknown hyper-parameter 'lr'"),
        "hyper-parameter the optimizer lacks": (["--gin.Fixed.hparams={'beta2': 0.99}"],
                                                "'beta2' is not a hyper-parameter of optimizer 'adafactor'"),
        "unknown tuned hyper-parameter": (["--strategy=guided", "--gin.Guided.tune=['lr']"], "cannot tune ['lr']"),
        "unknown parameterisation": (["--strategy=guided",
                                      "--gin.Guided.specs={'learning_rate': {'parameterisation': 'cubic'}}"],
                                     "unknown parameterisation 'cubic'"),
        "unknown parameterisation field": (["--strategy=guided", "--gin.Guided.specs={'learning_rate': {'steep': 2.0}}"],
                                           "Guided.specs['learning_rate']: unknown field ['steep']"),
        "zero horizon": (["--strategy=guided", "--gin.Guided.horizon=0"],
                         "Guided.horizon must be positive, got 0"),
        "update_every not a multiple of the horizon": (["--strategy=guided", "--gin.Guided.horizon=2",
                                                        "--gin.Guided.update_every=3"],
                                                       "update_every (3) must be 1 or a multiple of the horizon (2)"),
        "unknown group preset": (["--strategy=guided", "--gin.Guided.groups='layers'"],
                                 "Guided.groups: unknown preset 'layers'"),
        "group matching no parameter": (["--strategy=guided", "--gin.Guided.groups={'encoder': '^encoder/', "
                                         "'nothing': '^nothing/'}"],
                                        "Guided.groups['nothing']: the regex '^nothing/' matches no parameter"),
        "parameter in two groups": (["--strategy=guided", "--gin.Guided.groups={'encoder': '^encoder/', "
                                     "'attention': 'attention'}"], "is in groups encoder and attention"),
        "unknown guided mode": (["--strategy=guided", "--gin.Guided.mode='backward'"],
                                "Guided.mode must be one of 'one_step', 'forward', got 'backward'"),
        "discount above 1": (["--strategy=guided", "--gin.Guided.mode='forward'", "--gin.Guided.discount=1.5"],
                             "Guided.discount must be in [0, 1], got 1.5"),
        "forward value not tuned": (["--strategy=guided", "--gin.Guided.mode='forward'",
                                     "--gin.Guided.forward=['beta1']"], "Guided.forward: 'beta1' is not tuned"),
        "forward mode with a horizon": (["--strategy=guided", "--gin.Guided.mode='forward'", "--gin.Guided.horizon=4"],
                                        "Guided.horizon applies to Guided.mode = 'one_step'"),
        "discount in one-step mode": (["--strategy=guided", "--gin.Guided.discount=0.9"],
                                      "Guided.discount applies to Guided.mode = 'forward'"),
        "negative travel": (["--strategy=guided", "--gin.Guided.travel=-2.0"], "Guided.travel must be positive"),
        "travel with an unbounded meta-optimizer": (["--strategy=guided", "--gin.Guided.meta_optimizer='sgd'"],
                                                    "with optax.sgd give Guided.meta_learning_rate"),
        "negative startup trials": (["--strategy=optuna", "--gin.OptunaSearch.startup_trials=-1"], "startup_trials"),
        "zero trials": (["--strategy=optuna", "--gin.OptunaSearch.n_trials=0"],
                        "OptunaSearch.n_trials must be a positive integer, got 0"),
        "search range low > high": (["--strategy=optuna",
                                     "--gin.OptunaSearch.search_space={'learning_rate': {'low': 2.0, 'high': 1.0}}"],
                                    "search space of 'learning_rate' has low 2.0 > high 1.0"),
        "empty choice list": (["--strategy=optuna", "--gin.OptunaSearch.search_space={'label_smoothing': {'choices': []}}"],
                              "search space of 'label_smoothing' has an empty choice list"),
        "storage that cannot connect": (["--strategy=optuna",
                                         f"--gin.OptunaSearch.storage='postgresql://hpo:secret@/hpo?host={tmp_path}/none'"],
                                        "optuna: cannot open the storage postgresql://hpo:***@/hpo"),
        "storage of an unknown kind": (["--strategy=optuna", "--gin.OptunaSearch.storage='nosuchdb://x'"],
                                       "optuna: cannot open the storage nosuchdb://x: SQLAlchemy has no dialect"),
        "storage server refusing connections": (["--strategy=optuna",
                                                 "--gin.OptunaSearch.storage='postgresql://u:p@127.0.0.1:1/db'"],
                                                "no database server answers at 127.0.0.1:1"),
        **{f"storage driver missing: {url.split(':')[0]}": (
            ["--strategy=optuna", f"--gin.OptunaSearch.storage='{url}'"],
            f"its driver is not installed (no module '{module}'); pip install {package}")
           for url, module, package in [("mysql://u:p@127.0.0.1:1/db", "MySQLdb", "mysqlclient"),
                                        ("mysql+pymysql://u:p@127.0.0.1:1/db", "pymysql", "PyMySQL"),
                                        ("oracle://u:p@127.0.0.1:1/db", "oracledb", "oracledb"),
                                        ("mssql://u:p@127.0.0.1:1/db", "pyodbc", "pyodbc")]},
        "population of one": (["--strategy=pbt", "--gin.Pbt.population=1"], "Pbt.population must be an integer >= 2"),
        "pbt quantile above a half": (["--strategy=pbt", "--gin.Pbt.quantile=0.6"], "Pbt.quantile must be in (0, 0.5]"),
        "pbt factor not positive": (["--strategy=pbt", "--gin.Pbt.factors=[0.8, 0]"], "Pbt.factors must be positive"),
        "pbt metric unknown": (["--strategy=pbt", "--gin.Pbt.metric='bleu'"], "Pbt.metric must be 'dev_loss' or"),
        "pbt searching no hyper-parameter of the optimizer": (
            ["--strategy=pbt", "--gin.Pbt.search_space={'decay_rate': {'low': 0.5, 'high': 0.9}}",
             "--gin.OptimizerConfig.name='adam'"], "pbt: 'decay_rate' is not a hyper-parameter of optimizer 'adam'"),
        # Flags.
        "unknown backend": (["--backend=nope"], "argument --backend: invalid choice: 'nope'"),
        "unknown flag": (["--no_such_flag=1"], "unrecognized arguments: --no_such_flag=1"),
        "process count not a number": (["--process_count=two"], "argument --process_count: invalid int value"),
        "process flags without --multihost": (["--process_count=2"], "need --multihost"),
        "process index out of range": (["--multihost", "--coordinator_address=localhost:1234", "--process_count=2",
                                        "--process_index=2"], "--process_index must be in [0, 2)"),
        "coordinator without a port": (["--multihost", "--coordinator_address=localhost", "--process_count=1",
                                        "--process_index=0"], "--coordinator_address: expected HOST:PORT"),
        "bad seeds": (["--seeds=a,b"], "--seeds"),
        "empty seeds": (["--seeds="], "--seeds is empty"),
        "negative seed": (["--seeds=-1"], "--seeds: a seed must be in [0, 2**31), got -1"),
        "no seeds (0:)": (["--seeds=0:"], "--seeds"),
        "repeated seed": (["--seeds=1,1"], "--seeds: seed 1 is given twice"),
        "repeated seed, apart": (["--seeds=1,0,1"], "--seeds: seed 1 is given twice"),
        "one seed written twice": (["--seeds=1,01"], "--seeds: seed 1 is given twice"),
        "empty seed in a list": (["--seeds=0,,1"], "--seeds: an empty item in '0,,1'"),
        "trailing comma in seeds": (["--seeds=0,"], "--seeds: an empty item in '0,'"),
        "empty strategy in a list": (["--strategy=fixed,,guided"], "--strategy: an empty item in 'fixed,,guided'"),
        "repeated strategy": (["--strategy=fixed,fixed"], "--strategy: strategy fixed is given twice"),
        # MODEL_DIR.
        "empty --model_dir": (["--model_dir="], "--model_dir is empty"),
        "MODEL_DIR is a file": ([], "is not a directory", _a_file),
        "MODEL_DIR is unwritable": ([], "is not writable: Permission denied", _unwritable),
        "MODEL_DIR on a full disk": (["--seeds=1"], "is not writable: No space left on device", on_results(_full_disk)),
        # Data files.
        "missing data file": (_corpus(t, f"{t}/none.tsv"), "train data file not found"),
        "empty data file": (_corpus(t, f"{t}/empty.tsv"), "train data file is empty"),
        "data file not UTF-8": (_corpus(t, f"{t}/latin1.tsv"), "latin1.tsv:2: not UTF-8 text (byte 0xe9)"),
        "empty line in a data file": (_corpus(t, f"{t}/blank-line.tsv"), "blank-line.tsv:2: empty line"),
        "tab inside the target": (_corpus(t, f"{t}/tab-in-target.tsv"), "tab-in-target.tsv:1: expected "
                                  "'source<TAB>target', found 2 tabs"),
        "empty target": (_corpus(t, f"{t}/no-target.tsv"), "no-target.tsv:1: empty target"),
        "misaligned files": (_corpus(t, f"('{t}/x.de', '{t}/x.en')"), "not aligned"),
        "missing vocabulary": ([*_corpus(t, f"{t}/ok.tsv"), f"--gin.parallel_corpus_task.vocab={t}/none.model"],
                               "vocabulary file not found"),
        # Earlier results: records and checkpoints.
        "corrupt comparison.json": ([], "comparison.json: not valid JSON", on_results(_comparison('[{"task": '))),
        "comparison.json not a list": ([], "expected a list of result records", on_results(_comparison('{"a": 1}'))),
        "garbled checkpoint": (["--seeds=1"], "checkpoints/4: the checkpoint cannot be restored",
                               on_results(_garble_checkpoint)),
        "truncated checkpoint": (["--seeds=1"], "the checkpoint is damaged (state/manifest.ocdbt has 5 bytes",
                                 on_results(_truncate_checkpoint)),
        "partial checkpoint": (["--seeds=1"], "the checkpoint is incomplete (meta/",
                               on_results(_remove_from_checkpoint("meta"))),
        "checkpoint of a wider model": (["--seeds=1", "--gin.T5Config.emb_dim=64"],
                                        "the checkpoint is of another model", on_results()),
        "resume with another optimizer": (["--seeds=1", "--gin.OptimizerConfig.name=adam"],
                                          "the checkpoint cannot be restored", on_results()),
        "resume with more TRAIN_STEPS": (["--gin.TRAIN_STEPS=6"], "checkpoints are of a run with TRAIN_STEPS = 4, "
                                         "this run has TRAIN_STEPS = 6", on_results()),
        "resume with fewer TRAIN_STEPS": (["--seeds=1", "--gin.TRAIN_STEPS=2"], "TRAIN_STEPS = 4, this run has "
                                          "TRAIN_STEPS = 2", on_results()),
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny fixed run (seed 0), plus an unfinished one: seed 1 with seed 0's checkpoints."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", *TINY, f"--model_dir={out}"]) == 0
    for part in ("checkpoints", "data-checkpoints"):
        shutil.copytree(out / "fixed" / "seed0" / part, out / "fixed" / "seed1" / part)
    shutil.copy(out / "fixed" / "seed0" / "run.lock", out / "fixed" / "seed1")  # as the process that trained it left
    return out


def _files(path):
    return sorted(os.path.relpath(os.path.join(root, name), path) for root, _, names in os.walk(path)
                  for name in names)


def _contents(path):
    """Every file under `path`, byte for byte; not run.lock, which names the last process that
    took the run (one that then stopped on bad input too)."""
    return {name: open(os.path.join(path, name), "rb").read() for name in _files(path)
            if os.path.basename(name) != "run.lock"}


BAD_INPUTS = list(_bad_inputs(pathlib.Path("/unused")))


def test_bad_input_table_is_complete():
    assert len(BAD_INPUTS) >= 40 and len(set(BAD_INPUTS)) == len(BAD_INPUTS)


def _tiered(case):
    """A case on a copy of `finished_run` (which trains a model) is an integration test."""
    prepare = (_bad_inputs(pathlib.Path("/unused"))[case][2:] or [None])[0]
    return pytest.param(case, marks=pytest.mark.integration) if getattr(prepare, "on_results", False) else case


# A checkpoint orbax fails to read leaves reads behind that report "Event loop is closed" when they
# end, after the error was raised (and reported, once): pytest would flag them on a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("case", [_tiered(case) for case in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, request, case):
    args, message, *prepare = _bad_inputs(tmp_path)[case]
    prepare = prepare[0] if prepare else None
    _write_data_files(tmp_path)
    out = tmp_path / "out"
    before = None
    if getattr(prepare, "on_results", False):
        shutil.copytree(request.getfixturevalue("finished_run"), out)
    if prepare:
        prepare(out, monkeypatch)
    if out.is_dir():
        before = (out / "comparison.json").read_bytes() if (out / "comparison.json").exists() else None
        files_before, contents_before = _files(out), _contents(out)
    capsys.readouterr()
    try:
        rc = main(["run", *TINY, f"--model_dir={out}", *args])
    finally:
        if out.is_dir():
            out.chmod(0o700)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("hpo: error:") and message in err[0], err
    if before is not None:  # earlier results untouched, nothing added
        assert (out / "comparison.json").read_bytes() == before
        assert _files(out) == files_before
        assert _contents(out) == contents_before
    elif out.is_dir():
        assert not (out / "comparison.json").exists()
        assert not [f for f in _files(out) if ".tmp-" in f or "hpo-write-test" in f]


def _patches_this_process(case):
    """Cases whose preparation patches hpo in the test's own process (a full disk, a directory
    root may write): a separate process would not see it."""
    prepare = (_bad_inputs(pathlib.Path("/unused"))[case][2:] or [None])[0]
    return getattr(prepare, "inner", prepare) in (_full_disk, _unwritable)


# Every third case, in name order, as a real process: what reaches file descriptor 2 (C++ and
# thread output too, which capsys does not see) must be the one line.
REAL_PROCESS_CASES = [c for i, c in enumerate(sorted(c for c in BAD_INPUTS if not _patches_this_process(c)))
                      if i % 3 == 0]


@pytest.mark.integration
@pytest.mark.parametrize("case", REAL_PROCESS_CASES)
def test_bad_input_in_a_real_process_is_one_line_on_fd_2(tmp_path, monkeypatch, request, case):
    args, message, *prepare = _bad_inputs(tmp_path)[case]
    prepare = prepare[0] if prepare else None
    _write_data_files(tmp_path)
    out = tmp_path / "out"
    if getattr(prepare, "on_results", False):
        shutil.copytree(request.getfixturevalue("finished_run"), out)
    if prepare:
        prepare(out, monkeypatch)
    contents_before = _contents(out) if out.is_dir() else None
    try:
        process = warm.Hpo(["run", *TINY, f"--model_dir={out}", *args])
        _, err = process.communicate(timeout=600)
    finally:
        if out.is_dir():
            out.chmod(0o700)
    lines = err.strip().splitlines()
    assert process.returncode == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("hpo: error:") and message in lines[0], err[-3000:]
    if contents_before is not None and "comparison.json" in contents_before:
        assert _contents(out) == contents_before
    elif out.is_dir():
        assert not (out / "comparison.json").exists()


@pytest.mark.integration
def test_the_unfinished_copy_resumes(finished_run, tmp_path):
    """The checkpoint cases above fail because of what they change: the unaltered copy resumes."""
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    assert main(["run", *TINY, f"--model_dir={out}", "--seeds=1"]) == 0
    records = json.load(open(out / "comparison.json"))
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert all(r["train_steps"] == 4 for r in records)


def test_seeds_run_in_the_order_given():
    from hpo.cli.main import parse_seeds
    assert parse_seeds("2,0") == [2, 0] and parse_seeds(" 1, 3") == [1, 3] and parse_seeds("3:") == [0, 1, 2]


@pytest.mark.integration
def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    result = _hpo("run", *TINY, f"--model_dir={tmp_path}", "--gin.TRAIN_STEPS=0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("hpo: error: TRAIN_STEPS must be positive, got 0")
    assert not (tmp_path / "comparison.json").exists()


@pytest.mark.integration
def test_help_explains_every_flag():
    result = _hpo("run", "--help")
    assert result.returncode == 0
    for flag in ("--strategy", "--seeds", "--model_dir", "--gin_file", "--gin_search_paths", "--gin.KEY=VALUE"):
        assert flag in result.stdout
