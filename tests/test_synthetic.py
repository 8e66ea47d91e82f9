"""Tests for the embedded synthetic translation task (hpo.data.synthetic)."""
import re
import statistics
import time

import pytest

from hpo.data import synthetic as syn

SMALL = dict(num_train=3000, num_dev=300, num_test=300)


@pytest.fixture(scope="module")
def corpus():
    return syn.generate_corpus(0, **SMALL)


@pytest.fixture(scope="module")
def lex():
    return syn.lexicon(0)


def all_pairs(corpus):
    return [pair for split in syn.SPLITS for pair in corpus[split]]


def tokens(sentence):
    return sentence.split(" ")


# ------------------------------------------------------------- corpus shape
def test_counts_are_exact(corpus):
    assert set(corpus) == set(syn.SPLITS)
    assert [len(corpus[s]) for s in syn.SPLITS] == [3000, 300, 300]
    other = syn.generate_corpus(1, num_train=7, num_dev=1, num_test=2)
    assert [len(other[s]) for s in syn.SPLITS] == [7, 1, 2]


def test_deterministic_for_a_seed(corpus):
    assert syn.generate_corpus(0, **SMALL) == corpus
    assert syn.translate("the dog sleeps .", seed=5) == syn.translate("the dog sleeps .", seed=5)


def test_different_seed_changes_lexicon_and_corpus(corpus, lex):
    other = syn.generate_corpus(1, **SMALL)
    assert other["train"] != corpus["train"]
    assert syn.lexicon(1).stems != lex.stems
    assert syn.translate("the dog sleeps .", seed=1) != syn.translate("the dog sleeps .", seed=0)


def test_splits_disjoint_and_no_duplicates(corpus):
    sources = [src for src, _ in all_pairs(corpus)]
    assert len(sources) == len(set(sources))
    split_sets = [{src for src, _ in corpus[s]} for s in syn.SPLITS]
    assert sum(map(len, split_sets)) == len(set().union(*split_sets))


def test_words_per_category_limits_the_language():
    small = syn.generate_corpus(0, num_train=500, num_dev=20, num_test=20, words_per_category=5)
    allowed = syn.Words.first(5)
    content = {lemma for group in (allowed.nouns, allowed.adjectives, allowed.adverbs) for lemma in group}
    content |= {spec.split(":")[0] for spec in allowed.transitive + allowed.intransitive}
    used = set()
    for source, target in all_pairs(small):
        for token in tokens(source):
            category, lemma, _ = syn.SOURCE_FORMS[token]
            if category in ("noun", "verb", "adj", "adv"):
                used.add(lemma)
        assert syn.translate(source) == target
    assert used == content  # every kept word is used, no other is
    with pytest.raises(ValueError):
        syn.generate_corpus(0, num_train=5, num_dev=1, num_test=1, words_per_category=1)


@pytest.mark.parametrize("bad", [0, -1, -500])
@pytest.mark.parametrize("field", ["num_train", "num_dev", "num_test"])
def test_non_positive_counts_raise(field, bad):
    with pytest.raises(ValueError):
        syn.generate_corpus(0, **{**SMALL, field: bad})


def test_length_distribution(corpus):
    lengths = [len(tokens(src)) for src, _ in all_pairs(corpus)]
    assert min(lengths) <= 5
    assert 20 <= max(lengths) <= syn.MAX_TOKENS
    assert 9.0 <= statistics.mean(lengths) <= 13.0
    assert len(set(lengths)) >= 18  # broad, not a couple of fixed templates


def test_vocabulary_sizes(corpus):
    source_vocab = {w for src, _ in corpus["train"] for w in tokens(src)}
    target_vocab = {w for _, tgt in corpus["train"] for w in tokens(tgt)}
    assert 300 <= len(source_vocab) <= 1000
    assert len(target_vocab) > len(source_vocab)  # inflection multiplies target forms


def test_only_lowercase_ascii_words_and_final_period(corpus):
    pattern = re.compile(r"[a-z]+( [a-z]+)* \.")
    for src, tgt in all_pairs(corpus):
        assert pattern.fullmatch(src), src
        assert pattern.fullmatch(tgt), tgt


def test_generation_is_fast():
    start = time.perf_counter()
    syn.generate_corpus(0, num_train=20000, num_dev=500, num_test=500)
    assert time.perf_counter() - start < 6.0  # ~1 s on a laptop core; slack for busy CI


# ------------------------------------------------------------- lexicon
def test_lexicon_stems_distinct_and_well_formed(lex):
    stems = list(lex.stems.values())
    assert len(stems) == len(set(stems))
    assert all(re.fullmatch(r"[a-z]+", s) for s in stems)
    assert set(lex.gender.values()) == set(range(syn.GENDERS))
    suffixes = [lex.suffixes[slot] for slot in syn.SUFFIX_SLOTS]
    assert len(suffixes) == len(set(suffixes)) and all(re.fullmatch(r"[a-z]+", s) for s in suffixes)


def test_lexicon_sizes():
    assert len(syn.NOUNS) >= 140 and len(syn.ADJECTIVES) >= 55 and len(syn.ADVERBS) >= 20
    transitive = [v for v, (_, trans) in syn.VERBS.items() if trans]
    assert len(syn.VERBS) >= 60 and 0 < len(transitive) < len(syn.VERBS)
    assert len(syn.PREPOSITIONS) >= 10


def test_source_word_always_maps_to_its_target_stem(corpus, lex):
    for src, tgt in corpus["dev"]:
        target_words = tokens(tgt)
        for word in tokens(src):
            category, lemma, _ = syn.SOURCE_FORMS[word]
            if category in ("noun", "verb", "adj"):
                assert any(t.startswith(lex.stems[lemma]) for t in target_words), (word, src, tgt)
            elif category in ("adv", "prep"):
                assert lex.stems[lemma] in target_words, (word, src, tgt)


# ------------------------------------------------------------- grammar
def test_translate_reproduces_the_corpus(corpus):
    for src, tgt in corpus["dev"] + corpus["test"]:
        assert syn.translate(src) == tgt


@pytest.mark.parametrize("bad", [
    "dog the sees the cat .",      # word order
    "he see the cat .",            # subject-verb agreement
    "the dog sees .",              # transitive verb without object
    "dog sleeps .",                # bare singular noun
    "a apple falls .",             # a/an
    "these dog sleeps .",          # determiner number
    "a dogs sleep .",
    "him sleeps .",                # pronoun case
    "the dog sleeps",              # missing period
    "the zorp sleeps .",           # unknown word
])
def test_translate_rejects_sentences_outside_the_grammar(bad):
    with pytest.raises(ValueError):
        syn.translate(bad)


def test_word_order_is_sov_with_postpositions_and_noun_first(lex):
    s = lex.stems
    out = tokens(syn.translate("the dog sees the cat ."))
    assert [t[:len(s[w])] for t, w in zip(out, ["dog", "the", "cat", "the", "see"])] == \
        [s["dog"], s["the"], s["cat"], s["the"], s["see"]]
    assert out[-1] == "." and len(out) == 6  # verb last, after its object
    out = tokens(syn.translate("the big dog sleeps in a house ."))
    assert out.index(s["in"]) == 5 and out[3].startswith(s["house"])  # postposition after its NP
    assert out[0].startswith(s["dog"]) and out[1].startswith(s["big"])  # adjective after noun
    out = tokens(syn.translate("the dog sees the cat that sleeps ."))
    assert out[2].startswith(s["sleep"]) and out[3].startswith(s["cat"])  # relative clause first


def test_adjective_and_determiner_agree_in_gender_and_number(lex):
    by_gender = {}
    for noun in syn.NOUNS:
        by_gender.setdefault(lex.gender[noun], noun)
    a, b = by_gender[0], by_gender[1]
    plural = syn._plural(a)
    sg = tokens(syn.translate(f"the old {a} sleeps ."))
    pl = tokens(syn.translate(f"the old {plural} sleep ."))
    other = tokens(syn.translate(f"the old {b} sleeps ."))
    assert sg[1].startswith(lex.stems["old"]) and pl[1].startswith(lex.stems["old"])
    assert len({sg[1], pl[1], other[1]}) == 3   # adjective: gender and number
    assert len({sg[2], pl[2], other[2]}) == 3   # determiner likewise
    assert sg[0] != pl[0]                       # noun takes a plural suffix


def test_verb_agrees_with_subject_and_marks_tense(lex):
    verb = lambda sentence: tokens(syn.translate(sentence))[-2]
    forms = {verb(s) for s in ["he sleeps .", "they sleep .", "i sleep .", "he slept .", "he will sleep ."]}
    assert len(forms) == 5 and all(f.startswith(lex.stems["sleep"]) for f in forms)


def test_objects_take_accusative_case(lex):
    subject = tokens(syn.translate("the cat sleeps ."))[0]
    obj = tokens(syn.translate("the dog sees the cat ."))[2]
    assert subject == lex.stems["cat"] and obj == lex.stems["cat"] + lex.suffixes["acc"]
    assert tokens(syn.translate("she sees him ."))[1] == lex.stems["he"] + lex.suffixes["acc"]
