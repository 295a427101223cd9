"""What the context, instruction and category experiments share: one text scored under several
conditions, summaries with bootstrap intervals, and paired differences between conditions.

A *condition* is what changes while the scored text stays the same: how many sentences come
before a continuation, which instruction comes before a story, or (for categories) which kind
of text it is. Every summary pools NLL over texts (``exp(total NLL / total tokens)``, never a
mean of perplexities); every comparison of two conditions on the same texts is paired
(:func:`minillm.experiments.scaling.paired_difference`).
"""

from __future__ import annotations

import math

import numpy as np

from minillm.checkpoint.hub import display_name
from minillm.checkpoint.tokenizer import Tokenizer
from minillm.errors import InputError
from minillm.experiments.results import ConditionScore, ConditionSummary, PairedDifference
from minillm.experiments.scaling import bootstrap_interval, paired_difference
from minillm.inference.scoring import TextScore


def document_start(tok: Tokenizer) -> str | None:
    """What marks the start of a document for this tokenizer, so that a text's first token is scored.

    A tokenizer that adds a BOS token (Llama, stories260K) needs nothing: returns None (score
    the text with no context, BOS predicts its first token). One without (Qwen, GPT-2, the
    tiny family) gets its end-of-text token, which separates documents in training: returns
    ``tok.eos_token``. Raises ValueError when the tokenizer has neither.
    """
    probe = tok.encode("a")
    if tok.bos_token_id is not None and probe[:1] == [tok.bos_token_id]:
        return None
    if tok.eos_token:
        return tok.eos_token
    raise InputError(f"the tokenizer in {tok.folder} adds no BOS token and has no eos_token: nothing can mark "
                     "the start of a document, so a text's first token cannot be scored.")


def with_start(tok: Tokenizer, prefix: str) -> str | None:
    """``prefix`` after the document-start marker (None for an empty prefix and a BOS tokenizer)."""
    start = document_start(tok) or ""
    return (start + prefix) or None


def condition_rows(model: str, condition: str, ids: list[str], scores: list[TextScore], prompts: list[str],
                   seen: list[str]) -> list[ConditionScore]:
    """One row per scored text."""
    return [ConditionScore(model, condition, i, s.n_tokens, s.n_bytes, s.total_nll, s.mean_nll, s.perplexity,
                           s.bits_per_byte, p, seen_flag)
            for i, s, p, seen_flag in zip(ids, scores, prompts, seen)]


def summarize_conditions(rows: list[ConditionScore], seed: int = 0) -> list[ConditionSummary]:
    """Per (model, condition), in first-seen order: pooled perplexity and bits per byte with intervals."""
    out = []
    for model, condition in dict.fromkeys((r.model, r.condition) for r in rows):
        mine = [r for r in rows if r.model == model and r.condition == condition]
        nll = np.array([r.nll_total for r in mine])
        tokens = np.array([r.tokens for r in mine], dtype=float)
        nbytes = np.array([r.bytes for r in mine], dtype=float) * math.log(2)
        low, high = bootstrap_interval(nll, tokens, seed=seed)
        blow, bhigh = bootstrap_interval(nll, nbytes, seed=seed)
        out.append(ConditionSummary(model, condition, len(mine), int(tokens.sum()), math.exp(nll.sum() / tokens.sum()),
                                    math.exp(low), math.exp(high), float(nll.sum() / nbytes.sum()), blow, bhigh))
    return out


def differences_from(rows: list[ConditionScore], baseline: str, per: str = "token",
                     seed: int = 0) -> list[PairedDifference]:
    """Per model, every other condition against ``baseline`` on the texts both scored (paired by text id).

    ``per`` is "token" (perplexity ratio) or "byte" (ratio of 2 ** bits per byte)."""
    out = []
    for model in dict.fromkeys(r.model for r in rows):
        base = {r.text_id: r for r in rows if r.model == model and r.condition == baseline}
        for condition in dict.fromkeys(r.condition for r in rows if r.model == model):
            if condition == baseline:
                continue
            other = [r for r in rows if r.model == model and r.condition == condition and r.text_id in base]
            if other:
                out.append(_paired(display_name(model), [base[r.text_id] for r in other], other, baseline, condition, per,
                                   seed))
    return out


def differences_between_models(rows: list[ConditionScore], per: str = "byte",
                               seed: int = 0) -> list[PairedDifference]:
    """Per condition, each model against the first model (paired by text id)."""
    out = []
    models = list(dict.fromkeys(r.model for r in rows))
    for condition in dict.fromkeys(r.condition for r in rows):
        base = {r.text_id: r for r in rows if r.model == models[0] and r.condition == condition}
        for model in models[1:]:
            other = [r for r in rows if r.model == model and r.condition == condition and r.text_id in base]
            if other:
                out.append(_paired(condition, [base[r.text_id] for r in other], other, display_name(models[0]),
                                   display_name(model), per, seed))
    return out


def _paired(tag: str, a: list[ConditionScore], b: list[ConditionScore], name_a: str, name_b: str, per: str,
            seed: int) -> PairedDifference:
    if per not in ("token", "byte"):
        raise InputError(f"per must be 'token' or 'byte'; got {per!r}.")
    count = (lambda rs: [r.tokens for r in rs]) if per == "token" else (lambda rs: [r.bytes * math.log(2) for r in rs])
    return paired_difference([r.nll_total for r in a], count(a), [r.nll_total for r in b], count(b),
                             name_a, name_b, tag, seed=seed)


def conditions_text(summaries: list[ConditionSummary], differences: list[PairedDifference], condition_header: str,
                    baseline: str, texts_header: str = "texts", warnings: list[str] = ()) -> str:
    """A text table of the summaries (what the ``minillm`` command prints): per model and condition
    the texts, the perplexity with its interval, and the paired ratio to ``baseline``; then the warnings."""
    names = [display_name(s.model) for s in summaries]
    width = max(len("model"), *map(len, names)) if names else len("model")
    cond = max(len(condition_header), *(len(s.condition) for s in summaries)) if summaries else len(condition_header)
    count = len(texts_header)
    lines = [f"{'model':<{width}} {condition_header:>{cond}} {texts_header:>{count}} {'perplexity':>11} {'95% CI':>17}"
             f"   paired ratio to {baseline} (95% CI)"]
    for name, s in zip(names, summaries):
        d = next((d for d in differences if d.group == name and d.a == baseline and d.b == s.condition), None)
        ratio = f"{d.ratio:.3f} ({d.ratio_ci_low:.3f}-{d.ratio_ci_high:.3f}), better on {d.b_better}/{d.texts}" \
            if d else ""
        lines.append(f"{name:<{width}} {s.condition:>{cond}} {s.texts:>{count}} {s.perplexity:>11.3f} "
                     f"{s.ppl_ci_low:>8.3f}-{s.ppl_ci_high:<8.3f}   {ratio}".rstrip())
    return "\n".join([*lines, *warnings])


def per_text_differences(rows: list[ConditionScore], baseline: str) -> list[dict]:
    """Per model, text and condition: the change in NLL per token from ``baseline`` (nats; negative:
    the condition made the text more predictable) and the perplexity ratio."""
    base = {(r.model, r.text_id): r for r in rows if r.condition == baseline}
    return [dict(model=r.model, text_id=r.text_id, condition=r.condition, baseline=baseline,
                 nll_mean_diff=r.nll_mean - base[(r.model, r.text_id)].nll_mean,
                 perplexity_ratio=r.perplexity / base[(r.model, r.text_id)].perplexity)
            for r in rows if r.condition != baseline and (r.model, r.text_id) in base]
