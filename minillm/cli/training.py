"""``minillm train | finetune | sweep | compare-architectures | train-family | finetune-family``:
making models. The texts and the window are the library's choice (:mod:`minillm.experiments.inputs`);
its errors name its parameters (``steps=``), said here as the flags (``--steps``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from minillm.checkpoint.safe_io import build_then_move, check_output_folder, refuse_to_overwrite
from minillm.cli.args import (HelpFormatter, add_overwrite, add_progress, add_threads, in_flags, model_shape,
                              non_negative_int, positive_int, said_in_flags)
from minillm.errors import InputError
from minillm.experiments import inputs
from minillm.training.config import TrainConfig as C

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
                 "data": "--data", "base": "the base model", "train()": "`minillm train`",
                 "finetune()": "`minillm finetune`"}
TRAIN_FLAGS = {**_CONFIG_FLAGS, "resume()": "--resume", "resume_finetune()": "`minillm finetune --resume`"}
FINETUNE_FLAGS = {**_CONFIG_FLAGS, "path": "--data", "resume()": "`minillm train --resume`",
                  "resume_finetune()": "--resume"}
FINETUNE_STEPS = 200


def _set_threads(args: argparse.Namespace) -> None:
    """--threads: tiny models often train fastest on one thread, and a second thread that waits
    for a core another process holds can slow every step down several times."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def _fresh_out(args: argparse.Namespace, what: str) -> None:
    """Before any work: --out must be writable, and (without --overwrite) not hold ``what`` to lose."""
    check_output_folder(args.out)
    if not args.overwrite:
        refuse_to_overwrite(args.out, what)


def cmd_train(args: argparse.Namespace) -> None:
    """Train a small model on text files; write the checkpoint folder and its loss curves."""
    from minillm.training.train import resume, train

    _set_threads(args)
    if not args.resume:
        _fresh_out(args, "files (a checkpoint?)")
    with said_in_flags(TRAIN_FLAGS):
        texts = inputs.training_texts(args.data)
    if args.resume:
        if args.init is not None:
            raise InputError("--resume carries on the run in --out; --init starts a new run from a model's weights. "
                             "Give one of them.")
        print(f"resuming the run in {args.out} on {len(texts)} documents")
        with said_in_flags(TRAIN_FLAGS):
            result = resume(args.out, texts, until=args.until, progress=args.progress, steps=args.steps)
        curves = _plot_run(result)
    else:
        with said_in_flags(TRAIN_FLAGS):
            config = C(
                architecture=args.architecture, vocab_size=args.vocab_size, hidden_size=args.hidden,
                num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                intermediate_size=args.intermediate, context=inputs.training_context(args.context, args.init),
                mlp_window=args.mlp_window, n_positions=args.n_positions, steps=C.steps if args.steps is None else args.steps,
                batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=args.warmup,
                min_lr_ratio=args.min_lr_ratio, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                eval_every=args.eval_every, sample_every=args.sample_every, save_every=args.save_every,
                val_fraction=args.val_fraction, seed=args.seed, bf16=args.bf16, compile=args.compile,
            )
        print(f"training on {len(texts)} documents")
        with said_in_flags(TRAIN_FLAGS), build_then_move(args.out) as partial:   # a failed run leaves --out as it was
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

    _set_threads(args)
    if not args.resume:
        _fresh_out(args, "files (a model?)")
    with said_in_flags(FINETUNE_FLAGS):
        examples = read_examples(args.data)
    if args.resume:
        print(f"resuming the fine-tuning run in {args.out} on {len(examples)} examples")
        with said_in_flags(FINETUNE_FLAGS):
            result = resume_finetune(args.out, examples, until=args.until, steps=args.steps, progress=args.progress)
    else:
        if args.base is None:
            raise InputError("give the base model to fine-tune (a folder or hub id), or --resume to carry on --out.")
        with said_in_flags(FINETUNE_FLAGS):
            config = C(context=inputs.training_context(args.context, args.base), steps=args.steps or FINETUNE_STEPS,
                       batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=args.warmup,
                       eval_every=args.eval_every, sample_every=args.sample_every, save_every=args.save_every,
                       val_fraction=args.val_fraction, seed=args.seed, bf16=args.bf16)
        with said_in_flags(FINETUNE_FLAGS), build_then_move(args.out) as partial:   # a failed run leaves --out as it was
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


def _experiment_setup(args: argparse.Namespace, **fields) -> tuple[list[str], C]:
    """(texts, base config) of a training experiment, --out checked first."""
    _set_threads(args)
    check_output_folder(args.out)   # before the training, not after
    with said_in_flags(TRAIN_FLAGS):
        texts = inputs.experiment_texts(args.data, args.stories, seed=args.seed)
    return texts, C(vocab_size=args.vocab_size, context=args.context, batch_size=args.batch_size,
                    learning_rate=args.lr, seed=args.seed, bf16=args.bf16, **fields)


def cmd_sweep(args: argparse.Namespace) -> None:
    """Train models of several sizes on the same tokens; tabulate, fit and plot the final losses."""
    from minillm.experiments.training import fit_sweep, shape, size_sweep, sweep_text
    from minillm.reports.files import write_sweep

    texts, base = _experiment_setup(args)
    shapes = [shape(*s) for s in args.shapes]
    print(f"{len(texts)} documents; {len(shapes)} models, {args.tokens:,} training tokens each")
    results = size_sweep(texts, shapes, args.tokens, args.out, base=base, progress=args.progress)
    fit = fit_sweep(results)
    print(f"\n{sweep_text(results, fit)}")
    for path in write_sweep(results, fit, args.out):
        print(f"wrote {path}")


def cmd_compare_architectures(args: argparse.Namespace) -> None:
    """Train a transformer and a fixed-window MLP on the same tokens; tabulate and plot both."""
    from minillm.experiments.training import architectures_text, compare_architectures, shape
    from minillm.reports.files import write_architectures

    texts, base = _experiment_setup(args, mlp_window=args.mlp_window, **shape(args.hidden, args.layers))
    print(f"{len(texts)} documents; {args.tokens:,} training tokens for each architecture")
    rows = compare_architectures(texts, args.tokens, args.out, base=base, progress=args.progress)
    print(f"\n{architectures_text(rows)}")
    for path in write_architectures(rows, args.out):
        print(f"wrote {path}")


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


def _add_run_args(parser: argparse.ArgumentParser, out: str, what: str, steps: int, batch_size: int, lr: float,
                  warmup: int, context: str, eval_every: int, sample_every: int, save_every: int,
                  val_fraction: float, seed: int) -> None:
    """The flags `minillm train` and `minillm finetune` share, with each one's defaults."""
    parser.add_argument("--out", type=Path, required=out is None, default=None if out is None else Path(out),
                        help=f"folder for the {what}" + (" (required, no default)" if out is None else ""))
    add_overwrite(parser, f"replace what --out already holds (without it, an existing {what} is kept)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps of the whole run (default {steps}); with --resume, a new total to "
                             "train a finished run further (the learning-rate schedule is planned again for it)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="windows per step")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=warmup, help="warm-up steps")
    parser.add_argument("--context", type=int, default=None, help=f"tokens per training window (default {context})")
    parser.add_argument("--eval-every", type=int, default=eval_every, help="steps between validation losses")
    parser.add_argument("--sample-every", type=int, default=sample_every,
                        help="steps between sampled continuations (0: never)")
    parser.add_argument("--save-every", type=int, default=save_every,
                        help="steps between checkpoints (0: only at the end)")
    parser.add_argument("--val-fraction", type=float, default=val_fraction, help="share of documents held out")
    parser.add_argument("--seed", type=int, default=seed, help="seed of the weights and the data order")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    parser.add_argument("--until", type=int,
                        help="stop and save after this step, to finish later with --resume (default: run all --steps)")
    parser.add_argument("--resume", action="store_true",
                        help="carry on the run saved in --out (its settings are read from there), on the same texts")
    add_threads(parser)
    add_progress(parser, "bar (TQDM_DISABLE=1 also hides it)")


def _add_experiment_args(parser: argparse.ArgumentParser, tokens: int) -> None:
    """The flags `minillm sweep` and `minillm compare-architectures` share."""
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
    add_progress(parser)
    add_threads(parser)


def _add_family_args(parser: argparse.ArgumentParser, out_help: str, overwrite_help: str) -> None:
    """The flags `minillm train-family` and `minillm finetune-family` share."""
    parser.add_argument("--out", type=Path, default=Path("data/models"), help=out_help)
    add_overwrite(parser, overwrite_help)
    add_threads(parser)
    add_progress(parser)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Declare this group's commands."""
    train = commands.add_parser("train", formatter_class=HelpFormatter,
                                help="train a small Qwen2 or GPT-2 model (or the MLP baseline) on text files")
    train.add_argument("--data", type=Path, nargs="+", metavar="FILE",
                       help="text files, documents separated by <|endoftext|> (default: the bundled stories)")
    _add_run_args(train, "trained-model", "checkpoint", C.steps, C.batch_size, C.learning_rate, C.warmup_steps,
                  f"{C.context}, or the --init model's window if shorter", C.eval_every, C.sample_every, C.save_every,
                  C.val_fraction, C.seed)
    train.add_argument("--tokenizer", type=Path, metavar="FOLDER",
                       help="use this folder's tokenizer.json (default: train a byte-level BPE tokenizer)")
    train.add_argument("--architecture", default=C.architecture, choices=["transformer", "mlp", "gpt2"],
                       help="transformer: a Qwen2 decoder; gpt2: GPT-2 (MLP 4 x hidden wide, no --kv-heads); "
                            "mlp: the attention-free fixed-window MLP baseline")
    train.add_argument("--vocab-size", type=int, default=C.vocab_size, help="BPE vocabulary to train")
    train.add_argument("--hidden", type=int, default=C.hidden_size, help="hidden size (MLP: embedding width)")
    train.add_argument("--layers", type=int, default=C.num_hidden_layers, help="decoder blocks")
    train.add_argument("--heads", type=int, default=C.num_attention_heads, help="query heads")
    train.add_argument("--kv-heads", type=int, default=C.num_key_value_heads, help="key/value heads")
    train.add_argument("--intermediate", type=int, default=C.intermediate_size, help="SwiGLU (MLP: hidden) width")
    train.add_argument("--mlp-window", type=int, default=C.mlp_window, help="architecture mlp: tokens it sees")
    train.add_argument("--n-positions", type=int, default=C.n_positions,
                       help="architecture gpt2: rows of the position table (0: --context)")
    train.add_argument("--min-lr-ratio", type=float, default=C.min_lr_ratio, help="the cosine decay ends at lr times this")
    train.add_argument("--weight-decay", type=float, default=C.weight_decay, help="AdamW's, on weight matrices")
    train.add_argument("--grad-clip", type=float, default=C.grad_clip, help="max gradient norm (0: off)")
    train.add_argument("--compile", action="store_true",
                       help="try torch.compile (the first step compiles; the summary says how long)")
    train.add_argument("--init", metavar="FOLDER",
                       help="continued pretraining: start from this model's weights and tokenizer (its shape too), "
                            "with a fresh optimizer, schedule and step count; --data gives the new texts "
                            "(default: a new model)")
    train.set_defaults(run=cmd_train)

    tune = commands.add_parser("finetune", formatter_class=HelpFormatter,
                               help="fine-tune a base model on instruction/response pairs (chat template)")
    tune.add_argument("base", nargs="?",
                      help="the base model: a checkpoint folder or hub id (no default; not needed with --resume)")
    tune.add_argument("--data", type=Path, required=True, metavar="FILE",
                      help='JSON Lines, one {"instruction": ..., "response": ...} or {"messages": [...]} per line '
                           "(required, no default)")
    _add_run_args(tune, None, "instruct model", FINETUNE_STEPS, 16, 1e-3, 20, "the base model's window, at most 128",
                  50, 0, 0, 0.05, 0)
    tune.set_defaults(run=cmd_finetune)

    sweep = commands.add_parser("sweep", formatter_class=HelpFormatter,
                                help="train several model sizes on the same tokens; fit a power law")
    _add_experiment_args(sweep, tokens=400_000)
    sweep.add_argument("--shapes", nargs="+", type=model_shape, default=[(16, 1), (32, 2), (64, 2), (96, 3)],
                       help="model shapes as HIDDENxLAYERS (default: 16x1 32x2 64x2 96x3)")
    sweep.set_defaults(run=cmd_sweep)

    arch = commands.add_parser("compare-architectures", formatter_class=HelpFormatter,
                               help="a transformer against a fixed-window MLP")
    _add_experiment_args(arch, tokens=1_000_000)
    arch.add_argument("--hidden", type=int, default=64, help="hidden size (also the MLP's embedding width)")
    arch.add_argument("--layers", type=int, default=2, help="decoder blocks of the transformer")
    arch.add_argument("--mlp-window", type=int, default=8, help="tokens the MLP sees")
    arch.set_defaults(run=cmd_compare_architectures)

    family = commands.add_parser("train-family", formatter_class=HelpFormatter,
                                 help="train the shipped tiny-s, tiny-m, tiny-l and tiny-gpt2 models")
    _add_family_args(family, "folder for the models",
                     "replace the tiny-s, tiny-m, tiny-l, tiny-gpt2 and family.csv that --out already holds "
                     "(its other files are kept either way)")
    family.add_argument("--tokens", type=positive_int, default=1_000_000, help="training tokens per Qwen2 model")
    family.add_argument("--gpt2-tokens", type=non_negative_int, default=1_000_000,
                        help="training tokens of tiny-gpt2, the TinyStories paper's GPT-2 (0: leave it out)")
    family.add_argument("--gpt2-tokenizer",
                        help="folder or hub id with GPT-2's tokenizer (default: the shipped data/models/tiny-gpt2, "
                             "else openai-community/gpt2 from the hub)")
    family.set_defaults(run=cmd_train_family)

    instruct = commands.add_parser("finetune-family", formatter_class=HelpFormatter,
                                   help="fine-tune the shipped family into tiny-*-instruct")
    _add_family_args(instruct, "folder for the three instruct models",
                     "replace the tiny-*-instruct folders, instruct.csv and instructions.csv that --out already holds "
                     "(its other files, the base models too, are kept either way)")
    instruct.add_argument("--bases", type=Path, default=Path("data/models"),
                          help="folder holding tiny-s, tiny-m and tiny-l (default %(default)s)")
    instruct.add_argument("--steps", type=positive_int, default=None,
                          help="fine-tuning steps for every model (default: each size's own, "
                               "minillm.course.instruct_family.INSTRUCT_SIZES)")
    instruct.set_defaults(run=cmd_finetune_family)
