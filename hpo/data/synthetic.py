"""Download-free synthetic translation task.

The source is a small English-like language; the target is an invented SOV
language with postpositions, head-first noun phrases, gender/number agreement
and case suffixes.  Each sentence is sampled as a small syntax tree and rendered
twice (source and target), so the translation is a deterministic function of
the source.  `translate` parses a source sentence back into that tree, so it
always agrees with the corpus.

Target noun phrase, mirrored w.r.t. the source, relative clause first:
    "the big red dogs that saw a cat"  ->  [cat-ACC a-AGR see-PAST-REL] dog-PL red-AGR big-AGR the-AGR
Target clause order: subject  postpositional-phrase  object-ACC  adverb  verb-TENSE-PERSON.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

SPLITS = ("train", "dev", "test")
MAX_TOKENS = 30  # longest source sentence, period included

# ----------------------------------------------------------------- source words
NOUNS = tuple("""
dog cat bird horse cow fox wolf bear lion tiger rabbit mouse snake frog duck goat
pig monkey donkey elephant owl bee ant spider whale shark camel parrot turtle eagle
goose man woman child boy girl teacher doctor farmer baker king queen soldier
sailor student friend mother father sister brother neighbor driver singer painter
writer judge nurse pilot thief guard prince princess lawyer hunter uncle aunt baby
house car boat ship train tree flower garden river mountain lake forest city
village road bridge door window table chair bed box cup bottle book letter key
knife lamp clock hat coat shoe bag basket apple bread cake egg cheese stone ball
kite drum guitar picture map coin ring bell candle wall roof tower castle church
school shop market field hill island beach cave star moon cloud storm bus desk pen
pencil plate spoon bowl blanket pillow mirror ladder wheel bicycle piano radio
tomato carrot orange banana lemon onion umbrella engine rocket computer phone leaf
""".split())
IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "child": "children", "mouse": "mice",
    "goose": "geese", "wolf": "wolves", "knife": "knives", "thief": "thieves",
    "leaf": "leaves", "tomato": "tomatoes",
}
# "base" or "base:past" when the past tense is irregular.
TRANSITIVE_VERBS = tuple("""
see:saw like love hate find:found take:took carry push pull open close watch
follow help call visit build:built break:broke buy:bought sell:sold bring:brought
hold:held eat:ate drink:drank wash hide:hid lift throw:threw catch:caught chase
feed:fed kick kiss touch fix draw:drew write:wrote hear:heard know:knew remember
forget:forgot want keep:kept meet:met teach:taught greet admire protect paint
steal:stole drop:dropped grab:grabbed hug:hugged move borrow collect count
""".split())
INTRANSITIVE_VERBS = tuple("""
run:ran sleep:slept swim:swam sing:sang dance laugh cry jump walk smile fall:fell
fly:flew wait arrive sit:sat stand:stood shout rest play work travel hurry listen
dream breathe cough sneeze wander climb
""".split())
ADJECTIVES = tuple("""
big small old young new red blue green black white yellow brown happy sad angry
tired hungry brave quiet loud tall short long heavy dark bright warm cold hot wet
dry dirty rich poor strong weak kind cruel clever lazy busy famous strange
beautiful ugly gentle wild tiny huge round sharp soft hard sweet fresh empty full
slow calm proud shy lucky wise silly noisy golden wooden pretty purple
""".split())
ADVERBS = tuple("""
quickly slowly quietly loudly often always sometimes carefully happily sadly
suddenly gently finally rarely usually easily proudly calmly bravely politely
eagerly softly never
""".split())
PREPOSITIONS = tuple("in on under near behind with without from into across beside above toward".split())
# surface -> (lemma, numbers it combines with); "this"/"these" share a lemma.
DETERMINERS = {
    "the": ("the", ("sg", "pl")), "a": ("a", ("sg",)), "an": ("a", ("sg",)),
    "this": ("this", ("sg",)), "these": ("this", ("pl",)), "every": ("every", ("sg",)),
    "some": ("some", ("pl",)), "my": ("my", ("sg", "pl")), "your": ("your", ("sg", "pl")),
    "our": ("our", ("sg", "pl")), "their": ("their", ("sg", "pl")), "no": ("no", ("sg", "pl")),
    "many": ("many", ("pl",)), "two": ("two", ("pl",)), "three": ("three", ("pl",)),
    "several": ("several", ("pl",)),
}
# lemma -> (subject form, object form, person-number)
PRONOUNS = {
    "i": ("i", "me", "1sg"), "you": ("you", "you", "2sg"), "he": ("he", "him", "3sg"),
    "she": ("she", "her", "3sg"), "it": ("it", "it", "3sg"), "we": ("we", "us", "1pl"),
    "they": ("they", "them", "3pl"),
}
VERBS = {spec.split(":")[0]: (spec, trans) for group, trans in
         ((TRANSITIVE_VERBS, True), (INTRANSITIVE_VERBS, False)) for spec in group}
TENSES = ("pres", "past", "fut")
PERSONS = ("1sg", "2sg", "3sg", "1pl", "3pl")


def _sibilant_or_y(word: str, extra: tuple[str, ...] = ()) -> str:
    """English -s suffix: boxes, cities, keys, dogs (and goes for verbs)."""
    if word.endswith(("s", "x", "z", "ch", "sh") + extra):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _plural(noun: str) -> str:
    return IRREGULAR_PLURALS.get(noun) or _sibilant_or_y(noun)


@functools.lru_cache(maxsize=None)
def _verb_forms(lemma: str) -> dict[str, str]:
    spec = VERBS[lemma][0]
    base, _, past = spec.partition(":")
    if not past:
        if base.endswith("e"):
            past = base + "d"
        elif base.endswith("y") and base[-2] not in "aeiou":
            past = base[:-1] + "ied"
        else:
            past = base + "ed"
    return {"base": base, "3sg": _sibilant_or_y(base, ("o",)), "past": past}


def _build_source_forms() -> dict[str, tuple]:
    """Every source token -> (category, lemma, feature); rejects ambiguous tokens."""
    entries = [(n, ("noun", n, "sg")) for n in NOUNS]
    entries += [(_plural(n), ("noun", n, "pl")) for n in NOUNS]
    entries += [(f, ("verb", v, k)) for v in VERBS for k, f in _verb_forms(v).items()]
    entries += [(w, ("adj", w, None)) for w in ADJECTIVES]
    entries += [(w, ("adv", w, None)) for w in ADVERBS]
    entries += [(w, ("prep", w, None)) for w in PREPOSITIONS]
    entries += [(w, ("det", lemma, nums)) for w, (lemma, nums) in DETERMINERS.items()]
    entries += [(f, ("pron", p, None)) for p, forms in PRONOUNS.items() for f in dict.fromkeys(forms[:2])]
    entries += [(w, (w, w, None)) for w in ("that", "and", "will", ".")]
    forms: dict[str, tuple] = {}
    for token, analysis in entries:
        if forms.setdefault(token, analysis) != analysis:
            raise AssertionError(f"ambiguous source token {token!r}")
    return forms


SOURCE_FORMS: Mapping[str, tuple] = MappingProxyType(_build_source_forms())
"""Source token -> (category, lemma, feature), e.g. "dogs" -> ("noun", "dog", "pl")."""

# ----------------------------------------------------------------- target lexicon
_ONSETS, _VOWELS, _CODAS = "bdfgklmnprstvz", "aeiou", "lnrsk"
_FUNCTION_LEMMAS = tuple(dict.fromkeys(
    [lemma for lemma, _ in DETERMINERS.values()] + list(PRONOUNS) + list(PREPOSITIONS) + ["and"]))
_CONTENT_LEMMAS = NOUNS + tuple(VERBS) + ADJECTIVES + ADVERBS
GENDERS = 3
SUFFIX_SLOTS = tuple(
    [f"pl{g}" for g in range(GENDERS)] + ["acc", "obl"]
    + [f"{kind}.{g}.{n}" for kind in ("adj", "det") for g in range(GENDERS) for n in ("sg", "pl")]
    + list(TENSES) + list(PERSONS) + ["rel.sg", "rel.pl"])
_SUFFIX_POOL = tuple(sorted({v + c for v in _VOWELS for c in "nmlrsktv"}
                            | {c + v for v in _VOWELS for c in "nmlrsktv"}))


@dataclass(frozen=True)
class Lexicon:
    """Seed-dependent target side: a pseudo-word stem per source lemma, a gender
    class per noun and the inflectional suffixes (keys of `SUFFIX_SLOTS`)."""
    seed: int
    stems: Mapping[str, str]
    gender: Mapping[str, int]
    suffixes: Mapping[str, str]


def _pseudo_word(rng: random.Random, used: set[str], syllables: int) -> str:
    while True:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
        if rng.random() < 0.3:
            word += rng.choice(_CODAS)
        if word not in used:
            used.add(word)
            return word


@functools.lru_cache(maxsize=16)
def lexicon(seed: int = 0) -> Lexicon:
    """The target lexicon for `seed` (deterministic; stems are all distinct)."""
    rng = random.Random(f"hpo.synthetic.lexicon:{seed}")
    used: set[str] = set()
    stems = {lemma: _pseudo_word(rng, used, rng.choice((2, 2, 3))) for lemma in _CONTENT_LEMMAS}
    stems.update({lemma: _pseudo_word(rng, used, rng.choice((1, 2))) for lemma in _FUNCTION_LEMMAS})
    gender = {noun: rng.randrange(GENDERS) for noun in NOUNS}
    suffixes = dict(zip(SUFFIX_SLOTS, rng.sample(_SUFFIX_POOL, len(SUFFIX_SLOTS))))
    return Lexicon(seed, MappingProxyType(stems), MappingProxyType(gender), MappingProxyType(suffixes))


# ----------------------------------------------------------------- syntax trees
@dataclass(frozen=True)
class NP:
    """Noun phrase: a pronoun, or [det] adjs* noun [relative clause]."""
    head: str
    number: str
    pronoun: bool = False
    det: str | None = None
    adjs: tuple[str, ...] = ()
    rel: Clause | None = None


@dataclass(frozen=True)
class Clause:
    """A clause; `subj` is None in a relative clause (the head noun is its subject)."""
    subj: NP | None
    verb: str
    tense: str
    obj: NP | None = None
    adv: str | None = None
    pp: tuple[str, NP] | None = None


def _person(np: NP) -> str:
    return PRONOUNS[np.head][2] if np.pronoun else "3" + np.number


_PRONOUN_LEMMAS = tuple(PRONOUNS)
_P_PRONOUN = {"subj": 0.3, "obj": 0.15, "pp": 0.1}
_DETS_FOR = {n: sorted({lemma for lemma, nums in DETERMINERS.values() if n in nums}) for n in ("sg", "pl")}
_DET_SURFACE = {(lemma, n): w for w, (lemma, nums) in DETERMINERS.items() if w != "an" for n in nums}


@dataclass(frozen=True)
class Words:
    """The content words a corpus draws from (a smaller lexicon is learnt in fewer steps)."""
    nouns: tuple[str, ...] = NOUNS
    transitive: tuple[str, ...] = TRANSITIVE_VERBS
    intransitive: tuple[str, ...] = INTRANSITIVE_VERBS
    adjectives: tuple[str, ...] = ADJECTIVES
    adverbs: tuple[str, ...] = ADVERBS

    @classmethod
    def first(cls, n: int | None) -> "Words":
        """At most the first `n` words of each category (all of them for None)."""
        return cls(*(words[:n] for words in (NOUNS, TRANSITIVE_VERBS, INTRANSITIVE_VERBS, ADJECTIVES, ADVERBS)))


ALL_WORDS = Words()


def _sample_np(rng: random.Random, role: str, allow_rel: bool, words: Words = ALL_WORDS) -> NP:
    if rng.random() < _P_PRONOUN[role]:
        lemma = rng.choice(_PRONOUN_LEMMAS)
        return NP(lemma, PRONOUNS[lemma][2][1:], pronoun=True)
    number = "pl" if rng.random() < 0.4 else "sg"
    det = None
    if number == "sg" or rng.random() < 0.7:  # bare plurals are grammatical, bare singulars not
        det = "the" if rng.random() < 0.4 else rng.choice(_DETS_FOR[number])
    r = rng.random()  # 0, 1 or 2 distinct adjectives
    adjs = () if r < 0.45 else (rng.choice(words.adjectives),) if r < 0.8 else tuple(rng.sample(words.adjectives, 2))
    rel = _sample_clause(rng, relative=True, words=words) if allow_rel and rng.random() < 0.15 else None
    return NP(rng.choice(words.nouns), number, det=det, adjs=adjs, rel=rel)


def _sample_clause(rng: random.Random, relative: bool = False, words: Words = ALL_WORDS) -> Clause:
    subj = None if relative else _sample_np(rng, "subj", allow_rel=True, words=words)
    transitive = rng.random() < 0.65
    verb = rng.choice(words.transitive if transitive else words.intransitive).split(":")[0]
    obj = _sample_np(rng, "obj", allow_rel=not relative, words=words) if transitive else None
    adv = rng.choice(words.adverbs) if rng.random() < (0.15 if relative else 0.3) else None
    pp = None
    if not relative and rng.random() < 0.35:  # PPs only in main clauses keeps parsing unambiguous
        pp = (rng.choice(PREPOSITIONS), _sample_np(rng, "pp", allow_rel=False, words=words))
    return Clause(subj, verb, rng.choice(TENSES), obj, adv, pp)


def _sample_sentence(rng: random.Random, words: Words = ALL_WORDS) -> tuple[tuple[Clause, ...], list[str]]:
    """A sentence tree and its source tokens (at most MAX_TOKENS)."""
    while True:
        clauses = tuple(_sample_clause(rng, words=words) for _ in range(2 if rng.random() < 0.3 else 1))
        tokens = _source_tokens(clauses)
        if len(tokens) <= MAX_TOKENS:
            return clauses, tokens


# ----------------------------------------------------------------- rendering
def _src_np(np: NP, role: str) -> list[str]:
    if np.pronoun:
        return [PRONOUNS[np.head][0 if role == "subj" else 1]]
    words = list(np.adjs) + [np.head if np.number == "sg" else _plural(np.head)]
    if np.det:
        det = _DET_SURFACE[(np.det, np.number)]
        words.insert(0, "an" if det == "a" and words[0][0] in "aeiou" else det)
    if np.rel:
        words += ["that"] + _src_clause(np.rel, head=np)
    return words


def _src_clause(c: Clause, head: NP | None = None) -> list[str]:
    words = _src_np(c.subj, "subj") if c.subj else []
    words += ["will"] if c.tense == "fut" else []
    words += [c.adv] if c.adv else []
    person = _person(c.subj or head)
    form = {"fut": "base", "past": "past"}.get(c.tense, "3sg" if person == "3sg" else "base")
    words.append(_verb_forms(c.verb)[form])
    words += _src_np(c.obj, "obj") if c.obj else []
    words += [c.pp[0]] + _src_np(c.pp[1], "pp") if c.pp else []
    return words


def _source_tokens(clauses: tuple[Clause, ...]) -> list[str]:
    words = _src_clause(clauses[0])
    for clause in clauses[1:]:
        words += ["and"] + _src_clause(clause)
    return words + ["."]


def _tgt_np(lex: Lexicon, np: NP, case: str) -> list[str]:
    case_suffix = "" if case == "nom" else lex.suffixes[case]
    if np.pronoun:
        return [lex.stems[np.head] + case_suffix]
    g, n = lex.gender[np.head], np.number
    words = _tgt_clause(lex, np.rel, head=np) if np.rel else []
    words.append(lex.stems[np.head] + (lex.suffixes[f"pl{g}"] if n == "pl" else "") + case_suffix)
    words += [lex.stems[a] + lex.suffixes[f"adj.{g}.{n}"] for a in reversed(np.adjs)]
    words += [lex.stems[np.det] + lex.suffixes[f"det.{g}.{n}"]] if np.det else []
    return words


def _tgt_clause(lex: Lexicon, c: Clause, head: NP | None = None) -> list[str]:
    words = _tgt_np(lex, c.subj, "nom") if c.subj else []
    words += _tgt_np(lex, c.pp[1], "obl") + [lex.stems[c.pp[0]]] if c.pp else []
    words += _tgt_np(lex, c.obj, "acc") if c.obj else []
    words += [lex.stems[c.adv]] if c.adv else []
    agreement = f"rel.{head.number}" if head else _person(c.subj)
    words.append(lex.stems[c.verb] + lex.suffixes[c.tense] + lex.suffixes[agreement])
    return words


def _target_tokens(lex: Lexicon, clauses: tuple[Clause, ...]) -> list[str]:
    words = _tgt_clause(lex, clauses[0])
    for clause in clauses[1:]:
        words += [lex.stems["and"]] + _tgt_clause(lex, clause)
    return words + ["."]


# ----------------------------------------------------------------- parsing
class _Parser:
    """Recursive-descent parser for the source grammar (inverse of `_source_tokens`)."""

    def __init__(self, source: str):
        self.tokens, self.i = source.split(" "), 0

    def peek(self) -> tuple:
        tok = self.tokens[self.i] if self.i < len(self.tokens) else None
        return SOURCE_FORMS.get(tok, ("?", tok, None))

    def take(self, *categories: str) -> tuple:
        analysis = self.peek()
        if analysis[0] not in categories:
            raise ValueError(f"expected {'/'.join(categories)} at token {self.i}, got {analysis[1]!r}")
        self.i += 1
        return analysis

    def sentence(self) -> tuple[Clause, ...]:
        clauses = [self.clause()]
        while self.peek()[0] == "and":
            self.take("and")
            clauses.append(self.clause())
        self.take(".")
        if self.i != len(self.tokens):
            raise ValueError("tokens after the final period")
        return tuple(clauses)

    def clause(self, head: NP | None = None) -> Clause:
        subj = None if head else self.np("subj", allow_rel=True)
        future = self.peek()[0] == "will" and bool(self.take("will"))
        adv = self.take("adv")[1] if self.peek()[0] == "adv" else None
        _, verb, form = self.take("verb")
        tense = "fut" if future else ("past" if form == "past" else "pres")
        obj = self.np("obj", allow_rel=head is None) if VERBS[verb][1] else None
        pp = None
        if head is None and self.peek()[0] == "prep":
            pp = (self.take("prep")[1], self.np("pp", allow_rel=False))
        return Clause(subj, verb, tense, obj, adv, pp)

    def np(self, role: str, allow_rel: bool) -> NP:
        if self.peek()[0] == "pron":
            lemma = self.take("pron")[1]
            return NP(lemma, PRONOUNS[lemma][2][1:], pronoun=True)
        _, det, numbers = self.take("det") if self.peek()[0] == "det" else (None, None, ("pl",))
        adjs = []
        while self.peek()[0] == "adj":
            adjs.append(self.take("adj")[1])
        _, noun, number = self.take("noun")
        if number not in numbers:  # "a dogs", "these dog", bare "dog"
            raise ValueError(f"{number} noun {noun!r} does not fit its determiner")
        np = NP(noun, number, det=det, adjs=tuple(adjs))
        if allow_rel and self.peek()[0] == "that":
            self.take("that")
            np = NP(noun, number, det=det, adjs=tuple(adjs), rel=self.clause(head=np))
        return np


def parse(source: str) -> tuple[Clause, ...]:
    """Parse a source sentence into clauses; ValueError if it is outside the grammar."""
    if not isinstance(source, str):
        raise ValueError("source must be a string")
    clauses = _Parser(source).sentence()
    # Re-rendering catches agreement errors ("he see"), a/an, this/these, case of pronouns.
    if " ".join(_source_tokens(clauses)) != source:
        raise ValueError(f"not a well-formed source sentence: {source!r}")
    return clauses


def translate(source: str, seed: int = 0) -> str:
    """The target sentence the generator pairs with `source` (ValueError outside the grammar)."""
    return " ".join(_target_tokens(lexicon(seed), parse(source)))


# ----------------------------------------------------------------- corpus
def generate_corpus(seed: int = 0, num_train: int = 20000, num_dev: int = 500,
                    num_test: int = 500, words_per_category: int | None = None
                    ) -> dict[str, list[tuple[str, str]]]:
    """{"train"|"dev"|"test": [(source, target), ...]}, deterministic given the arguments.

    `words_per_category` keeps the first n nouns, verbs (of each kind), adjectives
    and adverbs: a smaller language that a small budget can learn.
    No source sentence occurs twice in the whole corpus. ValueError for non-positive counts.
    """
    if words_per_category is not None and words_per_category < 2:
        raise ValueError(f"words_per_category must be at least 2, got {words_per_category!r}")
    words = Words.first(words_per_category)
    counts = dict(zip(SPLITS, (num_train, num_dev, num_test)))
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"num_{name} must be a positive int, got {n!r}")
    lex = lexicon(seed)
    rng = random.Random(f"hpo.synthetic.corpus:{seed}")
    total = sum(counts.values())
    pairs: dict[str, str] = {}
    for _ in range(20 * total + 1000):  # bound: the language has far more sentences than this
        if len(pairs) == total:
            break
        clauses, tokens = _sample_sentence(rng, words)
        source = " ".join(tokens)
        if source not in pairs:
            pairs[source] = " ".join(_target_tokens(lex, clauses))
    if len(pairs) < total:
        raise ValueError(f"could not draw {total} distinct sentences")
    # Shuffle after de-duplication so that every split has the same length distribution.
    items = list(pairs.items())
    rng.shuffle(items)
    corpus, start = {}, 0
    for name in SPLITS:
        corpus[name] = items[start:start + counts[name]]
        start += counts[name]
    return corpus
