"""Text to token ids and back, and chat messages to prompt text.

A language model never sees characters. It sees a list of integer *token ids*, each one
a row of its embedding table. The tokenizer is the fixed, non-neural part that turns
text into those ids (``encode``) and ids back into text (``decode``). The mapping was
learned once, before the model was trained (byte-pair encoding merges frequent pieces
of text into single tokens), and a model only works with the exact tokenizer it was
trained with, so it ships in the checkpoint folder:

* ``tokenizer.json`` holds the whole pipeline (normalizer, pre-tokenizer, BPE vocabulary
  and merges, decoder, post-processor) and is run by the ``tokenizers`` library;
* ``tokenizer_config.json`` names the *special tokens* (``bos_token``: beginning of
  sequence, ``eos_token``: end of sequence, ``pad_token``) and holds the *chat template*.

Older checkpoints (GPT-2's original upload) may instead ship the two halves of a byte-level
BPE tokenizer: ``vocab.json`` (token -> id) and ``merges.txt`` (the merges, most frequent
first). They are assembled here into the same pipeline GPT-2 uses: split into words with a
byte-level pre-tokenizer, merge, decode bytes back. GPT-2 adds no BOS token and ends every
text with ``<|endoftext|>``, which is its EOS token even when the config does not say so.

Chat models were trained on conversations written in a fixed format with special tokens
around each turn, for Qwen2.5::

    <|im_start|>user
    Hi!<|im_end|>
    <|im_start|>assistant

The chat template is a small Jinja program stored with the checkpoint that writes that
format from a list of ``{"role": ..., "content": ...}`` messages. It is rendered here the
way ``transformers`` renders it, so a prompt built by minillm is character for character
the one the model was trained on. Base (non-chat) models have no template: give them
plain text to continue.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import re
from pathlib import Path
from typing import Any, Iterable

from tokenizers import Tokenizer as _BackendTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors

from minillm.checkpoint.chat_template import TemplateFailure, render
from minillm.checkpoint.hub import resolve_source
from minillm.errors import InputError

GPT2_EOS = "<|endoftext|>"   # GPT-2's end of text, its only special token


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's spelling of bytes as characters, inverted: character -> byte. Bytes that print
    (! to ~, ¡ to ¬, ® to ÿ) stand for themselves; the other 68 are written as chr(256 + n), the n-th of them."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(others)}}


_BYTE_OF_CHAR = _byte_level_alphabet()


class TokenizerError(InputError):
    """Tokenizer files are missing or unreadable, or an encode/decode/chat call got bad input."""


class Tokenizer:
    """The tokenizer of one checkpoint folder: ``tokenizer.json`` (or GPT-2's older
    ``vocab.json`` + ``merges.txt``) + ``tokenizer_config.json``.

    ``add_prefix_space``: put a space in front of a text that does not start with one, so
    that its first word is tokenized like every later word (GPT-2: "go" -> [2188] but
    " go" -> [467]). None: as ``tokenizer_config.json`` says (default off). Only byte-level
    BPE tokenizers (GPT-2's, Qwen2's) have the option.

    Attributes: ``folder`` (Path), ``bos_token`` / ``eos_token`` / ``pad_token`` (str or None)
    and their ids ``bos_token_id`` / ``eos_token_id`` / ``pad_token_id`` (int or None),
    ``unk_token`` (str, or None when absent from the vocabulary), ``chat_template`` (the default
    Jinja template, str or None), ``config`` (tokenizer_config.json with special_tokens_map.json
    merged in, as read).
    """

    def __init__(self, folder: str | os.PathLike, add_prefix_space: bool | None = None):
        self.folder = Path(folder)
        self.config = config = _read_config(self.folder)
        self._backend = _read_backend(self.folder, config)
        _set_prefix_space(self._backend, self.folder, add_prefix_space, config.get("add_prefix_space"))
        self._vocab_size = self._backend.get_vocab_size(with_added_tokens=True)  # asked once: it is slow
        # token_text() decodes a token after this one, so that a leading space survives.
        self._anchor = (self._backend.encode("a", add_special_tokens=False).ids or [0])[-1]
        self._anchor_text = self._backend.decode([self._anchor], skip_special_tokens=False)
        # token_bytes(): the added tokens' texts, and whether entries spell bytes (byte-level BPE).
        self._added_text = {i: t.content for i, t in self._backend.get_added_tokens_decoder().items()}
        self._byte_level = isinstance(self._backend.decoder, decoders.ByteLevel)
        # Encode every text in full: no silent truncation or padding saved in the file.
        self._backend.no_truncation()
        self._backend.no_padding()

        self._backend.encode_special_tokens = bool(config.get("split_special_tokens", False))
        # Every "*_token" entry (bos_token, eos_token, pad_token, unk_token and model-specific
        # ones such as image_token) as plain text; these are also the template's variables.
        self._special_tokens = {
            key: _token_text(value)
            for key, value in config.items()
            if key.endswith("_token") and _token_text(value) is not None
        }
        if "eos_token" not in self._special_tokens and self._backend.token_to_id(GPT2_EOS) is not None:
            # GPT-2's own tokenizer_config.json names no special token at all; like transformers'
            # GPT2Tokenizer, take <|endoftext|> as its end of text.
            self._special_tokens["eos_token"] = GPT2_EOS
        self.bos_token = self._special_tokens.get("bos_token")
        self.eos_token = self._special_tokens.get("eos_token")
        self.pad_token = self._special_tokens.get("pad_token")
        self.bos_token_id = self._token_id("bos_token")
        self.eos_token_id = self._token_id("eos_token")
        self.pad_token_id = self._token_id("pad_token")
        unk = self._special_tokens.get("unk_token")   # byte-level BPE needs none: absent from some vocabularies
        self.unk_token = unk if unk is not None and self._backend.token_to_id(unk) is not None else None

        # The post-processor in tokenizer.json may already add BOS/EOS (Llama's does). Add them
        # here only when the config asks for them and the post-processor does not. (transformers 5
        # ignores add_bos_token/add_eos_token when tokenizer.json exists; transformers 4 honoured them.)
        added_by_file = self._backend.encode("", add_special_tokens=True).ids
        self._add_bos = (
            bool(config.get("add_bos_token")) and self.bos_token_id is not None
            and added_by_file[:1] != [self.bos_token_id]
        )
        self._add_eos = (
            bool(config.get("add_eos_token")) and self.eos_token_id is not None
            and added_by_file[-1:] != [self.eos_token_id]
        )

        self._chat_templates, self._template_file = _read_chat_templates(self.folder, config)
        self.chat_template = self._chat_templates.get("default")

    def _token_id(self, key: str) -> int | None:
        token = self._special_tokens.get(key)
        if token is None:
            return None
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise TokenizerError(
                f"{self.folder / 'tokenizer_config.json'}: {key} {token!r} is not in the vocabulary "
                "of tokenizer.json. The two files must come from the same checkpoint."
            )
        return token_id

    @property
    def vocab_size(self) -> int:
        """Number of tokens, added special tokens included (``len()`` of a transformers tokenizer).

        The model's embedding table may have more rows (Qwen2.5: 151,936 rows, 151,665 tokens):
        the extra rows are padding that no text encodes to.
        """
        return self._vocab_size

    @functools.cached_property
    def base_vocab_size(self) -> int:
        """Number of tokens without the ones added on top of the BPE vocabulary (Qwen2.5: 151,643)."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def vocabulary(self, with_added_tokens: bool = True) -> dict[str, int]:
        """Every vocabulary entry and its id, e.g. ``{"Ġworld": 995, ...}``. ``with_added_tokens=False``
        leaves out the tokens added on top of the BPE vocabulary (Qwen2.5: 151,643 of 151,665)."""
        return self._backend.get_vocab(with_added_tokens=with_added_tokens)

    def token_to_id(self, token: str) -> int | None:
        """The id of the raw vocabulary entry ``token`` (``"Ġworld"``, ``"<|im_end|>"``), None if absent."""
        return self._backend.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (list of ints, length = number of tokens).

        ``add_special_tokens`` adds what the checkpoint puts around every text (a BOS id in
        front for Llama-style tokenizers, nothing for Qwen2.5). Special tokens written in the
        text itself, like ``"<|im_end|>"``, become their single special id.
        """
        return self.encode_with_offsets(text, add_special_tokens)[0]

    def encode_with_offsets(self, text: str, add_special_tokens: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of ``text`` and, for each, the ``(start, end)`` character span of ``text`` it
        covers: ``text[start:end]`` is what the token stands for (a special token added around
        the text covers ``(0, 0)``). Tokens that hold parts of one multi-byte character (an emoji
        in byte-level BPE) each report that whole character. Used to find which tokens of a
        joint encoding belong to which part of the text.
        """
        if not isinstance(text, str):
            raise TokenizerError(
                f"encode() takes a str, got {type(text).__name__}. Encode a batch one text at a time."
            )
        encoding = self._backend.encode(text, add_special_tokens=add_special_tokens)
        ids, offsets = list(encoding.ids), list(encoding.offsets)
        if add_special_tokens and self._add_bos:
            ids, offsets = [self.bos_token_id] + ids, [(0, 0)] + offsets
        if add_special_tokens and self._add_eos:
            ids, offsets = ids + [self.eos_token_id], offsets + [(0, 0)]
        return ids, offsets

    def decode(self, ids: Iterable[int] | int, skip_special_tokens: bool = False) -> str:
        """Text of a list of token ids (a 1-D tensor works too); special tokens kept unless skipped."""
        return self._backend.decode(self._check_ids(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str:
        """The raw vocabulary entry, e.g. ``"Ġworld"`` (byte-level BPE writes a space as ``Ġ``)."""
        (token_id,) = self._check_ids([token_id])
        token = self._backend.id_to_token(token_id)
        if token is None:
            raise TokenizerError(f"token id {token_id} has no entry in {self.folder / 'tokenizer.json'}.")
        return token

    def token_text(self, token_id: int) -> str:
        """What one token contributes to a text, leading space included, e.g. ``" world"``.

        ``decode([token_id])`` alone can lose a leading space: SentencePiece-style decoders
        (Llama, stories260K) strip the space at the start of a text. So the token is decoded
        after a fixed anchor token and the anchor's text is cut off. A token that holds only
        part of a multi-byte character (emoji are often split over several byte-level
        tokens) comes out as the replacement character U+FFFD.
        """
        (token_id,) = self._check_ids([token_id])
        both = self._backend.decode([self._anchor, token_id], skip_special_tokens=False)
        return both[len(self._anchor_text):] if both.startswith(self._anchor_text) else self.decode([token_id])

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes of text one token stands for, exactly, also when it holds only part of a
        character (``token_text`` gives U+FFFD for those): byte-level BPE tokens (GPT-2, Qwen2.5) spell
        one byte per character of their vocabulary entry (``"ðŁ"`` is b"\\xf0\\x9f"); byte-fallback
        tokens (``"<0xF0>"``) one byte; special tokens their text; any other token its ``token_text``."""
        if token_id in self._added_text:
            return self._added_text[token_id].encode("utf-8")
        token = self.id_to_token(token_id)
        if self._byte_level and all(c in _BYTE_OF_CHAR for c in token):
            return bytes(_BYTE_OF_CHAR[c] for c in token)
        if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
            return bytes([int(token[3:5], 16)])
        return self.token_text(token_id).encode("utf-8")

    def _check_ids(self, ids: Iterable[int] | int) -> list[int]:
        if isinstance(ids, int):
            ids = [ids]
        try:
            ids = [operator.index(i) for i in ids]
        except TypeError as err:
            raise TokenizerError(
                f"token ids must be a flat list of ints (or a 1-D integer tensor): {err}"
            ) from err
        size = self.vocab_size
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise TokenizerError(
                f"token ids {bad[:5]} are out of range: this tokenizer has ids 0..{size - 1}. "
                "Ids past the tokenizer's vocabulary can come from padding rows of a larger embedding "
                "table, or from a tokenizer that does not belong to the model."
            )
        return ids

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = False,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """Render ``messages`` with the checkpoint's chat template; returns the prompt text.

        ``messages`` is a list of ``{"role": "system" | "user" | "assistant" | "tool",
        "content": str}`` dicts. ``add_generation_prompt=True`` ends the text with the header
        of an assistant turn, so that the model writes the reply next. ``tools`` is an optional
        list of JSON-schema dicts for templates that support tool calling.

        The text already holds the template's special tokens: encode it with
        ``add_special_tokens=False`` (as transformers does) so that no second BOS is added.
        """
        if not self._chat_templates:
            raise TokenizerError(
                f"the tokenizer in {self.folder} has no chat template, so this is probably a base "
                "(pretrained-only) model that was never trained on conversations. Give it plain "
                "text to continue, or use an Instruct/chat model."
            )
        messages = _check_messages(messages)
        if tools is not None and not (
            isinstance(tools, (list, tuple)) and all(isinstance(t, dict) for t in tools)
        ):
            raise TokenizerError("tools must be a list of JSON-schema dicts (one per function), or None.")
        name = "tool_use" if tools is not None and "tool_use" in self._chat_templates else "default"
        if name not in self._chat_templates:
            raise TokenizerError(
                f"{self._template_file} holds several chat templates "
                f"({', '.join(sorted(self._chat_templates))}) and none is named 'default'."
            )
        try:
            return render(self._chat_templates[name], dict(
                messages=messages,
                tools=tools,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self._special_tokens,
            ))
        except TemplateFailure as err:
            raise TokenizerError(f"the chat template in {self._template_file} {err}") from err

    def __repr__(self) -> str:
        return (
            f"Tokenizer(folder={str(self.folder)!r}, vocab_size={self.vocab_size}, "
            f"bos={self.bos_token!r}, eos={self.eos_token!r}, "
            f"chat_template={'yes' if self._chat_templates else 'no'})"
        )


def load_tokenizer(source: str | os.PathLike, add_prefix_space: bool | None = None) -> Tokenizer:
    """Load the tokenizer of ``source``: a checkpoint folder or a hub repo id such as
    ``"Qwen/Qwen2.5-0.5B-Instruct"`` (see :func:`minillm.checkpoint.hub.resolve_source`).
    ``add_prefix_space``: see :class:`Tokenizer`."""
    return Tokenizer(resolve_source(source), add_prefix_space=add_prefix_space)


def _read_backend(folder: Path, config: dict) -> _BackendTokenizer:
    """The `tokenizers` pipeline of ``folder``: from tokenizer.json, or else assembled from
    GPT-2's vocab.json + merges.txt."""
    path = folder / "tokenizer.json"
    if path.is_file():
        try:
            return _BackendTokenizer.from_file(str(path))
        except Exception as err:  # the tokenizers library raises a bare Exception
            raise TokenizerError(f"{path} could not be read by the tokenizers library: {err}") from err
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise TokenizerError(
            f"{folder} has no tokenizer.json (nor vocab.json + merges.txt, GPT-2's older layout). "
            "minillm reads the `tokenizers` library's tokenizer.json; a SentencePiece tokenizer.model or "
            "pickled tokenizer files alone are not supported. Download tokenizer.json from the model's hub "
            "page, or write it once with transformers: AutoTokenizer.from_pretrained(folder).save_pretrained(folder)."
        )
    try:
        backend = _BackendTokenizer(models.BPE.from_file(str(vocab), str(merges)))
    except Exception as err:
        raise TokenizerError(f"{vocab} + {merges} could not be read as a BPE vocabulary and merges: {err}") from err
    # GPT-2's pipeline: byte-level words in, merges, bytes back to text out.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = {_token_text(v) for k, v in config.items() if k.endswith("_token")} | {GPT2_EOS}
    specials |= {_token_text(v) for v in (config.get("added_tokens_decoder") or {}).values()}
    backend.add_special_tokens(sorted(t for t in specials if t and backend.token_to_id(t) is not None))
    return backend


def _set_prefix_space(backend: _BackendTokenizer, folder: Path, wanted: bool | None, configured) -> None:
    """Switch the byte-level pre-tokenizer's add_prefix_space to ``wanted`` (the caller's
    choice) or else to the config's ``add_prefix_space`` (when the config has one)."""
    value = wanted if wanted is not None else configured
    if value is None:
        return
    pre = backend.pre_tokenizer
    if isinstance(pre, pre_tokenizers.ByteLevel):
        pre.add_prefix_space = bool(value)
    elif wanted is not None:
        raise TokenizerError(
            f"add_prefix_space applies to byte-level BPE tokenizers (GPT-2, Qwen2); the tokenizer in "
            f"{folder} splits text with {type(pre).__name__}. Leave add_prefix_space out."
        )


def _read_json(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TokenizerError(f"{path} could not be read as JSON: {err}") from err
    if not isinstance(raw, dict):
        raise TokenizerError(f"{path} must hold a JSON object, not {type(raw).__name__}.")
    return raw


def _read_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TokenizerError(f"{path} could not be read as a UTF-8 chat template: {err}") from err


def _read_config(folder: Path) -> dict:
    """tokenizer_config.json (empty if absent). Older checkpoints name their special tokens in
    special_tokens_map.json instead; like transformers, that file is read only when the config
    has no ``added_tokens_decoder``, and its entries win."""
    path = folder / "tokenizer_config.json"
    config = _read_json(path) if path.is_file() else {}
    legacy = folder / "special_tokens_map.json"
    if "added_tokens_decoder" not in config and legacy.is_file():
        config.update(_read_json(legacy))
    return config


def _token_text(value: Any) -> str | None:
    """A special token is saved as a string or as {"content": "<s>", "lstrip": false, ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_chat_templates(folder: Path, config: dict) -> tuple[dict[str, str], Path]:
    """Named chat templates ({"default": ..., "tool_use": ...}) and the file they came from.

    transformers 5 saves the template as chat_template.jinja (extra named ones under
    additional_chat_templates/); older checkpoints keep it in tokenizer_config.json, as a
    string or as a list of {"name", "template"} dicts. Template files win over the config.
    """
    templates = {}
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        templates["default"] = _read_template(jinja_file)
    for path in sorted((folder / "additional_chat_templates").glob("*.jinja")):
        templates[path.stem] = _read_template(path)
    if templates:
        return templates, jinja_file if "default" in templates else folder / "additional_chat_templates"
    raw = config.get("chat_template")
    if isinstance(raw, list):
        templates = {entry["name"]: entry["template"] for entry in raw}
    elif isinstance(raw, str):
        templates = {"default": raw}
    return templates, folder / "tokenizer_config.json"


def _check_messages(messages: Any) -> list[dict]:
    """Validate the messages; return copies without None values (as transformers does)."""
    example = "[{'role': 'user', 'content': 'Hi!'}]"
    if not isinstance(messages, (list, tuple)) or not messages:
        raise TokenizerError(f"messages must be a non-empty list of message dicts, e.g. {example}.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise TokenizerError(
                f"messages[{i}] is {message!r}; each message must be a dict with a string 'role' "
                f"('system', 'user', 'assistant' or 'tool') and a 'content', e.g. {example}."
            )
        if message.get("content") is None and "tool_calls" not in message:
            raise TokenizerError(f"messages[{i}] (role {message['role']!r}) has no 'content'.")
    return [{key: value for key, value in m.items() if value is not None} for m in messages]
