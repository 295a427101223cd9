"""The kit's own errors: raised on purpose, each with a one-line message that names the argument,
file or tensor at fault and says how to fix it.

Every folder raises these, so this module imports nothing of the kit. :class:`InputError` is a
``ValueError`` (and the errors about files, ``ConfigError``, ``TokenizerError``, ``WeightsError``,
derive from it), so code that catches ``ValueError`` catches them all; the ``minillm`` command
prints a :class:`MinillmError` as its one-line message, and lets any other exception (a bug, in
the kit or below it) show its traceback.
"""

from __future__ import annotations


class MinillmError(Exception):
    """An error the kit raised on purpose; its message is meant for the person who called it."""


class InputError(MinillmError, ValueError):
    """An argument, text or file the kit cannot use: an empty text, a number out of range, a file of
    the wrong kind. The message names the parameter as the library calls it (``max_new_tokens``),
    which the ``minillm`` command says again as its flag (``--max-new-tokens``)."""
