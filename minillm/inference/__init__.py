"""What is done with a model's logits: scores and samples.

The step after the model in the data flow (model -> logits -> scores). ``scoring`` turns logits into
log-probabilities, surprisal and perplexity, ``generate`` samples continuations (temperature,
top-k, top-p), ``quantize`` simulates k-bit weights, and ``display`` writes the HTML a notebook
shows for scored tokens and next-token tables. The experiments in :mod:`minillm.experiments` are
built on these.
"""
