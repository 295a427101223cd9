"""Experiments: scores -> results, the step before tables and plots in the data flow.

Each module runs one study on models scored through :mod:`minillm.inference`: ``scaling``
(perplexity against model size), ``quantization``, ``context``, ``instructions``, ``categories``
(kinds of text) and ``training`` (training sweeps); ``conditions`` is what the context, instruction
and category experiments share, and ``results`` holds the result rows they fill, which
:mod:`minillm.reports` turns into files: tables and plots (each result also prints as a text table).
``inputs`` chooses what they run on: which models, which texts, and what happens offline.
"""
