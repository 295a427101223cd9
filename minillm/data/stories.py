"""Synthetic children's stories from a small template grammar: training text for tiny models.

TinyStories (Eldan and Li, 2023) showed that a model of a few million parameters can learn
to write fluent, simple English if its training text is simple: stories a young child could
follow, with a small vocabulary and a small set of plots. This module writes such stories
itself, with no network and no data set, from a hand-written grammar:

* a **cast**: a hero and a friend, each a kind of character (a little girl, a fox, a
  robot...) with a name, pronouns and a trait;
* a **setting**: a place, a time of day or weather, an object that matters;
* a **plot**: one of a dozen shapes (something is lost and found, a fear is faced, a skill is
  learned by trying again, a mistake is owned up to, a toy is shared...), each a few
  paragraphs with dialogue, whose sentences are picked from several variants;
* an **ending** with a small lesson.

Every choice is drawn from a ``random.Random`` seeded by the caller, so the same ``seed``
always gives the same stories, and the first k stories of ``synthetic_stories(n, seed)``
are the same for every n >= k. The text is written for this project, like the bundled
stories, and the same in spirit: short sentences, words a four-year-old knows.

The grammar is small, so a model can learn most of it: that is the point. Its stories
repeat far more than real text does, and a model trained on them knows little else.

Callers use :func:`synthetic_stories` (the texts), :func:`synthetic_stories_with_facts` (each with
its :class:`StoryFacts`, what an instruction asking for it would say) and :func:`synthetic_story`;
the words come from :mod:`minillm.data.story_words`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from minillm.data.story_words import (BOY_NAMES, COLORS, FEARS, FEELINGS_BAD, FEELINGS_GOOD, FOODS, GAMES,
                                      GIRL_NAMES, HIDING, HOW, INTRANSITIVE, KINDS, LESSONS, MISTAKES, NATURE,
                                      NUMBERS, OBJECTS, PET_NAMES, PLACES, SAYS, SIZES, SKILLS, TEXTURES, THINGS,
                                      TRAITS, TRANSITIVE, TROUBLES, WEATHER, WHEN, WHERE, Character, article,
                                      capitalized)
from minillm.errors import InputError


class _Story:
    """One story being written: the random source, its cast and a few helpers."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.hero = self.character()
        self.friend: Character | None = self.character(avoid=self.hero.name)
        self.place = rng.choice(PLACES)
        self.when = rng.choice(WEATHER)

    def pick(self, options):
        return self.rng.choice(options)

    def maybe(self, p: float = 0.5) -> bool:
        return self.rng.random() < p

    def character(self, avoid: str = "") -> Character:
        kind, pronoun = self.pick(KINDS)
        if pronoun == "any":
            pronoun = self.pick(["he", "she"])
        if kind in ("girl", "boy"):
            names = GIRL_NAMES if kind == "girl" else BOY_NAMES
        else:
            names = PET_NAMES + (GIRL_NAMES if pronoun == "she" else BOY_NAMES)
        name = self.pick([n for n in names if n != avoid])
        trait = self.pick(TRAITS)
        if pronoun == "he":
            return Character(name, kind, trait, "he", "him", "his")
        return Character(name, kind, trait, "she", "her", "her")

    def say(self, who: Character, words: str) -> str:
        """A line of dialogue, the speaker before or after it."""
        verb = "asked" if words.endswith("?") else self.pick([v for v in SAYS if v != "asked"])
        if self.maybe(0.5):
            end = "," if words[-1] == "." else ""
            return f'"{words[:-1] if end else words}{end}" {verb} {who.name}.'
        return f'{who.name} {verb}, "{words}"'

    def opening(self) -> str:
        h = self.hero
        return self.pick([
            f"Once upon a time, there was {h.a} named {h.name}.",
            f"Once upon a time, near {self.place}, there lived {h.a} named {h.name}.",
            f"There was once {h.a} called {h.name}.",
            f"{h.name} was {h.a} who lived near {self.place}.",
            f"In a little house by {self.place}, there lived {h.a} named {h.name}.",
            f"Once there was {h.a}. {capitalized(h.his)} name was {h.name}.",
        ])

    def describe(self) -> list[str]:
        """Zero to two sentences about the hero, for variety of length."""
        h = self.hero
        options = [
            f"{h.name} liked to play in {self.place} every day.",
            f"{capitalized(h.he)} had {article(self.pick(COLORS) + ' ' + self.pick(OBJECTS))} that {h.he} loved very much.",
            f"{h.name} loved {self.pick(FOODS)}s more than anything.",
            f"Everyone said that {h.name} was very {self.pick(['kind', 'funny', 'clever', 'gentle', 'brave'])}.",
            f"{capitalized(h.he)} lived with {h.his} {self.pick(['mom', 'dad', 'grandma', 'grandpa', 'big sister', 'big brother'])}.",
            f"Every morning, {h.name} {self.pick(['sang a song', 'ate a big breakfast', 'looked out of the window', 'ran around the garden'])}.",
        ]
        return self.rng.sample(options, self.rng.choice([0, 1, 1, 2, 3]))

    def scene(self) -> str:
        """A free sentence that moves nothing along: what someone did, saw or felt, or the weather."""
        h = self.hero
        who = self.pick([h.name, h.name, h.he] + ([self.friend.name] if self.friend else []))
        thing = f"{self.pick(SIZES + TEXTURES + COLORS)} {self.pick(THINGS)}"
        return self.pick([
            f"{self.pick(WHEN)}, {who} {self.pick(TRANSITIVE)} {article(thing)} {self.pick(WHERE)}.",
            f"{capitalized(who)} {self.pick(INTRANSITIVE)} {self.pick(HOW)}.",
            f"{capitalized(who)} {self.pick(INTRANSITIVE)} {self.pick(WHERE)}.",
            f"{capitalized(who)} {self.pick(TRANSITIVE)} the {self.pick(THINGS)} and {self.pick(INTRANSITIVE)}.",
            f"{capitalized(who)} saw {article(self.pick(SIZES + TEXTURES) + ' ' + self.pick(KINDS)[0])} {self.pick(WHERE)}.",
            self.pick(NATURE),
            self.pick(NATURE),
        ])

    def meet(self) -> str:
        """Introduces the friend, for plots where the friend is there from the start."""
        h, f = self.hero, self.friend
        return self.pick([
            f"{h.name}'s best friend was {f.a} named {f.name}.",
            f"{h.name} had a friend, {f.a} called {f.name}.",
            f"{capitalized(f.a)} named {f.name} lived next door, and {f.he} and {h.name} were good friends.",
        ])

    def epilogue(self) -> list[str]:
        """Sometimes a short last paragraph about the next day."""
        h, f = self.hero, self.friend
        who = f"{f.name} and {h.him}self" if f is not None else f"{h.him}self"
        return self.pick([
            [f"The next day, {h.name} told {h.his} {self.pick(['mom', 'dad', 'grandma', 'teacher'])} all about it.",
             self.say(h, "It was the best day ever."), "Everyone smiled."],
            [f"Later, {h.name} drew a picture of {who}.",
             f"{capitalized(h.he)} put it on the wall above {h.his} bed."],
            [(f"When {h.name} told the story to {h.his} {self.pick(['little brother', 'little sister', 'cousin'])}, "
              f"{h.he} made it a little longer and a little funnier."), "But the best part was true."],
        ])

    def ending(self, lesson: str) -> str:
        h, f = self.hero, self.friend
        options = [
            f"{h.name} went home with a big smile.",
            f"That night, {h.name} fell asleep feeling {self.pick(FEELINGS_GOOD)}.",
            f"And {h.name} never forgot that day.",
            f"After that, {h.name} was never {self.pick(FEELINGS_BAD)} again.",
        ]
        if f is not None:
            options += [f"From that day on, {h.name} and {f.name} were the best of friends.",
                        f"{h.name} and {f.name} played until the sun went down."]
        close = self.pick(options)
        if self.maybe(0.6):
            close += " " + self.pick(LESSONS[lesson])
        return close

    # ---- the plots: each returns paragraphs (lists of sentences) and a lesson key ----

    def lost(self):
        h, f, thing = self.hero, self.friend, f"{self.pick(COLORS)} {self.pick(OBJECTS)}"
        spot = self.pick(HIDING)
        self.summary = f"loses {h.his} {thing} and {f.a} named {f.name} helps {h.him} find it"
        return [
            [self.opening(), *self.describe(),
             f"{self.when}, {h.name} took {h.his} {thing} to {self.place}.",
             f"{capitalized(h.he)} played with it for a long time.",
             f"But when it was time to go home, the {thing} was gone!"],
            [f"{h.name} looked everywhere.", f"{capitalized(h.he)} felt very {self.pick(FEELINGS_BAD)}.",
             self.say(h, f"Where is my {thing.split()[-1]}?"),
             f"Then {h.name} saw {f.a} named {f.name}.",
             self.say(f, "Why are you sad?"),
             self.say(h, f"I lost my {thing}."),
             self.say(f, "I will help you look.")],
            [f"{h.name} and {f.name} looked together.",
             *([f"They looked {self.pick(HIDING)}, but it was not there."] if self.maybe() else []),
             f"At last, {f.name} found the {thing} {spot}.",
             self.say(h, "Thank you!"),
             self.ending("lost")],
        ], "lost"

    def share(self):
        h, f, food = self.hero, self.friend, self.pick(FOODS)
        self.summary = f"shares {h.his} {food} with {f.a} named {f.name} who has no food"
        return [
            [self.opening(), *self.describe(),
             f"{self.when}, {h.name} had {article(food)} for lunch.",
             f"It looked very {self.pick(['yummy', 'tasty', 'sweet', 'good'])}."],
            [f"Then {h.name} saw {f.a} named {f.name} sitting alone.",
             f"{f.name} did not have any food.", f"{capitalized(f.he)} looked {self.pick(FEELINGS_BAD)}.",
             f"{h.name} looked at {h.his} {food}. {capitalized(h.he)} was very hungry."],
            [f'"I can share," {h.name} thought.',
             f"{capitalized(h.he)} broke the {food} in half and gave one half to {f.name}.",
             self.say(f, "Thank you! You are so kind."),
             "They ate together and talked and laughed.",
             f"{h.name} thought that half {article(food)} with a friend was better than a whole one alone.",
             self.ending("share")],
        ], "share"

    def fear(self):
        h, f = self.hero, self.friend
        fear, short = self.pick(FEARS)
        self.summary = f"is afraid of {fear} until {h.his} friend {f.name} helps {h.him} be brave"
        return [
            [self.opening(), *self.describe(),
             f"{h.name} was afraid of {fear}.",
             f"Every time {h.he} saw the {short}, {h.he} {self.pick(['hid', 'ran away', 'closed ' + h.his + ' eyes', 'shook'])}."],
            [f"{self.when}, {h.name} and {h.his} friend {f.name} went to {self.place}.",
             self.say(f, f"Come on, {h.name}! It is fun!"),
             self.say(h, f"I cannot. I am scared of the {short}."),
             f"{f.name} took {h.name}'s hand.",
             self.say(f, "I will stay with you. We can do it together.")],
            [f"{h.name} took a deep breath.", f"{capitalized(h.he)} counted to {self.pick(NUMBERS)}.",
             f"Then {h.he} tried, one little step at a time.",
             "It was not so bad! It was even fun.",
             self.say(h, "I did it!"), f"{h.name} felt very proud.",
             self.ending("fear")],
        ], "fear"

    def skill(self):
        h, f = self.hero, self.friend
        want, done, fail = self.pick(SKILLS)
        tries = self.pick(NUMBERS[:4])
        middle = [f"{h.name} tried again, and {h.he} {fail} again."] * self.rng.choice([0, 1])
        self.summary = f"wants to learn to {want} and does not give up"
        return [
            [self.opening(), *self.describe(),
             f"More than anything, {h.name} wanted to learn to {want}.",
             f"{self.when}, {h.he} decided to try."],
            [f"The first time, {h.name} {fail}.", *middle,
             f"{capitalized(h.he)} felt {self.pick(FEELINGS_BAD)}.",
             self.say(h, f"I will never learn to {want}."),
             f"{capitalized(f.a)} named {f.name} was watching.",
             self.say(f, f"Do not give up! I {fail} {tries} times when I learned."),
             self.say(f, "Try one more time, slowly.")],
            [f"So {h.name} tried one more time, slowly and carefully.",
             f"And this time, {h.he} {done}!",
             self.say(h, "Look! I can do it!"),
             f"{f.name} clapped and cheered.",
             self.ending("skill")],
        ], "skill"

    def help(self):
        h, f = self.hero, self.friend
        who, trouble, rescue = self.pick(TROUBLES)
        self.summary = f"helps {who} that is {trouble}"
        return [
            [self.opening(), *self.describe(),
             f"{self.when}, {h.name} was walking in {self.place}.",
             f"Suddenly, {h.he} heard a small sound.",
             f"It was {who}, {trouble}."],
            [self.say(h, "Oh no! I have to help."),
             f"{h.name} was not very big, but {h.he} had an idea.",
             *([f"{capitalized(h.he)} called {h.his} friend {f.name} to help."] if self.maybe() else []),
             f"{capitalized(h.he)} {rescue}."],
            [f"{capitalized(who.split(' ', 1)[1])} was safe.",
             f"It looked at {h.name} as if to say thank you.",
             f"{h.name} felt warm and {self.pick(FEELINGS_GOOD)} inside.",
             self.ending("help")],
        ], "help"

    def truth(self):
        h, self.friend = self.hero, None     # a story of the hero and a parent only
        thing, did, fix = self.pick(MISTAKES)
        parent = self.pick(["mom", "dad", "grandma", "grandpa"])
        self.summary = f"{did} {thing} and tells {h.his} {parent} the truth"
        return [
            [self.opening(), *self.describe(),
             f"{self.when}, {h.name} was playing inside the house.",
             f"{capitalized(h.he)} was running fast, too fast.",
             f"Oops! {capitalized(h.he)} {did} {thing}."],
            [f"{h.name} was scared. {capitalized(h.he)} wanted to hide.",
             f'"Maybe nobody will know," {h.he} thought.',
             f"But {h.he} felt bad inside, like a heavy stone in {h.his} tummy."],
            [f"So {h.name} went to {h.his} {parent}.",
             self.say(h, f"I am sorry. I {did} {thing}."),
             f"{capitalized(h.his)} {parent} gave {h.him} a big hug.",
             f'"Thank you for telling me the truth," said {h.his} {parent}. "Everybody makes mistakes."',
             f"Then they {fix}.",
             self.ending("truth")],
        ], "truth"

    def new_friend(self):
        h, f, game = self.hero, self.friend, self.pick(GAMES)
        self.summary = f"moves to a new home and makes a new friend, {f.a} named {f.name}"
        return [
            [self.opening(), *self.describe(),
             f"{h.name} and {h.his} family had just moved to a new home near {self.place}.",
             f"{h.name} did not know anyone. {capitalized(h.he)} felt lonely."],
            [f"{self.when}, {h.name} saw {f.a} named {f.name} playing alone.",
             f"{h.name} wanted to say hello, but {h.he} was shy.",
             f"At last, {h.he} walked over.",
             self.say(h, f"Hello! My name is {h.name}. Can I play with you?"),
             self.say(f, f"Yes! Do you like {game}?")],
            [f"They played {game} all afternoon.",
             f"{f.name} was {f.trait} and {h.name} was {h.trait}, but they had so much fun together.",
             self.ending("friend")],
        ], "friend"

    def race(self):
        h, f = self.hero, self.friend
        finish = self.pick(["the big tree", "the red gate", "the old well", "the end of the road", "the pond"])
        self.summary = f"falls during a race with {h.his} friend {f.name}, who stops to help"
        return [
            [self.opening(), *self.describe(),
             f"{h.name} was very fast, and {h.he} liked to say so.",
             self.say(h, "I am the fastest in the whole world!")],
            [self.meet(), f"{self.when}, {h.name} and {f.name} had a race to {finish}.",
             f"{h.name} ran ahead. {capitalized(h.he)} did not look back.",
             f"But then {h.he} tripped on a stone and fell down.",
             self.say(h, "Ouch! My knee!")],
            [f"{f.name} could have won the race.",
             f"But {f.he} stopped and helped {h.name} get up.",
             f"They walked to {finish} together, slowly.",
             self.say(h, f"Thank you, {f.name}. You are a true friend."),
             self.ending("race")],
        ], "race"

    def count(self):
        h, f = self.hero, self.friend
        n = self.rng.randint(3, 9)
        thing = self.pick(["shells", "apples", "acorns", "flowers", "stones", "berries", "leaves", "feathers"])
        give = self.rng.randint(1, n - 1)
        words = ["zero", "one"] + NUMBERS
        self.summary = f"finds {words[n]} {thing} and gives some to {f.name}"
        return [
            [self.opening(), *self.describe(),
             f"{self.when}, {h.name} went to {self.place} to find {thing}.",
             f"{capitalized(h.he)} found one, then two, then three." + (f" In the end, {h.he} had {words[n]}." if n > 3 else "")],
            [f"{h.name} counted them again: {', '.join(words[1 : n + 1])}.",
             f"{words[n].capitalize()} {thing}!",
             f"Then {h.he} met {f.name}, who had none.",
             self.say(f, f"Those are beautiful {thing}.")],
            [f"{h.name} gave {words[give]} of them to {f.name}.",
             f"Now {h.name} had {words[n - give]} and {f.name} had {words[give]}.",
             f"{n - give} and {give} make {n}, just like before, but now two friends were happy.",
             self.ending("count")],
        ], "count"

    def rain(self):
        h, f = self.hero, self.friend
        self.summary = f"wants to have a picnic with {f.name}, but it begins to rain"
        return [
            [self.opening(), *self.describe(),
             self.meet(), f"{h.name} and {f.name} wanted to have a picnic in {self.place}.",
             f"They packed {article(self.pick(FOODS))}, a blanket and {article(self.pick(COLORS) + ' cup')}."],
            ["But just as they were ready to go, it began to rain.",
             "Drip, drop, drip, drop. The rain did not stop.",
             self.say(h, "Now our day is ruined."),
             self.say(f, "Wait, I have an idea!")],
            ["They put the blanket on the floor and had the picnic inside.",
             f"They {self.pick(['built a fort with pillows', 'told funny stories', 'sang songs', 'drew pictures of the sun'])}.",
             "They listened to the rain on the roof. It sounded like a little song.",
             self.ending("rain")],
        ], "rain"

    def gift(self):
        h, self.friend = self.hero, None
        parent = self.pick(["mom", "dad", "grandma", "grandpa"])
        made = self.pick(["a card with a big heart on it", "a necklace of colorful beads", "a picture of the whole family",
                          "a little clay bowl", "a crown of flowers", "a paper bird"])
        self.summary = f"makes {made} for {h.his} {parent}'s birthday"
        return [
            [self.opening(), *self.describe(),
             f"Tomorrow was {h.his} {parent}'s birthday.",
             f"{h.name} wanted to give a present, but {h.he} had no money."],
            [f"{capitalized(h.he)} thought and thought.", f"Then {h.he} had an idea.",
             f"{capitalized(h.he)} made {made}.", "It took a long time, and it was not perfect.",
             f'"I hope {h.his} {parent} likes it," {h.he} thought.'],
            [f"The next morning, {h.name} gave the present to {h.his} {parent}.",
             f"{capitalized(h.his)} {parent} smiled a big smile.",
             f'"This is the best present ever," said {h.his} {parent}.',
             self.ending("gift")],
        ], "gift"

    def dream(self):
        h, f = self.hero, self.friend
        wish = self.pick([("see the sea", "the sea was big and blue and sparkly"),
                          ("touch a cloud", "the cloud was soft and cold, like a wet pillow"),
                          ("visit the moon", "the moon was quiet and silver"),
                          ("find a rainbow", "the rainbow had every color they knew")])
        self.summary = f"has a big dream: to {wish[0]}"
        return [
            [self.opening(), *self.describe(),
             f"{h.name} had a big dream. {capitalized(h.he)} wanted to {wish[0]}."],
            [f"One night, {h.name} had a dream.",
             f"In the dream, {f.a} named {f.name} came to {h.his} window.",
             self.say(f, "Come with me! Hold on tight."),
             "They flew up, up, up into the sky.",
             f"At last, {h.name} saw it: {wish[1]}."],
            [f"When {h.name} woke up, {h.he} was in {h.his} own bed.",
             self.say(h, f"One day I will really {wish[0]}."),
             self.ending("dream")],
        ], "dream"


PLOTS = ("lost", "share", "fear", "skill", "help", "truth", "new_friend", "race", "count", "rain", "gift", "dream")


@dataclass
class StoryFacts:
    """What one synthetic story is about, in words the story itself uses: enough to write an
    instruction that the story answers ("Write a story about a shy fox named Pip who ...")."""

    plot: str              # one of PLOTS
    hero: Character
    summary: str           # what the hero does: "loses her red kite and a dog named Max helps her find it"


def synthetic_story(rng: random.Random) -> str:
    """One story drawn from ``rng``: paragraphs separated by blank lines."""
    return _write(rng)[0]


def _write(rng: random.Random) -> tuple[str, StoryFacts]:
    story = _Story(rng)
    plot = rng.choice(PLOTS)
    paragraphs, _ = getattr(story, plot)()
    for paragraph in paragraphs:   # scene sentences after a paragraph's first sentence
        paragraph[1:1] = [story.scene() for _ in range(rng.choice([0, 0, 0, 1, 1, 2]))]
    if story.maybe(0.25):
        paragraphs.append(story.epilogue())
    return "\n\n".join(" ".join(p) for p in paragraphs), StoryFacts(plot, story.hero, story.summary)


def synthetic_stories(n: int, seed: int = 0) -> list[str]:
    """``n`` synthetic stories (list of str), the same for the same ``seed``.

    Stories run from about 80 to 300 words; the first k are the same for any n >= k.
    """
    if not isinstance(n, int) or n < 0:
        raise InputError(f"n must be a whole number >= 0; got {n!r}.")
    rng = random.Random(seed)
    return [synthetic_story(rng) for _ in range(n)]


def synthetic_stories_with_facts(n: int, seed: int = 0) -> list[tuple[str, StoryFacts]]:
    """The stories of :func:`synthetic_stories` (the same for the same ``seed``), each with
    what it is about."""
    if not isinstance(n, int) or n < 0:
        raise InputError(f"n must be a whole number >= 0; got {n!r}.")
    rng = random.Random(seed)
    return [_write(rng) for _ in range(n)]
