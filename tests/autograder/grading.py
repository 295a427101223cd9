"""Checks that fail with a message a student can act on.

    from grading import expect_close, expect_shape

    expect_close(got, expected, "the logits of the last position", atol=1e-5, rtol=1e-5)
    expect_shape(got, (batch, seq, vocab), "the logits")

``got`` may be a torch tensor, a NumPy array, a Python number or a (nested) list/tuple of
numbers; ``expected`` likewise. The type and the shape are checked first, then the values.
A failure says what was expected, what came back, both shapes, the largest difference and
the first index where the two differ.

Tolerance policy (see the README): every call passes its own ``atol``/``rtol`` with a comment
saying why. Float32 on CPU, Apple silicon and CUDA sums in different orders, so a reduction
over a few hundred terms differs in the last ~5 digits: rtol 1e-5 is the usual choice, 1e-4
when a result went through a whole model forward pass, atol 1e-6 for values near zero.
"""

from __future__ import annotations

import importlib

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["expect_close", "expect_shape", "expect_float", "expect_int", "to_array", "describe", "random_text",
           "GradingError", "Unchanged", "show_token", "show_tokens"]


class GradingError(AssertionError):
    """A check on the student's answer failed; the message is written for the student."""


def describe(value: Any) -> str:
    """A short description of a value's type (and shape/dtype when it has one)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(value, torch.Tensor):
        return f"torch.Tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"numpy array of shape {value.shape}, dtype {value.dtype}"
    if isinstance(value, np.generic):
        return f"NumPy {type(value).__name__}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def to_array(value: Any, what: str = "the value", role: str = "your function returned") -> np.ndarray:
    """Convert a tensor / array / number / list of numbers to a float64 (or bool/int) NumPy array.

    Raises GradingError with a readable message when the value cannot be read as numbers.
    """
    if value is None:
        raise GradingError(
            f"{what}: {role} None. Did you forget the `return` statement at the end of the function?"
        )
    try:
        import torch
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu()
            if t.is_complex():
                return t.resolve_conj().numpy().astype(np.complex128)
            if t.dtype == torch.bool:
                return t.numpy()
            if t.is_floating_point():
                return t.to(torch.float64).numpy()
            return t.to(torch.int64).numpy()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, (str, bytes, dict, set)):
        raise GradingError(
            f"{what}: {role} a {type(value).__name__} ({_short(value)}), but numbers were expected."
        )
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists, odd objects
        raise GradingError(
            f"{what}: {role} a {describe(value)} that cannot be read as an array of numbers ({err})."
        ) from None
    if arr.dtype == object:
        # A list of tensors, for instance: try element-wise.
        try:
            arr = np.asarray([to_array(v, what, role) for v in value])
        except GradingError:
            raise
        except Exception:
            try:
                first = describe(value[0]) if len(value) else "none"
            except Exception:   # not a sequence at all
                raise GradingError(f"{what}: {role} a {describe(value)}, which is not numbers.") from None
            raise GradingError(
                f"{what}: {role} a {describe(value)} whose items are not all numbers (first item: {first})."
            ) from None
    if arr.dtype.kind not in "biufc":
        raise GradingError(f"{what}: {role} values of type {arr.dtype}, but numbers were expected.")
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64)
    return arr


def expect_float(got: Any, what: str = "the result") -> float:
    """Fail unless ``got`` is a Python float (a 0-d tensor or NumPy float32 is not); return it.

    Contracts that say "a Python float" mean it: a 0-d tensor keeps its autograd graph and device,
    prints as ``tensor(3.2)``, and breaks ``json.dump`` and f-string formats downstream."""
    if isinstance(got, bool) or not isinstance(got, (float, int)):
        hint = " Convert it with float(...) or .item()." if hasattr(got, "item") else ""
        raise GradingError(f"{what}: expected a Python float (the contract says so), got a {describe(got)}.{hint}")
    return float(got)


def expect_int(got: Any, what: str = "the result") -> int:
    """Fail unless ``got`` is a Python int (a NumPy int64, a 0-d tensor, ``4000.0`` or ``True`` is not);
    return it. A NumPy integer breaks ``json.dump`` the way a 0-d tensor breaks a float contract."""
    if isinstance(got, bool) or not isinstance(got, int):
        hint = " Convert it with int(...)." if hasattr(got, "__int__") else ""
        raise GradingError(f"{what}: expected a Python int (the contract says so), got a {describe(got)}"
                           f"{f' ({got!r})' if isinstance(got, (bool, float, np.generic)) else ''}.{hint}")
    return got


class _Replayed:
    """In a judged run (apart.py) the student's calls happened in another process: ``active`` is
    True there, and ``last`` holds the last replayed call's arguments and what that process saw the
    call change ({"changed": [argument indices], "torch_rng": bool, "numpy_rng": bool, "grad_modes":
    [[argument index, [bool, ...]], ...]}), which :class:`Unchanged` and :class:`GradModes` report
    instead of measuring."""

    active: bool = False
    last: tuple[list, dict] | None = None


REPLAYED = _Replayed()


class Unchanged:
    """Snapshot tensors, NumPy arrays, modules, optimizers and (nested) lists/dicts of them; ``check()`` fails with
    a student-readable message when any of them changed since (a graded function must leave its
    inputs alone), and, with ``rng=True``, when torch's or NumPy's global random state moved (it must
    draw from its own generator).

        inputs = Unchanged("the logits you were given", logits, rng=True)
        got = fn(logits, ...)
        inputs.check("softmax_with_temperature(...)")
    """

    def __init__(self, what: str, *values: Any, rng: bool = False) -> None:
        import torch
        self.what = what
        self.values = values
        self.saved = [self._copy(v) for v in values]
        self.rng_state = torch.get_rng_state() if rng else None
        self.numpy_state = np.random.get_state() if rng else None

    @classmethod
    def _copy(cls, value: Any) -> Any:
        import torch
        if isinstance(value, torch.nn.Module):
            return {k: v.detach().clone() for k, v in value.state_dict().items()}
        if isinstance(value, torch.optim.Optimizer):   # its state (AdamW's averages) and hyperparameters
            return cls._copy(value.state_dict())
        if isinstance(value, torch.Tensor):
            return value.detach().clone()
        if isinstance(value, np.ndarray):
            return value.copy()
        if isinstance(value, dict):
            return {k: cls._copy(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [cls._copy(v) for v in value]
        return value

    @classmethod
    def _same(cls, value: Any, saved: Any) -> bool:
        import torch
        if isinstance(value, torch.nn.Module):
            state = value.state_dict()
            return state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
        if isinstance(value, torch.optim.Optimizer):
            return cls._same(value.state_dict(), saved)
        if isinstance(value, torch.Tensor):
            if value.shape != saved.shape or value.dtype != saved.dtype:
                return False
            if torch.equal(value, saved):
                return True
            nan = value.isnan() if value.is_floating_point() else None      # NaN != NaN: compare the rest
            return nan is not None and torch.equal(nan, saved.isnan()) and torch.equal(value[~nan], saved[~nan])
        if isinstance(value, np.ndarray):
            return value.shape == saved.shape and bool(np.array_equal(value, saved, equal_nan=value.dtype.kind == "f"))
        if isinstance(value, dict):
            return value.keys() == saved.keys() and all(cls._same(value[k], saved[k]) for k in saved)
        if isinstance(value, (list, tuple)):
            return len(value) == len(saved) and all(cls._same(v, s) for v, s in zip(value, saved))
        return value == saved

    def _observed(self) -> tuple[bool, bool, bool]:
        """(an input changed, torch's global random state moved, NumPy's moved): measured here, or,
        in a judged run, as the student's process saw its last call (values matched by identity)."""
        import torch
        if REPLAYED.active:
            args, seen = REPLAYED.last or ([], {})
            changed = {i for i in seen.get("changed", []) if isinstance(i, int)}
            touched = any(any(v is a for v in self.values) for i, a in enumerate(args) if i in changed)
            return (touched, self.rng_state is not None and seen.get("torch_rng") is True,
                    self.numpy_state is not None and seen.get("numpy_rng") is True)
        return (not all(self._same(v, s) for v, s in zip(self.values, self.saved)),
                self.rng_state is not None and not torch.equal(torch.get_rng_state(), self.rng_state),
                self.numpy_state is not None and not self._same_numpy_state(np.random.get_state(),
                                                                              self.numpy_state))

    def check(self, call: str) -> None:
        changed, torch_moved, numpy_moved = self._observed()
        if changed:
            raise GradingError(f"{call} changed {self.what}. A function must not modify its inputs: work on a "
                               "copy (x.clone(), copy.deepcopy(model)) or use out-of-place operations "
                               "(masked_fill, not masked_fill_; x = x / t, not x /= t).")
        if torch_moved:
            raise GradingError(f"{call} changed torch's GLOBAL random state (torch.manual_seed, or a draw without "
                               "the generator you were given). Draw with your own torch.Generator so that the "
                               "caller's random numbers do not depend on your function.")
        if numpy_moved:
            raise GradingError(f"{call} changed NumPy's GLOBAL random state (np.random.seed, or a draw with "
                               "np.random.randint/choice/...). Draw with your own generator, "
                               "rng = np.random.default_rng(seed), so that the caller's random numbers do not "
                               "depend on your function.")

    @staticmethod
    def _same_numpy_state(state: tuple, saved: tuple) -> bool:
        """np.random.get_state(): (name, key array, position, has_gauss, cached_gaussian)."""
        return len(state) == len(saved) and all(
            np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b for a, b in zip(state, saved))


class GradModes:
    """Whether autograd was on in each forward pass of ``module`` from now on (a forward hook): a
    function that only measures (an evaluation) runs the model under ``torch.no_grad()``.

        passes = GradModes(model)
        evaluate(model, ids, 32)
        if any(passes.modes): ...

    In a judged run the calls happened in the student's process: ``modes`` is what that process saw
    in the last replayed call that was given ``module``."""

    def __init__(self, module: Any) -> None:
        import torch
        self.module = module
        self._seen: list[bool] = []
        module.register_forward_hook(lambda m, args, output: self._seen.append(torch.is_grad_enabled()))

    @property
    def modes(self) -> list[bool]:
        if not REPLAYED.active:
            return list(self._seen)
        args, seen = REPLAYED.last or ([], {})
        found = seen.get("grad_modes") if isinstance(seen.get("grad_modes"), list) else []
        for entry in found:
            if (isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int and 0 <= entry[0] < len(args)
                    and args[entry[0]] is self.module and isinstance(entry[1], list)):
                return [m is True for m in entry[1]]
        return []


def expect_shape(got: Any, shape: Sequence[int | None], what: str = "the result") -> None:
    """Fail unless ``got`` has shape ``shape`` (a None entry matches any size)."""
    shape = tuple(shape)
    if got is None:
        raise GradingError(f"{what}: expected shape {shape}, but your function returned None "
                           "(a missing `return`?).")
    if hasattr(got, "shape"):
        actual = tuple(got.shape)
    else:
        actual = to_array(got, what).shape
    ok = len(actual) == len(shape) and all(s is None or s == a for s, a in zip(shape, actual))
    if not ok:
        hint = ""
        if len(actual) == len(shape) + 1 and actual[0] == 1:
            hint = " It has an extra leading dimension of size 1: did you forget to remove the batch dimension?"
        elif len(actual) + 1 == len(shape) and shape[0] == 1:
            hint = " It is missing the leading batch dimension of size 1."
        elif sorted(actual) == sorted(s for s in shape if s is not None) and len(actual) == len(shape):
            hint = " The sizes are right but in another order: check which dimension is which (transpose?)."
        raise GradingError(f"{what}: expected shape {shape}, got shape {actual} ({describe(got)}).{hint}")


def expect_close(
    got: Any,
    expected: Any,
    what: str = "the result",
    atol: float = 1e-6,
    rtol: float = 1e-5,
) -> None:
    """Fail unless ``got`` equals ``expected`` within ``|got - expected| <= atol + rtol * |expected|``.

    The shape is compared first (a 0-d tensor and a Python float both have shape ()).
    NaN matches only NaN.
    """
    exp = to_array(expected, what, role="the reference gave")
    arr = to_array(got, what)
    if arr.shape != exp.shape:
        if arr.size == exp.size and arr.size > 0:
            extra = " It has the right number of values: reshape or squeeze it."
        else:
            extra = ""
        raise GradingError(
            f"{what}: expected shape {exp.shape}, got shape {arr.shape} ({describe(got)}).{extra}"
        )
    if arr.size == 0:
        return
    if arr.dtype.kind == "c" or exp.dtype.kind == "c":
        close = np.isclose(arr, exp, atol=atol, rtol=rtol, equal_nan=True)
    else:
        a, e = arr.astype(np.float64), exp.astype(np.float64)
        close = np.isclose(a, e, atol=atol, rtol=rtol, equal_nan=True)
    if bool(close.all()):
        return
    diff = np.abs(arr.astype(np.complex128 if arr.dtype.kind == "c" else np.float64)
                  - exp.astype(np.complex128 if exp.dtype.kind == "c" else np.float64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    bad = np.argwhere(~close)
    first = tuple(int(i) for i in bad[0])
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    n_bad, n_all = len(bad), close.size
    lines = [
        f"{what}: values differ from the expected ones "
        f"({n_bad} of {n_all} value{'s' if n_all != 1 else ''} outside the tolerance atol={atol:g}, rtol={rtol:g}).",
        f"  shape: {exp.shape} (matches)",
    ]
    if arr.ndim == 0:
        lines.append(f"  expected {_num(exp[()])}, got {_num(arr[()])} (difference {_num(diff[()])})")
    else:
        lines.append(f"  first differing index {first}: expected {_num(exp[first])}, got {_num(arr[first])}")
        lines.append(f"  largest difference {_num(diff[worst])} at index {tuple(int(i) for i in worst)}: "
                     f"expected {_num(exp[worst])}, got {_num(arr[worst])}")
        if arr.size <= 8:
            lines.append(f"  expected {_fmt_list(exp)}")
            lines.append(f"  got      {_fmt_list(arr)}")
    if np.isnan(arr).any() and not np.isnan(exp).any():
        lines.append("  Your result holds NaN: look for log(0), 0/0, or -inf - (-inf).")
    elif np.isinf(arr).any() and not np.isinf(exp).any():
        lines.append("  Your result holds inf: look for log(0) or exp() of a large number.")
    raise GradingError("\n".join(lines))


def show_token(token: Any, token_id: int | None = None) -> str:
    """A token's text for a message: its repr, plus its id when the text holds U+FFFD ('\ufffd'), which
    is how one byte of a character split over several byte-level tokens prints: two such tokens
    look the same, and only the ids tell them apart (``show_token('\ufffd', 171)`` -> ``'\ufffd' (id 171)``)."""
    text = repr(token)
    if token_id is not None and isinstance(token, str) and "\ufffd" in token:
        text += f" (id {int(token_id)})"
    return text


def show_tokens(tokens: Sequence[Any], token_ids: Sequence[int] | None = None) -> str:
    """A list of tokens for a message, as :func:`show_token` writes each (ids where known)."""
    ids = list(token_ids) if token_ids is not None else [None] * len(tokens)
    return "[" + ", ".join(show_token(t, i) for t, i in zip(tokens, ids + [None] * (len(tokens) - len(ids)))) + "]"


def _num(x: Any) -> str:
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return repr(x)
    if math.isnan(xf) or math.isinf(xf):
        return str(xf)
    return f"{xf:.6g}"


def _fmt_list(a: np.ndarray) -> str:
    return "[" + ", ".join(_num(v) for v in a.reshape(-1)) + "]"


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def random_text(rng, texts: Sequence[str], min_chars: int = 40, max_chars: int = 300) -> str:
    """A fresh slice of one of ``texts``, cut at word boundaries, ``min_chars``..``max_chars`` long
    (shorter only when the chosen text is). ``rng`` is a ``random.Random`` (seed it with grader_seed)."""
    text = texts[rng.randrange(len(texts))]
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == " " and i + 1 < len(text) - min_chars]
    start = rng.choice(starts)
    length = rng.randint(min_chars, max_chars)
    piece = text[start : start + length]
    if start + length < len(text) and " " in piece[min_chars // 2 :]:
        piece = piece[: piece.rindex(" ")]  # end on a word boundary
    piece = piece.strip()
    return piece or text.strip()



class ForbiddenCall(BaseException):
    """Student code called a library function that is the answer itself (see :func:`block`).
    A BaseException, so that a student's ``except Exception`` cannot swallow it."""


def block(monkeypatch, *paths: str) -> None:
    """For the rest of the test, calling any of ``paths`` fails it with a student-readable message.

    ``paths`` are dotted names of functions or methods: "minillm.inference.scoring.perplexity",
    "minillm.models.qwen2.RMSNorm.forward", "torch.Tensor.softmax". Block them AFTER computing the
    reference values and BEFORE importing the student's module, so that ``from minillm import x``
    in the student's file binds the stand-in too.
    """
    for path in paths:
        def refuse(*args, _path=path, **kwargs):
            raise ForbiddenCall(
                f"your code called {_path}, the ready-made version of what this exercise asks you "
                "to write. Compute it yourself with plain tensor operations."
            )
        owner, name = _owner(path)
        monkeypatch.setattr(owner, name, refuse)


def _owner(path: str):
    """("a.b.C.f") -> (the object holding f, "f"): the longest importable module prefix, then
    attributes. (pytest's own string targets look attributes up first, so "minillm.generate.x" would
    find the generate() function that minillm re-exports, where a module of that name was meant.)"""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:-1]:
            owner = getattr(owner, part)
        return owner, parts[-1]
    raise ValueError(f"block: no module in {path!r}")
