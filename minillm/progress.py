"""Progress bars: ``tqdm.auto``, quiet where asked.

``tqdm.auto`` draws a widget bar in Jupyter when ``ipywidgets`` is installed, and a text bar
everywhere else. minillm does not depend on ``ipywidgets``: it (with the Jupyter front-end
extension it brings) is only needed for the widget look, command-line users never need it,
and most notebook installations (JupyterLab, Colab, VS Code) already ship it. Without it,
``tqdm.auto`` falls back to the text bar by itself, which Jupyter shows fine, but first warns
"IProgress not found. Please update jupyter and ipywidgets" in every notebook; that one
warning is silenced here, since the fallback it announces is what we want.

Bars can be switched off per call (``enabled=False``, the commands' ``--no-progress``) or for
everything with the environment variable ``TQDM_DISABLE=1``, which tqdm reads itself: a bar is
therefore only ever switched *off* explicitly, never forced on over the variable.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    from tqdm.auto import tqdm


def progress_bar(iterable: Iterable | None = None, enabled: bool = True, **options) -> tqdm:
    """``tqdm(iterable, **options)``, hidden when ``enabled`` is False or ``TQDM_DISABLE`` is set."""
    if not enabled:
        options["disable"] = True
    return tqdm(iterable, **options)


def print_line(message: str) -> None:
    """Print a line without breaking the progress bar being drawn (``tqdm.write``)."""
    tqdm.write(message)
