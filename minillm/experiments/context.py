"""Does context help? The same continuation scored after 0, 1, 2 or 3 sentences of its story.

Each story is cut after its first ``max_k`` sentences (default 3); the rest of it is the
*continuation*, and only the continuation is scored, in every condition, so the numbers
compare token for token. Condition ``k`` puts the k sentences that come right before the
continuation in front of it (k = 3: the story's first three sentences; k = 1: only the
third). Condition k = 0 puts nothing but the start-of-document marker there (BOS, or the
end-of-text token that separates documents in training, see
:func:`~minillm.experiments.conditions.document_start`), which the other conditions also
start with. Stories with fewer than ``max_k + 1`` sentences are skipped.

Per model and k: the pooled perplexity of the continuations with a bootstrap interval over
stories, and each k against k = 0, paired story by story (the per-model intervals overlap
even when nearly every story improves; the paired one says whether the change is chance).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from minillm.data import TextSource
from minillm.checkpoint.loading import load_model_and_tokenizer
from minillm.errors import InputError
from minillm.training.provenance import overlap_warning, seen_in_training
from minillm.experiments.results import ConditionScore, ConditionSummary, PairedDifference
from minillm.inference.scoring import TextScore, encode_for_scoring, score_many
from minillm.checkpoint.tokenizer import Tokenizer
from minillm.experiments.conditions import (condition_rows, conditions_text, differences_from, summarize_conditions,
                                            with_start)

# A sentence ends at ., ! or ? (and a closing quote after it) followed by whitespace and a capital
# letter, digit or opening quote: '"Two!" said Sam.' is one sentence.
_SENTENCE_END = re.compile(r"""[.!?]["'”’]?(?=\s+["'“‘]?[A-Z0-9])""")


def sentence_ends(text: str) -> list[int]:
    """Character offsets just after each sentence of ``text`` but the last (where the next one's whitespace starts)."""
    return [m.end() for m in _SENTENCE_END.finditer(text)]


def split_for_context(story: str, max_k: int = 3) -> tuple[list[str], str] | None:
    """(the first ``max_k`` sentences, the continuation after them), or None when the story has fewer
    than ``max_k + 1`` sentences. Sentences keep no leading whitespace; the continuation keeps
    the whitespace that joins it to the sentence before (" Then ...")."""
    story = story.strip()
    ends = sentence_ends(story)
    if len(ends) < max_k or not story[ends[max_k - 1]:].strip():
        return None
    starts = [0] + ends[: max_k - 1]
    sentences = [story[a:b].strip() for a, b in zip(starts, ends[:max_k])]
    return sentences, story[ends[max_k - 1]:]


def context_for(sentences: list[str], k: int) -> str:
    """The last ``k`` of ``sentences``, joined by spaces ("" for k = 0)."""
    return " ".join(sentences[len(sentences) - k:]) if k else ""


def alone(tok: Tokenizer, continuation: str, context: str) -> str:
    """The continuation as written at the start of a document (after BOS, no context) so that it
    splits into the same tokens as it does after ``context``.

    A SentencePiece-style tokenizer (Llama, stories260K) puts "▁" before a text's first word; after
    a context, " Then" already reads "▁Then", but on its own it becomes "▁" + "▁Then". Without its
    leading whitespace, "Then" alone reads "▁Then" again. So: the continuation itself, or without
    its leading whitespace, whichever gives the in-context tokens (the continuation when neither
    does). Its bytes then count one space fewer; its tokens, the ones perplexity averages over, are
    the same.
    """
    ids, start = encode_for_scoring(tok, continuation, context)
    for candidate in (continuation, continuation.lstrip()):
        alone_ids, alone_start = encode_for_scoring(tok, candidate)
        if alone_ids[alone_start:] == ids[start:]:
            return candidate
    return continuation


@dataclass
class ContextResults:
    """What :func:`run_context` measured; :func:`minillm.reports.files.write_context` turns it into files."""

    source: TextSource                 # the stories used (those with enough sentences)
    rows: list[ConditionScore]         # condition "k=0".."k=3"
    summaries: list[ConditionSummary]
    differences: list[PairedDifference]  # per model, each k against k=0, per token
    scores: dict[tuple[str, int], list[TextScore]]   # (model, k) -> per story
    max_k: int
    warnings: list[str]
    skipped: int                       # stories with too few sentences

    def __str__(self) -> str:
        """Per model and k, the perplexity of the continuations and its paired ratio to k=0."""
        return conditions_text(self.summaries, self.differences, "k", "k=0", "stories", self.warnings)


def run_context(models: list[str], source: TextSource, max_k: int = 3, dtype: torch.dtype | str = torch.float32,
                seed: int = 0, progress: bool = True) -> ContextResults:
    """Score every story's continuation after k = 0..max_k sentences with every model."""
    split = [split_for_context(t, max_k) for t in source.texts]
    keep = [i for i, s in enumerate(split) if s is not None]
    if not keep:
        raise InputError(f"no story in {source.label} has {max_k + 1} sentences or more: nothing to continue.")
    used = source.select(keep, f"{len(keep)} of the texts ({source.label}) with at least {max_k + 1} sentences"
                         if len(keep) < len(source) else source.label)
    parts = [split[i] for i in keep]
    rows, scores, warnings = [], {}, []
    for name in models:
        if progress:
            print(f"scoring {len(keep)} continuations x {max_k + 1} contexts with {name}", flush=True)
        model, tok = load_model_and_tokenizer(name, dtype=dtype, packed=True)
        seen = seen_in_training(name, used.texts)
        warnings += [w for w in [overlap_warning(name, used.texts)] if w]
        for k in range(max_k + 1):
            contexts = [with_start(tok, context_for(sentences, k)) for sentences, _ in parts]
            texts = [cont if c is not None else alone(tok, cont, sentences[-1])
                     for c, (sentences, cont) in zip(contexts, parts)]
            scored = score_many(model, tok, texts, context=contexts, top_k=0)
            scores[(name, k)] = scored
            rows += condition_rows(name, f"k={k}", used.ids, scored, [context_for(s, k) for s, _ in parts], seen)
        del model
    return ContextResults(used, rows, summarize_conditions(rows, seed), differences_from(rows, "k=0", seed=seed),
                          scores, max_k, warnings, len(source) - len(keep))
