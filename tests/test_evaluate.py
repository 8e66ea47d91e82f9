import pytest
import sacrebleu

from hpo.engine.evaluate import score


def test_bleu_and_chrf_equal_a_direct_sacrebleu_call():
    hyps = ["the cat sat on the mat .", "a dog barks loudly", "nothing matches here"]
    refs = ["the cat sat on a mat .", "the dog barks loudly", "completely different words"]
    ours = score(hyps, refs)
    assert ours["bleu"] == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert ours["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert 0 < ours["bleu"] < 100


def test_signature_is_sacrebleus_own():
    ours = score(["a b c d"], ["a b c d"])
    assert ours["bleu"] == pytest.approx(100.0)
    assert ours["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert ours["chrf_signature"].startswith("nrefs:1|")
