"""Instructions that a story answers: the fine-tuning data of the instruct family.

An instruct model learns from (instruction, response) pairs. Here the responses are the
synthetic stories of :mod:`minillm.data.stories`, and each instruction is written from what its
own story is about (:class:`minillm.data.stories.StoryFacts`), at one of four levels of detail:

* ``vague``: "Write a story." (no detail at all: the model learns the format);
* ``topic``: "Write a story about a fox." (the hero's kind);
* ``named``: "Write a story about a shy fox named Pip.";
* ``specific``: "Write a short story where a shy fox named Pip loses his red kite and a dog
  named Max helps him find it." (the plot, in the story's own words).

Mixing the levels teaches the model that the more an instruction says, the more it can
rely on it, while a vague one still asks for a story.

Any other story, a real TinyStories paragraph included, has no facts to write from: its instruction
is derived from its own text (:func:`derived_instruction`): the characters' names
(:func:`story_names`) and the content words it uses (:func:`story_words`). :func:`derived_pairs`
makes the fine-tuning pairs of the real paragraphs from them, and ``minillm instructions`` measures
with them (its specific, paraphrased and mismatched conditions).
"""

from __future__ import annotations

import random
import re
from collections import Counter

from minillm.data.stories import StoryFacts, synthetic_stories_with_facts
from minillm.data.story_words import BOY_NAMES, GIRL_NAMES, PET_NAMES, article
from minillm.errors import InputError

VAGUE = ("Write a story.", "Tell me a story.", "Write a short story.", "Write a story for a young child.",
         "Tell me a bedtime story.")
LEVELS = {"vague": 0.2, "topic": 0.2, "named": 0.1, "specific": 0.5}   # share of the examples at each level


def story_instruction(facts: StoryFacts, level: str, rng: random.Random) -> str:
    """An instruction at ``level`` (one of LEVELS) that the story described by ``facts`` answers."""
    hero = f"{facts.hero.a} named {facts.hero.name}"
    if level == "vague":
        return rng.choice(VAGUE)
    if level == "topic":
        return f"Write a story about {article(facts.hero.kind)}."
    if level == "named":
        return f"Write a story about {hero}."
    if level == "specific":
        return rng.choice([f"Write a story about {hero} who {facts.summary}.",
                           f"Write a short story where {hero} {facts.summary}.",
                           f"Tell me a story about {hero} who {facts.summary}."])
    raise InputError(f"level must be one of {', '.join(LEVELS)}; got {level!r}.")


def instruction_pairs(n: int, seed: int) -> list[tuple[str, str, str]]:
    """``n`` (level, instruction, story) triples from ``synthetic_stories_with_facts(n, seed)``,
    the level of each drawn with the shares in LEVELS (a second generator, seeded by ``seed``)."""
    rng = random.Random(seed)
    triples = []
    for story, facts in synthetic_stories_with_facts(n, seed):
        level = rng.choices(list(LEVELS), weights=list(LEVELS.values()))[0]
        triples.append((level, story_instruction(facts, level, rng), story))
    return triples


# ---- instructions for any story: derived from its own words ----------------------------------------------

# Words too common to say what a story is about (compared in lower case).
STOP_WORDS = frozenset("""a an the and or but if then so to of in on at by for with from up down out over under into
about as is was were be been are am do did does have has had he she it they we you i me him her them us my
his its their our your this that these those there here when where what who why how not no yes all any some
one two very too can could would should will said says say went go goes got get came come like liked just
little big day time once upon again back away now than also only more most much many off around
after before because while felt feel saw see wanted want looked look made make thought know knew let
asked told took take gave give found find tried try ran run play happy sad good each every
something everything everyone anything nothing someone thing things lot lots other really even still never
always well okay too next last soon later very both same such own new old end""".split())
NAMES = frozenset(GIRL_NAMES + BOY_NAMES + PET_NAMES)
WORDS = 6                        # content words a derived instruction names (at most)
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


def story_names(story: str) -> list[str]:
    """The characters' names in ``story``, in order of first mention.

    A name is a capitalised word that is never written in lower case in the story, is no stop
    word, and either stands inside a sentence at least once (after a letter, digit or comma:
    "... said Lily", "Tom and Sue") or is a name of the synthetic stories' cast (Lily, Ben...).
    "Suddenly" at the start of a sentence is no name; neither is "Sword" beside "sword"."""
    found = list(_WORD.finditer(story))
    lower = {m.group(0) for m in found if m.group(0).islower()}
    inside = {m.group(0) for m in found if re.search(r"[A-Za-z0-9,]\s*$", story[:m.start()])}
    names = []
    for m in found:
        word = m.group(0)
        if (word[0].isupper() and word.lower() not in lower and word.lower() not in STOP_WORDS and "'" not in word
                and (word in inside or word in NAMES) and word not in names):
            names.append(word)
    return names


def story_words(story: str, n: int = WORDS) -> list[str]:
    """The ``n`` content words that say most about ``story``: written in lower case somewhere in it,
    three letters or more, no stop word, no contraction and no past tense of five letters or more
    ("-ed"). Chosen the most frequent first, then the longest (rarer, and more tokens to predict), then
    the first mentioned; returned in the order the story first uses them, so that an instruction lists
    them as the story will use them. Deterministic: the same story always gives the same words."""
    found = [m.group(0) for m in _WORD.finditer(story)]
    content = [w for w in found if w.islower() and len(w) > 2 and w not in STOP_WORDS and "'" not in w
               and not (w.endswith("ed") and len(w) > 4)]
    counts = Counter(content)
    first = {w: i for i, w in reversed(list(enumerate(content)))}
    return sorted(sorted(counts, key=lambda w: (-counts[w], -len(w), first[w]))[:n], key=first.get)


def _listed(items: list[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else "".join(items)


def derived_instruction(story: str, style: str = "specific") -> str:
    """An instruction for ``story`` built from its own names and words (:func:`story_names`,
    :func:`story_words`), in one of three styles:

    * ``specific``: "Write a story about Lily and Ben. Use the words sword, lucky and park.";
    * ``listed``: "Write a story with Lily and Ben in it, using the words sword, lucky and park."
      (the same content, the second template the instruct family is tuned on);
    * ``paraphrased``: "Here are some words: park, lucky and sword. Tell a tale of Ben and Lily with
      them." (the same names and words in reverse order, in a template no model was tuned on).

    A story with neither names nor content words gets "Write a story.". Raises ValueError for an
    unknown style."""
    names, words = story_names(story), story_words(story)
    if style not in DERIVED_STYLES:
        raise InputError(f"style must be one of {', '.join(DERIVED_STYLES)}; got {style!r}.")
    if not names and not words:
        return VAGUE[0]
    if style == "specific":
        return " ".join(filter(None, [f"Write a story{f' about {_listed(names)}' if names else ''}.",
                                      words and f"Use the words {_listed(words)}."]))
    if style == "listed":
        cast = f" with {_listed(names)} in it" if names else ""
        return f"Write a story{cast}{', using the words ' + _listed(words) if words else ''}."
    cast = f" of {_listed(names[::-1])}" if names else ""
    if not words:
        return f"Tell a tale{cast}."
    return f"Here are some words: {_listed(words[::-1])}. Tell a tale{cast} with them."


DERIVED_STYLES = ("specific", "listed", "paraphrased")
# The tuning mix. Trial runs on tiny-s (300 held-out paragraphs, 3,000 steps): with 40% specific, 15% listed and
# 20% one of the paragraph's sentences ("Write a story with the sentence: ..."), a paragraph's own instruction
# lowered the perplexity by 2.2% however long it trained; with the sentence share given to specific (60%), by
# 3.5%; with listed's given to it too (75%), by 2.9%: copying a sentence did not teach the small models to use a
# list of words, and two templates of the same content did better than one.
DERIVED_LEVELS = {"specific": 0.6, "listed": 0.15, "vague": 0.1, "none": 0.15}


def derived_pairs(stories: list[str], seed: int) -> list[tuple[str, str, str]]:
    """(level, instruction, story) for each of ``stories``, the level drawn with the shares in
    DERIVED_LEVELS (``random.Random(seed)``): a derived instruction (specific or listed), a vague one,
    or none at all (the empty instruction: the "none" of ``minillm instructions`` for an instruct model
    is an empty user turn). Never the paraphrased template: that one measures."""
    rng = random.Random(seed)
    out = []
    for story in stories:
        level = rng.choices(list(DERIVED_LEVELS), weights=list(DERIVED_LEVELS.values()))[0]
        if level == "vague":
            out.append((level, rng.choice(VAGUE), story))
        else:
            out.append((level, "" if level == "none" else derived_instruction(story, level), story))
    return out
