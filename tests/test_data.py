"""The bundled texts, and TinyStories read through a fake, offline Hugging Face cache."""

from __future__ import annotations

import re
from pathlib import Path

import huggingface_hub.constants
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from minillm.data import CATEGORIES, SEPARATOR, TEXTS_DIR, bundled_texts, split_stories, tinystories
from minillm.checkpoint.hub import SourceError

REPO = "roneneldan/TinyStories"
VALID = "TinyStories-valid.txt"


def put_dataset_in_hub_cache(cache: Path, repo_id: str, filename: str, text: str,
                             commit: str = "0" * 40) -> None:
    """Lay out ``filename`` as huggingface_hub's cache does for dataset ``repo_id`` at ``main``."""
    repo = cache / ("datasets--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / filename).write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def real_paragraphs(shared_data) -> list[str]:
    """The first 30 paragraphs of real TinyStories validation text."""
    raw = (shared_data / "text" / "tinystories_validation_head.txt").read_text(encoding="utf-8")
    return [p.strip() for p in re.split(r"\n\s*\n", raw) if p.strip()][:30]


# --- bundled texts ---------------------------------------------------------------------

def test_bundled_counts():
    assert len(bundled_texts("stories")) >= 60
    for category in CATEGORIES:
        assert len(bundled_texts(category)) >= 10, category


@pytest.mark.parametrize("category", CATEGORIES)
def test_bundled_texts_are_clean_and_distinct(category):
    texts = bundled_texts(category)
    assert all(text and text == text.strip() for text in texts)
    assert len(set(texts)) == len(texts)
    assert not any(SEPARATOR in text for text in texts)
    assert not any("<|" in text for text in texts)  # no broken separator either


def test_stories_vary_in_length():
    words = [len(story.split()) for story in bundled_texts("stories")]
    assert max(words) > 3 * min(words)
    assert min(words) >= 40


def test_bundled_order_is_file_order():
    stories = bundled_texts("stories")
    assert stories == bundled_texts()  # "stories" is the default, and reading is deterministic
    assert stories[0].startswith("Once upon a time, there was a little dog named Max.")
    raw = (TEXTS_DIR / "stories.txt").read_text(encoding="utf-8")
    assert stories == [part.strip() for part in raw.split("\n" + SEPARATOR + "\n")]


def test_unknown_category_names_the_valid_ones():
    with pytest.raises(ValueError, match="stories, news, code, poetry, instructions"):
        bundled_texts("recipes")


def test_split_stories():
    raw = f"\n  first story.\n\nsecond paragraph.\n{SEPARATOR}\n{SEPARATOR}second{SEPARATOR}\n \n"
    assert split_stories(raw) == ["first story.\n\nsecond paragraph.", "second"]
    assert split_stories("") == []


# --- TinyStories through the hub code path ---------------------------------------------

def test_tinystories_from_cache(offline_cache, real_paragraphs):
    put_dataset_in_hub_cache(offline_cache, REPO, VALID, f"\n{SEPARATOR}\n".join(real_paragraphs) + "\n")
    assert tinystories(5) == real_paragraphs[:5]
    assert tinystories(5, split="validation") == tinystories(5)
    assert tinystories(len(real_paragraphs)) == real_paragraphs
    with pytest.raises(ValueError, match=f"only {len(real_paragraphs)} stories"):
        tinystories(10**6)


def test_tinystories_reads_across_the_million_character_pieces(offline_cache):
    # The first story ends 5 characters before the first piece's end, so a separator straddles the boundary.
    first = "a" * ((1 << 20) - 6)
    stories = [first] + [f"story {i}." for i in range(1, 4)]
    put_dataset_in_hub_cache(offline_cache, REPO, VALID, "\n" + f"\n{SEPARATOR}\n".join(stories))
    assert tinystories(4) == stories
    assert tinystories(2) == stories[:2]


def test_tinystories_not_cached_offline(offline_cache):
    with pytest.raises(SourceError, match="offline") as err:
        tinystories(3)
    message = str(err.value)
    assert "cache" in message and "bundled_texts('stories')" in message and "--offline" in message


def test_tinystories_hub_unreachable(monkeypatch):
    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("connection error and no cached file")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)      # `minillm scaling --offline` in a test sets it
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(SourceError, match="cannot be reached"):
        tinystories(3, split="train")


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "at least 1"),
    (dict(n=3, split="test"), "validation, train"),
])
def test_tinystories_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tinystories(**kwargs)


def test_read_text_file_splits_the_real_tinystories_and_wikitext_files(shared_data, tmp_path):
    from minillm.data import read_text_file

    wiki = read_text_file(shared_data / "text" / "wikitext2_raw_test.txt")
    assert len(wiki) == 62 and wiki.texts[0].startswith("= Robert Boulter =")      # 62 articles (its README)
    assert wiki.ids[:2] == ["wikitext2_raw_test.txt#0", "wikitext2_raw_test.txt#1"]
    head = read_text_file(shared_data / "text" / "tinystories_validation_head.txt", limit=3)
    assert head.texts[0].startswith("Spot. Spot saw the shiny car") and len(head) == 3
    assert head.label == "3 paragraphs of tinystories_validation_head.txt"
    mine = tmp_path / "mine.txt"
    mine.write_text("one story\n<|endoftext|>\ntwo\n\nparagraphs\n<|endoftext|>\n")
    assert read_text_file(mine).texts == ["one story", "two\n\nparagraphs"]
    with pytest.raises(ValueError, match="no such file"):
        read_text_file(tmp_path / "missing.txt")
