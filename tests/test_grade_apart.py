"""Units graded apart (tests/autograder/apart.py, minillm/course/verdict.py): the student's code runs
in the sandbox only to record its outputs; the expected values, the comparisons and the points are
computed in a judge process it never runs in.

Hostile students hand in a unit's untouched stub (their honest code earns 0) or the reference, plus
code that goes for the checks themselves: a lazy answer that walks the stack frames and the garbage
collector for the expected values when it is compared; a thread that marks every recorded result
passed and a results file of full marks signed with the key read from the grader's memory; records
of its own outputs broken on purpose (not JSON, a link to a file of the grader's machine, too large,
an unknown kind, the wrong shape). Each scores exactly what its honest code earns, or loses the
tests whose records it broke, each with a message; the grader never crashes. (On the direct path,
where the checks ran in the student's process, the walker earned 5 of 13 logits points and the
forger 13 of 13.) Every unit graded apart: the reference earns every point, the stub none, its first
catalogued mistake loses points, and the walker and the forger score what the stub scores. (Every
catalogued mistake is judged apart, probe and judge as here, in tests/test_autograder.py.)

The class of every unit is graded here without a sandbox (the judge decides, whatever the mode);
the walker and the forger also run under bubblewrap, in tests/test_grade_sandbox.py's hostile class.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from test_grade_sandbox import REPO, _reference, _stub, need_bwrap
from test_one_mistake_one_objective import WRONG_SOFTMAX

from minillm.course.feedback import feedback_folder
from minillm.models.config import ModelConfig
from minillm.course.grade import grade_class

sys.path.insert(0, str(REPO / "tests" / "autograder"))
from exchange import Decoder, Encoder, ExchangeError, read_record, write_record  # noqa: E402

AUTOGRADER = REPO / "tests" / "autograder"
APART = [line.split("#")[0].strip() for line in (AUTOGRADER / "graded_apart.txt").read_text().splitlines()
         if line.split("#")[0].strip()]

# An object that looks for the grader's expected values when it is compared: its `shape` is read from
# the frame that asks for it, its `__array__` walks the frames above it for `expected` and, failing
# that, the garbage collector for a tensor of that shape. walker(unit) returns one from every function.
PEEK = '''
import gc
import sys

import numpy as np
import torch


class _Peek:
    @property
    def shape(self):
        frame = sys._getframe(1)
        while frame is not None:
            if isinstance(frame.f_locals.get("shape"), tuple):
                return frame.f_locals["shape"]
            frame = frame.f_back
        return ()

    def __array__(self, dtype=None, copy=None):
        frame = sys._getframe(1)
        while frame is not None:
            for name in ("expected", "exp", "ref"):
                value = frame.f_locals.get(name)
                if isinstance(value, (torch.Tensor, np.ndarray)):
                    return np.asarray(value.detach().numpy() if isinstance(value, torch.Tensor) else value, dtype)
            frame = frame.f_back
        found = [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.dim() == 1 and o.numel() > 100]
        return np.asarray(found[-1].detach().numpy() if found else [], dtype)

    def __float__(self):
        return float(np.asarray(self).reshape(-1)[0]) if np.asarray(self).size else 0.0

    def __iter__(self):
        return iter(np.asarray(self).tolist())

    def __len__(self):
        return len(np.asarray(self))
'''


def _functions(unit: str) -> list[str]:
    """The graded functions of a unit: the public functions its reference defines."""
    tree = ast.parse((REPO / "solutions" / f"{unit}.py").read_text(encoding="utf-8"))
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]


def walker_code(unit: str) -> str:
    """The unit's stub, then every graded function redefined to return a _Peek."""
    return "\n".join([_stub(unit), PEEK, *(f"def {name}(*args, **kwargs):\n    return _Peek()\n"
                                          for name in _functions(unit))])


def forger_code(unit: str) -> str:
    return _stub(unit) + FORGER.replace("__UNIT__", unit)

# A thread marks every recorded result passed; at exit, a results file of full marks is written over
# the grader's, signed with the key found in the grader's memory (the closure of its signer).
FORGER = '''
import atexit
import hashlib
import hmac
import ast
import json
import shutil
import sys
import threading
import time
from pathlib import Path

_grader = sys.modules.get("conftest")


def _mark_passed():
    while True:
        for result in list(getattr(getattr(_grader, "_STATE", None), "results", {}).values()):
            result.passed, result.output = True, ""
        time.sleep(0.002)


threading.Thread(target=_mark_passed, daemon=True).start()


def _key():
    for cell in getattr(getattr(_grader, "_SIGN", None), "__closure__", None) or ():
        if isinstance(cell.cell_contents, bytes):
            return cell.cell_contents
    return None


def _forge():
    argv = sys.argv
    paths = [Path(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == "--grade-json"]
    paths += [Path(argv[i + 1]).parent / "__UNIT__.json" for i, a in enumerate(argv[:-1]) if a == "--grade-outputs"]
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except Exception:
            data = {"tests": [], "max_score": 13, "extra_data": {"units": {"__UNIT__": {"max_score": 13}}}}
        for test in data["tests"]:
            test.update(score=test["max_score"], status="passed", output="")
        data["score"] = data["max_score"]
        for unit in data.get("extra_data", {}).get("units", {}).values():
            unit["score"] = unit["max_score"]
        raw = json.dumps(data).encode()
        try:
            path.write_bytes(raw)
            key = _key()
            if key:
                path.with_name(path.name + ".sig").write_text(hmac.new(key, raw, hashlib.sha256).hexdigest())
        except OSError:
            pass


atexit.register(_forge)
'''

# The reference's code, whose records of its own outputs are broken at exit, one test's in each way.
BREAKER = '''
import atexit
import json
import os
import sys
from pathlib import Path


def _break():
    argv = sys.argv
    folders = [Path(argv[i + 1]) / "logits" for i, a in enumerate(argv[:-1]) if a == "--grade-outputs"]
    for folder in folders:
        records = sorted(p for p in folder.glob("*.json") if p.name != "unit.json")
        for i, path in enumerate(records):
            if i == 0:
                path.write_text("{not json")
            elif i == 1:
                path.unlink()
                os.symlink("/etc/hostname", path)
            elif i == 2:
                path.write_bytes(b" " * (17 * 2**20))
            elif i == 3:
                record = json.loads(path.read_text())
                for call in record["calls"]:
                    call["output"] = {"pickle": "cos\\nsystem\\n(S'id'\\ntR."}
                path.write_text(json.dumps(record))


atexit.register(_break)
'''


# What a training call leaves in its arguments, wrong in ways the grader reads back from data: a link in
# the checkpoint folder; an optimizer file that is not safetensors (loading then skips it); AdamW's
# averages of a matrix loaded transposed, which training cannot go on with.
CHECKPOINT_LINK = """

_save = save_checkpoint


def save_checkpoint(model, optimizer, step, folder):
    import os
    _save(model, optimizer, step, folder)
    os.symlink("/etc/hostname", str(Path(folder) / "hostname.json"))
"""
OPTIMIZER_NOT_SAFETENSORS = """

_save = save_checkpoint


def save_checkpoint(model, optimizer, step, folder):
    _save(model, optimizer, step, folder)
    (Path(folder) / OPTIMIZER_FILE).write_bytes(b"PK\\x03\\x04 a zip archive, as torch.save writes")


def load_checkpoint(model, optimizer, folder):
    model.load_state_dict(load_file(str(Path(folder) / MODEL_FILE)))
    return int(json.loads((Path(folder) / STATE_FILE).read_text(encoding="utf-8"))["step"])
"""
STATE_OF_ANOTHER_SHAPE = """

_load = load_checkpoint


def load_checkpoint(model, optimizer, folder):
    step = _load(model, optimizer, folder)
    for state in optimizer.state.values():
        if state["exp_avg"].dim() == 2:
            state["exp_avg"] = state["exp_avg"].t().contiguous()
    return step
"""

# Students of the class beyond the reference, the stub, the attacks and the catalogued mistakes, each a
# code appended to the reference: {unit: {name: code}}.
EXTRA = {"logits": {"breaker": BREAKER},
         "sampling": {"wrong_softmax": WRONG_SOFTMAX["overflows"],
                      "torch_softmax": "\n\ndef softmax_with_temperature(logits, temperature):\n"
                                       "    return torch.softmax(logits / temperature, dim=-1)\n"},
         # A new module holding the original's own weight tensors: the judge must see them shared.
         "quantization": {"shallow_copy": "\n\ndef quantize_model(model, bits):\n"
                                          "    import copy\n    return copy.copy(model)\n"},
         "training": {"checkpoint_link": CHECKPOINT_LINK, "optimizer_not_safetensors": OPTIMIZER_NOT_SAFETENSORS,
                      "state_of_another_shape": STATE_OF_ANOTHER_SHAPE}}


def _results(out: Path, name: str) -> dict:
    return json.loads((feedback_folder(out) / name / "results.json").read_text(encoding="utf-8"))


# In a later unit's run (perplexity), code that rewrites every record the earlier unit's run (logits)
# left in the results folder, and its status: a lower score for the logits unit, were it allowed.
VANDAL = '''
import sys
from pathlib import Path

_argv = sys.argv
for _i, _a in enumerate(_argv[:-1]):
    if _a == "--grade-outputs":
        for _path in (Path(_argv[_i + 1]).parents[1] / "logits").rglob("*"):
            try:
                if _path.is_file():
                    _path.write_text("{}")
                    print("VANDAL rewrote", _path)
            except OSError as _err:
                print("VANDAL refused", type(_err).__name__)
'''


def test_a_later_unit_cannot_rewrite_an_earlier_units_records(tmp_path):
    """Under bubblewrap each unit's run writes only its own results folder (zygote.py, isolation.confine_writes):
    the perplexity file's attempt on the logits unit's records changes nothing, and the logits unit keeps
    every point."""
    need_bwrap()
    folder = tmp_path / "grader" / "tests" / "autograder"
    folder.mkdir(parents=True)
    for path in [*AUTOGRADER.glob("*.py"), *AUTOGRADER.glob("*.txt")]:
        if not path.name.startswith("test_grade_") or path.name in ("test_grade_logits.py", "test_grade_perplexity.py"):
            shutil.copy(path, folder / path.name)
    subs = tmp_path / "subs"
    (subs / "vandal").mkdir(parents=True)
    (subs / "vandal" / "logits.py").write_text(_reference("logits"), encoding="utf-8")
    (subs / "vandal" / "perplexity.py").write_text(_stub("perplexity") + VANDAL, encoding="utf-8")
    out = tmp_path / "grades.csv"
    [row] = grade_class(subs, out, timeout=240, autograder=folder, units=["logits", "perplexity"], sandbox="bwrap")
    assert row["status"] == "ok" and row["logits"] == row["logits_max"] > 0 and row["perplexity"] == 0, row
    assert row["total"] == row["logits_max"] < row["max_total"], row


@pytest.fixture(scope="module")
def apart_class(tmp_path_factory) -> tuple[dict, Path, dict]:
    """One class graded apart through `minillm grade` without a sandbox (the judge, not the student's
    process, decides), every unit of graded_apart.txt in each student's folder, so that the plan, the
    judge and each student's start are paid once: the reference; the frame walker and the forger in
    every unit (the forger's functions are the stubs': it scores what the untouched stubs score, and
    each of its tests says "not implemented yet"); and `mistake<k>`, whose <unit>.py is the k-th of that unit's mistakes here (its
    first catalogued one in tests/autograder/mistakes/, then EXTRA: the breaker among them), or no file
    once a unit has no more (such a unit is not run: 0 points and the autograder's "missing" message).
    Returns (rows by student, the CSV, {(student, unit): the mistake's name})."""
    tmp = tmp_path_factory.mktemp("apart")
    folder = tmp / "grader" / "tests" / "autograder"
    folder.mkdir(parents=True)
    for path in [*AUTOGRADER.glob("*.py"), *AUTOGRADER.glob("*.txt")]:
        if not path.name.startswith("test_grade_") or path.stem.removeprefix("test_grade_") in APART:
            shutil.copy(path, folder / path.name)
    students = {"reference": {u: _reference(u) for u in APART},
                "walker": {u: walker_code(u) for u in APART}, "forger": {u: forger_code(u) for u in APART}}
    wrong: dict[tuple[str, str], str] = {}
    catalogue = {u: [*((m.stem, _reference(u) + "\n\n" + m.read_text(encoding="utf-8"))
                       for m in sorted((AUTOGRADER / "mistakes").glob(f"{u}__*.py"))[:1]),
                     *((n, _reference(u) + code) for n, code in EXTRA.get(u, {}).items())] for u in APART}
    for k in range(max(len(c) for c in catalogue.values())):
        name = f"mistake{k}"
        students[name] = {}
        for unit, mistakes in catalogue.items():
            if k < len(mistakes):
                wrong[name, unit] = mistakes[k][0]
                students[name][unit] = mistakes[k][1]
    subs = tmp / "subs"
    for name, files in students.items():
        (subs / name).mkdir(parents=True)
        for unit, code in files.items():
            (subs / name / f"{unit}.py").write_text(code, encoding="utf-8")
    out = tmp / "grades.csv"
    rows = grade_class(subs, out, timeout=240, autograder=folder, units=APART, sandbox="process", jobs=2)
    return {r["student"]: r for r in rows}, out, wrong


def _unit_results(out: Path, student: str, unit: str) -> list[dict]:
    return [t for t in _results(out, student)["tests"] if t.get("extra_data", {}).get("unit") == unit]


def test_the_reference_earns_every_point_and_the_stubs_and_attacks_none(apart_class):
    by, out, _ = apart_class
    ref = by["reference"]
    assert ref["status"] == "ok" and ref["total"] == ref["max_total"] > 0, ref
    for unit in APART:
        assert ref[unit] == ref[f"{unit}_max"] > 0, (unit, ref)
    for name in ("walker", "forger"):
        row = by[name]
        assert (row["status"], row["total"], row["max_total"]) == ("ok", 0, ref["max_total"]), row
    forger = _results(out, "forger")["tests"]   # its files loaded (its code ran), and each test says why it failed
    assert all(t["output"].startswith("not implemented yet") for t in forger), [t["output"] for t in forger]
    walker = {t["name"].split(": ")[-1]: t["output"] for t in _unit_results(out, "walker", "logits")}
    assert "returned a _Peek, which is not numbers" in walker["test_next_token_logits"], walker


def test_records_broken_on_purpose_fail_their_tests_each_with_a_message(apart_class):
    by, out, wrong = apart_class
    [student] = [s for (s, _), mistake in wrong.items() if mistake == "breaker"]
    row = by[student]
    assert row["status"] == "ok" and 0 < row["logits"] < row["logits_max"], row
    failed = [t["output"] for t in _unit_results(out, student, "logits") if t["status"] == "failed"]
    assert len(failed) == 4, failed
    assert any("is not valid JSON" in f for f in failed), failed
    assert any("is not a plain file (a link?)" in f for f in failed), failed
    assert any("more than the" in f and "bytes" in f for f in failed), failed
    assert any("unknown or malformed kind 'pickle'" in f for f in failed), failed


@pytest.mark.parametrize("unit", APART)
def test_a_catalogued_mistake_loses_points_when_judged_apart(apart_class, unit):
    """Through `minillm grade`, the unit's first catalogued mistake and its mistakes here cost points
    (each catalogued one is judged apart in tests/test_autograder.py), and a student without a file for
    the unit is not run: it earns none, with the autograder's message."""
    by, _, wrong = apart_class
    mine = {student: mistake for (student, u), mistake in wrong.items() if u == unit}
    assert len([m for m in mine.values() if m.startswith(f"{unit}__")]) == 1
    for student, row in by.items():
        if not student.startswith("mistake"):
            continue
        assert row["status"] == "ok" and row[f"{unit}_max"] == by["reference"][f"{unit}_max"], row
        if student in mine:
            assert 0 <= row[unit] < row[f"{unit}_max"], (mine[student], row)
        else:
            assert row[unit] == 0 and f"{unit}: missing: no {unit}.py" in row["message"], (student, row)


def test_what_the_probe_forbids_and_lends_and_shared_weights_are_judged_from_data(apart_class):
    """Sampling: the grader's own softmax is lent, so a wrong softmax costs only SAMP-1, and a call of
    torch.softmax is refused in every test that calls it. Quantization: a returned module whose
    parameters are the argument's own is seen to share them."""
    by, out, wrong = apart_class
    student = {mistake: s for (s, _), mistake in wrong.items()}
    objectives = _results(out, student["wrong_softmax"])["extra_data"]["objectives"]
    lost = {o["objective"] for o in objectives if o["score"] < o["max_score"] and o["objective"].startswith("SAMP")}
    assert lost == {"SAMP-1"}, objectives
    outputs = [t["output"] for t in _unit_results(out, student["torch_softmax"], "sampling") if t["status"] == "failed"]
    assert outputs and all("your code called torch.softmax" in o for o in outputs), outputs
    outputs = [t["output"] for t in _unit_results(out, student["shallow_copy"], "quantization")
               if t["status"] == "failed"]
    assert any("shares weight tensors with the original" in o for o in outputs), outputs


def test_what_training_calls_leave_behind_is_judged_from_data(apart_class):
    """Training: what save_checkpoint wrote and load_checkpoint restored crosses back as data, and each way
    it can be wrong fails with its own message (the judge never reads a link, never unpickles)."""
    by, out, wrong = apart_class
    student = {mistake: s for (s, _), mistake in wrong.items()}
    failed = {m: [t["output"] for t in _unit_results(out, student[m], "training") if t["status"] == "failed"]
              for m in ("checkpoint_link", "optimizer_not_safetensors", "state_of_another_shape")}
    assert len(failed["checkpoint_link"]) == 3, failed
    assert all("hostname.json is not a plain file (a link?)" in f for f in failed["checkpoint_link"]), failed
    assert any("optimizer.safetensors is not a file safetensors can read" in f
               for f in failed["optimizer_not_safetensors"]), failed
    assert len(failed["state_of_another_shape"]) == 2, failed
    assert all("training could not go on after load_checkpoint" in f for f in failed["state_of_another_shape"]), failed


def test_values_cross_as_data_and_bad_records_are_refused(tmp_path):
    """Every kind a graded function returns comes back as it went (type, dtype, shape, requires_grad);
    a record that is not data the grader reads raises ExchangeError, never anything else."""
    import numpy as np

    value = {"t": torch.randn(3, 2, dtype=torch.bfloat16), "g": torch.ones(2, requires_grad=True),
             "rows": [("a", 0.25), ("b", float("nan"))], "n": np.int64(4), "arr": np.arange(3.0),
             "scalar": torch.tensor(2.5), "x": None, "flag": True, "big": 2**70, "obj": object(),
             "cfg": ModelConfig("llama", 50, 32, 64, 2, 4, 2, 8, 5e5, 1e-5, 128, True, False, eos_token_id=[1, 2])}
    enc = Encoder()
    tree = enc.encode(value)
    write_record(tmp_path, "r", {"v": tree}, enc.tensors)
    record, tensors = read_record(tmp_path, "r")
    got = Decoder(tensors).decode(record["v"])
    assert torch.equal(got["t"], value["t"]) and got["t"].dtype == torch.bfloat16
    assert got["g"].requires_grad and got["scalar"].shape == () and float(got["scalar"]) == 2.5
    assert got["rows"][0] == ("a", 0.25) and type(got["rows"]) is list and np.isnan(got["rows"][1][1])
    assert type(got["n"]) is np.int64 and np.array_equal(got["arr"], value["arr"]) and got["big"] == 2**70
    assert got["x"] is None and got["flag"] is True and type(got["obj"]).__name__ == "object"
    assert got["cfg"] == value["cfg"] and type(got["cfg"]) is ModelConfig
    for bad in ({"float": 1.5}, {"int": True}, {"tensor": "t0"}, {"list": {}}, {"str": "a", "int": 1},
                {"tensor": "missing", "requires_grad": False}, {"fixture": "tiny_model", "fingerprint": ""},
                {"npscalar": "object", "value": {"int": 1}}, "text", {"x": 1},
                {"config": {"dict": [[{"str": "__class__"}, {"int": 1}]]}}, {"config": {"dict": []}}):
        with pytest.raises(ExchangeError):
            Decoder(tensors).decode(bad)
    deep: dict = {"none": None}
    for _ in range(40):
        deep = {"list": [deep]}
    with pytest.raises(ExchangeError, match="nested deeper"):
        Decoder({}).decode(deep)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ExchangeError, match="does not hold a JSON object"):
        read_record(tmp_path, "bad")
    (tmp_path / "t.json").write_text("{}")
    (tmp_path / "t.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ExchangeError, match="not a valid safetensors file"):
        read_record(tmp_path, "t")
    assert read_record(tmp_path, "absent") is None


def test_modules_arguments_and_earlier_outputs_cross_as_references():
    """A returned module crosses by its parameters, one that is an argument's own parameter as that very
    parameter; a returned argument as the argument itself; an earlier call's output, passed on, as that
    output. A reference to something the call did not have is refused."""
    given = torch.nn.Linear(3, 2)
    returned = torch.nn.Sequential(torch.nn.Linear(3, 2))
    returned[0].bias = given.bias                                  # shares the argument's memory
    enc = Encoder(arguments=[given])
    tree = enc.encode([returned, given])
    got, same = Decoder(enc.tensors, arguments=[given]).decode(tree)
    params = dict(got.named_parameters())
    assert same is given and isinstance(got, torch.nn.Module) and params["0.bias"] is given.bias
    assert torch.equal(params["0.weight"], returned[0].weight) and params["0.weight"] is not returned[0].weight
    with pytest.raises(ExchangeError, match="argument"):
        Decoder(enc.tensors, arguments=[]).decode(tree)
    earlier = [1.5, 2.5]
    node = Encoder(outputs={id(earlier): 3}).encode({"rows": earlier})
    assert node == {"dict": [[{"str": "rows"}, {"output": 3}]]}
    assert Decoder({}, outputs={3: earlier}).decode(node)["rows"] is earlier
    with pytest.raises(ExchangeError, match="call 3"):
        Decoder({}, outputs={}).decode(node)
