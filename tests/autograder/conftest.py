"""The autograder: grades the student's modules or notebooks in exercises/ (or another folder) with pytest.

Students run ``pytest`` in the repository root (``testpaths`` points here) and get a table of
points per unit at the end. Instructors run::

    python -m pytest tests/autograder --target solutions -q -p no:cacheprovider   # the reference
    python -m pytest tests/autograder --target PATH --grade-json results.json   # one submission
    python -m pytest tests/autograder --target PATH/logits.ipynb                 # one unit's notebook
    minillm grade SUBMISSIONS_DIR --out grades.csv                               # a whole class

API for the test files ``test_grade_<unit>.py`` (see the README):

* ``pytestmark = pytest.mark.<unit>`` and ``OBJECTIVES = {"ID": "rubric objective", ...}``;
* ``@pytest.mark.graded(points=N, objective="ID", level="P" | "M" | "E")`` on each graded test;
* ``@pytest.mark.timeout_s(N)`` to change the per-test time limit (default 20 s);
* fixtures ``student`` (``student("unit")`` -> module, ``student.function("unit", "name")`` ->
  checked function, ``student.constant("unit", "NAME", default)``), ``grader_seed``, ``tiny_tokenizer``, ``tiny_model``, ``tiny_model_config``,
  ``story_texts``, ``record_number``, ``forbid`` (library functions the student may not call);
* ``from grading import expect_close, expect_shape``.

A unit's code is ``<unit>.py`` or ``<unit>.ipynb`` (submission.py says which wins when both are
there and what of a notebook runs). What goes wrong with a unit's file (missing, a syntax error,
an exception or a time-out while loading it, a notebook cell that does not parse, a graded
function that needs a notebook statement that failed) is listed under the points table and in the
JSON (``extra_data["problems"]``; ``extra_data["notes"]`` says which file was graded, what of a
notebook ran, and which statements failed without costing points). A file that failed to load is not loaded
again: the unit's other tests fail at once with the same message, so a file that hangs costs one
time limit, not one per test.

Student code runs in this process (``--grade-mode direct``, the default): guard.py's checks
(functions replaced, solutions/ opened, the results signed for ``minillm grade``) zero a unit that
reaches into the grader, and torch's global settings are reset before each test (the README's
"What the grader guarantees"). ``minillm grade`` grades the units of graded_apart.txt apart
(apart.py): modes ``plan``, ``probe`` (only the student's calls, in the sandbox) and ``judge`` (the
checks, in a process without student code), chosen by the ``student`` fixture and apart.Probe.
"""

from __future__ import annotations

import dataclasses
import dis
import functools
import importlib.util
import inspect
import json
import math
import os
import random
import signal
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import apart
import recorded
import pytest
import torch
from grader_options import add_grader_options
from grading import ForbiddenCall, GradingError
from guard import Watch, hide_reference, signer
from submission import NotebookError, constant_name, find_unit_file, read_notebook, tie_note

from minillm.course.feedback import missing_message

UNITS = ("logits", "perplexity", "quantization", "sampling", "architecture", "scaling", "training")
LEVELS = {"P": "core", "M": "merit", "E": "excellence"}
REPO = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT_S = 20.0
PRINT_LIMIT_CHARS = 10_000   # characters one test's student code may print
PRINT_LIMIT_CALLS = 500      # print() calls one test's student code may make
NOTE_CHARS = 240             # the longest error text quoted in a problem under the points table
TINY_VOCAB = 320
TINY_MODEL_SEED = 1234       # the tiny model's weights are fixed; texts and shapes vary with grader_seed

_HAS_ALARM = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")


# --------------------------------------------------------------------------------------------
# Options, markers, run state
# --------------------------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    add_grader_options(parser)   # unless the repository root's conftest.py already did


@dataclasses.dataclass
class TestResult:
    nodeid: str
    name: str
    unit: str
    objective: str
    level: str
    points: int
    passed: bool = False
    output: str = ""
    ran: bool = False


@dataclasses.dataclass
class RunState:
    target: Path                      # the folder with the student's files
    seed: int
    started: float
    target_file: Path | None = None   # --target <unit>.py / <unit>.ipynb: only that unit is graded
    time_limit_scale: float = 1.0
    limit: float = DEFAULT_TIMEOUT_S  # the running test's time limit, in seconds
    failed_units: dict = dataclasses.field(default_factory=dict)  # unit -> message: its file failed to load
    problems: dict = dataclasses.field(default_factory=dict)      # unit -> [what went wrong with its file]
    notes: dict = dataclasses.field(default_factory=dict)         # unit -> [what the grader did, for information]
    unit_files: dict = dataclasses.field(default_factory=dict)    # unit -> (its file or None, note), found once
    notebooks: dict = dataclasses.field(default_factory=dict)     # path -> NotebookCode, parsed once
    results: dict = dataclasses.field(default_factory=dict)       # nodeid -> TestResult
    objectives: dict = dataclasses.field(default_factory=dict)    # unit -> {ID: text}
    numbers: list = dataclasses.field(default_factory=list)       # recorded numbers
    print_chars: int = 0
    print_calls: int = 0
    alarm_armed: bool = False
    tampered: dict = dataclasses.field(default_factory=dict)      # unit -> why it scores 0 (guard.py)
    running_unit: str | None = None                               # the unit of the test now running
    mode: str = "direct"                                          # --grade-mode (apart.py)
    calls: Path | None = None                                     # --grade-calls: the plan's folder
    outputs: Path | None = None                                   # --grade-outputs: the probe's folder


_STATE: RunState | None = None
_SIGN: Callable[[bytes], str] | None = None   # signs the results files (guard.signer), under `minillm grade`
_WATCH: Watch | None = None                  # the grader's, pytest's, torch's... functions (guard.Watch)


def _resolve_target(value: str) -> tuple[Path, Path | None]:
    """(the folder to grade, the one file to grade or None) of ``--target value``."""
    path = Path(value).expanduser()
    for candidate in (path, REPO / value):
        if candidate.is_dir():
            return candidate.resolve(), None
        if candidate.is_file() and candidate.suffix in (".py", ".ipynb"):
            _unit_of_file(candidate)  # a usage error unless the name says which unit it is
            return candidate.parent.resolve(), candidate.resolve()
    raise pytest.UsageError(
        f"--target {value!r}: no such folder or file (looked in {Path.cwd()} and {REPO}). Give 'exercises', "
        "'solutions', the path of a folder that holds the units' modules or notebooks (logits.py or "
        "logits.ipynb, perplexity.py or perplexity.ipynb, ...), or one such file."
    )


def _unit_of_file(path: Path) -> str:
    """The unit a single --target file is graded as: its name, or the one unit its name contains
    ("Copy of logits.ipynb" is the logits unit)."""
    units = [u for u in UNITS if u in path.stem.lower()]
    if path.stem in UNITS:
        return path.stem
    if len(units) == 1:
        return units[0]
    raise pytest.UsageError(
        f"--target {path}: the file's name does not say which unit it is. Name it after its unit: "
        + ", ".join(f"{u}{path.suffix}" for u in UNITS) + "."
    )


def pytest_configure(config: pytest.Config) -> None:
    global _STATE
    config.addinivalue_line("markers", "graded(points, objective, level): a graded test worth `points`, "
                                       "for rubric objective `objective`, level P (core), M (merit) or E (excellence)")
    config.addinivalue_line("markers", "timeout_s(seconds): the time limit of this test (default 20 s)")
    for unit in UNITS:
        config.addinivalue_line("markers", f"{unit}: the {unit} unit")
    # The grader's models are tiny: on a busy machine, handing (200, 32) x (32, 64) products
    # between two threads makes them ~1000x slower than one thread doing them alone, and
    # one thread also makes results independent of the machine's core count.
    torch.set_num_threads(1)
    if not hasattr(config.option, "target"):  # conftest loaded late (e.g. `pytest tests`): no options
        return
    seed = config.option.grader_seed
    if seed is None:
        seed = random.SystemRandom().randrange(1, 2**31 - 1)
    folder, file = _resolve_target(config.option.target)
    scale = config.option.time_limit_scale
    if not (scale > 0 and math.isfinite(scale)):
        raise pytest.UsageError(f"--time-limit-scale {scale}: give a positive number (1 keeps the limits).")
    _STATE = RunState(target=folder, target_file=file, seed=seed, started=time.time(), time_limit_scale=scale)
    _configure_mode(config, _STATE)
    global _SIGN
    _SIGN = signer(config.option.grade_key_fd)   # read and closed before any student code runs
    import minillm
    references = [(root / "solutions").resolve() for root in {REPO, Path(minillm.__file__).resolve().parents[1]}]
    hide_reference(references, allowed=lambda: any(_STATE.target.is_relative_to(r) for r in references),
                   on_refuse=lambda name: _tamper(f"your code opened {name}, the reference solution"))
    # Grading runs offline: a notebook constant such as MODEL = load_model("Qwen/Qwen2.5-0.5B") fails at
    # once from the cache instead of downloading. Set here, before anything imports huggingface_hub
    # (which reads it once, at import; minillm reads it at each call), for the whole grading process.
    os.environ["HF_HUB_OFFLINE"] = "1"
    _limit_memory(config.option.memory_limit_gb)
    if getattr(config.option, "tbstyle", "auto") == "auto":
        config.option.tbstyle = "short"


def _configure_mode(config: pytest.Config, state: RunState) -> None:
    """--grade-mode and its folders (apart.py); a probe run runs the plan's calls instead of the tests."""
    state.mode = config.option.grade_mode
    for name, modes in (("calls", ("plan", "probe")), ("outputs", ("probe", "judge"))):
        value = getattr(config.option, f"grade_{name}")
        if state.mode in modes and not value:
            raise pytest.UsageError(f"--grade-mode {state.mode} needs --grade-{name} DIR.")
        setattr(state, name, Path(value) if value else None)
    if state.mode == "probe":
        readable = lambda err: _readable_failure(pytest.ExceptionInfo.from_exception(err), state.target)[0]
        config.pluginmanager.register(apart.Probe(
            state.calls, state.outputs, lambda item: _unit_of(item) or "?", readable,
            stops=(StudentTimeout, PrintLimitExceeded, StudentExit, KeyboardInterrupt)), "minillm-probe")


def _limit_memory(gigabytes: float) -> None:
    """Cap this process's address space (Linux, macOS: RLIMIT_AS), so that a graded function that
    allocates without end gets a MemoryError / torch RuntimeError in its own test."""
    try:
        import resource
    except ImportError:   # Windows: no limit
        return
    if gigabytes > 0:
        limit = int(gigabytes * 2**30)
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def _state() -> RunState:
    if _STATE is None:
        raise RuntimeError("the autograder's conftest was not configured (run pytest on tests/autograder)")
    return _STATE


# --------------------------------------------------------------------------------------------
# Time limit and bounded printing around each test's call
# --------------------------------------------------------------------------------------------

class StudentTimeout(BaseException):
    """The test ran past its time limit (a BaseException so that `except Exception` can't swallow it)."""


class PrintLimitExceeded(BaseException):
    """Student code printed too much."""


def _timeout_of(item: pytest.Item) -> float:
    """The test's time limit in seconds: its timeout_s marker (default 20 s) times --time-limit-scale."""
    marker = item.get_closest_marker("timeout_s")
    if marker is None:
        seconds = DEFAULT_TIMEOUT_S
    else:
        seconds = float(marker.args[0] if marker.args else marker.kwargs.get("seconds", DEFAULT_TIMEOUT_S))
    return seconds * _state().time_limit_scale


def _bounded_print(*args, **kwargs) -> None:
    """Stands in for ``print`` inside student modules: stops a test that prints without end."""
    state = _STATE
    if state is not None:
        state.print_calls += 1
        state.print_chars += sum(len(str(a)) for a in args) + 1
        if state.print_chars > PRINT_LIMIT_CHARS or state.print_calls > PRINT_LIMIT_CALLS:
            raise PrintLimitExceeded(
                f"your code printed too much ({state.print_calls} print() calls, {state.print_chars} "
                f"characters; the limit is {PRINT_LIMIT_CALLS} calls or {PRINT_LIMIT_CHARS} characters "
                "per test). Remove debugging prints from loops."
            )
    print(*args, **kwargs)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    state = _state()
    state.print_chars = state.print_calls = 0
    limit = state.limit = _timeout_of(item)
    old_handler = None
    if _HAS_ALARM:
        def on_alarm(signum, frame):
            if state.alarm_armed:
                raise StudentTimeout(
                    f"time limit of {limit:g} s exceeded. Does your code loop forever (a `while` whose "
                    "condition never changes), or do far more work than needed (a Python loop over every "
                    "element of a big tensor, a forward pass per token instead of one for the whole text)?"
                )
        try:
            old_handler = signal.signal(signal.SIGALRM, on_alarm)
            state.alarm_armed = True
            # Fires again every second after the limit, in case student code swallows the first one.
            signal.setitimer(signal.ITIMER_REAL, limit, 1.0)
        except ValueError:  # not in the main thread: no limit
            old_handler = None
            state.alarm_armed = False
    try:
        yield
    finally:
        if _HAS_ALARM and old_handler is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            state.alarm_armed = False
            signal.signal(signal.SIGALRM, old_handler)


class StudentExit(BaseException):
    """Student code tried to end the whole grading run (os._exit, KeyboardInterrupt): only its test fails."""


WRITE_LIMIT_CHARS = 10 * PRINT_LIMIT_CHARS   # characters one test may write to sys.stdout/sys.stderr directly


class _BoundedStream:
    """Stands in for sys.stdout and sys.stderr while a test runs: ``sys.stdout.write`` would
    otherwise bypass the print limit (``print`` itself writes here too, so the limit is larger)."""

    def __init__(self, stream, written: list[int]):
        self._stream, self._written = stream, written    # one count shared by stdout and stderr

    def write(self, text: str) -> int:
        self._written[0] += len(text)
        if self._written[0] > WRITE_LIMIT_CHARS:
            raise PrintLimitExceeded(f"your code wrote more than {WRITE_LIMIT_CHARS} characters to sys.stdout/"
                                     "sys.stderr in one test. Remove debugging output from loops.")
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _refused_exit(status: int = 0) -> None:
    raise StudentExit(f"your code called os._exit({status}), which would end the grading of every unit. "
                      "Return a value or raise an exception instead.")


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """Around each test function: os._exit refused, output bounded, and a KeyboardInterrupt that the
    code raised itself (not a real Ctrl-C) fails only this test instead of stopping the run."""
    saved = os._exit, sys.stdout, sys.stderr
    written = [0]
    os._exit = _refused_exit
    sys.stdout, sys.stderr = _BoundedStream(saved[1], written), _BoundedStream(saved[2], written)
    ctrl_c = []

    def on_sigint(signum, frame):
        ctrl_c.append(signum)
        raise KeyboardInterrupt

    try:
        old_sigint = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:   # not in the main thread
        old_sigint = None
    try:
        outcome = yield
    finally:
        os._exit, sys.stdout, sys.stderr = saved
        if old_sigint is not None:
            signal.signal(signal.SIGINT, old_sigint)
    if isinstance(outcome.exception, KeyboardInterrupt) and not ctrl_c:
        outcome.force_exception(StudentExit(
            "your code raised KeyboardInterrupt, which would stop the grading of every unit. "
            "Raise an ordinary exception (ValueError, ...) instead."))


# --------------------------------------------------------------------------------------------
# The `student` fixture: fresh imports from the target folder, global-variable check
# --------------------------------------------------------------------------------------------

_CONSTANT_MODULES = (math, np, torch)


def _allowed_global(name: str, value: Any) -> bool:
    """Module-level names a graded function may use: modules, functions, classes, CONSTANTS."""
    if constant_name(name):
        return True
    if inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value):
        return True
    if isinstance(value, (functools.partial, torch.dtype, torch.device)):
        return True
    if type(value).__module__ in ("typing", "typing_extensions"):
        return True
    # `from math import pi` / `from torch import float32`: the library's own constants.
    missing = object()
    return any(getattr(mod, name, missing) is value for mod in _CONSTANT_MODULES)


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


_GLOBAL_OPS = {"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"}


def check_global_vars(fn: Callable, module: types.ModuleType, unit: str,
                      skipped: dict[str, int] | None = None, failed: dict[str, str] | None = None) -> None:
    """Fail when ``fn`` (or a helper of the same module that it calls) reads a module-level
    variable, e.g. a ``model`` or ``text`` left at the top of the file, instead of its arguments.
    For a notebook, ``skipped``: the names that the top-level statements the grader did not run
    would have bound (name -> cell); ``failed``: those of statements that failed (name -> what
    happened); using one of them fails too, saying why the name is not there."""
    file = Path(getattr(module, "__file__", None) or f"{unit}.py").name
    skipped, failed = skipped or {}, failed or {}
    seen: set[int] = set()
    todo = [fn]
    while todo:
        func = inspect.unwrap(todo.pop())
        code = getattr(func, "__code__", None)
        if code is None or id(code) in seen:
            continue
        seen.add(id(code))
        g = getattr(func, "__globals__", {})
        for sub in _code_objects(code):
            for instr in dis.get_instructions(sub):
                if instr.opname not in _GLOBAL_OPS or not isinstance(instr.argval, str):
                    continue
                name = instr.argval
                if instr.opname != "STORE_GLOBAL" and name not in g and name in failed:
                    raise GradingError(f"{file}: {fn.__name__}() uses `{name}`, but {failed[name]}.")
                if instr.opname != "STORE_GLOBAL" and name not in g and name in skipped:
                    raise GradingError(
                        f"{file}: {fn.__name__}() uses the variable `{name}` that cell {skipped[name]} sets. "
                        "Of a notebook the grader runs only the imports, functions, classes and ALL_CAPS "
                        "constants (not the cells that load a model or try examples), and a graded function "
                        "must compute its answer from its arguments: the grader passes in its own model, "
                        f"tokenizer and texts. Use the argument instead of `{name}`, or, if it is a true "
                        "constant, name it in ALL_CAPS."
                    )
                if instr.opname != "STORE_GLOBAL" and name not in g:
                    continue  # a builtin (len, range, ...) or an undefined name
                value = g.get(name)
                if instr.opname == "STORE_GLOBAL" or not _allowed_global(name, value):
                    raise GradingError(
                        f"{file}: {fn.__name__}() uses the module-level variable `{name}` "
                        f"({'assigned with `global`' if instr.opname == 'STORE_GLOBAL' else type(value).__name__}). "
                        "A graded function must compute its answer from its arguments only: the grader "
                        f"passes in its own model, tokenizer and texts. Use the argument instead of `{name}`, "
                        "or, if it is a true constant, name it in ALL_CAPS."
                    )
                if inspect.isfunction(value) and getattr(value, "__module__", None) == module.__name__:
                    todo.append(value)  # a helper in the student's file: check it too


class Student:
    """``student("unit")`` -> the unit's module (from ``<unit>.py``) or notebook (``<unit>.ipynb``)
    in the target folder, loaded fresh for this test. ``student.function("unit", "name")`` -> the
    function, after the global-variable check. A file that failed to load earlier in the run is not
    loaded again: its error is raised at once."""

    def __init__(self, state: RunState):
        self.state = state
        self.target = state.target
        self._modules: dict[str, types.ModuleType] = {}
        self._skipped: dict[str, dict[str, int]] = {}   # unit -> {name: cell}: notebook statements not run
        self._failed: dict[str, dict[str, str]] = {}    # unit -> {name: why}: notebook statements that failed

    def __call__(self, unit: str) -> types.ModuleType:
        if unit in self._modules:
            return self._modules[unit]
        state = self.state
        if unit in state.failed_units:
            raise GradingError(f"{state.failed_units[unit]}\n(found by an earlier test of the {unit} unit: "
                               "the grader loads a file that failed once only)")
        path = self._file(unit)
        try:
            module = self._load_notebook(unit, path) if path.suffix == ".ipynb" else self._import(unit, path)
        except StudentTimeout as err:
            where = _student_frames(err.__traceback__, self.target)
            advice = ("A notebook's imports, functions, classes and ALL_CAPS constants must load in a moment: "
                      "assign slow work (training, a download) to a lower-case name, which the grader skips."
                      if path.suffix == ".ipynb" else
                      "Code at the top level of the file runs when it is imported: put slow work (training, "
                      'a download) in a function, or under `if __name__ == "__main__":`.')
            self._fail(unit, f"{path.name} did not finish loading within the time limit of {state.limit:g} s, "
                             f"so the unit scores 0 (its other tests fail at once).\n{advice}"
                             + (f" It was running:\n{where}" if where else ""))
        except PrintLimitExceeded as err:
            self._fail(unit, f"{path.name} printed too much while loading: {err}")
        except GradingError as err:
            self._fail(unit, str(err))
        self._modules[unit] = module
        return module

    def _note(self, unit: str, text: str, problem: bool = True) -> None:
        notes = (self.state.problems if problem else self.state.notes).setdefault(unit, [])
        if text not in notes:
            notes.append(text)

    def _fail(self, unit: str, message: str) -> None:
        """Remember that ``unit``'s file cannot be loaded, for the rest of the run, and fail."""
        self.state.failed_units[unit] = message
        first = message.splitlines()[0]
        self._note(unit, first if len(first) <= NOTE_CHARS else first[: NOTE_CHARS - 3] + "...")
        raise GradingError(message) from None

    def _file(self, unit: str) -> Path:
        state = self.state
        if state.target_file is not None and _unit_of_file(state.target_file) == unit:
            return state.target_file
        if unit not in state.unit_files:
            state.unit_files[unit] = find_unit_file(self.target, unit)
        path, note = state.unit_files[unit]
        if path is None:
            self._fail(unit, missing_message(unit, self.target.name, note))
        if note:
            self._note(unit, note, problem=False)
        return path

    def _import(self, unit: str, path: Path) -> types.ModuleType:
        name = f"_student_{unit}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        module.print = _bounded_print  # type: ignore[attr-defined]
        sys.modules[name] = module
        sys.path.insert(0, str(self.target))
        dont_write = sys.dont_write_bytecode
        sys.dont_write_bytecode = True  # leave no __pycache__ in the student's folder
        try:
            spec.loader.exec_module(module)
        except SyntaxError as err:
            sys.modules.pop(name, None)
            line = (err.text or "").rstrip()
            raise GradingError(
                f"{path.name} has a syntax error at line {err.lineno}: {err.msg}\n    {line}\n"
                "Nothing in this file can be graded until it is fixed."
            ) from None
        except (StudentTimeout, PrintLimitExceeded, KeyboardInterrupt, ForbiddenCall):
            sys.modules.pop(name, None)
            raise
        except BaseException as err:  # ImportError, NameError, SystemExit at import time...
            sys.modules.pop(name, None)
            where = _student_frames(err.__traceback__, self.target)
            raise GradingError(
                f"importing {path.name} failed with {type(err).__name__}: {err}\n{where}"
                "Code at the top level of the file runs when it is imported: keep only imports, "
                "constants and function definitions there."
            ) from None
        finally:
            sys.dont_write_bytecode = dont_write
            _remove_from_path(str(self.target))
        return module

    def _load_notebook(self, unit: str, path: Path) -> types.ModuleType:
        """Run the notebook's imports, definitions and constants (submission.py) in a fresh module.
        A statement that fails is left out with a note; the others still run."""
        code = self.state.notebooks.get(path)
        if code is None:
            try:
                code = self.state.notebooks[path] = read_notebook(path)
            except NotebookError as err:
                raise GradingError(str(err)) from None
        for note in code.problems:
            self._note(unit, note)
        self._note(unit, code.info, problem=False)
        name = f"_student_{unit}"
        module = types.ModuleType(name, f"the {unit} unit, from {path.name}")
        module.__file__ = str(path)
        module.print = _bounded_print  # type: ignore[attr-defined]
        sys.modules[name] = module
        sys.path.insert(0, str(self.target))
        failed = self._failed[unit] = {}
        try:
            for statement in code.statements:
                try:
                    exec(statement.code, module.__dict__)
                except (StudentTimeout, PrintLimitExceeded, KeyboardInterrupt, ForbiddenCall):
                    sys.modules.pop(name, None)
                    raise
                except BaseException as err:  # an import that is not installed, a NameError, SystemExit...
                    first = (str(err).splitlines() or [""])[0]
                    first = first if len(first) <= NOTE_CHARS else first[: NOTE_CHARS - 3] + "..."
                    what = (f"cell {statement.cell}: `{statement.text}` failed with {type(err).__name__}: "
                            f"{first}")
                    # A note, not a problem: it matters only if a graded function uses what it defines
                    # (function() then says so).
                    self._note(unit, f"{path.name}, {what}; the grader went on without it", problem=False)
                    failed.update({n: what for n in statement.names})
        finally:
            _remove_from_path(str(self.target))
        self._skipped[unit] = code.skipped_names
        return module

    def constant(self, unit: str, name: str, default: Any = None) -> Any:
        """A module-level constant of the student's file (``OPTIMIZER_FILE``), or ``default`` if it has none."""
        return getattr(self(unit), name, default)

    def function(self, unit: str, name: str) -> Callable:
        module = self(unit)
        fn = getattr(module, name, None)
        file = Path(module.__file__).name
        if fn is None and name in self._failed.get(unit, {}):
            message = f"{file}: {name}() is not defined: {self._failed[unit][name]}."
            self._note(unit, message)
            raise GradingError(message)
        if fn is None:
            notes = [n for n in self.state.problems.get(unit, []) if n.startswith(f"{file}, cell")]
            raise GradingError(
                f"{file} has no function {name}(). Keep the name and signature of the exercise "
                "stub (a renamed or deleted function cannot be graded)."
                + "".join(f"\n  note: {n}" for n in notes)
            )
        if not callable(fn):
            raise GradingError(f"{file}: {name} should be a function, but it is a {type(fn).__name__}.")
        try:
            check_global_vars(fn, module, unit, self._skipped.get(unit), self._failed.get(unit))
        except GradingError as err:
            if any(f"uses `{n}`, but cell" in str(err) for n in self._failed.get(unit, {})):
                self._note(unit, str(err).splitlines()[0])   # a failed cell costs points: say so in the message
            raise
        return fn


def _remove_from_path(entry: str) -> None:
    try:
        sys.path.remove(entry)
    except ValueError:
        pass


@pytest.fixture
def student(request) -> Student | apart.PlanStudent | apart.ReplayStudent:
    state = _state()
    apart.begin_test()
    if state.mode == "judge":   # no student code here: what the probe recorded, played back
        return apart.ReplayStudent(state.outputs, request.node)
    if state.mode == "plan":    # the reference, its calls recorded
        return apart.PlanStudent(Student(state), request.node, _unit_of(request.node) or "?")
    return Student(state)


forbid = recorded.forbid_fixture(lambda: _state().mode, lambda item: _unit_of(item))   # forbid("torch.softmax")
lend = recorded.lend_fixture(lambda: _state().mode)   # lend("sampling", "softmax_with_temperature", _grader_softmax)


@pytest.fixture(scope="session")
def grader_seed() -> int:
    return _state().seed


@pytest.fixture
def record_number(request) -> Callable[[str, Any, Any], None]:
    """``record_number(name, student_value, reference_value)``: keep both numbers in the JSON report."""
    unit = _unit_of(request.node) or ""

    def record(name: str, student_value: Any, reference_value: Any) -> None:
        _state().numbers.append({
            "unit": unit, "test": request.node.nodeid, "name": str(name),
            "student": _as_number(student_value), "reference": _as_number(reference_value),
        })
    return record


def _as_number(value: Any) -> float | None:
    try:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().item()
        x = float(value)
    except Exception:
        return None
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------------------------
# Tiny tokenizer and model, built in memory (no transformers, no network)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def story_texts() -> list[str]:
    from minillm.data import bundled_texts
    return bundled_texts("stories")


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory, story_texts):
    from minillm import load_tokenizer
    from minillm.training.bpe import train_tokenizer
    folder = tmp_path_factory.mktemp("tiny_tokenizer")
    train_tokenizer(list(story_texts), TINY_VOCAB, folder)
    return load_tokenizer(folder)


@pytest.fixture(scope="session")
def tiny_model_config(tiny_tokenizer, pytestconfig):
    from minillm import GPT2Config, ModelConfig
    if pytestconfig.getoption("tiny_model", "qwen2") == "gpt2":
        return GPT2Config(vocab_size=tiny_tokenizer.vocab_size, n_positions=4096, n_embd=32, n_layer=2, n_head=4,
                          tie_word_embeddings=False, torch_dtype="float32", eos_token_id=tiny_tokenizer.eos_token_id)
    return ModelConfig(
        model_type="qwen2", vocab_size=tiny_tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=4096,
        tie_word_embeddings=False, attention_bias=True, torch_dtype="float32",
        bos_token_id=None, eos_token_id=tiny_tokenizer.eos_token_id,
    )


def _build_tiny_model(config):
    """Random weights, seeded, spread wider than a trained model's so mistakes change the numbers:
    norm gains and biases are not the neutral 1 and 0, and the logits spread over a few nats."""
    from minillm import GPT2, GPT2Config, Transformer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_MODEL_SEED)
        model = GPT2(config) if isinstance(config, GPT2Config) else Transformer(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight") or (name.endswith(".weight") and name.split(".")[-2].startswith("ln_")):
                    p.copy_(1.0 + 0.3 * torch.randn_like(p))
                elif name.endswith("bias"):
                    p.copy_(0.3 * torch.randn_like(p))
                elif "embed_tokens" in name or name == "wte.weight":
                    p.copy_(torch.randn_like(p))
                else:
                    p.copy_(0.25 * torch.randn_like(p))
    return model.float().eval()


_TINY_MASTER: dict[str, Any] = {}


@pytest.fixture(scope="session")
def tiny_model(tiny_model_config):
    model = _build_tiny_model(tiny_model_config)
    _TINY_MASTER["model"] = model
    _TINY_MASTER["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _TINY_MASTER["config"] = tiny_model_config
    return model


@pytest.fixture(autouse=True)
def _restore_tiny_model():
    """Undo whatever a test (or student code) did to the shared tiny model: it is shared by all tests."""
    yield
    model = _TINY_MASTER.get("model")
    if model is None:
        return
    master = _TINY_MASTER["state"]
    try:
        state = model.state_dict()
        same_layout = state.keys() == master.keys() and all(
            state[k].shape == master[k].shape and state[k].dtype == master[k].dtype for k in master)
    except Exception:
        same_layout = False
    patched = any("forward" in vars(m) for m in model.modules())  # a monkeypatched forward
    if same_layout and not patched and [type(m) for m in model.modules()] == list(_reference_module_types()):
        with torch.no_grad():
            for k, v in master.items():
                if not torch.equal(state[k], v):
                    state[k].copy_(v)
    else:  # modules replaced, dtype changed...: rebuild in place so every holder sees the fresh model
        fresh = _build_tiny_model(_TINY_MASTER["config"])
        model.__dict__.clear()
        model.__dict__.update(fresh.__dict__)
    for p in model.parameters():
        p.grad = None
        p.requires_grad_(True)
    model.eval()


@functools.lru_cache(maxsize=1)
def _reference_module_types() -> tuple:
    return tuple(type(m) for m in _build_tiny_model(_TINY_MASTER["config"]).modules())


# A trained model for the tests whose numbers a student reads as a model's quality (perplexities,
# surprises, losses): the random tiny model scores ~1,000 on a 320-token vocabulary, worse than the
# uniform guess the exercises describe, while tiny-s scores mostly 30-400 on the stories it never
# trained on.
TRAINED_MODEL = "tiny-s"     # data/models/tiny-s: 98,704 parameters, a 1,024-token vocabulary


@pytest.fixture(scope="session")
def _trained_master():
    from minillm import load_model, load_tokenizer
    from minillm.course.family import FAMILY_DIR
    folder = FAMILY_DIR / TRAINED_MODEL
    return load_model(folder).float().eval(), load_tokenizer(folder)


@pytest.fixture
def trained_model(_trained_master):
    """tiny-s, trained by minillm on synthetic and bundled stories (data/models/README.md): a fresh
    copy for each test, so that student code that changes it reaches no other test. Its context is
    ``config.max_position_embeddings`` = 128 tokens: give it no longer texts (minillm's scoring cuts
    those into windows; the exercises' single forward pass does not)."""
    import copy
    return copy.deepcopy(_trained_master[0])


@pytest.fixture(scope="session")
def trained_tokenizer(_trained_master):
    """tiny-s's byte-level BPE tokenizer (1,024 tokens, no BOS, ``<|endoftext|>`` = 0)."""
    return _trained_master[1]


@pytest.fixture(scope="session")
def held_out_texts() -> list[str]:
    """The 20 bundled stories the trained family never saw (``minillm.course.family.held_out_stories``)."""
    from minillm.course.family import held_out_stories
    return held_out_stories()



# --------------------------------------------------------------------------------------------
# Points: which tests count, readable failure messages, the table and the JSON report
# --------------------------------------------------------------------------------------------

def _unit_of(item: pytest.Item) -> str | None:
    for marker in item.iter_markers():
        if marker.name in UNITS:
            return marker.name
    return None


def _graded_info(item: pytest.Item) -> tuple[int, str, str] | None:
    marker = item.get_closest_marker("graded")
    if marker is None:
        return None
    kw = dict(marker.kwargs)
    if marker.args:
        kw.setdefault("points", marker.args[0])
    return kw.get("points"), kw.get("objective"), kw.get("level", "P")


def _setup_problem(item: pytest.Item) -> str | None:
    """An error in the autograder's own markers (not the student's fault), or None."""
    info = _graded_info(item)
    if info is None:
        return None
    points, objective, level = info
    unit = _unit_of(item)
    objectives = getattr(item.module, "OBJECTIVES", None)
    if unit is None:
        return f"autograder error: {item.nodeid} has no unit marker (pytestmark = pytest.mark.<unit>)"
    if not isinstance(points, int) or points < 0:
        return f"autograder error: {item.nodeid}: graded(points=...) must be an int >= 0, got {points!r}"
    if level not in LEVELS:
        return f"autograder error: {item.nodeid}: graded(level=...) must be one of {list(LEVELS)}, got {level!r}"
    if not isinstance(objectives, dict) or objective not in objectives:
        return (f"autograder error: {item.nodeid}: objective {objective!r} is not a key of the module's "
                "OBJECTIVES dict")
    return None


def pytest_collection_modifyitems(session, config, items) -> None:
    if _STATE is None:
        return
    if _STATE.target_file is not None:  # one file: grade its unit only
        unit = _unit_of_file(_STATE.target_file)
        other = [item for item in items if _unit_of(item) not in (unit, None)]
        if other:
            items[:] = [item for item in items if item not in other]
            config.hook.pytest_deselected(items=other)
    for item in items:
        info = _graded_info(item)
        if info is None:
            continue
        unit = _unit_of(item) or "?"
        points, objective, level = info
        name = item.nodeid.split("::", 1)[-1]
        _STATE.results[item.nodeid] = TestResult(
            nodeid=item.nodeid, name=name, unit=unit, objective=str(objective), level=str(level),
            points=points if isinstance(points, int) else 0)
        objectives = getattr(item.module, "OBJECTIVES", {}) or {}
        if isinstance(objectives, dict):
            _STATE.objectives.setdefault(unit, {}).update({str(k): str(v) for k, v in objectives.items()})


def pytest_deselected(items) -> None:
    if _STATE is None:
        return
    for item in items:
        _STATE.results.pop(item.nodeid, None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _STATE is not None:
        _STATE.running_unit = _unit_of(item)
        _fresh_global_state()
    problem = _setup_problem(item)
    if problem:
        pytest.fail(problem, pytrace=False)


def _fresh_global_state() -> None:
    """Undo what earlier code may have changed in torch's global settings, so that every test (and
    its reference values) starts from the same state, whatever another unit's code did."""
    torch.set_default_dtype(torch.float32)
    torch.set_default_device(None)
    torch.set_grad_enabled(True)
    torch.set_num_threads(1)
    if torch.are_deterministic_algorithms_enabled():   # the call itself imports torch._dynamo (~2 s): only when needed
        torch.use_deterministic_algorithms(False)


def pytest_collection_finish(session) -> None:
    """Before any student code runs: what the watched names hold (guard.Watch), and, for
    ``minillm grade``, a signed results file with every test "not run", which it uses when the
    run is stopped (a unit that hangs scores 0 of its points)."""
    global _WATCH
    if _STATE is None:
        return
    _WATCH = Watch(extra_modules=(sys.modules[__name__],))
    _write_results(session.config, ".collected.json")


def _tamper(why: str) -> None:
    """The running test's unit scores 0: its code reached into the grader (``why``)."""
    state = _STATE
    unit = state.running_unit if state is not None else None
    if unit is None:
        return
    message = f"{why}. The grader cannot trust this unit's results, so it scores 0."
    if unit not in state.tampered:
        state.tampered[unit] = message
        state.problems.setdefault(unit, []).append(message)
    for result in state.results.values():
        if result.unit == unit:
            result.passed, result.output = False, state.tampered[unit]


def _student_frames(tb, target: Path) -> str:
    """The traceback lines that are in the student's files, formatted for reading."""
    lines = []
    for frame in traceback.extract_tb(tb):
        try:
            in_target = Path(frame.filename).resolve().is_relative_to(target)
        except (OSError, ValueError):
            in_target = False
        if in_target:
            lines.append(f"  in {Path(frame.filename).name}, line {frame.lineno}, in {frame.name}:\n"
                         f"      {(frame.line or '').strip()}\n")
    return "".join(lines)


def _readable_failure(excinfo: pytest.ExceptionInfo, target: Path) -> tuple[str, bool]:
    """(message for the student, whether it replaces pytest's traceback)."""
    err = excinfo.value
    if getattr(type(err), "replayed_message", None):   # judged apart: what the student's process saw
        return type(err).replayed_message, True
    if isinstance(err, (GradingError, StudentTimeout, PrintLimitExceeded, ForbiddenCall, StudentExit)):
        where = _student_frames(excinfo.tb, target) if not isinstance(err, GradingError) else ""
        return str(err) + ("\n" + where if where else ""), True
    if isinstance(err, pytest.fail.Exception):
        return str(err), True
    if isinstance(err, NotImplementedError):
        detail = f" ({err})" if str(err) else ""
        return f"not implemented yet: the function raises NotImplementedError{detail}.", True
    where = _student_frames(excinfo.tb, target)
    if where:
        return (f"your code raised {type(err).__name__}: {err}\n{where}"), False
    if isinstance(err, AssertionError):
        return str(err) or "assertion failed", False
    return f"{type(err).__name__}: {err}", False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    state = _STATE
    if state is None:
        return
    result = state.results.get(item.nodeid)
    message = ""
    if report.failed and call.excinfo is not None:
        message, replace = _readable_failure(call.excinfo, state.target)
        if replace:
            report.longrepr = message
    elif report.skipped and call.excinfo is not None:
        message = f"skipped: {call.excinfo.value}"
    if result is None:
        return
    if report.when == "setup" and not report.passed:
        result.ran, result.passed, result.output = True, False, message or report.longreprtext
    elif report.when == "call":
        result.ran, result.passed = True, report.passed
        result.output = "" if report.passed else (message or report.longreprtext)
    elif report.when == "teardown" and report.failed and result.passed:
        result.passed, result.output = False, message or report.longreprtext
    if report.when == "teardown" and _WATCH is not None:   # after monkeypatch put back what the test patched
        changed = _WATCH.check()
        if changed:
            _tamper("your code replaced " + ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else "")
                    + " (functions of the grader, pytest, Python, NumPy or torch)")
    if result.unit in state.tampered:
        result.passed, result.output = False, state.tampered[result.unit]


def _totals() -> tuple[dict, dict]:
    """{unit: [earned, max]}, {(unit, objective, level): [earned, max]} over the graded tests that ran."""
    units: dict[str, list[int]] = {}
    rows: dict[tuple, list[int]] = {}
    for r in _state().results.values():
        for key, table in ((r.unit, units), ((r.unit, r.objective, r.level), rows)):
            cell = table.setdefault(key, [0, 0])
            cell[0] += r.points if r.passed else 0
            cell[1] += r.points
    order = {u: i for i, u in enumerate(UNITS)}
    units = dict(sorted(units.items(), key=lambda kv: order.get(kv[0], 99)))
    rows = dict(sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1], "PME".find(kv[0][2]))))
    return units, rows


def grade_table() -> str:
    state = _state()
    units, rows = _totals()
    lines = [f"minillm autograder: {state.target}  (grader seed {state.seed}; rerun with --grader-seed {state.seed})"]
    if not units:
        lines.append(f"no graded tests ran. A unit is chosen with -m UNIT, one of: {', '.join(UNITS)} "
                     "(-m \"logits or sampling\" for several); check its spelling, and any -k.")
        return "\n".join(lines)
    width = 72
    lines.append(f"{'unit':<13} {'objective':<9} {'level':<12} {'points':>7}  description")
    for unit, (earned, most) in units.items():
        for (u, objective, level), (e, m) in rows.items():
            if u != unit:
                continue
            text = state.objectives.get(unit, {}).get(objective, "")
            text = text if len(text) <= width else text[: width - 3] + "..."
            lines.append(f"{unit:<13} {objective:<9} {level + ' ' + LEVELS.get(level, ''):<12} {e:>3}/{m:<3}  {text}")
        lines.append(f"{unit + ' total':<36} {earned:>3}/{most:<3}")
    earned = sum(e for e, _ in units.values())
    most = sum(m for _, m in units.values())
    lines.append(f"{'TOTAL':<36} {earned:>3}/{most:<3}")
    notes = _notes(state.notes)
    tied = [unit for unit, unit_notes in notes.items() if tie_note(unit) in unit_notes]
    notes = {u: [n for n in unit_notes if n != tie_note(u)] for u, unit_notes in notes.items()}
    notes = {u: unit_notes for u, unit_notes in notes.items() if unit_notes}
    for title, by_unit in (("problems", _notes(state.problems)), ("notes", notes)):
        if by_unit or (title == "notes" and tied):
            lines.append(f"{title}:")
            lines += [f"  {unit}: {note}" for unit, unit_notes in by_unit.items() for note in unit_notes]
    if tied:   # one line for all the units where a .py and a different .ipynb tie on unfilled functions
        lines.append(f"  graded the .py files; the notebooks beside them (as many unfilled functions, other "
                     f"code) were not graded: {', '.join(tied)}")
    return "\n".join(lines)


def _notes(by_unit: dict[str, list[str]]) -> dict[str, list[str]]:
    """``by_unit`` for the units graded in this run, in unit order."""
    graded = {r.unit for r in _state().results.values()}
    return {u: by_unit[u] for u in UNITS if u in graded and by_unit.get(u)}


def gradescope_results() -> dict:
    """The run as Gradescope's results.json (plus our own data under "extra_data")."""
    state = _state()
    units, rows = _totals()
    tests = []
    unit_index = {u: i + 1 for i, u in enumerate(UNITS)}
    counters: dict[str, int] = {}
    for r in sorted(state.results.values(), key=lambda r: unit_index.get(r.unit, 99)):  # stable: test order
        counters[r.unit] = counters.get(r.unit, 0) + 1
        tests.append({
            "name": f"{r.unit} {r.objective} ({r.level}): {r.name}",
            "number": f"{unit_index.get(r.unit, 99)}.{counters[r.unit]}",
            "score": r.points if r.passed else 0,
            "max_score": r.points,
            "status": "passed" if r.passed else "failed",
            "output": r.output if r.ran else "not run",
            "tags": [r.unit, r.objective, r.level],
            "visibility": "visible",
            "extra_data": {"unit": r.unit, "objective": r.objective, "level": r.level, "nodeid": r.nodeid},
        })
    return {
        "score": sum(e for e, _ in units.values()),
        "max_score": sum(m for _, m in units.values()),
        "execution_time": round(time.time() - state.started, 3),
        "output": grade_table(),
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": {
            "grader_seed": state.seed,
            "target": str(state.target),
            "units": {u: {"score": e, "max_score": m} for u, (e, m) in units.items()},
            "objectives": [
                {"unit": u, "objective": o, "level": lv, "score": e, "max_score": m,
                 "description": state.objectives.get(u, {}).get(o, "")}
                for (u, o, lv), (e, m) in rows.items()
            ],
            "numbers": list(state.numbers),
            "problems": _notes(state.problems),
            "notes": _notes(state.notes),
        },
    }


def pytest_sessionfinish(session, exitstatus) -> None:
    state = _STATE
    if state is None or session.config.option.collectonly:
        if state is not None:
            _write_results(session.config)
        return
    units = {r.unit for r in state.results.values()}
    if state.mode == "plan":
        apart.write_plan(state.calls, state.results)
    elif state.mode == "probe":
        apart.write_unit_notes(state.outputs, state.problems, state.notes, units)
        return   # no results from the student's process: the judge writes them
    elif state.mode == "judge":
        for unit in units:
            problems, notes = apart.read_unit_notes(state.outputs, unit)
            state.problems.setdefault(unit, []).extend(p for p in problems if p not in state.problems[unit])
            state.notes.setdefault(unit, []).extend(n for n in notes if n not in state.notes[unit])
    _write_results(session.config)


def _write_results(config: pytest.Config, suffix: str = "") -> None:
    """The results JSON at --grade-json (with ``suffix``: beside it), signed when ``minillm grade`` gave a key."""
    path = config.getoption("grade_json", None)
    if not path:
        return
    path = Path(path)
    path = path.with_suffix(suffix) if suffix else path
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(gradescope_results(), indent=2) + "\n").encode("utf-8")
    path.write_bytes(data)
    if _SIGN is not None:
        path.with_name(path.name + ".sig").write_text(_SIGN(data))


def pytest_unconfigure(config) -> None:
    """The points table, printed last (after pytest's own summary) so that it is what a student sees."""
    if _STATE is None or config.option.collectonly or _STATE.mode == "probe":
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    reporter.write_sep("=", "grade")
    for line in grade_table().splitlines():
        reporter.write_line(line)
    if not _HAS_ALARM:
        reporter.write_line("note: no SIGALRM on this platform, so tests ran without a time limit.")
