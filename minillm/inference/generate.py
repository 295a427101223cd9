"""Turning logits into text: temperature, top-k, top-p, and the decoding loop.

At every step the model gives one logit per vocabulary entry for the next token. We
divide them by a *temperature* (below 1 sharpens, above 1 flattens; 0 means "always
take the argmax", greedy decoding), optionally keep only the *k* most likely tokens
(top-k) or the smallest set whose probabilities add up to *p* (top-p, nucleus), and draw
from the softmax of what is left. The KV cache means each step feeds the model only the
newest token. Generation ends after a set number of tokens, or at a token that ends a reply:
those the checkpoint lists in its generation_config.json (see ``minillm.checkpoint.generation_config``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from minillm.checkpoint.generation_config import GenerationConfig
from minillm.errors import InputError
from minillm.models.qwen2 import Transformer

# How far below p the probability of the tokens ahead of a candidate may fall and still count
# as reaching p. Logits arrive as float32, rounded to 6e-8 of their size, which moves each
# probability by up to ~1e-6 of itself for logits of size ~20: so a distribution meant to be
# exactly [0.5, 0.3, 0.2] reaches p = 0.8 after two tokens, even though its float32 softmax sums
# them to 0.79999998. The sums themselves are taken in float64 (error under 1e-10 even over
# 151,936 terms). The tokens this rule drops that exact arithmetic on the rounded logits would
# keep carry at most 1e-6 of the probability.
TOP_P_TOLERANCE = 1e-6


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the ``k``-th largest of its row to -inf. (..., vocab) -> (..., vocab).

    Ties: a logit *equal* to the k-th largest is kept, so a row with ties at the boundary keeps
    more than k tokens (transformers' ``TopKLogitsWarper`` does the same); which of several equal
    tokens is "more likely" is a question the logits cannot answer. ``k >= vocab`` keeps all.
    """
    if k >= logits.shape[-1]:
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the most likely tokens until their probability reaches ``p``.

    (..., vocab) -> (..., vocab), every other logit set to -inf. A token is kept when the
    tokens *strictly more likely* than it add up to less than ``p``: the kept set is the
    smallest one whose probability reaches ``p``, the token that crosses ``p`` included, and
    the most likely token is always kept.

    The edges, decided so that float rounding cannot move them:

    * ``p = 1`` keeps every token (it means "no filtering").
    * probabilities are summed in float64, and a sum less than ``TOP_P_TOLERANCE`` (1e-6) below
      ``p`` counts as reaching it, so an exact boundary (probabilities [0.5, 0.3, 0.2] and
      p = 0.8) keeps what exact arithmetic keeps (two tokens), not what rounding says;
    * tokens with equal logits are kept or dropped together (as top-k keeps every token equal
      to the k-th largest), so the result does not depend on how a sort orders ties. Here
      transformers' ``TopPLogitsWarper`` differs: it keeps whichever of the tied tokens its
      sort puts first.
    * a row whose logits are all -inf but one keeps that one; -inf logits stay -inf.
    """
    if p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits.double(), dim=-1)
    # Probability of the tokens before each one in the sorted row.
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    # Tied tokens share the "before" of the first of them: find where each run of equal values starts.
    position = torch.arange(logits.shape[-1], device=logits.device).expand_as(sorted_logits)
    starts_run = torch.ones_like(sorted_logits, dtype=torch.bool)
    starts_run[..., 1:] = sorted_logits[..., 1:] != sorted_logits[..., :-1]
    run_start = torch.where(starts_run, position, 0).cummax(dim=-1).values
    drop_sorted = before.gather(-1, run_start) >= p - TOP_P_TOLERANCE
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_token_distribution(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The probabilities sampling draws from: (batch, vocab) logits -> (batch, vocab), rows sum to 1.

    In transformers' order: temperature divides the logits, then top-k, then top-p, then the
    softmax. Temperature 0 puts all the probability on the argmax. Each row's largest logit is
    subtracted before dividing, so a temperature near 0 (1e-30, say) cannot overflow to
    inf - inf = NaN: the probability goes, as it should in the limit, to the tokens tied for
    the largest logit.
    """
    logits = logits.float()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    if not torch.isfinite(logits.amax(dim=-1)).all():
        raise InputError("every row of logits needs a finite largest logit (not all -inf, no +inf or NaN).")
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.softmax(logits, dim=-1)


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the next token from one row of logits per sequence: (batch, vocab) -> (batch,) ids.

    Temperature 0 is greedy (the argmax, no randomness); otherwise one draw from
    :func:`next_token_distribution` per row, with ``generator`` (seeded by the caller) if given.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = next_token_distribution(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]


def _check_sampling_args(max_new_tokens, temperature, top_k, top_p) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be a whole number >= 0; got {max_new_tokens!r}.")
    if not temperature >= 0:   # also catches NaN, which every comparison calls False
        raise InputError(f"temperature must be >= 0 (0 means greedy); got {temperature}.")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise InputError(f"top_k must be a whole number >= 1, or None to keep every token; got {top_k!r}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], or None to keep every token; got {top_p}.")


def default_eos_token_ids(model: Transformer) -> tuple[int, ...]:
    """The ids that end generation by default: the checkpoint's generation_config.json list
    (attached by load_model), else config.json's ``eos_token_id``, else none."""
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        return generation_config.eos_token_ids
    eos = model.config.eos_token_id
    return () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)


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
    tokenizer_size: int | None = None,
) -> list[int]:
    """Continue the token ids ``ids`` (a list, or a 1-D tensor) and return only the new ids.

    ``temperature=0`` is greedy decoding and fully deterministic; with sampling, the same
    ``seed`` gives the same tokens. Generation stops after ``max_new_tokens`` or right after
    emitting an end id (which is included in the result). The end ids are ``eos_token_id``
    (one id or several); by default (None) those the checkpoint lists in its
    generation_config.json (``model.generation_config``, read by :func:`minillm.load_model`),
    else ``model.config.eos_token_id``; ``eos_token_id=()`` never stops early. The sampling
    settings here are always the arguments' (greedy by default); ``minillm generate`` is the
    one that takes the checkpoint's sampling defaults. ``on_token`` is called with each new id
    as soon as it is chosen (to print a stream).

    ``tokenizer_size``: how many tokens the tokenizer has (``tok.vocab_size``). A model may have
    more embedding rows than that (Qwen2.5: 151,936 rows for 151,665 tokens; see
    :func:`minillm.checkpoint.loading.check_tokenizer_fits`): those *padding rows* stand for no text. Given
    ``tokenizer_size``, only the ids below it are candidates (the padding rows' logits are dropped
    before temperature, top-k and top-p), so every new id decodes; ``minillm generate`` passes it.
    Without it every row can be drawn, as in ``transformers``' generate (trained models give
    padding rows next to no probability), and ``Tokenizer.decode`` refuses a padding id with a
    clear error instead of printing nothing.
    """
    _check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    if eos_token_id is None:
        eos_token_id = default_eos_token_ids(model)
    device = model.embed_tokens.weight.device
    prompt = torch.as_tensor(ids, dtype=torch.long, device=device).reshape(1, -1)  # (1, seq)
    if prompt.numel() == 0:
        raise InputError("the prompt is empty: give at least one token id (a BOS token, for example).")
    total = prompt.shape[1] + max_new_tokens
    if total > model.config.max_position_embeddings:
        raise InputError(
            f"the prompt ({prompt.shape[1]} tokens) + max_new_tokens={max_new_tokens} exceeds the model's "
            f"context of {model.config.max_position_embeddings} tokens; ask for fewer new tokens."
        )
    if tokenizer_size is not None and (not isinstance(tokenizer_size, int) or tokenizer_size < 1):
        raise InputError(f"tokenizer_size must be a whole number >= 1 (the tokenizer's vocab_size); "
                         f"got {tokenizer_size!r}.")
    stop = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    cache = model.new_cache(batch=1, max_len=total)
    new_ids: list[int] = []
    step_input = prompt
    for _ in range(max_new_tokens):
        hidden = model.hidden_states(step_input, cache=cache)[:, -1]      # (1, hidden): only the last position
        logits = model.lm_head(hidden)[:, :tokenizer_size]                # (1, vocab): no padding rows
        next_id = sample_next_token(logits, temperature, top_k, top_p, generator)  # (1,)
        new_ids.append(int(next_id))
        if on_token is not None:
            on_token(new_ids[-1])
        if new_ids[-1] in stop:
            break
        step_input = next_id[:, None]                                     # (1, 1)
    return new_ids


def encode_prompt(tokenizer: Any, text: str, chat: bool = False) -> list[int]:
    """The token ids of a prompt: ``text`` as the tokenizer encodes it, or with ``chat=True`` as a
    user message in the tokenizer's chat template with the assistant's turn opened (the rendered
    template holds its own special tokens, so none are added). Raises ValueError for an empty text."""
    if not text:
        raise InputError("the text is empty: give the model at least one character to read, e.g. \"Once upon a time\".")
    if chat:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        return tokenizer.encode(prompt, add_special_tokens=False)
    return tokenizer.encode(text)


def stream(model: Transformer, tokenizer: Any, ids: Sequence[int], write: Callable[[str], None],
           skip_special_tokens: bool = True, **settings: Any) -> list[int]:
    """:func:`generate` (``settings`` are its arguments) with the text written as it comes: the
    prompt with the first new token, then each new piece. Returns the new ids.

    Prompt and continuation are decoded together at every token: a token's leading space, or a
    character split over several byte tokens, only comes out right in context, and a decode that
    ends in a partial character (U+FFFD) waits for the next token. What is still held back at the
    end (the prompt when nothing was generated, a character whose last bytes never came) is
    written as it is, followed by a newline. ``skip_special_tokens=False`` shows markers such as
    ``<|im_start|>assistant``, so a reader sees where a chat model's reply starts.
    """
    ids = list(ids)
    new_ids: list[int] = []
    written = ""

    def show(token_id: int) -> None:
        nonlocal written
        new_ids.append(token_id)
        text = tokenizer.decode(ids + new_ids, skip_special_tokens=skip_special_tokens)
        if not text.endswith("\ufffd"):
            write(text[len(written):])
            written = text

    generate(model, ids, on_token=show, **settings)
    write(tokenizer.decode(ids + new_ids, skip_special_tokens=skip_special_tokens)[len(written):] + "\n")
    return new_ids


def sampling_settings(generation_config: GenerationConfig, temperature: float | None = None, top_k: int | None = None,
                      top_p: float | None = None) -> tuple[dict[str, Any], str | None]:
    """The sampling settings of a run, for :func:`generate`: each one given, else the checkpoint's
    default from its generation_config.json (:meth:`GenerationConfig.sampling`, as transformers'
    generate() takes them); and a note naming those that came from the file, or None when none did."""
    given = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    defaults = dict(zip(given, generation_config.sampling()))
    chosen = {name: value if value is not None else defaults[name] for name, value in given.items()}
    from_file = [f"{name} {chosen[name]}" for name in given
                 if given[name] is None and generation_config.do_sample and chosen[name] is not None]
    if not from_file:
        return chosen, None
    ignored = (f"; its repetition_penalty {generation_config.repetition_penalty} is not applied"
               if generation_config.repetition_penalty not in (None, 1, 1.0) else "")
    return chosen, f"[sampling with {', '.join(from_file)} from generation_config.json{ignored}; temperature=0 for greedy]"
