"""``minillm scaling | context | instructions | categories | quantize``: models scored on the same
texts. Which models and texts is the library's choice (:mod:`minillm.experiments.inputs`), the
files are written by :mod:`minillm.reports.files`; the command prints what they return."""

from __future__ import annotations

import argparse
from pathlib import Path

from minillm.checkpoint.safe_io import check_output_folder
from minillm.cli.args import HelpFormatter, add_progress, add_scoring, add_texts, bit_width, positive_int, say_in_flags
from minillm.data import CATEGORIES, TextSource
from minillm.experiments import inputs

# The library's parameters (experiments.inputs) said as the commands' flags.
SCORING_FLAGS = {"limit": "--stories", "models": "--models", "offline": "--offline"}
SAY = say_in_flags(SCORING_FLAGS)


def _models_and_texts(args: argparse.Namespace) -> tuple[list[str], TextSource]:
    """(models, texts) of a scoring command: --out checked before any scoring, then the library's choice."""
    check_output_folder(args.out)
    models, family = inputs.pick_models(args.models, args.offline, say=SAY)
    return models, inputs.scoring_texts(models, args.stories, texts=args.texts, category=args.category,
                                        offline=args.offline, bundled=family, include_seen=args.include_seen, say=SAY)


def _wrote(paths: list[Path]) -> None:
    for path in paths:
        print(f"wrote {path}")


def cmd_scaling(args: argparse.Namespace) -> None:
    """Score the same stories with every model; write tables, a report and plots."""
    from minillm.experiments.scaling import run_scaling
    from minillm.reports.files import save_results

    models, source = _models_and_texts(args)
    print(f"models: {', '.join(models)}")
    results = run_scaling(models, source, dtype=args.dtype, batch_tokens=args.batch_tokens, seed=args.seed,
                          progress=args.progress)
    print(f"\n{results}")
    _wrote(save_results(results, args.out))


def cmd_context(args: argparse.Namespace) -> None:
    """The same continuation after 0..3 sentences of its story: does context lower perplexity?"""
    from minillm.experiments.context import run_context
    from minillm.reports.files import write_context

    models, source = _models_and_texts(args)
    results = run_context(models, source, max_k=args.max_k, dtype=args.dtype, seed=args.seed, progress=args.progress)
    print(f"\n{results}")
    _wrote(write_context(results, args.out))


def cmd_instructions(args: argparse.Namespace) -> None:
    """Stories after instruction prefixes (none, vague, specific, paraphrased, mismatched)."""
    from minillm.checkpoint.hub import display_name
    from minillm.experiments.instructions import run_instructions
    from minillm.reports.files import write_instructions

    if args.models is None:
        args.models = inputs.shipped_family(instruct=True)
        args.category = args.category or "stories"
        print(f"Using the tiny family minillm ships, base and instruct where present: "
              f"{', '.join(display_name(m) for m in args.models)}.")
    models, source = _models_and_texts(args)
    results = run_instructions(models, source, chat_models=args.chat_models, dtype=args.dtype, seed=args.seed,
                               progress=args.progress)
    print(f"\n{results}")
    _wrote(write_instructions(results, args.out))


def cmd_categories(args: argparse.Namespace) -> None:
    """Every model on every bundled category (and --texts files): bits per byte and perplexity."""
    from minillm.experiments.categories import run_categories
    from minillm.reports.files import write_categories

    check_output_folder(args.out)   # before the scoring, not after
    models, _ = inputs.pick_models(args.models, args.offline, say=SAY)
    sources = inputs.category_sources(models, args.stories, args.texts_files or (), args.include_seen, say=SAY)
    results = run_categories(models, sources, dtype=args.dtype, seed=args.seed, progress=args.progress)
    print(f"\n{results}")
    _wrote(write_categories(results, args.out))


def cmd_quantize(args: argparse.Namespace) -> None:
    """Perplexity and size of k-bit copies of a model on bundled texts it never trained on."""
    from minillm.checkpoint.hub import display_name
    from minillm.checkpoint.loading import load_model_and_tokenizer
    from minillm.experiments.quantization import perplexity_vs_bits, quantization_text
    from minillm.reports.files import write_quantization

    check_output_folder(args.out)   # before the scoring, not after
    source = inputs.scoring_texts([args.source], args.n_texts, texts=args.texts, category=args.category, bundled=True,
                                  include_seen=args.include_seen, say=SAY)   # a bad --texts before the loading
    model, tok = load_model_and_tokenizer(args.source, dtype="float32")
    rows = perplexity_vs_bits(model, tok, source.texts, tuple(args.bits), tuple(args.schemes), args.group_size,
                              progress=args.progress)
    print(f"\n{quantization_text(rows)}")
    _wrote(write_quantization(rows, args.out, f"{display_name(args.source)} on {source.label}"))


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Declare this group's commands."""
    default_models = (f"checkpoint folders or hub ids (default: {' '.join(inputs.DEFAULT_MODELS)}; without network "
                      "or cache, the tiny family in data/models)")
    scaling = commands.add_parser("scaling", formatter_class=HelpFormatter,
                                  help="perplexity vs model size on the same stories")
    add_scoring(scaling, "scaling-results", default_models, "how many stories", texts=CATEGORIES)
    scaling.add_argument("--batch-tokens", type=int, default=1024, help="tokens per scoring batch")
    scaling.set_defaults(run=cmd_scaling)

    context = commands.add_parser("context", formatter_class=HelpFormatter,
                                  help="perplexity of a continuation after 0..3 sentences of its story")
    add_scoring(context, "context-results", default_models, texts=CATEGORIES)
    context.add_argument("--max-k", type=positive_int, default=3, help="most sentences of context")
    context.set_defaults(run=cmd_context)

    instr = commands.add_parser("instructions", formatter_class=HelpFormatter,
                                help="stories after vague, specific, paraphrased or mismatched instructions; "
                                     "base and instruct models")
    add_scoring(instr, "instruction-results", texts=CATEGORIES, models_help=(
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
    add_scoring(cats, "category-results", "checkpoint folders or hub ids (default: as for `minillm scaling`)",
                "texts per category at most")
    cats.add_argument("--texts", dest="texts_files", type=Path, nargs="+", metavar="FILE",
                      help="more text sources, one category each: TinyStories, WikiText or paragraph files "
                           "(default: none)")
    cats.add_argument("--include-seen", action="store_true", help="also score texts a model trained on")
    cats.set_defaults(run=cmd_categories)

    quant = commands.add_parser("quantize", formatter_class=HelpFormatter,
                                help="perplexity and size of k-bit copies of a model")
    quant.add_argument("source", help="a local checkpoint folder or a hub repo id")
    quant.add_argument("--bits", type=bit_width, nargs="+", default=[32, 16, 8, 6, 4, 3, 2], help="bit widths to try")
    quant.add_argument("--schemes", nargs="+", default=["tensor", "channel", "group"],
                       choices=["tensor", "channel", "group"], help="one (zero point, scale) per tensor, row or group")
    quant.add_argument("--group-size", type=positive_int, default=64, help="weights per group of the group scheme")
    add_texts(quant, CATEGORIES)
    quant.add_argument("--stories", dest="n_texts", type=positive_int, default=20, metavar="N",
                       help="how many texts to score at most")
    quant.add_argument("--out", type=Path, default=Path("quantization-results"), help="folder for the CSV and plot")
    add_progress(quant, "lines")
    quant.set_defaults(run=cmd_quantize)

