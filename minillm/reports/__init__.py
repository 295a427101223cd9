"""Tables and plots: the last step of the data flow.

Experiments (:mod:`minillm.experiments`) produce results; ``plots`` draws them with matplotlib and
``report`` writes the scaling experiment's report.html from the jinja2 template in ``templates/``.
"""
