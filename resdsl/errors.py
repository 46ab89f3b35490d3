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
    """The text of ``line`` of ``path`` as it was parsed (the raw text: see ``_excerpt``)."""
    text = _SOURCES.get(path)
    if text is None and os.path.isfile(path):  # a regular file only: never a FIFO or device
        try:
            # a BOM is skipped, as when read; O_NONBLOCK: a FIFO swapped in cannot block
            nonblocking = lambda name, flags: os.open(name, flags | os.O_NONBLOCK)  # noqa: E731
            with open(path, encoding="utf-8-sig", opener=nonblocking) as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            return None
    if text is None:
        return None
    lines = text.split("\n")  # as the parser counts lines: a form feed does not end one
    return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""


# A diagnostic shows at most this many characters of a source line (escapes counted as
# written), the part around the caret, with `…` where the line was cut: a spec that is not
# a spec (a secret file, a minified blob) is never echoed in full.
EXCERPT_WIDTH = 200
_EXCERPT_BEFORE = 60  # characters kept left of the caret when the line is cut
MESSAGE_WIDTH = 500  # a message, hint or note longer than this is cut, with `…`
ELLIPSIS = "…"


def printable(text: str) -> str:
    """``text`` with every non-printable character written as its Python escape:
    ``\\x00``, ``\\x1b``, ``\\u202e`` (terminal controls and bidi overrides cannot act on
    the terminal); a lone surrogate (an undecodable byte of a file name) as ``\\xNN``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    if 0xDC80 <= ord(c) <= 0xDCFF:  # os.fsdecode's surrogateescape of an undecodable byte
        return f"\\x{ord(c) - 0xDC00:02x}"
    return c.encode("unicode_escape").decode("ascii")


def shown_path(path: str) -> str:
    """A file name as it can be printed: undecodable bytes and control characters escaped."""
    return printable(path)


def clip(text: str, width: int = MESSAGE_WIDTH) -> str:
    """``text`` made printable and cut to ``width`` characters with ``…`` (a message can
    quote spec text: a token, a string, a name)."""
    text = printable(text)
    return text if len(text) <= width else text[:width] + ELLIPSIS


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
    """The source line and a caret under the span: non-printable characters escaped (the
    caret stays under what it points at), at most ``EXCERPT_WIDTH`` characters of it."""
    text = source_line(span.path, span.line)
    if text is None:
        return []
    text = text.expandtabs(1)  # a tab is one column, as the parser counts them
    end = span.end_column if span.end_line == span.line else len(text) + 1
    # every character shows as one or more: only the part near the caret can be shown
    first = max(0, min(span.column - 1, len(text)) - EXCERPT_WIDTH)
    cut_left, cut_right = first > 0, len(text) > first + 3 * EXCERPT_WIDTH
    text = text[first : first + 3 * EXCERPT_WIDTH]
    pieces = [c if c.isprintable() else _escape(c) for c in text]
    offsets = [0]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))

    def at(column: int) -> int:  # display offset of a 1-based column (past the end: spaces)
        i = max(0, column - 1 - first)
        return offsets[min(i, len(text))] + max(0, i - len(text))

    line, start = "".join(pieces), at(span.column)
    stop = max(start + 1, at(end))
    if cut_left or cut_right or len(line) > EXCERPT_WIDTH:  # a window around the caret
        left = max(0, min(start - _EXCERPT_BEFORE, len(line) - EXCERPT_WIDTH))
        left = min(o for o in offsets if o >= left)  # cut between characters, not escapes
        right = max(o for o in offsets if o <= left + EXCERPT_WIDTH)
        head = ELLIPSIS if cut_left or left else ""
        tail = ELLIPSIS if cut_right or right < len(line) else ""
        line = head + line[left:right] + tail
        start, stop = start + len(head) - left, stop + len(head) - left
        stop = max(start + 1, min(stop, len(line)))
    gutter = f"{span.line:>4} | "
    caret = _paint("^" * (stop - start), "caret", color)
    return [gutter + line, " " * len(gutter) + " " * start + caret]


def render(error: SpecError, color: bool = False) -> str:
    """Every diagnostic of ``error.errors``, then a count when there are several."""
    if len(error.errors) <= 1:
        return render_one(error, color)
    parts = [render_one(e, color) for e in error.errors]
    return "\n\n".join(parts) + f"\n\n{len(parts)} errors"


def render_one(error: SpecError, color: bool = False) -> str:
    """The one text form of a diagnostic: location, message, source line, caret, hints, notes."""
    where = _paint(f"{_where(error.span)}: ", "where", color) if error.span else ""
    message = clip(error.message)
    out = [f"{where}{_paint(f'error[{error.code}]', 'error', color)}: {message}"]
    if error.span:
        out += _excerpt(error.span, color)
    out += [f"  {_paint('hint', 'hint', color)}: {clip(h)}" for h in error.hints]
    for note in error.notes:
        label = _paint("note", "note", color)
        out.append(f"  {label}: {_where(note.span)}: {clip(note.message)}" if note.span else
                   f"  {label}: {clip(note.message)}")  # fmt: skip
        if note.span:
            out += ["  " + line for line in _excerpt(note.span, color)]
    return "\n".join(out)


def _where(span: Span) -> str:
    return f"{shown_path(span.path)}:{span.line}:{span.column}"


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
