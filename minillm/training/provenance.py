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

from minillm.data import TextSource

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


def write_record(folder: str | Path, documents: list[str], description: str,
                 hashes: frozenset[str] = frozenset()) -> Path:
    """Write ``folder/training_data.json`` naming ``documents`` (deduplicated) and ``description``;
    ``hashes``: further documents already hashed (those of a base model's record)."""
    path = Path(folder) / RECORD_FILE
    record = {"description": description, "sha256": sorted({text_hash(d) for d in documents} | hashes)}
    path.write_text(json.dumps(record, indent=0) + "\n", encoding="utf-8")
    return path


def write_run_record(folder: str | Path, documents: list[str], kind: str, base: str | Path | None = None) -> Path:
    """The training record of a ``minillm train`` / ``finetune`` run into ``folder``: the hashes of
    ``documents`` (the training documents; for fine-tuning every message and reply), plus those of
    ``base``'s record when the run started from a model. ``kind``: "text" or "chat".

    Without a record for ``base``, the description says that what it saw is unknown (its
    hashes cannot be listed); a check on texts then answers from this run's documents only."""
    what = "pretraining documents" if kind == "text" else "fine-tuning messages and replies"
    description = f"{len(documents)} {what} of a minillm run (their SHA-256 below)"
    base_record = read_record(base) if base is not None and Path(base).is_dir() else None
    if base is not None:
        description += f", starting from the weights of {base}: " + (
            f"{base_record.description}" if base_record else
            f"what it trained on is unknown (it has no {RECORD_FILE}), so texts outside this list may be seen too")
    return write_record(folder, documents, description + ".", base_record.hashes if base_record else frozenset())


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
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
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
    sentence saying what was left out, and for which models nobody can tell (no training record;
    None when there is nothing to say).

    A model without a record (a hub id, a folder trained elsewhere) may have seen any text: the
    label of what is kept then says "unknown" for it rather than calling the texts held out.

    Raises ValueError when every text was seen in training."""
    seen = [False] * len(source)
    who, unknown = [], []
    for model in models:
        record = read_record(model)
        if record is None:
            unknown.append(Path(model).name if Path(model).is_dir() else str(model))
            continue
        hits = record.seen(source.texts)
        if any(hits):
            who.append(f"{Path(model).name} ({sum(hits)} of them; {record.path.parent.name}/{RECORD_FILE})")
        seen = [a or b for a, b in zip(seen, hits)]
    caveat = (f"unknown for {', '.join(unknown)}: no {RECORD_FILE}" if unknown else "")
    note = (f"Whether {', '.join(unknown)} trained on these texts is unknown (no {RECORD_FILE}, the record that "
            "`minillm train` and `finetune` write): their scores may measure memorisation." if unknown else None)
    if not any(seen):
        if unknown and len(unknown) < len(models):
            return source.select(list(range(len(source))), f"{source.label} ({caveat})"), note
        return source, note
    keep = [i for i, s in enumerate(seen) if not s]
    if not keep:
        raise ValueError(f"every one of the {len(source)} texts ({source.label}) was in a model's training data: "
                         f"{', '.join(who)}. Score other texts (--category, --texts FILE), or pass --include-seen "
                         "to measure memorisation on purpose.")
    message = (f"Left out {len(source) - len(keep)} of the {len(source)} texts, trained on by {', '.join(who)}: "
               "a model's perplexity on its own training text measures memorisation. Pass --include-seen to "
               "score them anyway." + (f" {note}" if note else ""))
    label = re.sub(r"^\d+ ", "", source.label)
    if unknown:
        never = f"that no model with a {RECORD_FILE} trained on ({caveat})"
    else:
        never = f"that {Path(models[0]).name} never trained on" if len(models) == 1 else "that no model here trained on"
    return source.select(keep, f"{len(keep)} {label} {never}"), message
