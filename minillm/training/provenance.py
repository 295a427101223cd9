"""What a model was trained on, and whether the texts we score were among it.

A model scores text it has seen in training far better than new text: that measures
memorisation, not how well it predicts language. So a checkpoint folder may carry a
*training record*, ``training_data.json``, next to its weights:

.. code-block:: json

    {"description": "20,000 synthetic stories ... plus bundled stories 0-47, each 40 times",
     "sha256": ["3f1c...", ...]}

``sha256`` lists the SHA-256 of every training document the record can name (UTF-8, leading
and trailing whitespace stripped), so that any text can be checked against it without
shipping the training data; ``paragraph_sha256`` those of the paragraphs (blocks between blank
lines) of the documents that have several. A text counts as seen in training when it, or one
of its paragraphs (of 5 words or more), is a recorded document or paragraph: so a file of stories
is checked right whether a command splits it into whole stories or into paragraphs. Documents the record cannot
list (e.g. thousands of generated stories) are described in ``description``. A record may also
name the texts kept out of training on purpose for evaluation (``held_out``: a description and
their SHA-256). The kit's own family (``data/models``) ships such records; for hub models there
is none, and a check answers "unknown".
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from minillm.data import TextSource
from minillm.errors import InputError

RECORD_FILE = "training_data.json"
# A paragraph this short ("The end.", "Lily smiled.") recurs in texts that have nothing else in common:
# that a text holds one says nothing of whether the model saw the text.
MIN_PARAGRAPH_WORDS = 5


def text_hash(text: str) -> str:
    """SHA-256 (hex) of ``text`` with leading and trailing whitespace stripped, as UTF-8."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


def paragraphs(text: str) -> list[str]:
    """The paragraphs of ``text``: its blocks between blank lines, stripped, empty ones dropped
    (the split :func:`minillm.data.read_text_file` makes of a plain text file)."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


@dataclass
class TrainingRecord:
    """A model's training record: a description and the hashes of the documents it names."""

    path: Path
    description: str
    hashes: frozenset[str]                            # the training documents
    paragraph_hashes: frozenset[str] = frozenset()    # the paragraphs of those with several
    held_out: frozenset[str] = frozenset()            # texts kept out of training for evaluation

    def seen(self, texts: list[str]) -> list[bool]:
        """For each text, whether it is a recorded training document or a paragraph of one, or holds
        such a paragraph of at least MIN_PARAGRAPH_WORDS words."""
        known = self.hashes | self.paragraph_hashes
        return [text_hash(t) in known or any(text_hash(p) in known for p in paragraphs(t)
                                             if len(p.split()) >= MIN_PARAGRAPH_WORDS) for t in texts]


@dataclass
class HeldOut:
    """Texts kept out of a model's training on purpose, to evaluate it on: what they are, and the texts."""

    description: str
    texts: list[str]


def write_record(folder: str | Path, documents: list[str], description: str,
                 base: TrainingRecord | None = None, held_out: HeldOut | None = None) -> Path:
    """Write ``folder/training_data.json`` naming ``documents`` (deduplicated), their paragraphs and
    ``description``; ``base``: the record of the model the run started from, whose documents it names
    too; ``held_out``: the evaluation texts it never trained on.

    Raises ValueError when a held-out text is among the documents (then it is not held out)."""
    path = Path(folder) / RECORD_FILE
    documents_before = base.hashes if base else frozenset()
    paragraphs_before = base.paragraph_hashes if base else frozenset()
    record = {"description": description, "sha256": sorted({text_hash(d) for d in documents} | documents_before),
              "paragraph_sha256": sorted({text_hash(p) for d in documents for p in paragraphs(d) if p != d.strip()}
                                         | paragraphs_before)}
    if held_out is not None:
        trained = TrainingRecord(path, description, frozenset(record["sha256"]),
                                 frozenset(record["paragraph_sha256"]))
        if any(trained.seen(held_out.texts)):
            raise InputError(f"{sum(trained.seen(held_out.texts))} of the held-out texts ({held_out.description}) "
                             "are among the training documents: they would not be held out.")
        record["held_out"] = {"description": held_out.description,
                              "sha256": sorted({text_hash(t) for t in held_out.texts})}
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
    return write_record(folder, documents, description + ".", base_record)


def read_record(source: str | Path) -> TrainingRecord | None:
    """The training record of a local checkpoint folder; None when there is none (hub ids too).

    Raises ValueError naming the file when it exists but is not a valid record.
    """
    path = Path(source) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return TrainingRecord(path, str(raw["description"]), frozenset(raw["sha256"]),
                              frozenset(raw.get("paragraph_sha256", ())),
                              frozenset(raw.get("held_out", {}).get("sha256", ())))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path} is not a valid training record (a JSON object with 'description' and "
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
        raise InputError(f"every one of the {len(source)} texts ({source.label}) was in a model's training data: "
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
