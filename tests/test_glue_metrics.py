"""GLUE metrics against scikit-learn and scipy on hand-made predictions; the label mapping; the average."""

import warnings

import pytest
from scipy import stats
from sklearn import metrics as sk

from hpo.scoring import glue_formats
from hpo.scoring.glue_metrics import INVALID_SIMILARITY, glue_average, score_task


def words(task, indices):
    return [glue_formats.target_text(task, i) for i in indices]


@pytest.mark.parametrize("task", sorted(glue_formats.LABELS))
def test_label_words_map_to_class_indices(task):
    labels = glue_formats.LABELS[task]
    for index, word in enumerate(labels):
        assert glue_formats.parse_prediction(task, word) == index
        assert glue_formats.parse_prediction(task, f" {word}\n") == index
    for text in ("", labels[0].upper(), f"{labels[0]} {labels[-1]}", "1", "maybe"):
        assert glue_formats.parse_prediction(task, text) is None
    # every label word scored against itself is perfect; against the next label, all wrong
    references = words(task, range(len(labels)))
    perfect = score_task(task, references, references)
    assert perfect["score"] == pytest.approx(100.0) and perfect["invalid"] == 0
    shifted = words(task, [(i + 1) % len(labels) for i in range(len(labels))])
    result = score_task(task, shifted, references)
    assert result["invalid"] == 0 and result["num_examples"] == len(labels)
    expected = {"cola": {"matthews_corr": -100.0}, "mrpc": {"f1": 0.0, "accuracy": 0.0},
                "qqp": {"f1": 0.0, "accuracy": 0.0}}.get(task, {"accuracy": 0.0})
    assert result["metrics"] == pytest.approx(expected)


def test_stsb_targets_round_to_a_fifth_and_parse_back():
    assert glue_formats.target_text("stsb", 3.13) == "3.2" and glue_formats.parse_prediction("stsb", "3.2") == 3.2
    assert [glue_formats.parse_prediction("stsb", t) for t in ("0", "5.0", "5.2", "-0.4", "three")] == \
        [0.0, 5.0, None, None, None]


def test_cola_matthews_with_invalid_predictions_as_a_class_of_their_own():
    references = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]
    guesses = [1, 0, 0, 1, 1, 0, 1, 0, 1, 0]
    texts = words("cola", guesses)
    texts[1], texts[6] = "acceptable.", "Acceptable"  # both invalid: class -1, never right
    scored = list(guesses)
    scored[1] = scored[6] = -1
    result = score_task("cola", texts, words("cola", references))
    expected = 100 * sk.matthews_corrcoef(references, scored)
    assert result["metrics"] == {"matthews_corr": pytest.approx(expected)}
    assert result["score"] == pytest.approx(expected)
    assert result["invalid"] == 2 and result["num_examples"] == 10
    # the invalid ones were right-looking guesses: read as valid, MCC would be higher
    assert expected < 100 * sk.matthews_corrcoef(references, guesses)
    # a model that emits no label at all is uninformative (0), not anti-correlated (-100)
    assert score_task("cola", ["???"] * 10, words("cola", references))["score"] == pytest.approx(0.0)


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_f1_and_accuracy_with_invalid_predictions(task):
    references = [1, 1, 0, 1, 0, 0, 1, 1]
    texts = words(task, [1, 0, 0, 1, 1, 0, 1, 1])
    texts[0] = texts[2] = "yes"  # a true positive and a true negative lost
    counted = [0, 0, 1, 1, 1, 0, 1, 1]
    result = score_task(task, texts, words(task, references))
    f1, accuracy = 100 * sk.f1_score(references, counted), 100 * sk.accuracy_score(references, counted)
    assert result["metrics"] == {"f1": pytest.approx(f1), "accuracy": pytest.approx(accuracy)}
    assert accuracy == pytest.approx(100 * 4 / 8)  # by hand: positions 3, 5, 6, 7 right
    assert result["score"] == pytest.approx((f1 + accuracy) / 2)
    assert result["invalid"] == 2


def test_f1_without_any_positive_prediction_is_zero():
    result = score_task("mrpc", words("mrpc", [0, 0, 0]), words("mrpc", [1, 0, 0]))
    assert result["metrics"]["f1"] == 0.0 and result["metrics"]["accuracy"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("task", ["sst2", "qnli", "rte", "mnli", "mnli_matched", "mnli_mismatched"])
def test_accuracy_counts_invalid_as_wrong(task):
    classes = len(glue_formats.LABELS[glue_formats.benchmark(task)])
    references = [i % classes for i in range(9)]
    guesses = [(i * 2) % classes for i in range(9)]
    texts = words(task, guesses)
    right = [i for i in range(9) if guesses[i] == references[i]]
    texts[right[0]] = "<unk>"  # a right answer made invalid
    correct = sum(g == r for g, r in zip(guesses, references)) - 1
    result = score_task(task, texts, words(task, references))
    assert result["metrics"] == {"accuracy": pytest.approx(100 * correct / 9)}
    assert result["invalid"] == 1


def test_stsb_pearson_and_spearman_with_invalid_as_minus_one():
    references = [0.0, 1.2, 2.4, 3.0, 3.8, 5.0, 4.4, 1.0]
    texts = ["0.2", "1.0", "2.6", "n/a", "4.0", "5.4", "4.2", "0.8"]  # "n/a" and 5.4 are invalid
    counted = [0.2, 1.0, 2.6, INVALID_SIMILARITY, 4.0, INVALID_SIMILARITY, 4.2, 0.8]
    result = score_task("stsb", texts, [f"{r:.1f}" for r in references])
    pearson = 100 * stats.pearsonr(references, counted).statistic
    spearman = 100 * stats.spearmanr(references, counted).statistic
    assert INVALID_SIMILARITY == -1.0  # T5's string_to_float default
    assert result["metrics"] == {"pearson": pytest.approx(pearson), "spearman": pytest.approx(spearman)}
    assert result["score"] == pytest.approx((pearson + spearman) / 2)
    assert result["invalid"] == 2
    # the invalid ones hurt: the six valid predictions alone correlate better
    kept = [0, 1, 2, 4, 6, 7]
    valid_only = stats.pearsonr([references[i] for i in kept], [counted[i] for i in kept]).statistic
    assert pearson < 100 * valid_only


def test_stsb_constant_predictions_score_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = score_task("stsb", ["2.6", "2.6", "2.6"], ["1.0", "2.0", "4.0"])
    assert result["metrics"] == {"pearson": 0.0, "spearman": 0.0} and result["score"] == 0.0


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="2 predictions for 1"):
        score_task("sst2", ["positive", "negative"], ["positive"])
    with pytest.raises(ValueError, match="not a label"):
        score_task("sst2", ["positive"], ["good"])
    with pytest.raises(ValueError, match="nothing to score"):
        score_task("rte", [], [])
    with pytest.raises(KeyError):
        score_task("squad", ["a"], ["a"])


def test_glue_average_groups_mnli_and_covers_only_given_tasks():
    scores = {"cola": 40.0, "sst2": 90.0, "mnli_matched": 80.0, "mnli_mismatched": 70.0, "stsb": 50.0}
    # groups: CoLA 40, SST-2 90, MNLI (80 + 70) / 2 = 75, STS-B 50 -> 255 / 4
    assert glue_average(scores) == pytest.approx(63.75)
    assert glue_average({"rte": 55.0}) == 55.0
    assert glue_average({"mnli": 60.0, "qnli": 80.0}) == pytest.approx(70.0)
    with pytest.raises(ValueError):
        glue_average({})


def test_task_scores_feed_the_average():
    results = {task: score_task(task, words(task, [0, 1, 1, 0]), words(task, [0, 1, 0, 0]))
               for task in ("sst2", "mrpc")}
    assert results["sst2"]["score"] == pytest.approx(75.0)
    f1 = 100 * sk.f1_score([0, 1, 0, 0], [0, 1, 1, 0])
    assert results["mrpc"]["score"] == pytest.approx((f1 + 75.0) / 2)
    assert glue_average({t: r["score"] for t, r in results.items()}) == \
        pytest.approx((75.0 + (f1 + 75.0) / 2) / 2)
