"""A curated lexicon of English epistemic markers (hedges and boosters) for `lexicon` extraction.

Written for this project from the usual classes of epistemic expressions (modal adverbs, modal
adjectives in "it is ... that" frames, first-person verbs of belief, evidential "seems", fixed
phrases of doubt and certainty). Guideline the lexicon and the labeled test set follow:

- A marker expresses how sure the *speaker* is of the claim. Quantity approximators ("about",
  "roughly"), frequency adverbs ("usually"), emphasis ("actually", "in fact"), third-person beliefs
  ("many people think") and root modals ("he could swim") are not markers.
- Ambiguous bare words are left out and only their unambiguous frames are listed: "sure" ("Sure,
  here it is", "make sure"), "certain" ("a certain king"), "possible" ("the best possible"),
  "could", "must", "should".
- A trailing complementizer "that" is not part of a marker ("it is almost certain").
- Phrases are stored normalized: lowercase, contractions expanded ("I'm" -> "i am", "don't" ->
  "do not", "can't"/"cannot" -> "can not"), so one entry matches both spellings.

Entries come from a hand-written list (`HAND_ENTRIES`) and from small frames that combine a subject
("i am", "it is"), an optional negator and an optional degree word with a modal adjective
(`_frame_entries`); `lexicon()` returns the union. Negation handling is in `engine.score.rules.extract`.
"""

from __future__ import annotations

from functools import lru_cache

HEDGE = "hedge"
BOOSTER = "booster"

# Hand-written entries: (normalized phrase, kind). Lexicalised negatives are entries of their own.
HAND_ENTRIES: tuple[tuple[str, str], ...] = (
    # modal adverbs of possibility / probability
    ("probably", HEDGE),
    ("possibly", HEDGE),
    ("perhaps", HEDGE),
    ("maybe", HEDGE),
    ("likely", HEDGE),
    ("unlikely", HEDGE),
    ("presumably", HEDGE),
    ("apparently", HEDGE),
    ("seemingly", HEDGE),
    ("arguably", HEDGE),
    ("conceivably", HEDGE),
    ("potentially", HEDGE),
    ("supposedly", HEDGE),
    ("reportedly", HEDGE),
    ("allegedly", HEDGE),
    ("plausibly", HEDGE),
    ("most probably", HEDGE),
    ("very probably", HEDGE),
    ("quite probably", HEDGE),
    ("quite possibly", HEDGE),
    ("very possibly", HEDGE),
    ("most likely", HEDGE),
    ("more likely", HEDGE),
    ("less likely", HEDGE),
    ("more likely than not", HEDGE),
    ("in all likelihood", HEDGE),
    ("in all probability", HEDGE),
    ("not necessarily", HEDGE),
    # modal verbs (epistemic readings only)
    ("may", HEDGE),
    ("might", HEDGE),
    ("could be", HEDGE),
    ("could have", HEDGE),
    ("may have", HEDGE),
    ("might have", HEDGE),
    ("would probably", HEDGE),
    # first-person belief and guess
    ("i think", HEDGE),
    ("i believe", HEDGE),
    ("i guess", HEDGE),
    ("i suppose", HEDGE),
    ("i assume", HEDGE),
    ("i suspect", HEDGE),
    ("i presume", HEDGE),
    ("i reckon", HEDGE),
    ("i imagine", HEDGE),
    ("i feel", HEDGE),
    ("i would say", HEDGE),
    ("i would think", HEDGE),
    ("i would guess", HEDGE),
    ("i would imagine", HEDGE),
    ("i would assume", HEDGE),
    ("i would estimate", HEDGE),
    ("i am guessing", HEDGE),
    ("i am thinking", HEDGE),
    ("i tend to think", HEDGE),
    ("i do not think", HEDGE),
    ("i do not believe", HEDGE),
    ("i do not know", HEDGE),
    ("i do not really know", HEDGE),
    ("i am not aware", HEDGE),
    ("i have no idea", HEDGE),
    ("i doubt", HEDGE),
    ("i can not be sure", HEDGE),
    ("i can not be certain", HEDGE),
    ("i can not say for sure", HEDGE),
    ("i can not say for certain", HEDGE),
    ("i could be wrong", HEDGE),
    ("i might be wrong", HEDGE),
    ("i may be wrong", HEDGE),
    ("i could be mistaken", HEDGE),
    ("i might be mistaken", HEDGE),
    ("i may be mistaken", HEDGE),
    ("if i am not mistaken", HEDGE),
    ("if i remember correctly", HEDGE),
    ("if i recall correctly", HEDGE),
    ("if memory serves", HEDGE),
    ("as far as i know", HEDGE),
    ("as far as i can tell", HEDGE),
    ("as far as i am aware", HEDGE),
    ("to my knowledge", HEDGE),
    ("to the best of my knowledge", HEDGE),
    ("from what i know", HEDGE),
    ("from what i recall", HEDGE),
    ("in my opinion", HEDGE),
    ("in my view", HEDGE),
    ("my guess is", HEDGE),
    ("my best guess", HEDGE),
    ("my best guess is", HEDGE),
    ("best guess", HEDGE),
    ("correct me if i am wrong", HEDGE),
    # evidential "seems"
    ("it seems", HEDGE),
    ("it would seem", HEDGE),
    ("seems to", HEDGE),
    ("seem to", HEDGE),
    ("it appears", HEDGE),
    ("appears to", HEDGE),
    ("appear to", HEDGE),
    ("it looks like", HEDGE),
    ("it sounds like", HEDGE),
    # fixed phrases of doubt and chance
    ("hard to say", HEDGE),
    ("difficult to say", HEDGE),
    ("hard to tell", HEDGE),
    ("difficult to tell", HEDGE),
    ("impossible to say", HEDGE),
    ("chances are", HEDGE),
    ("there is a chance", HEDGE),
    ("there is a good chance", HEDGE),
    ("there is a small chance", HEDGE),
    ("a good chance", HEDGE),
    ("there is some doubt", HEDGE),
    ("not clear", HEDGE),
    ("unclear", HEDGE),
    ("doubtful", HEDGE),
    ("uncertain", HEDGE),
    ("unsure", HEDGE),
    ("not sure", HEDGE),
    ("not certain", HEDGE),
    ("not confident", HEDGE),
    ("to some extent", HEDGE),
    ("in some sense", HEDGE),
    ("it is possible", HEDGE),
    ("it is plausible", HEDGE),
    ("plausible", HEDGE),
    ("probable", HEDGE),
    ("improbable", HEDGE),
    ("with some confidence", HEDGE),
    ("with moderate confidence", HEDGE),
    ("with low confidence", HEDGE),
    # boosters: adverbs
    ("certainly", BOOSTER),
    ("definitely", BOOSTER),
    ("surely", BOOSTER),
    ("undoubtedly", BOOSTER),
    ("doubtless", BOOSTER),
    ("clearly", BOOSTER),
    ("obviously", BOOSTER),
    ("evidently", BOOSTER),
    ("undeniably", BOOSTER),
    ("unquestionably", BOOSTER),
    ("indisputably", BOOSTER),
    ("absolutely", BOOSTER),
    ("almost certainly", HEDGE),
    ("most certainly", BOOSTER),
    ("almost definitely", HEDGE),
    ("almost surely", HEDGE),
    ("of course", BOOSTER),
    ("for sure", BOOSTER),
    ("for certain", BOOSTER),
    ("with certainty", BOOSTER),
    ("with confidence", BOOSTER),
    ("with high confidence", BOOSTER),
    ("with great confidence", BOOSTER),
    ("with complete confidence", BOOSTER),
    # boosters: phrases
    ("without a doubt", BOOSTER),
    ("without any doubt", BOOSTER),
    ("without doubt", BOOSTER),
    ("without question", BOOSTER),
    ("beyond doubt", BOOSTER),
    ("beyond a doubt", BOOSTER),
    ("beyond any doubt", BOOSTER),
    ("beyond question", BOOSTER),
    ("no doubt", BOOSTER),
    ("there is no doubt", BOOSTER),
    ("i have no doubt", BOOSTER),
    ("i have no doubts", BOOSTER),
    ("i know", BOOSTER),
    ("i am convinced", BOOSTER),
    ("it is clear", BOOSTER),
    ("it is evident", BOOSTER),
    ("it is obvious", BOOSTER),
    ("it is undeniable", BOOSTER),
    ("it is well established", BOOSTER),
    ("it is safe to say", BOOSTER),
    ("safe to say", BOOSTER),
    ("there is no question", BOOSTER),
    ("i can say with certainty", BOOSTER),
    ("i can confirm", BOOSTER),
    ("i guarantee", BOOSTER),
)

# Degree words that may modify a modal adjective ("fairly sure", "highly likely").
DEGREE_WORDS: tuple[str, ...] = (
    "fairly",
    "very",
    "quite",
    "pretty",
    "reasonably",
    "somewhat",
    "highly",
    "extremely",
    "absolutely",
    "completely",
    "totally",
    "entirely",
    "fully",
    "100%",
    "relatively",
    "moderately",
    "almost",
    "nearly",
    "rather",
    "really",
    "so",
    "too",
    "a bit",
    "a little",
    "most",
)

# Modal adjectives and the kind of their positive form.
_CERTAINTY_ADJ = {"sure": BOOSTER, "certain": BOOSTER, "confident": BOOSTER, "positive": BOOSTER}
_DOUBT_ADJ = {"unsure": HEDGE, "uncertain": HEDGE, "doubtful": HEDGE}
_PROBABILITY_ADJ = {
    "likely": HEDGE,
    "unlikely": HEDGE,
    "probable": HEDGE,
    "improbable": HEDGE,
    "possible": HEDGE,
    "plausible": HEDGE,
}
_IT_ADJ = {"certain": BOOSTER, "clear": BOOSTER, "unclear": HEDGE, "doubtful": HEDGE}
_FIRST_PERSON = ("i am", "i feel", "we are")
NEGATORS: tuple[str, ...] = ("not", "never", "hardly", "scarcely")


def _frame_entries() -> dict[str, str]:
    """Subject x optional negator x optional degree word x modal adjective."""
    out: dict[str, str] = {}
    degrees = ("", *DEGREE_WORDS)
    for adj, kind in {**_CERTAINTY_ADJ, **_DOUBT_ADJ}.items():
        for subject in _FIRST_PERSON:
            for neg in ("", "not"):
                for deg in degrees:
                    phrase = " ".join(w for w in (subject, neg, deg, adj) if w)
                    out[phrase] = HEDGE if neg else kind
        if adj == "positive":
            continue  # bare "very positive" is usually evaluative, not epistemic
        for deg in DEGREE_WORDS:  # bare "fairly sure", "almost certain"
            out[f"{deg} {adj}"] = kind
    for adj, kind in {**_PROBABILITY_ADJ, **_IT_ADJ}.items():
        for neg in ("", "not"):
            for deg in degrees:
                phrase = " ".join(w for w in ("it is", neg, deg, adj) if w)
                out[phrase] = HEDGE if neg else kind
    for adj, kind in _PROBABILITY_ADJ.items():
        if adj == "possible":
            continue  # bare "very possible" is too rare to be worth the risk
        for deg in DEGREE_WORDS:
            out[f"{deg} {adj}"] = kind
    # Degree words make "almost certain(ly)" hedges, not boosters.
    for phrase in list(out):
        if any(f" {w} " in f" {phrase} " for w in ("almost", "nearly", "fairly", "reasonably")):
            if out[phrase] == BOOSTER:
                out[phrase] = HEDGE
    return out


@lru_cache(maxsize=1)
def lexicon() -> dict[str, str]:
    """The full lexicon: normalized phrase -> kind ("hedge" or "booster").

    Returns:
        A dict with the hand-written entries and the frame expansions (hand entries win).
    """
    out = _frame_entries()
    out.update(dict(HAND_ENTRIES))
    return out
