"""Making models: tokenizers, training loops and the data they are trained on.

A loop back to the start of the data flow: it writes the files the rest reads (config + weights +
tokenizer). ``bpe`` trains a byte-pair tokenizer, ``train`` pretrains small models (its loop; the
settings in ``config``, the data in ``windows``, the model in ``new_model``, the update in ``step``,
the saved state in ``checkpoints``) and ``finetune`` fine-tunes them; ``instructions`` writes the
instructions the instruct models learn from (about the synthetic stories of :mod:`minillm.data.stories`),
and ``provenance`` records which texts a model was trained on.
(The family of tiny models the kit ships is built with these by ``minillm.course.family``.)
"""
