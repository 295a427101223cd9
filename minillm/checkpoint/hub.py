"""Turn a model *source* into a local folder of files.

A source is either a local folder (``./my-model``) or a Hugging Face hub repo id
(``Qwen/Qwen2.5-0.5B``). Hub ids go through ``huggingface_hub``: it downloads only
the files minillm reads, keeps them in its cache (``HF_HUB_CACHE``), and honours
offline mode (``HF_HUB_OFFLINE=1``), in which it uses the cache alone.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from minillm.errors import MinillmError

# The only files minillm ever reads from a checkpoint. Pickle weight files
# (pytorch_model.bin) are deliberately absent: they are never downloaded or loaded.
CHECKPOINT_FILES = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "vocab.json",           # with merges.txt: the older byte-level BPE layout (GPT-2)
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",  # where transformers >= 4.47 saves the chat template
    "additional_chat_templates/*.jinja",
]


class SourceError(MinillmError, RuntimeError):
    """A model source could not be turned into a local folder."""


def display_name(source: str | os.PathLike) -> str:
    """A model's short name, the one tables, figures and messages show: the last part of its source.

    'Qwen/Qwen2.5-0.5B' -> 'Qwen2.5-0.5B'; a folder path -> its last part ('runs/tiny-m/' -> 'tiny-m').
    Where two models of one table share a short name, the table shows their full sources
    (:func:`minillm.experiments.scaling.model_labels`)."""
    return Path(str(source).rstrip("/")).name or str(source)


def offline() -> bool:
    """Whether hub downloads are off: HF_HUB_OFFLINE set now, or when huggingface_hub was imported."""
    import huggingface_hub

    now = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return now or bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def is_cached(repo_id: str) -> bool:
    """Whether the Hugging Face cache already holds ``repo_id``'s config.json (no network)."""
    import huggingface_hub

    return isinstance(huggingface_hub.try_to_load_from_cache(repo_id, "config.json"), str)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether downloads are on and the hub's host answers within ``timeout`` seconds."""
    import socket
    from urllib.parse import urlparse

    import huggingface_hub

    if offline():
        return False
    host = urlparse(huggingface_hub.constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _looks_like_repo_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def resolve_source(source: str | os.PathLike) -> Path:
    """Return the local folder that holds the checkpoint files of ``source``.

    ``source`` is a path to a folder, or a hub repo id such as ``"Qwen/Qwen2.5-0.5B"``
    (optionally ``"org/name@revision"``). Raises :class:`SourceError` with a message
    that says what to do when the source cannot be found.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise SourceError(
            f"{path} is a file, but a model source must be a folder (holding config.json, "
            "*.safetensors and tokenizer files) or a hub repo id such as 'Qwen/Qwen2.5-0.5B'."
        )
    if path.is_symlink():     # a link to nothing: exists() is False for it, but it is surely meant as a path
        raise SourceError(f"{path} is a symbolic link to {os.readlink(path)!r}, which {_why_broken(path)}. Point "
                          "it at the model folder (holding config.json, *.safetensors and tokenizer files).")
    text = str(source)
    first = Path(text).parts[0] if Path(text).parts else ""
    if text.startswith(("./", "../", "/", "~")) or (len(Path(text).parts) > 1 and Path(first).is_dir()):
        # A path, not a hub id: its first folder is here (models/tiny-x with a models/ folder).
        raise SourceError(
            f"no such folder: {text!r} ({os.path.abspath(path)} does not exist). Check the path; a model "
            "folder holds config.json, *.safetensors and tokenizer files."
        )
    if not _looks_like_repo_id(text.split("@")[0]):
        raise SourceError(
            f"model source {text!r} is neither an existing folder nor a hub repo id "
            "of the form 'org/name' (for example 'Qwen/Qwen2.5-0.5B'). Check the path."
        )
    return _download(text)


def _why_broken(link: Path) -> str:
    """Why the symbolic link ``link`` leads nowhere: a loop of links, or a target that does not exist."""
    try:
        link.resolve(strict=True)
    except RuntimeError:        # Python < 3.13 reports a loop this way
        return "leads back to itself (a loop of symbolic links)"
    except OSError as err:
        return ("leads back to itself (a loop of symbolic links)" if err.errno == errno.ELOOP
                else "does not exist")
    return "cannot be read"


def _download(source: str) -> Path:
    # Imported here so that plain local use never touches the network stack.
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, _, revision = source.partition("@")
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision or None, allow_patterns=CHECKPOINT_FILES, local_files_only=offline()
        )
    except RepositoryNotFoundError as err:
        raise SourceError(
            f"the hub has no repository {repo_id!r} (or it is private). Check the spelling, "
            "or log in with `hf auth login` for a gated model."
        ) from err
    except LocalEntryNotFoundError as err:
        why = "offline mode is on (HF_HUB_OFFLINE)" if offline() else "the hub cannot be reached"
        raise SourceError(
            f"cannot load {repo_id!r}: there is no folder {repo_id!r} here, so it was taken as a hub id, but "
            f"{why} and it is not in the Hugging Face cache "
            f"({huggingface_hub.constants.HF_HUB_CACHE}). Download it once on a machine with "
            f"network (`hf download {repo_id}`) and copy the cache, or pass the "
            "path of a local folder that holds config.json and the *.safetensors files."
        ) from err
    return Path(folder)
