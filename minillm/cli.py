"""The ``minillm`` command: thin wrappers that parse arguments, call the library, and print.

    minillm logits SOURCE "text" --top-k 10
    minillm generate SOURCE "prompt" --max-new-tokens 50 --temperature 0.8 --top-k 40 --seed 0
"""

from __future__ import annotations

import argparse
import sys

import torch

from .config import ConfigError
from .generate import generate
from .hub import SourceError
from .loading import DTYPES, load_model
from .tokenizer import TokenizerError, load_tokenizer
from .weights import WeightsError


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a local checkpoint folder or a hub repo id such as Qwen/Qwen2.5-0.5B")
    parser.add_argument("text", help="the text (prompt) to feed the model")
    parser.add_argument("--dtype", default="float32", choices=[*DTYPES, "auto"], help="weights' dtype (default float32)")
    parser.add_argument("--chat", action="store_true", help="wrap the text as a user message in the chat template")


def _encode(tok, text: str, chat: bool) -> list[int]:
    if chat:  # the rendered template already holds its special tokens
        prompt = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        return tok.encode(prompt, add_special_tokens=False)
    return tok.encode(text)


@torch.inference_mode()
def cmd_logits(args: argparse.Namespace) -> None:
    """Print the next-token table after the text: rank, token, id, logit, probability."""
    model, tok = load_model(args.source, dtype=args.dtype, packed=True), load_tokenizer(args.source)
    ids = _encode(tok, args.text, args.chat)
    logits = model(torch.tensor([ids]))[0, -1].float()       # (vocab,): scores for the next token
    probs = torch.softmax(logits, dim=-1)
    top = torch.topk(logits, min(args.top_k, logits.numel()))
    print(f"{len(ids)} prompt tokens; the next token after {args.text[-40:]!r}:")
    print(f"{'rank':>4}  {'token':<20} {'id':>7} {'logit':>9} {'prob':>8}")
    for rank, (logit, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        print(f"{rank:>4}  {tok.token_text(i)!r:<20} {i:>7} {logit:>9.3f} {probs[i].item():>8.4f}")


def cmd_generate(args: argparse.Namespace) -> None:
    """Stream a continuation of the prompt to stdout."""
    model, tok = load_model(args.source, dtype=args.dtype, packed=True), load_tokenizer(args.source)
    ids = _encode(tok, args.text, args.chat)
    prompt_text = tok.decode(ids, skip_special_tokens=True)
    printed = prompt_text
    new_ids: list[int] = []

    def show(token_id: int) -> None:
        # Decode prompt and continuation together: a token's leading space, or a character
        # split over several byte tokens, only comes out right in context.
        nonlocal printed
        new_ids.append(token_id)
        text = tok.decode(ids + new_ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):
            print(text[len(printed):], end="", flush=True)
            printed = text

    print(prompt_text, end="", flush=True)
    generate(model, ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
             top_p=args.top_p, seed=args.seed, eos_token_id=tok.eos_token_id, on_token=show)
    print()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minillm", description="See what is inside a Qwen2/Llama language model.")
    commands = parser.add_subparsers(dest="command", required=True)

    logits = commands.add_parser("logits", help="the most likely next tokens after a text")
    _add_model_args(logits)
    logits.add_argument("--top-k", type=int, default=10, help="how many rows to show (default 10)")
    logits.set_defaults(run=cmd_logits)

    gen = commands.add_parser("generate", help="continue a prompt")
    _add_model_args(gen)
    gen.add_argument("--max-new-tokens", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--seed", type=int, default=None)
    gen.set_defaults(run=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (SourceError, ConfigError, WeightsError, TokenizerError, ValueError) as err:
        print(f"minillm {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
