"""Supervised fine-tuning: a base model becomes an instruct (chat) model.

A pretrained model continues text. An *instruct* model answers: given "Write a story about a
dragon." it writes the story and then stops. The tiny-story paper (and every chat model since)
gets there with a second, short training on (instruction, response) pairs, the same
next-token loss with two changes:

1. **A chat template.** Each pair is written in a fixed conversation format with special
   tokens around each turn; minillm uses ChatML, the format of Qwen2.5-Instruct::

       <|im_start|>user
       Write a story about a dragon.<|im_end|>
       <|im_start|>assistant
       Once upon a time ...<|im_end|>

   The template (Jinja, Hugging Face style, with ``add_generation_prompt``) is saved in the
   model's ``tokenizer_config.json``, so :meth:`minillm.Tokenizer.apply_chat_template`,
   ``score(..., chat=True)``, ``minillm generate --chat`` and ``transformers`` all render
   the prompt exactly as the model saw it in training.
2. **The loss on the reply only.** The prompt (everything up to and including
   ``<|im_start|>assistant\\n``) is input but never a target: the model is not taught to
   write instructions, only to answer them. The reply's tokens and the closing
   ``<|im_end|>`` are the targets, so the model also learns to *stop*. Each example's rendered
   prompt and reply are encoded together, once, and the targets start at the first token that
   ends inside the reply (by character offsets): exactly the tokens
   ``score(model, tok, reply, context=instruction, chat=True)`` scores. Encoding the reply on its
   own would differ where a token spans the boundary: Qwen2.5 merges the prompt's closing
   newline with a reply's leading one into one "\\n\\n" token (``tests/test_finetune.py`` checks it).

Special tokens. A tokenizer trained for pretraining only (like the tiny family's) has no
``<|im_start|>`` or ``<|im_end|>``. They are added as two new special tokens and the
embedding table gets two new rows, each the mean of the existing rows (a neutral start that
the fine-tuning then moves). Markers made of ordinary text ("User:", "### Response") would
need no new rows, but a story can contain those words, the model could not tell a marker
from text, and the end of a reply would be several tokens instead of one id to stop at.
Tokens the tokenizer already has (Qwen2.5's) are reused. ``<|im_end|>`` becomes the
tokenizer's ``eos_token`` (as in Qwen2.5-Instruct) and ``generation_config.json`` lists the
ids that end a reply: ``<|im_end|>`` and the base's end-of-text token.

Long replies. A window holds ``config.context + 1`` tokens. An example longer than that is
cut into consecutive windows (like a pretraining document): the first holds the instruction;
later ones continue the reply without it (the model trains on them as on plain text) and the
last ends with ``<|im_end|>``. Examples never share a window; a short one is padded and the
padding is never a target.

The data file is JSON Lines, one example per line, either
``{"instruction": "...", "response": "..."}`` or
``{"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]}``
whose last message is the assistant's reply (the one trained on; earlier turns are prompt).

Everything else (AdamW, warm-up and cosine, clipping, checkpoints, exact resuming) is
:mod:`minillm.training.train`'s loop, started from the base model's weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
from tokenizers import AddedToken
from tokenizers import Tokenizer as BackendTokenizer

from minillm.checkpoint.safe_io import holds_out
from minillm.checkpoint.tokenizer import Tokenizer, load_tokenizer
from minillm.errors import InputError
from minillm.inference.scoring import first_token_after
from minillm.data import decode_utf8
from minillm.models.gpt2 import GPT2
from minillm.models.qwen2 import Transformer
from minillm.training.checkpoints import STATE_JSON, config_for, load_initial, load_state
from minillm.training.config import TrainConfig
from minillm.training.train import RunState, TrainResult, run_loop
from minillm.training.windows import IGNORE, TrainingData, spread, token_fingerprint

TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"
# ChatML, as in Qwen2.5-Instruct but without its default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass
class Example:
    """One training pair: the conversation before the reply, and the reply."""

    prompt: list[dict]      # messages ({"role", "content"}) the reply answers; the last one the user's
    reply: str              # the assistant's answer: the only text the loss is taken on


def examples_from_pairs(pairs: list[tuple[str, str]]) -> list[Example]:
    """Examples from (instruction, response) pairs: one user message, one reply each."""
    return [Example([{"role": "user", "content": instruction}], response) for instruction, response in pairs]


MAX_LINE_BYTES = 1 << 20   # 1 MiB: some 250,000 tokens, far more than one conversation; the tokenizer of a
#                             51 MB line ran out of memory inside Rust, which ends the process without a word


def read_examples(path: str | Path) -> list[Example]:
    """The examples of a JSON Lines file (see the module docstring for the two layouts).

    Raises ValueError naming the file and line for a line that is not UTF-8, not JSON, not an
    example, or longer than MAX_LINE_BYTES."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"path={path}: no such file. Give a JSON Lines file with one "
                         '{"instruction": ..., "response": ...} object per line.')
    examples = []
    with open(path, "rb") as f:
        for number, line in enumerate(_lines(f, path), start=1):
            where = f"{path}, line {number}"
            text = decode_utf8(line, path, number)
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise InputError(f"{where} is not JSON ({err.msg}); write one JSON object per line.") from err
            examples.append(_example(record, where))
    if len(examples) < 2:
        raise InputError(f"{path} holds {len(examples)} examples; give at least two "
                         "(one to train on, one to validate on).")
    return examples


def _lines(f, path: Path):
    """The lines of the open binary file ``f``, never reading more than MAX_LINE_BYTES of one into memory."""
    number = 0
    while line := f.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES:
            raise InputError(f"{path}, line {number} is longer than {MAX_LINE_BYTES >> 20} MiB: a JSON Lines file holds "
                             "one example (one conversation) per line; split the text into several examples.")
        yield line


def _example(record, where: str) -> Example:
    pair = isinstance(record, dict) and all(isinstance(record.get(key), str) for key in ("instruction", "response"))
    if pair:
        if not record["response"]:
            raise InputError(f"{where}: the response is empty; there would be nothing to train on.")
        return Example([{"role": "user", "content": record["instruction"]}], record["response"])
    messages = record.get("messages") if isinstance(record, dict) else None
    ok = (isinstance(messages, list) and len(messages) >= 2
          and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                  for m in messages))
    if not ok:
        raise InputError(f'{where}: expected {{"instruction": str, "response": str}} or {{"messages": [{{"role": ..., '
                         '"content": ...}, ...]}} (at least a user message and the assistant\'s reply).')
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"]:
        raise InputError(f"{where}: the last message must be the assistant's (non-empty) reply, the text trained on; "
                         f"it is a {messages[-1]['role']!r} message.")
    return Example([{"role": m["role"], "content": m["content"]} for m in messages[:-1]], messages[-1]["content"])


# ---- the tokenizer and the model ------------------------------------------------------------------

def write_chat_tokenizer(base: Tokenizer, out: Path) -> Tokenizer:
    """Write ``base``'s tokenizer into ``out`` with the chat tokens (added if missing), ChatML
    as its chat template and ``<|im_end|>`` as its EOS; returns the new tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    backend = BackendTokenizer.from_file(str(base.folder / "tokenizer.json"))
    missing = [t for t in (TURN_START, TURN_END) if backend.token_to_id(t) is None]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    backend.save(str(out / "tokenizer.json"))
    config_path = base.folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config.pop("added_tokens_decoder", None)     # tokenizer.json lists the added tokens, new ones included
    end_of_text = base.eos_token or base.pad_token
    config.update(chat_template=CHAT_TEMPLATE, eos_token=TURN_END, pad_token=base.pad_token or end_of_text)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if (out / "chat_template.jinja").exists():      # it would win over tokenizer_config.json
        (out / "chat_template.jinja").unlink()
    return load_tokenizer(out)


def resize_embeddings(model: Transformer | GPT2, vocab_size: int) -> None:
    """Give ``model`` ``vocab_size`` token rows (embedding and LM head), in place. New rows are
    the mean of the old ones; existing rows and a tied head stay as they are."""
    old = model.embed_tokens.weight
    if vocab_size <= old.shape[0]:
        return

    def grown(weight: torch.Tensor) -> nn.Parameter:   # (vocab, hidden) -> (vocab_size, hidden)
        extra = weight.detach().mean(dim=0, keepdim=True).expand(vocab_size - weight.shape[0], -1)
        return nn.Parameter(torch.cat([weight.detach(), extra]), requires_grad=weight.requires_grad)

    model.embed_tokens.weight = grown(old)
    model.embed_tokens.num_embeddings = vocab_size
    if model.config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    else:
        model.lm_head.weight = grown(model.lm_head.weight)
    model.lm_head.out_features = vocab_size
    model.config = replace(model.config, vocab_size=vocab_size)


def end_of_text_id(base: Tokenizer) -> int | None:
    """The id that ends a document for ``base``: its EOS, or its padding token when its EOS is
    already ``<|im_end|>`` (Qwen2.5's tokenizer: ``<|endoftext|>``)."""
    return base.pad_token_id if base.eos_token == TURN_END else base.eos_token_id


def write_generation_config(out: Path, tok: Tokenizer, end_of_text: int | None) -> Path:
    """generation_config.json: the ids that end a reply (``<|im_end|>``, then end-of-text)."""
    stops = [tok.eos_token_id] + ([end_of_text] if end_of_text not in (None, tok.eos_token_id) else [])
    config = {"eos_token_id": stops, "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else stops[-1]}
    path = out / "generation_config.json"
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


# ---- the data -------------------------------------------------------------------------------------

def encode_example(tok: Tokenizer, example: Example) -> tuple[list[int], list[int]]:
    """(ids, targets) of one example: the rendered prompt and the reply encoded together, then ``<|im_end|>``.
    ``targets[i]`` is ``ids[i]`` from the first token that ends inside the reply (found by character
    offsets, as ``score(..., chat=True)`` finds it) and ``IGNORE`` before, so the reply's tokens are
    those chat scoring scores, a token straddling the prompt's end (Qwen2.5's "\n\n") included."""
    prompt = tok.apply_chat_template(example.prompt, add_generation_prompt=True)
    ids, offsets = tok.encode_with_offsets(prompt + example.reply, add_special_tokens=False)
    first = first_token_after(offsets, len(prompt))
    ids = ids + [tok.eos_token_id]
    return ids, [IGNORE] * first + ids[first:]


def example_windows(tok: Tokenizer, examples: list[Example], context: int) -> torch.Tensor:
    """All examples as windows (n, 2, context + 1): row 0 the ids (padded with the pad id),
    row 1 the targets (``IGNORE`` for prompt and padding). Each example takes as many windows
    as it needs; consecutive windows of one example share a token, as in pretraining."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    windows = []
    for example in examples:
        ids, targets = encode_example(tok, example)
        n = max(1, math.ceil((len(ids) - 1) / context))          # windows of context targets each
        length = n * context + 1
        both = torch.tensor([ids + [pad] * (length - len(ids)), targets + [IGNORE] * (length - len(ids))])
        for w in both.unfold(1, context + 1, context).transpose(0, 1):   # (n, 2, context + 1)
            if (w[1, 1:] != IGNORE).any():                    # a window of prompt only trains nothing
                windows.append(w)
    return torch.stack(windows)


def chat_data(tok: Tokenizer, examples: list[Example], config: TrainConfig,
              val_examples: list[Example] | None = None) -> TrainingData:
    """Training and validation windows: ``val_examples`` validate, or else the last
    ``val_fraction`` of ``examples``."""
    if val_examples:
        train_examples = examples
    else:
        if len(examples) < 2:
            raise InputError("give at least two examples: one to train on and one to validate on.")
        n_val = min(max(1, math.ceil(config.val_fraction * len(examples))), len(examples) - 1)
        train_examples, val_examples = examples[:-n_val], examples[-n_val:]
    train = example_windows(tok, train_examples, config.context)
    val = example_windows(tok, val_examples, config.context)
    first = val_examples[0].prompt
    return TrainingData(
        train=train, val=spread(val, config.eval_batches * config.batch_size),
        fingerprint=token_fingerprint(train, val),
        info=dict(kind="chat", train_examples=len(train_examples), val_examples=len(val_examples),
                  train_windows=len(train), val_windows=len(val),
                  train_targets=int((train[:, 1, 1:] != IGNORE).sum())),
        prompts=[tok.encode(tok.apply_chat_template(first, add_generation_prompt=True), add_special_tokens=False)],
        documents=[m["content"] for e in train_examples for m in e.prompt] + [e.reply for e in train_examples])


# ---- the runs -------------------------------------------------------------------------------------

@holds_out
def finetune(base: str | Path, examples: list[Example], config: TrainConfig, out: str | Path, until: int | None = None,
             progress: bool = True, val_examples: list[Example] | None = None) -> TrainResult:
    """Fine-tune the model in ``base`` (a folder or hub id) on ``examples``; save it in ``out``.

    The model's shape and vocabulary come from ``base`` (``config``'s shape fields are
    replaced); ``config`` gives the optimisation (steps, learning rate, batch, context...).
    ``out`` receives a Hugging Face folder with the chat tokenizer, ``generation_config.json``
    and the trainer state (so :func:`resume_finetune` can carry the run on exactly).
    ``val_examples``: the validation examples, when they are not the last ``config.val_fraction``
    of ``examples`` (give them when ``examples`` repeats, or a copy would validate itself).
    """
    out = Path(out)
    model, base_tok = load_initial(base, out)
    if not isinstance(model, (Transformer, GPT2)):
        raise InputError(f"{base} is not a transformer checkpoint (config.json + safetensors); fine-tuning needs one.")
    if (out / STATE_JSON).exists():
        raise InputError(f"out={out} already holds a training run; carry it on with resume_finetune(), or give "
                         "another out=NEW_FOLDER.")
    tok = write_chat_tokenizer(base_tok, out)
    resize_embeddings(model, max(model.config.vocab_size, tok.vocab_size))
    model.config = replace(model.config, eos_token_id=tok.eos_token_id)
    config = config_for(model, config)
    write_generation_config(out, tok, end_of_text_id(base_tok))
    added = tok.vocab_size - base_tok.vocab_size
    notes = [f"fine-tuning {base} on {len(examples)} examples in the ChatML template; the loss is taken on the "
             "replies only. " + (f"Added {added} special tokens ({TURN_START}, {TURN_END}) and as many embedding rows "
                                 "(the mean of the others)." if added else "The chat tokens were already there."),
             "The weights carry on from the base; the optimizer, learning-rate schedule and step count start afresh."]
    data = chat_data(tok, examples, config, val_examples)
    run = RunState.from_model(model, tok, config, data, provenance=dict(base=str(base)), notes=notes)
    return run_loop(run, data, out, until, progress)


@holds_out
def resume_finetune(out: str | Path, examples: list[Example], until: int | None = None, progress: bool = True,
                    steps: int | None = None, val_examples: list[Example] | None = None) -> TrainResult:
    """Carry on the fine-tuning run in ``out`` (same examples): bit for bit on CPU, as
    :func:`minillm.training.train.resume`; ``steps`` extends a finished run the same way."""
    out = Path(out)
    state, config, notes = load_state(out, steps, until)
    if state["data"].get("kind") != "chat":
        raise InputError(f"{out} holds a pretraining run; carry it on with resume().")
    tok = load_tokenizer(out)
    data = chat_data(tok, examples, config, val_examples)
    run = RunState.from_checkpoint(out, state, config, tok, data, notes)
    return run_loop(run, data, out, until, progress)

