"""The model family that ships with the kit: three tiny Qwen2 models of clearly different sizes,
and the TinyStories paper's GPT-2.

``data/models/tiny-s``, ``tiny-m``, ``tiny-l`` and ``tiny-gpt2`` are ordinary Hugging Face folders
(:func:`minillm.load_model` and ``transformers`` both load them) made by :func:`train_family`, so
that the scaling experiment has a family of real trained models that runs offline in seconds,
and shows the science on real text. The recipe, fixed here so that it can be run again:

* **data**: real TinyStories text, the paragraphs of ``data/tinystories/validation_head.txt`` before
  :data:`REAL_SPLIT`, each 4 times; 5,000 synthetic stories from :mod:`minillm.data.stories`;
  the bundled stories *except the last 20*, each 10 times; shuffled together with a fixed seed.
* **held out**: the paragraphs of the TinyStories file from :data:`REAL_SPLIT` on (1,300 paragraphs
  from the start of a story, about 300 stories; :func:`held_out_real_stories`) and the last 20
  bundled stories (:func:`held_out_stories`) are never trained on: they are the evaluation sets,
  named in each model's ``training_data.json``. Validation during training uses 400 more synthetic
  stories.
* **tokenizer**: the three Qwen2 models share one byte-level BPE vocabulary of 1,024 tokens,
  learned from the training documents, so that their perplexities count the same tokens.
  ``tiny-gpt2`` uses GPT-2's own 50,257-token tokenizer, as in the paper; it compares with the
  others in bits per byte.
* **models**: the same recipe and the same number of training tokens (1M) for each Qwen2 model;
  only the shape differs (hidden size and layers; non-embedding parameters 50K, 305K, 1.1M).
  ``tiny-gpt2`` is the TinyStories paper's configuration (Eldan and Li 2023, arXiv:2305.07759:
  GPT-2 with n_embd 64, 6 layers, 8 heads, 3.6M parameters, 3.2M of them the embedding), trained
  on the same documents.
* **training**: AdamW, warm-up then cosine, bfloat16 autocast, context 128. The Qwen2 models are
  saved in float32, ``tiny-gpt2`` in bfloat16 (half the size; its logits are those of the bfloat16
  weights). The optimizer state is not shipped (it would triple the size), so the shipped models
  cannot be resumed; their ``trainer_state.json`` keeps the loss history.

Held-out perplexity falls with size, on the real stories and on the bundled ones: the point of a
scaling family. Why real text in the mix: trained on synthetic stories alone (and the 48 bundled
ones), the models learned the synthetic grammar, and on real TinyStories the larger ones did no
better than the smaller (perplexity 104.5, 114.0, 103.1): size did not seem to matter.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from minillm.checkpoint.loading import load_model, load_model_and_tokenizer
from minillm.checkpoint.safe_io import build_entries_then_move
from minillm.checkpoint.weights import save_weights
from minillm.data import TINYSTORIES_HEAD, bundled_texts, read_text_file
from minillm.data.stories import synthetic_stories
from minillm.experiments.training import shape
from minillm.inference.scoring import score_many
from minillm.reports.tables import write_csv
from minillm.training.bpe import train_tokenizer
from minillm.training.checkpoints import STATE_TENSORS
from minillm.training.config import TrainConfig
from minillm.training.provenance import HeldOut, write_record
from minillm.training.train import train

# The repo is installed editable (`pip install -e .`), so data/ sits next to the package.
FAMILY_DIR = Path(__file__).resolve().parents[2] / "data" / "models"
HELD_OUT = 20                    # the last 20 bundled stories: an evaluation set
REAL_SPLIT = 3002                # paragraphs of data/tinystories/validation_head.txt before it are trained on
REAL_REPEATS = 4                 # copies of each real training paragraph
SYNTHETIC = 5_000                # synthetic stories in the training data
REPEATS = 10                     # copies of each bundled training story
VALIDATION = 400                 # synthetic stories for the validation loss during training
SEED = 0
VOCAB_SIZE = 1024
TOKENS = 1_000_000               # training tokens per model
SHAPES = {"tiny-s": shape(48, 2), "tiny-m": shape(96, 3), "tiny-l": shape(160, 4)}
GPT2_NAME = "tiny-gpt2"
GPT2_TOKENIZER = "openai-community/gpt2"     # where the GPT-2 tokenizer comes from when none is shipped
GPT2_SHAPE = dict(architecture="gpt2", hidden_size=64, num_hidden_layers=6, num_attention_heads=8, n_positions=1024)
FAMILY_ENTRIES = (*SHAPES, GPT2_NAME, "family.csv")    # what train_family writes into its folder
RECIPE = dict(context=128, batch_size=32, learning_rate=3e-3, warmup_steps=100, min_lr_ratio=0.1,
              weight_decay=0.1, grad_clip=1.0, eval_batches=8, seed=SEED, bf16=True)
GPT2_TOKENS = 1_000_000          # training tokens of tiny-gpt2 (GPT-2 tokens: about 4 bytes each)
GPT2_RECIPE = dict(RECIPE, batch_size=16, eval_batches=4)   # its 50,257-way softmax: 16 windows a step


@dataclass
class FamilyMember:
    """One trained model of the family: a row of family.csv. Perplexities are corpus perplexities,
    exp(total NLL / scored tokens), each text scored on its own (its first token unscored)."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    params: int
    non_embedding_params: int
    steps: int
    tokens: int                  # training tokens seen
    val_loss: float              # final validation loss (400 synthetic stories), nats per token
    held_out_perplexity: float   # on the 20 held-out bundled stories
    real_perplexity: float       # on the held-out real TinyStories paragraphs
    real_bits_per_byte: float    # the same in bits per UTF-8 byte (compares across tokenizers)
    seconds: float               # training time


TRAINING_DESCRIPTION = (
    f"Real TinyStories: paragraphs #0 to #{REAL_SPLIT - 1} of data/tinystories/validation_head.txt, each "
    f"{REAL_REPEATS} times; {SYNTHETIC:,} synthetic stories, minillm.data.stories.synthetic_stories("
    f"{SYNTHETIC + VALIDATION}, seed={SEED})[:{SYNTHETIC}] (not listed here); the bundled stories "
    f"data/texts/stories.txt #0 to #{{last}}, each {REPEATS} times (the SHA-256 of every real paragraph and "
    f"bundled story below). Never trained on: the held-out sets below, the last {HELD_OUT} bundled stories, "
    "and every other bundled category (news, code, poetry, instructions).")
HELD_OUT_DESCRIPTION = (
    f"The evaluation sets: paragraphs #{REAL_SPLIT} to the end of data/tinystories/validation_head.txt "
    f"(those that also occur before #{REAL_SPLIT} are trained on, so not held out), and the last {HELD_OUT} "
    "bundled stories of data/texts/stories.txt.")

def real_split() -> tuple[list[str], list[str]]:
    """(training, held-out) paragraphs of the real TinyStories text the kit ships.

    Training: paragraphs 0 to REAL_SPLIT - 1 of ``data/tinystories/validation_head.txt`` (split at
    blank lines, as :func:`minillm.data.read_text_file` and ``minillm scaling --texts`` split it).
    Held out: the paragraphs from REAL_SPLIT on that do not also occur in the training part."""
    paragraphs = read_text_file(TINYSTORIES_HEAD).texts
    trained = paragraphs[:REAL_SPLIT]
    seen = set(trained)
    return trained, [p for p in paragraphs[REAL_SPLIT:] if p not in seen]


def held_out_real_stories() -> list[str]:
    """The held-out real TinyStories paragraphs (about 300 stories), never trained on."""
    return real_split()[1]


def write_training_record(folder: str | Path, extra: str = "") -> Path:
    """Write the family's training record (``training_data.json``, see :mod:`minillm.training.provenance`) into
    ``folder``; ``extra``: what a fine-tuned model saw after it (its data is the same texts, so only the
    description grows)."""
    trained = bundled_texts("stories")[:-HELD_OUT]
    real, held_real = real_split()
    return write_record(folder, trained + real, TRAINING_DESCRIPTION.format(last=len(trained) - 1) + extra,
                        held_out=HeldOut(HELD_OUT_DESCRIPTION, held_real + held_out_stories()))


def held_out_stories() -> list[str]:
    """An evaluation set: the last 20 bundled stories, never trained on."""
    return bundled_texts("stories")[-HELD_OUT:]


def family_texts() -> tuple[list[str], list[str]]:
    """(training, validation) documents: the real training paragraphs 4 times, 5,000 synthetic
    stories and 10 copies of each bundled story but the last 20, shuffled; then 400 further
    synthetic stories."""
    stories = synthetic_stories(SYNTHETIC + VALIDATION, SEED)
    texts = real_split()[0] * REAL_REPEATS + stories[:SYNTHETIC] + bundled_texts("stories")[:-HELD_OUT] * REPEATS
    random.Random(SEED).shuffle(texts)
    return texts, stories[SYNTHETIC:]


def held_out_scores(folder: str | Path) -> tuple[float, float, float]:
    """(bundled perplexity, real perplexity, real bits per byte) of the model in ``folder`` on the
    held-out bundled stories and the held-out real paragraphs: exp(total NLL / scored tokens), and
    total NLL / ln 2 / the scored tokens' UTF-8 bytes."""
    model, tok = load_model_and_tokenizer(folder)
    bundled = score_many(model, tok, held_out_stories(), top_k=0)
    real = score_many(model, tok, held_out_real_stories(), top_k=0)
    nll = [s.total_nll for s in real]
    return (_corpus([s.total_nll for s in bundled], [s.n_tokens for s in bundled]),
            _corpus(nll, [s.n_tokens for s in real]), sum(nll) / math.log(2) / sum(s.n_bytes for s in real))


def gpt2_tokenizer_source(family_dir: str | Path = FAMILY_DIR) -> str:
    """Where :func:`train_family` takes GPT-2's tokenizer from: the shipped ``tiny-gpt2`` folder when it
    holds one (offline), else the hub's ``openai-community/gpt2``."""
    shipped = Path(family_dir) / GPT2_NAME
    return str(shipped) if (shipped / "tokenizer.json").is_file() else GPT2_TOKENIZER


def train_family(out_dir: str | Path, tokens: int = TOKENS, progress: bool = True, gpt2_tokens: int = GPT2_TOKENS,
                 gpt2_tokenizer: str | Path | None = None) -> list[FamilyMember]:
    """Train tiny-s, tiny-m, tiny-l and tiny-gpt2 into ``out_dir/<name>``; write family.csv; return the rows.

    ``tokens``: training tokens per Qwen2 model (the shipped family: 1,000,000); ``gpt2_tokens``: for
    tiny-gpt2 (0 leaves it out); ``gpt2_tokenizer``: a folder or hub id with GPT-2's tokenizer (default:
    :func:`gpt2_tokenizer_source`). Each folder holds config.json, model.safetensors, the tokenizer,
    training_data.json, trainer_state.json (the settings and loss history) and loss_curves.png. The
    folders and the CSV are built in a temporary folder inside ``out_dir`` and moved into place together
    when all are done: a run that fails leaves ``out_dir`` as it was (the Qwen2 models share one
    tokenizer, so a mix of old and new members would not compare). Its other entries (e.g. the instruct
    family) stay.
    """
    texts, val_texts = family_texts()
    rows = []
    gpt2_tokenizer = gpt2_tokenizer or gpt2_tokenizer_source(out_dir)
    # All models are built aside and moved into place together: a run that fails keeps the old family
    with tempfile.TemporaryDirectory() as scratch, build_entries_then_move(out_dir, FAMILY_ENTRIES) as out:
        tokenizer = train_tokenizer(texts, VOCAB_SIZE, scratch)
        for name, dims in SHAPES.items():
            config = _config(dims, tokens, RECIPE, vocab_size=VOCAB_SIZE)
            rows.append(_train_member(name, texts, val_texts, config, out, tokenizer, progress))
        if gpt2_tokens:
            config = _config(GPT2_SHAPE, gpt2_tokens, GPT2_RECIPE)
            rows.append(_train_member(GPT2_NAME, texts, val_texts, config, out, gpt2_tokenizer, progress,
                                      store_bf16=True))
        write_csv(out / "family.csv", rows)
    return rows


def _config(dims: dict, tokens: int, recipe: dict, **extra) -> TrainConfig:
    steps = tokens // (recipe["batch_size"] * recipe["context"])
    return TrainConfig(**dims, **recipe, **extra, steps=steps, eval_every=max(1, steps // 10))


def _train_member(name: str, texts: list[str], val_texts: list[str], config: TrainConfig, out: Path,
                  tokenizer: str | Path, progress: bool, store_bf16: bool = False) -> FamilyMember:
    """Train one model of the family into ``out/name``; its row of family.csv."""
    from minillm.reports import plots_training

    if progress:
        print(f"training {name} for {config.steps} steps ({config.steps * config.tokens_per_step:,} tokens)", flush=True)
    start = time.perf_counter()
    result = train(texts, config, out / name, tokenizer=tokenizer, progress=progress, val_texts=val_texts)
    seconds = time.perf_counter() - start
    (out / name / STATE_TENSORS).unlink()       # the optimizer state is not shipped
    if store_bf16:
        _store_bfloat16(out / name)
    write_training_record(out / name)
    plots_training.plot_loss_curves(result.history, out / name / "loss_curves.png", title=f"Training {name}")
    model = result.model
    return FamilyMember(name, config.hidden_size, config.num_hidden_layers, model.num_parameters(),
                        model.num_parameters(non_embedding=True), config.steps, config.steps * config.tokens_per_step,
                        result.final_val_loss, *held_out_scores(out / name), seconds)


def _store_bfloat16(folder: Path) -> None:
    """Rewrite the weights of the model in ``folder`` in bfloat16 (the kit's loader and writer)."""
    save_weights(load_model(folder, dtype=torch.bfloat16), folder)




def _corpus(nll: list[float], tokens: list[int]) -> float:
    return math.exp(sum(nll) / sum(tokens))
