"""Tiny random checkpoints made with the real ``transformers`` classes and ``save_pretrained``.

Weights are drawn with a larger spread than transformers' default init (std 0.02 makes
every logit ~0, so any implementation would "match"), biases and norm gains included,
so that a mistake anywhere in the forward pass moves the logits visibly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

VOCAB = 101


def make_config(kind: str = "qwen2", *, heads: int = 4, kv_heads: int = 2, head_dim: int = 8,
                layers: int = 2, tied: bool = False, bias: bool | None = None,
                vocab: int = VOCAB, max_positions: int = 256, **extra):
    """A tiny Qwen2Config or LlamaConfig; ``bias`` sets Llama's attention_bias."""
    common = dict(
        vocab_size=vocab, hidden_size=heads * head_dim, intermediate_size=3 * heads * head_dim,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, rms_norm_eps=1e-6, tie_word_embeddings=tied,
        rope_theta=10000.0, bos_token_id=1, eos_token_id=2, **extra,
    )
    if kind == "qwen2":
        return transformers.Qwen2Config(**common)
    return transformers.LlamaConfig(attention_bias=bool(bias), **common)


def randomize(model: torch.nn.Module, seed: int, std: float = 0.15) -> None:
    """Draw every parameter afresh: matrices and biases (GPT-2's LayerNorm biases too) ~ N(0, std),
    norm gains ~ 1 + N(0, 0.1), token embeddings ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name or (".ln_" in name and name.endswith(".weight")):   # norm gains
                p.copy_(1 + 0.1 * noise)
            elif "embed_tokens" in name or "wte" in name:
                p.copy_(noise)  # unit-scale embeddings, as in trained models
            else:
                p.copy_(std * noise)


def make_checkpoint(folder: Path, kind: str = "qwen2", seed: int = 0, shard: bool = False, **config_kw) -> Path:
    """Build a random model with ``transformers`` and save it as a Hugging Face folder."""
    config = make_config(kind, **config_kw)
    cls = transformers.Qwen2ForCausalLM if kind == "qwen2" else transformers.LlamaForCausalLM
    torch.manual_seed(seed)
    model = cls(config)
    randomize(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, max_shard_size="40KB" if shard else "5GB")
    return folder


def make_gpt2_config(*, n_embd: int = 24, n_head: int = 3, n_layer: int = 2, n_positions: int = 64,
                     vocab: int = VOCAB, tied: bool = True, **extra):
    """A tiny GPT2Config (gelu_new, LayerNorm eps 1e-5, dropout irrelevant in eval mode)."""
    return transformers.GPT2Config(
        vocab_size=vocab, n_embd=n_embd, n_head=n_head, n_layer=n_layer, n_positions=n_positions,
        tie_word_embeddings=tied, bos_token_id=vocab - 1, eos_token_id=vocab - 1, **extra,
    )


def make_gpt2_checkpoint(folder: Path, seed: int = 0, shard: bool = False, **config_kw) -> Path:
    """A random GPT2LMHeadModel saved by transformers (keys ``transformer.*``, Conv1D weights (in, out))."""
    config = make_gpt2_config(**config_kw)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config)
    randomize(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, max_shard_size="40KB" if shard else "5GB")
    return folder


def load_reference(folder: Path, dtype: torch.dtype = torch.float32, attention: str = "eager"):
    """The same checkpoint loaded by transformers, in eval mode; ``attention`` is "eager"
    (the explicit softmax, what minillm.models.qwen2 computes) or "sdpa" (the fused kernel)."""
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, attn_implementation=attention
    ).eval()


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = "0" * 40) -> None:
    """Lay ``folder``'s files out as huggingface_hub's cache does for ``repo_id`` at ``main``.

    The real layout: ``models--org--name/refs/main`` holds the commit hash and
    ``models--org--name/snapshots/<hash>/`` holds the files.
    """
    import shutil

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def make_tokenizer(folder: Path, vocab_size: int = 320) -> Path:
    """A byte-level BPE tokenizer trained on the kit's bundled stories (minillm.training.bpe), saved as a
    Hugging Face tokenizer folder (tokenizer.json + tokenizer_config.json), no BOS."""
    from minillm.data import bundled_texts
    from minillm.training.bpe import train_tokenizer

    return train_tokenizer(bundled_texts("stories"), vocab_size, folder)


def edit_config(folder: Path, **changes) -> None:
    """Change keys of ``folder/config.json`` in place; a value of None removes the key."""
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))


def pad_rows(rows: list[torch.Tensor], side: str, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows of different lengths as one (batch, width) batch padded with id 0 on ``side``
    ("left" or "right"), and its attention mask (1 on real tokens, 0 on padding)."""
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        where = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, where], mask[i, where] = row, 1
    return ids, mask
