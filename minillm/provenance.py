"""What a model was trained on, and whether the texts we score were among it.

A model scores text it has seen in training far better than new text: that measures
memorisation, not how well it predicts language. So a checkpoint folder may carry a
*training record*, ``training_data.json``, next to its weights:

.. code-block:: json

    {"description": "20,000 synthetic stories ... plus bundled stories 0-47, each 40 times",
     "sha256": ["3f1c...", ...]}

``sha256`` lists the SHA-256 of every training document the record can name (UTF-8, leading
and trailing whitespace stripped), so that any text can be checked against it without
shipping the training data. Documents it cannot list (e.g. thousands of generated stories)
are described in ``description``. The kit's own family (``data/models``) ships such records;
for hub models there is none, and a check answers "unknown".
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .data import TextSource

RECORD_FILE = "training_data.json"


def text_hash(text: str) -> str:
    """SHA-256 (hex) of ``text`` with leading and trailing whitespace stripped, as UTF-8."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


@dataclass
class TrainingRecord:
    """A model's training record: a description and the hashes of the documents it names."""

    path: Path
    description: str
    hashes: frozenset[str]

    def seen(self, texts: list[str]) -> list[bool]:
        """For each text, whether it is one of the recorded training documents."""
        return [text_hash(t) in self.hashes for t in texts]


def write_record(folder: str | Path, documents: list[str], description: str) -> Path:
    """Write ``folder/training_data.json`` naming ``documents`` (deduplicated) and ``description``."""
    path = Path(folder) / RECORD_FILE
    record = {"description": description, "sha256": sorted({text_hash(d) for d in documents})}
    path.write_text(json.dumps(record, indent=0) + "\n", encoding="utf-8")
    return path


def read_record(source: str | Path) -> TrainingRecord | None:
    """The training record of a local checkpoint folder; None when there is none (hub ids too).

    Raises ValueError naming the file when it exists but is not a valid record.
    """
    path = Path(source) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return TrainingRecord(path, str(raw["description"]), frozenset(raw["sha256"]))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a valid training record (a JSON object with 'description' and "
                         f"'sha256', a list of hex digests): {err}") from err


def seen_in_training(source: str | Path, texts: list[str]) -> list[str]:
    """Per text: "yes" (the model trained on it), "no", or "unknown" (no training record)."""
    record = read_record(source)
    if record is None:
        return ["unknown"] * len(texts)
    return ["yes" if s else "no" for s in record.seen(texts)]


def overlap_warning(source: str | Path, texts: list[str]) -> str | None:
    """A sentence for the user when some ``texts`` were in the model's training data, else None."""
    record = read_record(source)
    if record is None:
        return None
    n = sum(record.seen(texts))
    if not n:
        return None
    return (f"WARNING: {n} of the {len(texts)} texts were in the training data of {source} "
            f"({record.path}): its scores on them measure memorisation, not prediction of new text.")


def without_training_texts(models: list[str], source: TextSource) -> tuple[TextSource, str | None]:
    """``source`` without the texts any of ``models`` trained on (by their training records), and a
    sentence saying what was left out (None when nothing was).

    Raises ValueError when every text was seen in training."""
    seen = [False] * len(source)
    who = []
    for model in models:
        record = read_record(model)
        if record is None:
            continue
        hits = record.seen(source.texts)
        if any(hits):
            who.append(f"{Path(model).name} ({sum(hits)} of them; {record.path.parent.name}/{RECORD_FILE})")
        seen = [a or b for a, b in zip(seen, hits)]
    if not any(seen):
        return source, None
    keep = [i for i, s in enumerate(seen) if not s]
    if not keep:
        raise ValueError(f"every one of the {len(source)} texts ({source.label}) was in a model's training data: "
                         f"{', '.join(who)}. Score other texts (--category, --texts FILE), or pass --include-seen "
                         "to measure memorisation on purpose.")
    message = (f"Left out {len(source) - len(keep)} of the {len(source)} texts, trained on by {', '.join(who)}: "
               "a model's perplexity on its own training text measures memorisation. Pass --include-seen to "
               "score them anyway.")
    label = re.sub(r"^\d+ ", "", source.label)
    never = f"that {Path(models[0]).name} never trained on" if len(models) == 1 else "that no model here trained on"
    return source.select(keep, f"{len(keep)} {label} {never}"), message
