"""The ``minillm`` command: parse the arguments, call one library function, print what it returns.

The commands are declared by group, each module with its commands' flags and the functions they
run: ``models`` (one model, one text), ``experiments`` (models scored on the same texts),
``training`` (making models) and ``course`` (exercises and grading); ``args`` holds what they
share. Which models and texts, the offline fallback, the streaming decode: the library's
(``minillm.experiments.inputs``, ``minillm.inference.generate``); the CLI only says the library's
parameter names as its flags (``max_new_tokens=`` -> ``--max-new-tokens``).

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
import sys
from contextlib import nullcontext

from minillm.checkpoint.safe_io import hold_output
from minillm.cli import course, experiments, models, training
from minillm.cli.args import HelpFormatter
from minillm.errors import MinillmError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``minillm`` parser: every command, each with its function as ``run``."""
    parser = argparse.ArgumentParser(prog="minillm", description="See what is inside a GPT-2, Qwen2 or Llama language model.",
                                     formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (models, experiments, training, course):
        group.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``minillm`` with ``argv`` (default: the command line); returns the exit status. The kit's
    own errors (:class:`~minillm.errors.MinillmError`) end it with their one-line message and status 1;
    any other exception is a bug and shows its traceback."""
    args = build_parser().parse_args(argv)
    try:
        # One run at a time into a training command's --out, from its checks to its last file (safe_io.hold_output).
        with hold_output(args.out) if args.command in ("train", "finetune") else nullcontext():
            args.run(args)
    except MinillmError as err:
        print(f"minillm {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0
