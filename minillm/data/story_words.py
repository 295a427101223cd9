"""The vocabulary of the synthetic stories' grammar (:mod:`minillm.data.stories`): names, kinds of
character, places, things, plots' ingredients and the sentences that set a scene, all words a
four-year-old knows; and :class:`Character`, one of a story's cast.

The lists are the grammar's whole vocabulary: a word missing here is never written.
"""

from __future__ import annotations

from dataclasses import dataclass

GIRL_NAMES = ["Lily", "Mia", "Sara", "Emma", "Zoe", "Anna", "Lucy", "Nora", "Ella", "Rosa", "Maya", "Ruby",
              "Hana", "Ivy", "Lena", "Tess", "June", "Ada", "Nina", "Kiki", "Olive", "Daisy", "Amara", "Priya"]
BOY_NAMES = ["Tom", "Ben", "Max", "Leo", "Sam", "Jack", "Finn", "Omar", "Theo", "Kai", "Eli", "Noah",
             "Milo", "Ravi", "Hugo", "Ned", "Otto", "Arlo", "Jonas", "Luca", "Teo", "Felix", "Ezra", "Amir"]
PET_NAMES = ["Pip", "Biscuit", "Coco", "Bubbles", "Patch", "Rusty", "Clover", "Pebble", "Sunny", "Button",
             "Maple", "Fluff", "Ziggy", "Peanut", "Whiskers", "Tumble", "Hazel", "Boots", "Nutmeg", "Sprout",
             "Blue", "Dot", "Bramble", "Moss"]

# (kind, possible pronouns): children have one, animals and the rest either.
KINDS = [("girl", "she"), ("boy", "he"), ("dog", "any"), ("cat", "any"), ("rabbit", "any"), ("bear", "any"),
         ("fox", "any"), ("duck", "any"), ("mouse", "any"), ("robot", "any"), ("dragon", "any"), ("bird", "any"),
         ("frog", "any"), ("turtle", "any"), ("owl", "any"), ("pig", "any"), ("lion", "any"), ("squirrel", "any"),
         ("elephant", "any"), ("monkey", "any"), ("hedgehog", "any"), ("puppy", "any"), ("kitten", "any"),
         ("penguin", "any")]
TRAITS = ["little", "small", "brave", "shy", "curious", "happy", "kind", "silly", "sleepy", "clever", "young",
          "friendly", "busy", "gentle", "funny", "quiet"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "brown", "shiny"]
PLACES = ["the park", "the forest", "the garden", "the farm", "the beach", "the pond", "the big hill",
          "the meadow", "the river", "the village", "the playground", "the backyard", "the woods", "the town square",
          "the old barn", "the lake"]
HIDING = ["under a big bush", "behind a tree", "in the tall grass", "under the bed", "next to the pond",
          "inside an old box", "on top of the fence", "under a pile of leaves", "behind the big rock",
          "in a muddy puddle", "under the slide", "between two flower pots"]
OBJECTS = ["ball", "kite", "hat", "toy car", "teddy bear", "book", "cup", "boat", "drum", "shell", "key",
           "scarf", "balloon", "crayon", "blanket", "sock", "whistle", "marble", "truck", "doll"]
FOODS = ["apple", "cookie", "sandwich", "banana", "muffin", "carrot", "piece of cake", "pear", "bun", "orange"]
FEARS = [("the dark", "dark"), ("the big slide", "slide"), ("the deep water", "water"), ("the loud thunder", "thunder"),
         ("the tall tree", "tree"), ("the old bridge", "bridge"), ("the big wave", "wave"), ("the noisy wind", "wind")]
SKILLS = [("ride a bike", "rode the bike", "fell over"), ("swim", "swam across the pond", "sank and splashed"),
          ("fly a kite", "flew the kite high", "watched the kite fall down"),
          ("jump over the log", "jumped over the log", "bumped into the log"),
          ("bake a cake", "baked a yummy cake", "burned the cake"),
          ("climb the hill", "climbed to the top of the hill", "slid back down"),
          ("whistle", "whistled a happy song", "only blew air"),
          ("tie a bow", "tied a perfect bow", "made a big knot"),
          ("build a tower", "built a tall tower", "saw the tower fall"),
          ("catch a ball", "caught the ball", "dropped the ball")]
TROUBLES = [("a kitten", "stuck up a tree", "climbed up and carried the kitten down"),
            ("a baby bird", "fallen out of its nest", "lifted the baby bird back into its nest"),
            ("a little duck", "lost and looking for its mother", "walked with the duck to the pond to find its mother"),
            ("an old turtle", "stuck on its back", "gently turned the turtle over"),
            ("a tiny ant", "trying to carry a big crumb", "carried the crumb to the ant hill"),
            ("a puppy", "caught in a fence", "pulled the fence open so the puppy could get out"),
            ("a bee", "wet from the rain", "put the bee on a warm, dry flower"),
            ("a lamb", "lost in the fog", "called and called until the lamb's mother came")]
MISTAKES = [("mom's favorite vase", "broke", "glued the pieces together"),
            ("the clean floor", "got mud all over", "washed the floor together"),
            ("dad's book", "tore a page of", "taped the page back in"),
            ("the new paint", "spilled", "painted a new picture together"),
            ("grandma's cookies", "ate all of", "baked new cookies together"),
            ("the garden flowers", "stepped on", "planted new flowers together")]
GAMES = ["hide and seek", "tag", "catch", "a game of pretend", "ring around the rosy", "jump rope", "a race"]
WEATHER = ["One sunny day", "One rainy morning", "On a cold winter day", "One windy afternoon", "One warm evening",
           "Early one morning", "One cloudy day", "On a bright spring morning", "One snowy day", "Late one afternoon"]
FEELINGS_BAD = ["sad", "worried", "upset", "lonely", "scared"]
FEELINGS_GOOD = ["happy", "proud", "glad", "excited", "thankful"]
SAYS = ["said", "said", "said", "asked", "shouted", "whispered", "called"]
LESSONS = {
    "lost": ["Friends help each other find things.", "It is good to ask for help.", "Two friends look better than one."],
    "share": ["Sharing makes everything better.", "A thing shared is a thing doubled.",
              "Being kind feels good."],
    "fear": ["Being brave does not mean you are not scared.", "Some things are less scary when you try them.",
             "A friend can make you brave."],
    "skill": ["If you keep trying, you can learn anything.", "Practice makes things easier.",
              "Everyone falls before they learn."],
    "help": ["Helping others makes the world a little better.", "Even small friends can do big things.",
             "Kindness always comes back."],
    "truth": ["It is always best to tell the truth.", "Everybody makes mistakes.", "Saying sorry helps."],
    "friend": ["A new friend is a wonderful thing.", "It is good to say hello.", "Friends can be very different."],
    "race": ["Being a good friend is better than winning.", "Winning is not everything.", "Kind hearts win."],
    "count": ["Giving is as fun as getting.", "Counting is fun when you share.", "A few is enough."],
    "rain": ["A rainy day can be a happy day.", "Fun can be found anywhere.", "Plans change, and that is fine."],
    "gift": ["The best gifts are made with love.", "Small gifts can mean a lot.", "Love is the best present."],
    "dream": ["Dreams can come true.", "Wishes are good, and trying is better.", "Big dreams start small."],
}
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
# Words for the free "scene" sentences that fill out a story (see _Story.scene).
SIZES = ["big", "little", "tiny", "huge", "small", "tall", "long", "round", "fat", "thin"]
TEXTURES = ["soft", "shiny", "old", "new", "wet", "sticky", "warm", "cold", "bumpy", "fluffy", "smooth", "heavy",
            "light", "dusty", "muddy", "sparkly", "striped", "spotted", "funny", "pretty"]
THINGS = OBJECTS + ["stick", "leaf", "rock", "feather", "box", "basket", "bucket", "spoon", "bell", "rope", "ladder",
                    "pillow", "jar", "button", "map", "lamp", "coin", "ribbon", "brush", "bottle", "clock", "chair",
                    "pumpkin", "wagon", "umbrella", "snowball", "acorn", "pebble", "puzzle", "flag", "basket of eggs",
                    "bowl of soup", "paper boat", "sand castle", "flower pot", "pair of boots", "jar of honey"]
TRANSITIVE = ["picked up", "looked at", "found", "carried", "painted", "hugged", "dropped", "washed", "hid", "threw",
              "kicked", "counted", "smelled", "touched", "opened", "held", "pushed", "pulled", "shook", "cleaned",
              "fixed", "filled", "dug up", "wrapped", "chased", "lifted", "rolled", "showed everyone", "drew"]
INTRANSITIVE = ["ran", "jumped", "laughed", "sang", "danced", "sat down", "looked up at the sky", "took a nap", "smiled",
                "waved", "giggled", "hummed a song", "skipped", "splashed", "spun around", "clapped", "yawned",
                "stretched", "tiptoed", "hopped", "rested", "whistled", "listened", "waited", "played", "walked"]
WHERE = ["near the river", "under the table", "by the window", "in the kitchen", "on the hill", "behind the house",
         "next to the fence", "in the sand", "under a tree", "on the porch", "by the gate", "in the snow",
         "on the grass", "at the top of the stairs", "by the pond", "in the yard", "on the bridge", "in the barn",
         "under the stars", "in the garden", "by the road", "in the living room", "on the beach", "in the woods"]
HOW = ["slowly", "quickly", "carefully", "happily", "quietly", "loudly", "gently", "again", "all day", "for a while",
       "with a big smile", "very fast", "one more time", "for a long time", "in the sun", "without a sound"]
WHEN = ["Then", "Soon", "After a while", "Just then", "For a moment", "Later", "First", "After that"]
NATURE = ["The sun was warm and bright.", "The sky was blue, with little white clouds.", "A cool wind blew.",
          "Birds sang in the trees.", "The grass was wet with rain.", "Leaves fell from the trees.",
          "The moon was big and round.", "It was very quiet.", "A frog said ribbit by the pond.",
          "The flowers were red and yellow.", "Snow covered the ground like a white blanket.",
          "The sky turned pink and orange.", "Rain tapped on the window.", "A butterfly flew by.",
          "The air smelled like fresh bread.", "Somewhere, a dog was barking.", "The stars came out one by one."]


@dataclass
class Character:
    """One of a story's cast: a name, a kind of character, a trait and the pronouns to go with them."""

    name: str
    kind: str          # "girl", "fox", ...
    trait: str         # "shy", ...
    he: str            # subject pronoun
    him: str           # object pronoun
    his: str           # possessive

    @property
    def a(self) -> str:
        """'a little fox', 'an old owl'."""
        return article(f"{self.trait} {self.kind}")


def article(noun: str) -> str:
    """``noun`` with its indefinite article: "a fox", "an owl" (by the first letter, enough for this vocabulary)."""
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def capitalized(sentence: str) -> str:
    """``sentence`` with its first letter in upper case (the rest as it is)."""
    return sentence[0].upper() + sentence[1:]


