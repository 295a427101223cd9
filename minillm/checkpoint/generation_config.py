"""How a checkpoint says it should be generated from: ``generation_config.json``.

Next to ``config.json``, Hugging Face checkpoints carry the settings their authors generate
with. Two kinds matter here:

* ``eos_token_id``: the token id, or list of ids, that end a reply. A chat model may list
  several: Qwen2.5-Instruct ends a turn with ``<|im_end|>`` (151645) but lists
  ``<|endoftext|>`` (151643) too, while its ``config.json`` and tokenizer name only the first.
* sampling defaults: ``do_sample`` and ``temperature`` / ``top_k`` / ``top_p``
  (Qwen2.5-Instruct: sample at temperature 0.7, top-k 20, top-p 0.8).

``transformers``' ``generate()`` uses both by default. In minillm, :func:`minillm.generate`
stops at the listed ids unless told otherwise, and ``minillm generate`` also takes the sampling
defaults for the options you do not give. A checkpoint without the file falls back, as
transformers does, on ``config.json``'s ``eos_token_id`` and greedy decoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from minillm.models.config import ConfigError, ModelConfig

FILE = "generation_config.json"

# transformers' fallbacks when do_sample is true and the file leaves a setting out
# (GenerationConfig._get_default_generation_params): temperature 1.0, top-k 50, top-p 1.0 (off).
DEFAULT_TEMPERATURE, DEFAULT_TOP_K = 1.0, 50


def read_file(folder: str | Path) -> dict:
    """``folder/generation_config.json`` as a dict ({} when absent); ConfigError naming the file
    when it is not valid JSON."""
    path = Path(folder) / FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:   # (not UTF-8: not JSON either)
        raise ConfigError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} holds a JSON {type(raw).__name__}, not an object of settings.")
    return raw


@dataclass(frozen=True)
class GenerationConfig:
    eos_token_ids: tuple[int, ...] = ()   # generation stops right after any of these
    do_sample: bool = False               # False: greedy decoding
    temperature: float | None = None      # None: not in the file
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None  # read to be reported: minillm does not apply it

    @classmethod
    def from_folder(cls, folder: str | Path, model_config: ModelConfig | None = None) -> "GenerationConfig":
        """Read ``folder/generation_config.json``; without it (or without an ``eos_token_id`` in
        it) the end ids come from ``model_config.eos_token_id``. Raises ConfigError naming the
        file when it is not valid JSON or its ids are not whole numbers."""
        path = Path(folder) / FILE
        raw = read_file(folder)
        eos = raw.get("eos_token_id")
        if eos is None and model_config is not None:
            eos = model_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else eos
        if not isinstance(eos, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in eos):
            raise ConfigError(f"{path}: eos_token_id must be a token id or a list of token ids; got {eos!r}.")
        return cls(
            eos_token_ids=tuple(eos),
            do_sample=bool(raw.get("do_sample", False)),
            temperature=raw.get("temperature"),
            top_k=raw.get("top_k"),
            top_p=raw.get("top_p"),
            repetition_penalty=raw.get("repetition_penalty"),
        )

    def sampling(self) -> tuple[float, int | None, float | None]:
        """(temperature, top_k, top_p) as transformers would sample by default: (0, None, None),
        greedy, unless ``do_sample``; then the file's values, with transformers' fallbacks
        (temperature 1, top-k 50, top-p off)."""
        if not self.do_sample:
            return 0.0, None, None
        temperature = DEFAULT_TEMPERATURE if self.temperature is None else float(self.temperature)
        top_k = DEFAULT_TOP_K if self.top_k is None else (int(self.top_k) or None)   # 0 means off
        top_p = None if self.top_p is None or self.top_p >= 1 else float(self.top_p)
        return temperature, top_k, top_p
