"""Values as data: how a call's arguments and a student's outputs cross between the grader and the sandbox.

A value becomes a JSON tree plus named tensors (a safetensors file): nothing in either format can
run code when read, unlike pickle. Each node of the tree is a one-key object naming its kind::

    {"none": null}  {"bool": true}  {"int": 3}  {"float": "0x1.8p+1"}  {"str": "the"}
    {"list": [...]}  {"tuple": [...]}  {"dict": [[key node, value node], ...]}
    {"tensor": "t0", "requires_grad": false}  {"ndarray": "t1"}  {"npscalar": "float32", "value": node}
    {"generator": "t2"}                     (a CPU torch.Generator, by its state; arguments only)
    {"config": {"dict": [...]}}             (a minillm ModelConfig, by its fields; "gpt2config": a GPT2Config)
    {"fixture": "tiny_model", "fingerprint": "ab12..."}   (a grader fixture, by name; arguments only)
    {"output": 2}                            (what call 2 of the test returned, passed on as it is; arguments only)
    {"built": "_tied_model", "args": [...], "kwargs": [...], "fingerprint": "..."}
                                             (an object the test built with a function of its module; arguments only)
    {"argument": 0}                          (the call's own argument, returned; outputs only)
    {"module": "Transformer", "parameters": [["name", node or {"shared": [argument, "name"]}], ...]}
                                             (a module, by its parameters; outputs only)
    {"other": "MyClass", "repr": "..."}      (anything else the student returned: its type and repr only)
    {"model": ...} {"optimizer": ...} {"folder": ...} {"same": 0, ...}
                                             (an argument a call may change, by its state: effects.py)

A pandas DataFrame crosses as its list of rows (``to_dict("records")``).

Floats travel as ``float.hex`` strings (exact, and NaN/inf need no JSON extension). Reading checks
every node, the depth, the count and the file sizes, and raises :class:`ExchangeError` with a
message for the student, never anything else: a file the graded code forged or broke fails its
test, not the grader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from minillm.models.config import GPT2Config, ModelConfig

MAX_JSON_BYTES = 16 * 2**20      # one test's record: thousands of calls' small outputs fit in far less
MAX_TENSOR_BYTES = 256 * 2**20   # one test's tensors: the largest output a unit asks for is a few MB
MAX_DEPTH = 32
MAX_NODES = 200_000
MAX_REPR = 200


class ExchangeError(ValueError):
    """A value cannot be written or read as data (too large, a malformed file, an unknown kind)."""


class Foreign:
    """Stands in, in the grader's process, for an object of a type that cannot cross as data: it
    has only its type's name (``type(x).__name__`` is that name) and its repr."""

    def __init__(self, text: str) -> None:
        self._repr = text

    def __repr__(self) -> str:
        return self._repr


def _foreign(type_name: str, text: str) -> Foreign:
    name = re.sub(r"\W", "_", type_name)[:60] or "object"
    return type(name, (Foreign,), {})(text[:MAX_REPR])


class Encoder:
    """Turns values into JSON nodes, collecting their tensors (``tensors``: name -> CPU tensor).
    For a call's arguments: ``fixtures``, objects passed by name (id -> (name, fingerprint));
    ``outputs``, earlier calls' outputs (id -> call number); ``built``, objects the test built with
    a function of its module (id -> (function name, args, kwargs)); ``held``, the test's objects that
    cross by their state (effects.Held: models, optimizers, folders). For an output: ``arguments``,
    the call's arguments (a returned argument crosses as itself, and a returned module's parameter
    that shares an argument module's memory as that parameter).
    ``prefix``: of the tensors' names, so that several values' tensors can share one file."""

    def __init__(self, fixtures: dict[int, tuple[str, str]] | None = None, prefix: str = "",
                 outputs: dict[int, int] | None = None, built: dict[int, tuple] | None = None,
                 arguments: list | None = None, held: Any = None) -> None:
        self.fixtures, self.prefix, self.outputs = fixtures or {}, prefix, outputs or {}
        self.built, self.held = built or {}, held
        self.arguments = {id(a): i for i, a in enumerate(arguments or []) if isinstance(a, (torch.nn.Module,
                                                                                          torch.Tensor))}
        self.storages = {}   # a data pointer -> (argument number, parameter name), of the argument modules'
        for i, a in enumerate(arguments or []):
            if isinstance(a, torch.nn.Module):
                for name, param in a.named_parameters():
                    self.storages.setdefault(param.data_ptr(), (i, name))
        self.tensors: dict[str, torch.Tensor] = {}
        self._bytes = 0

    def _tensor(self, t: torch.Tensor) -> str:
        t = torch.Tensor.detach(t).cpu().clone().contiguous()
        self._bytes += t.numel() * t.element_size()
        if self._bytes > MAX_TENSOR_BYTES:
            raise ExchangeError(f"the output holds more than {MAX_TENSOR_BYTES // 2**20} MB of tensors")
        name = f"{self.prefix}t{len(self.tensors)}"
        self.tensors[name] = t
        return name

    def encode(self, value: Any, depth: int = 0) -> dict:
        if depth > MAX_DEPTH:
            raise ExchangeError(f"the output is nested more than {MAX_DEPTH} levels deep")
        if id(value) in self.fixtures:
            name, print_ = self.fixtures[id(value)]
            return {"fixture": name, "fingerprint": print_}
        if id(value) in self.outputs:
            return {"output": self.outputs[id(value)]}
        if id(value) in self.built:
            function, args, kwargs = self.built[id(value)]
            return {"built": function, "args": [self.encode(a, depth + 1) for a in args],
                    "kwargs": [[k, self.encode(v, depth + 1)] for k, v in kwargs.items()],
                    "fingerprint": fingerprint(value)}
        if id(value) in self.arguments:
            return {"argument": self.arguments[id(value)]}
        node = self.held.encode(value, self) if self.held is not None else None
        if node is not None:
            return node
        if isinstance(value, torch.nn.Module):
            return {"module": type(value).__name__[:60], "parameters": [
                [name, {"shared": list(self.storages[p.data_ptr()])} if p.data_ptr() in self.storages
                 else self.encode(p, depth + 1)] for name, p in value.named_parameters()]}
        if value is None:
            return {"none": None}
        if type(value) is bool:
            return {"bool": value}
        if type(value) is int:
            return {"int": value}
        if type(value) is float:
            return {"float": value.hex()}
        if type(value) is str:
            return {"str": value}
        if type(value) in (list, tuple):
            return {type(value).__name__: [self.encode(v, depth + 1) for v in value]}
        if type(value) is dict:
            return {"dict": [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in value.items()]}
        if isinstance(value, torch.Tensor) and not value.is_complex() and value.layout == torch.strided:
            return {"tensor": self._tensor(value), "requires_grad": bool(value.requires_grad)}
        if type(value) is np.ndarray and value.dtype.kind in "biuf":
            return {"ndarray": self._tensor(torch.from_numpy(np.ascontiguousarray(value)))}
        if isinstance(value, np.generic) and value.dtype.kind in "biuf":
            return {"npscalar": value.dtype.name, "value": self.encode(value.item(), depth + 1)}
        if type(value) is torch.Generator and value.device.type == "cpu":
            return {"generator": self._tensor(value.get_state())}
        if type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas."):
            return self.encode(value.to_dict("records"), depth)   # a table of rows: as its rows
        if type(value) in (ModelConfig, GPT2Config):
            return {"config" if type(value) is ModelConfig else "gpt2config":
                    self.encode({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, depth + 1)}
        try:
            text = repr(value)
        except Exception:   # a repr that fails is still an answer of the wrong kind
            text = f"<{type(value).__name__}>"
        return {"other": type(value).__name__, "repr": text[:MAX_REPR]}


def fingerprint(obj: Any) -> str:
    """What identifies a fixture object's content: a module's parameters and buffers, a
    tokenizer's vocabulary; "" for other objects (they are passed by name only)."""
    digest = hashlib.sha256()
    if isinstance(obj, torch.nn.Module):
        for name, t in sorted(obj.state_dict().items()):
            t = t.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(_raw_bytes(t))
        return digest.hexdigest()
    vocabulary = getattr(obj, "vocabulary", None)
    if callable(vocabulary):
        digest.update(json.dumps(sorted(vocabulary().items())).encode())
        return digest.hexdigest()
    return ""


def _raw_bytes(t: torch.Tensor) -> bytes:
    """A tensor's bytes as stored (any dtype, bfloat16 included; a 0-d tensor too)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def digest(tree: Any, tensors: dict[str, torch.Tensor]) -> str:
    """A hash of an encoded value: the tree, and each tensor's dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(tree, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(_raw_bytes(t))
    return h.hexdigest()


class RecordedModule(torch.nn.Module):
    """A module the student's code returned, rebuilt from its parameters (names, values, and which of
    them are an argument's own): enough for ``named_parameters()``, ``parameters()`` and ``isinstance``."""


class Decoder:
    """Turns JSON nodes back into values, checking each. ``fixture``: name -> the grader's own object
    (arguments only; None where no fixture may appear); ``held``: the probe's effects.Held, which builds
    the objects that cross by their state (arguments only)."""

    def __init__(self, tensors: dict[str, torch.Tensor], fixture: Callable[[str], Any] | None = None,
                 outputs: dict[int, Any] | None = None, build: Callable[[str, list, dict, str], Any] | None = None,
                 arguments: list | None = None, held: Any = None) -> None:
        self.tensors = tensors
        self.held = held
        self.fixture = fixture
        self.outputs = outputs
        self.build = build          # (function name, args, kwargs, fingerprint) -> the object, for arguments
        self.arguments = arguments  # the call's own arguments, for an output
        self._nodes = 0

    def _named(self, name: Any) -> torch.Tensor:
        if not isinstance(name, str) or name not in self.tensors:
            raise ExchangeError(f"a value names the tensor {str(name)[:40]!r}, which its file does not hold")
        return self.tensors[name]

    def decode(self, node: Any, depth: int = 0) -> Any:
        self._nodes += 1
        if depth > MAX_DEPTH or self._nodes > MAX_NODES:
            raise ExchangeError(f"a value is nested deeper than {MAX_DEPTH} or holds more than {MAX_NODES} items")
        if not isinstance(node, dict) or not node:
            raise ExchangeError("a value is not one of the kinds the grader reads")
        kind = next(iter(node))
        value = node[kind]
        if kind == "none" and len(node) == 1 and value is None:
            return None
        if kind == "bool" and len(node) == 1 and type(value) is bool:
            return value
        if kind == "int" and len(node) == 1 and type(value) is int:
            return value
        if kind == "float" and len(node) == 1 and type(value) is str:
            try:
                return float.fromhex(value)
            except (ValueError, OverflowError):
                raise ExchangeError("a float is not written as float.hex writes it") from None
        if kind == "str" and len(node) == 1 and type(value) is str:
            return value
        if kind in ("list", "tuple") and len(node) == 1 and type(value) is list:
            items = [self.decode(v, depth + 1) for v in value]
            return items if kind == "list" else tuple(items)
        if kind == "dict" and len(node) == 1 and type(value) is list:
            if not all(type(p) is list and len(p) == 2 for p in value):
                raise ExchangeError("a dict is not a list of [key, value] pairs")
            pairs = [(self.decode(k, depth + 1), self.decode(v, depth + 1)) for k, v in value]
            try:
                return dict(pairs)
            except TypeError:
                raise ExchangeError("a dict has a key that cannot be a dict key") from None
        if kind == "tensor" and set(node) == {"tensor", "requires_grad"} and type(node["requires_grad"]) is bool:
            t = self._named(value).clone()
            if node["requires_grad"]:
                if not (t.is_floating_point() or t.is_complex()):
                    raise ExchangeError("an integer tensor is marked as requiring grad")
                t.requires_grad_(True)
            return t
        if kind == "ndarray" and len(node) == 1:
            return self._named(value).numpy().copy()
        if kind == "npscalar" and set(node) == {"npscalar", "value"} and type(value) is str:
            if value not in {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                             "float16", "float32", "float64"}:
                raise ExchangeError(f"a NumPy scalar of the unknown dtype {value[:20]!r}")
            return np.dtype(value).type(self.decode(node["value"], depth + 1))
        if kind == "generator" and len(node) == 1:
            generator = torch.Generator()
            try:
                generator.set_state(self._named(value))
            except (RuntimeError, TypeError):
                raise ExchangeError("a random generator's state is not one torch can read") from None
            return generator
        if kind in ("config", "gpt2config") and len(node) == 1:
            cls = ModelConfig if kind == "config" else GPT2Config
            fields = self.decode(value, depth + 1)
            known = {f.name for f in dataclasses.fields(cls)}
            if not (isinstance(fields, dict) and set(fields) <= known):
                raise ExchangeError(f"a model config holds fields a {cls.__name__} does not have")
            try:
                return cls(**fields)
            except TypeError:
                raise ExchangeError(f"a model config lacks fields a {cls.__name__} needs") from None
        if kind in ("model", "optimizer", "folder", "same") and self.held is not None and isinstance(value, (str, int)):
            return self.held.decode(kind, node, self)
        if kind == "built" and set(node) == {"built", "args", "kwargs", "fingerprint"} and self.build is not None \
                and type(value) is str and type(node["args"]) is list and type(node["kwargs"]) is list:
            args = [self.decode(a, depth + 1) for a in node["args"]]
            kwargs = {str(k): self.decode(v, depth + 1) for k, v in node["kwargs"]}
            return self.build(value, args, kwargs, str(node["fingerprint"]))
        if kind == "argument" and len(node) == 1 and type(value) is int and self.arguments is not None:
            if not 0 <= value < len(self.arguments):
                raise ExchangeError(f"a value names argument {value}, which the call did not have")
            return self.arguments[value]
        if kind == "module" and set(node) == {"module", "parameters"} and type(node["parameters"]) is list:
            return self._module(str(value), node["parameters"], depth)
        if kind == "output" and len(node) == 1 and type(value) is int and self.outputs is not None:
            if value not in self.outputs:
                raise ExchangeError(f"a value names the output of call {value}, which has none (yet)")
            return self.outputs[value]
        if kind == "fixture" and set(node) == {"fixture", "fingerprint"} and self.fixture is not None:
            return self.fixture(str(value))
        if kind == "other" and set(node) == {"other", "repr"} and type(value) is str and type(node["repr"]) is str:
            return _foreign(value, node["repr"])
        raise ExchangeError(f"a value of the unknown or malformed kind {str(kind)[:40]!r}")


    def _module(self, type_name: str, parameters: list, depth: int) -> torch.nn.Module:
        """A RecordedModule with these parameters, an argument's own where the record says it is shared."""
        module = type(re.sub(r"\W", "_", type_name) or "Module", (RecordedModule,), {})()
        for pair in parameters:
            if not (type(pair) is list and len(pair) == 2 and type(pair[0]) is str and pair[0]):
                raise ExchangeError("a module's parameters are not a list of [name, value] pairs")
            name, node = pair
            if isinstance(node, dict) and set(node) == {"shared"}:
                where = node["shared"]
                if not (self.arguments is not None and type(where) is list and len(where) == 2
                        and type(where[0]) is int and 0 <= where[0] < len(self.arguments)
                        and isinstance(self.arguments[where[0]], torch.nn.Module)):
                    raise ExchangeError("a module's parameter names an argument the call did not have")
                try:
                    param = self.arguments[where[0]].get_parameter(str(where[1]))
                except AttributeError:
                    raise ExchangeError("a module's parameter names a parameter its argument does not have") from None
            else:
                value = self.decode(node, depth + 1)
                if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
                    raise ExchangeError("a module's parameter is not a floating tensor")
                param = torch.nn.Parameter(value.detach(), requires_grad=value.requires_grad)
            *path, leaf = name.split(".")
            owner = module
            for part in path:
                if not isinstance(getattr(owner, part, None), torch.nn.Module):
                    owner.add_module(part, torch.nn.Module())
                owner = getattr(owner, part)
            try:
                owner.register_parameter(leaf, param)
            except (KeyError, TypeError):
                raise ExchangeError(f"a module's parameter name {name[:80]!r} is not one a module can have") from None
        return module

def write_record(folder: Path, stem: str, record: dict, tensors: dict[str, torch.Tensor]) -> None:
    """``<stem>.json`` (and ``<stem>.safetensors`` when there are tensors) in ``folder``, each written
    whole under a temporary name and then renamed, so that a reader finds a file complete or not at all."""
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    if tensors:
        tmp = folder / f".{stem}.safetensors.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, folder / f"{stem}.safetensors")
    tmp = folder / f".{stem}.json.tmp"
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, folder / f"{stem}.json")


def _read_regular(folder: Path, name: str, limit: int) -> bytes | None:
    """The bytes of ``folder/name``, a regular file of at most ``limit`` bytes with one link; None when
    it is missing. Links are not followed (a file the graded code made could point anywhere on the
    grader's machine); anything else raises ExchangeError."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:
        raise ExchangeError(f"{folder.name} is not a plain folder") from None
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError:
            raise ExchangeError(f"{name} is not a plain file (a link?)") from None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                raise ExchangeError(f"{name} is not a plain file of its own")
            if info.st_size > limit:
                raise ExchangeError(f"{name} is {info.st_size} bytes, more than the {limit} the grader reads")
            return f.read(limit + 1)[:limit]
    finally:
        os.close(dir_fd)


def read_record(folder: Path, stem: str) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """What :func:`write_record` wrote: (the JSON object, its tensors), or None when the JSON file
    is missing. A file that is malformed, too large or not a plain file raises ExchangeError."""
    data = _read_regular(folder, f"{stem}.json", MAX_JSON_BYTES)
    if data is None:
        return None
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ExchangeError(f"{stem}.json is not valid JSON") from None
    if not isinstance(record, dict):
        raise ExchangeError(f"{stem}.json does not hold a JSON object")
    raw = _read_regular(folder, f"{stem}.safetensors", MAX_TENSOR_BYTES + 2**20)
    tensors: dict[str, torch.Tensor] = {}
    if raw is not None:
        from safetensors.torch import load
        try:
            tensors = load(raw)
        except Exception:   # safetensors raises its own error types for a malformed header or data
            raise ExchangeError(f"{stem}.safetensors is not a valid safetensors file") from None
    return record, tensors
