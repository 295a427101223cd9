"""The data a run trains on: documents -> one stream of token ids -> windows -> random batches.

1. **Split by document.** The last ``val_fraction`` of the documents are held out for
   validation (or separate validation documents are given). Splitting by document, not by
   position in the stream, keeps every validation story unseen as a whole.
2. **Tokenize and join.** Every document is encoded and followed by the ``<|endoftext|>`` id,
   so the model learns where a text ends (and that what follows is a fresh one).
3. **Cut windows.** The stream is cut into windows of ``context + 1`` tokens (consecutive
   windows share one token, so every token is a target once). A window's first ``context``
   tokens are the input and its last ``context`` tokens the targets: ``logits[:, t]``
   predicts token ``t + 1``.
4. **Draw batches.** Each step draws ``batch_size`` windows at random with a seeded generator,
   so a run is reproducible; validation uses a fixed set of windows spread over the held-out text.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch

from minillm.checkpoint.tokenizer import Tokenizer
from minillm.errors import InputError
from minillm.training.config import TrainConfig

IGNORE = -100                # a target id that the loss skips (F.cross_entropy's ignore_index)


def split_documents(texts: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, validation): the last ``ceil(val_fraction * len(texts))`` documents are validation."""
    if isinstance(texts, str) or len(texts) < 2:
        raise InputError("give at least two texts (documents): one to train on and one to validate on.")
    n_val = min(max(1, math.ceil(val_fraction * len(texts))), len(texts) - 1)
    return list(texts[:-n_val]), list(texts[-n_val:])


def training_documents(texts: list[str], val_texts: list[str] | None,
                       config: TrainConfig) -> tuple[list[str], list[str]]:
    """(training, validation) documents: ``val_texts`` if given, else the last val_fraction of ``texts``."""
    if val_texts is None:
        return split_documents(texts, config.val_fraction)
    if isinstance(texts, str) or isinstance(val_texts, str) or not texts or not val_texts:
        raise InputError("texts and val_texts must be non-empty lists of documents.")
    return list(texts), list(val_texts)


def encode_documents(tok: Tokenizer, texts: list[str]) -> torch.Tensor:
    """One stream of ids, each document followed by the EOS id: (total tokens,) int64."""
    if tok.eos_token_id is None:
        raise InputError(f"the tokenizer in {tok.folder} has no eos_token; training joins documents with it. "
                         "Set eos_token in its tokenizer_config.json.")
    ids: list[int] = []
    for text in texts:
        ids += tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def cut_windows(stream: torch.Tensor, context: int, what: str = "training") -> torch.Tensor:
    """Windows of ``context + 1`` tokens, each starting where the last one's inputs end:
    (n_windows, context + 1). The tail shorter than a window is dropped."""
    if len(stream) < context + 1:
        raise InputError(
            f"the {what} texts hold {len(stream)} tokens, fewer than one window of context + 1 = "
            f"{context + 1}. Give more text, a smaller context, or (validation) a larger val_fraction."
        )
    return stream.unfold(0, context + 1, context)


def spread(windows: torch.Tensor, wanted: int) -> torch.Tensor:
    """At most ``wanted`` of ``windows``, evenly spaced over all of them."""
    if len(windows) <= wanted:
        return windows
    return windows[torch.linspace(0, len(windows) - 1, wanted).long()]


def validation_windows(val_stream: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The fixed validation windows: at most eval_batches * batch_size, spread over the whole set."""
    return spread(cut_windows(val_stream, config.context, "validation"), config.eval_batches * config.batch_size)


def draw_batch(windows: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` windows drawn at random (with replacement): (batch, context + 1), or
    (batch, 2, context + 1) for windows that carry their own targets."""
    return windows[torch.randint(len(windows), (batch_size,), generator=generator)]


def token_fingerprint(*streams: torch.Tensor) -> str:
    """A short hash of token tensors: a resumed run checks that it sees the same tokens."""
    digest = hashlib.sha256()
    for stream in streams:
        digest.update(stream.numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class TrainingData:
    """What the loop trains and validates on, already tokenized.

    Windows are (n, context + 1) token ids, every next token a target (pretraining), or
    (n, 2, context + 1): the ids, then the targets with ``IGNORE`` where nothing is scored
    (fine-tuning scores only the replies, see :mod:`minillm.training.finetune`).
    """

    train: torch.Tensor
    val: torch.Tensor
    fingerprint: str                # of the tokens: a resumed run must see the same ones
    info: dict                      # recorded in trainer_state.json under "data"
    prompts: list[list[int]]        # prompts of the sampled continuations
    documents: list[str] = field(default_factory=list)   # the texts trained on, for the training record


def text_data(tok: Tokenizer, texts: list[str], val_texts: list[str] | None, config: TrainConfig) -> TrainingData:
    """Pretraining data: documents joined with EOS into streams, cut into windows."""
    train_docs, val_docs = training_documents(texts, val_texts, config)
    train_stream, val_stream = encode_documents(tok, train_docs), encode_documents(tok, val_docs)
    return TrainingData(
        train=cut_windows(train_stream, config.context), val=validation_windows(val_stream, config),
        fingerprint=token_fingerprint(train_stream, val_stream),
        info=dict(kind="text", train_documents=len(train_docs), val_documents=len(val_docs),
                  train_tokens=len(train_stream), val_tokens=len(val_stream)),
        prompts=[[tok.eos_token_id], encode_documents(tok, val_docs[:1])[:4].tolist()],
        documents=train_docs)
