"""Each data source: the embedded task, local TSV and aligned files, TFDS WMT under mock data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hpo.cli import gin_config as config_lib
from hpo.core.errors import UserError
from hpo.data import catalog, pipeline, tasks
import tfds_runs

LENGTHS = {"inputs": 16, "targets": 16}


def _texts(task, split):
    ds = task.get_dataset(LENGTHS, split=split, shuffle=False, num_epochs=1, try_in_mem_cache=False)
    return [(ex["inputs_pretokenized"].decode(), ex["targets_pretokenized"].decode())
            for ex in ds.as_numpy_iterator()]


def test_synthetic_task_splits_are_disjoint_and_guide_is_one_in_n():
    task = tasks.synthetic_translation_task(num_train=300, num_dev=20, num_test=30, vocab_size=300,
                                            guide_fraction=0.1)
    train, guide, dev, test = (_texts(task, s) for s in tasks.SPLITS)
    assert (len(train), len(guide), len(dev), len(test)) == (270, 30, 20, 30)
    sources = [set(s for s, _ in split) for split in (train, guide, dev, test)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not sources[i] & sources[j]
    vocab = task.output_features["targets"].vocabulary
    assert vocab.vocab_size <= 300 and vocab.eos_id == 1 and vocab.pad_id == 0


def test_synthetic_task_is_cached(data_dir):
    import os
    tasks.synthetic_translation_task(num_train=300, num_dev=20, num_test=30, vocab_size=300)
    files = sorted(os.listdir(os.path.join(data_dir, "synthetic_translation", "seed0-train300-dev20-test30")))
    assert files == ["dev.tsv", "spm300.model", "test.tsv", "train.tsv"]


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.mark.integration
def test_local_tsv_and_aligned_files(tmp_path):
    pairs = [(f"ein satz nummer {i} .", f"sentence number {i} .") for i in range(200)]
    tsv = _write(tmp_path / "train.tsv", [f"{s}\t{t}" for s, t in pairs])
    src = _write(tmp_path / "train.de", [s for s, _ in pairs])
    tgt = _write(tmp_path / "train.en", [t for _, t in pairs])
    dev = _write(tmp_path / "dev.tsv", ["hallo welt .\thello world ."])
    for train in (tsv, (src, tgt)):
        task = tasks.parallel_corpus_task(train=train, dev=dev, test=dev, vocab_size=100)
        got = _texts(task, "train") + _texts(task, "guide")
        assert sorted(got) == sorted(pairs)
        assert _texts(task, "guide") == [pairs[i] for i in range(0, 200, 100)]
        assert _texts(task, "dev") == [("hallo welt .", "hello world .")]


@pytest.mark.parametrize("problem, match", [
    ("missing", "not found"), ("empty", "is empty"), ("misaligned", "not aligned"), ("no_tab", "expected"),
])
def test_bad_local_files_are_user_errors(tmp_path, problem, match):
    good = _write(tmp_path / "good.tsv", ["a\tb", "c\td"])
    train = {
        "missing": str(tmp_path / "nope.tsv"),
        "empty": _write(tmp_path / "empty.tsv", []),
        "misaligned": (_write(tmp_path / "a.de", ["x", "y"]), _write(tmp_path / "a.en", ["x"])),
        "no_tab": _write(tmp_path / "bad.tsv", ["no tab here"]),
    }[problem]
    with pytest.raises(UserError, match=match):
        tasks.parallel_corpus_task(train=train, dev=good, test=good)


def test_unknown_task_is_a_user_error():
    with pytest.raises(UserError, match="unknown task 'no_such_task'"):
        catalog.get_task("no_such_task")


@pytest.mark.integration
@pytest.mark.parametrize("task_binding", [(), ("MIXTURE_OR_TASK_NAME = 'wmt14_deen'",)],
                         ids=["wmt19_lten", "wmt14_deen"])  # as configured; another pair, as the README runs one
def test_tfds_wmt_of_the_real_config_under_mock_data(task_binding):
    # The task, and so the TFDS name, config and version, of `hpo run --gin_file=tasks/wmt19_lten.gin`;
    # only the vocabulary is made small.
    name = tfds_runs.run_task_names("tasks/wmt19_lten.gin", *task_binding, "wmt_task.vocab_size = 200",
                                    "wmt_task.vocab_examples = 40")[0]
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        task = catalog.get_task(name)
        year, pair = name[3:5], name[-4:-2]
        assert tfds_runs.assert_tfds_code_builds(task).startswith(f"wmt{year}_translate/{pair}-en:")
        # Mock data has no split sizes: a small buffer keeps seqio from reading 10000 examples.
        config = pipeline.DatasetConfig(name, LENGTHS, batch_size=4, pack=False, shuffle_buffer_size=40)
        batch = next(pipeline.train_batches(config))
        assert batch["encoder_input_tokens"].shape == (4, 16)
        assert batch["decoder_target_tokens"].shape == (4, 16)
        assert np.all(batch["decoder_target_tokens"][:, 0] > 0)
        assert all(len(_texts(task, split)) > 0 for split in ("guide", "dev", "test"))
    assert set(task.source.splits) == {*tasks.SPLITS, tasks.VALIDATION}


def test_wmt_name_must_include_english():
    with pytest.raises(UserError, match="English"):
        tasks.wmt_task("wmt14_defr")


@pytest.mark.integration
def test_train_batches_resume_where_they_stopped(tmp_path):
    config_lib.parse(["test.gin"], [])
    config = pipeline.DatasetConfig("synthetic_translation", LENGTHS, batch_size=4)
    first = pipeline.train_batches(config, seed=3)
    seen = [next(first) for _ in range(3)]
    first.save(str(tmp_path / "position"))
    seen += [next(first) for _ in range(2)]
    resumed = pipeline.train_batches(config, seed=3)  # a new process: the stream from its start
    resumed.restore(str(tmp_path / "position"))
    for expected in seen[3:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(expected[key], got[key])
    assert "encoder_segment_ids" in seen[0]  # packed


@pytest.mark.integration
def test_guide_batches_resume_where_they_stopped(tmp_path):
    """Training and guide batches resume together; guide batch i serves steps 2i and 2i + 1."""
    config_lib.parse(["test.gin"], [])
    config = pipeline.DatasetConfig("synthetic_translation", LENGTHS, batch_size=4)
    first = pipeline.train_and_guide_batches(config, seed=3, guide_size=2, refresh_every=2)
    seen = [next(first) for _ in range(3)]
    first.save(str(tmp_path / "position"))
    seen += [next(first) for _ in range(3)]
    resumed = pipeline.train_and_guide_batches(config, seed=3, guide_size=2, refresh_every=2)
    resumed.restore(str(tmp_path / "position"))
    for expected in seen[3:]:
        got = next(resumed)
        for part in ("train", "guide"):
            for key in expected[part]:
                np.testing.assert_array_equal(expected[part][key], got[part][key])
    guides = [s["guide"]["decoder_target_tokens"] for s in seen]
    assert guides[0].shape[0] == 2 and np.array_equal(guides[2], guides[3])
    assert not np.array_equal(guides[1], guides[2]) and np.array_equal(guides[0], guides[1])


@pytest.mark.integration
def test_crlf_files_give_the_examples_of_lf_files(tmp_path):
    """CRLF line ends are accepted: a TSV file or an aligned pair with CRLF ends reads as its LF twin
    (no '\\r' at the end of a target, the same counts for train and guide)."""
    pairs = [(f"ein satz nummer {i} .", f"sentence number {i} .") for i in range(40)]

    def write(name, lines, end):
        (tmp_path / name).write_bytes("".join(line + end for line in lines).encode("utf-8"))
        return str(tmp_path / name)

    got = {}
    for end in ("\n", "\r\n"):
        tag = "crlf" if end == "\r\n" else "lf"
        tsv = write(f"train-{tag}.tsv", [f"{s}\t{t}" for s, t in pairs], end)
        aligned = (write(f"train-{tag}.de", [s for s, _ in pairs], end),
                   write(f"train-{tag}.en", [t for _, t in pairs], end))
        dev = write(f"dev-{tag}.tsv", ["hallo welt .\thello world ."], end)
        for kind, train in (("tsv", tsv), ("aligned", aligned)):
            task = tasks.parallel_corpus_task(train=train, dev=dev, test=dev, vocab_size=100, guide_fraction=0.1)
            got[tag, kind] = {split: _texts(task, split) for split in ("train", "guide", "dev")}
    for kind in ("tsv", "aligned"):
        assert got["crlf", kind] == got["lf", kind]
        assert sorted(got["crlf", kind]["train"] + got["crlf", kind]["guide"]) == sorted(pairs)
        assert got["crlf", kind]["dev"] == [("hallo welt .", "hello world .")]


@pytest.mark.parametrize("content, match", [
    (b"a\tb\n\nc\td\n", r"empty\.tsv:2: empty line"),  # empty lines are refused, not skipped
    (b"a\tb\n   \n", r"empty\.tsv:2: empty line"),
    (b"a\tb\tc\n", r":1: expected 'source<TAB>target', found 2 tabs"),  # a tab inside a sentence
    (b"a\t\n", ":1: empty target"),
    (b"ok\tok\ncaf\xe9\tcafe\n", ":2: not UTF-8 text"),
])
def test_bad_lines_are_user_errors_naming_file_and_line(tmp_path, content, match):
    (tmp_path / "empty.tsv").write_bytes(content)
    good = _write(tmp_path / "good.tsv", ["a\tb"])
    with pytest.raises(UserError, match=match):
        tasks.parallel_corpus_task(train=str(tmp_path / "empty.tsv"), dev=good, test=good)


def test_a_sentence_longer_than_the_feature_length_is_truncated(tmp_path):
    """As in T5's pipelines: a longer sentence is cut to the feature length, EOS last; no error."""
    long = " ".join(f"wort{i}" for i in range(60))
    train = _write(tmp_path / "train.tsv", ["kurz .\tshort .", f"{long}\t{long}"] * 10)
    dev = _write(tmp_path / "dev.tsv", [f"{long}\t{long}", "kurz .\tshort ."])
    task = tasks.parallel_corpus_task(train=train, dev=dev, test=dev, vocab_size=100)
    lengths = {"inputs": 8, "targets": 8}
    assert len(task.output_features["inputs"].vocabulary.encode(long)) > 8
    examples = list(task.get_dataset(lengths, split="dev", shuffle=False, num_epochs=1,
                                     try_in_mem_cache=False).as_numpy_iterator())
    assert len(examples) == 2 and len(examples[0]["inputs"]) == len(examples[0]["targets"]) == 8
    for ex in examples:
        assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1 and len(ex["targets"]) <= 8
    assert examples[0]["targets_pretokenized"].decode() == long  # the text itself is kept whole
    config_lib.parse(["test.gin"], [f"parallel_corpus_task.train = '{train}'", f"parallel_corpus_task.dev = '{dev}'",
                                    f"parallel_corpus_task.test = '{dev}'", "parallel_corpus_task.vocab_size = 100"])
    inputs, _, _ = pipeline.eval_examples(pipeline.DatasetConfig("parallel_corpus", lengths, batch_size=2), "dev")
    assert inputs.shape == (2, 8)
