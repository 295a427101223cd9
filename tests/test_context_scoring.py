"""score(..., context=...) scores the continuation as it is tokenized *in context*, for every
tokenizer family the kit loads: SentencePiece-style byte fallback (the real stories260K),
byte-level BPE (minillm.training.bpe's and the real Qwen2.5 tokenizer) and the chat-template path.

References: transformers' model on the joint token ids (log_softmax, summed over the
continuation's positions), the `tokenizers` library's own encoding of context + text, and
byte counts written out by hand. Tolerance: per-token log-probs 5e-5 absolute (float32 forward
passes summing in different orders, as in test_scoring), sums 5e-5 per token.
"""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer

import minillm
from minillm.inference.scoring import score
from checkpoints import load_reference, make_checkpoint, make_tokenizer


def reference_logprobs(folder, ids: list[int], start: int) -> torch.Tensor:
    """log p(ids[i] | ids[:i]) for i >= start, from transformers."""
    with torch.no_grad():
        logits = load_reference(folder)(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits[start - 1 : -1], -1).gather(-1, torch.tensor(ids[start:])[:, None])[:, 0]


def check_against_transformers(folder, result, context: str, text: str, scored_text: str, add_special=True):
    """The result scores exactly the joint encoding's tokens that cover ``scored_text`` (the
    continuation, or the continuation plus the start of the token straddling the boundary)."""
    backend = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    joint = backend.encode(context + text, add_special_tokens=add_special).ids
    assert result.token_ids[-len(joint):] == joint                    # encoded once, together
    start = len(result.token_ids) - result.n_tokens
    ids = result.token_ids
    whole = backend.decode(ids, skip_special_tokens=True)
    assert whole[len(backend.decode(ids[:start], skip_special_tokens=True)):] == scored_text
    assert result.n_bytes == len(scored_text.encode())
    want = reference_logprobs(folder, result.token_ids, start)
    got = torch.tensor([r.logprob for r in result.rows])
    assert torch.allclose(got, want, atol=5e-5)
    assert result.total_nll == pytest.approx(-want.sum().item(), abs=5e-5 * len(want))  # the per-token bound, summed


def test_readme_example_on_sentencepiece_stories260k(shared_data):
    folder = shared_data / "stories260K"
    model, tok = minillm.load_model(folder), minillm.load_tokenizer(folder)
    context, text = "Once upon a time, Lily went out.", " She found a dragon."
    result = score(model, tok, text, context=context)
    # Encoded alone, the text gains a lone "▁" token (12 tokens, NLL 26.28); in context it is 11.
    assert result.n_tokens == 11 and tok.encode(text, add_special_tokens=False)[0] == tok.encode(" ")[-1]
    assert result.total_nll == pytest.approx(16.50, abs=0.01)
    check_against_transformers(folder, result, context, text, text)
    # A token straddling the boundary ("ent" of " went") is scored with the continuation.
    result = score(model, tok, "nt out.", context="Once upon a time, Lily we")
    check_against_transformers(folder, result, "Once upon a time, Lily we", "nt out.", "ent out.")
    # Packed path: the same scores up to its documented float rounding.
    packed = score(minillm.load_model(folder, packed=True), tok, text, context=context)
    assert packed.token_ids == score(model, tok, text, context=context).token_ids
    assert packed.total_nll == pytest.approx(16.4976, abs=1e-3)


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ctx-bpe")
    make_checkpoint(folder, "qwen2", seed=11, vocab=320, max_positions=256)
    make_tokenizer(folder, vocab_size=320)
    return folder


@pytest.mark.parametrize("context, text, scored", [
    ("The owl lived in an old oak.", " One night she saw a fox.", " One night she saw a fox."),
    ("Once upon a time, th", "e fox 🦊 ran.", " the fox 🦊 ran."),     # " the" straddles the boundary
    ("Tom said", "\"hi\" and Ann waved.", "\"hi\" and Ann waved."),
])
def test_byte_level_bpe(bpe_model, context, text, scored):
    model, tok = minillm.load_model(bpe_model), minillm.load_tokenizer(bpe_model)
    check_against_transformers(bpe_model, score(model, tok, text, context=context), context, text, scored)


def test_chat_template_path_with_the_real_qwen_tokenizer(shared_data, tmp_path):
    folder = make_checkpoint(tmp_path / "qwen-chat", "qwen2", seed=2, vocab=151_936, heads=2, kv_heads=1,
                             head_dim=8, layers=1, tied=True)
    (folder / "tokenizer.json").write_bytes(
        gzip.decompress((shared_data / "qwen2.5-tokenizer" / "tokenizer.json.gz").read_bytes()))
    shutil.copy(shared_data / "qwen2.5-tokenizer" / "tokenizer_config.json", folder)
    model, tok = minillm.load_model(folder), minillm.load_tokenizer(folder)
    question = "Write a story about a dragon."
    prompt = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    for text, scored in [("Once upon a time, a dragon 🐉 slept.", "Once upon a time, a dragon 🐉 slept."),
                         # The prompt ends in "\n": "\n" + "\n\n" is one token, which straddles.
                         ("\n\nOnce upon a time.", "\n\n\nOnce upon a time.")]:
        result = score(model, tok, text, context=question, chat=True)
        check_against_transformers(folder, result, prompt, text, scored, add_special=False)
        assert "chat user turn" in result.protocol


@pytest.mark.parametrize("trim_offsets", [False, True])
def test_gpt2_tokenizer_with_and_without_trimmed_offsets(shared_data, tmp_path, trim_offsets):
    """The real GPT-2 tokenizer as shipped, and with offsets trimmed of whitespace (a post-processor
    option some tokenizer.json files set): a lone "Ġ" token then spans no character at all, but
    its span still ends where its space did, so the split by span ends keeps it with the text."""
    import json

    from minillm.inference.scoring import _encode_for_scoring, _scored_bytes, encode_for_scoring

    raw = json.loads(gzip.decompress((shared_data / "gpt2-tokenizer" / "tokenizer.json.gz").read_bytes()))
    raw["post_processor"]["trim_offsets"] = trim_offsets
    (tmp_path / "tokenizer.json").write_text(json.dumps(raw))
    shutil.copy(shared_data / "gpt2-tokenizer" / "tokenizer_config.json", tmp_path)
    tok = minillm.load_tokenizer(tmp_path)
    for context, text in [("Hello there\n\n", "  World.  She said"), ("Hello there", " World.")]:
        ids, start = encode_for_scoring(tok, text, context)
        assert ids == tok.encode(context + text)
        assert tok.decode(ids[start:]) == text                 # exactly the text's tokens, the lone "Ġ" too
        assert _scored_bytes(tok, _encode_for_scoring(tok, text, context, False)) == len(text.encode())


@pytest.mark.parametrize("family", ["gpt2", "qwen2.5"])
def test_bits_per_byte_counts_exactly_the_bytes_of_the_scored_tokens_when_tokens_split_characters(shared_data,
                                                                                                  tmp_path, family):
    """Byte-level BPE splits rare characters over several tokens ("🦜" is "ðŁ", "¦", "ľ" in GPT-2). When the
    first, unscored token was part of one, the byte count started at the whole character and counted the
    unscored token's bytes too (GPT-2 "🦜 parrots talk": 17 bytes for tokens that hold 15)."""
    import math

    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from minillm.models.config import ModelConfig
    from minillm.models.qwen2 import Transformer

    source = shared_data / f"{family}-tokenizer"
    (tmp_path / "tokenizer.json").write_bytes(gzip.decompress((source / "tokenizer.json.gz").read_bytes()))
    shutil.copyfile(source / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    tok = minillm.load_tokenizer(tmp_path)
    torch.manual_seed(0)          # a random model: the byte count does not depend on the scores
    model = Transformer(ModelConfig("qwen2", tok.vocab_size, 8, 16, 1, 2, 1, 4, 10000.0, 1e-6, 512, True, True)).eval()
    # The bytes a byte-level token spells, by transformers' own table (not minillm's): the reference.
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    backend = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))

    def token_bytes(i: int) -> int:
        return len(bytes(byte_of[c] for c in backend.id_to_token(i)))

    cases = [("🦜 parrots talk", None), ("𝔘𝔫𝔦𝔠𝔬𝔡𝔢 letters", None), ("日本語の文です", None), ("ü is common", None),
             ("🦜🦜 two birds", "Look: "), ("𝔘𝔫𝔦 and more", "Gothic "), ("語の文", "日本"), ("é", "caf")]
    split_at_the_start = 0
    for text, context in cases:
        s = minillm.score(model, tok, text, context=context, top_k=0)
        scored = s.token_ids[len(s.token_ids) - s.n_tokens:]
        assert s.n_bytes == sum(token_bytes(i) for i in scored), (text, context)
        assert s.bits_per_byte == pytest.approx(s.total_nll / math.log(2) / s.n_bytes, rel=1e-12)
        if context is None:
            # Every byte but the unscored first token's: nothing before it predicts it.
            assert s.n_bytes == len(text.encode()) - token_bytes(s.token_ids[0])
            split_at_the_start += len(backend.decode(s.token_ids[:1])) < 1 or "\ufffd" in backend.decode(s.token_ids[:1])
    assert split_at_the_start >= 2          # the cases do split a character at the first token
