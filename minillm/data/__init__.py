"""Text to score and train on: the texts bundled with the kit, and TinyStories from the hub
(synthetic stories to train on: :mod:`minillm.data.stories`).

A language model is judged on text it has not memorised. minillm uses two sources:

* **Bundled texts** in ``data/texts/``, written for this project and shipped with it, so
  every experiment also runs offline. There is one file per *category* (``stories``,
  ``news``, ``code``, ``poetry``, ``instructions``); comparing a model's perplexity across
  categories shows which kinds of text it "knows".
* **TinyStories** (``roneneldan/TinyStories`` on the Hugging Face hub): millions of short
  stories in simple words, written by GPT-3.5/GPT-4 for training very small models.
  Its text files hold one story after another, separated by ``<|endoftext|>``, and the
  bundled files use the same format, so one function splits both.

``tinystories`` goes through ``huggingface_hub``: it downloads the file once into its
cache (``HF_HUB_CACHE``) and honours offline mode (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

from minillm.checkpoint.hub import SourceError, hub_reachable, offline
from minillm.errors import InputError

SEPARATOR = "<|endoftext|>"  # the line between two texts, as in the TinyStories files
CATEGORIES = ("stories", "news", "code", "poetry", "instructions")

# The repo is installed editable (`pip install -e .`), so data/ sits next to the package.
TEXTS_DIR = Path(__file__).resolve().parents[2] / "data" / "texts"
# Real TinyStories text the kit ships (data/tinystories/README.md: the first ~1,000 validation stories,
# CDLA-Sharing-1.0): what the model family trains on, and its held-out real stories.
TINYSTORIES_HEAD = TEXTS_DIR.parent / "tinystories" / "validation_head.txt"
# The tiny model family the kit ships (trained by minillm.course.family, whose SHAPES name the same three):
# what the experiments score when the hub's models cannot be had.
MODELS_DIR = TEXTS_DIR.parent / "models"
SHIPPED_FAMILY = ("tiny-s", "tiny-m", "tiny-l")

TINYSTORIES_REPO = "roneneldan/TinyStories"
TINYSTORIES_FILES = {"validation": "TinyStories-valid.txt", "train": "TinyStories-train.txt"}


def split_stories(raw: str) -> list[str]:
    """Split the text ``raw`` of a TinyStories-format file into its texts (list of str).

    Texts are separated by ``<|endoftext|>``; each is stripped, and empty ones are dropped.
    """
    return [text.strip() for text in raw.split(SEPARATOR) if text.strip()]


@dataclass
class TextSource:
    """Texts to score, each with an id that leads back to it, and a label that says what they are.

    ``ids[i]`` is ``"<file>#<n>"``: text number ``n`` (counting from 0) of that file, in the
    order :func:`split_stories` (or :func:`read_text_file`) returns them, so that a story named
    in a report can be found in its source. ``label`` is for titles and reports, e.g.
    "20 held-out bundled stories".
    """

    label: str
    texts: list[str]
    ids: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.ids):
            raise InputError(f"{len(self.texts)} texts but {len(self.ids)} ids.")

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, keep: list[int], label: str | None = None) -> TextSource:
        """The texts at the indices ``keep`` (in that order), with their own ids."""
        return TextSource(label or self.label, [self.texts[i] for i in keep], [self.ids[i] for i in keep])

    def first(self, n: int) -> TextSource:
        """The first ``n`` texts (all when there are fewer); a label that starts with the count is updated."""
        if n >= len(self):
            return self
        counted = re.match(r"\d+ ", self.label)
        label = f"the first {n} " + self.label[counted.end():] if counted else f"the first {n} of {self.label}"
        return self.select(list(range(n)), label)


def bundled_source(category: str = "stories", start: int = 0, stop: int | None = None,
                   label: str | None = None) -> TextSource:
    """The bundled texts ``start:stop`` of ``category`` as a :class:`TextSource` (ids "stories.txt#48")."""
    texts = bundled_texts(category)
    picked = range(len(texts))[start:stop]
    return TextSource(label or f"{len(picked)} bundled texts of data/texts/{category}.txt", [texts[i] for i in picked],
                      [f"{category}.txt#{i}" for i in picked])


_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $", re.MULTILINE)   # " = Title = ": a level-1 heading


def decode_utf8(raw: bytes, path: Path, line: int = 1) -> str:
    """``raw`` (a file's bytes, or one line's: ``line`` is then its number) as text, without the
    byte-order mark some editors write first; or ValueError naming the file, the line and column
    (bytes from the line's start, from 1, after any mark) and the first byte that is not UTF-8."""
    if line == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line += raw.count(b"\n", 0, err.start)
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise InputError(f"{path}, line {line}, column {column} is not UTF-8 text: byte 0x{raw[err.start]:02x} cannot "
                         "start or continue a UTF-8 character (a Latin-1 or Windows-1252 file?). Save it as UTF-8, "
                         f"e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`.") from err


def read_utf8(path: Path) -> str:
    """The text of ``path`` (see :func:`decode_utf8`)."""
    return decode_utf8(path.read_bytes(), path)


def read_text_file(path: str | Path, limit: int | None = None) -> TextSource:
    """The texts of a local text file, split the way its format asks:

    * on ``<|endoftext|>`` lines (TinyStories' own files, the bundled texts);
    * else at WikiText's article headings (a line `` = Title = ``), one text per article;
    * else at blank lines: one text per paragraph (e.g. ``tinystories_validation_head.txt``,
      whose stories and paragraphs are both separated by blank lines).

    ``limit`` keeps the first texts only. Raises ValueError naming the file when it is missing
    or holds no text.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--texts {path}: no such file. Give a UTF-8 text file: TinyStories (texts "
                         f"separated by {SEPARATOR}), WikiText (articles under ' = Title = ' lines) or "
                         "paragraphs separated by blank lines.")
    raw = read_utf8(path)
    if SEPARATOR in raw:
        texts, how = split_stories(raw), f"texts separated by {SEPARATOR}"
    elif _WIKITEXT_TITLE.search(raw):
        starts = [m.start() for m in _WIKITEXT_TITLE.finditer(raw)] + [len(raw)]
        texts, how = [raw[a:b].strip() for a, b in zip(starts, starts[1:])], "WikiText articles"
    else:
        texts, how = [t.strip() for t in re.split(r"\n\s*\n", raw) if t.strip()], "paragraphs"
    if not texts:
        raise InputError(f"--texts {path}: the file holds no text.")
    ids = [f"{path.name}#{i}" for i in range(len(texts))]
    texts, ids = texts[:limit], ids[:limit]
    return TextSource(f"{len(texts)} {how} of {path.name}", texts, ids)


def bundled_texts(category: str = "stories") -> list[str]:
    """The texts of one ``category`` (str, one of :data:`CATEGORIES`) that ship with the kit.

    Returns a list of str in file order. Raises ValueError for an unknown category and
    FileNotFoundError when ``data/texts/`` is missing.
    """
    if category not in CATEGORIES:
        raise InputError(f"unknown text category {category!r}; choose one of {', '.join(CATEGORIES)}.")
    path = TEXTS_DIR / f"{category}.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled texts not found at {path}. They live in the repository's data/texts/ "
            "folder: install minillm from a clone with `pip install -e .`."
        )
    return split_stories(path.read_text(encoding="utf-8"))


def tinystories(n: int, split: str = "validation") -> list[str]:
    """The first ``n`` (int >= 1) stories of TinyStories' ``split`` ("validation" or "train").

    Returns a list of str, always the same stories for the same ``n``. Downloads the
    split's text file into the Hugging Face cache on first use (the validation file is
    about 19 MB, the train file about 1.9 GB). Raises :class:`~minillm.checkpoint.hub.SourceError`
    when the hub cannot be reached and the file is not cached, and ValueError for a bad
    ``n`` or ``split`` or when the split holds fewer than ``n`` stories.
    """
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}.")
    if split not in TINYSTORIES_FILES:
        raise InputError(f"unknown TinyStories split {split!r}; choose one of {', '.join(TINYSTORIES_FILES)}.")
    stories = _first_stories(_download(TINYSTORIES_FILES[split]), n)
    if len(stories) < n:
        raise InputError(f"TinyStories' {split} split holds only {len(stories)} stories, fewer than n={n}.")
    return stories


def tinystories_source(n: int, split: str = "validation") -> TextSource:
    """:func:`tinystories` as a :class:`TextSource` (ids "TinyStories-valid.txt#3")."""
    name = TINYSTORIES_FILES.get(split, split)
    return TextSource(f"{n} TinyStories {split} stories", tinystories(n, split), [f"{name}#{i}" for i in range(n)])


def _download(filename: str) -> Path:
    # Imported here so that the bundled texts never touch the network stack.
    import huggingface_hub.constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    # One quick look for the hub's host first: without it huggingface_hub retries for ~25 s.
    local_only = offline() or not hub_reachable()
    try:
        path = huggingface_hub.hf_hub_download(TINYSTORIES_REPO, filename, repo_type="dataset",
                                               local_files_only=local_only)
    except LocalEntryNotFoundError as err:
        why = "offline mode is on (HF_HUB_OFFLINE)" if offline() else "the hub cannot be reached"
        raise SourceError(
            f"cannot load {filename} of the dataset {TINYSTORIES_REPO!r}: {why} and it is not in "
            f"the Hugging Face cache ({huggingface_hub.constants.HF_HUB_CACHE}). Use the texts "
            "bundled with the kit instead, bundled_texts('stories') (`minillm scaling --offline`), "
            f"or download it once with network: `hf download {TINYSTORIES_REPO} {filename} "
            "--repo-type dataset`."
        ) from err
    return Path(path)


def _first_stories(path: Path, n: int) -> list[str]:
    """Read ``path`` a million characters at a time until ``n`` stories are complete.

    The train file is 1.9 GB: reading only as far as needed keeps a small ``n`` fast.
    """
    stories: list[str] = []
    rest = ""
    with open(path, encoding="utf-8") as f:
        while len(stories) < n:
            piece = f.read(1 << 20)
            if not piece:  # end of file: what is left is the last story
                stories += split_stories(rest)
                break
            # A separator cut in two between pieces is whole again in rest + piece.
            *complete, rest = (rest + piece).split(SEPARATOR)
            stories += split_stories(SEPARATOR.join(complete))
    return stories[:n]
