"""What the ``minillm`` commands share: argparse types that refuse a bad number before any loading,
the flags several commands declare (each declared here once), and the translation of the library's
parameter names into the command's flags.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from minillm.checkpoint.loading import DTYPES
from minillm.errors import InputError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every option's default: argparse's "(default: ...)", unless the option's
    help already says in words what the default is; a flag (``--chat``) is off unless given."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default" in (action.help or "") or action.nargs == 0:   # a flag is off unless given
            return action.help or ""
        return super()._get_help_string(action)


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (``--top-k 0`` or ``--stories -3`` is refused, not run)."""
    return _whole(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (``--max-new-tokens -1`` is refused)."""
    return _whole(text, 0)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (``nan``, ``inf`` and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (``--timeout 0`` would fail every student)."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be greater than 0, got 0")
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


def text_file(text: str) -> Path:
    """argparse type of ``--texts FILE``. ``quantize --texts 20`` once meant "20 texts": a bare
    number that names no file is refused, pointing to ``--stories``, the count's name now."""
    if text.isdigit() and not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text!r} is a count, but --texts takes a file of texts (as in minillm "
                                         f"scaling); give the number of texts with --stories {text}")
    return Path(text)


def model_shape(text: str) -> tuple[int, int]:
    """argparse type of ``--shapes``: HIDDENxLAYERS, e.g. 64x2 -> (64, 2)."""
    hidden, _, layers = text.partition("x")
    if not (hidden.isdigit() and layers.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: write each shape as HIDDENxLAYERS, e.g. 64x2")
    return int(hidden), int(layers)


# ---- flags several commands declare -------------------------------------------------------------

DTYPE_CHOICES = [*DTYPES, "auto"]   # auto: the checkpoint's own


def add_source(parser: argparse.ArgumentParser, text_help: str | None = "the text (prompt) to feed the model") -> None:
    """SOURCE (and TEXT, unless ``text_help`` is None) and --dtype: the commands that load one model."""
    parser.add_argument("source", help="a local checkpoint folder or a hub repo id such as Qwen/Qwen2.5-0.5B")
    if text_help is not None:
        parser.add_argument("text", help=text_help)
    parser.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES, help="weights' dtype; auto: the checkpoint's own")


def add_progress(parser: argparse.ArgumentParser, what: str = "bars") -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help=f"no progress {what}")


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)")


def add_overwrite(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--overwrite", action="store_true", help=help)


def add_texts(parser: argparse.ArgumentParser, categories: tuple[str, ...]) -> None:
    """--category, --texts FILE and --include-seen: which texts a scoring command reads."""
    parser.add_argument("--category", choices=categories, default=None,
                        help="score bundled texts of this kind, with or without --offline (default: TinyStories' "
                             "validation stories; offline or with the shipped family, the bundled stories)")
    parser.add_argument("--texts", type=text_file, metavar="FILE",
                        help="score the texts of this file: TinyStories (<|endoftext|>), WikiText, or paragraphs "
                             "(default: no file)")
    parser.add_argument("--include-seen", action="store_true",
                        help="also score texts a model trained on (its training_data.json says which)")


def add_scoring(parser: argparse.ArgumentParser, out: str, models_help: str, stories_help: str = "how many texts at most",
                texts: tuple[str, ...] | None = None) -> None:
    """Models and texts, as for `minillm scaling`: --models, --stories, --out, --offline, the text
    flags (``texts``: the categories --category offers; None: the command declares its own), --dtype,
    --seed and --no-progress."""
    parser.add_argument("--models", nargs="+", default=None, help=models_help)
    parser.add_argument("--stories", type=positive_int, default=50, help=stories_help)
    parser.add_argument("--out", type=Path, default=Path(out), help="folder for tables, plots and the report")
    parser.add_argument("--offline", action="store_true",
                        help="no network: bundled texts, and models from folders or the local cache")
    if texts is not None:
        add_texts(parser, texts)
    parser.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES, help="weights' dtype")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    add_progress(parser, "lines")


# ---- the library's parameter names said as flags ------------------------------------------------

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
def said_in_flags(flags: dict[str, str]) -> Iterator[None]:
    """An InputError raised in the block, raised again with its parameters said as the command's
    flags (:func:`in_flags`). Errors about files (ConfigError...), subclasses, pass as they are."""
    try:
        yield
    except InputError as err:
        if type(err) is not InputError:
            raise
        raise InputError(in_flags(str(err), flags)) from err


def say_in_flags(flags: dict[str, str]) -> Callable[[str], None]:
    """``print``, with the library's parameter names said as the command's flags."""
    return lambda message: print(in_flags(message, flags))
