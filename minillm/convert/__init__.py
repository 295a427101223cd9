"""Importers: checkpoints saved in other formats, rewritten as Hugging Face folders minillm loads.

* ``minillm.convert.llama2c``: Andrej Karpathy's llama2.c ``model.bin`` + ``tokenizer.bin``
  (the TinyStories models stories260K, 15M, 42M and 110M). Command line:
  ``minillm convert-llama2c MODEL_BIN TOKENIZER_BIN OUT_DIR``.
"""
