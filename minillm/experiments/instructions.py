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
(``data/texts/instruction_prompts.json``); any other story gets prompts derived from its own
words (:func:`derive_prompts`), without the paraphrased condition, which needs a writer.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

import torch

from minillm.data import TEXTS_DIR, TextSource
from minillm.checkpoint.hub import display_name
from minillm.checkpoint.loading import load_model_and_tokenizer
from minillm.training.provenance import overlap_warning, seen_in_training
from minillm.experiments.results import ConditionScore, ConditionSummary, PairedDifference
from minillm.inference.scoring import score_many
from minillm.checkpoint.tokenizer import Tokenizer
from minillm.experiments.conditions import (condition_rows, conditions_text, differences_from, summarize_conditions,
                                            with_start)

CONDITIONS = ("none", "vague", "specific", "paraphrased", "mismatched")
PROMPTS_FILE = TEXTS_DIR / "instruction_prompts.json"
VAGUE = "Write a story."
# Words too common to say what a story is about.
_STOP = set("""a an the and or but if then so to of in on at by for with from up down out over under into
about as is was were be been are am do did does have has had he she it they we you i me him her them us my
his its their our your this that these those there here when where what who why how not no yes all any some
one two very too can could would should will said says say went go goes got get came come like liked just
little big day time once upon again back away now then than also only more most much many off around
after before because while felt feel saw see wanted want looked look made make thought know knew let
asked told took take gave give found find tried try ran run play happy sad good very each every
""".split())


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


def keywords(story: str, n: int = 3) -> list[str]:
    """The story's ``n`` most frequent content words, names first when tied, in their own spelling.

    A crude guess at what a story is about, without a part-of-speech tagger: stop words, words
    of two letters and past-tense verbs ("-ed", five letters or more) are skipped; a word counts
    as a name when it is never written in lower case."""
    tokens = re.findall(r"[A-Za-z]+", story)
    lower = {w for w in tokens if w.islower()}
    words = [w if w.lower() not in lower else w.lower() for w in tokens]
    content = [w for w in words if w.lower() not in _STOP and len(w) > 2
               and not (w.endswith("ed") and len(w) > 4)]
    counts = Counter(content)
    ranked = sorted(counts, key=lambda w: (-counts[w], not w[0].isupper(), content.index(w)))
    return ranked[:n]


def derive_prompts(story: str) -> dict:
    """Prompts from the story's own words: vague, and specific with its key words (no paraphrase)."""
    words = keywords(story)
    listed = ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else "".join(words)
    return {"vague": VAGUE, "specific": f"Write a story about {listed}.", "keywords": words}


def prompts_for(source: TextSource) -> list[dict]:
    """Per story: {"none", "vague", "specific", "paraphrased" (or absent), "mismatched"} -> prompt text.

    Mismatched is the next story's specific prompt (the last story takes the first one's)."""
    written = bundled_prompts()
    base = [dict(written.get(i) or derive_prompts(t)) for t, i in zip(source.texts, source.ids)]
    out = []
    for j, p in enumerate(base):
        prompts = {"none": "", "vague": p["vague"], "specific": p["specific"]}
        if "paraphrased" in p:
            prompts["paraphrased"] = p["paraphrased"]
        if len(base) > 1:
            prompts["mismatched"] = base[(j + 1) % len(base)]["specific"]
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
                     progress: bool = True) -> InstructionResults:
    """Score every story after each instruction prefix with every model."""
    prompts = prompts_for(source)
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
