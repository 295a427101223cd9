"""What a call does besides returning, as data: the arguments it changes, and the gradient it carries back.

Training's functions work by changing their arguments: ``train_step`` updates a model's weights, their
gradients and an optimizer's state, ``load_checkpoint`` fills a model and an optimizer, ``save_checkpoint``
writes files into a folder. Graded apart (apart.py), such an argument crosses by its whole state, and
what the student's call left in it crosses back the same way:

* a minillm model (``Transformer``, ``GPT2``): its class, config and state: every parameter (its value,
  requires_grad and ``.grad``, and which names share one tensor: a tied embedding), every buffer, and
  each submodule's train/eval flag;
* an optimizer (``torch.optim.AdamW``, ``Adam``, ``SGD``): its param groups (the hyperparameters, and
  each parameter as the name it has in a model passed to the same test, passed before it) and its
  state (AdamW's ``step``, ``exp_avg``, ``exp_avg_sq``);
* a folder (a ``pathlib.Path``): whether it exists, and its files' bytes (plain files only; at most
  ``MAX_FILES`` files and ``MAX_FOLDER_BYTES`` bytes). The judge parses them only as the test does,
  with safetensors or JSON: nothing the student's side wrote is ever unpickled.

Nodes (exchange.py's format; arguments only)::

    {"model": "Transformer", "held": 0, "config": node, "state": {...}}
    {"optimizer": "AdamW", "held": 1, "defaults": node, "state": {...}}
    {"folder": "checkpoint", "held": 2, "state": {...}}
    {"same": 0, "state": "<digest>"}    (an object an earlier call of the test was given)

An object passed to several calls of a test is one object in every process: its first call carries its
state, later calls name it, with a digest of its state at that moment, which the judge compares as it
compares any argument. After each call the probe records the state of the call's objects (and of the
models whose parameters an optimizer among them updates), even when the call raised; the judge puts
that state into its own objects, so that the test's body then reads the student's weights, optimizer
and files as if the call had run there. (So between two calls a test must not change an object that it
passes again: the judge's digest would differ from the probe's, and the test fails as an autograder error.)

A 0-d tensor that a call returns, computed from tensor arguments that require grad (a loss), carries its
gradient with respect to each of them, computed in the probe: in the judge, ``loss.backward()`` fills
their ``.grad`` with it (times the upstream gradient).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any, Callable

import torch
from exchange import Decoder, Encoder, ExchangeError, digest

OPTIMIZERS = ("AdamW", "Adam", "SGD")          # torch.optim classes that cross by their state
MAX_FILES, MAX_FOLDER_BYTES, MAX_DEPTH = 64, 64 * 2**20, 8
_PART = re.compile(r"[^/\\\x00]{1,255}")


def _models() -> dict[str, tuple[type, type]]:
    """The model classes that cross by their state: class name -> (class, config class)."""
    from minillm.models.config import GPT2Config, ModelConfig
    from minillm.models.gpt2 import GPT2
    from minillm.models.qwen2 import Transformer
    return {"Transformer": (Transformer, ModelConfig), "GPT2": (GPT2, GPT2Config)}


def _kind(value: Any) -> str | None:
    if isinstance(value, torch.nn.Module) and type(value).__name__ in _models() \
            and type(value) is _models()[type(value).__name__][0]:
        return "model"
    if type(value).__name__ in OPTIMIZERS and type(value) is getattr(torch.optim, type(value).__name__):
        return "optimizer"
    if isinstance(value, Path):
        return "folder"
    return None


class Held:
    """The objects of one test that its calls may change, numbered in the order a call was first given
    them, on one side (plan, probe or judge). ``decoded``: the probe's own objects built from the plan;
    ``in_call``: the numbers of the last encoded call's objects, and of the models its optimizers update;
    ``make_folder``: a fresh empty folder of the probe's, to hold a folder argument."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.objects: list[Any] = []
        self.decoded: dict[int, Any] = {}
        self.before: dict[int, dict[str, Any]] = {}   # model number -> {name: parameter} when last given
        self.in_call: list[int] = []
        self.make_folder: Callable[[], Path] | None = None

    # -- encoding (every side) -------------------------------------------------------------------------

    def start_call(self) -> None:
        self.in_call = []

    def encode(self, value: Any, enc: Encoder) -> dict | None:
        """The node of ``value`` if it is an object that crosses by its state (None otherwise)."""
        kind = _kind(value)
        if kind is None:
            return None
        if id(value) in self.ids:
            n = self.ids[id(value)]
            self._join(n)
            return {"same": n, "state": self.state_digest(n)}
        n = len(self.objects)
        self.ids[id(value)] = n
        self.objects.append(value)
        self._join(n)
        if kind == "model":
            return {"model": type(value).__name__, "held": n, "config": enc.encode(value.config),
                    "state": self.state(n, enc)}
        if kind == "optimizer":
            return {"optimizer": type(value).__name__, "held": n, "defaults": enc.encode(dict(value.defaults)),
                    "state": self.state(n, enc, arguments=True)}
        return {"folder": value.name, "held": n, "state": self.state(n, enc)}

    def _join(self, n: int) -> None:
        """Count object ``n`` in this call (with the models whose parameters it updates, for an optimizer)."""
        for m in [n, *self._owners_of(n)]:
            if m not in self.in_call:
                self.in_call.append(m)
            if _kind(self.objects[m]) == "model":
                self.before[m] = dict(self.objects[m].named_parameters(remove_duplicate=False))

    def _owners_of(self, n: int) -> list[int]:
        value = self.objects[n]
        if _kind(value) != "optimizer":
            return []
        owners = self._parameters()
        return sorted({owners[id(p)][0] for g in value.param_groups for p in g["params"] if id(p) in owners})

    def _parameters(self) -> dict[int, tuple[int, str]]:
        """id of each held model's parameter -> (the model's number, the parameter's first name)."""
        found: dict[int, tuple[int, str]] = {}
        for n, value in enumerate(self.objects):
            if _kind(value) == "model":
                for name, p in value.named_parameters(remove_duplicate=False):
                    found.setdefault(id(p), (n, name))
        return found

    def state(self, n: int, enc: Encoder, arguments: bool = False, before: bool = False) -> dict:
        """Object ``n``'s state as a node. ``before``: mark each model parameter that is still the object
        it was when the call was given it (``kept``); ``arguments``: refuse an optimizer parameter that is
        no held model's (an argument must name them)."""
        value = self.objects[n]
        kind = _kind(value)
        if kind == "model":
            return _model_state(value, enc, self.before.get(n) if before else None)
        if kind == "optimizer":
            return _optimizer_state(value, enc, self._parameters(), arguments)
        return _folder_state(value, enc)

    def state_digest(self, n: int) -> str:
        """A digest of object ``n``'s state now ("unreadable" for a folder the grader does not read back:
        the judge then stopped at the call that left it so, with that message)."""
        enc = Encoder()
        try:
            return digest(self.state(n, enc), enc.tensors)
        except ExchangeError:
            return "unreadable"

    def after(self, enc: Encoder) -> list:
        """The state of the last call's objects after it: ``[[number, node], ...]`` (ExchangeError when a
        folder holds what the grader does not read)."""
        return [[n, self.state(n, enc, before=True)] for n in self.in_call]

    # -- decoding (the probe: its own objects, built from the plan) -------------------------------------

    def decode(self, kind: str, node: dict, dec: Decoder) -> Any:
        if kind == "same":
            n = node.get("same")
            if set(node) != {"same", "state"} or type(n) is not int or n not in self.decoded:
                raise ExchangeError("an argument names an object no earlier call was given")
            return self.decoded[n]
        n = node.get("held")
        if type(n) is not int or n in self.decoded or type(node.get(kind)) is not str:
            raise ExchangeError(f"a {kind} argument is not numbered as the grader numbers them")
        if kind == "model" and set(node) == {"model", "held", "config", "state"} and node["model"] in _models():
            cls, config_cls = _models()[node["model"]]
            config = dec.decode(node["config"])
            if type(config) is not config_cls:
                raise ExchangeError(f"a {node['model']} argument's config is not a {config_cls.__name__}")
            with torch.random.fork_rng(devices=[]):
                value = cls(config)
            apply_model(value, node["state"], dec)
        elif kind == "optimizer" and set(node) == {"optimizer", "held", "defaults", "state"} \
                and node["optimizer"] in OPTIMIZERS:
            value = getattr(torch.optim, node["optimizer"])([torch.nn.Parameter(torch.zeros(1))])
            defaults = dec.decode(node["defaults"])
            if not isinstance(defaults, dict):
                raise ExchangeError("an optimizer's defaults are not a dict")
            value.defaults = defaults
            apply_optimizer(value, node["state"], dec, lambda ref: self._resolve(ref, self.decoded, dec, False))
        elif kind == "folder" and set(node) == {"folder", "held", "state"} and self.make_folder is not None \
                and _PART.fullmatch(node["folder"]) and node["folder"] not in (".", ".."):
            value = self.make_folder() / node["folder"]
            apply_folder(value, node["state"], dec)
        else:
            raise ExchangeError(f"a malformed {kind} argument")
        self.decoded[n] = value
        return value

    # -- the judge: what the student's call left, put into its own objects ------------------------------

    def apply_after(self, after: Any, tensors: dict[str, torch.Tensor]) -> None:
        """Put the recorded state of the call's objects into this side's objects (the judge's).
        Raises ExchangeError, with what is wrong, when the record is malformed or cannot be applied."""
        if not (isinstance(after, list) and all(type(e) is list and len(e) == 2 and type(e[0]) is int for e in after)
                and sorted(e[0] for e in after) == sorted(self.in_call)):
            raise ExchangeError("the record of what the call left in its arguments is malformed")
        dec = Decoder(tensors)
        order = {"model": 0, "optimizer": 1, "folder": 2}   # an optimizer names the models' parameters
        for n, node in sorted(after, key=lambda e: order[_kind(self.objects[e[0]])]):
            value = self.objects[n]
            kind = _kind(value)
            if kind == "model":
                apply_model(value, node, dec)
            elif kind == "optimizer":
                apply_optimizer(value, node, dec, lambda ref: self._resolve(ref, dict(enumerate(self.objects)),
                                                                            dec, True))
            else:
                apply_folder(value, node, dec)

    @staticmethod
    def _resolve(ref: Any, objects: dict[int, Any], dec: Decoder, orphans: bool) -> torch.Tensor:
        """An optimizer's parameter: a held model's parameter by name, or (after a call) a tensor of its own."""
        if isinstance(ref, dict) and set(ref) == {"param"} and type(ref["param"]) is list and len(ref["param"]) == 2:
            n, name = ref["param"]
            if type(n) is int and _kind(objects.get(n)) == "model" and type(name) is str:
                try:
                    return objects[n].get_parameter(name)
                except AttributeError:
                    pass
            raise ExchangeError("an optimizer's parameter names a model parameter that does not exist")
        if orphans and isinstance(ref, dict) and set(ref) == {"orphan"}:
            value = dec.decode(ref["orphan"])
            if isinstance(value, torch.Tensor):
                return torch.nn.Parameter(value.detach(), requires_grad=value.requires_grad)
        raise ExchangeError("an optimizer's parameter is neither a model's parameter nor a tensor")


# ------------------------------------------------------------------------------------------------------
# States as nodes
# ------------------------------------------------------------------------------------------------------

def _model_state(model: torch.nn.Module, enc: Encoder, before: dict[str, Any] | None) -> dict:
    """Parameters ``[name, value, grad, kept]`` (or ``[name, {"tied": first name}]``), buffers, flags."""
    rows: list = []
    first: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            rows.append([name, {"tied": first[id(p)]}])
            continue
        first[id(p)] = name
        kept = before is None or before.get(name) is p
        rows.append([name, enc.encode(p), enc.encode(p.grad), kept])
    return {"parameters": rows,
            "buffers": [[name, enc.encode(b)] for name, b in model.named_buffers(remove_duplicate=False)],
            "training": [[name, m.training] for name, m in model.named_modules(remove_duplicate=False)]}


def _optimizer_state(optimizer: torch.optim.Optimizer, enc: Encoder, owners: dict[int, tuple[int, str]],
                     arguments: bool) -> dict:
    groups, flat = [], []
    for group in optimizer.param_groups:
        refs = []
        for p in group["params"]:
            if id(p) in owners:
                refs.append({"param": list(owners[id(p)])})
            elif arguments:
                raise ExchangeError("autograder error: an optimizer passed to a student's function must update the "
                                    "parameters of a model passed before it (to this call or an earlier one)")
            else:
                refs.append({"orphan": enc.encode(p)})
            flat.append(p)
        groups.append([enc.encode({k: v for k, v in group.items() if k != "params"}), refs])
    state = [[i, enc.encode(dict(optimizer.state[p]))] for i, p in enumerate(flat)
             if p in optimizer.state and optimizer.state[p]]
    return {"groups": groups, "state": state}


def _folder_state(folder: Path, enc: Encoder) -> dict:
    """Whether ``folder`` exists, and its plain files' bytes (links and special files refused)."""
    if not os.path.lexists(folder):
        return {"exists": False, "files": []}
    if folder.is_symlink() or not folder.is_dir():
        raise ExchangeError(f"{folder.name} is not a folder (a file, or a link)")
    files, total = [], 0
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        depth = len(Path(root).relative_to(folder).parts)
        for name in [*dirs, *sorted(names)]:
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                if depth + 1 > MAX_DEPTH:
                    raise ExchangeError(f"{folder.name}/{rel} is more than {MAX_DEPTH} folders deep")
                continue
            if not stat.S_ISREG(info.st_mode):
                raise ExchangeError(f"{folder.name}/{rel} is not a plain file (a link?), and the grader reads back "
                                    "plain files only")
            total += info.st_size
            if len(files) >= MAX_FILES or total > MAX_FOLDER_BYTES:
                raise ExchangeError(f"{folder.name} holds more than {MAX_FILES} files or {MAX_FOLDER_BYTES // 2**20} "
                                    "MB, more than the grader reads back")
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                data = f.read(MAX_FOLDER_BYTES + 1)
            files.append([rel, enc.encode(torch.frombuffer(bytearray(data), dtype=torch.uint8) if data
                                          else torch.zeros(0, dtype=torch.uint8))])
    return {"exists": True, "files": files}


# ------------------------------------------------------------------------------------------------------
# States put into objects (the probe's new ones, or the judge's after a call)
# ------------------------------------------------------------------------------------------------------

def _rows(node: Any, key: str, width: tuple[int, ...]) -> list[list]:
    rows = node.get(key) if isinstance(node, dict) else None
    if not (isinstance(rows, list) and all(type(r) is list and len(r) in width and type(r[0]) is str for r in rows)):
        raise ExchangeError(f"a recorded state's {key} are malformed")
    return rows


def _same_names(what: str, recorded: list[str], present: list[str]) -> None:
    if sorted(recorded) != sorted(present):
        extra, missing = sorted(set(recorded) - set(present)), sorted(set(present) - set(recorded))
        raise ExchangeError(f"the model's {what} are not the ones it was given (new: {extra[:3]}, gone: "
                            f"{missing[:3]}): a function here must not add, remove or rename them")


def apply_model(model: torch.nn.Module, node: Any, dec: Decoder) -> None:
    """Give ``model`` the recorded parameters (in place where the record says the parameter is the same
    object, a new one otherwise, tied where it says so), gradients, buffers and train/eval flags."""
    rows = _rows(node, "parameters", (2, 4))
    current = dict(model.named_parameters(remove_duplicate=False))
    _same_names("parameters", [r[0] for r in rows], list(current))
    placed: dict[str, torch.nn.Parameter] = {}
    for row in rows:
        name = row[0]
        if len(row) == 2:
            target = row[1].get("tied") if isinstance(row[1], dict) else None
            if target not in placed:
                raise ExchangeError(f"the recorded parameter {name[:80]} is tied to one recorded after it")
            param = placed[target]
        else:
            value, grad, kept = dec.decode(row[1]), dec.decode(row[2]), row[3]
            if not isinstance(value, torch.Tensor) or not (grad is None or isinstance(grad, torch.Tensor)):
                raise ExchangeError(f"the recorded parameter {name[:80]} or its gradient is not a tensor")
            param = current[name]
            if kept is True and not any(param is p for p in placed.values()):
                param.grad = None
                param.data = value.detach()      # the same object: an optimizer holding it still does
            else:
                param = torch.nn.Parameter(value.detach(), requires_grad=False)
            param.requires_grad_(value.requires_grad)
            try:
                param.grad = None if grad is None else grad.detach()
            except RuntimeError as err:
                raise ExchangeError(f"the recorded gradient of {name[:80]} does not fit the parameter: "
                                    f"{str(err)[:200]}") from None
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._parameters[leaf] = param
        placed[name] = param
    buffers = _rows(node, "buffers", (2,))
    _same_names("buffers", [r[0] for r in buffers], [n for n, _ in model.named_buffers(remove_duplicate=False)])
    for name, value_node in buffers:
        value = dec.decode(value_node)
        if not isinstance(value, torch.Tensor):
            raise ExchangeError(f"the recorded buffer {name[:80]} is not a tensor")
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = value
    flags = _rows(node, "training", (2,))
    modules = dict(model.named_modules(remove_duplicate=False))
    _same_names("submodules", [r[0] for r in flags], list(modules))
    for name, flag in flags:
        modules[name].training = flag is True


def apply_optimizer(optimizer: torch.optim.Optimizer, node: Any, dec: Decoder,
                    resolve: Callable[[Any], torch.Tensor]) -> None:
    """Give ``optimizer`` the recorded param groups (hyperparameters, parameters) and state."""
    groups = node.get("groups") if isinstance(node, dict) else None
    states = node.get("state") if isinstance(node, dict) else None
    if not (isinstance(groups, list) and isinstance(states, list)
            and all(type(g) is list and len(g) == 2 and type(g[1]) is list for g in groups)
            and all(type(s) is list and len(s) == 2 and type(s[0]) is int for s in states)):
        raise ExchangeError("the recorded optimizer state is malformed")
    built, flat = [], []
    for hyper_node, refs in groups:
        hyper = dec.decode(hyper_node)
        if not (isinstance(hyper, dict) and all(type(k) is str for k in hyper) and "params" not in hyper):
            raise ExchangeError("an optimizer's recorded hyperparameters are not a dict of names")
        params = [resolve(ref) for ref in refs]
        built.append({**hyper, "params": params})
        flat += params
    values = []
    for position, state_node in states:
        state = dec.decode(state_node)
        if not (0 <= position < len(flat) and isinstance(state, dict) and all(type(k) is str for k in state)):
            raise ExchangeError("the recorded optimizer state names a parameter it does not have")
        values.append((flat[position], state))
    optimizer.param_groups.clear()
    optimizer.state.clear()
    try:
        for group in built:
            optimizer.add_param_group(group)
    except (ValueError, TypeError) as err:
        raise ExchangeError(f"the recorded param groups are not ones an optimizer can have: {str(err)[:200]}") from None
    for param, state in values:
        optimizer.state[param] = state


def apply_folder(folder: Path, node: Any, dec: Decoder) -> None:
    """Make ``folder`` hold exactly the recorded files (or not exist)."""
    files = _rows(node, "files", (2,))
    exists = node.get("exists")
    wanted: dict[tuple[str, ...], bytes] = {}
    for rel, data_node in files:
        parts = tuple(rel.split("/"))
        data = dec.decode(data_node)
        if not (0 < len(parts) <= MAX_DEPTH + 1 and all(_PART.fullmatch(p) and p not in (".", "..") for p in parts)):
            raise ExchangeError(f"a recorded file name {rel[:80]!r} is not a plain relative path")
        if not (isinstance(data, torch.Tensor) and data.dtype == torch.uint8 and data.dim() == 1):
            raise ExchangeError(f"the recorded bytes of {rel[:80]} are not bytes")
        wanted[parts] = data.numpy().tobytes()
    if exists is not True:
        if wanted or exists is not False:
            raise ExchangeError("the record of a folder is malformed")
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        elif os.path.lexists(folder):
            folder.unlink()
        return
    folder.mkdir(parents=True, exist_ok=True)
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            if path.relative_to(folder).parts not in wanted:
                path.unlink()
    for parts, data in wanted.items():
        path = folder.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# ------------------------------------------------------------------------------------------------------
# A returned loss's gradient
# ------------------------------------------------------------------------------------------------------

def gradients(got: Any, values: list, enc: Encoder) -> list | None:
    """In the probe: for a 0-d tensor ``got`` computed from tensor arguments that require grad, its
    gradient with respect to each (``[[argument index, node]]``, a node of None where it does not reach
    one); None when there is nothing to record."""
    if not (isinstance(got, torch.Tensor) and got.dim() == 0 and got.grad_fn is not None):
        return None
    leaves = [(i, v) for i, v in enumerate(values) if isinstance(v, torch.Tensor) and v.requires_grad]
    if not leaves:
        return None
    found = torch.autograd.grad(got, [v for _, v in leaves], allow_unused=True)
    return [[i, enc.encode(g)] for (i, _), g in zip(leaves, found)]


class _Recorded(torch.autograd.Function):
    """A value whose gradient with respect to each input is a recorded tensor (times the upstream gradient)."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, recorded: list, *inputs: torch.Tensor) -> torch.Tensor:
        ctx.recorded = recorded
        return value.detach().clone()

    @staticmethod
    def backward(ctx, upstream: torch.Tensor):
        return (None, None, *[None if g is None else upstream * g for g in ctx.recorded])


def with_gradients(got: Any, recorded: Any, values: list, dec: Decoder) -> torch.Tensor:
    """In the judge: ``got`` connected to the call's arguments (``values``) by the recorded gradients."""
    if not (isinstance(got, torch.Tensor) and got.dim() == 0 and isinstance(recorded, list)
            and all(type(r) is list and len(r) == 2 and type(r[0]) is int for r in recorded)):
        raise ExchangeError("the record of the gradient of what it returned is malformed")
    inputs, grads = [], []
    for i, node in recorded:
        grad = dec.decode(node)
        if not (0 <= i < len(values) and isinstance(values[i], torch.Tensor) and values[i].requires_grad
                and (grad is None or (isinstance(grad, torch.Tensor) and grad.shape == values[i].shape))):
            raise ExchangeError("the recorded gradient of what it returned does not fit its arguments")
        inputs.append(values[i])
        grads.append(None if grad is None else grad.detach())
    return _Recorded.apply(got.detach(), grads, *inputs)
