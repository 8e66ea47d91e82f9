"""Small GLUE-format tasks generated offline from the embedded language (labelled synthetic).

Stand-ins for four GLUE benchmarks, built from sentences sampled by
`hpo.data.synthetic` (its word lists, syntax trees and renderer):

- cola (acceptability): sampled sentences (1) vs sentences broken by a rule:
  an agreement error, two words swapped, a determiner dropped, a noun's number
  changed, a pronoun's case or an article's a/an changed (0). Every broken
  sentence fails `synthetic.parse`.
- sst2 (sentiment): every adjective, adverb and verb is neutral except one or
  two of one polarity; in a third of the sentences the verb is of the opposite
  polarity and negated by "never" ("the dog never hates the cat" is positive).
  `sentiment` states the rule.
- mrpc (paraphrase): a sentence and a rewrite with the same meaning (synonyms,
  adjectives or clauses reordered) (1), or the sentence with one content word
  changed to a non-synonym (0). `same_meaning` states the rule.
- stsb (similarity): a sentence and a copy with k of its n content words
  replaced, scored 5 × (1 − k/n).

Everything is deterministic given the seed; the classes of each split are
balanced, and no sampled sentence makes two examples of a task (so train and
dev do not overlap).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from typing import Callable, Dict, List, Optional, Sequence

from hpo.data import synthetic
from hpo.data.synthetic import ADJECTIVES, ADVERBS, Clause, NOUNS, NP, SOURCE_FORMS, VERBS

TASKS = ("cola", "sst2", "mrpc", "stsb")
Example = Dict[str, object]  # GLUE field names (hpo.scoring.glue_formats.TEXT_FIELDS) and "label"

_TRANSITIVE = tuple(v for v, (_, transitive) in VERBS.items() if transitive)
_INTRANSITIVE = tuple(v for v, (_, transitive) in VERBS.items() if not transitive)

# --- Word polarity (sst2) -------------------------------------------------------------
NEGATION = "never"
POSITIVE = frozenset("""
happy brave kind clever beautiful gentle lucky wise pretty calm sweet famous
happily gently bravely politely eagerly calmly softly carefully
like love help admire protect hug greet kiss feed visit laugh smile dance sing play rest dream
""".split())
NEGATIVE = frozenset("""
sad angry tired hungry cruel lazy ugly poor weak dirty silly noisy
sadly loudly
hate break steal kick throw forget drop grab push chase cry fall shout cough sneeze
""".split())

# --- Synonyms (mrpc) ------------------------------------------------------------------
_SYNONYM_PAIRS = ("big huge", "small tiny", "loud noisy", "pretty beautiful", "clever wise",
                  "quiet calm", "quietly softly", "often usually", "see watch", "take grab",
                  "wander walk", "boat ship", "shop market")
SYNONYMS = {a: b for pair in _SYNONYM_PAIRS for a, b in (pair.split(), pair.split()[::-1])}


# --- Syntax trees ---------------------------------------------------------------------
def _rebuild(clauses, word: Callable = None, np: Callable = None, det: Callable = None):
    """The tree with content words, noun phrases and determiners mapped.

    word(i, category, lemma) -> lemma for the i-th content word (category noun,
    adj, adv or verb), np(j, NP) -> NP for the j-th non-pronoun noun phrase
    (after its words), det(lemma) -> lemma; counted in one fixed order.
    """
    words, nps = itertools.count(), itertools.count()
    word = word or (lambda i, category, lemma: lemma)

    def rebuild_np(phrase: NP) -> NP:
        if phrase.pronoun:
            return phrase
        phrase = dataclasses.replace(
            phrase, adjs=tuple(word(next(words), "adj", a) for a in phrase.adjs),
            head=word(next(words), "noun", phrase.head),
            det=det(phrase.det) if det and phrase.det else phrase.det,
            rel=rebuild_clause(phrase.rel) if phrase.rel else None)
        return np(next(nps), phrase) if np else phrase

    def rebuild_clause(c: Clause) -> Clause:
        subj = rebuild_np(c.subj) if c.subj else None
        adv = word(next(words), "adv", c.adv) if c.adv else None
        verb = word(next(words), "verb", c.verb)
        obj = rebuild_np(c.obj) if c.obj else None
        pp = (c.pp[0], rebuild_np(c.pp[1])) if c.pp else None
        return Clause(subj, verb, c.tense, obj, adv, pp)

    return tuple(rebuild_clause(c) for c in clauses)


def _slots(clauses) -> List[tuple]:
    """(category, lemma) of each content word, in `_rebuild`'s order."""
    found = []
    _rebuild(clauses, word=lambda i, category, lemma: found.append((category, lemma)) or lemma)
    return found


def _noun_phrases(clauses) -> List[NP]:
    """The non-pronoun noun phrases, in `_rebuild`'s order."""
    found = []
    _rebuild(clauses, np=lambda j, phrase: found.append(phrase) or phrase)
    return found


def _render(clauses) -> str:
    return " ".join(synthetic._source_tokens(clauses))


def _kind(category: str, lemma: str) -> str:
    """Words of one kind can replace each other without breaking the grammar."""
    if category == "verb":
        return "transitive" if VERBS[lemma][1] else "intransitive"
    return category


_POOLS = {"noun": NOUNS, "adj": ADJECTIVES, "adv": ADVERBS,
          "transitive": _TRANSITIVE, "intransitive": _INTRANSITIVE}


def _pool(category: str, lemma: str) -> Sequence[str]:
    return _POOLS[_kind(category, lemma)]


def _different_word(rng: random.Random, category: str, lemma: str, avoid) -> str:
    """A word of the same kind that changes the meaning: not `lemma`, its synonym or in `avoid`."""
    excluded = {lemma, SYNONYMS.get(lemma)} | set(avoid)
    return rng.choice([w for w in _pool(category, lemma) if w not in excluded])


def content_words(sentence: str) -> List[tuple]:
    """(category, lemma) of each noun, verb, adjective and adverb of a sentence, in a fixed order."""
    return _slots(synthetic.parse(sentence))


def same_meaning(first: str, second: str) -> bool:
    """Whether two sentences mean the same: equal up to synonyms and the order of
    adjectives and of conjoined clauses."""
    def canonical(sentence):
        clauses = _rebuild(synthetic.parse(sentence),
                           word=lambda i, category, lemma: min(lemma, SYNONYMS.get(lemma, lemma)),
                           np=lambda j, phrase: dataclasses.replace(phrase, adjs=tuple(sorted(phrase.adjs))))
        return sorted(map(repr, clauses))
    return canonical(first) == canonical(second)


def sentiment(sentence: str) -> Optional[int]:
    """1 (positive) or 0 (negative) by the polarity of the sentence's words, a verb
    after "never" counting with the opposite sign; None when they cancel out."""
    tokens = sentence.split(" ")
    score = 0
    for previous, token in zip([None] + tokens, tokens):
        category, lemma, _ = SOURCE_FORMS.get(token, (None, token, None))
        polarity = (lemma in POSITIVE) - (lemma in NEGATIVE) if category in ("adj", "adv", "verb") else 0
        score += -polarity if category == "verb" and previous == NEGATION else polarity
    return None if score == 0 else int(score > 0)


# --- cola -----------------------------------------------------------------------------
def _positions(tokens, test) -> List[int]:
    return [i for i, t in enumerate(tokens) if test(SOURCE_FORMS.get(t, ("?", t, None)))]


def _agreement_error(rng, tokens):
    verbs = _positions(tokens, lambda a: a[0] == "verb" and a[2] in ("base", "3sg"))
    if not verbs:
        return None
    i = rng.choice(verbs)
    _, lemma, form = SOURCE_FORMS[tokens[i]]
    forms = synthetic._verb_forms(lemma)
    return tokens[:i] + [forms["3sg" if form == "base" else "base"]] + tokens[i + 1:]


def _swap_neighbours(rng, tokens):
    candidates = [i for i in range(len(tokens) - 2) if tokens[i] != tokens[i + 1]]
    if not candidates:
        return None
    i = rng.choice(candidates)
    return tokens[:i] + [tokens[i + 1], tokens[i]] + tokens[i + 2:]


def _drop_determiner(rng, tokens):
    dets = _positions(tokens, lambda a: a[0] == "det")
    if not dets:
        return None
    i = rng.choice(dets)
    return tokens[:i] + tokens[i + 1:]


def _change_number(rng, tokens):
    nouns = _positions(tokens, lambda a: a[0] == "noun")
    if not nouns:
        return None
    i = rng.choice(nouns)
    _, lemma, number = SOURCE_FORMS[tokens[i]]
    return tokens[:i] + [synthetic._plural(lemma) if number == "sg" else lemma] + tokens[i + 1:]


def _pronoun_case(rng, tokens):
    cases = {s: o for s, o, _ in synthetic.PRONOUNS.values() if s != o}
    cases.update({o: s for s, o in list(cases.items())})
    pronouns = [i for i, t in enumerate(tokens) if t in cases]
    if not pronouns:
        return None
    i = rng.choice(pronouns)
    return tokens[:i] + [cases[tokens[i]]] + tokens[i + 1:]


def _wrong_article(rng, tokens):
    articles = [i for i, t in enumerate(tokens) if t in ("a", "an")]
    if not articles:
        return None
    i = rng.choice(articles)
    return tokens[:i] + [{"a": "an", "an": "a"}[tokens[i]]] + tokens[i + 1:]


BREAKING_RULES = (_agreement_error, _swap_neighbours, _drop_determiner, _change_number,
                  _pronoun_case, _wrong_article)


def _is_grammatical(tokens) -> bool:
    try:
        synthetic.parse(" ".join(tokens))
        return True
    except ValueError:
        return False


def _cola(rng: random.Random, label: int) -> Optional[tuple]:
    _, tokens = synthetic._sample_sentence(rng)
    if label == 0:
        # Rules whose result happens to be grammatical ("the dog" -> "the dogs") are skipped.
        for rule in rng.sample(BREAKING_RULES, len(BREAKING_RULES)):
            broken = rule(rng, tokens)
            if broken and not _is_grammatical(broken):
                return " ".join(tokens), {"sentence": " ".join(broken), "label": 0}
        return None
    return " ".join(tokens), {"sentence": " ".join(tokens), "label": 1}


# --- sst2 -----------------------------------------------------------------------------
_NEUTRAL = {kind: tuple(w for w in pool if w not in POSITIVE | NEGATIVE | {NEGATION})
            for kind, pool in _POOLS.items()}
_POLAR = {(kind, polarity): tuple(w for w in pool if w in (POSITIVE if polarity > 0 else NEGATIVE))
          for kind, pool in _POOLS.items() for polarity in (1, -1)}


def _neutral_word(rng: random.Random, category: str, lemma: str) -> str:
    neutral = _NEUTRAL[_kind(category, lemma)]
    return lemma if lemma in neutral else rng.choice(neutral)


def _polar_word(rng: random.Random, category: str, lemma: str, polarity: int) -> str:
    return rng.choice(_POLAR[_kind(category, lemma), polarity])


def _sst2(rng: random.Random, label: int) -> Optional[tuple]:
    clauses, _ = synthetic._sample_sentence(rng)
    # Neutral words everywhere, and no "no" determiner: negation comes only from "never".
    clauses = _rebuild(
        clauses, det=lambda d: "the" if d == "no" else d,
        word=lambda i, category, lemma: _neutral_word(rng, category, lemma))
    polarity = 1 if label == 1 else -1
    target = rng.randrange(len(clauses))
    clause = clauses[target]
    if rng.random() < 1 / 3:  # "never" + a verb of the opposite polarity, maybe an adjective
        clause = dataclasses.replace(clause, adv=NEGATION,
                                     verb=_polar_word(rng, "verb", clause.verb, -polarity))
        slots = {"adj"} if rng.random() < 0.5 else set()
    else:  # one or two words of the label's polarity
        slots = set(rng.sample(("verb", "adv", "adj"), rng.choice((1, 2))))
        if slots == {"adj"} and not _noun_phrases(clauses):
            return None  # only pronouns: nowhere to put the adjective
        if "verb" in slots:
            clause = dataclasses.replace(clause, verb=_polar_word(rng, "verb", clause.verb, polarity))
        if "adv" in slots:
            clause = dataclasses.replace(clause, adv=_polar_word(rng, "adv", "", polarity))
    clauses = clauses[:target] + (clause,) + clauses[target + 1:]
    phrases = len(_noun_phrases(clauses))
    if "adj" in slots and phrases:
        chosen, adjective = rng.randrange(phrases), _polar_word(rng, "adj", "", polarity)
        clauses = _rebuild(clauses, np=lambda j, phrase: phrase if j != chosen else
                           dataclasses.replace(phrase, adjs=(adjective,) + phrase.adjs[1:]))
    sentence = _render(clauses)
    if len(sentence.split(" ")) > synthetic.MAX_TOKENS:
        return None
    return sentence, {"sentence": sentence, "label": label}


# --- mrpc -----------------------------------------------------------------------------
def _reorder(rng: random.Random, clauses, p: float):
    """Meaning-preserving reorderings, each applied with probability p where it applies."""
    if len(clauses) > 1 and rng.random() < p:
        clauses = clauses[::-1]
    return _rebuild(clauses, np=lambda j, phrase: dataclasses.replace(phrase, adjs=phrase.adjs[::-1])
                    if len(phrase.adjs) > 1 and rng.random() < p else phrase)


def _mrpc(rng: random.Random, label: int) -> Optional[tuple]:
    clauses, tokens = synthetic._sample_sentence(rng)
    slots = _slots(clauses)
    synonyms = [i for i, (_, lemma) in enumerate(slots) if lemma in SYNONYMS]
    reorderable = len(clauses) > 1 or any(len(phrase.adjs) > 1 for phrase in _noun_phrases(clauses))
    if not synonyms and not reorderable:
        return None
    if label == 1:
        swap = set(i for i in synonyms if rng.random() < 0.5)
        rewrite = _rebuild(clauses, word=lambda i, category, lemma: SYNONYMS[lemma] if i in swap else lemma)
        rewrite = _reorder(rng, rewrite, 0.5)
        if _render(rewrite) == _render(clauses):
            rewrite = _reorder(rng, _rebuild(
                clauses, word=lambda i, category, lemma: SYNONYMS.get(lemma, lemma)), 1.0)
    else:
        changed = rng.randrange(len(slots))
        lemmas = [lemma for _, lemma in slots]
        rewrite = _rebuild(clauses, word=lambda i, category, lemma: lemma if i != changed
                           else _different_word(rng, category, lemma, lemmas))
        rewrite = _reorder(rng, rewrite, 0.5)
    source = " ".join(tokens)
    pair = [source, _render(rewrite)]
    rng.shuffle(pair)
    return source, {"sentence1": pair[0], "sentence2": pair[1], "label": label}


# --- stsb -----------------------------------------------------------------------------
def _stsb(rng: random.Random, label) -> Optional[tuple]:
    del label  # scores follow from the number of replaced words
    clauses, tokens = synthetic._sample_sentence(rng)
    slots = _slots(clauses)
    lemmas = [lemma for _, lemma in slots]
    # k from a uniform score: short sentences would otherwise make 0 and 5 most common.
    k = round(len(slots) * rng.random())
    replaced = set(rng.sample(range(len(slots)), k))
    copy = _rebuild(clauses, word=lambda i, category, lemma: lemma if i not in replaced
                    else _different_word(rng, category, lemma, lemmas))
    source, score = " ".join(tokens), 5 * (1 - len(replaced) / len(slots))
    return source, {"sentence1": source, "sentence2": _render(copy), "label": round(score, 4)}


# Each draws (the sampled sentence, an example of the label) or None (draw again).
_GENERATORS = {"cola": _cola, "sst2": _sst2, "mrpc": _mrpc, "stsb": _stsb}


def generate(task: str, seed: int = 0, num_train: int = 2000, num_dev: int = 200) -> Dict[str, List[Example]]:
    """{"train": [...], "dev": [...]} examples of a synthetic task, deterministic given the arguments.

    Each split has as many examples of each class as possible (they differ by
    at most one). ValueError for bad arguments.
    """
    if task not in _GENERATORS:
        raise ValueError(f"no synthetic GLUE task '{task}' (choose from {', '.join(TASKS)})")
    for key, value in dict(num_train=num_train, num_dev=num_dev).items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    rng = random.Random(f"hpo.synthetic_glue.{task}:{seed}")
    seen, splits = set(), {}
    for split, count in (("train", num_train), ("dev", num_dev)):
        # Labels alternate (balanced classes), then the order is shuffled.
        splits[split] = [_draw(rng, task, index % 2, seen) for index in range(count)]
        rng.shuffle(splits[split])
    return splits


def _draw(rng: random.Random, task: str, label: int, seen: set) -> Example:
    for _ in range(10000):  # the language has far more sentences than any split needs
        drawn = _GENERATORS[task](rng, label)
        if drawn is None:
            continue
        key, example = drawn  # the sampled sentence the example was made from
        if key not in seen:
            seen.add(key)
            return example
    raise ValueError(f"could not draw a new {task} example")
