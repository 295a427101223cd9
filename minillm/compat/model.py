"""``AutoModelForCausalLM``: the kit's readable model behind transformers' calls.

``from_pretrained`` loads the checkpoint with :func:`minillm.load_model` (minillm/models/qwen2.py
or gpt2.py) and wraps it in :class:`PreTrainedModel`, an ``nn.Module`` whose one child is that
model, under transformers' name for it (``model.model`` for Qwen2/Llama, ``model.transformer``
for GPT-2), so ``parameters()``, ``named_parameters()``, ``state_dict()``, ``copy.deepcopy`` and
``.to()`` reach the real weights. Calling it returns the kit's logits (the same tensor
``kit_model(input_ids)`` gives) in an output object with ``.logits`` and, given ``labels``,
``.loss`` computed as transformers computes it.

Where the numbers can differ from transformers': for a *left-padded* batch the kit counts each
row's positions from its first real token (every row gets the logits it has alone), while
transformers' forward counts them from the first column unless given ``position_ids``; GPT-2's
learned positions then make transformers' padded rows differ. Right padding and unpadded rows agree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from minillm.checkpoint.loading import load_model
from minillm.compat.generation import GenerationConfig, generate_rows
from minillm.compat.source import resolve
from minillm.compat.unsupported import NotInKit, refuse
from minillm.models.config import GPT2Config
from minillm.training.step import cross_entropy

# The hyperparameters under transformers' common names (the kit's configs answer to all of them).
CONFIG_NAMES = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
                "tie_word_embeddings", "bos_token_id", "eos_token_id")
FORWARD_REFUSED = {
    "past_key_values": "The kit's KV cache is model.model.new_cache(batch, max_len), passed as cache= to the kit's "
                       "model (model.model(ids, cache=cache)); generate() uses it for you.",
    "output_attentions": "Compute attention weights from the blocks in minillm/models/qwen2.py (or gpt2.py).",
    "output_hidden_states": "Read hidden states with forward hooks on the blocks (model.model.layers[i]), or "
                            "model.model.hidden_states(ids) for the last one.",
    "inputs_embeds": "Feed token ids; the embedding is model.get_input_embeddings().",
    "position_ids": "The kit numbers positions itself (from attention_mask for padded rows).",
    "token_type_ids": "Qwen2, Llama and GPT-2 take no token type ids.",
    "cache_position": "Use the kit's cache= argument (see past_key_values).",
    "logits_to_keep": "Slice the logits: model(ids).logits[:, -n:].",
}
LOAD_REFUSED = {
    "trust_remote_code": "minillm runs its own readable models (Qwen2, Llama, GPT-2), never a checkpoint's code.",
    "quantization_config": "Simulate k-bit weights with minillm.inference.quantize (minillm quantize on the command line).",
    "load_in_8bit": "Simulate k-bit weights with minillm.inference.quantize (minillm quantize on the command line).",
    "load_in_4bit": "Simulate k-bit weights with minillm.inference.quantize (minillm quantize on the command line).",
    "cache_dir": "Set HF_HUB_CACHE, or pass a local folder.",
    "subfolder": "Pass the subfolder's path.",
    "output_attentions": FORWARD_REFUSED["output_attentions"],
    "output_hidden_states": FORWARD_REFUSED["output_hidden_states"],
}
MISSING = {
    "save_pretrained": "minillm writes checkpoints when it trains (minillm train, minillm finetune); a loaded "
                       "checkpoint's files are already on disk.",
    "push_to_hub": "minillm does not upload.",
    "resize_token_embeddings": "The kit loads the checkpoint's embedding as it is.",
    "gradient_checkpointing_enable": "minillm.training.train trains the kit's models (minillm train).",
}


class CausalLMOutput:
    """What calling the model returns: ``.logits`` (batch, seq, vocab), raw, and ``.loss`` (a
    scalar in nats, the mean over predicted tokens) when labels were given, else None. Like
    transformers' outputs, ``out["logits"]`` and ``out[0]`` work (index 0 is the loss when there is one)."""

    def __init__(self, logits: torch.Tensor, loss: torch.Tensor | None = None):
        self.logits, self.loss = logits, loss

    def to_tuple(self) -> tuple[torch.Tensor, ...]:
        return (self.logits,) if self.loss is None else (self.loss, self.logits)

    def keys(self) -> list[str]:
        return ["logits"] if self.loss is None else ["loss", "logits"]

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"the output holds {self.keys()}, not {key!r}.")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __repr__(self) -> str:
        loss = "" if self.loss is None else f"loss={float(self.loss.detach()):.4f}, "
        return f"CausalLMOutput({loss}logits=<{tuple(self.logits.shape)} {self.logits.dtype}>)"


class Config:
    """The checkpoint's config.json entries as attributes, plus the usual transformers names
    (``hidden_size``, ``num_hidden_layers``...) for every family (GPT-2's ``n_embd`` is also
    ``hidden_size``). Writable, as in transformers; writing changes no computation."""

    def __init__(self, values: dict[str, Any]):
        self.__dict__.update(values)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"Config({json.dumps(self.to_dict(), default=str)})"


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """transformers' language-modelling loss: position i's logits predict ``labels[:, i + 1]``;
    the mean cross-entropy (nats, computed in float32) over every label that is not -100.
    (batch, seq, vocab) logits, (batch, seq) labels -> a scalar."""
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels has shape {tuple(labels.shape)}; it must match input_ids {tuple(logits.shape[:2])}.")
    return cross_entropy(logits[:, :-1], labels[:, 1:].to(logits.device))   # -100: training.windows.IGNORE


class PreTrainedModel(nn.Module):
    """A transformers-shaped causal LM over the kit's model; make one with
    :meth:`AutoModelForCausalLM.from_pretrained`. ``.kit`` is the kit's model itself."""

    def __init__(self, kit: nn.Module, config: Config, generation_config: GenerationConfig,
                 name_or_path: str):
        super().__init__()
        self._kit_name = "transformer" if isinstance(kit.config, GPT2Config) else "model"
        self.add_module(self._kit_name, kit)
        self.config, self.generation_config, self.name_or_path = config, generation_config, name_or_path

    @property
    def kit(self) -> nn.Module:
        """The kit's model (minillm.models.qwen2.Transformer or minillm.models.gpt2.GPT2)."""
        return self._modules[self._kit_name]

    @property
    def lm_head(self) -> nn.Linear:
        return self.kit.lm_head

    @property
    def device(self) -> torch.device:
        return self.kit.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.kit.embed_tokens.weight.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.kit.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.kit.lm_head

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameter count, each tensor once (a tied LM head is the embedding); ``exclude_embeddings``
        leaves out every embedding table (GPT-2: wte and wpe), as transformers counts."""
        embeddings = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(p.numel() for p in self.parameters()
                   if not (only_trainable and not p.requires_grad) and not (exclude_embeddings and id(p) in embeddings))

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, return_dict: bool | None = None, use_cache: bool | None = None,
                **kwargs: Any) -> CausalLMOutput | tuple[torch.Tensor, ...]:
        """``input_ids`` (batch, seq) -> an output with ``.logits`` (batch, seq, vocab), and ``.loss``
        (:func:`causal_lm_loss`) when ``labels`` (batch, seq; -100 = ignored) are given.
        ``attention_mask`` (batch, seq): 1 = token, 0 = padding. ``return_dict=False``: a tuple."""
        if kwargs.get("logits_to_keep") == 0:
            kwargs.pop("logits_to_keep")     # transformers' value for "all of them"
        refuse(f"{type(self).__name__}(...)", kwargs, FORWARD_REFUSED)
        if input_ids is None:
            raise ValueError("input_ids is missing: call model(input_ids) or model(**tokenizer(text, return_tensors='pt')).")
        logits = self.kit(input_ids, attention_mask)
        loss = None if labels is None else causal_lm_loss(logits, torch.as_tensor(labels).reshape(logits.shape[:2]))
        output = CausalLMOutput(logits, loss)
        return output.to_tuple() if return_dict is False else output

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, generation_config: GenerationConfig | None = None,
                 streamer: Any = None, **kwargs: Any) -> torch.Tensor:
        """The prompt ids (batch, seq) followed by new ones: (batch, seq + new), as transformers
        returns them. Settings (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_k``,
        ``top_p``, ``eos_token_id``, ``pad_token_id``, ``num_return_sequences``, ``max_length``)
        come from the call, else from ``model.generation_config``; see
        :func:`minillm.compat.generation.generate_rows`. ``streamer`` (a TextStreamer) prints as tokens come."""
        input_ids = kwargs.pop("input_ids", None) if inputs is None else inputs
        if input_ids is None:
            raise ValueError("generate needs the prompt: model.generate(input_ids) or model.generate(**inputs).")
        attention_mask = kwargs.pop("attention_mask", None)
        return generate_rows(self.kit, generation_config or self.generation_config, input_ids, attention_mask,
                             streamer, kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)      # parameters and submodules
        except AttributeError:
            if name in MISSING:
                raise AttributeError(f"minillm.compat's model has no {name}(). {MISSING[name]}") from None
            raise


class AutoModelForCausalLM:
    """``AutoModelForCausalLM.from_pretrained(source)``: a checkpoint folder or hub id as a
    :class:`PreTrainedModel` over the kit's own model."""

    def __init__(self) -> None:
        raise TypeError("AutoModelForCausalLM is made with AutoModelForCausalLM.from_pretrained(folder or hub id).")

    @staticmethod
    def from_pretrained(source: str | os.PathLike, *, dtype: torch.dtype | str | None = None,
                        torch_dtype: torch.dtype | str | None = None, device_map: str | torch.device | None = None,
                        attn_implementation: str | None = None, revision: str | None = None,
                        **kwargs: Any) -> PreTrainedModel:
        """Load ``source`` (a folder, or a hub id through the kit's hub code; ``revision``: a branch,
        tag or commit of it) with
        :func:`minillm.load_model`. ``dtype`` (or its older name ``torch_dtype``): float32,
        bfloat16, float16, or "auto" (the default, as in transformers 5: the checkpoint's own).
        ``device_map``: "cpu", "cuda", a torch.device, or "auto" (the GPU if there is one).
        The model comes back in eval mode with gradients on, as transformers returns it."""
        refuse("AutoModelForCausalLM.from_pretrained", kwargs, LOAD_REFUSED,
               ignored=("low_cpu_mem_usage", "use_safetensors", "local_files_only", "token"))
        if dtype is not None and torch_dtype is not None:
            raise ValueError("give dtype or torch_dtype (its older name), not both.")
        if attn_implementation not in (None, "eager", "sdpa"):
            raise NotInKit(f"attn_implementation={attn_implementation!r}: the kit computes attention one way "
                           "(minillm/models/qwen2.py's attention), equal to 'eager' and 'sdpa'; leave it out.")
        if isinstance(device_map, dict):
            raise NotInKit("device_map as a dict (layers split over devices): the kit puts the model on one device; "
                           "pass device_map='cpu' or 'cuda'.")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device_map == "auto" else device_map or "cpu"
        folder = resolve(source, revision)
        kit = load_model(folder, dtype=dtype or torch_dtype or "auto", device=device)
        kit.requires_grad_(True)
        raw = json.loads(Path(folder, "config.json").read_text(encoding="utf-8"))
        config = Config({**raw, **{name: getattr(kit.config, name) for name in CONFIG_NAMES},
                         "pad_token_id": raw.get("pad_token_id"), "dtype": kit.embed_tokens.weight.dtype})
        generation_config = GenerationConfig.from_checkpoint(
            folder, kit.generation_config.eos_token_ids, raw)
        return PreTrainedModel(kit, config, generation_config, str(source)).eval()
