"""Looking inside a model, in one place: ``import minillm.inspect`` (or ``from minillm.inspect import trace``).

* :func:`trace`: one forward pass, recorded: the hidden states (as transformers'
  ``output_hidden_states``), the attention probabilities of every layer and head, what each
  block's attention and MLP add to the residual stream, and the logit lens (``Trace.logit_lens``).
* :func:`logit_lens`: the top next tokens after each block for a text, as a table (text or HTML).
* :func:`attention_figure`, :func:`plot_attention`: attention maps with the tokens on the axes.

They live in ``minillm/inference/inspect.py`` and ``minillm/reports/attention.py``; this module
only gathers them under one name for callers (like ``cli/``, nothing in the package imports it).
"""

from minillm.inference.inspect import LogitLens, Trace, final_norm, logit_lens, trace
from minillm.reports.attention import attention_figure, plot_attention

__all__ = ["LogitLens", "Trace", "attention_figure", "final_norm", "logit_lens", "plot_attention", "trace"]
