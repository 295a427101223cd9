"""Experiments: scores -> results, the step before tables and plots in the data flow.

Each module runs one study on models scored through :mod:`minillm.inference`: ``scaling``
(perplexity against model size), ``quantization``, ``context``, ``instructions``, ``categories``
(kinds of text) and ``training`` (training sweeps); ``conditions`` is what the context, instruction
and category experiments share, and ``results`` holds the result rows they fill, which
:mod:`minillm.reports` turns into tables and plots.
"""
