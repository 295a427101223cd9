"""The model family that ships with the kit: three tiny Qwen2 models of clearly different sizes.

``data/models/tiny-s``, ``tiny-m`` and ``tiny-l`` are ordinary Hugging Face folders
(:func:`minillm.load_model` and ``transformers`` both load them) made by
:func:`train_family`, so that the scaling experiment has a family of real trained models
that runs offline in seconds. The recipe, fixed here so that it can be run again:

* **data**: 20,000 synthetic stories from :mod:`minillm.storygen` plus the bundled stories
  *except the last 20*, each repeated 40 times (about a tenth of the tokens), shuffled
  together with a fixed seed. The last 20 bundled stories are never trained on: they are
  the held-out evaluation set (:func:`held_out_stories`). Validation during training uses
  400 more synthetic stories.
* **tokenizer**: one byte-level BPE vocabulary, learned from the training documents and
  shared by all three models, so that their perplexities count the same tokens.
* **models**: the same recipe and the same number of training tokens (1M) for each; only
  the shape differs (hidden size and layers; non-embedding parameters 50K, 305K, 1.1M).
* **training**: AdamW, warm-up then cosine, bfloat16 autocast, context 128; weights are
  saved in float32. The optimizer state is not shipped (it would triple the size), so the
  shipped models cannot be resumed; their ``trainer_state.json`` keeps the loss history.

Held-out perplexity falls with size: the point of a scaling family. Why the repeats and the
short training: the synthetic stories are far more predictable than written ones, so a model
that sees only them grows over-confident and pays for it on real stories (trained on
synthetic text alone, the *larger* models scored worse on the held-out stories), and the 48
real stories, repeated, are learned by heart when training goes on much longer (at 2M
tokens the order of the three models broke). These are toy models of toy data; their
perplexity on the held-out stories is high (75 to 100 per token).
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .bpe import train_tokenizer
from .data import bundled_texts
from .experiments.scaling import write_csv
from .experiments.training import shape
from .loading import load_model
from .scoring import score_many
from .storygen import synthetic_stories
from .tokenizer import load_tokenizer
from .train import STATE_TENSORS, TrainConfig, train

# The repo is installed editable (`pip install -e .`), so data/ sits next to the package.
FAMILY_DIR = Path(__file__).resolve().parents[1] / "data" / "models"
HELD_OUT = 20                    # the last 20 bundled stories: the evaluation set
SYNTHETIC = 20_000               # synthetic stories in the training data
REPEATS = 40                     # copies of each bundled training story
VALIDATION = 400                 # synthetic stories for the validation loss during training
SEED = 0
VOCAB_SIZE = 1024
TOKENS = 1_000_000               # training tokens per model
SHAPES = {"tiny-s": shape(48, 2), "tiny-m": shape(96, 3), "tiny-l": shape(160, 4)}
RECIPE = dict(context=128, batch_size=32, learning_rate=3e-3, warmup_steps=100, min_lr_ratio=0.1,
              weight_decay=0.1, grad_clip=1.0, eval_batches=8, seed=SEED, bf16=True)


@dataclass
class FamilyMember:
    """One trained model of the family: a row of family.csv."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    params: int
    non_embedding_params: int
    steps: int
    tokens: int                  # training tokens seen
    val_loss: float              # final validation loss (400 synthetic stories), nats per token
    held_out_perplexity: float   # on the 20 held-out bundled stories, exp(total NLL / scored tokens)
    seconds: float               # training time


def held_out_stories() -> list[str]:
    """The evaluation set: the last 20 bundled stories, never trained on."""
    return bundled_texts("stories")[-HELD_OUT:]


def family_texts() -> tuple[list[str], list[str]]:
    """(training, validation) documents: 20,000 synthetic stories and 40 copies of each bundled
    story but the last 20, shuffled; then 400 further synthetic stories."""
    stories = synthetic_stories(SYNTHETIC + VALIDATION, SEED)
    texts = stories[:SYNTHETIC] + bundled_texts("stories")[:-HELD_OUT] * REPEATS
    random.Random(SEED).shuffle(texts)
    return texts, stories[SYNTHETIC:]


def held_out_perplexity(folder: str | Path) -> float:
    """Corpus perplexity of the model in ``folder`` on the held-out stories: exp(total NLL / tokens)."""
    model, tok = load_model(folder), load_tokenizer(folder)
    scores = score_many(model, tok, held_out_stories(), top_k=0)
    return math.exp(sum(s.total_nll for s in scores) / sum(s.n_tokens for s in scores))


def train_family(out_dir: str | Path, tokens: int = TOKENS, progress: bool = True) -> list[FamilyMember]:
    """Train tiny-s, tiny-m and tiny-l into ``out_dir/<name>``; write family.csv; return the rows.

    ``tokens``: training tokens per model (the shipped family: 1,000,000). Each folder holds
    config.json, model.safetensors (float32), the shared tokenizer, trainer_state.json (the
    settings and loss history) and loss_curves.png.
    """
    from . import plots

    out = Path(out_dir)
    texts, val_texts = family_texts()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = train_tokenizer(texts, VOCAB_SIZE, scratch)
        for name, dims in SHAPES.items():
            steps = tokens // (RECIPE["batch_size"] * RECIPE["context"])
            config = TrainConfig(**dims, **RECIPE, vocab_size=VOCAB_SIZE, steps=steps, eval_every=max(1, steps // 10))
            if progress:
                print(f"training {name} for {steps} steps ({steps * config.tokens_per_step:,} tokens)", flush=True)
            start = time.perf_counter()
            result = train(texts, config, out / name, tokenizer=tokenizer, progress=progress, val_texts=val_texts)
            seconds = time.perf_counter() - start
            (out / name / STATE_TENSORS).unlink()       # the optimizer state is not shipped
            plots.plot_loss_curves(result.history, out / name / "loss_curves.png", title=f"Training {name}")
            model = result.model
            rows.append(FamilyMember(name, config.hidden_size, config.num_hidden_layers, model.num_parameters(),
                                     model.num_parameters(non_embedding=True), steps, steps * config.tokens_per_step,
                                     result.final_val_loss, held_out_perplexity(out / name), seconds))
    write_csv(out / "family.csv", rows)
    return rows
