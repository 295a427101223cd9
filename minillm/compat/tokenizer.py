"""``AutoTokenizer``: the kit's :class:`~minillm.checkpoint.tokenizer.Tokenizer` behind the calls
a transformers notebook makes.

The kit's tokenizer runs the same ``tokenizer.json`` pipeline through the ``tokenizers`` library
as transformers' fast tokenizers do, so the ids are the same; this face adds what a notebook
expects around them: calling the tokenizer on a text or a batch (padding, truncation, tensors
back), decoding a tensor, the special tokens as settable attributes, and ``apply_chat_template``
returning ids. transformers 5's conventions are followed where versions differ
(``apply_chat_template(tokenize=True)`` returns a mapping unless ``return_dict=False``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from minillm.checkpoint.tokenizer import Tokenizer
from minillm.compat.source import resolve
from minillm.compat.unsupported import NotInKit, refuse

# transformers' stand-in for "no limit" when tokenizer_config.json gives no model_max_length.
NO_LIMIT = int(1e30)
# What clean_up_tokenization_spaces=True undoes (spaces that old word-level tokenizers put before
# punctuation and English contractions), applied only when the tokenizer's config or the caller asks.
CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token")
# The tokenizer classes whose transformers default is left padding (a class attribute there: Llama,
# Code Llama, Gemma and Cohere in transformers 5); every other class pads on the right.
LEFT_PADDING_CLASSES = ("LlamaTokenizer", "CodeLlamaTokenizer", "GemmaTokenizer", "CohereTokenizer")


def _default_padding_side(config: dict[str, Any]) -> str:
    """transformers' padding side for a tokenizer_config.json that names none: its class's default."""
    return "left" if str(config.get("tokenizer_class", "")).removesuffix("Fast") in LEFT_PADDING_CLASSES else "right"


class BatchEncoding(dict):
    """What calling the tokenizer returns: ``input_ids`` and ``attention_mask`` (1 = real token,
    0 = padding), read as ``enc["input_ids"]`` or ``enc.input_ids``; ``model(**enc)`` passes both."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"this BatchEncoding has no {name!r}; it holds {', '.join(self)}.") from None

    def to(self, device: torch.device | str) -> BatchEncoding:
        """Move every tensor to ``device`` (in place) and return self, as ``inputs.to(model.device)`` expects."""
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
        return self


def _special_token(name: str) -> property:
    def get(self) -> str | None:
        return self._specials[name]

    def set(self, token: str | None) -> None:
        if token is not None and self.kit.token_to_id(token) is None:
            raise NotInKit(f"{name} = {token!r}: that token is not in the vocabulary, and minillm.compat does not add "
                           f"tokens (it would need a new embedding row). Use one the tokenizer has, e.g. "
                           f"tokenizer.{name} = tokenizer.eos_token.")
        self._specials[name] = token
    return property(get, set, doc=f"The {name.replace('_', ' ')} as text (None if the tokenizer has none); settable.")


def _special_id(name: str) -> property:
    def get(self) -> int | None:
        token = self._specials[name]
        return None if token is None else self.kit.token_to_id(token)

    def set(self, token_id: int | None) -> None:
        setattr(self, name, None if token_id is None else self.convert_ids_to_tokens(int(token_id)))
    return property(get, set, doc=f"The id of the {name.replace('_', ' ')} (None if it has none); settable.")


class PreTrainedTokenizer:
    """A transformers-shaped tokenizer over the kit's ``Tokenizer`` (``.kit``). Make one with
    :meth:`AutoTokenizer.from_pretrained`.

    Attributes as in transformers: ``name_or_path``, ``padding_side`` / ``truncation_side``
    ("right" or "left"), ``model_max_length``, ``clean_up_tokenization_spaces``, and the
    settable special tokens ``bos_token``, ``eos_token``, ``pad_token``, ``unk_token`` and their ``*_id``.
    """

    bos_token, eos_token, pad_token, unk_token = (_special_token(name) for name in SPECIAL)
    bos_token_id, eos_token_id, pad_token_id, unk_token_id = (_special_id(name) for name in SPECIAL)

    def __init__(self, kit: Tokenizer, name_or_path: str, padding_side: str | None = None):
        self.kit = kit
        self.name_or_path = name_or_path
        config = kit.config
        self._specials = {name: getattr(kit, name) for name in SPECIAL}
        self.padding_side = padding_side or config.get("padding_side") or _default_padding_side(config)
        self.truncation_side = config.get("truncation_side", "right")
        self.model_max_length = int(config.get("model_max_length") or NO_LIMIT)
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))

    # --- sizes and the vocabulary -------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """The BPE vocabulary without added tokens (Qwen2.5: 151,643; ``len(tokenizer)``: 151,665)."""
        return self.kit.base_vocab_size

    def __len__(self) -> int:
        return self.kit.vocab_size

    def get_vocab(self) -> dict[str, int]:
        """Every token (added ones included) and its id."""
        return self.kit.vocabulary(with_added_tokens=True)

    @property
    def chat_template(self) -> str | None:
        return self.kit.chat_template

    # --- text to ids ------------------------------------------------------------------------
    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True, padding: bool | str = False,
                 truncation: bool | str | None = None, max_length: int | None = None,
                 padding_side: str | None = None, return_tensors: str | None = None,
                 return_attention_mask: bool | None = None, **kwargs: Any) -> BatchEncoding:
        """Token ids of one text or a list of texts: ``{"input_ids", "attention_mask"}``.

        One text gives flat lists (``return_tensors="pt"``: tensors of shape (1, seq)); a list
        gives one row per text. ``padding=True`` / ``"longest"`` pads every row to the longest,
        ``"max_length"`` to ``max_length``, with ``pad_token_id`` on ``padding_side``;
        ``truncation=True`` cuts rows to ``max_length`` (default ``model_max_length``) on
        ``truncation_side``. Raises ValueError for rows of unequal length as one tensor without
        padding, and for padding without a pad token.
        """
        refuse("tokenizer(...)", kwargs, {
            "text_pair": "Encode the two texts separately and join the id lists.",
            "text_target": "Encode the targets with a second tokenizer(...) call.",
            "is_split_into_words": "Join the words into one text first.",
            "return_offsets_mapping": "Use tokenizer.kit.encode_with_offsets(text): (ids, [(start, end), ...]).",
            "return_overflowing_tokens": "Score long texts in windows: minillm.score(..., window=N).",
            "return_special_tokens_mask": "Compare the ids with tokenizer.kit's special token ids.",
            "return_length": "Use len(enc['input_ids']).",
            "pad_to_multiple_of": "Pad with padding='max_length' and a max_length of your choice.",
            "stride": "Score long texts in windows: minillm.score(..., window=N).",
            "return_token_type_ids": "Qwen2, Llama and GPT-2 take no token type ids.",
        }, ignored=("verbose",))
        batch = isinstance(text, (list, tuple))
        texts = list(text) if batch else [text]
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"tokenizer(...) takes a str or a non-empty list of str; got {type(text).__name__} "
                            f"{str(text)[:60]!r}. To decode ids, use tokenizer.decode(ids).")
        rows = [self.kit.encode(t, add_special_tokens=add_special_tokens) for t in texts]
        if truncation not in (None, False, "do_not_truncate"):
            limit = self.model_max_length if max_length is None else max_length
            rows = [row[:limit] if self.truncation_side == "right" else row[max(0, len(row) - limit):] for row in rows]
        masks = [[1] * len(row) for row in rows]
        if padding not in (False, "do_not_pad"):
            rows, masks = self._pad(rows, padding, max_length, padding_side or self.padding_side)
        encoded = BatchEncoding(input_ids=rows, attention_mask=masks)
        if return_attention_mask is False:
            del encoded["attention_mask"]
        for key, value in encoded.items():
            encoded[key] = _as_tensors(value if batch else value[0], return_tensors, key, batch)
        return encoded

    def _pad(self, rows: list[list[int]], padding: bool | str, max_length: int | None, side: str):
        if padding not in (True, "longest", "max_length"):
            raise ValueError(f"padding={padding!r}: use True / 'longest', 'max_length', or False.")
        if side not in ("left", "right"):
            raise ValueError(f"padding_side={side!r}: use 'left' or 'right'.")
        if self.pad_token_id is None:
            raise ValueError("Asking to pad but the tokenizer has no padding token: set one the vocabulary has, "
                             "e.g. tokenizer.pad_token = tokenizer.eos_token.")
        width = max(len(row) for row in rows)
        if padding == "max_length":            # rows already longer stay as they are, as in transformers
            width = self.model_max_length if max_length is None else max_length
        padded, masks = [], []
        for row in rows:
            pad, ones = [self.pad_token_id] * max(0, width - len(row)), [1] * len(row)
            padded.append(pad + row if side == "left" else row + pad)
            masks.append([0] * len(pad) + ones if side == "left" else ones + [0] * len(pad))
        return padded, masks

    def encode(self, text: str, add_special_tokens: bool = True, return_tensors: str | None = None,
               **kwargs: Any) -> list[int] | torch.Tensor:
        """The ids of one text: a list, or with ``return_tensors="pt"`` a (1, seq) tensor."""
        return self(text, add_special_tokens=add_special_tokens, return_tensors=return_tensors, **kwargs)["input_ids"]

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[str]:
        """The raw vocabulary entries of ``text``, e.g. ``["Hello", "Ġworld"]`` (Ġ is a space)."""
        return self.convert_ids_to_tokens(self.kit.encode(text, add_special_tokens=add_special_tokens))

    def convert_ids_to_tokens(self, ids: int | Sequence[int] | torch.Tensor) -> str | list[str]:
        """The vocabulary entry of one id (a str) or of each id of a sequence (a list)."""
        ids = _plain(ids)
        return self.kit.id_to_token(ids) if isinstance(ids, int) else [self.kit.id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        """The id of one vocabulary entry, or of each of a list; an absent one gets ``unk_token_id``
        (None when the tokenizer has no unknown token)."""
        if not isinstance(tokens, str):
            return [self.convert_tokens_to_ids(t) for t in tokens]
        found = self.kit.token_to_id(tokens)
        return self.unk_token_id if found is None else found

    # --- ids to text ------------------------------------------------------------------------
    def decode(self, token_ids: int | Sequence[int] | torch.Tensor, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str | list[str]:
        """Text of an id, a list of ids, or a 0-d / 1-d tensor (``logits.argmax()`` works); a 2-d
        tensor or a list of lists decodes row by row (a list of str), as transformers 5 does."""
        ids = _plain(token_ids)
        if isinstance(ids, list) and ids and isinstance(ids[0], list):
            return self.batch_decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
        text = self.kit.decode(ids, skip_special_tokens=skip_special_tokens)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        for before, after in CLEAN_UP if clean else ():
            text = text.replace(before, after)
        return text

    def batch_decode(self, sequences: Sequence[Sequence[int]] | torch.Tensor, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """Text of each row of a (batch, seq) tensor or a list of id lists."""
        return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in _plain(sequences)]

    # --- chat -------------------------------------------------------------------------------
    def apply_chat_template(self, conversation: list[dict[str, Any]], tools: list[dict] | None = None,
                            add_generation_prompt: bool = False, tokenize: bool = True,
                            return_tensors: str | None = None, return_dict: bool = True,
                            **kwargs: Any) -> str | list[int] | torch.Tensor | BatchEncoding:
        """The checkpoint's chat template rendered on ``conversation`` (the kit's
        ``Tokenizer.apply_chat_template``). ``tokenize=False``: the prompt text. Otherwise its ids,
        encoded without adding special tokens (the template wrote them): with ``return_dict=True``
        (transformers 5's default) a BatchEncoding, else the ids alone (a list, or with
        ``return_tensors="pt"`` a (1, seq) tensor)."""
        refuse("apply_chat_template", kwargs, {
            "continue_final_message": "Render without the last message and append its text to the prompt yourself.",
            "chat_template": "The kit renders the checkpoint's own template (chat_template.jinja or "
                             "tokenizer_config.json); edit that file to use another.",
            "documents": "Put the documents' text into a message.",
            "padding": "Render each conversation, then pad the batch with tokenizer(texts, padding=True).",
            "truncation": "Keep conversations within the context yourself.",
            "return_assistant_tokens_mask": "Fine-tuning masks come from minillm.training.finetune.",
        })
        if conversation and isinstance(conversation[0], (list, tuple)):
            raise NotInKit("apply_chat_template: one conversation at a time in minillm.compat; loop over the batch.")
        text = self.kit.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, tools=tools)
        if not tokenize:
            return text
        encoded = self(text, add_special_tokens=False, return_tensors=return_tensors)
        return encoded if return_dict else encoded["input_ids"]

    def __getattr__(self, name: str):
        if name in ("save_pretrained", "add_special_tokens", "add_tokens", "push_to_hub", "train_new_from_iterator"):
            raise AttributeError(f"minillm.compat's tokenizer has no {name}(): it reads a checkpoint's tokenizer files "
                                 "and never changes them. Train a tokenizer with minillm.training.bpe.train_tokenizer.")
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (minillm.compat covers the part of "
                             "transformers' tokenizer that course notebooks use; the kit's own is tokenizer.kit).")

    def __repr__(self) -> str:
        return (f"minillm.compat tokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"len={len(self)}, eos_token={self.eos_token!r}, pad_token={self.pad_token!r}, "
                f"padding_side={self.padding_side!r})")


def _plain(ids: Any) -> Any:
    """Tensors and NumPy arrays (and their scalars) as Python ints and lists, nested lists kept nested."""
    if hasattr(ids, "tolist"):
        return ids.tolist()
    if isinstance(ids, (list, tuple)):
        return [_plain(i) for i in ids]
    return ids


def _as_tensors(value: list, return_tensors: str | None, key: str, batch: bool) -> Any:
    """``value`` as ``return_tensors`` asks: None keeps lists, "pt" a torch tensor (1, seq) or
    (batch, seq), "np" a NumPy array of that shape."""
    if return_tensors is None:
        return value
    rows = value if batch else [value]
    if len({len(row) for row in rows}) > 1:
        raise ValueError(f"the texts have {sorted({len(r) for r in rows})} tokens: rows of unequal length make no "
                         f"{key} tensor. Pass padding=True (and set tokenizer.pad_token if there is none).")
    if return_tensors == "pt":
        return torch.tensor(rows, dtype=torch.long)
    if return_tensors == "np":
        import numpy as np
        return np.array(rows, dtype=np.int64)
    raise NotInKit(f"return_tensors={return_tensors!r}: minillm.compat gives 'pt' (torch), 'np' (NumPy) or None (lists).")


class AutoTokenizer:
    """``AutoTokenizer.from_pretrained(source)``: the tokenizer of a checkpoint folder or hub id."""

    def __init__(self) -> None:
        raise TypeError("AutoTokenizer is made with AutoTokenizer.from_pretrained(folder or hub id).")

    @staticmethod
    def from_pretrained(source: str | os.PathLike, *, add_prefix_space: bool | None = None,
                        padding_side: str | None = None, revision: str | None = None,
                        **kwargs: Any) -> PreTrainedTokenizer:
        """Load the tokenizer of ``source`` (a folder, or a hub id through the kit's hub code,
        ``minillm.checkpoint.hub.resolve_source``; ``revision``: a branch, tag or commit of a hub id).
        ``add_prefix_space``: as the kit's
        ``load_tokenizer``; ``padding_side``: "right" (default unless tokenizer_config.json says)
        or "left"."""
        refuse("AutoTokenizer.from_pretrained", kwargs, {
            "trust_remote_code": "minillm runs only the tokenizer.json pipeline and never a checkpoint's code.",
            "cache_dir": "Set HF_HUB_CACHE, or pass a local folder.",
            "subfolder": "Pass the subfolder's path.",
        }, ignored=("use_fast", "legacy", "local_files_only", "token"))
        folder = resolve(source, revision)
        kit = Tokenizer(folder, add_prefix_space=add_prefix_space)
        return PreTrainedTokenizer(kit, str(source), padding_side)
