"""The class grader on Gradescope: the autograder zip, and what it runs for each submission.

    minillm gradescope-bundle --out autograder.zip [--units logits,perplexity] [--time-limit-scale F]

:func:`build_bundle` writes the zip Gradescope asks for ("Configure Autograder" > "Zip file
upload"). Gradescope unzips it into ``/autograder/source`` of an Ubuntu image, runs ``setup.sh``
there once, then, for every submission, ``run_autograder`` with the student's upload in
``/autograder/submission``; whatever ``/autograder/results/results.json`` holds afterwards is the
grade. The zip holds:

* ``setup.sh``: installs Python, CPU PyTorch as the README installs it, and the kit from the zip;
* ``run_autograder``: ``python -m minillm.course.gradescope`` with the bundle's units and limits;
* the kit's source (``pyproject.toml``, ``README.md``, ``pytest_minillm.py``, ``minillm/``), the grader
  (``tests/autograder/`` for the chosen units, without the mistakes catalogue) and the data its
  fixtures read (``data/texts``, ``data/models/tiny-s``; tiny-m and tiny-l for the scaling unit).
  Not the reference: no ``solutions/``, no exercises, no mistakes (each is the reference with one
  bug), since the student's code runs in the same container. The grader computes its expected
  values from the kit's library, as it always does.

:func:`run_autograder` finds the unit files in the upload (Gradescope keeps whatever names and
folders the student gave: ``Copy of logits.ipynb``, ``hw/perplexity.py``), gives them the names
the grader reads (``<unit>.py``, ``<unit>.ipynb``), grades them with
:func:`minillm.course.grade.grade_submission` (each unit in its own run, stopped after
``timeout`` seconds) and writes results.json: every graded test with its points and message, a
unit that crashed or ran out of time with 0 of its points and that said at the top. The layout's
root is ``$AUTOGRADER_ROOT`` (default ``/autograder``), so it runs outside Gradescope too.

Sandbox: ``auto``. Gradescope runs each submission in a container of its own, with nothing of the
other students and no reference in it; bubblewrap rarely starts inside a Docker container, so the
units run as processes of their own (``minillm.course.isolation``). What that leaves open: the
student's code runs as the container's user and could change the grader's files for the units
graded after its own in the same submission (README, "Grading on Gradescope").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from minillm.course import isolation
from minillm.course.family import SHAPES
from minillm.course.feedback import UNITS
from minillm.course.grade import GradeError, find_autograder, grade_submission

DEFAULT_ROOT = "/autograder"           # Gradescope's layout; $AUTOGRADER_ROOT replaces it
TRAINED_MODEL = "tiny-s"               # the grader's trained_model fixture (tests/autograder/conftest.py)
SCALING_UNIT = "scaling"               # grades on the whole family: tiny-s, tiny-m, tiny-l
SKIPPED_FOLDERS = ("__pycache__", "__MACOSX", ".ipynb_checkpoints", ".git", ".github")
TORCH_INSTALL = "pip install torch==2.13.0"
KIT_INSTALL = "pip install -e /autograder/source"


def check_units(units: str | Sequence[str] | None) -> list[str]:
    """The units named in ``units`` ("logits,perplexity" or a list), in the course's order;
    every unit for None. Raises GradeError naming an unknown unit."""
    if units is None:
        return list(UNITS)
    names = [u.strip() for part in ([units] if isinstance(units, str) else units) for u in part.split(",")]
    names = [u for u in names if u]
    unknown = [u for u in names if u not in UNITS]
    if unknown or not names:
        raise GradeError(f"units {unknown or names!r}: choose among {', '.join(UNITS)} (comma-separated).")
    return [u for u in UNITS if u in names]


# --------------------------------------------------------------------------------------------
# The zip
# --------------------------------------------------------------------------------------------

def kit_root() -> Path:
    """The folder that holds the kit's pyproject.toml, minillm/ and tests/autograder (a clone
    installed with ``pip install -e .``). Raises GradeError when the package is not in one."""
    import minillm

    root = Path(minillm.__file__).resolve().parents[1]
    find_autograder(root / "tests" / "autograder")   # a clear error when it is not a clone
    for name in ("pyproject.toml", "README.md", "data/texts"):
        if not (root / name).exists():
            raise GradeError(f"{root / name} is missing: build the bundle from a clone of the kit "
                             "(pip install -e .), which holds it.")
    return root


def bundle_files(kit: Path, units: Sequence[str]) -> list[tuple[Path, str]]:
    """(file, name in the zip) of everything the grader needs for ``units``, in a fixed order."""
    def tree(folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".pyc")
                      and not any(part in SKIPPED_FOLDERS for part in p.relative_to(kit).parts))

    autograder = kit / "tests" / "autograder"
    files = [kit / "pyproject.toml", kit / "README.md"]
    # The root conftest.py; pytest_minillm.py, the pytest plugin pyproject.toml installs (its py-modules).
    files += [kit / name for name in ("conftest.py", "pytest_minillm.py") if (kit / name).is_file()]
    files += tree(kit / "minillm")
    # The grader's own modules and the chosen units' tests; not mistakes/ (the reference, one bug each).
    files += sorted(p for p in autograder.glob("*.py") if not p.name.startswith("test_grade_"))
    files += [autograder / f"test_grade_{u}.py" for u in units]
    files += tree(kit / "data" / "texts")
    models = kit / "data" / "models"
    files += [p for p in (models / "README.md",) if p.is_file()]
    for model in (SHAPES if SCALING_UNIT in units else [TRAINED_MODEL]):
        files += tree(models / model)
    return [(p, p.relative_to(kit).as_posix()) for p in files]


def setup_script() -> str:
    """setup.sh: what Gradescope runs once, as root, to build the autograder's image."""
    return f"""#!/usr/bin/env bash
# Gradescope runs this once, as root, in /autograder/source (this zip, unzipped) when it builds
# the autograder's image. Choose an Ubuntu base image whose python3 the kit supports (3.10+).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-pip python3-venv
python3 -m venv /autograder/venv     # the grader's own Python; run_autograder uses it
. /autograder/venv/bin/activate
python -m pip install --upgrade pip
# CPU PyTorch, spelled exactly as the kit's README and CI install it: this pinned version, from
# the default index, is the build whose numbers the grader's tolerances were checked against,
# and the README's spelling is the one documented to take the CPU build (no GPU on Gradescope).
{TORCH_INSTALL}
# The kit and its grader from this zip. Editable, as the README installs it: the library reads
# data/ beside its package, and the grader is tests/autograder beside it.
{KIT_INSTALL}
python -c "import minillm, torch; print('minillm', minillm.__file__, 'torch', torch.__version__)"
"""


def run_script(units: Sequence[str], time_limit_scale: float, timeout: float) -> str:
    """run_autograder: what Gradescope runs for every submission."""
    return f"""#!/usr/bin/env bash
# Gradescope runs this for every submission: it grades /autograder/submission with the kit's
# grader and writes /autograder/results/results.json. $AUTOGRADER_ROOT replaces /autograder
# (to try it elsewhere); $PYTHON names the Python when setup.sh's /autograder/venv is not there.
set -uo pipefail
ROOT="${{AUTOGRADER_ROOT:-{DEFAULT_ROOT}}}"
if [ -x "$ROOT/venv/bin/python" ]; then PYTHON="$ROOT/venv/bin/python"; else PYTHON="${{PYTHON:-python3}}"; fi
cd "$ROOT"
exec "$PYTHON" -m minillm.course.gradescope --root "$ROOT" --units {','.join(units)} \\
    --time-limit-scale {float(time_limit_scale)!r} --timeout {float(timeout)!r}
"""


def build_bundle(out: str | Path, units: str | Sequence[str] | None = None, time_limit_scale: float = 1.0,
                 timeout: float = 300.0) -> Path:
    """Write Gradescope's autograder zip to ``out`` (see the module doc); return its path.

    ``units``: the units this assignment grades (default: all). ``time_limit_scale``: every
    test's time limit is multiplied by it (Gradescope's default machine is slower than a laptop).
    ``timeout``: seconds one unit's run may take; set Gradescope's own limit above
    ``len(units) * timeout``. Raises GradeError for an unknown unit, a bad number, or a kit that
    is not a clone."""
    units = check_units(units)
    for name, value in (("time_limit_scale", time_limit_scale), ("timeout", timeout)):
        if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
            raise GradeError(f"{name}={value!r}: give a positive number.")
    out = Path(out)
    if out.suffix != ".zip":
        raise GradeError(f"--out {out}: Gradescope takes a .zip file; name it e.g. autograder.zip.")
    kit = kit_root()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("setup.sh", setup_script()), ("run_autograder", run_script(units, time_limit_scale,
                                                                                       timeout))):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o755) << 16   # executable once unzipped
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
        for path, name in bundle_files(kit, units):
            zf.write(path, name)
    partial.replace(out)
    return out


# --------------------------------------------------------------------------------------------
# Which files of an upload are the units
# --------------------------------------------------------------------------------------------

def _unit_named(path: Path) -> str | None:
    """The unit a file's name says it is: its name, or the one unit its name contains, as the
    grader reads a single file ("Copy of logits.ipynb" is logits; "logits_perplexity.py" is none)."""
    stem = path.stem.lower()
    if stem in UNITS:
        return stem
    named = [u for u in UNITS if u in stem]
    return named[0] if len(named) == 1 else None


def find_unit_files(folder: str | Path, units: Sequence[str]) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """The files of ``folder`` (any depth) to grade as each unit: ({"logits.py": path, ...},
    {unit: [notes for the student]}).

    For each unit and each kind (.py, .ipynb): a file named exactly ``<unit>.py`` wins, else one
    whose name contains the unit's name and no other unit's; among several, the shallowest, then
    the first by path (a note names those left out). Hidden folders, ``__MACOSX``, notebook
    checkpoints and links are skipped. When a unit has both kinds, both are kept, and the grader
    takes the one with fewer unfilled functions (README, "Which file is graded")."""
    folder = Path(folder)
    found: dict[tuple[str, str], list[tuple[bool, Path]]] = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_FOLDERS)
        for name in files:
            path = Path(root) / name
            unit = _unit_named(path)
            if path.suffix in (".py", ".ipynb") and unit in units and not path.is_symlink() and path.is_file():
                found.setdefault((unit, path.suffix), []).append((path.stem != unit, path))
    chosen: dict[str, Path] = {}
    notes: dict[str, list[str]] = {}
    for (unit, suffix), candidates in sorted(found.items()):
        candidates.sort(key=lambda c: (c[0], len(c[1].relative_to(folder).parts), str(c[1])))
        path = candidates[0][1]
        chosen[unit + suffix] = path
        rel = path.relative_to(folder).as_posix()
        if rel != unit + suffix:
            notes.setdefault(unit, []).append(f"graded {rel!r} as {unit}{suffix}")
        if len(candidates) > 1:
            others = ", ".join(repr(c[1].relative_to(folder).as_posix()) for c in candidates[1:])
            notes.setdefault(unit, []).append(f"not graded (one {suffix} file per unit): {others}")
    return chosen, notes


def stage_submission(folder: str | Path, dest: str | Path, units: Sequence[str]) -> dict[str, list[str]]:
    """Copy the unit files of ``folder`` into the empty folder ``dest`` under the names the
    grader reads; return the notes of :func:`find_unit_files`."""
    chosen, notes = find_unit_files(folder, units)
    for name, path in chosen.items():
        shutil.copyfile(path, Path(dest) / name)
    return notes


# --------------------------------------------------------------------------------------------
# One submission
# --------------------------------------------------------------------------------------------

def gradescope_results(graded: dict, file_notes: dict[str, list[str]]) -> dict:
    """The results.json Gradescope shows from a :func:`grade_submission` result: its merged
    results, with what happened to the files and any unit that crashed or timed out said first."""
    results = dict(graded["results"])
    problems = results["extra_data"].get("problems") or {}
    # A test that did not run (its unit's run crashed or was stopped) says why, on its own line in Gradescope.
    results["tests"] = [dict(t, output=f"not run: {'; '.join(problems[t['extra_data']['unit']])}")
                        if t.get("output") == "not run" and problems.get(t["extra_data"]["unit"]) else t
                        for t in results["tests"]]
    head = []
    if graded["status"] != "ok":
        head.append(f"Grading status: {graded['status']} (a unit that did not finish scores 0 of its points).")
    if graded["message"]:
        head.append("Problems: " + graded["message"])
    for unit, texts in file_notes.items():
        head += [f"{unit}: {text}" for text in texts]
        results["extra_data"].setdefault("notes", {}).setdefault(unit, []).extend(texts)
    results["output"] = "\n".join(head + ([""] if head else []) + [results.get("output", "")]).strip() + "\n"
    results["extra_data"]["status"] = graded["status"]
    return results


def run_autograder(root: str | Path | None = None, units: str | Sequence[str] | None = None,
                   time_limit_scale: float = 1.0, timeout: float = 300.0) -> dict:
    """Grade ``root/submission`` with the grader in ``root/source`` and write
    ``root/results/results.json``; return what it holds.

    ``root``: the Gradescope layout (default ``$AUTOGRADER_ROOT``, else ``/autograder``)."""
    root = Path(root if root is not None else os.environ.get("AUTOGRADER_ROOT", DEFAULT_ROOT))
    units = check_units(units)
    submission = root / "submission"
    if not submission.is_dir():
        raise GradeError(f"{submission} is not a folder: run_autograder expects Gradescope's layout under {root}.")
    autograder = find_autograder(root / "source" / "tests" / "autograder")
    mode, warning = isolation.choose_mode("auto")
    print(f"grading {submission} ({', '.join(units)}), sandbox: {mode}" + (f" ({warning})" if warning else ""),
          flush=True)
    with tempfile.TemporaryDirectory(prefix="minillm-gradescope-") as tmp:
        staged = Path(tmp) / "submission"
        staged.mkdir()
        notes = stage_submission(submission, staged, units)
        graded = grade_submission(staged, autograder, timeout=timeout, units=units,
                                  time_limit_scale=time_limit_scale, sandbox=mode)
    results = gradescope_results(graded, notes)
    results["extra_data"]["target"] = str(submission)
    out = root / "results" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}: {results['score']:g}/{results['max_score']:g} ({graded['status']}, "
          f"{graded['seconds']:.1f} s)", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m minillm.course.gradescope``: what the bundle's run_autograder calls."""
    parser = argparse.ArgumentParser(prog="python -m minillm.course.gradescope",
                                     description="grade a Gradescope submission with the kit's grader")
    parser.add_argument("--root", default=None, help="the layout's root (default $AUTOGRADER_ROOT or /autograder)")
    parser.add_argument("--units", default=None, help="comma-separated units (default: all)")
    parser.add_argument("--time-limit-scale", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one unit's run may take")
    args = parser.parse_args(argv)
    try:
        run_autograder(args.root, args.units, args.time_limit_scale, args.timeout)
    except GradeError as err:
        print(f"run_autograder: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
