"""Training a byte-level BPE tokenizer: the vocabulary a new model will read and write.

Byte-pair encoding (BPE) starts from the 256 possible bytes, so that any text at all can be
encoded, and then learns *merges*: it counts which two adjacent pieces occur together most
often in the training texts, glues them into one new token, and repeats until the
vocabulary has ``vocab_size`` entries. Frequent words ("the", " was") end up as one token;
rare words are spelled out of several pieces.

The tokenizer made here is built like GPT-2's and Qwen2's:

* **byte-level**: text is turned into UTF-8 bytes first, each byte shown as a printable
  character (a space is ``Ġ``), so no character is ever "unknown";
* the **pre-tokenizer** splits text into words (a leading space stays with its word:
  ``" cat"``) and merges never cross a word boundary; no space is added in front of a text;
* one **special token**, ``<|endoftext|>``, never split and never learned from text, marks
  the end of a document. A model trained on documents joined by it learns where stories
  end, and the token doubles as padding.

The result is saved as ``tokenizer.json`` + ``tokenizer_config.json``, the two files
:func:`minillm.load_tokenizer` (and ``transformers``' ``AutoTokenizer``) read.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from minillm.errors import InputError

EOS = "<|endoftext|>"   # end of a document; also the padding token
BYTES = 256             # the byte alphabet every byte-level vocabulary starts from


def train_tokenizer(texts: list[str], vocab_size: int, folder: str | Path) -> Path:
    """Learn a byte-level BPE vocabulary of ``vocab_size`` tokens from ``texts`` and save it.

    ``texts``: the training documents (list of str). ``vocab_size``: total tokens, the 256
    bytes and ``<|endoftext|>`` included, so at least 257; fewer come back if the texts hold
    too few distinct pairs to merge. Writes ``tokenizer.json`` and ``tokenizer_config.json``
    (eos_token and pad_token ``<|endoftext|>``, no BOS token) into ``folder`` (created if
    needed) and returns the folder. The same texts and size always give the same vocabulary.
    """
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise InputError("texts must be a non-empty list of strings (one per document).")
    if vocab_size < BYTES + 1:
        raise InputError(
            f"vocab_size={vocab_size} is too small: a byte-level vocabulary needs the {BYTES} bytes "
            f"plus {EOS}, so at least {BYTES + 1}. Ask for a few hundred more to learn merges."
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],                                  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS,
        "pad_token": EOS,
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": 1_000_000,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder
