"""Importing llama2.c checkpoints: stories260K.bin + tok512.bin against the reference conversion.

``shared/data/stories260K/`` is the same model already converted to a Hugging Face folder, so
the importer must reproduce it: the same tensors, the same logits, the same token ids. The
token ids are also checked against a plain-Python copy of llama2.c's own ``encode``.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

import minillm
from minillm.checkpoint import llama2c
from minillm.checkpoint.llama2c import Llama2cError
from minillm.cli import main
from minillm.models.qwen2 import apply_rotary

# Not here, because any SentencePiece-style tokenizer.json (the reference's too) differs from
# llama2.c on them: "<s>", "</s>", "<unk>" written in the text (tokenizers reads them as the special
# tokens, llama2.c spells them out) and "▁" (it stands for a space in the converted vocabulary).
TRICKY_TEXTS = [
    "", " ", "   ", "\n", "a", "Hello", " leading space", "trailing space ", "two  spaces   and three",
    "line\nbreak\n\nand a blank line\n", "\ttabs\tand\r\nCRLF", "digits 0123456789, 3.14 and 1,000,000!",
    "Ünïcödé café naïve Zoë", "emoji 🙂🎉👍🏽 and 中文 and Ελληνικά", "l'été — «quote» ‘single’ “double” … ™ € ñ é",
    "zero\u200bwidth and non\u00a0breaking", "lll llll ooo oooo ppp pppp", "the her ther there here hers ked ved",
    "<0x41> <0xFF> look like byte tokens", "She said, \"Let's play!\" and they played.",
]


# ---------------------------------------------------------------------------------------------
# llama2.c's encode (run.c), in plain Python, as the reference for the converted tokenizer


def read_vocab(path: Path) -> tuple[list[bytes], list[float]]:
    """tokenizer.bin -> (pieces as bytes, scores), read independently of the importer."""
    data = path.read_bytes()
    pieces, scores, offset = [], [], 4          # the first int32 is the longest piece length
    while offset < len(data):
        score, length = struct.unpack_from("<fi", data, offset)
        pieces.append(data[offset + 8 : offset + 8 + length])
        scores.append(score)
        offset += 8 + length
    return pieces, scores


def llama2c_encode(text: str, pieces: list[bytes], scores: list[float]) -> list[int]:
    """run.c's encode(tokenizer, text, bos=1, eos=0), step by step."""
    lookup = {piece: i for i, piece in enumerate(pieces)}
    tokens = [1]                                         # BOS
    if text:
        tokens.append(lookup[b" "])                      # the "dummy prefix"
    for char in text:
        utf8 = char.encode("utf-8")
        if utf8 in lookup:
            tokens.append(lookup[utf8])
        else:
            tokens.extend(byte + 3 for byte in utf8)     # byte fallback: <0x00> is id 3
    while True:                                          # merge the best-scoring pair, leftmost on ties
        best_score, best_id, best_index = -1e10, -1, -1
        for i in range(len(tokens) - 1):
            merged = lookup.get(pieces[tokens[i]] + pieces[tokens[i + 1]], -1)
            if merged != -1 and scores[merged] > best_score:
                best_score, best_id, best_index = scores[merged], merged, i
        if best_index == -1:
            return tokens
        tokens[best_index : best_index + 2] = [best_id]


def llama2c_rope(vec: np.ndarray, pos: int, head_dim: int) -> np.ndarray:
    """run.c's rotation of one head: channels (2i, 2i+1) rotated together."""
    out = vec.copy()
    for i in range(0, head_dim, 2):
        angle = pos * 10000.0 ** (-i / head_dim)
        cos, sin = np.cos(angle), np.sin(angle)
        out[i], out[i + 1] = vec[i] * cos - vec[i + 1] * sin, vec[i] * sin + vec[i + 1] * cos
    return out


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def model_bin(shared_data) -> Path:
    return shared_data / "llama2c" / "stories260K.bin"


@pytest.fixture(scope="module")
def tok_bin(shared_data) -> Path:
    return shared_data / "llama2c" / "tok512.bin"


@pytest.fixture(scope="module")
def reference(shared_data) -> Path:
    return shared_data / "stories260K"


@pytest.fixture(scope="module")
def converted(model_bin, tok_bin, tmp_path_factory) -> Path:
    return llama2c.convert(model_bin, tok_bin, tmp_path_factory.mktemp("converted"))


@pytest.fixture(scope="module")
def paragraphs(shared_data) -> list[str]:
    text = (shared_data / "text" / "tinystories_validation_head.txt").read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()][:200]


@pytest.fixture(scope="module")
def vocab(tok_bin) -> tuple[list[bytes], list[float]]:
    return read_vocab(tok_bin)


# ---------------------------------------------------------------------------------------------
# the model


def test_folder_equals_the_reference_conversion(converted, reference):
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        ours = json.loads((converted / name).read_text(encoding="utf-8"))
        assert ours == json.loads((reference / name).read_text(encoding="utf-8")), name
    ours, theirs = load_file(converted / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == theirs.keys() and "lm_head.weight" not in ours      # tied embeddings
    for name in ours:
        assert ours[name].dtype == torch.float32 and torch.equal(ours[name], theirs[name]), name


def test_read_checkpoint_header_and_shapes(model_bin):
    header, weights = llama2c.read_checkpoint(model_bin)
    assert header == {"dim": 64, "hidden_dim": 172, "n_layers": 5, "n_heads": 8, "n_kv_heads": 4,
                      "vocab_size": 512, "seq_len": 512, "shared_classifier": True}
    assert weights["wq"].shape == (5, 64, 64) and weights["wk"].shape == (5, 32, 64)
    assert weights["w2"].shape == (5, 64, 172) and weights["token_embedding_table"].shape == (512, 64)
    assert "wcls" not in weights and "freq_cis_real" not in weights


@torch.inference_mode()
def test_logits_match_reference_and_transformers(converted, reference, paragraphs):
    transformers = pytest.importorskip("transformers", reason="transformers is the reference")
    ours, theirs = minillm.load_model(converted), minillm.load_model(reference)
    hf = transformers.AutoModelForCausalLM.from_pretrained(converted, attn_implementation="eager").eval()
    tok = minillm.load_tokenizer(converted)
    for text in paragraphs[:6]:
        ids = torch.tensor([tok.encode(text)])
        logits = ours(ids)
        # Same tensors, same code: bit for bit.
        assert torch.equal(logits, theirs(ids))
        # Measured: 0.0 (transformers' eager path does the same float32 operations). The bound
        # leaves room for another torch/transformers version ordering them differently: float32
        # rounding (eps 1.2e-7) on logits up to ~24 through 5 layers stays near 1e-6.
        assert (logits - hf(ids).logits).abs().max() <= 1e-5


def test_half_split_turns_llama2c_rope_into_minillm_rope():
    head_dim, n_heads, pos = 8, 2, 7
    q = np.random.default_rng(0).standard_normal((1, n_heads * head_dim, 1)).astype(np.float32)
    assert llama2c.half_split(np.arange(8.0).reshape(1, 8, 1), 1).ravel().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    expected = np.concatenate([llama2c_rope(h, pos, head_dim) for h in q[0, :, 0].reshape(n_heads, head_dim)])
    # minillm's RoPE on the reordered rows = the reordered result of llama2.c's RoPE.
    x = torch.tensor(llama2c.half_split(q, n_heads)[0, :, 0]).view(1, n_heads, 1, head_dim)
    angles = pos * 10000.0 ** (-torch.arange(0, head_dim, 2) / head_dim)
    angles = torch.cat([angles, angles])
    rotated = apply_rotary(x, angles.cos(), angles.sin()).reshape(1, n_heads * head_dim, 1).numpy()
    np.testing.assert_allclose(rotated, llama2c.half_split(expected.reshape(1, -1, 1), n_heads), atol=1e-6)


@torch.inference_mode()
def test_without_the_qk_permutation_the_logits_are_wrong(model_bin, converted, paragraphs, tmp_path):
    header, weights = llama2c.read_checkpoint(model_bin)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(converted / name, tmp_path / name)
    save_file(llama2c.hf_state_dict(header, weights, permute_qk=False), tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    ids = torch.tensor([minillm.load_tokenizer(converted).encode(paragraphs[0])])
    right, wrong = minillm.load_model(converted)(ids), minillm.load_model(tmp_path)(ids)
    # The first token only attends to itself, so q and k cannot matter there; after it they do.
    assert torch.allclose(right[0, 0], wrong[0, 0], atol=1e-5)
    assert (right[0, 1:] - wrong[0, 1:]).abs().max() > 1.0


# ---------------------------------------------------------------------------------------------
# the tokenizer


def test_token_ids_match_reference_tokenizer_and_llama2c(converted, reference, paragraphs, vocab):
    ours, theirs = minillm.load_tokenizer(converted), minillm.load_tokenizer(reference)
    for text in paragraphs + TRICKY_TEXTS:
        ids = ours.encode(text)
        assert ids == llama2c_encode(text, *vocab), repr(text)
        assert ids == theirs.encode(text), repr(text)
        assert ours.decode(ids, skip_special_tokens=True) == text, repr(text)
    assert ours.encode("") == [1]                       # no dummy prefix on an empty text


def test_token_ids_match_llama2c_on_random_piece_soup(converted, vocab):
    # Strings glued from the pieces that several merges can build, to provoke merge-order ties.
    pieces, _ = vocab
    texts = [piece.decode() for piece in pieces[259:]]
    multi = [" the", " he", " her", "her", "ver", "ved", "ked", "end", "ent", " st", " on", " had", "out"]
    rng = random.Random(0)
    tok = minillm.load_tokenizer(converted)
    for _ in range(400):
        text = "".join(rng.choice(multi if rng.random() < 0.6 else texts) for _ in range(rng.randint(1, 8)))
        assert tok.encode(text) == llama2c_encode(text, *vocab), repr(text)


def test_merge_order_cannot_diverge_from_llama2c_on_tok512(vocab):
    """The three conditions of llama2c._merges under which a fixed merge list acts like llama2.c."""
    pieces, scores = vocab
    score = {p.decode(): s for p, s in zip(pieces[259:], scores[259:])}
    # (1) Different pieces have different scores: llama2.c's ties are within one piece only.
    assert len(set(score.values())) == len(score)
    splits = {x: [(x[:k], x[k:]) for k in range(1, len(x)) if x[:k] in score and x[k:] in score] for x in score}
    several = {x for x, s in splits.items() if len(s) > 1}
    assert {" the", "her", "ver"} <= several
    # (2) No two different merges of one piece overlap (A B C with A+B = B+C = X).
    for x in several:
        assert not [(a, b, c) for a, b in splits[x] for b2, c in splits[x] if b == b2 and (a, b) != (b, c)], x
    # (3) No better-scored piece extends such a piece by a piece on either side, except " her" =
    # " " + "her": it can only eat a space to the left of "her", and no merge of "her" ends with
    # a space, so it never takes a token from a second "her" pair; nothing better contains it.
    grow = {(x, z) for x in several for z in score
            if score[z] > score[x] and z != x and ((z.startswith(x) and z[len(x):] in score)
                                                   or (z.endswith(x) and z[: -len(x)] in score))}
    assert grow == {("her", " her")}
    assert all(not right.endswith(" ") for _, right in splits["her"])
    assert [z for z in score if " her" in z and score[z] > score["her"]] == [" her"]


def test_merges_rank_every_split_by_piece_score(tok_bin, vocab):
    content = llama2c.convert_tokenizer(tok_bin)
    merges = content["model"]["merges"]
    assert merges[:3] == [["▁", "t"], ["h", "e"], ["▁", "a"]]
    # "▁the" can be built two ways; llama2.c accepts both, so both are listed, together.
    i = merges.index(["▁t", "he"])
    assert merges[i + 1] == ["▁th", "e"]
    # With one merge per piece (as if only the trained merges counted) "ent" could only come
    # from "e" + "nt", but llama2.c also merges "en" + "t": " went" would come out differently.
    first_only = {}
    for left, right in merges:
        first_only.setdefault(left + right, [left, right])
    content["model"]["merges"] = list(first_only.values())
    one_way = Tokenizer.from_str(json.dumps(content))
    assert llama2c_encode("went", *vocab) == [1, 263, 377]                         # <s> ▁w ent
    assert one_way.encode("went").ids != llama2c_encode("went", *vocab)
    assert Tokenizer.from_str(json.dumps(llama2c.convert_tokenizer(tok_bin))).encode("went").ids == [1, 263, 377]


# ---------------------------------------------------------------------------------------------
# errors


def test_truncated_model_bin(model_bin, tmp_path):
    cut = tmp_path / "cut.bin"
    data = model_bin.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(Llama2cError, match="truncated: download or export it again"):
        llama2c.read_checkpoint(cut)
    cut.write_bytes(data[:10])
    with pytest.raises(Llama2cError, match="fewer than the 28-byte header"):
        llama2c.read_checkpoint(cut)


def test_versioned_export_is_refused(tmp_path):
    path = tmp_path / "v1.bin"
    path.write_bytes(struct.pack("<Ii", 0x616B3432, 1) + bytes(256))
    with pytest.raises(Llama2cError, match="version-1 llama2.c export.*--version 0"):
        llama2c.read_checkpoint(path)


def test_header_that_does_not_fit_the_file(model_bin, tmp_path):
    data = bytearray(model_bin.read_bytes())
    path = tmp_path / "odd.bin"
    path.write_bytes(bytes(data) + bytes(4))                   # 4 bytes too many
    with pytest.raises(Llama2cError, match="has 1,056,544 bytes, but .* has 1,056,540: it is not a legacy"):
        llama2c.read_checkpoint(path)
    struct.pack_into("<i", data, 8, 4)                          # n_layers 5 -> 4
    path.write_bytes(bytes(data))
    with pytest.raises(Llama2cError, match="n_layers=4"):
        llama2c.read_checkpoint(path)
    struct.pack_into("<i", data, 12, 7)                         # 7 heads do not divide dim=64
    path.write_bytes(bytes(data))
    with pytest.raises(Llama2cError, match="not start with a valid llama2.c header"):
        llama2c.read_checkpoint(path)
    with pytest.raises(Llama2cError, match="not found"):
        llama2c.read_checkpoint(tmp_path / "missing.bin")


def test_truncated_tokenizer_bin(model_bin, tok_bin, tmp_path):
    data = tok_bin.read_bytes()
    cut = tmp_path / "tok.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(Llama2cError, match="truncated"):
        llama2c.convert(model_bin, cut, tmp_path / "out")
    assert not (tmp_path / "out").exists()                      # nothing written on error
    pieces, offset = 0, 4
    while pieces < 500:                                         # cut after 500 whole pieces
        offset += 8 + struct.unpack_from("<i", data, offset + 4)[0]
        pieces += 1
    cut.write_bytes(data[:offset])
    with pytest.raises(Llama2cError, match="holds 500 pieces but the model has vocab_size=512: the file is truncated"):
        llama2c.convert_tokenizer(cut, vocab_size=512)


# ---------------------------------------------------------------------------------------------
# the command line


@torch.inference_mode()
def test_cli_converts_end_to_end(model_bin, tok_bin, reference, tmp_path, capsys):
    out = tmp_path / "stories260K"
    assert main(["convert-llama2c", str(model_bin), str(tok_bin), str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"wrote {out / name}" for name in llama2c.OUTPUT_FILES]
    ids = torch.tensor([minillm.load_tokenizer(out).encode("Once upon a time")])
    assert torch.equal(minillm.load_model(out)(ids), minillm.load_model(reference)(ids))

    (tmp_path / "bad.bin").write_bytes(model_bin.read_bytes()[:1000])
    assert main(["convert-llama2c", str(tmp_path / "bad.bin"), str(tok_bin), str(out), "--overwrite"]) == 1
    assert "convert-llama2c: error:" in capsys.readouterr().err


def test_cli_keeps_an_existing_folder(model_bin, tok_bin, tmp_path, capsys, monkeypatch):
    """Without --overwrite a folder that holds files is refused before anything is read; with it, a
    conversion that fails while writing (here: a full disk at tokenizer.json) leaves the folder as it was."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"my model")
    # the model file does not exist: a refusal that came after reading it would name it instead
    assert main(["convert-llama2c", str(tmp_path / "missing.bin"), str(tok_bin), str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out} already holds files" in err and "--overwrite" in err and "missing.bin" not in err

    write_json = llama2c._write_json

    def disk_full_at_the_tokenizer(path, content):
        if path.name == "tokenizer.json":
            raise OSError(28, "No space left on device")
        write_json(path, content)

    monkeypatch.setattr(llama2c, "_write_json", disk_full_at_the_tokenizer)
    with pytest.raises(OSError, match="No space left"):
        main(["convert-llama2c", str(model_bin), str(tok_bin), str(out), "--overwrite"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"model.safetensors": b"my model"}
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]          # no half-written folder beside it
    monkeypatch.undo()
    assert main(["convert-llama2c", str(model_bin), str(tok_bin), str(out), "--overwrite"]) == 0
    assert minillm.load_model(out).config.vocab_size == 512
