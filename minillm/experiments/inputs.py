"""What an experiment runs on: which models, which texts, and what happens without a network.

The ``minillm`` commands choose with these functions, and a notebook can call the same ones, so
both score the same texts with the same models:

* :func:`pick_models`: the models asked for; by default the Qwen2.5 pair when it is cached or the
  hub answers, else the tiny family the kit ships (``data/models``), said in one paragraph.
* :func:`scoring_texts`: a file of texts, a bundled category, or TinyStories from the hub (the
  bundled stories when the hub is out of reach and every model is a local folder), always without
  the texts a model trained on (its ``training_data.json``) unless asked.
* :func:`category_sources`: every bundled category, and more files, for the categories experiment.
* :func:`training_texts`, :func:`experiment_texts`, :func:`training_context`: what a training run
  reads, and its window.
* :func:`use_local_files_only`: hub ids from the local cache only (``HF_HUB_OFFLINE=1``).

What they choose they say through ``say`` (``print`` by default; None: silent), in sentences that
name their parameters as ``limit=`` (the ``minillm`` command says them again as its flags).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from minillm import data
from minillm.checkpoint.hub import SourceError, hub_reachable, is_cached, resolve_source
from minillm.data import TextSource
from minillm.data.stories import synthetic_stories
from minillm.errors import InputError
from minillm.models.config import load_config
from minillm.training.config import TrainConfig
from minillm.training.provenance import without_training_texts

DEFAULT_MODELS = ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B")   # the scaling experiment's pair, from the hub

Say = Callable[[str], None] | None


def _say(say: Say, message: str) -> None:
    if say is not None:
        say(message)


def use_local_files_only() -> None:
    """From now on in this process, load hub ids from the local Hugging Face cache only, with no
    network request: sets ``HF_HUB_OFFLINE=1``, which :func:`minillm.checkpoint.hub.offline` (and
    so every download of the kit) reads at each call. Local folders are not affected."""
    os.environ["HF_HUB_OFFLINE"] = "1"


def as_typed(path: str | os.PathLike) -> str:
    """``path`` as a user in the working folder would type it (relative, with /), so that the CSVs
    that record it hold no folder of this machine; absolute only when it lies outside the working folder."""
    path = Path(path)
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else Path(relative).as_posix()


def shipped_family(instruct: bool = False) -> list[str]:
    """The tiny models the kit ships in ``data/models``, tiny-s, tiny-m and tiny-l, as typed; with
    ``instruct=True`` also tiny-s-instruct, tiny-m-instruct and tiny-l-instruct, and then only the
    folders that hold a model (a clone may lack the instruct models)."""
    names = [*data.SHIPPED_FAMILY, *(f"{name}-instruct" for name in data.SHIPPED_FAMILY if instruct)]
    return [as_typed(data.MODELS_DIR / name) for name in names
            if not instruct or (data.MODELS_DIR / name / "config.json").is_file()]


def pick_models(models: Sequence[str] | None = None, offline: bool = False, say: Say = print) -> tuple[list[str], bool]:
    """(models, whether they are the shipped family standing in for the defaults).

    ``models`` given: those. Otherwise :data:`DEFAULT_MODELS` when the Hugging Face cache holds
    them or (unless ``offline``) the hub answers; else the tiny family the kit ships, said through
    ``say``. ``offline=True`` also turns downloads off for the process (:func:`use_local_files_only`).
    """
    if offline:
        use_local_files_only()
    if models is not None:
        return list(models), False
    if all(is_cached(m) for m in DEFAULT_MODELS) or (not offline and hub_reachable()):
        return list(DEFAULT_MODELS), False
    _say(say, f"The default models ({', '.join(DEFAULT_MODELS)}) are not in the Hugging Face cache and the hub "
              "cannot be reached (or offline= is set). To run them, download them once with "
              "`hf download Qwen/Qwen2.5-0.5B` (and 1.5B) or pass models= with local folders.\n"
              f"Using the tiny model family minillm ships instead ({data.MODELS_DIR}), on bundled texts it "
              "never trained on.\n")
    return shipped_family(), True


def fewer_note(source: TextSource, wanted: int) -> str:
    """A note for when ``source`` holds fewer texts than the ``wanted`` that ``limit=`` asked for, else ''."""
    return f" ({wanted} were asked for, with limit= or its default; there are no more)" if len(source) < wanted else ""


def scoring_texts(models: Sequence[str], limit: int, *, texts: str | Path | None = None, category: str | None = None,
                  offline: bool = False, bundled: bool = False, include_seen: bool = False,
                  say: Say = print) -> TextSource:
    """The first ``limit`` texts to score ``models`` on, as a :class:`~minillm.data.TextSource`, said through ``say``.

    ``texts`` (a file) wins; then ``category`` (bundled texts of that kind); then, with ``offline``
    or ``bundled``, the bundled stories; else TinyStories' validation stories from the hub (when
    the hub is out of reach and every model is a local folder: the bundled stories, said so).
    Texts a model trained on (its training record) are left out unless ``include_seen``.
    Raises :class:`~minillm.checkpoint.hub.SourceError` when TinyStories cannot be had and a model
    is a hub id, and ValueError when every text was seen in training.
    """
    if texts:
        source = data.read_text_file(texts)
    elif category or offline or bundled:
        source = data.bundled_source(category or "stories")
    else:
        try:
            source = data.tinystories_source(limit)
        except SourceError as err:
            if not all(Path(m).expanduser().is_dir() for m in models):
                raise
            _say(say, f"{err}\nThe models are local folders, so using the stories bundled with minillm instead.\n")
            source = data.bundled_source("stories")
    if not include_seen:
        source, message = without_training_texts(list(models), source)
        if message:
            _say(say, message)
    source = source.first(limit)
    _say(say, f"Scoring {source.label}{fewer_note(source, limit)}.")
    return source


def category_sources(models: Sequence[str], limit: int, files: Sequence[str | Path] = (), include_seen: bool = False,
                     say: Say = print) -> dict[str, TextSource]:
    """Up to ``limit`` texts of every bundled category (those no model trained on, unless
    ``include_seen``), then of each file in ``files`` (one category each, named by the file):
    {category: TextSource}, in that order. Categories with fewer texts are said through ``say``."""
    sources = {}
    for category in data.CATEGORIES:
        source = data.bundled_source(category)
        if not include_seen:
            source, message = without_training_texts(list(models), source)
            if message:
                _say(say, f"{category}: {message}")
        sources[category] = source.first(limit)
    for path in files:
        sources[Path(path).name] = data.read_text_file(path, limit=limit)
    for name, source in sources.items():
        if len(source) < limit:
            _say(say, f"{name}: {len(source)} texts{fewer_note(source, limit)}.")
    return sources


def training_texts(files: Sequence[str | Path] | None = None) -> list[str]:
    """The documents of text files split on ``<|endoftext|>``; with no files, the bundled stories.
    Raises ValueError naming a file that does not exist (``data=``: the files' parameter in
    ``minillm train``) and one that is not UTF-8 (its line and column)."""
    if not files:
        return data.bundled_texts("stories")
    documents = []
    for path in map(Path, files):
        if not path.is_file():
            raise InputError(f"data={path}: no such file. Give text files whose documents are separated by "
                             f"{data.SEPARATOR}, or leave data= out to train on the bundled stories.")
        documents += data.split_stories(data.read_utf8(path))
    return documents


def experiment_texts(files: Sequence[str | Path] | None, stories: int, seed: int = 0) -> list[str]:
    """The training texts of a sweep: the documents of ``files`` (:func:`training_texts`), or
    without files ``stories`` synthetic stories drawn with ``seed``."""
    return training_texts(files) if files else synthetic_stories(stories, seed=seed)


def training_context(context: int | None = None, init: str | Path | None = None) -> int:
    """Tokens per training window: ``context`` when given; else TrainConfig's default (128), or
    fewer when ``init``'s model (a folder or hub id) was built for a shorter window."""
    if context is not None:
        return context
    if init is not None and not (Path(init) / "mlp_config.json").is_file():
        window = load_config(resolve_source(init) / "config.json").max_position_embeddings
        return min(TrainConfig.context, window)
    return TrainConfig.context
