"""``model.generate(...)`` as transformers has it, built on the kit's own decoding loop.

transformers' ``generate`` takes a (batch, seq) tensor, picks its settings from the call or else
from ``model.generation_config`` (the checkpoint's generation_config.json), and returns the
prompt followed by the new tokens, rows that ended early filled with ``pad_token_id``. Here each
row of the batch is continued by :func:`minillm.inference.generate.generate` (the same
temperature / top-k / top-p code and KV cache as ``minillm generate``), its left padding removed
first, and the rows are put back together in transformers' layout. Greedy decoding
(``do_sample=False``, the default) gives transformers' tokens; sampling draws from the same
distribution with torch's global random generator (``torch.manual_seed`` makes it repeatable).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from minillm.checkpoint.generation_config import GenerationConfig as KitGenerationConfig
from minillm.checkpoint.generation_config import read_file
from minillm.compat.unsupported import refuse
from minillm.inference.generate import generate as kit_generate

# transformers' fallback when neither the call nor the checkpoint sets it: 20 new tokens (no more than
# the context holds). The sampling fallbacks are the kit's (checkpoint/generation_config.py).
DEFAULT_NEW_TOKENS = 20
SETTINGS = ("max_new_tokens", "max_length", "do_sample", "temperature", "top_k", "top_p",
            "eos_token_id", "pad_token_id", "num_beams", "num_return_sequences", "repetition_penalty")
REFUSED = {
    "num_beams": "minillm decodes one candidate per row (greedy or sampling); beam search is not in the kit.",
    "repetition_penalty": "minillm.inference.generate applies temperature, top-k and top-p only.",
    "output_scores": "Read the scores with model(ids).logits, or minillm.score / minillm.next_tokens.",
    "output_logits": "Read the logits with model(ids).logits.",
    "return_dict_in_generate": "generate returns the ids tensor; score them with model(ids).logits.",
    "output_attentions": "Compute attention weights from the blocks in minillm/models/qwen2.py (or gpt2.py).",
    "output_hidden_states": "Read hidden states with forward hooks on the model's blocks (model.model.layers).",
    "min_new_tokens": "The kit stops at the end ids; pass eos_token_id=[] to never stop early.",
    "min_length": "The kit stops at the end ids; pass eos_token_id=[] to never stop early.",
    "no_repeat_ngram_size": "minillm.inference.generate applies temperature, top-k and top-p only.",
    "bad_words_ids": "minillm.inference.generate applies temperature, top-k and top-p only.",
    "logits_processor": "Write the loop yourself over minillm.sample_next_token(model(ids).logits[:, -1]).",
    "stopping_criteria": "Use eos_token_id, or write the loop over minillm.sample_next_token.",
    "past_key_values": "generate keeps its own KV cache (model.new_cache in minillm/models/qwen2.py).",
    "min_p": "minillm.inference.generate applies temperature, top-k and top-p only.",
    "typical_p": "minillm.inference.generate applies temperature, top-k and top-p only.",
    "penalty_alpha": "Contrastive search is not in the kit.",
    "assistant_model": "Assisted decoding is not in the kit.",
}


class GenerationConfig:
    """How ``generate`` decodes by default: the checkpoint's generation_config.json values
    (``eos_token_id``, ``pad_token_id``, ``do_sample``, ``temperature`` ...), None where unset,
    as transformers 5 keeps them. Every attribute is writable (``model.generation_config.pad_token_id
    = tokenizer.eos_token_id``)."""

    def __init__(self, **values: Any):
        for name in SETTINGS + ("bos_token_id",):
            setattr(self, name, values.get(name))

    @classmethod
    def from_checkpoint(cls, folder: Path, eos_token_ids: tuple[int, ...], config: dict) -> GenerationConfig:
        """``folder``'s generation_config.json; the end ids as the kit read them (the file's, else
        config.json's), bos and pad ids falling back on config.json's as in transformers."""
        raw = read_file(folder)
        values = {name: raw.get(name) for name in SETTINGS}
        values["eos_token_id"] = (None if not eos_token_ids else eos_token_ids[0] if len(eos_token_ids) == 1
                                  else list(eos_token_ids))
        values["bos_token_id"] = raw.get("bos_token_id", config.get("bos_token_id"))
        values["pad_token_id"] = raw.get("pad_token_id", config.get("pad_token_id"))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {name: value for name, value in vars(self).items() if value is not None}

    def __repr__(self) -> str:
        return f"GenerationConfig({json.dumps(self.to_dict())})"


def _setting(name: str, kwargs: dict[str, Any], config: GenerationConfig) -> Any:
    value = kwargs.pop(name, None)
    return getattr(config, name) if value is None else value


def generate_rows(model: Any, config: GenerationConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
             streamer: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    """Continue every row of ``input_ids`` (batch, seq) -> (batch, seq + new) ids, transformers'
    layout. ``model`` is the kit's model; ``kwargs`` the call's generation settings (each one
    falls back on ``config``). Raises NotInKit for settings the kit does not compute and
    ValueError for right-padded rows (generate needs ``tokenizer.padding_side = "left"``)."""
    num_beams = _setting("num_beams", kwargs, config)
    if num_beams not in (None, 1):
        refuse("generate", {"num_beams": num_beams}, REFUSED)
    penalty = kwargs.pop("repetition_penalty", None)
    if penalty not in (None, 1.0):
        refuse("generate", {"repetition_penalty": penalty}, REFUSED)
    if penalty is None and config.repetition_penalty not in (None, 1.0):
        warnings.warn(f"the checkpoint's generation_config.json asks for repetition_penalty={config.repetition_penalty}, "
                      "which minillm does not apply: sampled text differs from transformers'. Set "
                      "model.generation_config.repetition_penalty = None to silence this.", stacklevel=3)
    do_sample = bool(_setting("do_sample", kwargs, config))
    temperature, top_k, top_p = (_setting(n, kwargs, config) for n in ("temperature", "top_k", "top_p"))
    temperature, top_k, top_p = KitGenerationConfig(do_sample=do_sample, temperature=temperature, top_k=top_k,
                                                    top_p=top_p).sampling()   # greedy (0, None, None) unless sampling
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature={temperature} with do_sample=True: it must be > 0 (do_sample=False is greedy).")
    eos = _setting("eos_token_id", kwargs, config)
    stop = () if eos is None else (int(eos),) if isinstance(eos, int) else tuple(int(i) for i in eos)
    pad = _setting("pad_token_id", kwargs, config)
    pad = stop[0] if pad is None and stop else pad
    copies = int(_setting("num_return_sequences", kwargs, config) or 1)
    if copies > 1 and not do_sample:
        raise ValueError(f"num_return_sequences={copies} with greedy decoding would give {copies} equal rows: "
                         "pass do_sample=True.")
    max_new, max_length = _setting("max_new_tokens", kwargs, config), _setting("max_length", kwargs, config)
    kwargs.pop("use_cache", None)                                             # the kit always uses its cache
    refuse("generate", kwargs, REFUSED)

    ids = torch.as_tensor(input_ids)
    ids = ids[None] if ids.dim() == 1 else ids
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask).to(ids.device)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)}; input_ids has {tuple(ids.shape)}.")
    if (mask[:, 1:] < mask[:, :-1]).any():
        raise ValueError("generate needs left padding: a row of attention_mask has padding (0) after real tokens (1). "
                         "Set tokenizer.padding_side = 'left' before tokenizing the batch.")
    ids, mask = ids.repeat_interleave(copies, dim=0), mask.repeat_interleave(copies, dim=0)
    if max_new is None and max_length is None:
        max_new = min(DEFAULT_NEW_TOKENS, model.config.max_position_embeddings - ids.shape[1])
    elif max_new is None:
        max_new = int(max_length) - ids.shape[1]
        if max_new <= 0:
            raise ValueError(f"the prompt has {ids.shape[1]} tokens, max_length={max_length} (prompt included) "
                             "leaves no room for new ones: pass max_new_tokens=N.")
    if streamer is not None and ids.shape[0] > 1:
        raise ValueError("a streamer prints one sequence: pass a batch of one row (and num_return_sequences=1).")

    if streamer is not None:
        streamer.put(ids[0].cpu())
    on_token = None if streamer is None else (lambda token: streamer.put(torch.tensor([token])))
    new_rows = [kit_generate(model, row[keep.bool()], max_new_tokens=int(max_new), temperature=temperature,
                             top_k=top_k, top_p=top_p, eos_token_id=stop, on_token=on_token)
                for row, keep in zip(ids, mask)]
    if streamer is not None:
        streamer.end()
    longest = max(len(new) for new in new_rows)
    if pad is None and any(len(new) < longest for new in new_rows):
        raise ValueError("rows ended at different lengths and there is no pad_token_id to fill them: pass "
                         "pad_token_id=tokenizer.eos_token_id.")
    out = torch.full((ids.shape[0], ids.shape[1] + longest), -1 if pad is None else int(pad), dtype=torch.long,
                     device=ids.device)
    out[:, :ids.shape[1]] = ids
    for row, new in zip(out, new_rows):
        row[ids.shape[1]:ids.shape[1] + len(new)] = torch.tensor(new, dtype=torch.long)
    return out
