"""Source positions, the SpecError family, and the one diagnostic renderer.

Every error a user can cause is a :class:`SpecError` carrying the span of the
spec text it is about. ``render`` turns it into the familiar compiler layout::

    net.res:4:12: error[E0301]: cannot add tensors of shape (64, 56, 56) and (256, 56, 56)
        y = relu(y + x)
                 ^^^^^
    hint: project the shortcut: `shortcut(x, like=y)` ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = [
    "ArgumentError",
    "CycleError",
    "DuplicateNameError",
    "LimitError",
    "ShapeError",
    "Span",
    "SpecError",
    "SpecImportError",
    "SpecSyntaxError",
    "TypeMismatchError",
    "UnknownNameError",
    "ValueRangeError",
    "render",
]


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file; lines and columns are 1-based, end is exclusive."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Note:
    """A secondary location that helps explain an error (e.g. where a value was defined)."""

    message: str
    span: Span | None = None


class SpecError(Exception):
    """Base class of every error in a spec. Has ``path``, ``line``, ``column``, ``message``."""

    code = "E0000"

    def __init__(
        self,
        message: str,
        span: Span | None = None,
        *,
        hints: list[str] | None = None,
        notes: list[Note] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.hints = list(hints or [])
        self.notes = list(notes or [])
        # every error of the run, in source order, this one first; more than one when the
        # elaborator recovered from a failed statement and found independent mistakes
        self.errors: list[SpecError] = [self]

    @property
    def path(self) -> str | None:
        return self.span.path if self.span else None

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def column(self) -> int | None:
        return self.span.column if self.span else None

    def __str__(self) -> str:
        where = f"{self.span}: " if self.span else ""
        return f"{where}{self.message}"


class SpecSyntaxError(SpecError):
    """The text does not follow the grammar."""

    code = "E0101"


class UnknownNameError(SpecError):
    """A name that does not exist: variable, block, op, parameter, keyword argument, attribute."""

    code = "E0201"


class ArgumentError(SpecError):
    """Wrong number of arguments, a keyword given twice, a missing required argument."""

    code = "E0202"


class DuplicateNameError(SpecError):
    """Two ops or block instances that would get the same hierarchical name."""

    code = "E0204"


class TypeMismatchError(SpecError):
    """A value of the wrong type: a tensor where a number is needed, a str for an int, ..."""

    code = "E0203"


class ShapeError(SpecError):
    """Tensor shapes that do not fit an op (mismatched add, wrong rank, empty output)."""

    code = "E0301"


class ValueRangeError(SpecError):
    """A value outside its allowed range: non-positive sizes, division by zero, ..."""

    code = "E0302"


class CycleError(SpecError):
    """A block that (indirectly) calls itself, or an import cycle."""

    code = "E0401"


class SpecImportError(SpecError):
    """An import that cannot be resolved or is not allowed."""

    code = "E0402"


class LimitError(SpecError):
    """A resource limit was exceeded (graph size, loop count, recursion depth)."""

    code = "E0501"


# Source texts by path, so a diagnostic can show the offending line.
_SOURCES: dict[str, str] = {}


def remember_source(path: str, text: str) -> None:
    _SOURCES[path] = text


def source_line(path: str, line: int) -> str | None:
    text = _SOURCES.get(path)
    if text is None and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return None
    if text is None:
        return None
    lines = text.split("\n")  # as the parser counts lines: a form feed does not end one
    return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""


# ANSI styles for a terminal (see ``use_color``); plain text everywhere else.
_STYLES = {"error": "1;31", "caret": "1;31", "hint": "36", "note": "34", "where": "1"}


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_STYLES[style]}m{text}\x1b[0m" if color else text


def use_color(stream, choice: str = "auto") -> bool:
    """Colour for ``auto`` only on a terminal and never with ``NO_COLOR`` set (no-color.org)."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def _excerpt(span: Span, color: bool = False) -> list[str]:
    text = source_line(span.path, span.line)
    if text is None:
        return []
    text = text.expandtabs(1)
    end = span.end_column if span.end_line == span.line else len(text) + 1
    width = max(1, end - span.column)
    gutter = f"{span.line:>4} | "
    caret = _paint("^" * width, "caret", color)
    return [gutter + text, " " * len(gutter) + " " * (span.column - 1) + caret]


def render(error: SpecError, color: bool = False) -> str:
    """Every diagnostic of ``error.errors``, then a count when there are several."""
    if len(error.errors) <= 1:
        return render_one(error, color)
    parts = [render_one(e, color) for e in error.errors]
    return "\n\n".join(parts) + f"\n\n{len(parts)} errors"


def render_one(error: SpecError, color: bool = False) -> str:
    """The one text form of a diagnostic: location, message, source line, caret, hints, notes."""
    where = _paint(f"{error.span}: ", "where", color) if error.span else ""
    out = [f"{where}{_paint(f'error[{error.code}]', 'error', color)}: {error.message}"]
    if error.span:
        out += _excerpt(error.span, color)
    out += [f"  {_paint('hint', 'hint', color)}: {h}" for h in error.hints]
    for note in error.notes:
        label = _paint("note", "note", color)
        out.append(f"  {label}: {note.span}: {note.message}" if note.span else
                   f"  {label}: {note.message}")  # fmt: skip
        if note.span:
            out += ["  " + line for line in _excerpt(note.span, color)]
    return "\n".join(out)


def _span_dict(span: Span | None) -> dict | None:
    if span is None:
        return None
    return {"path": span.path, "line": span.line, "column": span.column,
            "end_line": span.end_line, "end_column": span.end_column}  # fmt: skip


def to_dicts(error: SpecError) -> list[dict]:
    """``error.errors`` as JSON-ready diagnostics (``resdsl check --format json``)."""
    return [
        {
            "severity": "error",
            "code": e.code,
            "kind": type(e).__name__,
            "message": e.message,
            "span": _span_dict(e.span),
            "hints": list(e.hints),
            "notes": [{"message": n.message, "span": _span_dict(n.span)} for n in e.notes],
        }
        for e in error.errors
    ]


@dataclass
class DidYouMean:
    """Closest-name suggestions for an unknown name."""

    candidates: list[str] = field(default_factory=list)

    def hint(self, name: str) -> list[str]:
        import difflib

        close = difflib.get_close_matches(name, self.candidates, n=3, cutoff=0.6)
        if not close:
            return []
        return ["did you mean " + " or ".join(f"`{c}`" for c in close) + "?"]
