"""A transformers-shaped face over the kit's own models: change one import line.

    from transformers import AutoTokenizer, AutoModelForCausalLM, TextStreamer   # before
    from minillm.compat import AutoTokenizer, AutoModelForCausalLM, TextStreamer  # after

and a course notebook written against transformers runs on minillm's readable models
(minillm/models/qwen2.py, gpt2.py), loaded by :func:`minillm.load_model` and
:func:`minillm.load_tokenizer`: the same logits, the same tokens, the same greedy generations.
This is a caller-side layer, like cli/: nothing in the kit imports it, and it never imports
transformers. What it covers and what it refuses (with the kit's way instead) is listed in the
README's "Coming from transformers" section.
"""

from minillm.compat.generation import GenerationConfig
from minillm.compat.model import AutoModelForCausalLM, CausalLMOutput, PreTrainedModel
from minillm.compat.streamer import TextStreamer
from minillm.compat.tokenizer import AutoTokenizer, BatchEncoding, PreTrainedTokenizer
from minillm.compat.unsupported import NotInKit

__all__ = ["AutoModelForCausalLM", "AutoTokenizer", "BatchEncoding", "CausalLMOutput", "GenerationConfig",
           "NotInKit", "PreTrainedModel", "PreTrainedTokenizer", "TextStreamer"]
