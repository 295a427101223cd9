"""Scoring text with a language model: log-probabilities, surprise, perplexity, bits per byte.

The logits at position i-1 are the model's prediction for token i, so token i is scored
with ``log p(token_i | tokens before it)`` (natural log, nats). Its *surprise* is
``-log p``; a text's *perplexity* is ``exp(mean surprise)`` over its scored tokens (the
exponential of the mean NLL, never the mean of per-token or per-text perplexities).

The first token of a sequence is never scored: nothing comes before it to predict it.
Tokenizers that put a BOS token in front (Llama, stories260K) make the first *text* token
scoreable, predicted from BOS alone; Qwen's tokenizer adds no BOS, so a Qwen text's first
token goes unscored. Perplexities of the two kinds of model are therefore over slightly
different token sets, and over different tokenizations anyway: compare models with
different tokenizers by *bits per byte* (total NLL in bits over the UTF-8 bytes the scored
tokens cover), not by perplexity.

Long texts are scored in sliding windows (each token once, with at least
``window - stride`` tokens of context once past the start), many texts at once in padded
batches sorted by length, and the LM head is applied a slice of the vocabulary at a time, so
that float32 logits over the whole vocabulary are never held for a whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from minillm.checkpoint.tokenizer import Tokenizer
from minillm.errors import InputError
from minillm.inference.display import probability_text, surprise_html, top_k_html
from minillm.inference.generate import encode_prompt
from minillm.models.qwen2 import Transformer
from minillm.progress import progress_bar

LN2 = math.log(2)


@dataclass
class TokenScore:
    """One scored token: the model's view of ``token`` after the text before it."""

    position: int                 # index of the token in the full token sequence
    token_id: int
    token: str                    # the token as text
    context: str                  # the text of up to 12 tokens before it
    logprob: float                # log p(token | everything before), nats
    top: list[tuple[str, int, float]] = field(default_factory=list)  # model's top-k: (token, id, prob)

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    @property
    def surprise(self) -> float:
        """-log p in nats (divide by ln 2 for bits)."""
        return -self.logprob


@dataclass
class TextScore:
    """The score of one text (or of a continuation given a context)."""

    text: str                     # the scored text (the continuation, when there is a context)
    context: str | None           # the prefix it was conditioned on, not scored
    token_ids: list[int]          # every token fed to the model: context, then text
    rows: list[TokenScore]        # one per scored token, in order
    total_nll: float              # sum of surprises, nats
    n_bytes: int                  # UTF-8 bytes covered by the scored tokens
    protocol: str                 # how the tokens were scored (windows, context)

    @property
    def n_tokens(self) -> int:
        """How many tokens were scored."""
        return len(self.rows)

    @property
    def mean_nll(self) -> float:
        """Mean surprise per scored token, nats."""
        return self.total_nll / self.n_tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    @property
    def bits_per_byte(self) -> float:
        return self.total_nll / LN2 / self.n_bytes

    def _repr_html_(self) -> str:
        """Jupyter's view: the text with each token shaded by its surprise, and a table of them."""
        lead = self.rows[0].context if self.rows else ""     # the unscored tokens just before the first scored one
        tokens = [(r.token, r.surprise, r.prob, r.top[0][0] if r.top else "") for r in self.rows]
        summary = (f"{self.n_tokens} scored tokens, perplexity {self.perplexity:.2f}, "
                   f"{self.bits_per_byte:.3f} bits per byte (darker red = more surprising)")
        return surprise_html(lead, tokens, summary)

    def __str__(self) -> str:
        """The text view (``minillm surprise`` prints it): a row per scored token with its surprise
        in nats and bits, its probability and the model's top tokens, then the totals."""
        k = len(self.rows[0].top) if self.rows else 0
        lines = [f"{self.n_tokens} tokens scored ({self.protocol}); surprise = -log p(token | the tokens before it)",
                 f"{'pos':>4}  {'token':<16} {'id':>7} {'nats':>7} {'bits':>7} {'prob':>8}  model's top {k}"]
        for row in self.rows:
            top = ", ".join(f"{text!r} {probability_text(prob)}" for text, _, prob in row.top)
            lines.append(f"{row.position:>4}  {row.token!r:<16} {row.token_id:>7} {row.surprise:>7.3f} "
                         f"{row.surprise / LN2:>7.3f} {probability_text(row.prob):>8}  {top}")
        lines.append(f"total {self.total_nll:.3f} nats over {self.n_tokens} tokens: perplexity {self.perplexity:.3f}, "
                     f"{self.bits_per_byte:.4f} bits per byte ({self.n_bytes} bytes)")
        return "\n".join(lines)


@dataclass
class NextTokens:
    """The model's most likely next tokens after ``text``: ``rows`` of (token, id, logit, probability)."""

    text: str
    rows: list[tuple[str, int, float, float]]
    prompt_tokens: int | None = None      # how many tokens the model read (None: not recorded)

    def _repr_html_(self) -> str:
        return top_k_html(self.text, self.rows)

    def __str__(self) -> str:
        """The text view (``minillm logits`` prints it): rank, token, id, logit and probability."""
        read = f"{self.prompt_tokens} prompt tokens; " if self.prompt_tokens is not None else ""
        lines = [f"{read}the next token after {self.text[-40:]!r}:",
                 f"{'rank':>4}  {'token':<20} {'id':>7} {'logit':>9} {'prob':>9}"]
        lines += [f"{rank:>4}  {token!r:<20} {i:>7} {logit:>9.3f} {probability_text(prob):>9}"
                  for rank, (token, i, logit, prob) in enumerate(self.rows, start=1)]
        return "\n".join(lines)


@torch.inference_mode()
def next_tokens(model: Transformer, tok: Tokenizer, text: str, k: int = 10, chat: bool = False) -> NextTokens:
    """The ``k`` most likely tokens after ``text``, most likely first, with their logits and
    probabilities (softmax over the whole vocabulary, float32). ``chat=True`` puts the text in the
    chat template as a user message, the assistant's turn opened (:func:`encode_prompt`): the
    reply's first token. Shows as a table in Jupyter, and as text when printed."""
    if not isinstance(text, str) or not text:
        raise InputError(f"text must be a non-empty string; got {text!r}.")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}.")
    ids = encode_prompt(tok, text, chat)
    logits = model(torch.tensor([ids]))[0, -1].float()     # (vocab,): scores for the next token
    probs = torch.softmax(logits, dim=-1)
    top = torch.topk(logits, min(k, logits.numel()))
    return NextTokens(text, [(tok.token_text(i), i, v, float(probs[i]))
                             for v, i in zip(top.values.tolist(), top.indices.tolist())], len(ids))


@dataclass
class _Segment:
    """A run of token ids fed to the model in one row; positions >= score_from are scored."""

    owner: int                    # which text it belongs to
    offset: int                   # position of ids[0] in the text's full token sequence
    ids: list[int]
    score_from: int               # first position (within ids, >= 1) whose token is scored


def encode_for_scoring(tok: Tokenizer, text: str, context: str | None = None, chat: bool = False) -> tuple[list[int], int]:
    """Token ids to feed the model and the index of the first token to score.

    Without context: the text's ids (with BOS if the tokenizer adds one); scoring starts at 1.

    With context: the context and the text are encoded *together*, once, as the model would
    read them, and the tokens are split where the text's first character begins (found with the
    tokenizer's character offsets). So the continuation is scored as it is tokenized in context,
    which is not how it is tokenized alone: SentencePiece-style tokenizers (Llama, stories260K)
    would put a lone "▁" in front of " She found ..." encoded on its own, and byte-level BPE
    tokenizers can merge across the boundary. Include the space or newline that joins the two in
    ``text`` (``context + text`` is what is encoded).

    A token that *straddles* the boundary (it holds the end of the context and the start of the
    text, e.g. "Ġtime" for context "Once upon a ti" and text "me") is scored as part of the text:
    every character of the text is then covered by a scored token, and the bytes counted for
    bits per byte start at that token's first character. (If that token is the sequence's first,
    nothing predicts it and it is not scored.)

    ``chat=True`` (instruct models) puts the context in a user message of the chat template,
    with the assistant's turn opened, and scores the text as the assistant's answer (the
    rendered prompt + text encoded together, with no second BOS).
    """
    encoded = _encode_for_scoring(tok, text, context, chat)
    return encoded.ids, encoded.score_from


def first_token_after(offsets: list[tuple[int, int]], boundary: int) -> int:
    """The index of the first token that ends past character ``boundary`` (it starts there, or straddles it),
    at least 1 (nothing predicts the first token); ``len(offsets)`` if none does.

    ``offsets`` are the tokens' (start, end) characters in the text encoded. Where scoring with a
    context starts, and where fine-tuning's targets start: the two must agree token for token."""
    return max(next((i for i, (_, end) in enumerate(offsets) if end > boundary), len(offsets)), 1)


@dataclass
class _Encoded:
    """A text encoded for scoring: ``joint`` (prefix + text) as ``ids`` with their character
    ``offsets``, the first scored index, and where the text begins in ``joint``."""
    ids: list[int]
    offsets: list[tuple[int, int]]
    score_from: int
    joint: str
    boundary: int


def _encode_for_scoring(tok: Tokenizer, text: str, context: str | None, chat: bool) -> _Encoded:
    if not isinstance(text, str) or not text:
        raise InputError(f"text to score must be a non-empty string; got {text!r}.")
    if context is None:
        if chat:
            raise InputError("chat=True needs a context: the user message the text answers.")
        prefix, add_special = "", True
    elif chat:
        prefix = tok.apply_chat_template([{"role": "user", "content": context}], add_generation_prompt=True)
        add_special = False                    # the rendered template holds its special tokens
    else:
        if not context:
            raise InputError("the context is empty; pass context=None to score the text alone.")
        prefix, add_special = context, True
    joint = prefix + text
    ids, offsets = tok.encode_with_offsets(joint, add_special_tokens=add_special)
    score_from = 1 if context is None else first_token_after(offsets, len(prefix))
    return _Encoded(ids, offsets, score_from, joint, len(prefix))


def _scored_bytes(tok: Tokenizer, encoded: _Encoded) -> int:
    """UTF-8 bytes of ``joint`` that the tokens ``ids[score_from:]`` stand for (bits per byte divides by it).

    Byte-level BPE (GPT-2, Qwen2.5) may split one character over several tokens (an emoji, a CJK
    character: "🦜" is "ðŁ", "¦", "ľ" in GPT-2), and the first scored token may be one of them: its
    character offsets then start at the whole character, bytes of which the unscored tokens hold. So
    where the tokens spell the text byte for byte (tokens the tokenizer added around it, like a BOS,
    left out) the scored tokens' own bytes are counted; otherwise (SentencePiece writes a space the
    text does not have in front of its first word) the text from the first scored token's first
    character on, which never splits there: those tokenizers add a BOS, so scoring starts at a word.
    """
    ids, offsets, score_from, joint = encoded.ids, encoded.offsets, encoded.score_from, encoded.joint
    if score_from >= len(ids):
        return 0
    kept = [(i, tok.token_bytes(token)) for i, (token, (_, end)) in enumerate(zip(ids, offsets)) if end > 0]
    if b"".join(spelled for _, spelled in kept) == joint.encode("utf-8"):   # (leaving out BOS and the like)
        return sum(len(spelled) for i, spelled in kept if i >= score_from)
    first_char = min(offsets[score_from][0], encoded.boundary)
    return len(joint[first_char:].encode("utf-8"))


def _windows(owner: int, ids: list[int], score_from: int, window: int, stride: int) -> list[_Segment]:
    """Cut a long sequence into windows; each token is scored in exactly one of them."""
    if len(ids) <= window:
        return [_Segment(owner, 0, ids, score_from)]
    segments, scored_until, start = [], score_from, 0
    while scored_until < len(ids):
        end = min(start + window, len(ids))
        if end > scored_until:
            segments.append(_Segment(owner, start, ids[start:end], max(scored_until - start, 1)))
            scored_until = end
        start += stride
    return segments


def _batches(segments: list[_Segment], batch_tokens: int) -> list[list[_Segment]]:
    """Group segments, longest first, so that batch size x longest length <= batch_tokens."""
    order = sorted(segments, key=lambda s: len(s.ids), reverse=True)
    batches: list[list[_Segment]] = []
    for seg in order:
        if batches and len(batches[-1][0].ids) * (len(batches[-1]) + 1) <= batch_tokens:
            batches[-1].append(seg)
        else:
            batches.append([seg])
    return batches


@torch.inference_mode()
def _score_batch(model: Transformer, batch: list[_Segment], top_k: int, padding_side: str,
                 slice_mb: float) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """For each segment: (target logprobs (n,), top-k ids (n, k), top-k logprobs (n, k))."""
    device = model.embed_tokens.weight.device
    width = max(len(s.ids) for s in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    predictors = []                       # (row, column) of every position whose next token is scored
    targets = []
    for row, seg in enumerate(batch):
        pad = width - len(seg.ids) if padding_side == "left" else 0
        ids[row, pad : pad + len(seg.ids)] = torch.tensor(seg.ids)
        mask[row, pad : pad + len(seg.ids)] = 1
        cols = torch.arange(pad + seg.score_from - 1, pad + len(seg.ids) - 1)
        predictors.append(torch.stack([torch.full_like(cols, row), cols], dim=1))
        targets.append(torch.tensor(seg.ids[seg.score_from :]))
    padded = bool((mask == 0).any())
    hidden = model.hidden_states(ids.to(device), mask.to(device) if padded else None)   # (batch, width, hidden)
    where = torch.cat(predictors)                                                        # (n, 2)
    hidden = hidden[where[:, 0], where[:, 1]]                                            # (n, hidden)
    target = torch.cat(targets).to(device)                                               # (n,)
    logprobs, top_ids, top_lps = _target_logprobs(model.lm_head.weight, hidden, target, top_k, slice_mb)
    sizes = [len(t) for t in targets]
    return list(zip(logprobs.cpu().split(sizes), top_ids.cpu().split(sizes), top_lps.cpu().split(sizes)))


def _target_logprobs(head: torch.Tensor, hidden: torch.Tensor, target: torch.Tensor, top_k: int,
                     slice_mb: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(target) (n,), top-k ids (n, k) and top-k logprobs (n, k), in float32, from the LM
    head's weight (vocab, hidden) and the final hidden states (n, hidden), never holding all
    (n x vocab) logits.

    log p(t) = logit_t - log sum_v exp(logit_v). The vocabulary is visited a slice at a time:
    the head's rows for a few hundred tokens give (n x slice) logits small enough to stay in
    the processor's cache while we take what we need from them: the target's logit when it
    falls in the slice, the slice's top-k, and its log-sum-exp, added to the running one with
    logaddexp. (Whole-vocabulary logits, 48 MB for 80 rows of Qwen's 151,936, would be written
    to memory and read back by every step of the softmax.)
    """
    n, vocab = len(hidden), head.shape[0]
    width = min(vocab, max(100, int(slice_mb * 2**20 / (4 * n))))       # vocabulary entries per slice
    raw = torch.empty(n * width, dtype=head.dtype, device=hidden.device)  # one buffer, reused by every slice
    wide = raw if head.dtype == torch.float32 else torch.empty(n * width, device=hidden.device)
    picked = torch.empty(n, device=hidden.device)
    log_norm = torch.full((n,), float("-inf"), device=hidden.device)
    top_lps = torch.empty(n, 0, device=hidden.device)
    top_ids = torch.empty(n, 0, dtype=torch.long, device=hidden.device)
    for start in range(0, vocab, width):
        weight = head[start : start + width]                                        # (w, hidden)
        out = raw[: n * len(weight)].view(n, len(weight))
        torch.matmul(hidden, weight.t(), out=out)                                   # (n, w) in the model's dtype
        logits = out if out.dtype == torch.float32 else wide[: out.numel()].view_as(out).copy_(out)  # float32
        rows = ((target >= start) & (target < start + len(weight))).nonzero()[:, 0]  # targets in this slice
        picked[rows] = logits[rows, target[rows] - start]
        log_norm = torch.logaddexp(log_norm, torch.logsumexp(logits, dim=-1))
        if top_k:
            best = torch.topk(logits, min(top_k, len(weight)), dim=-1)               # this slice's best
            values = torch.cat([top_lps, best.values], dim=-1)                      # with the best so far
            ids = torch.cat([top_ids, best.indices + start], dim=-1)
            top_lps, at = torch.topk(values, min(top_k, values.shape[1]), dim=-1)
            top_ids = ids.gather(-1, at)
    return picked - log_norm, top_ids, top_lps - log_norm[:, None]


def score_many(
    model: Transformer,
    tok: Tokenizer,
    texts: list[str],
    context: str | list[str | None] | None = None,
    chat: bool = False,
    window: int | None = None,
    stride: int | None = None,
    top_k: int = 5,
    batch_tokens: int = 1024,
    padding_side: str = "right",
    slice_mb: float = 4,
    progress: bool = False,
) -> list[TextScore]:
    """Score many texts at once; returns one :class:`TextScore` per text, in order.

    ``context``: one prefix for every text, or one per text (None for none); see
    :func:`encode_for_scoring`. ``window`` (default: the model's context length) and
    ``stride`` (default: window // 2) set the sliding windows for long sequences.
    ``top_k`` alternatives are recorded per token (0 for none). Batches hold at most
    ``batch_tokens`` tokens (padding included); results do not depend on it, nor on
    ``padding_side``, beyond float rounding. ``slice_mb`` bounds the float32 logits held at
    once (a slice of the vocabulary for every row of a batch). ``progress`` shows a progress bar.
    """
    if isinstance(texts, str):
        raise TypeError("score_many takes a list of texts; use score() for one text.")
    if not texts:
        return []
    contexts = context if isinstance(context, list) else [context] * len(texts)
    if len(contexts) != len(texts):
        raise InputError(f"got {len(contexts)} contexts for {len(texts)} texts; give one per text, or one for all.")
    window = window or model.config.max_position_embeddings
    stride = stride or max(window // 2, 1)
    if not 2 <= window <= model.config.max_position_embeddings or not 1 <= stride <= window - 1:
        raise InputError(
            f"need 2 <= window <= {model.config.max_position_embeddings} (the model's context) and "
            f"1 <= stride < window; got window={window}, stride={stride}."
        )
    if not isinstance(top_k, int) or top_k < 0:
        raise InputError(f"top_k must be a whole number >= 0 (0: record no alternatives); got {top_k!r}.")
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be 'left' or 'right'; got {padding_side!r}.")

    encoded = [_encode_for_scoring(tok, t, c, chat) for t, c in zip(texts, contexts)]
    segments = []
    for owner, enc in enumerate(encoded):
        ids, score_from = enc.ids, enc.score_from
        if score_from >= len(ids):
            raise InputError(
                f"{f'text {owner} ' if len(texts) > 1 else 'the text '}({texts[owner][:40]!r}) leaves no token to score: it is a single token "
                "and the tokenizer adds no BOS token to predict it from (or, after a context, the tokenizer "
                "encodes nothing of it). Give a longer text or a context."
            )
        segments.extend(_windows(owner, ids, score_from, window, stride))

    per_text: list[list[tuple[_Segment, tuple]]] = [[] for _ in texts]
    batches = _batches(segments, batch_tokens)
    for batch in progress_bar(batches, enabled=progress, desc="scoring", unit="batch"):
        for seg, result in zip(batch, _score_batch(model, batch, top_k, padding_side, slice_mb)):
            per_text[seg.owner].append((seg, result))

    n_windows = max(len(parts) for parts in per_text)
    protocol = "whole text in one pass" if n_windows == 1 else (
        f"sliding windows of {window} tokens, stride {stride}: each token scored once, "
        f"with at least {window - stride} tokens of context after the first window")
    if any(c is not None for c in contexts):
        protocol += ("; only the text after the context is scored, its tokens as encoded together with the context"
                     + (" (context as a chat user turn)" if chat else ""))
    return [_text_score(tok, texts[i], contexts[i], encoded[i].ids, _scored_bytes(tok, encoded[i]), parts, protocol)
            for i, parts in enumerate(per_text)]


def _text_score(tok: Tokenizer, text: str, context: str | None, ids: list[int], n_bytes: int, parts: list,
                protocol: str) -> TextScore:
    rows = []
    for seg, (logprobs, top_ids, top_lps) in sorted(parts, key=lambda p: p[0].offset):
        first = seg.offset + seg.score_from
        for j, lp in enumerate(logprobs.tolist()):
            pos = first + j
            top = [(tok.token_text(t), t, math.exp(v)) for t, v in zip(top_ids[j].tolist(), top_lps[j].tolist())]
            rows.append(TokenScore(pos, ids[pos], tok.token_text(ids[pos]),
                                   tok.decode(ids[max(0, pos - 12) : pos], skip_special_tokens=True), lp, top))
    return TextScore(text, context, ids, rows, -sum(r.logprob for r in rows), max(n_bytes, 1), protocol)


def score(model: Transformer, tok: Tokenizer, text: str, context: str | None = None, **options) -> TextScore:
    """Score one text (or a continuation given ``context``): per-token rows, total NLL (nats),
    scored token count, perplexity and bits per byte. Options as in :func:`score_many`."""
    return score_many(model, tok, [text], context, **options)[0]


def perplexity(model: Transformer, tok: Tokenizer, text: str, context: str | None = None, **options) -> float:
    """exp(mean negative log-likelihood, nats) of the text's scored tokens."""
    return score(model, tok, text, context, top_k=0, **options).perplexity
