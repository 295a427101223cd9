"""``minillm logits | surprise | generate | attention | lens | convert-llama2c``: one model, one text."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minillm.checkpoint.generation_config import GenerationConfig
from minillm.checkpoint.loading import load_model_and_tokenizer
from minillm.checkpoint.safe_io import check_output_file, check_output_folder, refuse_to_overwrite
from minillm.cli.args import (HelpFormatter, add_overwrite, add_source, in_flags, non_negative_float, non_negative_int,
                              positive_int, probability, said_in_flags)
from minillm.errors import InputError

GENERATE_FLAGS = {"max_new_tokens": "--max-new-tokens", "temperature": "--temperature", "top_k": "--top-k",
                  "top_p": "--top-p", "seed": "--seed"}


def _require_text(text: str, example: str) -> None:
    """The commands refuse an empty text before loading anything."""
    if not text:
        raise InputError(f"the text is empty: give the model at least one character to read, e.g. {example}.")


def cmd_logits(args: argparse.Namespace) -> None:
    """Print the next-token table after the text: rank, token, id, logit, probability."""
    from minillm.inference.scoring import next_tokens

    _require_text(args.text, '"Once upon a time"')
    model, tok = load_model_and_tokenizer(args.source, dtype=args.dtype, packed=True)
    print(next_tokens(model, tok, args.text, args.top_k, chat=args.chat))


def cmd_surprise(args: argparse.Namespace) -> None:
    """Print every token of the text with its surprise given the tokens before it."""
    from minillm.inference.scoring import score

    _require_text(args.text, '"Once upon a time, there was a fox."')
    if args.chat and args.context is None:
        raise InputError("--chat needs --context: the user message that the text answers, e.g. "
                         "--context \"Tell me a story.\" --chat")
    model, tok = load_model_and_tokenizer(args.source, dtype=args.dtype, packed=True)
    print(score(model, tok, args.text, context=args.context, chat=args.chat, top_k=args.top_k))


def cmd_generate(args: argparse.Namespace) -> None:
    """Stream a continuation of the prompt to stdout. With --chat the special tokens are kept
    (``<|im_start|>assistant`` and the like), so the student sees where the model's reply starts."""
    from minillm.inference.generate import default_eos_token_ids, encode_prompt, sampling_settings, stream

    _require_text(args.text, '"Once upon a time"')
    model, tok = load_model_and_tokenizer(args.source, dtype=args.dtype, packed=True)
    ids = encode_prompt(tok, args.text, args.chat)
    settings, note = sampling_settings(getattr(model, "generation_config", None) or GenerationConfig(),
                                       args.temperature, args.top_k, args.top_p)
    if note:
        print(in_flags(note, GENERATE_FLAGS), file=sys.stderr)
    # Stop where the checkpoint says (generation_config.json, else config.json), else at the tokenizer's EOS.
    stop = default_eos_token_ids(model) or ((tok.eos_token_id,) if tok.eos_token_id is not None else ())
    with said_in_flags(GENERATE_FLAGS):
        stream(model, tok, ids, lambda text: print(text, end="", flush=True), skip_special_tokens=not args.chat,
               max_new_tokens=args.max_new_tokens, seed=args.seed, eos_token_id=stop, tokenizer_size=tok.vocab_size,
               **settings)


def cmd_attention(args: argparse.Namespace) -> None:
    """Save one layer's attention maps (one head, or all heads in a grid) for the text as a PNG."""
    from minillm.reports.attention import plot_attention

    check_output_file(args.out)   # before the model is loaded
    model, tok = load_model_and_tokenizer(args.source, dtype=args.dtype)
    print(f"wrote {plot_attention(model, tok, args.text, args.out, args.layer, args.head)}")


def cmd_lens(args: argparse.Namespace) -> None:
    """Print the logit lens: the most likely next tokens after the text if the model stopped after each block."""
    from minillm.inference.inspect import logit_lens

    model, tok = load_model_and_tokenizer(args.source, dtype=args.dtype)
    print(logit_lens(model, tok, args.text, args.top_k))


def cmd_convert_llama2c(args: argparse.Namespace) -> None:
    """Write a llama2.c model.bin + tokenizer.bin as a Hugging Face Llama folder."""
    from minillm.checkpoint.llama2c import OUTPUT_FILES, convert

    check_output_folder(args.out_dir, "out_dir")   # before reading the model, not after
    if not args.overwrite:
        refuse_to_overwrite(args.out_dir, "files (a model?)", out="out_dir")
    out = convert(args.model_bin, args.tokenizer_bin, args.out_dir)
    for name in OUTPUT_FILES:
        print(f"wrote {out / name}")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Declare this group's commands."""
    chat = "wrap the text as a user message in the chat template"
    logits = commands.add_parser("logits", formatter_class=HelpFormatter, help="the most likely next tokens after a text")
    add_source(logits)
    logits.add_argument("--chat", action="store_true", help=chat)
    logits.add_argument("--top-k", type=positive_int, default=10, help="how many rows to show")
    logits.set_defaults(run=cmd_logits)

    surprise = commands.add_parser("surprise", formatter_class=HelpFormatter,
                                   help="each token of a text with its surprise (nats, bits, probability)")
    add_source(surprise, "the text to score")
    surprise.add_argument("--context", default=None,
                          help="text before it, read by the model but not scored (default: none)")
    surprise.add_argument("--top-k", type=non_negative_int, default=3, help="the model's most likely tokens shown per row")
    surprise.add_argument("--chat", action="store_true",
                          help="put --context in the chat template as a user message and score the text as "
                               "the assistant's reply (for instruct models)")
    surprise.set_defaults(run=cmd_surprise)

    gen = commands.add_parser("generate", formatter_class=HelpFormatter, help="continue a prompt")
    add_source(gen)
    gen.add_argument("--chat", action="store_true", help=chat)
    gen.add_argument("--max-new-tokens", type=non_negative_int, default=50, help="stop after this many new tokens")
    gen.add_argument("--temperature", type=non_negative_float, default=None,
                     help="0 = greedy; default: the checkpoint's generation_config.json (do_sample, temperature), "
                          "else 0")
    gen.add_argument("--top-k", type=positive_int, default=None,
                     help="keep the k most likely tokens; default: generation_config.json's when it samples, else off")
    gen.add_argument("--top-p", type=probability, default=None,
                     help="keep the nucleus of probability p; default: generation_config.json's when it samples, "
                          "else off")
    gen.add_argument("--seed", type=int, default=None, help="seed of the sampler (default: a fresh one each run)")
    gen.set_defaults(run=cmd_generate)

    attn = commands.add_parser("attention", formatter_class=HelpFormatter,
                               help="draw a layer's attention maps for a text (a PNG)")
    lens = commands.add_parser("lens", formatter_class=HelpFormatter,
                               help="the logit lens: the top next tokens after each block")
    for sub in (attn, lens):
        add_source(sub, "the text to feed the model")
    attn.add_argument("--layer", type=non_negative_int, default=0, help="which layer, counting from 0")
    attn.add_argument("--head", type=non_negative_int, default=None,
                      help="which head, counting from 0 (default: every head of the layer, in a grid)")
    attn.add_argument("--out", type=Path, required=True, help="the PNG file to write (required: no default)")
    attn.set_defaults(run=cmd_attention)
    lens.add_argument("--top-k", type=positive_int, default=5, help="tokens per layer")
    lens.set_defaults(run=cmd_lens)

    llama2c = commands.add_parser("convert-llama2c", formatter_class=HelpFormatter,
                                  help="turn a llama2.c model into a Hugging Face folder")
    llama2c.add_argument("model_bin", type=Path, help="llama2.c model file (legacy export), e.g. stories15M.bin")
    llama2c.add_argument("tokenizer_bin", type=Path, help="llama2.c tokenizer file, e.g. tokenizer.bin")
    llama2c.add_argument("out_dir", type=Path, help="folder to write (created if needed)")
    add_overwrite(llama2c, "replace what out_dir already holds (without it, an existing model is kept)")
    llama2c.set_defaults(run=cmd_convert_llama2c)
