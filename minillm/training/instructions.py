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
"""

from __future__ import annotations

import random

from minillm.data.stories import StoryFacts, synthetic_stories_with_facts
from minillm.data.story_words import article
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
