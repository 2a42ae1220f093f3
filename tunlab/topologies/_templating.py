"""jinja2 rendering of topology files: sandboxed, StrictUndefined, and bounded.

The sandbox (immutable: templates cannot change Python objects or reach internals) is jinja's;
on top, `*` and `**` are checked before they build a huge string, list or number, the output is
counted as it streams, and a RenderGuard stops a render past its time or memory limit. Where
it can, the render runs in a child process the kernel holds to those limits (_isolated.py).
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tunlab.errors import TopologyError
from tunlab.topologies import _isolated as isolated
from tunlab.topologies._limits import Limits, RenderGuard, describe

_MAX_INT_BITS = 1 << 16


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles `a ~ b` to a length-checked join (jinja's own str_join cannot be intercepted)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with size checks on ~, + , * and ** and a guard consulted on each call."""

    intercepted_binops = frozenset({"*", "**", "+"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, limits: Limits, guard: RenderGuard | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits
        self.guard = guard

    def _too_big(self, what: str) -> TopologyError:
        return TopologyError(f"template: {what}, {describe('rendered-size', self.limits.rendered_size)}")

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, bytes, list, tuple))
                    and isinstance(n, int)
                    and len(seq) * n > self.limits.rendered_size
                ):
                    raise self._too_big(f"{type(seq).__name__} * {n} would hold {len(seq) * n} items")
            return operator.mul(left, right)
        if op == "+":
            sized = isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple))
            if sized and len(left) + len(right) > self.limits.rendered_size:
                raise self._too_big(f"a + b would hold {len(left) + len(right)} items")
            return operator.add(left, right)
        if op == "**":
            huge = isinstance(left, int) and isinstance(right, int) and right > 0
            if huge and max(left.bit_length(), 1) * right > _MAX_INT_BITS:
                raise TopologyError(f"template: {left} ** {right} is too large a number")
            return operator.pow(left, right)
        return super().call_binop(context, op, left, right)

    def bounded_concat(self, parts: tuple[Any, ...]) -> str:
        """`a ~ b ~ ...`, refused before it builds a string over rendered_size."""
        texts = [str(p) for p in parts]
        if sum(len(s) for s in texts) > self.limits.rendered_size:
            raise self._too_big(f"joining with ~ would make {sum(len(s) for s in texts)} characters")
        if self.guard is not None:
            self.guard.check()
        return "".join(texts)

    def call(self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if self.guard is not None:
            self.guard.check()
        return super().call(__context, __obj, *args, **kwargs)


def template_env(
    limits: Limits | None = None, guard: RenderGuard | None = None
) -> ImmutableSandboxedEnvironment:
    """Sandboxed: no attribute access to Python internals, no file access; undefined = error."""
    return _BoundedEnvironment(
        limits or Limits(),
        guard,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        loader=None,
    )


def render(text: str, variables: Mapping[str, Any], path: str, limits: Limits | None = None) -> str:
    """The rendered text; every failure is a TopologyError that names the file (and the limit).
    Rendered in a child process held to the limits by the kernel where it can be (_isolated)."""
    with render_stream(text, variables, path, limits) as stream:
        return stream.finish()


class _Rendered:
    """A render done in this process, served as a RenderedStream is (no fork here)."""

    def __init__(self, text: str) -> None:
        self._text, self._given = text, False

    def read(self, size: int = -1) -> str:
        given, self._given = self._given, True
        return "" if given else self._text

    def text_so_far(self) -> str:
        return self._text

    def finish(self) -> str:
        return self._text


@contextlib.contextmanager
def render_stream(
    text: str, variables: Mapping[str, Any], path: str, limits: Limits | None = None
) -> Iterator[isolated.RenderedStream | _Rendered]:
    """The rendered text as it comes: read() it (a parser may, while a child process still
    renders), then finish() for all of it or the template's error. In this process, where
    there is no fork, the render is done (or has failed) before the block starts."""
    lim = limits or Limits()
    if isolated.available():
        with isolated.stream_isolated(
            lambda sink: _render_into(text, variables, path, lim, sink), path, lim
        ) as stream:
            yield stream
    else:
        parts: list[str] = []
        _render_into(text, variables, path, lim, parts.append)
        yield _Rendered("".join(parts))


def _at(path: str, exc: BaseException) -> str:
    """path:LINE of the template line that raised exc (jinja2 puts the template's own lines
    into the traceback), or path alone when none can be found."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{path}:{line}" if line is not None else path


def _render_into(
    text: str, variables: Mapping[str, Any], path: str, lim: Limits, sink: Callable[[str], None]
) -> None:
    """Render in this process, each piece of text to sink (inside the guard, so its limits and
    messages cover the sink's work too), stopped by the guard at its limits."""
    try:
        with RenderGuard(lim, path) as guard:
            env = template_env(lim, guard)
            template = env.from_string(text)
            size = 0
            for chunk in template.generate(**variables):
                size += len(chunk)
                if size > lim.rendered_size:
                    raise TopologyError(
                        f"{path}: template: the rendered file is larger than "
                        f"{describe('rendered-size', lim.rendered_size)}"
                    )
                sink(chunk)
                guard.check()
    except TopologyError as exc:
        text_ = str(exc)
        raise TopologyError(text_ if text_.startswith(path) else f"{path}: {text_}") from None
    except jinja2.UndefinedError as exc:
        raise TopologyError(
            f"{_at(path, exc)}: template: {exc.message}; define it under vars: or pass --var NAME=VALUE"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise TopologyError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TopologyError(
            f"{_at(path, exc)}: template: {exc} (templates cannot reach Python internals)"
        ) from None
    except jinja2.TemplateError as exc:
        raise TopologyError(f"{_at(path, exc)}: template: {exc}") from None
    except RecursionError:
        raise TopologyError(f"{path}: template: recursion too deep (a macro that calls itself?)") from None
    except MemoryError:  # in a child process: RLIMIT_AS, which is render-memory
        raise isolated.memory_error(path, lim) from None
    except OverflowError as exc:
        raise TopologyError(f"{_at(path, exc)}: template: {exc}") from None
    except TypeError as exc:
        if "no loader" in str(exc):
            raise TopologyError(f"{path}: template: templates cannot include or import files") from None
        raise TopologyError(f"{_at(path, exc)}: template: {exc}") from None
    except (ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        raise TopologyError(f"{_at(path, exc)}: template: {type(exc).__name__}: {exc}") from None
