"""The ``minillm`` command: thin wrappers that parse arguments, call the library, and print.

    minillm logits SOURCE "text" --top-k 10
    minillm generate SOURCE "prompt" --max-new-tokens 50 --temperature 0.8 --top-k 40 --seed 0
    minillm scaling --models Qwen/Qwen2.5-0.5B Qwen/Qwen2.5-1.5B --stories 50 --out results/
    minillm quantize SOURCE --bits 16 8 4 3 2 --schemes tensor channel group
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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


DEFAULT_SCALING_MODELS = ["Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B"]


def cmd_scaling(args: argparse.Namespace) -> None:
    """Score the same stories with every model; write tables, a report and plots."""
    from . import data
    from .experiments.scaling import run_scaling, save_results

    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # hub ids come from the local cache only
        stories = data.bundled_texts(args.category)[: args.stories]
        source = f"the {args.category} bundled with minillm"
    else:
        stories = data.tinystories(args.stories)
        source = "TinyStories validation"
    print(f"{len(stories)} stories from {source}; models: {', '.join(args.models)}")
    results = run_scaling(args.models, stories, dtype=args.dtype, batch_tokens=args.batch_tokens, seed=args.seed)
    print(f"\n{'model':<32} {'non-emb params':>15} {'tokens':>8} {'perplexity':>11} {'95% CI':>17} {'bits/byte':>9}")
    for s in results.summaries:
        ci = f"{s.ppl_ci_low:.3f}-{s.ppl_ci_high:.3f}"
        print(f"{s.model:<32} {s.non_embedding_params:>15,} {s.tokens:>8,} {s.perplexity:>11.3f} {ci:>17} "
              f"{s.bits_per_byte:>9.4f}")
    if results.fit:
        print(f"power law: perplexity = {results.fit.coefficient:.4g} * N^{results.fit.exponent:.4f} "
              "(N = non-embedding parameters)")
    for path in save_results(results, args.out):
        print(f"wrote {path}")


def cmd_quantize(args: argparse.Namespace) -> None:
    """Perplexity and size of k-bit copies of a model on the bundled stories."""
    from . import data, plots
    from .experiments.quantization import perplexity_vs_bits
    from .experiments.scaling import write_csv

    model, tok = load_model(args.source, dtype="float32"), load_tokenizer(args.source)
    texts = data.bundled_texts(args.category)[: args.texts]
    print(f"{len(texts)} bundled {args.category} texts; {args.source}")
    rows = perplexity_vs_bits(model, tok, texts, tuple(args.bits), tuple(args.schemes), args.group_size, progress=True)
    print(f"\n{'bits':>4} {'scheme':>8} {'size MB':>9} {'perplexity':>11} {'bits/byte':>9}")
    for r in rows:
        print(f"{r.bits:>4} {r.scheme:>8} {r.size_mb:>9.2f} {r.perplexity:>11.3f} {r.bits_per_byte:>9.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (write_csv(args.out / "quantization.csv", rows),
                 plots.plot_quantization(rows, args.out / "perplexity_vs_bits.png")):
        print(f"wrote {path}")


def cmd_convert_llama2c(args: argparse.Namespace) -> None:
    """Write a llama2.c model.bin + tokenizer.bin as a Hugging Face Llama folder."""
    from .convert.llama2c import OUTPUT_FILES, convert

    out = convert(args.model_bin, args.tokenizer_bin, args.out_dir)
    for name in OUTPUT_FILES:
        print(f"wrote {out / name}")


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

    scaling = commands.add_parser("scaling", help="perplexity vs model size on the same stories")
    scaling.add_argument("--models", nargs="+", default=DEFAULT_SCALING_MODELS,
                         help="checkpoint folders or hub ids (default: %(default)s)")
    scaling.add_argument("--stories", type=int, default=50, help="how many stories (default 50)")
    scaling.add_argument("--out", type=Path, default=Path("scaling-results"), help="folder for tables and plots")
    scaling.add_argument("--offline", action="store_true",
                         help="no network: the bundled stories, and models from folders or the local cache")
    scaling.add_argument("--category", default="stories",
                         help="with --offline: which bundled texts (stories, news, code, poetry, instructions)")
    scaling.add_argument("--dtype", default="float32", choices=[*DTYPES, "auto"])
    scaling.add_argument("--batch-tokens", type=int, default=1024, help="tokens per scoring batch")
    scaling.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    scaling.set_defaults(run=cmd_scaling)

    quant = commands.add_parser("quantize", help="perplexity and size of k-bit copies of a model")
    quant.add_argument("source", help="a local checkpoint folder or a hub repo id")
    quant.add_argument("--bits", type=int, nargs="+", default=[32, 16, 8, 6, 4, 3, 2])
    quant.add_argument("--schemes", nargs="+", default=["tensor", "channel", "group"],
                       choices=["tensor", "channel", "group"])
    quant.add_argument("--group-size", type=int, default=64)
    quant.add_argument("--texts", type=int, default=20, help="how many bundled texts to score (default 20)")
    quant.add_argument("--category", default="stories", help="which bundled texts (stories, news, code, ...)")
    quant.add_argument("--out", type=Path, default=Path("quantization-results"))
    quant.set_defaults(run=cmd_quantize)

    llama2c = commands.add_parser("convert-llama2c", help="turn a llama2.c model into a Hugging Face folder")
    llama2c.add_argument("model_bin", type=Path, help="llama2.c model file (legacy export), e.g. stories15M.bin")
    llama2c.add_argument("tokenizer_bin", type=Path, help="llama2.c tokenizer file, e.g. tokenizer.bin")
    llama2c.add_argument("out_dir", type=Path, help="folder to write (created if needed)")
    llama2c.set_defaults(run=cmd_convert_llama2c)
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
