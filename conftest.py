"""pytest at the repository root: makes the autograder's options known before pytest reads them.

``pytest --grader-seed 1234`` and ``pytest --target PATH`` (see the README) need the options of
tests/autograder, but pytest parses the command line before it loads that folder's conftest.py;
this file, found first, declares them (tests/autograder/grader_options.py says more).
"""

import importlib.util
from pathlib import Path

_OPTIONS = Path(__file__).resolve().parent / "tests" / "autograder" / "grader_options.py"
_spec = importlib.util.spec_from_file_location("minillm_autograder_options", _OPTIONS)
_options = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_options)


def pytest_addoption(parser) -> None:
    _options.add_grader_options(parser)
