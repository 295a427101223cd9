"""Grading apart: the student's code runs in one process, the checks in another that it cannot reach.

One test file ``test_grade_<unit>.py`` is run in three modes (``--grade-mode``), for a unit that
``minillm grade`` grades apart (the autograder's ``graded_apart.txt`` lists them):

* ``plan`` (the grader's machine, the reference as the student): every graded test runs as usual,
  and each call of a student function is recorded, with its arguments as data (exchange.py), in
  ``--grade-calls``: ``<unit>/<test stem>.json`` (+ ``.safetensors``). The reference must pass.
* ``probe`` (the student's sandbox): each graded test's body is NOT run (it would compute the
  expected values in the student's process); instead its recorded calls are made on the student's
  functions, with the test's own fixtures for the grader's objects (the tiny model, tokenizers),
  and each call's output, or its exception, is written as data to ``--grade-outputs``, with what
  the call changed (its arguments, torch's and NumPy's global random state, the state it left a
  model, optimizer or folder argument in, autograd's mode in each forward pass of a model).
* ``judge`` (a process where no student code runs): the test file runs as usual, but
  ``student.function(unit, name)`` returns a stand-in that gives back, call by call, what the probe
  recorded; the test computes its expected values and compares them in this process, and its
  points are the unit's score. A call whose arguments differ from the recorded ones, a missing,
  malformed or oversized file, an output of the wrong kind: that test fails with a message.

So a test still reads as a specification (inputs, the call, the expectation), and the same file
grades ``pytest --target`` in one process (mode ``direct``), where nothing is apart: a student's own
run is a convenience, not a security boundary. Two rules for a test graded apart: the inputs of a
call must not be computed from an earlier call's output (the plan would not match the student's run;
an earlier output passed on as it is, the very object, is fine: it crosses as a reference to that
call, and the probe passes the student's output as the judge reads it), and
the expected values must be computed in the test's body, never in a fixture (the probe sets up the
fixtures in the sandbox). And what a test does to the student's side goes through what the plan
records (recorded.py): ``forbid`` (library functions that are the answer), ``lend`` (the grader's
version of a graded function the function under test builds on) and ``student.constant`` (a constant
of the student's file), never ``block`` or a patch of the student's module in the body. Side effects
are checked with ``grading.Unchanged`` and ``grading.GradModes``, which the judge reads from what the
probe measured, never by comparing a tensor argument with a copy after the call; a model, an optimizer
or a folder is the exception: it crosses by its whole state, and what the call left in it is put into
the test's own object (effects.py), which the test then reads as it is in the student's run.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from effects import Held, gradients, with_gradients
from exchange import Decoder, Encoder, ExchangeError, digest, fingerprint, read_record, write_record
from grading import REPLAYED, GradingError, Unchanged, block
from recorded import CONSTANTS, FORBIDDEN, LENT

UNIT_RECORD = "unit"          # <outputs>/<unit>/unit.json: the probe's problems and notes for the unit
PLAN_INDEX = "plan"           # <calls>/<unit>/plan.json: the tests recorded, and any the reference failed
MAX_NOTES, NOTE_CHARS = 20, 2000
NO_OUTPUT = ("the grader found no record of your code's run for this test: the run ended before it (a crash, "
             "a time-out or an exit in your code), or its files were removed")


def stem(test_name: str) -> str:
    """The file stem of a test's records (a hash of its name: names hold brackets and parameters)."""
    return hashlib.sha256(test_name.encode()).hexdigest()[:20]


def _fixtures(item: pytest.Item) -> dict[int, tuple[str, str]]:
    """The test's fixture objects that calls may pass (by name; an object inside a fixture's tuple,
    list or dict by its path, ``family/0/tiny-s``): not plain data (numbers, texts), which crosses as itself."""
    found: dict[int, tuple[str, str]] = {}

    def walk(name: str, value: Any, depth: int) -> None:
        if isinstance(value, (tuple, list, dict)) and depth < 3:
            for key, inner in (value.items() if isinstance(value, dict) else enumerate(value)):
                if isinstance(key, (str, int)) and "/" not in str(key):
                    walk(f"{name}/{key}", inner, depth + 1)
        elif not isinstance(value, (type(None), bool, int, float, str)):
            found.setdefault(id(value), (name, fingerprint(value)))
    for name, value in item.funcargs.items():
        if name not in ("request", "student"):
            walk(name, value, 0)
    return found


def fixture_value(item: pytest.Item, path: str) -> Any:
    """The fixture object a call's argument names (:func:`_fixtures`), set up here if it is not yet."""
    name, *keys = path.split("/")
    value = item.funcargs[name] if name in item.funcargs else item._request.getfixturevalue(name)
    for key in keys:
        value = value[int(key)] if isinstance(value, (tuple, list)) else value[key]
    return value


def chainable(value: Any) -> bool:
    """Whether a call's output, passed as it is to a later call, crosses as a reference to that
    output: not the values Python shares between unrelated places (None, small ints, texts)."""
    return not isinstance(value, (type(None), bool, int, str, np.generic)) and not (type(value) is tuple and not value)


BUILT: dict[int, tuple[str, tuple, dict]] = {}   # id -> (function, args, kwargs) of this test's built objects
_KEPT: list = []


def built(function: Callable, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, an object the test builds to pass to the student's function (a
    model of its own, say) with a function of the test module: a call given it records how it was
    built (the function's name and arguments, themselves data, fixtures or built), and the probe builds
    it again in the sandbox, checked against the object's fingerprint. Built with torch's global random
    generator seeded with 0 and then restored: the same object in every run, the caller's draws untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        value = function(*args, **kwargs)
    BUILT[id(value)] = (function.__name__, args, kwargs)
    _KEPT.append(value)
    return value


def begin_test() -> None:
    """A new test: no object is built yet, and no call replayed (a process that judged before, then
    grades in another mode, must measure its inputs again: tests/test_autograder.py's runners do)."""
    BUILT.clear()
    _KEPT.clear()
    REPLAYED.active, REPLAYED.last = False, None


def encode_call(k: int, args: tuple, kwargs: dict, fixtures: dict,
                outputs: dict[int, int], held: Held) -> tuple[dict, dict[str, torch.Tensor], str]:
    """Call number ``k``'s arguments as data: (the tree, its tensors, a digest of both). ``outputs``:
    id -> the number of the earlier call of this test that returned the object (passed on as it is);
    ``held``: the test's objects that cross by their state (effects.py), this call's noted in it."""
    held.start_call()
    enc = Encoder(fixtures, prefix=f"c{k}.", outputs=outputs, built=BUILT, held=held)
    tree = {"args": [enc.encode(a) for a in args], "kwargs": [[key, enc.encode(v)] for key, v in kwargs.items()]}
    return tree, enc.tensors, digest(tree, enc.tensors)


class Outputs:
    """The outputs of a test's calls so far, by identity, so that a later call given one of them as it
    is records it as that output (``{"output": k}``), in all three modes alike."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.kept: dict[int, Any] = {}     # call number -> output, held so that no id is reused while the test runs
        self.held = Held()                 # the objects its calls may change (a model, an optimizer, a folder)

    def add(self, k: int, value: Any) -> None:
        self.kept[k] = value
        if chainable(value):
            self.ids.setdefault(id(value), k)


# --------------------------------------------------------------------------------------------
# plan: the reference's calls, recorded
# --------------------------------------------------------------------------------------------

PLANNED: dict[tuple[str, str], list] = {}     # (unit, test name) -> [(call record, tensors)]


class PlanStudent:
    """The ``student`` fixture of a plan run: the reference's functions, each call recorded."""

    def __init__(self, student: Any, item: pytest.Item, unit: str) -> None:
        self.student, self.item = student, item
        self.calls = PLANNED.setdefault((unit, item.name), [])
        self.calls.clear()
        self.outputs = Outputs()

    def __call__(self, unit: str):
        return self.student(unit)

    def constant(self, unit: str, name: str, default: Any = None) -> Any:
        names = CONSTANTS.setdefault((unit, self.item.name), [])
        if name not in names:
            names.append(name)
        return self.student.constant(unit, name, default)

    def function(self, unit: str, name: str) -> Callable:
        fn = self.student.function(unit, name)

        def recorded(*args, **kwargs):
            k = len(self.calls)
            tree, tensors, key = encode_call(k, args, kwargs, _fixtures(self.item), self.outputs.ids,
                                             self.outputs.held)
            self.calls.append(({"function": name, **tree, "digest": key}, tensors))
            got = fn(*args, **kwargs)   # a call that raises has no output to pass on
            self.outputs.add(k, got)
            return got
        recorded.__name__ = name
        return recorded


def write_plan(folder: Path, results: dict) -> None:
    """Every planned test's calls under ``folder/<unit>/``, and each unit's index (with the tests
    the reference failed: a plan the reference does not pass is no plan)."""
    for unit in {u for u, _ in PLANNED}:
        tests = {name: calls for (u, name), calls in PLANNED.items() if u == unit}
        for name, calls in tests.items():
            tensors = {k: v for _, t in calls for k, v in t.items()}
            write_record(folder / unit, stem(name), {"test": name, "calls": [c for c, _ in calls],
                                                     "forbid": FORBIDDEN.get((unit, name), []),
                                                     "lend": LENT.get((unit, name), []),
                                                     "constants": CONSTANTS.get((unit, name), [])}, tensors)
        failed = {r.name: r.output for r in results.values() if r.unit == unit and not r.passed}
        write_record(folder / unit, PLAN_INDEX, {"tests": sorted(tests), "reference_failed": failed}, {})


# --------------------------------------------------------------------------------------------
# probe: the student's functions called on the plan's inputs, in the sandbox
# --------------------------------------------------------------------------------------------

class Probe:
    """A pytest plugin for probe runs: runs each graded test's recorded calls instead of its body."""

    def __init__(self, calls: Path, outputs: Path, unit_of: Callable[[pytest.Item], str],
                 readable: Callable[[BaseException], str], stops: tuple[type[BaseException], ...]) -> None:
        self.calls, self.outputs, self.unit_of = calls, outputs, unit_of
        self.readable, self.stops = readable, stops

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> bool:
        if pyfuncitem.get_closest_marker("graded") is not None:
            self.run(pyfuncitem)
        return True      # the body is never run here: it computes the expected values

    def run(self, item: pytest.Function) -> None:
        unit, name = self.unit_of(item), item.name
        planned = read_record(self.calls / unit, stem(name))   # the grader's own file: an error here is the grader's
        if planned is None:
            return
        plan, plan_tensors = planned
        with pytest.MonkeyPatch.context() as patch:   # the test's forbidden functions, before the file loads
            block(patch, *plan.get("forbid", []))
            self._run(item, unit, name, plan, plan_tensors, patch)

    def _run(self, item: pytest.Function, unit: str, name: str, plan: dict, plan_tensors: dict,
             patch: pytest.MonkeyPatch) -> None:
        student = item.funcargs["student"]
        functions: dict[str, str | None] = {}
        out, tensors, stopped = [], {}, None

        produced = Outputs()   # each call's output as the judge will read it, for the calls given it
        produced.held.make_folder = lambda: item._request.getfixturevalue("tmp_path_factory").mktemp("argument")
        rebuilt: dict[str, Any] = {}

        def build(function: str, args: list, kwargs: dict, expected: str) -> Any:
            """An object the test built (apart.built), built again here: one per recipe and test."""
            key = digest({"f": function, "a": Encoder(_fixtures(item)).encode([args, kwargs])}, {})
            if key not in rebuilt:
                value = built(getattr(item.module, function), *args, **kwargs)
                if fingerprint(value) != expected:
                    raise ExchangeError(f"autograder error: {function}() built another object in the sandbox")
                rebuilt[key] = value
            return rebuilt[key]
        for k, call in enumerate(plan["calls"]):
            fname = call["function"]
            if fname not in functions:
                try:
                    student.function(unit, fname)
                    functions[fname] = None
                except BaseException as err:   # GradingError, or the time limit while the file loads
                    functions[fname] = self.readable(err)
                    if isinstance(err, self.stops):
                        stopped = f"loading your file stopped this test: {functions[fname].splitlines()[0]}"
            if stopped or functions[fname] is not None:
                out.append({"function": fname, "not_run": stopped or "the function is not available"})
                produced.add(k, None)
                continue
            for helper, version in plan.get("lend", []):   # the grader's versions of what it builds on
                patch.setattr(student(unit), helper, getattr(item.module, version), raising=False)
            decoder = Decoder(plan_tensors, lambda path: fixture_value(item, path), produced.kept, build,
                              held=produced.held)
            args = [decoder.decode(a) for a in call["args"]]
            kwargs = {key: decoder.decode(v) for key, v in call["kwargs"]}
            _, _, echo = encode_call(k, tuple(args), kwargs, _fixtures(item), produced.ids, produced.held)
            entry, stopped = self._call(student.function(unit, fname), k, args, kwargs, tensors, produced.held)
            out.append({"function": fname, "digest": echo, **entry})
            try:
                produced.add(k, Decoder(tensors, arguments=[*args, *kwargs.values()]).decode(entry["output"])
                             if "output" in entry else None)
            except ExchangeError:
                produced.add(k, None)
        constants = [] if stopped else self._constants(student, unit, plan.get("constants", []), tensors)
        write_record(self.outputs / unit, stem(name), {"test": name, "functions": functions, "calls": out,
                                                       "constants": constants}, tensors)

    @staticmethod
    def _constants(student: Any, unit: str, names: list, tensors: dict[str, torch.Tensor]) -> list:
        """``[[name, node]]``: the module-level constants of the student's file that the test reads."""
        found = []
        for k, name in enumerate(names):
            try:
                enc = Encoder(prefix=f"k{k}.")
                found.append([name, enc.encode(getattr(student(unit), str(name)))])
                tensors.update(enc.tensors)
            except Exception:   # no such name (the test's default then), a file that did not load, not data
                continue
        return found

    def _call(self, fn: Callable, k: int, args: list, kwargs: dict, tensors: dict[str, torch.Tensor],
              held: Held) -> tuple[dict, str | None]:
        """One call: (what it returned or raised, and what it changed; why the test's later calls are not
        run, or None). What it changed: which arguments (by index), the global random states, the state
        its held objects were left in (effects.py), and whether autograd was on in each forward pass of a
        module argument."""
        values = [*args, *kwargs.values()]
        watched = Unchanged("", *values, rng=True)
        modes: dict[int, list[bool]] = {i: [] for i, v in enumerate(values) if isinstance(v, torch.nn.Module)}
        hooks = [values[i].register_forward_hook(functools.partial(_note_grad_mode, modes[i])) for i in modes]
        stopped = None
        try:
            try:
                got = fn(*args, **kwargs)
            finally:
                for hook in hooks:
                    hook.remove()
            try:
                enc = Encoder(prefix=f"o{k}.", arguments=values)
                entry: dict = {"output": enc.encode(got)}
                found = gradients(got, values, enc)   # a loss: its gradient, for the judge's backward()
                if found is not None:
                    entry["gradients"] = found
                tensors.update(enc.tensors)
            except ExchangeError as err:
                entry = {"unreadable": str(err)}
        except BaseException as err:   # whatever the student's code raised, kept as data
            kind = type(err).__name__
            entry = {"raised": {"type": kind if getattr(builtins, kind, None) is type(err) else "",
                                "message": str(err)[:NOTE_CHARS], "readable": self.readable(err)[:NOTE_CHARS]}}
            if isinstance(err, self.stops):
                stopped = f"an earlier call of this test stopped it: {self.readable(err).splitlines()[0]}"
        entry["observed"] = {"changed": [i for i, (v, s) in enumerate(zip(values, watched.saved))
                                         if not Unchanged._same(v, s)],
                             "torch_rng": not torch.equal(torch.get_rng_state(), watched.rng_state),
                             "numpy_rng": not Unchanged._same_numpy_state(np.random.get_state(),
                                                                          watched.numpy_state),
                             "grad_modes": [[i, m] for i, m in modes.items()]}
        try:
            enc = Encoder(prefix=f"a{k}.")
            entry["after"] = held.after(enc)
            tensors.update(enc.tensors)
        except Exception as err:   # a folder holding a link, or more than the grader reads back
            entry["after_unreadable"] = str(err)[:NOTE_CHARS]
        return entry, stopped


def _note_grad_mode(modes: list[bool], module: torch.nn.Module, args: Any, output: Any) -> None:
    """A forward hook: whether autograd is on in this forward pass (the first thousand)."""
    if len(modes) < 1000:
        modes.append(torch.is_grad_enabled())


def write_unit_notes(outputs: Path, problems: dict, notes: dict, units: set[str]) -> None:
    """What the probe noted about each unit's file (missing, a notebook's cells...), for the judge."""
    for unit in units:
        write_record(outputs / unit, UNIT_RECORD, {"problems": problems.get(unit, []),
                                                   "notes": notes.get(unit, [])}, {})


def read_unit_notes(outputs: Path, unit: str) -> tuple[list[str], list[str]]:
    """(problems, notes) the probe wrote for ``unit``: text only, a few, each cut short."""
    try:
        found = read_record(outputs / unit, UNIT_RECORD)
    except ExchangeError:
        return [], []
    record = found[0] if found else {}

    def texts(key: str) -> list[str]:
        items = record.get(key, [])
        return [str(t)[:NOTE_CHARS] for t in items[:MAX_NOTES] if isinstance(t, str)] if isinstance(items, list) else []
    return texts("problems"), texts("notes")


# --------------------------------------------------------------------------------------------
# judge: the probe's records played back to the test, in a process without student code
# --------------------------------------------------------------------------------------------

class ReplayStudent:
    """The ``student`` fixture of a judge run: ``function(unit, name)`` returns a stand-in that
    gives back what the probe recorded for this test, call by call."""

    def __init__(self, outputs: Path, item: pytest.Item) -> None:
        self.outputs, self.item = outputs, item
        self.calls_made = 0
        self.produced = Outputs()
        self._records: dict[str, tuple[dict, dict] | None] = {}
        REPLAYED.active, REPLAYED.last = True, None

    def __call__(self, unit: str):
        raise GradingError("autograder error: this test reads the student's module itself, which a unit graded "
                           "apart cannot do (graded_apart.txt): call its functions through student.function")

    def _record(self, unit: str) -> tuple[dict, dict]:
        if unit not in self._records:
            try:
                self._records[unit] = read_record(self.outputs / unit, stem(self.item.name))
            except ExchangeError as err:
                raise GradingError(f"the record of your code's run for this test cannot be read: {err}.") from None
        found = self._records[unit]
        if found is None:
            raise GradingError(NO_OUTPUT + ".")
        record, _ = found
        if not (isinstance(record.get("functions"), dict) and isinstance(record.get("calls"), list)):
            raise GradingError("the record of your code's run for this test is malformed.")
        return found

    def constant(self, unit: str, name: str, default: Any = None) -> Any:
        """The constant of the student's file that the probe recorded, or ``default`` where it has none."""
        record, tensors = self._record(unit)
        found = record.get("constants")
        for entry in found if isinstance(found, list) else []:
            if isinstance(entry, list) and len(entry) == 2 and entry[0] == name:
                try:
                    return Decoder(tensors).decode(entry[1])
                except ExchangeError as err:
                    raise GradingError(f"the record of your file's {name} cannot be read: {err}.") from None
        return default

    def function(self, unit: str, name: str) -> Callable:
        record, _ = self._record(unit)
        problem = record["functions"].get(name, "")
        if isinstance(problem, str) and problem:
            raise GradingError(problem)
        if name not in record["functions"]:
            raise GradingError(f"{NO_OUTPUT} (no call of {name}() was recorded).")

        def replayed(*args, **kwargs):
            return self._replay(unit, name, args, kwargs)
        replayed.__name__ = name
        return replayed

    def _replay(self, unit: str, name: str, args: tuple, kwargs: dict) -> Any:
        record, tensors = self._record(unit)
        k = self.calls_made
        self.calls_made += 1
        entry = record["calls"][k] if k < len(record["calls"]) else None
        if not isinstance(entry, dict) or entry.get("function") != name:
            raise GradingError(f"{name}(): {NO_OUTPUT} (call {k + 1} of this test was not recorded).")
        if "not_run" in entry:
            raise GradingError(f"{name}() was not called: {str(entry['not_run'])[:NOTE_CHARS]}.")
        _, _, key = encode_call(k, args, kwargs, _fixtures(self.item), self.produced.ids, self.produced.held)
        if entry.get("digest") != key:
            raise GradingError(
                f"{name}(): in your code's run, call {k + 1} of this test was given other inputs than the grader's. "
                "Did your code change the model or tokenizer it was given (at import, or in an earlier call)? If "
                "not, this is an autograder error: tell your instructor.")
        observed = entry.get("observed")
        if not (isinstance(observed, dict) and isinstance(observed.get("changed"), list)):
            raise GradingError("the record of your code's run for this test is malformed.")
        REPLAYED.last = ([*args, *kwargs.values()], observed)
        if "after_unreadable" in entry:
            raise GradingError(f"{name}(): what it left in its arguments cannot be read back: "
                               f"{str(entry['after_unreadable'])[:NOTE_CHARS]}.")
        try:   # what the call left in its model, optimizer or folder, put into the test's own
            self.produced.held.apply_after(entry.get("after", []), tensors)
        except ExchangeError as err:
            raise GradingError(f"{name}(): {err}.") from None
        if isinstance(entry.get("raised"), dict):
            raise _replayed_exception(entry["raised"])
        if "unreadable" in entry:
            raise GradingError(f"{name}() returned a value the grader cannot read: {str(entry['unreadable'])[:200]}.")
        try:
            got = Decoder(tensors, arguments=[*args, *kwargs.values()]).decode(entry.get("output"))
            if "gradients" in entry:
                got = with_gradients(got, entry["gradients"], [*args, *kwargs.values()], Decoder(tensors))
        except ExchangeError as err:
            raise GradingError(f"{name}(): the record of what it returned cannot be read: {err}.") from None
        self.produced.add(k, got)
        return got


def _replayed_exception(raised: dict) -> BaseException:
    """An exception of the type the student's code raised (a builtin one, so that a test's
    ``pytest.raises(ValueError)`` still matches), carrying the message the probe wrote."""
    kind = raised.get("type") if isinstance(raised.get("type"), str) else ""
    base = getattr(builtins, kind, None) if re.fullmatch(r"[A-Za-z]+", kind or "") else None
    if not (isinstance(base, type) and issubclass(base, Exception)):
        base = RuntimeError
    readable = str(raised.get("readable", ""))[:NOTE_CHARS] or "your code raised an exception"
    try:
        err = type(base.__name__, (base,), {"replayed_message": readable})(str(raised.get("message", ""))[:NOTE_CHARS])
    except TypeError:   # a builtin whose constructor wants more than a message
        err = type("RuntimeError", (RuntimeError,), {"replayed_message": readable})(readable)
    return err
