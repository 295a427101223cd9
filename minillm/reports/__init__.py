"""Tables and plots: the last step of the data flow.

Experiments (:mod:`minillm.experiments`) produce results; ``files`` writes each experiment's
folder of CSV tables, Markdown report and figures (``tables``: the CSV and Markdown tables), the
``plots_*`` modules draw the figures with matplotlib and
``report`` writes the scaling experiment's report.html from the jinja2 template in ``templates/``.
This folder imports the experiments; no experiment imports it.
"""
