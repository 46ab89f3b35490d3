"""``resdsl fmt``: rewrite spec text in one canonical layout, keeping every comment.

The formatter only moves whitespace, line breaks and comments; it drops nothing but
redundant trailing commas (``f(a, b,)``; a one-element tuple keeps its comma). Newlines are
not significant in the language, so a layout change cannot change meaning; to make that a
guarantee rather than a hope, :func:`format_text` re-parses its own output and refuses
(raises :class:`FormatterError`) unless the syntax tree, positions aside, and the comments, in
order, are the same as the input's.

The layout, applied to a concrete syntax tree (a second Lark parser over the same grammar
file that keeps every token and collects the comments the grammar ignores):

* 4-space indents, one statement per line, ``{`` at the end of the line that opens a body
  and ``}`` on its own line (an empty body is ``{}``);
* one space around binary operators, ``->``, ``=`` of assignments and parameter defaults,
  and after ``,`` and ``:``; none around the ``=`` of a keyword argument, inside brackets,
  or after a unary ``-``;
* at the top level, one blank line before and after every ``block`` and ``network``
  definition (a comment directly above a definition stays attached to it); elsewhere, runs
  of blank lines become one, and none follow ``{`` or precede ``}``;
* lines are at most :data:`WIDTH` columns where a break is possible:
  - the chain that makes up a whole assignment or ``return`` value, if it does not fit on
    one line, is broken before every ``->`` but the first, each stage on its own line and
    the arrows aligned under the first one;
  - a definition's parameter and input lists are filled, as many per line as fit, later
    lines aligned after the ``(`` (the input list wraps to the column of the first ``(``);
  - an ``assert`` whose message does not fit goes on to a second line, under the condition;
  other lines (a long call, a long condition) are left long;
* a parameter or input list written with a trailing comma, or holding a comment, has one
  item per line, each with its comma (Black's "magic trailing comma");
* comments stay where they are: on their own line, or at the end of a line after two
  spaces (aligned over consecutive statement lines); one at a line break of a broken chain,
  a one-per-line list or an ``assert`` stays there. A comment where the layout has no line
  break (inside an expression, or a definition header outside its lists) moves, with the
  other comments of that statement or header, onto its own lines above it; one in a
  ``for``/``repeat``/``dense``/``if`` header or just before a ``{`` moves to the top of
  that body.

The package: :mod:`.source` (the concrete tree, its tokens and comments), :mod:`.lines`
(the output lines and where comments go between them), :mod:`.expressions` (one
expression on one line), :mod:`.layout` (definitions, bodies and statements); this module
checks the result and reads and diffs files.
"""

from __future__ import annotations

import dataclasses
import difflib
import os

from ...errors import Span, SpecError, shown_path
from ...loader import open_regular, strip_bom
from ...syntax import parse
from ...syntax.ast import Module
from .layout import Printer
from .lines import INDENT as INDENT
from .lines import WIDTH, FormatterError
from .source import concrete

# The tests reach the concrete parse and patch the printer through these names.
_concrete = concrete
_Printer = Printer

__all__ = ["WIDTH", "FormatterError", "format_text", "read_source", "unified_diff"]


def format_text(text: str, path: str = "<string>") -> str:
    """Return ``text`` in the canonical layout. Raises :class:`resdsl.SpecError` on bad syntax.

    A UTF-8 byte order mark at the start is dropped: the canonical layout has none."""
    text = strip_bom(text)
    original = parse(text, path)  # the real parser: its errors, its checks (depth, keywords)
    tree, comments = _concrete(text)
    out = _Printer(text, tree, comments).module()
    _verify(original, [c.value.rstrip() for c in comments], out)
    return out


def read_source(path: str) -> str:
    """A spec file's text exactly as stored (``\\r\\n`` and a byte order mark kept, so they
    count as a change). Only a regular file is read."""
    try:
        with open_regular(path, encoding="utf-8", newline="") as f:
            return f.read()
    except OSError as e:
        raise SpecError(f"cannot read {shown_path(path)}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"cannot read {shown_path(path)}: {e}") from None


def unified_diff(old: str, new: str, path: str) -> str:
    """What formatting changes, as a unified diff (``a/PATH`` -> ``b/PATH``, as git writes)."""
    before, after = (path, path) if os.path.isabs(path) else (f"a/{path}", f"b/{path}")
    lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    return "".join(difflib.unified_diff(*lines, before, after))


def _verify(original: Module, comments: list[str], out: str) -> None:
    try:
        again = parse(out, "<formatted>")
        _, new_comments = _concrete(out)
    except Exception as e:  # any failure to re-read our own output is our bug
        raise FormatterError(f"the formatted text does not parse: {e}") from None
    if not _same(original, again):
        raise FormatterError("the formatted text parses to a different syntax tree")
    if [c.value for c in new_comments] != comments:
        raise FormatterError("the formatted text lost or reordered a comment")


def _same(a: object, b: object) -> bool:
    """Structural equality of two syntax trees, ignoring source positions."""
    if isinstance(a, Span) and isinstance(b, Span):
        return True
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(
            _same(getattr(a, f.name), getattr(b, f.name))
            for f in dataclasses.fields(a)
            if f.name != "path" or not isinstance(a, Module)
        )
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=False))
    return a == b
