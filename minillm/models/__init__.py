"""The decoders: hyperparameters in, logits out.

The middle of the data flow (config + weights + tokenizer -> model -> logits). ``config`` holds the
models' hyperparameters (``ModelConfig``, ``GPT2Config``); ``qwen2`` is the Qwen2/Llama decoder and
``gpt2`` is GPT-2, two files to read side by side; ``mlp_lm`` is the fixed-window MLP language
model a transformer has to beat, ``numpy_model`` both forward passes in plain NumPy (no torch), and
``packed`` the opt-in fast CPU layout of the same weights. :mod:`minillm.checkpoint` reads a
checkpoint's files and builds these models from them.
"""
