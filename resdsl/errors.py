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
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _excerpt(span: Span) -> list[str]:
    text = source_line(span.path, span.line)
    if text is None:
        return []
    text = text.expandtabs(1)
    end = span.end_column if span.end_line == span.line else len(text) + 1
    width = max(1, end - span.column)
    gutter = f"{span.line:>4} | "
    return [gutter + text, " " * len(gutter) + " " * (span.column - 1) + "^" * width]


def render(error: SpecError) -> str:
    """The one text form of a diagnostic: location, message, source line, caret, hints, notes."""
    where = f"{error.span}: " if error.span else ""
    out = [f"{where}error[{error.code}]: {error.message}"]
    if error.span:
        out += _excerpt(error.span)
    out += [f"  hint: {h}" for h in error.hints]
    for note in error.notes:
        out.append(
            f"  note: {note.span}: {note.message}" if note.span else f"  note: {note.message}"
        )
        if note.span:
            out += ["  " + line for line in _excerpt(note.span)]
    return "\n".join(out)


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
