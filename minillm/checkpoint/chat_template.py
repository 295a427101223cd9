"""Rendering a checkpoint's chat template: Jinja, sandboxed and bounded.

A chat template is a small program that comes with a downloaded checkpoint, so it is run the
way ``transformers`` runs it (Jinja's immutable sandbox: it can read the messages but not call
arbitrary Python, touch files or change its inputs) and, beyond that, with bounds on what it
may cost, because a sandbox alone does not stop a template from running for ever or filling
the memory. While :func:`render` runs:

* time: the clock is checked at every loop iteration, function or macro call and piece of
  output, and the render stops after ``RENDER_SECONDS`` (a real template takes milliseconds);
  so a loop that writes nothing (``{% for i in range(10**5) %}{% for j in range(10**5) %}``)
  stops too, since every iteration is counted;
* size: everything the template writes (its output, and text captured by ``{% set %}`` blocks
  or macros) counts against ``MAX_CHARS``, and so does every string, list or number built by
  ``*``, ``**``, ``%``, ``+`` or ``~``, checked before a repetition (``'x' * 10**10``) is made;
  no function or filter takes a number past ``MAX_CHARS`` (``'x'.center(10**10)``);
* other templates (``include``, ``import``, ``extends``) are refused: a chat template is one file.

Any failure, a template's own ``raise_exception('...')`` included, comes back as one
:class:`TemplateFailure` line naming the file and, where there is one, the template's line.
"""

from __future__ import annotations

import json
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache, wraps
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from minillm.errors import InputError

RENDER_SECONDS = 5.0        # wall-clock bound on one render
MAX_CHARS = 10_000_000      # bound on all text a render writes, and on any one value it builds


class TemplateFailure(InputError):
    """The chat template could not be rendered (the message is one line, without the file's name)."""


@dataclass
class _Budget:
    """What one render may still spend: a deadline (time.monotonic()) and characters written."""
    deadline: float
    chars: int = 0


_BUDGET: ContextVar[_Budget] = ContextVar("chat_template_budget")


def _tick() -> None:
    if time.monotonic() > _BUDGET.get().deadline:
        raise TemplateFailure(f"it ran for more than {RENDER_SECONDS:g} s (a loop that does not end?)")


def _size(value: Any) -> int:
    """Characters (strings), items (lists, dicts...) or decimal digits (ints) in a value."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() * 3 // 10      # about the number of decimal digits
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict)) else 0


def _check_size(value: Any, what: str) -> Any:
    if _size(value) > MAX_CHARS:
        raise TemplateFailure(f"{what} would be larger than {MAX_CHARS:,} characters")
    return value


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the bounds of the module docstring on calls and operators."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
        _tick()
        if isinstance(getattr(__obj, "__self__", None), str):    # 'x'.center(n), .ljust, .zfill...: n characters
            _refuse_big_numbers((*args, *kwargs.values()), "a call")
        return _check_size(super().call(__context, __obj, *args, **kwargs), "a call's result")

    def wrap_str_format(self, value: Any):
        """The sandbox's own str.format wrapper (None for anything else), for format strings of sane widths."""
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _refuse_wide_formats(value.__self__)
        return wrapped

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(times, int) and isinstance(seq, (str, list, tuple)) and len(seq) * times > MAX_CHARS:
                    raise TemplateFailure(f"repeating {len(seq):,} items {times:,} times is more than {MAX_CHARS:,}")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * left.bit_length() * 3 // 10 > MAX_CHARS:
                raise TemplateFailure(f"{left} ** {right} has more than {MAX_CHARS:,} digits")
        if operator == "%" and isinstance(left, str):
            _refuse_wide_formats(left)
            _refuse_big_numbers(right if isinstance(right, tuple) else (right,), "a '%' format")
        return _check_size(super().call_binop(context, operator, left, right), f"the result of {operator!r}")


def _refuse_big_numbers(values, what: str) -> None:
    """No call, filter or format is given a number past MAX_CHARS (a width, a count, a repetition)."""
    for value in values:
        if isinstance(value, int) and abs(value) > MAX_CHARS:
            raise TemplateFailure(f"{what} was given the number {value}, larger than {MAX_CHARS:,}")


def _refuse_wide_formats(text: str) -> None:
    """A format string may not ask for a field width or precision past MAX_CHARS ('%999999999s')."""
    if any(int(digits) > MAX_CHARS for digits in re.findall(r"\d+", text)):
        raise TemplateFailure(f"a format string asks for a field wider than {MAX_CHARS:,} characters")


@jinja2.pass_context   # (a context argument keeps Jinja from running these once at compile time)
def _count_steps(context, iterable):
    for item in iterable:
        _tick()
        yield item


@jinja2.pass_context
def _count_output(context, value):
    _tick()
    budget = _BUDGET.get()
    budget.chars += len(str(value))
    if budget.chars > MAX_CHARS:
        raise TemplateFailure(f"it wrote more than {MAX_CHARS:,} characters")
    return value


@jinja2.pass_context
def _checked_concat(context, value):
    return _check_size(value, "a string joined with '~'")


def _bounded_filter(name: str, function):
    """The filter ``name`` with its numeric arguments (widths, counts) and its result held to MAX_CHARS."""
    value_at = 1 if getattr(function, "jinja_pass_arg", None) else 0   # (after the context, if it takes one)

    @wraps(function)
    def bounded(*args, **kwargs):
        _tick()
        _refuse_big_numbers((*args[value_at + 1:], *kwargs.values()), f"the {name} filter")
        if name == "format":          # '%s'|format(...): the same check as the '%' operator
            _refuse_wide_formats(str(args[value_at]))
        return _check_size(function(*args, **kwargs), f"the result of the {name} filter")
    return bounded


class _Bounder(NodeTransformer):
    """Rewrites a parsed template so that every loop, piece of output and '~' goes through the counters."""

    def generic_visit(self, node, *args, **kwargs):
        if isinstance(node, (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
            raise TemplateFailure(f"uses {type(node).__name__.lower()} (line {node.lineno}): a chat template is "
                                  "a single file and cannot load other templates")
        return super().generic_visit(node, *args, **kwargs)

    def visit_For(self, node: nodes.For) -> nodes.For:
        node = self.generic_visit(node)
        node.iter = _filtered(node.iter, "minillm_steps")
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Output:
        node = self.generic_visit(node)
        node.nodes = [_filtered(child, "minillm_output") for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        return _filtered(self.generic_visit(node), "minillm_concat")


def _filtered(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` marks the assistant's text in some templates
    (transformers uses it to build training masks). Here it just renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


class _Refused(jinja2.TemplateError):
    """The template's own raise_exception('...')."""


def _raise_exception(message: str):
    # Templates call raise_exception('...') to refuse a conversation they cannot format.
    raise _Refused(message)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 (Jinja's names)
    # Jinja's placeholder text takes seconds for a few thousand paragraphs, in one call the clock cannot stop.
    if n * max > 100_000:
        raise TemplateFailure(f"lipsum({n}, max={max}) asks for more than 100,000 words")
    return jinja2.utils.generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; chat templates want plain JSON
    # (non-ASCII kept as is), with json.dumps' options.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    """Compile a chat template in the environment transformers renders templates in, bounded.

    Raises jinja2.TemplateSyntaxError or TemplateFailure (another template loaded)."""
    env = _BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, "jinja2.ext.loopcontrols"]
    )
    env.filters = {name: _bounded_filter(name, f) for name, f in {**env.filters, "tojson": _tojson}.items()}
    env.filters.update(minillm_steps=_count_steps,
                       minillm_output=_count_output, minillm_concat=_checked_concat)
    env.globals["lipsum"] = _lipsum
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(_Bounder().visit(env.parse(template)))


def render(template: str, variables: dict[str, Any]) -> str:
    """Render ``template`` with ``variables`` within the bounds of the module docstring.

    Raises TemplateFailure with a one-line reason (and the template's line where known)."""
    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateFailure(f"is not valid Jinja (line {err.lineno}): {err.message}") from err
    token = _BUDGET.set(_Budget(deadline=time.monotonic() + RENDER_SECONDS))
    try:
        return "".join(compiled.generate(**variables))
    except _Refused as err:
        raise TemplateFailure(f"failed on these messages: {err}") from err
    except TemplateFailure as err:
        raise TemplateFailure(f"was stopped{_line(err)}: {err}") from err
    except RecursionError as err:
        raise TemplateFailure(f"was stopped{_line(err)}: a macro or loop calls itself without end") from err
    except Exception as err:       # anything else the template's code raised: one line, not a traceback
        raise TemplateFailure(f"failed on these messages{_line(err)}: {type(err).__name__}: {err}") from err
    finally:
        _BUDGET.reset(token)


def _line(err: BaseException) -> str:
    """' at line N' of the template where the error arose (Jinja maps its code's frames to template lines)."""
    line, trace = None, err.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == "<template>":
            line = trace.tb_lineno
        trace = trace.tb_next
    return f" at line {line}" if line else ""
