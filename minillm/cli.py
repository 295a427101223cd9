"""The ``minillm`` command: thin wrappers that parse arguments, call the library, and print.

    minillm logits SOURCE "text" --top-k 10
    minillm generate SOURCE "prompt" --max-new-tokens 50 --temperature 0.8 --top-k 40 --seed 0
    minillm surprise SOURCE "text" --top-k 3
    minillm surprise SOURCE "the reply" --context "the question" --chat
    minillm scaling --models Qwen/Qwen2.5-0.5B Qwen/Qwen2.5-1.5B --stories 50 --out results/
    minillm context --offline --out context-results
    minillm instructions --models M1 M2-Instruct --out instruction-results
    minillm categories --offline --texts wiki.txt --out category-results
    minillm quantize SOURCE --bits 16 8 4 3 2 --schemes tensor channel group
    minillm attention SOURCE "text" --layer 0 [--head 2] --out attention.png
    minillm lens SOURCE "text" --top-k 5
    minillm train --data stories.txt --out my-model --hidden 64 --layers 2 --steps 500
    minillm train --init data/models/tiny-m --data new.txt --out adapted --steps 200
    minillm finetune data/models/tiny-m --data pairs.jsonl --out tiny-m-chat
    minillm train --architecture gpt2 --tokenizer GPT2_FOLDER --hidden 64 --layers 6 --heads 8 --context 128 \
        --n-positions 1024 --data tinystories.txt --out tiny-gpt2     # the TinyStories paper's 3.6M GPT-2
    minillm sweep --shapes 32x2 64x2 96x3 --tokens 400000 --out sweep-results
    minillm compare-architectures --hidden 64 --layers 2 --mlp-window 8 --out architectures
    minillm train-family --out data/models --threads 1
    minillm finetune-family --out data/models --threads 1
    minillm make-exercises [--check]
    minillm grade SUBMISSIONS_DIR --out grades.csv
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from minillm.checkpoint.generation_config import GenerationConfig
from minillm.checkpoint.hub import SourceError, display_name
from minillm.checkpoint.loading import DTYPES, load_model_and_tokenizer
from minillm.checkpoint.safe_io import (build_then_move, check_output_file, check_output_folder, hold_output,
                                       refuse_to_overwrite)
from minillm.checkpoint.tokenizer import TokenizerError
from minillm.checkpoint.weights import WeightsError
from minillm.data import CATEGORIES
from minillm.inference.display import probability_text
from minillm.inference.generate import default_eos_token_ids, generate
from minillm.models.config import ConfigError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every option's default: argparse's "(default: ...)", unless the option's
    help already says in words what the default is; a flag (``--chat``) is off unless given."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default" in (action.help or "") or action.nargs == 0:   # a flag is off unless given
            return action.help or ""
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (``--top-k 0`` or ``--stories -3`` is refused, not run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (``nan``, ``inf`` and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def text_file(text: str) -> Path:
    """argparse type of ``--texts FILE``. ``quantize --texts 20`` once meant "20 texts": a bare
    number that names no file is refused, pointing to ``--stories``, the count's name now."""
    if text.isdigit() and not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text!r} is a count, but --texts takes a file of texts (as in minillm "
                                         f"scaling); give the number of texts with --stories {text}")
    return Path(text)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (``--max-new-tokens -1`` is refused)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def probability(text: str) -> float:
    """argparse type: a number in (0, 1] (``--top-p 0`` would keep no token)."""
    value = non_negative_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def bit_width(text: str) -> int:
    """argparse type: a bit width quantize can build, 1..32 (32: full precision), checked
    before the model is loaded and scored."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 32:
        raise argparse.ArgumentTypeError(f"must be 1..32 (32: the unquantized model); got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (``--timeout 0`` would fail every student)."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be greater than 0, got 0")
    return value


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a local checkpoint folder or a hub repo id such as Qwen/Qwen2.5-0.5B")
    parser.add_argument("text", help="the text (prompt) to feed the model")
    parser.add_argument("--dtype", default="float32", choices=[*DTYPES, "auto"],
                        help="weights' dtype; auto: the checkpoint's own")
    parser.add_argument("--chat", action="store_true", help="wrap the text as a user message in the chat template")


def _encode(tok, text: str, chat: bool) -> list[int]:
    if not text:
        raise ValueError("the text is empty: give the model at least one character to read, e.g. \"Once upon a time\".")
    if chat:  # the rendered template already holds its special tokens
        prompt = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        return tok.encode(prompt, add_special_tokens=False)
    return tok.encode(text)


@torch.inference_mode()
def cmd_logits(args: argparse.Namespace) -> None:
    """Print the next-token table after the text: rank, token, id, logit, probability."""
    model, tok = load_model_and_tokenizer(args.source, dtype=args.dtype, packed=True)
    ids = _encode(tok, args.text, args.chat)
    logits = model(torch.tensor([ids]))[0, -1].float()       # (vocab,): scores for the next token
    probs = torch.softmax(logits, dim=-1)
    top = torch.topk(logits, min(args.top_k, logits.numel()))
    print(f"{len(ids)} prompt tokens; the next token after {args.text[-40:]!r}:")
    print(f"{'rank':>4}  {'token':<20} {'id':>7} {'logit':>9} {'prob':>9}")
    for rank, (logit, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        print(f"{rank:>4}  {tok.token_text(i)!r:<20} {i:>7} {logit:>9.3f} {probability_text(probs[i].item()):>9}")


def cmd_surprise(args: argparse.Namespace) -> None:
    """Print every token of the text with its surprise given the tokens before it."""
    from minillm.inference.scoring import score

    if not args.text:
        raise ValueError("the text is empty: give a text to score, e.g. \"Once upon a time, there was a fox.\"")
    if args.chat and args.context is None:
        raise ValueError("--chat needs --context: the user message that the text answers, e.g. "
                         "--context \"Tell me a story.\" --chat")
    model, tok = load_model_and_tokenizer(args.source, dtype=args.dtype, packed=True)
    result = score(model, tok, args.text, context=args.context, chat=args.chat, top_k=args.top_k)
    print(f"{result.n_tokens} tokens scored ({result.protocol}); surprise = -log p(token | the tokens before it)")
    print(f"{'pos':>4}  {'token':<16} {'id':>7} {'nats':>7} {'bits':>7} {'prob':>8}  model's top {args.top_k}")
    for row in result.rows:
        top = ", ".join(f"{text!r} {probability_text(prob)}" for text, _, prob in row.top)
        print(f"{row.position:>4}  {row.token!r:<16} {row.token_id:>7} {row.surprise:>7.3f} "
              f"{row.surprise / math.log(2):>7.3f} {probability_text(row.prob):>8}  {top}")
    print(f"total {result.total_nll:.3f} nats over {result.n_tokens} tokens: perplexity {result.perplexity:.3f}, "
          f"{result.bits_per_byte:.4f} bits per byte ({result.n_bytes} bytes)")


def cmd_generate(args: argparse.Namespace) -> None:
    """Stream a continuation of the prompt to stdout. With --chat the special tokens are kept
    (``<|im_start|>assistant`` and the like), so the student sees where the model's reply starts."""
    model, tok = load_model_and_tokenizer(args.source, dtype=args.dtype, packed=True)
    ids = _encode(tok, args.text, args.chat)
    context = model.config.max_position_embeddings
    if len(ids) + args.max_new_tokens > context:
        raise ValueError(f"the prompt ({len(ids)} tokens) + --max-new-tokens {args.max_new_tokens} exceeds the "
                         f"model's context of {context} tokens; give a smaller --max-new-tokens.")
    skip_special = not args.chat
    printed = ""          # the prompt is printed with the first new token, once the settings have been checked
    new_ids: list[int] = []

    def show(token_id: int) -> None:
        # Decode prompt and continuation together: a token's leading space, or a character
        # split over several byte tokens, only comes out right in context.
        nonlocal printed
        new_ids.append(token_id)
        text = tok.decode(ids + new_ids, skip_special_tokens=skip_special)
        if not text.endswith("\ufffd"):
            print(text[len(printed):], end="", flush=True)
            printed = text

    temperature, top_k, top_p = _sampling_settings(args, getattr(model, "generation_config", None) or GenerationConfig())
    # Stop where the checkpoint says (generation_config.json, else config.json), else at the tokenizer's EOS.
    stop = default_eos_token_ids(model) or ((tok.eos_token_id,) if tok.eos_token_id is not None else ())
    generate(model, ids, max_new_tokens=args.max_new_tokens, temperature=temperature, top_k=top_k,
             top_p=top_p, seed=args.seed, eos_token_id=stop, on_token=show, tokenizer_size=tok.vocab_size)
    # What is still held back (the prompt, if nothing was generated; a character whose last bytes
    # never came) is printed as it is.
    print(tok.decode(ids + new_ids, skip_special_tokens=skip_special)[len(printed):])


def _sampling_settings(args: argparse.Namespace, generation_config) -> tuple[float, int | None, float | None]:
    """--temperature/--top-k/--top-p, each left out taken from generation_config.json's defaults
    (as transformers' generate() does); says on stderr which came from the file."""
    defaults = dict(zip(("temperature", "top_k", "top_p"), generation_config.sampling()))
    chosen = {name: getattr(args, name) if getattr(args, name) is not None else value
              for name, value in defaults.items()}
    from_file = [f"{name} {chosen[name]}" for name in defaults
                 if getattr(args, name) is None and generation_config.do_sample and chosen[name] is not None]
    if from_file:
        ignored = (f"; its repetition_penalty {generation_config.repetition_penalty} is not applied"
                   if generation_config.repetition_penalty not in (None, 1, 1.0) else "")
        print(f"[sampling with {', '.join(from_file)} from generation_config.json{ignored}; "
              "--temperature 0 for greedy]", file=sys.stderr)
    return chosen["temperature"], chosen["top_k"], chosen["top_p"]


DEFAULT_SCALING_MODELS = ["Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B"]


def _is_local(source: str) -> bool:
    return Path(source).expanduser().is_dir()


def _texts_for(args: argparse.Namespace, models: list[str], limit: int, default: str = "tinystories"):
    """The texts a scoring command runs on, as a TextSource, and print what they are.

    --texts FILE wins; then --category (bundled texts); then, with --offline or when the default
    is "bundled", the bundled stories; else TinyStories' validation stories from the hub (when
    the hub is out of reach and every model is a local folder: the bundled stories, said so).
    Texts a model trained on (its training record) are left out unless --include-seen.
    """
    from minillm import data
    from minillm.training.provenance import without_training_texts

    if getattr(args, "texts", None):
        source = data.read_text_file(args.texts)
    elif args.category or getattr(args, "offline", False) or default == "bundled":
        source = data.bundled_source(args.category or "stories")
    else:
        try:
            source = data.tinystories_source(limit)
        except SourceError as err:
            if not all(_is_local(m) for m in models):
                raise
            print(f"{err}\nThe models are local folders, so using the stories bundled with minillm instead.\n")
            source = data.bundled_source("stories")
    if not args.include_seen:
        source, message = without_training_texts(models, source)
        if message:
            print(message)
    source = source.first(limit)
    print(f"Scoring {source.label}{_fewer(source, limit)}.")
    return source


def _fewer(source, wanted: int) -> str:
    """A note for when ``source`` holds fewer texts than the ``wanted`` that --stories asked for, else ''."""
    return f" ({wanted} were asked for, with --stories or its default; there are no more)" if len(source) < wanted else ""


def _pick_models(args: argparse.Namespace) -> tuple[list[str], bool]:
    """(models, whether they are the shipped family standing in for the defaults).

    With no --models, the Qwen2.5 family when it is cached or the hub answers; otherwise the
    tiny family minillm ships (data/models). With --offline, hub ids come from the cache only.
    """
    from minillm.checkpoint.hub import hub_reachable, is_cached

    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # hub ids come from the local cache only
    if args.models is not None:
        return args.models, False
    if all(is_cached(m) for m in DEFAULT_SCALING_MODELS) or (not args.offline and hub_reachable()):
        return DEFAULT_SCALING_MODELS, False
    from minillm.course.family import FAMILY_DIR, SHAPES

    print(f"The default models ({', '.join(DEFAULT_SCALING_MODELS)}) are not in the Hugging Face cache "
          "and the hub cannot be reached (or --offline is set). To run them, download them once with "
          "`hf download Qwen/Qwen2.5-0.5B` (and 1.5B) or pass --models with local folders.\n"
          f"Using the tiny model family minillm ships instead ({FAMILY_DIR}), on bundled texts it "
          "never trained on.\n")
    return [_as_typed(FAMILY_DIR / name) for name in SHAPES], True


def _as_typed(path: Path) -> str:
    """``path`` as a user in this folder would type it (relative), so that the CSVs that record it hold
    no folder of this machine; absolute only when it lies outside the working folder."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else Path(relative).as_posix()


def _scaling_setup(args: argparse.Namespace) -> tuple[list[str], object]:
    """(models, texts) for `minillm scaling` and the experiments (see _pick_models, _texts_for)."""
    check_output_folder(args.out)   # before the scoring, not after
    models, family = _pick_models(args)
    return models, _texts_for(args, models, args.stories, default="bundled" if family else "tinystories")


def cmd_scaling(args: argparse.Namespace) -> None:
    """Score the same stories with every model; write tables, a report and plots."""
    from minillm.experiments.scaling import fit_sentence, run_scaling
    from minillm.reports.files import save_results

    args.models, source = _scaling_setup(args)
    print(f"models: {', '.join(args.models)}")
    results = run_scaling(args.models, source, dtype=args.dtype, batch_tokens=args.batch_tokens, seed=args.seed,
                          progress=args.progress)
    width = max(len("model"), *(len(s.model) for s in results.summaries))
    print(f"\n{'model':<{width}} {'non-emb params':>15} {'tokens':>8} {'perplexity':>11} {'95% CI':>17} {'bits/byte':>9}")
    for s in results.summaries:
        ci = f"{s.ppl_ci_low:.3f}-{s.ppl_ci_high:.3f}"
        print(f"{s.model:<{width}} {s.non_embedding_params:>15,} {s.tokens:>8,} {s.perplexity:>11.3f} {ci:>17} "
              f"{s.bits_per_byte:>9.4f}")
    print(fit_sentence(results))
    for warning in results.warnings:
        print(warning)
    for path in save_results(results, args.out):
        print(f"wrote {path}")


def cmd_context(args: argparse.Namespace) -> None:
    """The same continuation after 0..3 sentences of its story: does context lower perplexity?"""
    from minillm.experiments.context import run_context
    from minillm.reports.files import write_context

    models, source = _scaling_setup(args)
    results = run_context(models, source, max_k=args.max_k, dtype=args.dtype, seed=args.seed, progress=args.progress)
    print(f"\n{'model':<16} {'k':>4} {'stories':>7} {'perplexity':>11} {'95% CI':>17}   paired ratio to k=0 (95% CI)")
    for s in results.summaries:
        d = next((d for d in results.differences if d.b == s.condition and d.group == display_name(s.model)), None)
        ratio = f"{d.ratio:.3f} ({d.ratio_ci_low:.3f}-{d.ratio_ci_high:.3f}), better on {d.b_better}/{d.texts}" \
            if d else ""
        print(f"{display_name(s.model):<16} {s.condition:>4} {s.texts:>7} {s.perplexity:>11.3f} "
              f"{s.ppl_ci_low:>8.3f}-{s.ppl_ci_high:<8.3f}   {ratio}")
    for warning in results.warnings:
        print(warning)
    for path in write_context(results, args.out):
        print(f"wrote {path}")


def _print_conditions(summaries, differences, header: str, baseline: str) -> None:
    print(f"\n{'model':<18} {header:>12} {'texts':>5} {'perplexity':>11} {'95% CI':>17}   paired ratio to {baseline}")
    for s in summaries:
        name = display_name(s.model)
        d = next((d for d in differences if d.group == name and d.a == baseline and d.b == s.condition), None)
        ratio = f"{d.ratio:.3f} ({d.ratio_ci_low:.3f}-{d.ratio_ci_high:.3f}), better on {d.b_better}/{d.texts}" \
            if d else ""
        print(f"{name:<18} {s.condition:>12} {s.texts:>5} {s.perplexity:>11.3f} "
              f"{s.ppl_ci_low:>8.3f}-{s.ppl_ci_high:<8.3f}   {ratio}")


def cmd_instructions(args: argparse.Namespace) -> None:
    """Stories after instruction prefixes (none, vague, specific, paraphrased, mismatched)."""
    from minillm.experiments.instructions import run_instructions
    from minillm.reports.files import write_instructions

    if args.models is None:
        from minillm.course.family import FAMILY_DIR, SHAPES

        found = [FAMILY_DIR / n for n in SHAPES] + [FAMILY_DIR / f"{n}-instruct" for n in SHAPES]
        args.models = [_as_typed(f) for f in found if (f / "config.json").is_file()]
        args.category = args.category or "stories"
        print(f"Using the tiny family minillm ships, base and instruct where present: "
              f"{', '.join(display_name(m) for m in args.models)}.")
    models, source = _scaling_setup(args)
    results = run_instructions(models, source, chat_models=args.chat_models, dtype=args.dtype, seed=args.seed,
                               progress=args.progress)
    _print_conditions(results.summaries, results.differences, "instruction", "none")
    for warning in results.warnings:
        print(warning)
    for path in write_instructions(results, args.out):
        print(f"wrote {path}")


def cmd_categories(args: argparse.Namespace) -> None:
    """Every model on every bundled category (and --texts files): bits per byte and perplexity."""
    from minillm import data
    from minillm.experiments.categories import run_categories
    from minillm.reports.files import write_categories
    from minillm.training.provenance import without_training_texts

    check_output_folder(args.out)   # before the scoring, not after
    models, _ = _pick_models(args)
    sources = {}
    for category in data.CATEGORIES:
        source, message = data.bundled_source(category), None
        if not args.include_seen:
            source, message = without_training_texts(models, source)
        if message:
            print(f"{category}: {message}")
        sources[category] = source.first(args.stories)
    for path in args.texts_files or []:
        sources[path.name] = data.read_text_file(path, limit=args.stories)
    for name, source in sources.items():
        if len(source) < args.stories:
            print(f"{name}: {len(source)} texts{_fewer(source, args.stories)}.")
    results = run_categories(models, sources, dtype=args.dtype, seed=args.seed, progress=args.progress)
    print(f"\n{'model':<18} {'category':>18} {'texts':>5} {'bits/byte':>10} {'95% CI':>15} {'perplexity':>11}")
    for s in results.summaries:
        print(f"{display_name(s.model):<18} {s.condition:>18} {s.texts:>5} {s.bits_per_byte:>10.4f} "
              f"{s.bpb_ci_low:>7.4f}-{s.bpb_ci_high:<7.4f} {s.perplexity:>11.3f}")
    for warning in results.warnings:
        print(warning)
    for path in write_categories(results, args.out):
        print(f"wrote {path}")


def cmd_quantize(args: argparse.Namespace) -> None:
    """Perplexity and size of k-bit copies of a model on bundled texts it never trained on."""
    from minillm.experiments.quantization import perplexity_vs_bits
    from minillm.experiments.scaling import write_csv
    from minillm.reports.plots_quantization import plot_quantization

    check_output_folder(args.out)   # before the scoring, not after
    source = _texts_for(args, [args.source], args.n_texts, default="bundled")   # a bad --texts before the loading
    model, tok = load_model_and_tokenizer(args.source, dtype="float32")
    rows = perplexity_vs_bits(model, tok, source.texts, tuple(args.bits), tuple(args.schemes), args.group_size,
                              progress=args.progress)
    print(f"\n{'bits':>4} {'scheme':>8} {'size MB':>9} {'perplexity':>11} {'bits/byte':>9}")
    for r in rows:
        print(f"{r.bits:>4} {r.scheme:>8} {r.size_mb:>9.2f} {r.perplexity:>11.3f} {r.bits_per_byte:>9.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (write_csv(args.out / "quantization.csv", rows),
                 plot_quantization(rows, args.out / "perplexity_vs_bits.png",
                                   data_label=f"{display_name(args.source)} on {source.label}")):
        print(f"wrote {path}")


def cmd_convert_llama2c(args: argparse.Namespace) -> None:
    """Write a llama2.c model.bin + tokenizer.bin as a Hugging Face Llama folder."""
    from minillm.checkpoint.llama2c import OUTPUT_FILES, convert

    check_output_folder(args.out_dir, "out_dir")   # before reading the model, not after
    if not args.overwrite:
        refuse_to_overwrite(args.out_dir, "files (a model?)", out="out_dir")
    out = convert(args.model_bin, args.tokenizer_bin, args.out_dir)
    for name in OUTPUT_FILES:
        print(f"wrote {out / name}")


def cmd_make_exercises(args: argparse.Namespace) -> None:
    """Write exercises/ from solutions/ (or, with --check, only say whether it is up to date)."""
    from minillm.course.stubs import EXERCISES_DIR, SOLUTIONS_DIR, make_exercises, out_of_sync

    try:
        if args.check:
            problems = out_of_sync()
            if problems:
                raise ValueError("exercises/ or the notebooks are out of date; run `minillm make-exercises`:\n  " + "\n  ".join(problems))
            print(f"{EXERCISES_DIR} is in sync with {SOLUTIONS_DIR}.")
            return
        for path in make_exercises(force=args.force):
            print(f"wrote {path}")
    except FileNotFoundError as err:
        raise ValueError(str(err)) from err


def cmd_grade(args: argparse.Namespace) -> None:
    """Grade every submission folder with the autograder, one subprocess each; write a CSV."""
    from minillm.course.feedback import feedback_folder
    from minillm.course.grade import grade_class

    check_output_file(args.out)   # before grading a whole class, not after
    if not args.overwrite:
        refuse_to_overwrite(args.out, "a file (earlier grades?)")
    start = time.monotonic()
    rows = grade_class(args.submissions, args.out, timeout=args.timeout, autograder=args.autograder,
                       progress=not args.quiet, units=args.units, time_limit_scale=args.time_limit_scale,
                       jobs=args.jobs, sandbox=args.sandbox)
    statuses = [row["status"] for row in rows]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("ok", "timeout", "crashed", "refused") if s in statuses)
    print(f"graded {len(rows)} submissions in {time.monotonic() - start:.0f} s ({counts}): wrote {args.out} and "
          f"each student's results.json and feedback.txt in {feedback_folder(args.out)}")


def cmd_gradescope_bundle(args: argparse.Namespace) -> None:
    """Write Gradescope's autograder zip."""
    from minillm.course.gradescope import build_bundle

    check_output_file(args.out)
    if not args.overwrite:
        refuse_to_overwrite(args.out, "a file (an earlier bundle?)")
    out = build_bundle(args.out, units=args.units, time_limit_scale=args.time_limit_scale, timeout=args.timeout)
    print(f"wrote {out}: upload it in Gradescope (Configure Autograder > Zip file upload)")


def cmd_classroom_template(args: argparse.Namespace) -> None:
    """Write a GitHub Classroom starter repository."""
    from minillm.course.classroom import KIT_URL_PLACEHOLDER, write_template

    out = write_template(args.out, units=args.units, kit_url=args.kit_url, kit_ref=args.kit_ref,
                         time_limit_scale=args.time_limit_scale, timeout=args.timeout)
    print(f"wrote {out}: push it to a repository and make that the assignment's template")
    if args.kit_url is None:
        print(f"  then set KIT_URL in {out}/.github/workflows/classroom.yml (now {KIT_URL_PLACEHOLDER})")


def _set_threads(args: argparse.Namespace) -> None:
    """--threads: tiny models often train fastest on one thread, and a second thread that waits
    for a core another process holds can slow every step down several times."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1; got {args.threads}.")
        torch.set_num_threads(args.threads)


def _read_texts(files: list[Path] | None) -> list[str]:
    """The documents of text files split on <|endoftext|>; by default the bundled stories."""
    from minillm import data

    if not files:
        return data.bundled_texts("stories")
    texts = []
    for path in files:
        if not path.is_file():
            raise ValueError(f"--data {path}: no such file. Give text files whose documents are separated "
                             f"by {data.SEPARATOR}, or leave --data out to train on the bundled stories.")
        texts += data.split_stories(data.read_utf8(path))     # (not UTF-8: the file, line and column said)
    return texts


def _context(args: argparse.Namespace) -> int:
    """--context, or by default 128 tokens, or fewer when --init's model was built for fewer."""
    from minillm.training.config import TrainConfig

    if args.context is not None:
        return args.context
    if args.init is not None and not (Path(args.init) / "mlp_config.json").is_file():
        from minillm.checkpoint.hub import resolve_source
        from minillm.models.config import load_config

        window = load_config(resolve_source(args.init) / "config.json").max_position_embeddings
        return min(TrainConfig.context, window)
    return TrainConfig.context


# The training library's errors and notes name its parameters (steps=N, init=FOLDER) and functions
# (resume()); `minillm train` and `minillm finetune` say the same in their flags and commands.
_CONFIG_FLAGS = {"vocab_size": "--vocab-size", "hidden_size": "--hidden", "num_hidden_layers": "--layers",
                 "num_attention_heads": "--heads", "num_key_value_heads": "--kv-heads",
                 "intermediate_size": "--intermediate", "context": "--context", "mlp_window": "--mlp-window",
                 "n_positions": "--n-positions", "steps": "--steps", "batch_size": "--batch-size",
                 "learning_rate": "--lr", "warmup_steps": "--warmup", "min_lr_ratio": "--min-lr-ratio",
                 "weight_decay": "--weight-decay", "grad_clip": "--grad-clip", "eval_every": "--eval-every",
                 "sample_every": "--sample-every", "save_every": "--save-every", "val_fraction": "--val-fraction",
                 "seed": "--seed", "until": "--until", "out": "--out", "init": "--init", "tokenizer": "--tokenizer",
                 "base": "the base model", "train()": "`minillm train`", "finetune()": "`minillm finetune`"}
TRAIN_FLAGS = {**_CONFIG_FLAGS, "resume()": "--resume", "resume_finetune()": "`minillm finetune --resume`"}
FINETUNE_FLAGS = {**_CONFIG_FLAGS, "path": "--data", "resume()": "`minillm train --resume`",
                  "resume_finetune()": "--resume"}


def in_flags(message: str, flags: dict[str, str]) -> str:
    """``message`` with each ``name=`` of ``flags`` said as its flag (``steps=N`` -> ``--steps N``)
    and each ``function()`` as its command or flag (``resume()`` -> ``--resume``)."""
    def flag(match: re.Match) -> str:
        if match[1] not in flags:
            return match[0]
        value_follows = match[2] != "" and match[2] not in " .,;:)"
        return flags[match[1]] + (" " if value_follows else "")

    message = re.sub(r"\b\w+\(\)", lambda m: flags.get(m[0], m[0]), message)
    return re.sub(r"\b(\w+)=(?=(.?))", flag, message)


@contextmanager
def _said_in_flags(flags: dict[str, str]):
    """A ValueError of the training library raised in the block, raised again with its parameters
    said as the command's flags (:func:`in_flags`). Errors about files (ConfigError...) pass as they are."""
    try:
        yield
    except ValueError as err:
        if type(err) is not ValueError:
            raise
        raise ValueError(in_flags(str(err), flags)) from err


def cmd_train(args: argparse.Namespace) -> None:
    """Train a small model on text files; write the checkpoint folder and its loss curves."""
    from minillm.training.config import TrainConfig
    from minillm.training.train import resume, train

    _set_threads(args)
    if not args.resume:   # before any work: --out must be writable, and not hold a checkpoint to lose
        check_output_folder(args.out)
        if not args.overwrite:
            refuse_to_overwrite(args.out, "files (a checkpoint?)")
    texts = _read_texts(args.data)
    if args.resume:
        if args.init is not None:
            raise ValueError("--resume carries on the run in --out; --init starts a new run from a model's weights. "
                             "Give one of them.")
        print(f"resuming the run in {args.out} on {len(texts)} documents")
        with _said_in_flags(TRAIN_FLAGS):
            result = resume(args.out, texts, until=args.until, progress=args.progress, steps=args.steps)
        curves = _plot_run(result)
    else:
        with _said_in_flags(TRAIN_FLAGS):
            config = TrainConfig(
                architecture=args.architecture, vocab_size=args.vocab_size, hidden_size=args.hidden,
                num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                intermediate_size=args.intermediate, context=_context(args), mlp_window=args.mlp_window,
                n_positions=args.n_positions, steps=TrainConfig.steps if args.steps is None else args.steps,
                batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=args.warmup,
                min_lr_ratio=args.min_lr_ratio, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                eval_every=args.eval_every, sample_every=args.sample_every, save_every=args.save_every,
                val_fraction=args.val_fraction, seed=args.seed, bf16=args.bf16, compile=args.compile,
            )
        print(f"training on {len(texts)} documents")
        with _said_in_flags(TRAIN_FLAGS), build_then_move(args.out) as partial:   # a failed run leaves --out as it was
            result = train(texts, config, partial, tokenizer=args.tokenizer, until=args.until, progress=args.progress,
                           init=args.init)
            curves = args.out / _plot_run(result).name
    for note in result.notes:
        print(in_flags(note, TRAIN_FLAGS))
    last = result.history[-1]
    per_step = 1000 * last.tokens / last.step / result.tokens_per_second if result.tokens_per_second else float("nan")
    print(f"step {last.step}: {last.tokens:,} tokens seen, train loss {last.train_loss:.4f}, validation loss "
          f"{result.final_val_loss:.4f} nats/token; {result.model.num_parameters():,} parameters; "
          f"{result.tokens_per_second:,.0f} tokens/s ({per_step:.0f} ms per step)")
    if result.compile_seconds is not None:
        print(f"torch.compile: compiling took {result.compile_seconds:.1f} s (the first step, left out of the "
              "rate above); run without --compile to compare the ms per step.")
    print(f"wrote {args.out}")
    print(f"wrote {curves}")


def _plot_run(result) -> Path:
    """loss_curves.png in the run's folder, its first point labelled with where the run started."""
    from minillm.reports.plots_training import plot_loss_curves

    started_from = json.loads((result.folder / "trainer_state.json").read_text(encoding="utf-8")).get("init")
    start = "untrained" if started_from is None else f"{started_from} at step 0"
    return plot_loss_curves(result.history, result.folder / "loss_curves.png", start_label=start)


def cmd_finetune(args: argparse.Namespace) -> None:
    """Fine-tune a base model on instruction/response pairs; write the instruct model's folder."""
    from minillm.reports.plots_training import plot_loss_curves
    from minillm.training.finetune import finetune, read_examples, resume_finetune
    from minillm.training.config import TrainConfig

    _set_threads(args)
    if not args.resume:   # before any work: --out must be writable, and not hold a model to lose
        check_output_folder(args.out)
        if not args.overwrite:
            refuse_to_overwrite(args.out, "files (a model?)")
    with _said_in_flags(FINETUNE_FLAGS):
        examples = read_examples(args.data)
    if args.resume:
        print(f"resuming the fine-tuning run in {args.out} on {len(examples)} examples")
        with _said_in_flags(FINETUNE_FLAGS):
            result = resume_finetune(args.out, examples, until=args.until, steps=args.steps,
                                     progress=args.progress)
    else:
        if args.base is None:
            raise ValueError("give the base model to fine-tune (a folder or hub id), or --resume to carry on --out.")
        args.init = args.base
        with _said_in_flags(FINETUNE_FLAGS):
            config = TrainConfig(context=_context(args), steps=args.steps or FINETUNE_STEPS,
                                 batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=args.warmup,
                                 eval_every=args.eval_every, sample_every=args.sample_every,
                                 save_every=args.save_every, val_fraction=args.val_fraction, seed=args.seed,
                                 bf16=args.bf16)
        with _said_in_flags(FINETUNE_FLAGS), build_then_move(args.out) as partial:   # a failed run leaves --out as it was
            result = finetune(args.base, examples, config, partial, until=args.until, progress=args.progress)
            plot_loss_curves(result.history, partial / "loss_curves.png", "Fine-tuning", "base model")
    if args.resume:
        plot_loss_curves(result.history, args.out / "loss_curves.png", "Fine-tuning", "base model")
    for note in result.notes:
        print(in_flags(note, FINETUNE_FLAGS))
    last = result.history[-1]
    print(f"step {last.step}: train loss {last.train_loss:.4f}, validation loss {result.final_val_loss:.4f} nats per "
          f"reply token (before fine-tuning: {result.history[0].val_loss:.4f})")
    print(f"wrote {args.out} (chat template in tokenizer_config.json; try: minillm generate {args.out} "
          '"Write a story about a dragon." --chat)')
    print(f"wrote {args.out / 'loss_curves.png'}")


FINETUNE_STEPS = 200


def _add_train_args(parser: argparse.ArgumentParser) -> None:
    from minillm.training.config import TrainConfig as C

    parser.add_argument("--data", type=Path, nargs="+", metavar="FILE",
                        help="text files, documents separated by <|endoftext|> (default: the bundled stories)")
    parser.add_argument("--out", type=Path, default=Path("trained-model"), help="checkpoint folder to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what --out already holds (without it, an existing checkpoint is kept)")
    parser.add_argument("--tokenizer", type=Path, metavar="FOLDER",
                        help="use this folder's tokenizer.json (default: train a byte-level BPE tokenizer)")
    parser.add_argument("--architecture", default=C.architecture, choices=["transformer", "mlp", "gpt2"],
                        help="transformer: a Qwen2 decoder; gpt2: GPT-2 (MLP 4 x hidden wide, no --kv-heads); "
                             "mlp: the attention-free fixed-window MLP baseline")
    parser.add_argument("--vocab-size", type=int, default=C.vocab_size, help="BPE vocabulary to train")
    parser.add_argument("--hidden", type=int, default=C.hidden_size, help="hidden size (MLP: embedding width)")
    parser.add_argument("--layers", type=int, default=C.num_hidden_layers, help="decoder blocks")
    parser.add_argument("--heads", type=int, default=C.num_attention_heads, help="query heads")
    parser.add_argument("--kv-heads", type=int, default=C.num_key_value_heads, help="key/value heads")
    parser.add_argument("--intermediate", type=int, default=C.intermediate_size, help="SwiGLU (MLP: hidden) width")
    parser.add_argument("--context", type=int, default=None,
                        help=f"tokens per training window (default {C.context}, or the --init model's window if shorter)")
    parser.add_argument("--mlp-window", type=int, default=C.mlp_window, help="architecture mlp: tokens it sees")
    parser.add_argument("--n-positions", type=int, default=C.n_positions,
                        help="architecture gpt2: rows of the position table (0: --context)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps of the whole run (default {C.steps}); with --resume, a new total to "
                             "train a finished run further (the learning-rate schedule is planned again for it)")
    parser.add_argument("--batch-size", type=int, default=C.batch_size, help="windows per step")
    parser.add_argument("--lr", type=float, default=C.learning_rate, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=C.warmup_steps, help="warm-up steps")
    parser.add_argument("--min-lr-ratio", type=float, default=C.min_lr_ratio,
                        help="the cosine decay ends at lr times this")
    parser.add_argument("--weight-decay", type=float, default=C.weight_decay, help="AdamW's, on weight matrices")
    parser.add_argument("--grad-clip", type=float, default=C.grad_clip, help="max gradient norm (0: off)")
    parser.add_argument("--eval-every", type=int, default=C.eval_every, help="steps between validation losses")
    parser.add_argument("--sample-every", type=int, default=C.sample_every,
                        help="steps between sampled continuations (0: never)")
    parser.add_argument("--save-every", type=int, default=C.save_every,
                        help="steps between checkpoints (0: only at the end)")
    parser.add_argument("--val-fraction", type=float, default=C.val_fraction, help="share of documents held out")
    parser.add_argument("--seed", type=int, default=C.seed, help="seed of the weights and the data order")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    parser.add_argument("--compile", action="store_true",
                        help="try torch.compile (the first step compiles; the summary says how long)")
    parser.add_argument("--until", type=int,
                        help="stop and save after this step, to finish later with --resume (default: run all --steps)")
    parser.add_argument("--resume", action="store_true",
                        help="carry on the run saved in --out (its settings are read from there), on the same texts")
    parser.add_argument("--init", metavar="FOLDER",
                        help="continued pretraining: start from this model's weights and tokenizer (its shape too), "
                             "with a fresh optimizer, schedule and step count; --data gives the new texts "
                             "(default: a new model)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar (TQDM_DISABLE=1 also hides it)")


def _experiment_texts(args: argparse.Namespace) -> list[str]:
    if args.data:
        return _read_texts(args.data)
    from minillm.training.storygen import synthetic_stories

    return synthetic_stories(args.stories, seed=args.seed)


def _experiment_config(args: argparse.Namespace, **fields):
    from minillm.training.config import TrainConfig

    return TrainConfig(vocab_size=args.vocab_size, context=args.context, batch_size=args.batch_size,
                       learning_rate=args.lr, seed=args.seed, bf16=args.bf16, **fields)


def _parse_shape(text: str) -> tuple[int, int]:
    hidden, _, layers = text.partition("x")
    if not (hidden.isdigit() and layers.isdigit()):
        raise ValueError(f"--shapes {text!r}: write each shape as HIDDENxLAYERS, e.g. 64x2.")
    return int(hidden), int(layers)


def cmd_sweep(args: argparse.Namespace) -> None:
    """Train models of several sizes on the same tokens; tabulate, fit and plot the final losses."""
    from minillm.experiments.scaling import write_csv
    from minillm.experiments.training import fit_sweep, shape, size_sweep
    from minillm.reports.plots_training import plot_size_sweep

    _set_threads(args)
    check_output_folder(args.out)   # before the training, not after
    texts = _experiment_texts(args)
    shapes = [shape(*_parse_shape(s)) for s in args.shapes]
    print(f"{len(texts)} documents; {len(shapes)} models, {args.tokens:,} training tokens each")
    results = size_sweep(texts, shapes, args.tokens, args.out, base=_experiment_config(args), progress=args.progress)
    print(f"\n{'model':<10} {'params':>9} {'non-emb':>9} {'val loss':>9} {'val ppl':>8} {'seconds':>8} {'tokens/s':>9}")
    for r in results:
        print(f"{r.name:<10} {r.params:>9,} {r.non_embedding_params:>9,} {r.val_loss:>9.4f} {r.val_perplexity:>8.3f} "
              f"{r.seconds:>8.1f} {r.tokens_per_second:>9,.0f}")
    fit = fit_sweep(results)
    if fit:
        print(f"power law: validation perplexity = {fit.coefficient:.4g} * N^{fit.exponent:.4f} "
              "(N = non-embedding parameters)")
    for path in (write_csv(args.out / "sweep.csv", results), plot_size_sweep(results, fit, args.out / "sweep.png")):
        print(f"wrote {path}")


def cmd_compare_architectures(args: argparse.Namespace) -> None:
    """Train a transformer and a fixed-window MLP on the same tokens; tabulate and plot both."""
    from minillm.experiments.scaling import write_csv
    from minillm.experiments.training import compare_architectures, shape
    from minillm.reports.plots_training import plot_architectures

    _set_threads(args)
    check_output_folder(args.out)   # before the training, not after
    texts = _experiment_texts(args)
    base = _experiment_config(args, mlp_window=args.mlp_window, **shape(args.hidden, args.layers))
    print(f"{len(texts)} documents; {args.tokens:,} training tokens for each architecture")
    rows = compare_architectures(texts, args.tokens, args.out, base=base, progress=args.progress)
    print(f"\n{'architecture':<12} {'params':>9} {'non-emb':>9} {'tokens':>10} {'val loss':>9}")
    for name in dict.fromkeys(r.architecture for r in rows):
        last = [r for r in rows if r.architecture == name][-1]
        print(f"{name:<12} {last.params:>9,} {last.non_embedding_params:>9,} {last.tokens:>10,} {last.val_loss:>9.4f}")
    for path in (write_csv(args.out / "architectures.csv", rows),
                 plot_architectures(rows, args.out / "architectures.png")):
        print(f"wrote {path}")


def _add_experiment_args(parser: argparse.ArgumentParser, tokens: int) -> None:
    parser.add_argument("--data", type=Path, nargs="+", metavar="FILE",
                        help="text files, documents separated by <|endoftext|> (default: synthetic stories)")
    parser.add_argument("--stories", type=positive_int, default=3000, help="without --data: how many synthetic stories")
    parser.add_argument("--out", type=Path, required=True, help="folder for the models, the CSV and the plot")
    parser.add_argument("--tokens", type=positive_int, default=tokens, help="training tokens per model")
    parser.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary to train")
    parser.add_argument("--context", type=int, default=64, help="tokens per training window")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per step")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data order, the weights and the stories")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")


def _refuse_to_replace_entries(args: argparse.Namespace, names: tuple[str, ...], what: str) -> None:
    """Before any work: --out must be a writable folder, and (without --overwrite) hold none of
    ``names``, the entries the command writes there. Its other entries are never touched: the
    shipped data/models holds both families and a README."""
    check_output_folder(args.out)
    if not args.overwrite:
        refuse_to_overwrite([args.out / name for name in names], what)


def cmd_train_family(args: argparse.Namespace) -> None:
    """Train the shipped family tiny-s, tiny-m, tiny-l and tiny-gpt2; print sizes and held-out scores."""
    from minillm.course.family import FAMILY_ENTRIES, train_family

    _refuse_to_replace_entries(args, FAMILY_ENTRIES, "the files of a model family")
    _set_threads(args)
    rows = train_family(args.out, tokens=args.tokens, progress=args.progress, gpt2_tokens=args.gpt2_tokens,
                        gpt2_tokenizer=args.gpt2_tokenizer)
    print(f"\n{'model':<9} {'params':>10} {'non-emb':>10} {'tokens':>10} {'val loss':>9} {'bundled ppl':>12} "
          f"{'real ppl':>9} {'real bits/byte':>15} {'seconds':>8}")
    for r in rows:
        print(f"{r.name:<9} {r.params:>10,} {r.non_embedding_params:>10,} {r.tokens:>10,} {r.val_loss:>9.4f} "
              f"{r.held_out_perplexity:>12.3f} {r.real_perplexity:>9.3f} {r.real_bits_per_byte:>15.4f} {r.seconds:>8.1f}")
    print(f"wrote {', '.join(str(args.out / r.name) for r in rows)} and {args.out / 'family.csv'}")


def cmd_finetune_family(args: argparse.Namespace) -> None:
    """Fine-tune the shipped family into tiny-{s,m,l}-instruct; print losses and what an instruction is worth."""
    from minillm.course.instruct_family import INSTRUCT_ENTRIES, finetune_family, instructions_table

    _refuse_to_replace_entries(args, INSTRUCT_ENTRIES, "the files of an instruct family")
    _set_threads(args)
    rows, effects = finetune_family(args.out, steps=args.steps, progress=args.progress, bases=args.bases)
    print(f"\n{'model':<16} {'val loss':>17} {'seconds':>7}")
    for r in rows:
        print(f"{r.name:<16} {r.val_loss_before:>7.3f} -> {r.val_loss:>6.3f} {r.seconds:>7.1f}")
    print("\nHeld-out texts: perplexity given no instruction, and each instruction's paired ratio to that (95% CI)")
    print("\n".join(instructions_table(effects)))
    print(f"wrote {', '.join(str(args.out / r.name) for r in rows)}, {args.out / 'instruct.csv'}, "
          f"{args.out / 'instructions.csv'} and {args.out / 'instructions_per_text.csv'}")


def _add_text_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--category", choices=CATEGORIES, default=None,
                        help="score bundled texts of this kind, with or without --offline (default: TinyStories' "
                             "validation stories; offline or with the shipped family, the bundled stories)")
    parser.add_argument("--texts", type=Path, metavar="FILE",
                        help="score the texts of this file: TinyStories (<|endoftext|>), WikiText, or paragraphs "
                             "(default: no file)")
    parser.add_argument("--include-seen", action="store_true",
                        help="also score texts a model trained on (its training_data.json says which)")


def _add_scoring_args(parser: argparse.ArgumentParser, out: str, models_help: str | None = None) -> None:
    """Models and texts, as for `minillm scaling`; ``models_help`` replaces the --models help."""
    parser.add_argument("--models", nargs="+", default=None,
                        help=models_help or (f"checkpoint folders or hub ids (default: {' '.join(DEFAULT_SCALING_MODELS)}; "
                                             "without network or cache, the tiny family in data/models)"))
    parser.add_argument("--stories", type=positive_int, default=50, help="how many texts at most")
    parser.add_argument("--out", type=Path, default=Path(out), help="folder for tables, plots and the report")
    parser.add_argument("--offline", action="store_true",
                        help="no network: bundled texts, and models from folders or the local cache")
    _add_text_args(parser)
    parser.add_argument("--dtype", default="float32", choices=[*DTYPES, "auto"], help="weights' dtype")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress lines")


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


def _add_inspect_commands(commands) -> None:
    """``minillm attention`` and ``minillm lens``: looking inside a model (minillm.inspect)."""
    attn = commands.add_parser("attention", formatter_class=HelpFormatter,
                               help="draw a layer's attention maps for a text (a PNG)")
    lens = commands.add_parser("lens", formatter_class=HelpFormatter,
                               help="the logit lens: the top next tokens after each block")
    for sub in (attn, lens):
        sub.add_argument("source", help="a local checkpoint folder or a hub repo id such as Qwen/Qwen2.5-0.5B")
        sub.add_argument("text", help="the text to feed the model")
        sub.add_argument("--dtype", default="float32", choices=[*DTYPES, "auto"], help="weights' dtype; auto: the checkpoint's own")
    attn.add_argument("--layer", type=non_negative_int, default=0, help="which layer, counting from 0")
    attn.add_argument("--head", type=non_negative_int, default=None,
                      help="which head, counting from 0 (default: every head of the layer, in a grid)")
    attn.add_argument("--out", type=Path, required=True, help="the PNG file to write (required: no default)")
    attn.set_defaults(run=cmd_attention)
    lens.add_argument("--top-k", type=positive_int, default=5, help="tokens per layer")
    lens.set_defaults(run=cmd_lens)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minillm", description="See what is inside a GPT-2, Qwen2 or Llama language model.",
                                     formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    logits = commands.add_parser("logits", formatter_class=HelpFormatter, help="the most likely next tokens after a text")
    _add_model_args(logits)
    logits.add_argument("--top-k", type=positive_int, default=10, help="how many rows to show")
    logits.set_defaults(run=cmd_logits)

    surprise = commands.add_parser("surprise", formatter_class=HelpFormatter,
                                   help="each token of a text with its surprise (nats, bits, probability)")
    surprise.add_argument("source", help="a local checkpoint folder or a hub repo id such as Qwen/Qwen2.5-0.5B")
    surprise.add_argument("text", help="the text to score")
    surprise.add_argument("--context", default=None,
                          help="text before it, read by the model but not scored (default: none)")
    surprise.add_argument("--top-k", type=non_negative_int, default=3, help="the model's most likely tokens shown per row")
    surprise.add_argument("--dtype", default="float32", choices=[*DTYPES, "auto"],
                          help="weights' dtype; auto: the checkpoint's own")
    surprise.add_argument("--chat", action="store_true",
                          help="put --context in the chat template as a user message and score the text as "
                               "the assistant's reply (for instruct models)")
    surprise.set_defaults(run=cmd_surprise)

    gen = commands.add_parser("generate", formatter_class=HelpFormatter, help="continue a prompt")
    _add_model_args(gen)
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

    scaling = commands.add_parser("scaling", formatter_class=HelpFormatter, help="perplexity vs model size on the same stories")
    scaling.add_argument("--models", nargs="+", default=None,
                         help=f"checkpoint folders or hub ids (default: {' '.join(DEFAULT_SCALING_MODELS)}; "
                              "without network or cache, the tiny family in data/models)")
    scaling.add_argument("--stories", type=positive_int, default=50, help="how many stories")
    scaling.add_argument("--out", type=Path, default=Path("scaling-results"), help="folder for tables and plots")
    scaling.add_argument("--offline", action="store_true",
                         help="no network: the bundled stories, and models from folders or the local cache")
    _add_text_args(scaling)
    scaling.add_argument("--dtype", default="float32", choices=[*DTYPES, "auto"], help="weights' dtype")
    scaling.add_argument("--batch-tokens", type=int, default=1024, help="tokens per scoring batch")
    scaling.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    scaling.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    scaling.set_defaults(run=cmd_scaling)

    context = commands.add_parser("context", formatter_class=HelpFormatter,
                                  help="perplexity of a continuation after 0..3 sentences of its story")
    _add_scoring_args(context, "context-results")
    context.add_argument("--max-k", type=positive_int, default=3, help="most sentences of context")
    context.set_defaults(run=cmd_context)

    instr = commands.add_parser("instructions", formatter_class=HelpFormatter,
                                help="stories after vague, specific, paraphrased or mismatched instructions; "
                                     "base and instruct models")
    _add_scoring_args(instr, "instruction-results", models_help=(
        "checkpoint folders or hub ids (default, online and offline alike: the tiny family minillm ships in "
        "data/models, base and instruct, tiny-s tiny-m tiny-l tiny-s-instruct tiny-m-instruct tiny-l-instruct, "
        "those present, on the bundled stories they never trained on)"))
    instr.add_argument("--chat-models", nargs="+", default=None, metavar="MODEL",
                       help="score these through their chat template (default: models whose name says "
                            "instruct or chat and whose tokenizer has a template)")
    instr.set_defaults(run=cmd_instructions)

    cats = commands.add_parser("categories", formatter_class=HelpFormatter,
                               help="every model on stories, news, code, poetry, instructions (and --texts files): "
                                    "bits per byte")
    cats.add_argument("--models", nargs="+", default=None,
                      help="checkpoint folders or hub ids (default: as for `minillm scaling`)")
    cats.add_argument("--stories", type=positive_int, default=50, help="texts per category at most")
    cats.add_argument("--texts", dest="texts_files", type=Path, nargs="+", metavar="FILE",
                      help="more text sources, one category each: TinyStories, WikiText or paragraph files "
                           "(default: none)")
    cats.add_argument("--out", type=Path, default=Path("category-results"), help="folder for tables, plot, report")
    cats.add_argument("--offline", action="store_true", help="models from folders or the local cache only")
    cats.add_argument("--include-seen", action="store_true", help="also score texts a model trained on")
    cats.add_argument("--dtype", default="float32", choices=[*DTYPES, "auto"], help="weights' dtype")
    cats.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    cats.add_argument("--no-progress", dest="progress", action="store_false", help="no progress lines")
    cats.set_defaults(run=cmd_categories, category=None, texts=None)

    quant = commands.add_parser("quantize", formatter_class=HelpFormatter, help="perplexity and size of k-bit copies of a model")
    quant.add_argument("source", help="a local checkpoint folder or a hub repo id")
    quant.add_argument("--bits", type=bit_width, nargs="+", default=[32, 16, 8, 6, 4, 3, 2], help="bit widths to try")
    quant.add_argument("--schemes", nargs="+", default=["tensor", "channel", "group"],
                       choices=["tensor", "channel", "group"], help="one (zero point, scale) per tensor, row or group")
    quant.add_argument("--group-size", type=positive_int, default=64, help="weights per group of the group scheme")
    quant.add_argument("--texts", type=text_file, metavar="FILE",
                       help="score the texts of this file: TinyStories (<|endoftext|>), WikiText, or paragraphs "
                            "(default: bundled texts)")
    quant.add_argument("--stories", dest="n_texts", type=positive_int, default=20, metavar="N",
                       help="how many texts to score at most")
    quant.add_argument("--category", choices=CATEGORIES, default=None,
                       help="which bundled texts (default: stories the model never trained on)")
    quant.add_argument("--include-seen", action="store_true",
                       help="also score texts the model trained on (its training record says which)")
    quant.add_argument("--out", type=Path, default=Path("quantization-results"), help="folder for the CSV and plot")
    quant.add_argument("--no-progress", dest="progress", action="store_false", help="no progress lines")
    quant.set_defaults(run=cmd_quantize)
    _add_inspect_commands(commands)

    llama2c = commands.add_parser("convert-llama2c", formatter_class=HelpFormatter, help="turn a llama2.c model into a Hugging Face folder")
    llama2c.add_argument("model_bin", type=Path, help="llama2.c model file (legacy export), e.g. stories15M.bin")
    llama2c.add_argument("tokenizer_bin", type=Path, help="llama2.c tokenizer file, e.g. tokenizer.bin")
    llama2c.add_argument("out_dir", type=Path, help="folder to write (created if needed)")
    llama2c.add_argument("--overwrite", action="store_true",
                         help="replace what out_dir already holds (without it, an existing model is kept)")
    llama2c.set_defaults(run=cmd_convert_llama2c)

    stubs = commands.add_parser("make-exercises", formatter_class=HelpFormatter, help="write exercises/ (stubs) from solutions/")
    stubs.add_argument("--check", action="store_true", help="only check that exercises/ is up to date (exit 1 if not)")
    stubs.add_argument("--force", action="store_true",
                       help="replace exercise files edited since they were generated (a student's edits are lost)")
    stubs.set_defaults(run=cmd_make_exercises)

    grade = commands.add_parser("grade", formatter_class=HelpFormatter,
                                help="grade a class: one folder of unit modules or notebooks per student")
    grade.add_argument("submissions", type=Path, help="folder with one subfolder per student")
    grade.add_argument("--out", type=Path, default=Path("grades.csv"), help="CSV to write")
    grade.add_argument("--overwrite", action="store_true", help="replace an existing --out CSV")
    grade.add_argument("--timeout", type=positive_float, default=300.0,
                       help="seconds one unit's grading run may take (a unit that takes longer scores 0)")
    grade.add_argument("--units", default=None, metavar="UNIT,UNIT",
                       help="grade only these units, comma-separated, e.g. logits,perplexity (default: all)")
    grade.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                       help="grade N students at the same time (each run uses one thread and ~0.5 GB)")
    grade.add_argument("--time-limit-scale", type=positive_float, default=1.0, metavar="F",
                       help="multiply every test's time limit by F (e.g. 2 on a slow machine)")
    grade.add_argument("--autograder", type=Path, default=None,
                       help="the autograder's folder (default: tests/autograder of the minillm repository)")
    grade.add_argument("--sandbox", choices=("auto", "bwrap", "process"), default="auto",
                       help="where student code runs: bwrap (a bubblewrap sandbox: sees only the kit, its own "
                            "files and a private /tmp), process (a process with your rights), auto (bwrap when "
                            "it starts here, else process, said up front)")
    grade.add_argument("--quiet", action="store_true",
                       help="print only errors, the warning when there is no sandbox, and a one-line summary at "
                            "the end (no bar, no line per student)")
    grade.set_defaults(run=cmd_grade)

    # Gradescope and GitHub Classroom: the class grader packaged for the engines a class is graded on.
    bundle = commands.add_parser("gradescope-bundle", formatter_class=HelpFormatter,
                                 help="write Gradescope's autograder zip (setup.sh, run_autograder, the grader)")
    bundle.add_argument("--out", type=Path, default=Path("autograder.zip"), help="zip to write (default %(default)s)")
    bundle.add_argument("--overwrite", action="store_true", help="replace an existing --out zip")
    bundle.add_argument("--units", default=None, metavar="UNIT,UNIT", help="the units it grades (default: all)")
    bundle.add_argument("--time-limit-scale", type=positive_float, default=1.0, metavar="F",
                        help="multiply every test's time limit by F (Gradescope's machines are slower than a laptop)")
    bundle.add_argument("--timeout", type=positive_float, default=300.0,
                        help="seconds one unit's run may take; set Gradescope's limit above units x this")
    bundle.set_defaults(run=cmd_gradescope_bundle)
    template = commands.add_parser("classroom-template", formatter_class=HelpFormatter,
                                   help="write a GitHub Classroom starter repository with a grading workflow")
    template.add_argument("--out", type=Path, required=True, help="a new or empty folder (required, no default)")
    template.add_argument("--units", default=None, metavar="UNIT,UNIT", help="the units it holds (default: all)")
    template.add_argument("--kit-url", default=None,
                          help="git URL the workflow installs the kit from (default: a placeholder to edit)")
    template.add_argument("--kit-ref", default="HEAD", help="branch, tag or commit of --kit-url (pin a tag or commit)")
    template.add_argument("--time-limit-scale", type=positive_float, default=1.0, metavar="F",
                          help="multiply every test's time limit by F")
    template.add_argument("--timeout", type=positive_float, default=300.0, help="seconds one unit's run may take")
    template.set_defaults(run=cmd_classroom_template)

    train = commands.add_parser("train", formatter_class=HelpFormatter,
                                help="train a small Qwen2 or GPT-2 model (or the MLP baseline) on text files")
    _add_train_args(train)
    train.set_defaults(run=cmd_train)

    tune = commands.add_parser("finetune", formatter_class=HelpFormatter,
                               help="fine-tune a base model on instruction/response pairs (chat template)")
    tune.add_argument("base", nargs="?",
                      help="the base model: a checkpoint folder or hub id (no default; not needed with --resume)")
    tune.add_argument("--data", type=Path, required=True, metavar="FILE",
                      help='JSON Lines, one {"instruction": ..., "response": ...} or {"messages": [...]} per line '
                           "(required, no default)")
    tune.add_argument("--out", type=Path, required=True, help="folder for the instruct model (required, no default)")
    tune.add_argument("--overwrite", action="store_true",
                      help="replace what --out already holds (without it, an existing model is kept)")
    tune.add_argument("--steps", type=int, default=None,
                      help=f"optimizer updates (default {FINETUNE_STEPS}); with --resume, a new total")
    tune.add_argument("--batch-size", type=int, default=16, help="windows per update (default %(default)s)")
    tune.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default %(default)s)")
    tune.add_argument("--warmup", type=int, default=20, help="warm-up steps (default %(default)s)")
    tune.add_argument("--context", type=int, default=None,
                      help="tokens per window (default: the base model's window, at most 128)")
    tune.add_argument("--eval-every", type=int, default=50,
                      help="steps between validation losses (default %(default)s)")
    tune.add_argument("--sample-every", type=int, default=0, help="steps between sampled replies (default 0: never)")
    tune.add_argument("--save-every", type=int, default=0,
                      help="steps between checkpoints (default 0: only at the end)")
    tune.add_argument("--val-fraction", type=float, default=0.05, help="examples held out (default %(default)s)")
    tune.add_argument("--seed", type=int, default=0, help="default %(default)s")
    tune.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    tune.add_argument("--until", type=int,
                      help="stop and save after this step, finish later with --resume (default: run all --steps)")
    tune.add_argument("--resume", action="store_true", help="carry on the fine-tuning run saved in --out")
    tune.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    tune.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    tune.set_defaults(run=cmd_finetune)

    sweep = commands.add_parser("sweep", formatter_class=HelpFormatter, help="train several model sizes on the same tokens; fit a power law")
    _add_experiment_args(sweep, tokens=400_000)
    sweep.add_argument("--shapes", nargs="+", default=["16x1", "32x2", "64x2", "96x3"],
                       help="model shapes as HIDDENxLAYERS (default: %(default)s)")
    sweep.set_defaults(run=cmd_sweep)

    arch = commands.add_parser("compare-architectures", formatter_class=HelpFormatter, help="a transformer against a fixed-window MLP")
    _add_experiment_args(arch, tokens=1_000_000)
    arch.add_argument("--hidden", type=int, default=64, help="hidden size (also the MLP's embedding width)")
    arch.add_argument("--layers", type=int, default=2, help="decoder blocks of the transformer")
    arch.add_argument("--mlp-window", type=int, default=8, help="tokens the MLP sees")
    arch.set_defaults(run=cmd_compare_architectures)

    family = commands.add_parser("train-family", formatter_class=HelpFormatter,
                                 help="train the shipped tiny-s, tiny-m, tiny-l and tiny-gpt2 models")
    family.add_argument("--out", type=Path, default=Path("data/models"), help="folder for the models")
    family.add_argument("--tokens", type=positive_int, default=1_000_000, help="training tokens per Qwen2 model")
    family.add_argument("--gpt2-tokens", type=non_negative_int, default=1_000_000,
                        help="training tokens of tiny-gpt2, the TinyStories paper's GPT-2 (0: leave it out)")
    family.add_argument("--gpt2-tokenizer",
                        help="folder or hub id with GPT-2's tokenizer (default: the shipped data/models/tiny-gpt2, "
                             "else openai-community/gpt2 from the hub)")
    family.add_argument("--overwrite", action="store_true",
                        help="replace the tiny-s, tiny-m, tiny-l, tiny-gpt2 and family.csv that --out already holds "
                             "(its other files are kept either way)")
    family.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    family.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    family.set_defaults(run=cmd_train_family)

    instruct = commands.add_parser("finetune-family", formatter_class=HelpFormatter,
                                   help="fine-tune the shipped family into tiny-*-instruct")
    instruct.add_argument("--out", type=Path, default=Path("data/models"), help="folder for the three instruct models")
    instruct.add_argument("--bases", type=Path, default=Path("data/models"),
                          help="folder holding tiny-s, tiny-m and tiny-l (default %(default)s)")
    instruct.add_argument("--steps", type=positive_int, default=2000, help="fine-tuning steps per model (default %(default)s)")
    instruct.add_argument("--overwrite", action="store_true",
                          help="replace the tiny-*-instruct folders, instruct.csv and instructions.csv that --out already holds "
                               "(its other files, the base models too, are kept either way)")
    instruct.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    instruct.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    instruct.set_defaults(run=cmd_finetune_family)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # One run at a time into a training command's --out, from its checks to its last file (safe_io.hold_output).
        with hold_output(args.out) if args.command in ("train", "finetune") else nullcontext():
            args.run(args)
    except (SourceError, ConfigError, WeightsError, TokenizerError, ValueError) as err:
        print(f"minillm {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
