"""GLUE data: text-to-text strings, official TSV files, synthetic stand-ins, TFDS under mock data."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from hpo.cli import gin_config as config_lib
from hpo.core.errors import UserError
from hpo.data import catalog, glue_tasks as glue, pipeline, synthetic, synthetic_glue
from hpo.scoring import glue_formats as formats
import tfds_runs

LENGTHS = {"inputs": 48, "targets": 8}


def _texts(task, split):
    ds = task.get_dataset(LENGTHS, split=split, shuffle=False, num_epochs=1, try_in_mem_cache=False)
    return [(ex["inputs_pretokenized"].decode(), ex["targets_pretokenized"].decode())
            for ex in ds.as_numpy_iterator()]


# --- Official TSV layouts: tiny hand-written files and the strings they must give ------

QUOTE = 'Referring to him as only " the witness " , Amrozi accused his brother .'
TSV_FILES = {  # variant: (relative path, file text, expected (inputs, targets))
    "cola": ("CoLA/dev.tsv",
             "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
             "gj04\t0\t*\tThe more we study verbs, the crazier they get get.\n",
             [("cola sentence: The sailors rode the breeze clear of the rocks.", "acceptable"),
              ("cola sentence: The more we study verbs, the crazier they get get.", "unacceptable")]),
    "sst2": ("SST-2/dev.tsv",
             "sentence\tlabel\nit 's a charming journey . \t1\nunflinchingly bleak\t0\n",
             [("sst2 sentence: it 's a charming journey . ", "positive"),
              ("sst2 sentence: unflinchingly bleak", "negative")]),
    "mrpc": ("MRPC/dev.tsv",
             "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
             f"1\t702876\t702977\tAmrozi accused his brother .\t{QUOTE}\n",
             [(f"mrpc sentence1: Amrozi accused his brother . sentence2: {QUOTE}", "equivalent")]),
    "qqp": ("QQP/dev.tsv",
            "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
            "7\t15\t16\tHow do I read?\tHow can I read?\t1\n8\t17\t18\tWhy?\tWhen?\t0\n",
            [("qqp question1: How do I read? question2: How can I read?", "duplicate"),
             ("qqp question1: Why? question2: When?", "not_duplicate")]),
    "stsb": ("STS-B/dev.tsv",
             "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
             "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man plays.\tA man sings.\t3.800\n"
             "1\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA.\tB.\t4.75\n"
             "2\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tC.\tD.\t0.5\n",
             [("stsb sentence1: A man plays. sentence2: A man sings.", "3.8"),
              ("stsb sentence1: A. sentence2: B.", "4.8"),
              ("stsb sentence1: C. sentence2: D.", "0.4")]),  # 2.5 rounds half to even, as T5's tf.round
    "mnli": ("MNLI/dev_matched.tsv",
             "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse"
             "\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
             "0\t63735\t63735n\tslate\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tThe new rights are nice.\t"
             "Everyone really likes them.\tneutral\tentailment\tneutral\tneutral\tneutral\tneutral\n",
             [("mnli hypothesis: Everyone really likes them. premise: The new rights are nice.", "neutral")]),
    "mnli_mismatched": ("MNLI/dev_mismatched.tsv",
                        "index\tsentence1\tsentence2\tgold_label\n0\tP.\tH.\tcontradiction\n",
                        [("mnli hypothesis: H. premise: P.", "contradiction")]),
    "qnli": ("QNLI/dev.tsv",
             "index\tquestion\tsentence\tlabel\n0\tWhat came first?\tThe egg came first.\tentailment\n",
             [("qnli question: What came first? sentence: The egg came first.", "entailment")]),
    "rte": ("RTE/dev.tsv",
            "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve died.\tChristopher Reeve had an accident.\t"
            "not_entailment\n",
            [("rte sentence1: Dana Reeve died. sentence2: Christopher Reeve had an accident.",
              "not_entailment")]),
}


def _write(root, relative, text):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("variant", sorted(TSV_FILES))
def test_each_official_tsv_layout_gives_t5_strings(tmp_path, variant):
    relative, text, expected = TSV_FILES[variant]
    path = _write(tmp_path, relative, text)
    assert glue.tsv_paths(str(tmp_path), variant)["dev"] == path
    assert glue.read_tsv(path, variant) == expected


def test_mrpc_file_with_byte_order_mark(tmp_path):
    relative, text, expected = TSV_FILES["mrpc"]
    path = _write(tmp_path, relative, "\ufeff" + text)
    assert glue.read_tsv(path, "mrpc") == expected


@pytest.mark.parametrize("variant, row, match", [
    ("rte", "1\tonly two fields\n", r"RTE/dev.tsv:3: expected 4 tab-separated fields, got 2"),
    ("rte", "1\ta\tb\tmaybe\n", r"RTE/dev.tsv:3: bad label 'maybe'"),
    ("stsb", "1\tg\tf\ty\to\ts\ts\ta\tb\t5.5\n", r"STS-B/dev.tsv:5: bad score '5.5'"),
    ("cola", "gj04\t2\t\tToo good.\n", r"CoLA/dev.tsv:3: bad label '2'"),
])
def test_bad_rows_are_user_errors_naming_file_and_line(tmp_path, variant, row, match):
    relative, text, _ = TSV_FILES[variant]
    path = _write(tmp_path, relative, text + row)
    with pytest.raises(UserError, match=match):
        glue.read_tsv(path, variant)


def test_missing_file_header_column_or_directory_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found: .*RTE/train.tsv"):
        glue.glue_tsv_task("glue_tsv_rte", directory=str(tmp_path))
    path = _write(tmp_path, "QNLI/dev.tsv", "index\tquestion\tlabel\n0\tq\tentailment\n")
    with pytest.raises(UserError, match=r"QNLI/dev.tsv:1: the header has no column 'sentence'"):
        glue.read_tsv(path, "qnli")
    path = _write(tmp_path, "SST-2/dev.tsv", "sentence\tlabel\n")
    with pytest.raises(UserError, match="no examples"):
        glue.read_tsv(path, "sst2")
    with pytest.raises(UserError, match="glue_tsv_task.directory"):
        glue.glue_tsv_task("glue_tsv_rte")


def test_tsv_task_reads_train_and_dev(tmp_path):
    relative, text, expected = TSV_FILES["qqp"]
    _write(tmp_path, relative, text)
    _write(tmp_path, "QQP/train.tsv", text.replace("Why?", "Who?"))
    config_lib.parse(["test.gin"], [f"glue_tsv_task.directory = '{tmp_path}'"])
    task = catalog.get_task("glue_tsv_qqp")
    assert _texts(task, "dev") == expected
    assert _texts(task, "train")[1] == ("qqp question1: Who? question2: When?", "not_duplicate")
    assert task.num_input_examples("train") == 2
    dataset = task.get_dataset(LENGTHS, split="dev", shuffle=False, try_in_mem_cache=False)
    ex = next(dataset.as_numpy_iterator())
    vocab = task.output_features["inputs"].vocabulary
    assert ex["targets"][-1] == vocab.eos_id and vocab.decode(ex["targets"].tolist()) == "duplicate"


# --- TFDS ----------------------------------------------------------------------------

def test_tfds_preprocessor_matches_formats():
    """tf ops give exactly the strings `formats` gives, STS-B rounding included."""
    for benchmark in formats.TASKS:
        fields = {key: f"text of {key} ." for key in formats.TEXT_FIELDS[benchmark]}
        labels = ([0.0, 0.1, 0.5, 0.7, 2.5, 3.3, 4.75, 4.9, 5.0] if benchmark in formats.REGRESSION
                  else list(range(len(formats.LABELS[benchmark]))))
        examples = {**{k: [v] * len(labels) for k, v in fields.items()},
                    "label": np.array(labels, np.float32 if benchmark in formats.REGRESSION else np.int64),
                    "idx": np.arange(len(labels), dtype=np.int32)}
        out = glue.tfds_to_text(tf.data.Dataset.from_tensor_slices(examples), benchmark)
        got = [(ex["inputs"].decode(), ex["targets"].decode()) for ex in out.as_numpy_iterator()]
        # float32 labels as TFDS stores them, compared with Python on the same values
        want = [(formats.to_text(benchmark, fields), formats.target_text(benchmark, float(label)))
                for label in examples["label"]]
        assert got == want, benchmark
    assert [t for _, t in got] == ["entailment", "not_entailment"]


@pytest.mark.integration
def test_tfds_glue_of_the_real_config_under_mock_data():
    # Every GLUE task `hpo run --gin_file=t5/c4_glue.gin` fine-tunes on, with the TFDS name,
    # config and version the run reads.
    names = tfds_runs.run_task_names("t5/c4_glue.gin")[1:]
    assert set(map(glue.variant, names)) == set(glue.VARIANTS)
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        for name in names:
            task = catalog.get_task(name)
            benchmark = glue.glue_benchmark(name)
            tfds_name = tfds_runs.assert_tfds_code_builds(task)
            assert tfds_name.startswith(f"glue/{benchmark}:") and set(task.source.splits) == {"train", "dev"}
            # Mock data gives every split the same examples: the split mapping is read from seqio.
            dev = {"glue_mnli": "validation_matched",
                   "glue_mnli_mismatched": "validation_mismatched"}.get(name, "validation")
            assert task.source.tfds_dataset._map_split("dev") == dev, name
            raw = list(task.source.get_dataset("dev", shuffle=False).as_numpy_iterator())
            want = [(formats.to_text(benchmark, {k: ex[k].decode() for k in formats.TEXT_FIELDS[benchmark]}),
                     formats.target_text(benchmark, ex["label"])) for ex in raw]
            assert _texts(task, "dev") == want and len(want) == 6, name
        # The trainer's path, once.
        config = pipeline.DatasetConfig(names[0], LENGTHS, batch_size=2, pack=False, shuffle_buffer_size=6)
        assert next(pipeline.train_batches(config))["encoder_input_tokens"].shape == (2, LENGTHS["inputs"])


# --- Synthetic stand-ins -------------------------------------------------------------

SMALL = dict(num_train=200, num_dev=41)


@pytest.fixture(scope="module")
def generated():
    return {task: synthetic_glue.generate(task, seed=3, **SMALL) for task in synthetic_glue.TASKS}


def _parses(sentence):
    try:
        synthetic.parse(sentence)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("task", synthetic_glue.TASKS)
def test_synthetic_sizes_balance_and_determinism(generated, task):
    splits = generated[task]
    assert {s: len(v) for s, v in splits.items()} == {"train": 200, "dev": 41}
    if task != "stsb":
        for examples in splits.values():
            counts = collections.Counter(ex["label"] for ex in examples)
            assert set(counts) == {0, 1} and abs(counts[0] - counts[1]) <= 1
    assert synthetic_glue.generate(task, seed=3, **SMALL) == splits
    assert synthetic_glue.generate(task, seed=4, **SMALL) != splits
    first = [ex.get("sentence", ex.get("sentence1")) for ex in splits["train"] + splits["dev"]]
    if task in ("cola", "sst2", "stsb"):  # the sampled sentence comes first
        assert len(set(first)) == len(first)


def test_synthetic_cola_broken_sentences_fail_to_parse(generated):
    for ex in generated["cola"]["train"] + generated["cola"]["dev"]:
        assert _parses(ex["sentence"]) == (ex["label"] == 1), ex


def test_sentiment_rule():
    assert synthetic_glue.sentiment("the kind dog sees the cat .") == 1
    assert synthetic_glue.sentiment("the dog hates the cat .") == 0
    assert synthetic_glue.sentiment("the dog never hates the cat .") == 1
    assert synthetic_glue.sentiment("the kind dog will never help the cat .") is None
    assert synthetic_glue.sentiment("the dog sees the cat .") is None


def test_synthetic_sst2_labels_follow_the_rule_and_need_negation(generated):
    examples = generated["sst2"]["train"] + generated["sst2"]["dev"]
    for ex in examples:
        assert _parses(ex["sentence"]) and synthetic_glue.sentiment(ex["sentence"]) == ex["label"], ex
    negated = [ex["label"] for ex in examples if " never " in ex["sentence"]]
    assert 0.2 < len(negated) / len(examples) < 0.5 and set(negated) == {0, 1}
    # Not a keyword lookup: some positive sentences contain a negative word, and the converse.
    for label, words in ((1, synthetic_glue.NEGATIVE), (0, synthetic_glue.POSITIVE)):
        assert any(ex["label"] == label and words & set(ex["sentence"].split()) for ex in examples)


def test_synthetic_mrpc_paraphrases_keep_the_meaning(generated):
    assert synthetic_glue.same_meaning("the big red dog runs .", "the red huge dog runs .")
    assert not synthetic_glue.same_meaning("the big dog runs .", "the small dog runs .")
    for ex in generated["mrpc"]["train"] + generated["mrpc"]["dev"]:
        assert synthetic_glue.same_meaning(ex["sentence1"], ex["sentence2"]) == (ex["label"] == 1), ex


def test_synthetic_stsb_score_counts_replaced_words(generated):
    scores = []
    for ex in generated["stsb"]["train"] + generated["stsb"]["dev"]:
        first, second = (synthetic_glue.content_words(ex[k]) for k in ("sentence1", "sentence2"))
        assert [c for c, _ in first] == [c for c, _ in second]
        replaced = sum(a != b for a, b in zip(first, second))
        assert ex["label"] == pytest.approx(5 * (1 - replaced / len(first)), abs=1e-4)
        scores.append(ex["label"])
    assert min(scores) == 0 and max(scores) == 5 and len(set(scores)) > 8


def test_synthetic_task_cached_in_official_layout_and_batched(data_dir):
    config_lib.parse(["test.gin"], ["synthetic_glue_task.num_train = 60", "synthetic_glue_task.num_dev = 10"])
    config = pipeline.DatasetConfig("synthetic_sst2", LENGTHS, batch_size=4)
    batch = next(pipeline.train_batches(config))
    assert batch["encoder_input_tokens"].shape == (4, LENGTHS["inputs"])
    assert "encoder_segment_ids" in batch  # packed
    task = catalog.get_task("synthetic_sst2")
    path = os.path.join(data_dir, "synthetic_glue", "seed0-train60-dev10", "SST-2", "train.tsv")
    assert open(path).readline() == "sentence\tlabel\n"
    dev = _texts(task, "dev")
    want = synthetic_glue.generate("sst2", 0, 60, 10)["dev"]
    assert dev == [(f"sst2 sentence: {ex['sentence']}", formats.LABELS["sst2"][ex["label"]]) for ex in want]
    vocab = task.output_features["targets"].vocabulary
    from hpo.data import shared_vocabulary
    assert vocab is shared_vocabulary.t5_vocabulary() and vocab.extra_ids == 100


# --- Names ---------------------------------------------------------------------------

def test_task_names_benchmarks_and_synthetic_flag():
    assert glue.glue_task_names("synthetic", ["cola", "stsb"]) == ["synthetic_cola", "synthetic_stsb"]
    assert glue.glue_task_names("tfds", ["mnli", "mnli_mismatched"]) == ["glue_mnli", "glue_mnli_mismatched"]
    assert glue.glue_task_names("tsv", "rte") == ["glue_tsv_rte"]
    with pytest.raises(UserError, match="no synthetic GLUE task 'qqp'"):
        glue.glue_task_names("synthetic", ["qqp"])
    with pytest.raises(UserError, match="unknown GLUE source"):
        glue.glue_task_names("hub", ["cola"])
    for source in ("synthetic", "tfds", "tsv"):
        variants = glue.SYNTHETIC_TASKS if source == "synthetic" else glue.VARIANTS
        for variant, name in zip(variants, glue.glue_task_names(source, variants)):
            assert glue.glue_benchmark(name) == variant.split("_")[0]
            assert glue.is_synthetic(name) == (source == "synthetic")
            assert glue.builder_for(name) is not None
    assert glue.glue_benchmark("glue_tsv_mnli_mismatched") == "mnli"
    with pytest.raises(UserError, match="not a GLUE task"):
        glue.glue_benchmark("synthetic_translation")
    with pytest.raises(UserError, match="unknown task 'glue_wnli'"):
        catalog.get_task("glue_wnli")
