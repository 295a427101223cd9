"""Where ``from_pretrained`` finds its files: the kit's own hub code (``minillm.checkpoint.hub``)."""

from __future__ import annotations

import os
from pathlib import Path

from minillm.checkpoint.hub import resolve_source


def resolve(source: str | os.PathLike, revision: str | None = None) -> Path:
    """The local folder of ``source`` (a folder, or a hub id downloaded or found in the cache);
    ``revision`` (a branch, tag or commit of a hub id) becomes the kit's ``"org/name@revision"``.
    Raises ValueError for a revision of a local folder."""
    if revision is None or revision == "main" and Path(source).expanduser().is_dir():
        return resolve_source(source)
    if Path(source).expanduser().is_dir():
        raise ValueError(f"revision={revision!r} applies to hub ids; {source} is a local folder, already one version.")
    return resolve_source(f"{source}@{revision}")
