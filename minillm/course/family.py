"""The model family that ships with the kit: three tiny Qwen2 models of clearly different sizes.

``data/models/tiny-s``, ``tiny-m`` and ``tiny-l`` are ordinary Hugging Face folders
(:func:`minillm.load_model` and ``transformers`` both load them) made by
:func:`train_family`, so that the scaling experiment has a family of real trained models
that runs offline in seconds. The recipe, fixed here so that it can be run again:

* **data**: 20,000 synthetic stories from :mod:`minillm.training.storygen` plus the bundled stories
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

**The instruct family** (``tiny-s-instruct``, ``tiny-m-instruct``, ``tiny-l-instruct``) is made
by :func:`finetune_family`: each base model fine-tuned (:mod:`minillm.training.finetune`, ChatML, loss
on the replies only) for 150 steps on 3,960 (instruction, story) pairs: 3,000 synthetic stories
of another seed (1) than the pretraining ones, each with an instruction written from its own
plot (:mod:`minillm.training.instructions`), and 20 copies of each of the 48 bundled training stories
with the instruction written for it (``data/texts/story_instructions.jsonl``). The real
stories are there for the reason they are in pretraining: tuned on synthetic stories alone,
the models' held-out perplexity rose from 83 to 121 (tiny-m). The held-out bundled stories are
in neither training set.
:func:`instruction_perplexities` measures what an instruction is worth on the held-out
stories: each scored in full after nothing (a document start), a vague instruction and a
specific one written for it (``data/texts/held_out_instructions.jsonl``).
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from minillm.checkpoint.loading import load_model_and_tokenizer
from minillm.checkpoint.safe_io import build_entries_then_move
from minillm.data import TEXTS_DIR, bundled_texts
from minillm.experiments.scaling import write_csv
from minillm.experiments.training import shape
from minillm.inference.scoring import score_many
from minillm.training.bpe import EOS, train_tokenizer
from minillm.training.finetune import Example, examples_from_pairs, finetune
from minillm.training.instructions import instruction_pairs
from minillm.training.provenance import write_record
from minillm.training.storygen import synthetic_stories
from minillm.training.checkpoints import STATE_TENSORS
from minillm.training.config import TrainConfig
from minillm.training.train import train

# The repo is installed editable (`pip install -e .`), so data/ sits next to the package.
FAMILY_DIR = Path(__file__).resolve().parents[2] / "data" / "models"
HELD_OUT = 20                    # the last 20 bundled stories: the evaluation set
SYNTHETIC = 20_000               # synthetic stories in the training data
REPEATS = 40                     # copies of each bundled training story
VALIDATION = 400                 # synthetic stories for the validation loss during training
SEED = 0
VOCAB_SIZE = 1024
TOKENS = 1_000_000               # training tokens per model
SHAPES = {"tiny-s": shape(48, 2), "tiny-m": shape(96, 3), "tiny-l": shape(160, 4)}
FAMILY_ENTRIES = (*SHAPES, "family.csv")    # what train_family writes into its folder
INSTRUCT_ENTRIES = (*(f"{name}-instruct" for name in SHAPES), "instruct.csv")   # and finetune_family
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


TRAINING_DESCRIPTION = (
    f"{SYNTHETIC:,} synthetic stories, minillm.training.storygen.synthetic_stories({SYNTHETIC + VALIDATION}, seed={SEED})"
    f"[:{SYNTHETIC}] (not listed here), plus the bundled stories data/texts/stories.txt #0 to "
    f"#{{last}}, each {REPEATS} times (their SHA-256 below). Never trained on: the last {HELD_OUT} bundled "
    "stories and every other bundled category (news, code, poetry, instructions).")


INSTRUCT_DESCRIPTION = (
    "Pretraining as its base model: {base} Then fine-tuned on (instruction, story) pairs: synthetic stories of "
    "minillm.training.instructions.instruction_pairs(seed=1) (not listed here) and the same bundled stories #0 to #{last} "
    "with their instructions from data/texts/story_instructions.jsonl.")


def write_training_record(folder: str | Path, instruct: bool = False) -> Path:
    """Write the family's training record (``training_data.json``, see :mod:`minillm.training.provenance`) into
    ``folder``; ``instruct``: the record of a fine-tuned instruct variant (its base's data, then the
    instruction pairs, whose bundled stories are the same ones)."""
    trained = bundled_texts("stories")[:-HELD_OUT]
    description = TRAINING_DESCRIPTION.format(last=len(trained) - 1)
    if instruct:
        description = INSTRUCT_DESCRIPTION.format(base=description, last=len(trained) - 1)
    return write_record(folder, trained, description)


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
    model, tok = load_model_and_tokenizer(folder)
    scores = score_many(model, tok, held_out_stories(), top_k=0)
    return math.exp(sum(s.total_nll for s in scores) / sum(s.n_tokens for s in scores))


def train_family(out_dir: str | Path, tokens: int = TOKENS, progress: bool = True) -> list[FamilyMember]:
    """Train tiny-s, tiny-m and tiny-l into ``out_dir/<name>``; write family.csv; return the rows.

    ``tokens``: training tokens per model (the shipped family: 1,000,000). Each folder holds
    config.json, model.safetensors (float32), the shared tokenizer, trainer_state.json (the
    settings and loss history) and loss_curves.png. The three folders and the CSV are built in a
    temporary folder inside ``out_dir`` and moved into place together when all are done: a run
    that fails leaves ``out_dir`` as it was (a family shares one tokenizer, so a mix of old and
    new members would not compare). Its other entries (e.g. the instruct family) stay.
    """
    from minillm.reports import plots_training as plots

    texts, val_texts = family_texts()
    rows = []
    # All three models are built aside and moved into place together: a run that fails keeps the old family
    with tempfile.TemporaryDirectory() as scratch, build_entries_then_move(out_dir, FAMILY_ENTRIES) as out:
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
            write_training_record(out / name)
            plots.plot_loss_curves(result.history, out / name / "loss_curves.png", title=f"Training {name}")
            model = result.model
            rows.append(FamilyMember(name, config.hidden_size, config.num_hidden_layers, model.num_parameters(),
                                     model.num_parameters(non_embedding=True), steps, steps * config.tokens_per_step,
                                     result.final_val_loss, held_out_perplexity(out / name), seconds))
        write_csv(out / "family.csv", rows)
    return rows


# ---- the instruct family ------------------------------------------------------------------------

INSTRUCT_EXAMPLES = 3000         # (instruction, story) pairs; the last 5% validate
INSTRUCT_SEED = 1                # synthetic stories other than the pretraining ones (seed 0)
INSTRUCT_REPEATS = 20            # copies of each bundled training story with its instruction
INSTRUCT_VALIDATION = 200        # further synthetic pairs for the validation loss
INSTRUCT_STEPS = 150
INSTRUCT_RECIPE = dict(context=128, batch_size=16, learning_rate=1e-3, warmup_steps=15, min_lr_ratio=0.1,
                       weight_decay=0.1, grad_clip=1.0, eval_every=25, eval_batches=8, seed=SEED, bf16=True)
VAGUE_INSTRUCTION = "Write a story."
CONDITIONS = ("none", "vague", "specific")


@dataclass
class InstructMember:
    """One fine-tuned model of the instruct family: a row of instruct.csv. Perplexities are on
    the 20 held-out stories, every story token scored, exp(total NLL / tokens)."""

    name: str
    base: str
    steps: int
    examples: int                # training examples (pairs)
    reply_tokens: int            # target tokens in the training windows (each seen ~once or less)
    val_loss_before: float       # validation loss per reply token, nats, of the base with the chat tokens added
    val_loss: float              # after fine-tuning
    base_none: float             # the base model: story after <|endoftext|>
    base_vague: float            # after "<|endoftext|>Write a story.\n"
    base_specific: float         # after "<|endoftext|>" + the story's own instruction + "\n"
    none: float                  # the instruct model, story after <|endoftext|> (plain text)
    vague: float                 # as the reply to "Write a story." in the chat template
    specific: float              # as the reply to the story's own instruction
    specific_improved: int       # held-out stories whose NLL is lower given the specific instruction than given none
    seconds: float


def story_instructions() -> list[str]:
    """The instruction written for each bundled story (data/texts/story_instructions.jsonl), in order."""
    path = TEXTS_DIR / "story_instructions.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    stories = bundled_texts("stories")
    if [r["story"] for r in records] != list(range(len(stories))):
        raise ValueError(f"{path} must hold one instruction per bundled story, in order (0..{len(stories) - 1}).")
    for r in records:
        if not stories[r["story"]].startswith(r["begins"]):
            raise ValueError(f"{path}: story {r['story']} no longer begins {r['begins']!r}; update the file.")
    return [r["instruction"] for r in records]


def held_out_instructions() -> list[str]:
    """The instructions of the held-out stories, in the order of :func:`held_out_stories`."""
    return story_instructions()[-HELD_OUT:]


def instruct_examples(n: int = INSTRUCT_EXAMPLES,
                      repeats: int = INSTRUCT_REPEATS) -> tuple[list[Example], list[Example]]:
    """(training, validation) pairs for fine-tuning. Training, shuffled with a fixed seed: ``n``
    synthetic stories of seed 1, each with its own instruction, and ``repeats`` copies of each
    bundled training story (not the held-out ones) with its written instruction, as in
    pretraining. Validation: the next INSTRUCT_VALIDATION synthetic pairs, seen once by no one."""
    synthetic = [(instruction, story) for _, instruction, story in instruction_pairs(n + INSTRUCT_VALIDATION,
                                                                                     INSTRUCT_SEED)]
    pairs = synthetic[:n] + list(zip(story_instructions()[:-HELD_OUT], bundled_texts("stories")[:-HELD_OUT])) * repeats
    random.Random(INSTRUCT_SEED).shuffle(pairs)
    return examples_from_pairs(pairs), examples_from_pairs(synthetic[n:])


def instruction_perplexities(folder: str | Path, chat: bool) -> dict[str, list[float]]:
    """Per held-out story, its total NLL (nats) in each condition of CONDITIONS, and under
    "tokens" the number of scored tokens (the same in every condition: the whole story).

    "none": the story after ``<|endoftext|>``, the document start the models were trained with.
    "vague" / "specific": after "Write a story." / the story's own instruction; with
    ``chat`` as the reply in the model's chat template, else as plain text followed by a newline.
    """
    model, tok = load_model_and_tokenizer(folder)
    stories = held_out_stories()
    given = {"vague": [VAGUE_INSTRUCTION] * len(stories), "specific": held_out_instructions()}
    scores = {"none": score_many(model, tok, stories, context=EOS, top_k=0)}
    for condition, instructions in given.items():
        contexts = instructions if chat else [f"{EOS}{text}\n" for text in instructions]
        scores[condition] = score_many(model, tok, stories, context=contexts, chat=chat, top_k=0)
    result = {name: [s.total_nll for s in rows] for name, rows in scores.items()}
    result["tokens"] = [s.n_tokens for s in scores["none"]]
    if any([s.n_tokens for s in rows] != result["tokens"] for rows in scores.values()):
        raise RuntimeError("the conditions scored different tokens of the stories; they would not compare.")
    return result


def _corpus(nll: list[float], tokens: list[int]) -> float:
    return math.exp(sum(nll) / sum(tokens))


def finetune_family(out_dir: str | Path, steps: int = INSTRUCT_STEPS, progress: bool = True,
                    bases: str | Path = FAMILY_DIR) -> list[InstructMember]:
    """Fine-tune tiny-s, tiny-m and tiny-l (from ``bases``) into ``out_dir/<name>-instruct``;
    write instruct.csv; return the rows. The three models and the CSV are built in a temporary
    folder inside ``out_dir`` and moved into place together when all are done: a run that fails
    leaves ``out_dir`` as it was. Its other entries (the base models, when they share it) stay."""
    bases = Path(bases)
    examples, val_examples = instruct_examples()
    held_out = set(held_out_stories())
    if any(e.reply in held_out for e in examples + val_examples):
        raise AssertionError("a held-out story is in the fine-tuning data")
    rows = []
    with build_entries_then_move(out_dir, INSTRUCT_ENTRIES) as out:   # a run that fails keeps the old models
        for name in SHAPES:
            rows.append(_finetune_member(name, bases, out / f"{name}-instruct", examples, val_examples, steps,
                                         progress))
        write_csv(out / "instruct.csv", rows)
    return rows


def _finetune_member(name: str, bases: Path, target: Path, examples: list[Example], val_examples: list[Example],
                     steps: int, progress: bool) -> InstructMember:
    """Fine-tune ``bases/name`` into ``target``; its row of instruct.csv."""
    from minillm.reports import plots_training as plots

    config = TrainConfig(**INSTRUCT_RECIPE, steps=steps)
    if progress:
        print(f"fine-tuning {name} for {steps} steps on {len(examples)} examples", flush=True)
    start = time.perf_counter()
    result = finetune(bases / name, examples, config, target, progress=progress, val_examples=val_examples)
    seconds = time.perf_counter() - start
    (target / STATE_TENSORS).unlink()       # the optimizer state is not shipped
    write_training_record(target, instruct=True)
    plots.plot_loss_curves(result.history, target / "loss_curves.png", title=f"Fine-tuning {name}-instruct",
                           start_label=f"{name}, before")
    base, tuned = instruction_perplexities(bases / name, chat=False), instruction_perplexities(target, chat=True)
    tokens = tuned["tokens"]
    improved = sum(s < n for s, n in zip(tuned["specific"], tuned["none"]))
    state = json.loads((target / "trainer_state.json").read_text(encoding="utf-8"))
    return InstructMember(
        f"{name}-instruct", name, steps, state["data"]["train_examples"], state["data"]["train_targets"],
        result.history[0].val_loss, result.final_val_loss,
        *(_corpus(base[c], tokens) for c in CONDITIONS), *(_corpus(tuned[c], tokens) for c in CONDITIONS),
        improved, seconds)
