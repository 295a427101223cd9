"""GPT-2's byte-level BPE through minillm.Tokenizer against two independent references on
the real files in ../shared/data/gpt2-tokenizer: tiktoken (OpenAI's own implementation,
reading the original ranks file) and transformers' GPT2TokenizerFast. Token ids must be
equal exactly; there is no tolerance in tokenization.
"""

from __future__ import annotations

import json

import pytest
import tiktoken
import transformers
from tiktoken.load import load_tiktoken_bpe

import minillm
from conftest import need_shared_data
from minillm.checkpoint.tokenizer import TokenizerError

# GPT-2's pre-tokenizer pattern (from OpenAI's encoder.py): contractions, letters, digits,
# other symbols, each with at most one leading space; runs of whitespace.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = 50256

TEXTS = [
    "This weekend I plan to",
    " go",
    "Hello world",
    "  two leading spaces,   three inside, and trailing   ",
    "lines\nand\n\nparagraphs\r\n\ttabbed\t\tline \n",
    "digits 0 7 42 123 1234 12345 3.14159 1,000,000 2026-11-29",
    "emoji 😀👍🏽🇫🇷 👨‍👩‍👧 and ✨",
    "Ελληνικά, русский текст, 日本語のテキスト, 한국어, العربية, हिन्दी",
    "it's we'll I'd they're you've I'M DON'T",
    "code: def f(x):\n    return x**2  # square\n",
    "<|endoftext|>A new document",
]


@pytest.fixture(scope="module")
def reference():
    """tiktoken's encoder built offline from the original ranks file."""
    ranks = load_tiktoken_bpe(str(need_shared_data() / "gpt2-tokenizer" / "gpt2.tiktoken"))
    return tiktoken.Encoding("gpt2-local", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOT})


@pytest.fixture(scope="module")
def tok(gpt2_tokenizer_folder):
    return minillm.load_tokenizer(gpt2_tokenizer_folder)


@pytest.fixture(scope="module")
def fast(gpt2_tokenizer_folder):
    return transformers.GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_folder)


@pytest.fixture(scope="module")
def long_text():
    """40,000 characters of WikiText and 40,000 of TinyStories."""
    text = need_shared_data() / "text"
    return (text / "wikitext2_raw_test.txt").read_text(encoding="utf-8")[:40_000] + \
        (text / "tinystories_validation_head.txt").read_text(encoding="utf-8")[:40_000]


def test_the_logits_notebook_ids(tok):
    assert tok.encode("This weekend I plan to") == [1212, 5041, 314, 1410, 284]
    assert tok.encode(" go") == [467]
    assert tok.vocab_size == 50257
    assert tok.eos_token_id == EOT and tok.eos_token == "<|endoftext|>"
    assert tok.encode("Hi") == tok.encode("Hi", add_special_tokens=False)   # no BOS added, no EOS


@pytest.mark.parametrize("text", TEXTS)
def test_ids_equal_tiktoken_and_transformers(tok, fast, reference, text):
    ids = tok.encode(text)
    assert ids == reference.encode(text, allowed_special="all")
    assert ids == fast(text)["input_ids"]
    assert tok.decode(ids) == text                              # byte-level: lossless


def test_long_text_equals_tiktoken_and_transformers(tok, fast, reference, long_text):
    ids = tok.encode(long_text)
    assert len(ids) > 15_000
    assert ids == reference.encode(long_text, allowed_special="all")
    assert ids == fast(long_text)["input_ids"]


def test_vocab_json_and_merges_txt_layout_loads(gpt2_tokenizer_folder, reference, long_text, tmp_path):
    """GPT-2's older files: vocab.json + merges.txt and no tokenizer.json, and a tokenizer_config.json
    that names no special token (as on the hub): <|endoftext|> is still the end of text."""
    model = json.loads((gpt2_tokenizer_folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    (tmp_path / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}), encoding="utf-8")
    tok = minillm.load_tokenizer(tmp_path)
    assert tok.eos_token_id == EOT and tok.bos_token_id is None
    for text in [*TEXTS, long_text[:20_000]]:
        assert tok.encode(text) == reference.encode(text, allowed_special="all")


def test_add_prefix_space_as_transformers(gpt2_tokenizer_folder):
    """With add_prefix_space the first word is tokenized like any later word ("go" -> " go")."""
    fast = transformers.GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_folder, add_prefix_space=True)
    tok = minillm.load_tokenizer(gpt2_tokenizer_folder, add_prefix_space=True)
    assert tok.encode("go") == [467]
    for text in TEXTS:
        assert tok.encode(text) == fast(text)["input_ids"]
    assert minillm.load_tokenizer(gpt2_tokenizer_folder).encode("go") == [2188]     # off by default


def test_add_prefix_space_is_refused_where_it_means_nothing(shared_data):
    with pytest.raises(TokenizerError, match="add_prefix_space"):
        minillm.load_tokenizer(shared_data / "stories260K", add_prefix_space=True)


def test_a_folder_without_tokenizer_files_names_both_layouts(tmp_path):
    with pytest.raises(TokenizerError, match="vocab.json"):
        minillm.load_tokenizer(tmp_path)
