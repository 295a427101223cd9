"""A pytest plugin the kit installs (pyproject.toml's ``pytest11`` entry point): a one-line answer,
instead of pytest's bare "unrecognized arguments: --target", where the autograder's ``--target``
cannot be read.

``pytest --target PATH`` with a space, in the clone, for a PATH outside it: pytest reads the
command line once before it knows any conftest's options, takes ``PATH`` for the tests to run, and
from that path alone decides its root folder and which conftest.py files to load first, so the
clone's pyproject.toml and root conftest.py (which declares ``--target``) are never read. An
installed plugin is the only code pytest runs before it decides; but the decision is already made
when it is loaded, so the space form cannot be made to work from here, and the plugin says how to
write it (``--target=PATH``). Started outside a clone, ``--target`` is unknown whatever its form:
the plugin names the clone to run pytest in.

It speaks only where pytest would otherwise stop on an unknown ``--target`` (so runs of other
projects are left alone), declares no option, and imports nothing of minillm (no torch at startup).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

OPTIONS = Path("tests") / "autograder" / "grader_options.py"   # declares --target (tests/autograder)


def _clone_of(folder: Path) -> Path | None:
    """The clone of the kit that holds ``folder`` (its own folder or one above), or None."""
    for candidate in (folder, *folder.parents):
        if (candidate / OPTIONS).is_file() and (candidate / "pyproject.toml").is_file():
            return candidate
    return None


def _installed_clone() -> Path | None:
    """The clone the installed minillm comes from (an editable install), found without importing it."""
    spec = importlib.util.find_spec("minillm")
    if spec is None or not spec.origin:
        return None
    return _clone_of(Path(spec.origin).resolve().parent)


def target_hint(args: list[str], unknown: list[str], invocation_dir: Path) -> str | None:
    """What to tell a user whose ``--target`` pytest cannot read (``unknown``: the arguments it does
    not know after loading the first conftest files), or None where there is no such ``--target``."""
    spaced = "--target" in unknown
    if not spaced and not any(a.startswith("--target=") for a in unknown):
        return None
    if spaced:
        index = args.index("--target")
        value = args[index + 1] if index + 1 < len(args) else "PATH"
    else:
        value = next(a for a in unknown if a.startswith("--target=")).split("=", 1)[1]
    clone = _clone_of(invocation_dir)
    if clone is not None:
        return (f"--target {value}: write --target={value} (with '='). With a space, pytest takes {value} for the "
                f"tests to run before it knows the option, and never reads {clone}'s conftest.py, which declares it.")
    clone = _installed_clone()
    value = str((invocation_dir / value).resolve()) if value != "PATH" else value   # said from another folder
    where = f"cd {clone} && " if clone is not None else "cd to your clone of minillm, then "
    return (f"--target: the autograder's options are known only to pytest started in the kit's clone "
            f"({invocation_dir} is not in one): {where}pytest --target={value}")


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]):
    """After pytest loaded the first conftest files (and with them any declaration of ``--target``),
    and before it reads the whole command line, where it would stop on an unknown ``--target``."""
    result = yield
    _, unknown = parser.parse_known_and_unknown_args(args)
    hint = target_hint(args, unknown, early_config.invocation_params.dir)
    if hint is not None:
        raise pytest.UsageError(hint)
    return result
