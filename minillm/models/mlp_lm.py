"""A language model without attention: a fixed window of previous tokens into an MLP.

This is the baseline a transformer has to beat (Bengio et al., 2003, "A Neural
Probabilistic Language Model"). To predict the token after position t it looks at exactly
the ``window`` tokens t-window+1 .. t, no further back:

    the window's token ids
      -> embed          one vector (embed_dim) per token; positions before the start of the
                        sequence get a learned "pad" vector instead
      -> concatenate    window * embed_dim numbers: the order of the tokens is in *where*
                        each vector sits, so no position encoding is needed
      -> fc1, GELU      the first hidden layer (hidden)
      -> fc2            the second layer, back to embed_dim
      -> norm, lm_head  RMSNorm, then the transposed embedding matrix: one logit per token

Everything a transformer adds is missing: the context cannot grow past ``window``, and
each offset has its own fixed weights in fc1 instead of attention choosing where to look.
``forward`` takes (batch, seq) ids and returns (batch, seq, vocab) logits, like
:class:`minillm.models.qwen2.Transformer`, so the same training loop (``minillm.training.train`` with
``architecture="mlp"``) trains both.

A checkpoint is ``model.safetensors`` plus ``mlp_config.json``. It is *not* a Hugging Face
model: :func:`minillm.load_model` and ``transformers`` cannot load it; use
:meth:`MLPLanguageModel.load`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from minillm.errors import InputError
from minillm.models.qwen2 import RMSNorm

CONFIG_FILE = "mlp_config.json"


class MLPLanguageModel(nn.Module):
    """Next-token logits from the previous ``window`` tokens only (see the module docstring)."""

    def __init__(self, vocab_size: int, window: int, embed_dim: int, hidden: int):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("window", window), ("embed_dim", embed_dim),
                            ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a whole number >= 1; got {value!r}.")
        self.vocab_size, self.window, self.embed_dim, self.hidden = vocab_size, window, embed_dim, hidden
        self.embed_tokens = nn.Embedding(vocab_size, embed_dim)
        self.pad_embedding = nn.Parameter(torch.zeros(embed_dim))   # stands for "before the start"
        self.fc1 = nn.Linear(window * embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, embed_dim)
        self.norm = RMSNorm(embed_dim, eps=1e-6)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(batch, seq) ids -> (batch, seq, vocab) logits; ``logits[b, t]`` sees ids[b, t-window+1 .. t]."""
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise InputError(f"input_ids must be integer ids of shape (batch, seq); got {input_ids.dtype} "
                             f"{tuple(input_ids.shape)}.")
        batch, seq = input_ids.shape
        x = self.embed_tokens(input_ids)                                        # (batch, seq, embed)
        pad = self.pad_embedding.to(x.dtype).expand(batch, self.window - 1, self.embed_dim)
        x = torch.cat([pad, x], dim=1)                                          # (batch, window-1+seq, embed)
        x = x.unfold(1, self.window, 1)                                         # (batch, seq, embed, window)
        x = x.transpose(2, 3).reshape(batch, seq, self.window * self.embed_dim)  # oldest token first
        h = self.fc2(F.gelu(self.fc1(x)))                                       # (batch, seq, embed)
        return self.norm(h) @ self.embed_tokens.weight.T                        # (batch, seq, vocab)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameter count; ``non_embedding`` leaves out the embedding matrix (also the LM head)."""
        total = sum(p.numel() for p in self.parameters())
        return total - self.embed_tokens.weight.numel() if non_embedding else total

    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``mlp_config.json`` into ``folder``; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = dict(architecture="mlp", vocab_size=self.vocab_size, window=self.window,
                      embed_dim=self.embed_dim, hidden=self.hidden)
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        tensors = {name: p.detach().contiguous() for name, p in self.named_parameters()}
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "MLPLanguageModel":
        """The model saved by :meth:`save` in ``folder`` (float32, eval mode)."""
        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file():
            raise InputError(f"{folder} has no {CONFIG_FILE}: it does not hold an MLP language model.")
        try:
            config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            model = cls(config["vocab_size"], config["window"], config["embed_dim"], config["hidden"])
        except (ValueError, KeyError, TypeError) as err:     # not UTF-8, not JSON, a key missing or of a wrong type
            raise InputError(f"{folder / CONFIG_FILE} is not a valid MLP language model config (vocab_size, window, "
                             f"embed_dim, hidden): {type(err).__name__}: {err}") from err
        model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
        return model.eval()
