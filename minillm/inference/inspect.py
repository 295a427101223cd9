"""Looking inside a model: attention weights, the residual stream and the logit lens.

:func:`trace` runs a model once, exactly as it always runs, and keeps what passes through it::

    x_0 = embeddings                                       trace.residual[0]
    for each block l = 0 .. L-1:
        a_l = Attention(Norm(x_l))                         trace.attention_outputs[l]
              (its softmax weights per head:               trace.attentions[l])
        m_l = MLP(Norm(x_l + a_l))                         trace.mlp_outputs[l]
        x_{l+1} = x_l + a_l + m_l                          trace.residual[l + 1]
    logits = lm_head(final_norm(x_L))                      trace.logits

So the residual stream is a sum: ``x_L = x_0 + a_0 + m_0 + ... + a_{L-1} + m_{L-1}``; every block
*adds* something to it and overwrites nothing. The **logit lens** reads the stream before the end:
``lm_head(final_norm(x_l))`` is what the model would predict if it stopped after block l-1
(nostalgebraist, "interpreting GPT: the logit lens", 2020). After the last block it is the model's
own prediction.

Nothing in the model files is changed for this: PyTorch forward hooks record each block's input
and output and each attention and MLP module's output, and each attention module's ``attend``
(the function that mixes the values, :func:`minillm.models.qwen2.attention`) is swapped for the
duration of the call for one that also keeps :func:`minillm.models.qwen2.attention_weights`.
A packed model (``load_model(..., packed=True)``) traces too: its linear layers run as packed, its
attention runs the readable way while traced, so the recorded weights are the exact softmax.

:func:`logit_lens` is the same lens as a table for one text: the top tokens after each block.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from minillm.checkpoint.tokenizer import Tokenizer
from minillm.errors import InputError
from minillm.inference.display import lens_html, probability_text
from minillm.models.gpt2 import GPT2
from minillm.models.qwen2 import Transformer, attention, attention_weights


@dataclass
class Trace:
    """What passed through the model in one forward pass (all tensors detached, in the model's dtype).

    Shapes: batch, seq (the input's tokens), hidden, heads (query heads), vocab; L blocks.

    * ``residual``: L + 1 tensors (batch, seq, hidden): the embeddings (GPT-2: token + position
      vectors), then the residual stream after each block, *before* the final norm.
    * ``attention_outputs``, ``mlp_outputs``: L tensors (batch, seq, hidden): what block l's
      attention and MLP add to the residual stream.
    * ``attentions``: L tensors (batch, heads, seq, seq): the attention probabilities, query x key;
      each row sums to 1 and is 0 above the diagonal (the future) and on padding keys. A padding
      *query* row (left padding) holds weight 1 on itself: the model lets it see only itself so that
      its meaningless output stays finite (transformers' eager attention spreads them evenly over
      every key instead): compare rows of real tokens only.
    * ``final_hidden``: (batch, seq, hidden), the final norm of ``residual[-1]``: what the LM head reads.
    * ``logits``: (batch, seq, vocab), the model's output, exactly as ``model(input_ids, attention_mask)``.
    """

    model: Transformer | GPT2
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    residual: list[torch.Tensor]
    attention_outputs: list[torch.Tensor]
    mlp_outputs: list[torch.Tensor]
    attentions: list[torch.Tensor]
    final_hidden: torch.Tensor
    logits: torch.Tensor

    def __repr__(self) -> str:   # the sizes, not the tensors
        batch, seq = self.input_ids.shape
        return (f"Trace(batch={batch}, seq={seq}, layers={len(self.attentions)}, "
                f"heads={self.attentions[0].shape[1]}, vocab={self.logits.shape[-1]})")

    @property
    def hidden_states(self) -> tuple[torch.Tensor, ...]:
        """L + 1 tensors (batch, seq, hidden), the convention of transformers' ``output_hidden_states=True``
        (checked against transformers 5.x): the embeddings, the stream after blocks 0 .. L-2, and last
        the stream after block L-1 *with the final norm applied* (``final_hidden``, what the LM head reads),
        not ``residual[-1]``."""
        return (*self.residual[:-1], self.final_hidden)

    @torch.no_grad()
    def logit_lens(self, layer: int | None = None) -> torch.Tensor:
        """``lm_head(final_norm(residual[layer]))``: (batch, seq, vocab) logits, what the model would
        predict had it stopped after block ``layer - 1`` (``layer`` 0: the embeddings alone). At
        ``layer = L`` it is ``logits``. ``layer=None``: all L + 1 stacked, (L + 1, batch, seq, vocab)
        (memory: L + 1 times the logits'). Raises ValueError for a layer outside 0..L."""
        last = len(self.residual) - 1
        if layer is None:
            return torch.stack([self.logit_lens(i) for i in range(last + 1)])
        if isinstance(layer, bool) or not isinstance(layer, int) or not -(last + 1) <= layer <= last:
            raise InputError(f"layer must be an integer in 0..{last} (0: the embeddings, {last}: after the last block); "
                             f"got {layer!r}.")
        return self.model.lm_head(final_norm(self.model)(self.residual[layer]))


def final_norm(model: Transformer | GPT2) -> torch.nn.Module:
    """The norm between the last block and the LM head: Qwen2/Llama's ``norm``, GPT-2's ``ln_f``."""
    return model.ln_f if isinstance(model, GPT2) else model.norm


def _attention_module(block: torch.nn.Module) -> torch.nn.Module:
    return block.attn if hasattr(block, "attn") else block.self_attn     # GPT-2's name, Qwen2's name


def _recording_attention(store: list, q, k, v, mask) -> torch.Tensor:
    """minillm.models.qwen2.attention, keeping its weights (batch, n_heads, seq, keys) in ``store``."""
    store.append(attention_weights(q, k, mask))
    return attention(q, k, v, mask)


@torch.no_grad()
def trace(model: Transformer | GPT2, input_ids, attention_mask: torch.Tensor | None = None) -> Trace:
    """Run ``model`` once on ``input_ids`` (batch, seq) or (seq,) and record what passes through it.

    ``attention_mask`` (batch, seq), 1 on real tokens and 0 on padding, as for ``model(...)``.
    Returns a :class:`Trace`; its ``logits`` equal ``model(input_ids, attention_mask)``. Raises
    TypeError for a model that is not a Qwen2/Llama ``Transformer`` or a ``GPT2`` (the fixed-window
    MLP model has no attention to trace), and the model's own ValueError for bad ids or masks.
    """
    if not isinstance(model, (Transformer, GPT2)):
        raise TypeError(f"trace needs a Qwen2/Llama Transformer or a GPT2 model (load_model's result); "
                        f"got {type(model).__name__}.")
    residual, attention_outputs, mlp_outputs, attentions, final = [], [], [], [], []

    def keep(store: list):
        return lambda module, args, output: store.append(output.detach())

    blocks = list(model.layers)
    hooks = [blocks[0].register_forward_pre_hook(lambda module, args: residual.append(args[0].detach())),
             final_norm(model).register_forward_hook(keep(final))]
    swapped = []
    for block in blocks:
        attn = _attention_module(block)
        hooks += [block.register_forward_hook(keep(residual)),
                  attn.register_forward_hook(keep(attention_outputs)),
                  block.mlp.register_forward_hook(keep(mlp_outputs))]
        swapped.append((attn, attn.__dict__.get("attend")))        # a packed model's own attend, or None
        attn.attend = functools.partial(_recording_attention, attentions)
    try:
        logits = model(input_ids, attention_mask)
    finally:
        for hook in hooks:
            hook.remove()
        for module, own in swapped:
            if own is None:
                del module.attend            # back to the class's attention
            else:
                module.attend = own
    ids = input_ids if isinstance(input_ids, torch.Tensor) else torch.as_tensor(input_ids)
    return Trace(model, ids if ids.dim() == 2 else ids[None], attention_mask, residual, attention_outputs,
                 mlp_outputs, attentions, final[0], logits)


@dataclass
class LogitLens:
    """The top tokens after each block for one position of a text; shows as a shaded table in Jupyter.

    ``rows``: one per layer, ``(label, [(token, id, probability), ...] most likely first)``; the
    first row reads the embeddings alone, the last is the model's own prediction. Probabilities
    are the softmax of the lens logits over the whole vocabulary (float32).
    """

    text: str
    token: str                       # the token at the lens' position: the rows predict what follows it
    position: int                    # its index in the text's tokens
    rows: list[tuple[str, list[tuple[str, int, float]]]]

    def _repr_html_(self) -> str:
        return lens_html(self.token, self.position, self.rows)

    def __str__(self) -> str:
        head = f"The logit lens after token {self.position} {self.token!r}: the most likely next tokens after each block"
        cells = [[f"{t!r} {probability_text(p)}" for t, _, p in top] for _, top in self.rows]
        label_width = max(len(label) for label, _ in self.rows)
        widths = [max(len(row[j]) for row in cells) for j in range(len(cells[0]))]
        lines = [head, f"{'layer':<{label_width}}  " + "  ".join(f"{f'#{j + 1}':<{w}}" for j, w in enumerate(widths))]
        for (label, _), row in zip(self.rows, cells):
            lines.append(f"{label:<{label_width}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(row, widths)))
        return "\n".join(line.rstrip() for line in lines)


def layer_labels(n_blocks: int) -> list[str]:
    """Names of the L + 1 lens rows: 'embeddings', 'block 0', ..., 'block L-1 (output)'."""
    return ["embeddings", *(f"block {i}" for i in range(n_blocks - 1)), f"block {n_blocks - 1} (output)"]


@torch.no_grad()
def logit_lens(model: Transformer | GPT2, tok: Tokenizer, text: str, top_k: int = 5, position: int = -1) -> LogitLens:
    """The ``top_k`` most likely next tokens after token ``position`` of ``text`` (default: its last),
    read from the residual stream after each block (:meth:`Trace.logit_lens`). Raises ValueError for
    an empty text, ``top_k`` < 1 or a position outside the text's tokens."""
    if not isinstance(text, str) or not text:
        raise InputError(f"text must be a non-empty string; got {text!r}.")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k must be a positive integer; got {top_k!r}.")
    ids = tok.encode(text)
    if not -len(ids) <= position < len(ids):
        raise InputError(f"position {position} is outside the text's {len(ids)} tokens (0..{len(ids) - 1}, or -1 for the last).")
    position %= len(ids)
    run = trace(model, torch.tensor([ids]))
    rows = []
    for label, layer in zip(layer_labels(len(run.attentions)), range(len(run.residual))):
        probs = torch.softmax(run.logit_lens(layer)[0, position].float(), dim=-1)   # (vocab,)
        top = torch.topk(probs, min(top_k, probs.numel()))
        rows.append((label, [(tok.token_text(i), i, p) for p, i in zip(top.values.tolist(), top.indices.tolist())]))
    return LogitLens(text, tok.token_text(ids[position]), position, rows)
