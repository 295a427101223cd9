"""From a source to what a model is made of: files, config, weights and tokenizer.

The first step of the data flow (source -> files -> config + weights + tokenizer -> model -> logits
-> scores -> experiments -> tables and plots). ``hub`` turns a folder or a Hugging Face hub id into
local files, ``safe_io`` writes files safely, ``generation_config``, ``weights`` and ``tokenizer``
read and check what a checkpoint holds, ``llama2c`` imports llama2.c checkpoints, and ``loading``
puts them together into a model from :mod:`minillm.models` (``load_model``).
"""
