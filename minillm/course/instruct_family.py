"""The instruct family that ships with the kit: tiny-s, tiny-m and tiny-l fine-tuned to answer
instructions, into ``data/models/tiny-{s,m,l}-instruct``, by :func:`finetune_family`.

The recipe, fixed here so that it can be run again:

* **data**: (instruction, story) pairs in the ChatML template, shuffled with a fixed seed:

  - the real TinyStories paragraphs the base family trained on (:func:`minillm.course.family.real_split`),
    INSTRUCT_REAL_REPEATS times, each time with an instruction built from the paragraph's own names
    and words (:func:`minillm.training.instructions.derived_pairs`, seed 1, 2, ...: a specific
    instruction "Write a story about Lily. Use the words kite, wind, red and tree." or the same
    content in a second template, a vague one, or an empty user turn);
  - INSTRUCT_EXAMPLES synthetic stories of seed 1 with instructions written from their facts
    (:func:`minillm.training.instructions.instruction_pairs`);
  - the bundled training stories with their written instructions (``data/texts/story_instructions.jsonl``),
    INSTRUCT_REPEATS times each.

* **steps and peak learning rate**: per size (INSTRUCT_SIZES), the rest of the optimisation shared
  (INSTRUCT_RECIPE).

* **held out**: the same sets as the base family's (the held-out real paragraphs and the last 20
  bundled stories): no pair holds one, :func:`finetune_family` checks it.
* **measured**: ``minillm instructions`` on both held-out sets (:func:`instruction_effects`): each
  story after no instruction, a vague one, its specific one, the paraphrase of that (the same
  names and words in another order and a template the models were never tuned on), and another
  story's specific one (mismatched), for the base and the instruct models; ``instructions.csv``.

Why instructions derived from the real paragraphs: tuned only on synthetic stories and the 48
bundled ones, the models learned the format of an instruction but not to use what it says: on the
held-out stories a story's own instruction and another story's helped alike (by 1 to 4%). Using an
instruction means copying its words into the reply, and the base models cannot copy at all (a
held-out paragraph scored right after itself is no more predictable than alone); fine-tuning teaches
them a little of it: tiny-m more with more steps, tiny-s (one 16-wide key/value head a layer) more
with a larger share of instructions that list the words, not with steps (data/models/README.md has the
trials).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from minillm.checkpoint.hub import display_name
from minillm.checkpoint.safe_io import build_entries_then_move
from minillm.course.family import (
    FAMILY_DIR,
    HELD_OUT,
    SEED,
    SHAPES,
    held_out_real_stories,
    held_out_stories,
    real_split,
    write_training_record,
)
from minillm.data import (
    TEXTS_DIR,
    TINYSTORIES_HEAD,
    TextSource,
    bundled_source,
    bundled_texts,
    read_text_file,
)
from minillm.errors import InputError
from minillm.experiments.instructions import run_instructions
from minillm.reports.tables import write_csv, write_dicts
from minillm.training.checkpoints import STATE_TENSORS
from minillm.training.config import TrainConfig
from minillm.training.finetune import Example, examples_from_pairs, finetune
from minillm.training.instructions import derived_pairs, instruction_pairs
from minillm.training.provenance import without_training_texts

INSTRUCT_EXAMPLES = 1000         # synthetic (instruction, story) pairs
INSTRUCT_SEED = 1                # synthetic stories other than the pretraining ones (seed 0); derived pairs: 1, 2, ...
INSTRUCT_REAL_REPEATS = 3        # passes over the real training paragraphs, each with freshly drawn instruction levels
INSTRUCT_REPEATS = 3             # copies of each bundled training story with its instruction
INSTRUCT_VALIDATION = 200        # further synthetic pairs for the validation loss
INSTRUCT_RECIPE = dict(context=128, batch_size=16, warmup_steps=30, min_lr_ratio=0.1,
                       weight_decay=0.1, grad_clip=1.0, eval_every=200, eval_batches=8, seed=SEED, bf16=True)
# Steps and peak learning rate per size, from trial runs (300 of the held-out paragraphs; ratio of the
# perplexity given the paragraph's own instruction to none; data/models/README.md has the table):
# tiny-s stopped gaining from steps (0.979, 0.977, 0.978 at 2,000, 4,000 at 8e-3 and 6,000 steps): what moved it
# was the share of specific instructions (minillm.training.instructions.DERIVED_LEVELS; 0.965 at 3,000).
# tiny-m gained with steps (0.960 at 2,000; 0.936 at 4,000, but its plain perplexity rose from 20 to 23):
# 3,000 at 3e-3 with the new mix gave 0.941. tiny-l over-fitted at 2,000 steps of 4e-3 (plain perplexity of the
# held-out bundled stories 41.5 -> 50.8); 1,000 at 2e-3 gave 0.949 with the old mix and 36.9 there.
INSTRUCT_SIZES = {"tiny-s": dict(steps=3000, learning_rate=4e-3),
                  "tiny-m": dict(steps=3000, learning_rate=3e-3),
                  "tiny-l": dict(steps=1000, learning_rate=2e-3)}
INSTRUCT_ENTRIES = (*(f"{name}-instruct" for name in SHAPES), "instruct.csv", "instructions.csv",
                    "instructions_per_text.csv")
INSTRUCT_DESCRIPTION = (
    " Then fine-tuned on (instruction, story) pairs: the same real paragraphs #0 to #{real_last}, {real} times, with "
    "instructions built from their own names and words (minillm.training.instructions.derived_pairs, seeds "
    "{seeds}); synthetic stories of minillm.training.instructions.instruction_pairs(seed={seed}) (not listed here); "
    "and the same bundled stories, {repeats} times, with their instructions from data/texts/story_instructions.jsonl.")


@dataclass
class InstructMember:
    """One fine-tuned model of the instruct family: a row of instruct.csv."""

    name: str
    base: str
    steps: int
    learning_rate: float         # peak
    examples: int                # training examples (pairs)
    reply_tokens: int            # target tokens in the training windows
    val_loss_before: float       # validation loss per reply token, nats, of the base with the chat tokens added
    val_loss: float              # after fine-tuning (200 synthetic pairs)
    seconds: float


@dataclass
class InstructionEffect:
    """One model on one held-out set under one instruction: a row of instructions.csv, what
    ``minillm instructions`` measures. ``ratio``: the paired perplexity ratio to "none" (1 for none)."""

    texts: str                   # "real": the held-out TinyStories paragraphs; "bundled": the 20 held-out stories
    model: str
    condition: str
    stories: int
    perplexity: float            # exp(total NLL / total tokens) over the stories, only the story's tokens scored
    ratio: float
    ratio_ci_low: float          # 95% paired bootstrap interval (stories resampled)
    ratio_ci_high: float
    better: int                  # stories whose NLL is lower than under none


def story_instructions() -> list[str]:
    """The instruction written for each bundled story (data/texts/story_instructions.jsonl), in order."""
    path = TEXTS_DIR / "story_instructions.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    stories = bundled_texts("stories")
    if [r["story"] for r in records] != list(range(len(stories))):
        raise InputError(f"{path} must hold one instruction per bundled story, in order (0..{len(stories) - 1}).")
    for r in records:
        if not stories[r["story"]].startswith(r["begins"]):
            raise InputError(f"{path}: story {r['story']} no longer begins {r['begins']!r}; update the file.")
    return [r["instruction"] for r in records]


def instruct_examples(n: int = INSTRUCT_EXAMPLES, repeats: int = INSTRUCT_REPEATS,
                      real_repeats: int = INSTRUCT_REAL_REPEATS) -> tuple[list[Example], list[Example]]:
    """(training, validation) examples. Training, shuffled with seed INSTRUCT_SEED: the real training
    paragraphs ``real_repeats`` times with derived instructions (pass r drawn with seed INSTRUCT_SEED + r),
    ``n`` synthetic pairs of seed INSTRUCT_SEED, and ``repeats`` copies of each bundled training story with
    its written instruction. Validation: the next INSTRUCT_VALIDATION synthetic pairs, seen by no one."""
    synthetic = [(instruction, story) for _, instruction, story in instruction_pairs(n + INSTRUCT_VALIDATION,
                                                                                     INSTRUCT_SEED)]
    trained = real_split()[0]
    real = [(instruction, story) for r in range(real_repeats)
            for _, instruction, story in derived_pairs(trained, INSTRUCT_SEED + r)]
    bundled = list(zip(story_instructions()[:-HELD_OUT], bundled_texts("stories")[:-HELD_OUT]))
    pairs = real + synthetic[:n] + bundled * repeats
    random.Random(INSTRUCT_SEED).shuffle(pairs)
    return examples_from_pairs(pairs), examples_from_pairs(synthetic[n:])


def instruction_source(models: list[str], texts: str) -> TextSource:
    """A held-out set as ``minillm instructions --offline`` picks it: for ``texts`` "real" the paragraphs
    of data/tinystories/validation_head.txt (``--texts`` that file), for "bundled" the bundled stories
    (the default), each without those a model in ``models`` trained on (by their training records)."""
    if texts not in ("real", "bundled"):
        raise InputError(f"texts must be 'real' or 'bundled'; got {texts!r}.")
    source = read_text_file(TINYSTORIES_HEAD) if texts == "real" else bundled_source("stories")
    return without_training_texts(models, source)[0]


def instruction_effects(models: list[str], texts: tuple[str, ...] = ("real", "bundled"), seed: int = 0,
                        progress: bool = False) -> tuple[list[InstructionEffect], list[dict]]:
    """Every model on the held-out sets ``texts`` (:func:`instruction_source`) under the five instructions
    of :func:`minillm.experiments.instructions.run_instructions` (instruct models, by name, through
    their chat template). Returns (one row per set, model and condition; one dict per set and story:
    "texts", "text_id", "tokens" and, per "<model>/<condition>", its NLL in nats). Raises RuntimeError
    when the models scored different tokens of a story (they share a tokenizer, so they must not)."""
    rows, per_text = [], []
    for name in texts:
        source = instruction_source(models, name)
        results = run_instructions(models, source, seed=seed, progress=progress)
        for s in results.summaries:
            d = next((d for d in results.differences if d.group == display_name(s.model) and d.b == s.condition),
                     None)
            paired = (d.ratio, d.ratio_ci_low, d.ratio_ci_high, d.b_better) if d else (1.0, 1.0, 1.0, 0)
            rows.append(InstructionEffect(name, display_name(s.model), s.condition, s.texts, s.perplexity, *paired))
        stories = {i: {"texts": name, "text_id": i, "tokens": None} for i in source.ids}
        for r in results.rows:
            story = stories[r.text_id]
            if story["tokens"] not in (None, r.tokens):
                raise RuntimeError(f"{r.text_id}: {display_name(r.model)} scored {r.tokens} tokens, another model "
                                   f"{story['tokens']}; the models must share a tokenizer.")
            story["tokens"] = r.tokens
            story[f"{display_name(r.model)}/{r.condition}"] = round(r.nll_total, 4)
        per_text += list(stories.values())
    return rows, per_text


def instructions_table(rows: list[InstructionEffect]) -> list[str]:
    """Markdown lines: per held-out set and model, the perplexity under none and each other
    instruction's paired ratio to none with its 95% interval (the table of data/models/README.md)."""
    conditions = list(dict.fromkeys(r.condition for r in rows if r.condition != "none"))
    lines = ["| held-out texts | model | none (perplexity) | " + " | ".join(conditions) + " |",
             "|---|---|---|" + "---|" * len(conditions)]
    for texts, model in dict.fromkeys((r.texts, r.model) for r in rows):
        mine = {r.condition: r for r in rows if r.texts == texts and r.model == model}
        cells = [f"{mine[c].ratio:.3f} ({mine[c].ratio_ci_low:.3f}-{mine[c].ratio_ci_high:.3f})" for c in conditions]
        lines.append(f"| {texts} ({mine['none'].stories:,}) | {model} | {mine['none'].perplexity:.2f} | "
                     + " | ".join(cells) + " |")
    return lines


def finetune_family(out_dir: str | Path, steps: int | None = None, progress: bool = True,
                    bases: str | Path = FAMILY_DIR) -> tuple[list[InstructMember], list[InstructionEffect]]:
    """Fine-tune tiny-s, tiny-m and tiny-l (from ``bases``) into ``out_dir/<name>-instruct``, each for its
    INSTRUCT_SIZES steps (``steps``: that many for every size instead) at its learning rate; measure
    them and their bases (:func:`instruction_effects`); write instruct.csv, instructions.csv and
    instructions_per_text.csv (each held-out story's NLL per model and instruction); return the rows of
    the first two. The models and the CSVs are built in a temporary folder inside ``out_dir`` and
    moved into place together when all are done: a run that fails leaves ``out_dir`` as it was. Its
    other entries (the base models, when they share it) stay."""
    bases = Path(bases)
    examples, val_examples = instruct_examples()
    held_out = set(held_out_stories()) | set(held_out_real_stories())
    if any(e.reply in held_out or any(m["content"] in held_out for m in e.prompt) for e in examples + val_examples):
        raise AssertionError("a held-out story is in the fine-tuning data")
    rows = []
    with build_entries_then_move(out_dir, INSTRUCT_ENTRIES) as out:   # a run that fails keeps the old models
        for name in SHAPES:
            settings = dict(INSTRUCT_SIZES[name], **({"steps": steps} if steps else {}))
            rows.append(_finetune_member(name, bases, out / f"{name}-instruct", examples, val_examples, settings,
                                         progress))
        write_csv(out / "instruct.csv", rows)
        effects, per_text = instruction_effects([str(bases / n) for n in SHAPES] +
                                                [str(out / f"{n}-instruct") for n in SHAPES], progress=progress)
        write_csv(out / "instructions.csv", effects)
        write_dicts(out / "instructions_per_text.csv", per_text)
    return rows, effects


def _finetune_member(name: str, bases: Path, target: Path, examples: list[Example], val_examples: list[Example],
                     settings: dict, progress: bool) -> InstructMember:
    """Fine-tune ``bases/name`` into ``target`` with INSTRUCT_RECIPE and ``settings`` (its steps and
    learning rate); its row of instruct.csv."""
    from minillm.reports import plots_training

    config = TrainConfig(**INSTRUCT_RECIPE, **settings)
    if progress:
        print(f"fine-tuning {name} for {config.steps} steps at {config.learning_rate:g} on {len(examples)} examples",
              flush=True)
    start = time.perf_counter()
    result = finetune(bases / name, examples, config, target, progress=progress, val_examples=val_examples)
    seconds = time.perf_counter() - start
    (target / STATE_TENSORS).unlink()       # the optimizer state is not shipped
    write_training_record(target, extra=INSTRUCT_DESCRIPTION.format(
        real_last=len(real_split()[0]) - 1, real=INSTRUCT_REAL_REPEATS, repeats=INSTRUCT_REPEATS, seed=INSTRUCT_SEED,
        seeds=", ".join(str(INSTRUCT_SEED + r) for r in range(INSTRUCT_REAL_REPEATS))))
    plots_training.plot_loss_curves(result.history, target / "loss_curves.png", title=f"Fine-tuning {name}-instruct",
                                    start_label=f"{name}, before")
    state = json.loads((target / "trainer_state.json").read_text(encoding="utf-8"))
    return InstructMember(f"{name}-instruct", name, config.steps, config.learning_rate, state["data"]["train_examples"],
                          state["data"]["train_targets"], result.history[0].val_loss, result.final_val_loss, seconds)
