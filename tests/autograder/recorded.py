"""What a test graded apart does to the student's side, recorded by the plan and done again by the probe.

A probe run does not run a test's body (apart.py), so what the body does to the student's side goes
through these, which a plan run records with the test's calls:

* ``forbid(*paths)``: library functions that ARE the exercise's answer raise while the test runs;
* ``lend(unit, helper, version)``: the student's module finds the grader's version of a graded function
  that the function under test builds on (one mistake costs one objective);
* ``student.constant(unit, NAME, default)``: a module-level constant of the student's file (the name of
  the file its checkpoint writes the optimizer into), which the probe reads and records as data.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from grading import GradingError, block

FORBIDDEN: dict[tuple[str, str], list] = {}   # (unit, test name) -> the library functions it forbids
LENT: dict[tuple[str, str], list] = {}        # (unit, test name) -> [[graded function, the test module's name
                                              #   of the grader's version lent in its place]]
CONSTANTS: dict[tuple[str, str], list] = {}   # (unit, test name) -> the student module's constants it reads


def lend_to(mode: str, student: Any, item: pytest.Item, unit: str, patch: pytest.MonkeyPatch, helper: str,
            version: Callable) -> None:
    """For this test, the student's module finds ``version`` (the grader's own) under the name
    ``helper``, a graded function that the function under test builds on: one mistake costs one
    objective. A plan run records it by the test module's name for ``version`` (a probe lends it
    there before the calls); a judge run has no student module and does nothing."""
    if mode == "judge":
        return
    if mode == "plan":
        names = [n for n, v in vars(item.module).items() if v is version]
        if not names:
            raise GradingError(f"autograder error: lend({helper!r}, ...) needs a grader version that the test "
                               "module defines or binds at module level (a probe finds it there by name)")
        LENT.setdefault((unit, item.name), []).append([helper, names[0]])
    patch.setattr(student(unit), helper, version, raising=False)


def forbid_fixture(mode: Callable[[], str], unit_of: Callable[[pytest.Item], str | None]) -> Callable:
    """The ``forbid`` fixture (the conftest binds it, with how to read the run's mode and a test's unit)."""
    @pytest.fixture
    def forbid(monkeypatch, request) -> Callable[..., None]:
        """``forbid("minillm.inference.scoring.perplexity", ...)``: for this test, calling one of these fails the
        test with a message. Use it for the library functions that ARE the exercise's answer. Get the
        reference values from names bound at import time of the test module (``from minillm.inference.scoring
        import perplexity as ref_perplexity``): patching a module attribute leaves those untouched.
        Call it before the first ``student(...)`` so that ``from minillm import x`` in the student's
        file binds the forbidden stand-in too. (A plan run records them: a probe run, which skips the
        test's body, forbids them before the student's file loads.)"""
        def do_forbid(*paths: str) -> None:
            block(monkeypatch, *paths)
            if mode() == "plan":
                FORBIDDEN.setdefault((unit_of(request.node) or "?", request.node.name), []).extend(paths)
        return do_forbid
    return forbid


def lend_fixture(mode: Callable[[], str]) -> Callable:
    """The ``lend`` fixture (the conftest binds it, with how to read the run's mode)."""
    @pytest.fixture
    def lend(monkeypatch, request, student) -> Callable[[str, str, Callable], None]:
        """``lend("sampling", "softmax_with_temperature", _grader_softmax)``: for this test the student's
        module finds the grader's version (a module-level name of the test file) in place of a graded
        function that the function under test builds on, so that one mistake costs one objective."""
        def do_lend(unit: str, helper: str, version: Callable) -> None:
            lend_to(mode(), student, request.node, unit, monkeypatch, helper, version)
        return do_lend
    return lend
