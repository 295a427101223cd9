"""``TextStreamer``: print a generation as its tokens arrive.

``generate(..., streamer=s)`` calls ``s.put(prompt_ids)`` once, then ``s.put(tensor([id]))`` for
each new token, then ``s.end()``: transformers' streamer protocol, so either library's streamer
works with either's ``generate``. Text is printed as soon as it is whole: a token that holds only
part of a character (byte-level BPE splits emoji over several tokens) decodes to U+FFFD and waits
for the rest. What ends up printed is the decoded text followed by a newline, as in transformers.
"""

from __future__ import annotations

from typing import Any

import torch

INCOMPLETE = "\ufffd"   # what a partial UTF-8 character decodes to


class TextStreamer:
    """Print the text of ``generate``'s tokens as they come. ``skip_prompt=True`` leaves the
    prompt out; ``decode_kwargs`` (e.g. ``skip_special_tokens=True``) go to ``tokenizer.decode``."""

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, **decode_kwargs: Any):
        self.tokenizer, self.skip_prompt, self.decode_kwargs = tokenizer, skip_prompt, decode_kwargs
        self.tokens: list[int] = []      # the ids of the text not yet finished (since the last newline)
        self.printed = 0                 # characters of their text already printed
        self.prompt_pending = True

    def put(self, value: torch.Tensor) -> None:
        """Take the next ids: the prompt (the first call; (seq,) or (1, seq)) or one new token."""
        if value.dim() > 1 and value.shape[0] > 1:
            raise ValueError("TextStreamer prints one sequence: generate with a batch of one row.")
        ids = value.reshape(-1).tolist()
        if self.skip_prompt and self.prompt_pending:
            self.prompt_pending = False
            return
        self.prompt_pending = False
        self.tokens += ids
        text = self.tokenizer.decode(self.tokens, **self.decode_kwargs)
        if text.endswith("\n"):                      # a finished line: print it and start afresh
            self.on_finalized_text(text[self.printed:])
            self.tokens, self.printed = [], 0
        elif not text.endswith(INCOMPLETE):
            self.on_finalized_text(text[self.printed:])
            self.printed = len(text)

    def end(self) -> None:
        """Print what is left and end the line."""
        text = self.tokenizer.decode(self.tokens, **self.decode_kwargs) if self.tokens else ""
        rest = text[self.printed:]
        self.tokens, self.printed, self.prompt_pending = [], 0, True
        self.on_finalized_text(rest, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Print ``text`` now (override to send it elsewhere); a newline after the last piece."""
        print(text, flush=True, end="\n" if stream_end else "")
