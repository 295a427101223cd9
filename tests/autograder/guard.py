"""What keeps a graded submission from raising its own score: tamper checks, the reference out
of reach, signed results.

A student's code runs inside the grading process, so it could reach into it. The grader
defends against the ways a student would try (the README's "What the grader guarantees" says
what is out of reach of any check made in the same process):

* :class:`Watch` records, before any student code runs, which function every name of the
  grader's modules, pytest, pluggy, Python's builtins, ``math``, ``json``, NumPy and torch holds
  (and the code inside each Python function). After each test it finds what was replaced
  (``grading.expect_close = lambda *a, **k: None``, ``torch.allclose = ...``, a method set on
  ``torch.Tensor``), puts the original back and says what it was: the unit then scores 0.
* :func:`hide_reference` installs an audit hook (PEP 578; Python cannot remove one) that refuses
  to open any file under ``solutions/`` (the autograder's repository's, and the installed
  minillm's), so ``from solutions.logits import *`` or reading the file fails with a message,
  unless the reference itself is being graded.
* :func:`signer`: ``minillm grade`` hands each run a secret key through a pipe that is read and
  closed before any student code runs; the results file is signed with it (HMAC-SHA256, in
  ``<results>.sig``), so a results file the code wrote or changed is detected and scores 0.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
import types
from pathlib import Path
from typing import Callable

from grading import ForbiddenCall

WATCHED_MODULES = ("builtins", "math", "json", "hmac", "hashlib", "random", "numpy", "numpy.testing", "torch",
                   "torch.nn.functional", "torch.testing", "pytest", "grading", "submission", "grader_options")
WATCHED_PREFIXES = ("_pytest.", "pluggy.", "test_grade_", "minillm")   # every loaded module of these
WATCHED_CLASSES = ("torch.Tensor", "torch.nn.Module", "torch.nn.Linear", "torch.nn.Embedding")


def _module_classes(module: types.ModuleType) -> list[type]:
    """The classes defined in ``module`` itself (not imported into it)."""
    return [v for v in vars(module).values() if isinstance(v, type) and getattr(v, "__module__", None) == module.__name__]


class Watch:
    """A snapshot of what the watched names hold; :meth:`check` finds and undoes changes."""

    def __init__(self, extra_modules: tuple[types.ModuleType, ...] = ()) -> None:
        modules = [sys.modules[name] for name in WATCHED_MODULES if name in sys.modules]
        modules += [m for name, m in list(sys.modules.items()) if name.startswith(WATCHED_PREFIXES) and m is not None]
        modules += list(extra_modules)
        self.names: dict[tuple[int, str], tuple[object, str, object, object]] = {}   # (id(owner), name) -> ...
        self.owners: dict[int, object] = {}
        self.class_keys: dict[int, frozenset] = {}
        classes = [self._resolve(path) for path in WATCHED_CLASSES]
        for module in modules:
            self._record(module, module.__name__)
            if module.__name__ not in ("builtins", "torch", "numpy"):   # their classes are C types or too many
                classes += _module_classes(module)
        for cls in classes:
            if cls is not None:
                self._record(cls, f"{cls.__module__}.{cls.__qualname__}")
                self.class_keys[id(cls)] = frozenset(vars(cls))

    @staticmethod
    def _resolve(path: str):
        module, _, name = path.rpartition(".")
        owner = sys.modules.get(module)
        for part in ([] if owner is not None else module.split(".")[1:]):
            owner = getattr(owner, part, None)
        return getattr(owner, name, None) if owner is not None else None

    def _record(self, owner: object, label: str) -> None:
        self.owners[id(owner)] = owner
        for name, value in list(vars(owner).items()):
            if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
                code = getattr(value, "__code__", None)
                if f"{label}.{name}" not in _SETTINGS:
                    self.names[(id(owner), name)] = (value, f"{label}.{name}", code,
                                                     getattr(value, "__defaults__", None))

    def check(self) -> list[str]:
        """The names whose function changed since the snapshot (each put back), as "module.name"."""
        changed = []
        for (owner_id, name), (value, label, code, defaults) in self.names.items():
            owner = self.owners[owner_id]
            now = vars(owner).get(name, _MISSING)
            if now is not value and _library_wrapper(now, value):
                self.names[(owner_id, name)] = (now, label, getattr(now, "__code__", None),
                                                getattr(now, "__defaults__", None))
            elif now is not value:
                changed.append(label)
                try:
                    setattr(owner, name, value)
                except (AttributeError, TypeError):
                    pass
            elif code is not None and (value.__code__ is not code or value.__defaults__ is not defaults):
                changed.append(label)
                value.__code__, value.__defaults__ = code, defaults
        for owner_id, keys in self.class_keys.items():
            cls = self.owners[owner_id]
            for name in set(vars(cls)) - keys - _CACHES:   # a method added to a class hides the inherited one
                changed.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
                try:
                    delattr(cls, name)
                except (AttributeError, TypeError):
                    pass
        return changed


_MISSING = object()
_CACHES = frozenset({"__slotnames__"})   # what copy/pickle store on a class the first time they meet it
_SETTINGS = frozenset({"torch.Storage"})  # names torch rebinds itself (torch.set_default_dtype: reset before each test)


def _library_wrapper(new: object, old: object) -> bool:
    """Whether ``new`` is torch's own wrapper around ``old`` (importing torch._dynamo, which
    torch.compile does, rebinds ``torch.manual_seed`` and a few others to such wrappers)."""
    code = getattr(new, "__code__", None)
    if code is None or not os.path.realpath(code.co_filename).startswith(_TORCH_DIR):
        return False
    while new is not None and new is not old:
        new = getattr(new, "__wrapped__", None)
    return new is old


def _package_dir(name: str) -> str:
    module = sys.modules.get(name)
    return os.path.realpath(os.path.dirname(module.__file__)) + os.sep if module and module.__file__ else "\0"


_TORCH_DIR = _package_dir("torch")


_REFERENCE: dict = {}   # the latest run's rules for the one audit hook (hide_reference)


def hide_reference(folders: list[Path], allowed: Callable[[], bool], on_refuse: Callable[[str], None]) -> None:
    """From now on, opening a file under one of ``folders`` raises ForbiddenCall (after
    ``on_refuse("solutions/logits.py")``, the file's folder and name) unless ``allowed()``. An audit hook, so it stays for the life of the
    process; one per process (Python cannot remove a hook, and every open() calls them all),
    which follows the rules of the latest call (pytest runs started in one process in turn)."""
    _REFERENCE.update(roots=tuple(os.path.realpath(folder) + os.sep for folder in folders), allowed=allowed,
                      on_refuse=on_refuse)
    if _REFERENCE.get("installed"):
        return
    _REFERENCE["installed"] = True

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path = os.fsdecode(args[0])
        if not os.path.realpath(path).startswith(_REFERENCE["roots"]) or _REFERENCE["allowed"]():
            return
        file = Path(path)
        if file.parent.name == "__pycache__":   # solutions/__pycache__/logits.cpython-311.pyc: solutions/logits.py
            file = file.parent.parent / (file.name.split(".")[0] + ".py")
        name = f"{file.parent.name}/{file.name}"
        _REFERENCE["on_refuse"](name)
        raise ForbiddenCall(f"your code opened {name}, the reference solution. Grading is of your own code: "
                            "the unit scores 0. Write the functions yourself.")

    sys.addaudithook(hook)


def signer(key_fd: int | None) -> Callable[[bytes], str] | None:
    """Read the run's key from the pipe ``key_fd`` (and close it); -> sign(data) -> hex HMAC-SHA256,
    or None when no key was given (a run not started by ``minillm grade``)."""
    if key_fd is None:
        return None
    chunks = []
    while chunk := os.read(key_fd, 4096):
        chunks.append(chunk)
    os.close(key_fd)
    key = bytes.fromhex(b"".join(chunks).decode())
    return lambda data: hmac.new(key, data, hashlib.sha256).hexdigest()
