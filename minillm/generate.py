"""Turning logits into text: temperature, top-k, top-p, and the decoding loop.

At every step the model gives one logit per vocabulary entry for the next token. We
divide them by a *temperature* (below 1 sharpens, above 1 flattens; 0 means "always
take the argmax", greedy decoding), optionally keep only the *k* most likely tokens
(top-k) or the smallest set whose probabilities add up to *p* (top-p, nucleus), and draw
from the softmax of what is left. The KV cache means each step feeds the model only the
newest token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .model import Transformer


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit outside the ``k`` largest to -inf. (..., vocab) -> (..., vocab)."""
    if k >= logits.shape[-1]:
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability adds up to at least ``p``.

    The most likely token is always kept. (..., vocab) -> (..., vocab), the rest set to -inf.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # A token is dropped when the tokens *before* it already reach p.
    drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the next token from one row of logits per sequence: (batch, vocab) -> (batch,) ids.

    Temperature is applied to the logits *before* the softmax; temperature 0 is greedy.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]


def _check_sampling_args(max_new_tokens, temperature, top_k, top_p) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a whole number >= 0; got {max_new_tokens!r}.")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy); got {temperature}.")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a whole number >= 1, or None to keep every token; got {top_k!r}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], or None to keep every token; got {top_p}.")


@torch.inference_mode()
def generate(
    model: Transformer,
    ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int = 20,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    on_token: Callable[[int], None] | None = None,
) -> list[int]:
    """Continue the token ids ``ids`` (a list, or a 1-D tensor) and return only the new ids.

    ``temperature=0`` is greedy decoding and fully deterministic; with sampling, the same
    ``seed`` gives the same tokens. Generation stops after ``max_new_tokens`` or right after
    emitting an ``eos_token_id`` (which is included). ``on_token`` is called with each new
    id as soon as it is chosen (to print a stream).
    """
    _check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    device = model.embed_tokens.weight.device
    prompt = torch.as_tensor(ids, dtype=torch.long, device=device).reshape(1, -1)  # (1, seq)
    if prompt.numel() == 0:
        raise ValueError("the prompt is empty: give at least one token id (a BOS token, for example).")
    total = prompt.shape[1] + max_new_tokens
    if total > model.config.max_position_embeddings:
        raise ValueError(
            f"prompt ({prompt.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"context of {model.config.max_position_embeddings} tokens; ask for fewer new tokens."
        )
    stop = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    cache = model.new_cache(batch=1, max_len=total)
    new_ids: list[int] = []
    step_input = prompt
    for _ in range(max_new_tokens):
        hidden = model.hidden_states(step_input, cache=cache)[:, -1]      # (1, hidden): only the last position
        next_id = sample_next_token(model.lm_head(hidden), temperature, top_k, top_p, generator)  # (1,)
        new_ids.append(int(next_id))
        if on_token is not None:
            on_token(new_ids[-1])
        if new_ids[-1] in stop:
            break
        step_input = next_id[:, None]                                     # (1, 1)
    return new_ids
