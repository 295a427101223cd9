"""What the transformers-shaped face does not do, said in one place and in one way.

A notebook that asks for something minillm does not compute (beam search, attention weights
handed back by the forward pass, a repetition penalty) must fail at once with a message that
names the argument and the kit's own way to get there, never run on silently with the argument
ignored. Arguments that change nothing in what the kit computes (``use_cache=True``,
``attn_implementation="eager"``) are accepted and ignored.
"""

from __future__ import annotations

from typing import Any


class NotInKit(NotImplementedError):
    """A transformers argument or method that minillm.compat does not support."""


def refuse(where: str, kwargs: dict[str, Any], refusals: dict[str, str], ignored: tuple[str, ...] = ()) -> None:
    """Raise :class:`NotInKit` for the first argument of ``kwargs`` that ``where`` cannot honour.

    ``refusals`` maps an argument name to the kit's way of doing it; an argument whose value is
    None or False asks for nothing and passes (callers drop other do-nothing values, such as
    ``num_beams=1``, before calling). ``ignored``:
    arguments accepted and dropped (they do not change the numbers). Any other name is refused
    as unknown, as transformers refuses model kwargs it does not use.
    """
    for name, value in kwargs.items():
        if name in ignored or value is None or value is False:
            continue
        if name in refusals:
            raise NotInKit(f"{where}: {name}={value!r} is not supported by minillm.compat. {refusals[name]}")
        raise NotInKit(f"{where}: unknown argument {name}={value!r} (minillm.compat covers the part of "
                       f"transformers that course notebooks use; see the README's 'Coming from transformers').")
