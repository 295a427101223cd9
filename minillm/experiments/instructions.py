"""Do instructions help? A story scored after instruction prefixes of differing specificity.

Per story, five conditions, and in every one only the story's own tokens are scored:

* ``none``: nothing before the story but the start-of-document marker (an instruct model:
  an empty user turn);
* ``vague``: an instruction true of the story that says almost nothing ("Write a story about an animal.");
* ``specific``: one with the story's key words ("... about Gina the giraffe and her long neck ...");
* ``paraphrased``: the same content with none of those words ("... a tall spotted beast ...");
* ``mismatched``: another story's specific instruction.

Base models read the instruction as plain text, a blank line, then the story. Instruct models
(a chat template in their tokenizer) read it as the user's message, the story as the
assistant's reply (``score(..., context=instruction, chat=True)``). With a SentencePiece-style
tokenizer (Llama, stories260K) the story's first word is split as "▁Once" at the start of a
document but as "Once" after the blank line, so for those models the first scored token of
``none`` differs from the other conditions'; every other token is the same.

The bundled held-out stories have prompts written for this project
(``data/texts/instruction_prompts.json``); any other story (the held-out real TinyStories paragraphs:
``minillm instructions --offline --texts data/tinystories/validation_head.txt``) gets prompts derived
from its own names and words (:func:`derive_prompts`), its paraphrase the same names and words in
another order and another template.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import torch

from minillm.checkpoint.hub import display_name
from minillm.checkpoint.loading import load_model_and_tokenizer
from minillm.checkpoint.tokenizer import Tokenizer
from minillm.data import TEXTS_DIR, TextSource
from minillm.errors import InputError
from minillm.experiments.conditions import (
    condition_rows,
    conditions_text,
    differences_from,
    summarize_conditions,
    with_start,
)
from minillm.experiments.results import (
    ConditionScore,
    ConditionSummary,
    PairedDifference,
)
from minillm.inference.scoring import score_many
from minillm.training.instructions import derived_instruction, story_names, story_words
from minillm.training.provenance import overlap_warning, seen_in_training

CONDITIONS = ("none", "vague", "specific", "paraphrased", "mismatched")
PROMPTS_FILE = TEXTS_DIR / "instruction_prompts.json"
VAGUE = "Write a story."
@dataclass
class InstructionResults:
    """What :func:`run_instructions` measured; :func:`minillm.reports.files.write_instructions` turns it into files."""

    source: TextSource
    rows: list[ConditionScore]
    summaries: list[ConditionSummary]
    differences: list[PairedDifference]   # per model, each condition against "none", per token
    chat_models: list[str]                # models scored through their chat template
    warnings: list[str]

    def __str__(self) -> str:
        """Per model and instruction, the stories' perplexity and its paired ratio to no instruction."""
        return conditions_text(self.summaries, self.differences, "instruction", "none", warnings=self.warnings)


def bundled_prompts() -> dict[str, dict]:
    """The prompts written for the held-out bundled stories, by story id ("stories.txt#48")."""
    return json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))["prompts"]


def derive_prompts(story: str) -> dict:
    """Prompts from the story's own names and words (:func:`minillm.training.instructions.derived_instruction`):
    vague, specific ("Write a story about Lily. Use the words kite, red and wind.") and paraphrased (the
    same names and words in reverse order, in a template no instruct model of the kit was tuned on)."""
    return {"vague": VAGUE, "specific": derived_instruction(story, "specific"),
            "paraphrased": derived_instruction(story, "paraphrased"), "keywords": story_names(story) + story_words(story)}


def prompts_for(source: TextSource) -> list[dict]:
    """Per story: {"none", "vague", "specific", "paraphrased" (or absent), "mismatched"} -> prompt text.

    Mismatched is the specific prompt of the story half-way round the list (story j takes story
    j + n // 2's, modulo n): far enough that consecutive paragraphs of one story never swap theirs."""
    written = bundled_prompts()
    base = [dict(written.get(i) or derive_prompts(t)) for t, i in zip(source.texts, source.ids)]
    out = []
    for j, p in enumerate(base):
        prompts = {"none": "", "vague": p["vague"], "specific": p["specific"]}
        if "paraphrased" in p:
            prompts["paraphrased"] = p["paraphrased"]
        if len(base) > 1:
            prompts["mismatched"] = base[(j + len(base) // 2) % len(base)]["specific"]
        out.append(prompts)
    return out


def uses_chat(model: str, tok: Tokenizer, chat_models: list[str] | None) -> bool:
    """Whether ``model`` is scored through its chat template: named in ``chat_models``, or (when
    that is None) its name says instruct/chat and its tokenizer has a template. (Qwen2.5's base
    models ship a template too, so a template alone does not make a model an instruct model.)"""
    if chat_models is not None:
        return model in chat_models
    return tok.chat_template is not None and bool(re.search(r"instruct|chat", display_name(model), re.IGNORECASE))


def run_instructions(models: list[str], source: TextSource, chat_models: list[str] | None = None,
                     dtype: torch.dtype | str = torch.float32, seed: int = 0,
                     progress: bool = True, prompts: list[dict] | None = None) -> InstructionResults:
    """Score every story after each instruction prefix with every model; ``prompts``: per story, the
    prompts (default :func:`prompts_for` the source; give them to score some stories of a larger set
    with that set's prompts, whose mismatched ones depend on the whole set)."""
    prompts = prompts if prompts is not None else prompts_for(source)
    if len(prompts) != len(source):
        raise InputError(f"prompts holds {len(prompts)} entries for {len(source)} stories; give one per story.")
    rows, chats, warnings = [], [], []
    for name in models:
        model, tok = load_model_and_tokenizer(name, dtype=dtype, packed=True)
        chat = uses_chat(name, tok, chat_models)
        chats += [name] if chat else []
        if progress:
            print(f"scoring {len(source)} stories x {len(CONDITIONS)} prefixes with {name}"
                  f"{' through its chat template' if chat else ''}", flush=True)
        seen = seen_in_training(name, source.texts)
        warnings += [w for w in [overlap_warning(name, source.texts)] if w]
        for condition in CONDITIONS:
            picked = [i for i, p in enumerate(prompts) if condition in p]
            if not picked:
                continue
            texts = [source.texts[i] for i in picked]
            said = [prompts[i][condition] for i in picked]
            if chat:       # the instruction is the user's turn, the story the assistant's reply
                scored = score_many(model, tok, texts, context=said, chat=True, top_k=0)
            else:          # plain text: the instruction, a blank line, the story
                scored = score_many(model, tok, texts, top_k=0,
                                    context=[with_start(tok, p + "\n\n" if p else "") for p in said])
            rows += condition_rows(name, condition, [source.ids[i] for i in picked], scored, said,
                                   [seen[i] for i in picked])
        del model
    return InstructionResults(source, rows, summarize_conditions(rows, seed), differences_from(rows, "none", seed=seed),
                              chats, warnings)
