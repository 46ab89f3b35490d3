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
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree

from .errors import Span, SpecError, shown_path
from .loader import open_regular, strip_bom
from .syntax import parse
from .syntax.ast import Module

WIDTH = 100
INDENT = 4

__all__ = ["WIDTH", "FormatterError", "format_text", "read_source", "unified_diff"]


class FormatterError(Exception):
    """The formatted text would not mean the same as the input: a bug in resdsl, not the spec."""


@dataclass
class Comment:
    """A ``# ...`` comment: its text, whether it had a line to itself, and a blank line above."""

    text: str
    own_line: bool
    blank_before: bool


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


# --- the concrete syntax tree ------------------------------------------------------------------

_COMMENTS: list[Token] = []  # filled by the lexer callback during one parse (not thread-safe)


@lru_cache(maxsize=1)
def _cst_parser() -> Lark:
    # The same grammar file as the production parser, keeping the tokens it would drop.
    grammar = resources.files("resdsl.grammars").joinpath("resdsl.lark").read_text("utf-8")
    return Lark(
        grammar,
        parser="lalr",
        start="start",
        keep_all_tokens=True,
        maybe_placeholders=False,
        propagate_positions=True,
        lexer_callbacks={"COMMENT": _COMMENTS.append},
    )


def _concrete(text: str) -> tuple[Tree, list[Token]]:
    """The full parse tree of ``text`` and its comments, in source order."""
    _COMMENTS.clear()
    try:
        tree = _cst_parser().parse(text)
        return tree, list(_COMMENTS)
    finally:
        _COMMENTS.clear()


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


# --- layout ----------------------------------------------------------------------------------


@dataclass
class _Group:
    """A definition's parameter or input list: ``(`` items ``)``, and its comments."""

    open: int  # token index of "("
    close: int  # token index of ")"
    texts: list[str]  # each item on one line
    ends: list[tuple[int, int]]  # per item: its last token, the last gap that follows it
    trailing_comma: bool
    opening: list[Comment] = field(default_factory=list)  # right after "("
    after: list[list[Comment]] = field(default_factory=list)  # after each item

    @classmethod
    def of(cls, printer: _Printer, children: list) -> _Group:
        lpar, rpar = printer.first(children[0]), printer.last(children[-1])
        items = (
            [c for c in children[1].children if isinstance(c, Tree)] if len(children) > 2 else []
        )
        ends = [
            (printer.last(it), printer.first(nxt) if nxt is not None else rpar)
            for it, nxt in zip(items, [*items[1:], None], strict=False)
        ]
        comma = bool(items) and _is(printer.tokens[rpar - 1], "COMMA")
        return cls(lpar, rpar, [printer.expr(i) for i in items], ends, comma)

    def slots(self) -> list[int]:
        """The gaps where a comment can stay: after "(" and after each item."""
        if not self.texts:
            return []
        return [self.open + 1] + [i for own, end in self.ends for i in range(own + 1, end + 1)]

    def take_comments(self, printer: _Printer) -> None:
        if self.texts:
            self.opening = printer.take(self.open + 1)
        self.after = [printer.take(own + 1, end) for own, end in self.ends]

    @property
    def vertical(self) -> bool:
        """Written with a trailing comma, or holding comments: one item per line."""
        return self.trailing_comma or bool(self.opening) or any(self.after)

    def words(self, tail: str) -> list[str]:
        if not self.texts:
            return ["()" + tail]
        words = [t + "," for t in self.texts]
        words[-1] = words[-1][:-1] + ")" + tail
        words[0] = "(" + words[0]
        return words


def _is(node: object, kind: str) -> bool:
    return isinstance(node, Token) and node.type == kind


class _Printer:
    """Walks the concrete tree and writes lines; ``gaps[i]`` are the comments before token i."""

    def __init__(self, text: str, tree: Tree, comments: list[Token]) -> None:
        self.text, self.tree = text, tree
        self.tokens: list[Token] = list(tree.scan_values(lambda v: isinstance(v, Token)))
        self.index = {t.start_pos: i for i, t in enumerate(self.tokens)}
        starts = [t.start_pos for t in self.tokens]
        self.gaps: dict[int, list[Comment]] = {}
        previous_end = 0
        for c in comments:
            i = bisect.bisect_left(starts, c.start_pos)
            if i > 0:
                previous_end = max(previous_end, self.tokens[i - 1].end_pos)
            line_start = text.rfind("\n", 0, c.start_pos) + 1
            own = not text[line_start : c.start_pos].strip()
            blank = text.count("\n", previous_end, c.start_pos) >= 2
            self.gaps.setdefault(i, []).append(Comment(c.value.rstrip(), own, blank))
            previous_end = c.end_pos
        self.comment_ends = sorted(c.end_pos for c in comments)
        self.lines: list[str] = []  # code
        self.trailing: dict[int, str] = {}  # line number -> its end-of-line comment

    # --- tokens, gaps and blank lines ----------------------------------------------------------

    def first(self, node: Tree | Token) -> int:
        while isinstance(node, Tree):
            node = node.children[0]
        return self.index[node.start_pos]

    def last(self, node: Tree | Token) -> int:
        while isinstance(node, Tree):
            node = node.children[-1]
        return self.index[node.start_pos]

    def take(self, start: int, stop: int | None = None) -> list[Comment]:
        """Remove and return the comments of the gaps before tokens ``start..stop``."""
        out: list[Comment] = []
        for i in range(start, (start if stop is None else stop) + 1):
            out += self.gaps.pop(i, [])
        return out

    def blank_before(self, i: int) -> bool:
        """Whether the source has a blank line just above token ``i``."""
        start = self.tokens[i].start_pos
        end = self.tokens[i - 1].end_pos if i else 0
        k = bisect.bisect_left(self.comment_ends, start + 1) - 1
        if k >= 0:
            end = max(end, self.comment_ends[k])
        return self.text.count("\n", end, start) >= 2

    # --- output --------------------------------------------------------------------------------

    def emit(self, indent: int, text: str) -> None:
        self.lines.append(" " * indent + text)

    def extend(self, code: str) -> None:
        """Continue the last line: ``}`` of an empty body, `` else {``."""
        if len(self.lines) - 1 in self.trailing:  # the layout never does this
            raise FormatterError("code after an end-of-line comment")
        self.lines[-1] += code

    def render(self) -> str:
        """The lines; the end-of-line comments of consecutive statement lines are aligned.

        Lines that open or close a body or list (``{``, ``(``, ``}``, ``)``) keep their
        comment two spaces away.
        """

        def aligned(k: int) -> bool:
            code = self.lines[k]
            return k in self.trailing and code[-1] not in "{(" and code.lstrip()[0] not in "})"

        out, i = [], 0
        while i < len(self.lines):
            j = i
            while j < len(self.lines) and aligned(j):
                j += 1
            run = range(i, j)
            col = max((len(self.lines[k]) for k in run), default=0) + 2
            if len(run) < 2 or any(col + len(self.trailing[k]) > WIDTH for k in run):
                col = 0  # no alignment: each comment two spaces after its code
            for k in run:
                code = self.lines[k]
                out.append(code + " " * max(2, col - len(code)) + self.trailing[k])
            if j == i:
                code = self.lines[i]
                out.append(code + "  " + self.trailing[i] if i in self.trailing else code)
                j += 1
            i = j
        return "\n".join(out) + "\n" if out else ""

    def blank(self) -> None:
        if self.lines and self.lines[-1]:
            self.lines.append("")

    def gap(
        self,
        comments: list[Comment],
        indent: int,
        *,
        at_start: bool,
        next_blank: bool,
        after_def: bool = False,
        before_def: bool = False,
        closing: bool = False,
    ) -> None:
        """Comments between two elements, then the blank line (if any) above the next one."""
        comments = self.end_of_line(comments)
        flags = [c.blank_before for c in comments] + [next_blank]  # blank above element k
        if after_def:
            flags[0] = True
        if before_def:  # the comments right above a definition belong to it: blank above them
            k = len(comments)
            while k > 0 and not flags[k]:
                k -= 1
            flags[k] = True
        if closing:
            flags[-1] = False
        for k, c in enumerate(comments):
            if flags[k] and not at_start:
                self.blank()
            self.emit(indent, c.text)
            at_start = False
        if flags[-1] and not at_start:
            self.blank()

    def own_lines(self, comments: list[Comment], indent: int) -> None:
        for c in comments:
            self.emit(indent, c.text)

    # --- the file -----------------------------------------------------------------------------

    def module(self) -> str:
        previous: str | None = None
        for item in self.tree.children:
            i = self.first(item)
            is_def = item.data in ("block_def", "network_def")
            self.gap(
                self.take(i),
                0,
                at_start=not self.lines,
                next_blank=self.blank_before(i),
                after_def=previous == "def",
                before_def=is_def and previous is not None,
            )
            if is_def:
                self.definition(item)
            else:
                self.simple(item, 0)
            previous = "def" if is_def else "other"
        self.gap(
            self.take(len(self.tokens)),
            0,
            at_start=not self.lines,
            next_blank=False,
            after_def=previous == "def",
            closing=True,
        )
        return self.render()

    def definition(self, tree: Tree) -> None:
        """``block NAME(params) (inputs) {``, then the body."""
        kw, name, *rest = tree.children
        body = rest[-1]
        lparens = [i for i, c in enumerate(rest) if _is(c, "LPAR")]
        groups = [
            _Group.of(self, rest[lparens[0] : lparens[1]]),
            _Group.of(self, rest[lparens[1] : -1]),
        ]
        start, end = self.first(tree), groups[1].close
        slots = {i for g in groups for i in g.slots()}
        if any(i not in slots for i in range(start + 1, end + 1) if i in self.gaps):
            # A comment the layout has no line for: all of the header's go above it, in order.
            self.own_lines(self.take(start + 1, end), 0)
        for g in groups:
            g.take_comments(self)
        line = f"{kw} {name}"
        for k, g in enumerate(groups):
            last = k == len(groups) - 1
            if g.vertical:
                line = self.vertical(line + ("" if k == 0 else " "), g, last)
            else:
                words = g.words(" {" if last else "")
                wrap = None if k == 0 else len(f"{kw} {name}") if not groups[0].vertical else 0
                line = self.fill(line, words, "" if k == 0 else " ", wrap)
        self.lines.append(line)
        self.body(body, 0, self.take(end + 1, self.first(body)))

    def vertical(self, line: str, group: _Group, last: bool) -> str:
        """One item per line, each with its trailing comma; returns the closing line."""
        self.lines.append(line + "(")
        self.slot(group.opening, INDENT)
        for text, comments in zip(group.texts, group.after, strict=True):
            self.emit(INDENT, text + ",")
            self.slot(comments, INDENT)
        return ")" + (" {" if last else "")

    def fill(self, line: str, words: list[str], sep: str, wrap: int | None) -> str:
        """Append ``words`` to ``line``, as many per line as fit; returns the unfinished line.

        The first word wraps to column ``wrap`` (never, if None); the others to just after
        the ``(`` that the first word starts with.
        """
        col = 0
        for k, w in enumerate(words):
            space = sep if k == 0 else " "
            if len(line) + len(space) + len(w) <= WIDTH or (k == 0 and wrap is None):
                col = len(line) + len(space) if k == 0 else col
                line += space + w
            else:
                self.lines.append(line)
                col = wrap if k == 0 and wrap is not None else col
                line = " " * (col if k == 0 else col + 1) + w
        return line

    def slot(self, comments: list[Comment], indent: int) -> None:
        """Comments at a line break inside a statement: the first may end the line above."""
        self.own_lines(self.end_of_line(comments), indent)

    def end_of_line(self, comments: list[Comment]) -> list[Comment]:
        """Put the first comment at the end of the last line if it was written at the end of
        one and that line is code without a comment yet; return the rest."""
        if not comments or comments[0].own_line or not self.lines:
            return comments
        last = len(self.lines) - 1
        if last in self.trailing or self.lines[last].lstrip()[:1] in ("", "#"):
            return comments
        self.trailing[last] = comments[0].text
        return comments[1:]

    def body(self, tree: Tree, indent: int, relocated: list[Comment]) -> None:
        """The statements of ``{ ... }`` after the line that opens it, then ``}``."""
        stmts = tree.children[1:-1]
        rbrace = self.first(tree.children[-1])
        for k, st in enumerate(stmts):
            i = self.first(st)
            comments = relocated + self.take(i) if k == 0 else self.take(i)
            self.gap(comments, indent + INDENT, at_start=k == 0, next_blank=self.blank_before(i))
            self.statement(st, indent + INDENT)
        closing = self.take(rbrace)
        if not stmts:
            closing = relocated + closing
            if not closing:
                self.extend("}")
                return
        self.gap(closing, indent + INDENT, at_start=not stmts, next_blank=False, closing=True)
        self.emit(indent, "}")

    # --- statements ---------------------------------------------------------------------------

    def statement(self, tree: Tree, indent: int) -> None:
        kind = tree.data
        if kind == "if_stmt":
            self.if_stmt(tree, indent)
        elif kind in ("for_stmt", "repeat_stmt", "dense_stmt"):
            *header, body = tree.children
            relocated = self.take(self.first(tree) + 1, self.first(body))
            self.emit(indent, " ".join(self.expr(c) for c in header) + " {")
            self.body(body, indent, relocated)
        else:
            self.simple(tree, indent)

    def if_stmt(self, tree: Tree, indent: int) -> None:
        children = tree.children
        previous = self.first(tree)  # the token before the clause's header comments
        k = 0
        while k < len(children):
            c = children[k]
            if isinstance(c, Tree) and c.data == "elif_clause":
                header, body = c.children[:-1], c.children[-1]
                k += 1
            elif _is(c, "ELSE"):
                header, body = [c], children[k + 1]
                k += 2
            else:  # the leading `if test body`
                header, body = children[:2], children[2]
                k += 3
            relocated = self.take(previous + 1, self.first(body))
            text = " ".join(self.expr(h) for h in header) + " {"
            if previous == self.first(tree):
                self.emit(indent, text)
            else:
                self.extend(" " + text)
            self.body(body, indent, relocated)
            previous = self.last(body)

    def simple(self, tree: Tree, indent: int) -> None:
        """An assignment, ``return``, ``assert`` or ``import``: one line, or the broken forms.

        Comments can stay at the line breaks of a chain or an ``assert``; if one is anywhere
        else, all of the statement's move above it, in order.
        """
        a, b = self.first(tree), self.last(tree)
        children, value = tree.children, tree.children[-1]
        breaks: set[int] = set()  # gaps at a possible line break
        if tree.data in ("assign", "return_stmt") and isinstance(value, Tree):
            if value.data == "chain" and not _is(children[-2], "COMMA"):
                breaks = {self.index[t.start_pos] + d for t in value.children[1::2] for d in (0, 1)}
        elif tree.data == "assert_stmt" and len(children) == 4:
            comma = self.index[children[2].start_pos]
            breaks = {comma, comma + 1}
        if any(i not in breaks for i in range(a + 1, b + 1) if i in self.gaps):
            self.own_lines(self.take(a + 1, b), indent)
        if not breaks:
            one_line = self.prefix(children) if tree.data != "import_stmt" else self.expr(tree)
            self.emit(indent, one_line if tree.data != "std_import" else self.expr(tree))
        elif tree.data == "assert_stmt":
            self.assert_stmt(tree, indent)
        else:
            self.chain(value, self.prefix(children[:-1]), indent)

    def prefix(self, children: list) -> str:
        """The tokens of a statement as one line: ``a, b = value``, ``return x, y``."""
        out = ""
        for c in children:
            piece = self.expr(c)
            out += piece if _is(c, "COMMA") or not out else " " + piece
        return out + (" " if children and _is(children[-1], "EQUAL") else "")

    def chain(self, tree: Tree, prefix: str, indent: int) -> None:
        """A statement whose value is a chain, with comments only at the arrows."""
        if not prefix.endswith(" "):
            prefix += " "
        head = self.expr(tree.children[0])
        stages = ["-> " + self.expr(s) for s in tree.children[2::2]]
        # Comments before or after an arrow follow the stage before it (the first line holds
        # the head and the first stage).
        slots: list[list[Comment]] = [[] for _ in stages]
        for n, arrow in enumerate(tree.children[1::2]):
            i = self.index[arrow.start_pos]
            slots[max(n - 1, 0)] += self.take(i, i + 1)
        one_line = " " * indent + prefix + head + " " + " ".join(stages)
        if not any(slots) and (len(one_line) <= WIDTH or len(stages) == 1):
            self.lines.append(one_line)
            return
        align = indent + len(prefix) + len(head) + 1
        for n, (stage, comments) in enumerate(zip(stages, slots, strict=True)):
            if n == 0:
                self.emit(indent, prefix + head + " " + stage)
            else:
                self.emit(align, stage)
            # after the last line, comments are the statement's own: at its indent
            self.slot(comments, align if n + 1 < len(stages) else indent)

    def assert_stmt(self, tree: Tree, indent: int) -> None:
        """``assert test,`` and the message under the test when it does not fit."""
        _, test, comma, message = tree.children
        c = self.index[comma.start_pos]
        comments = self.take(c, c + 1)
        first, second = f"assert {self.expr(test)},", self.expr(message)
        if not comments and indent + len(first) + 1 + len(second) <= WIDTH:
            self.emit(indent, f"{first} {second}")
            return
        self.emit(indent, first)
        self.slot(comments, indent + 7)
        self.emit(indent + 7, second)

    # --- expressions: one line each -----------------------------------------------------------

    def expr(self, node: Tree | Token) -> str:
        if isinstance(node, Token):
            return str(node)
        kind, ch = node.data, node.children
        if kind in ("binop", "compare", "or_", "and_", "chain", "cond", "not_"):
            return " ".join(self.expr(c) for c in ch)
        if kind in ("unary", "index", "atom", "label"):
            return "".join(self.expr(c) for c in ch)
        if kind == "attribute":
            base = self.expr(ch[0])
            # `1 .x` must not become `1.x`, which reads as the float `1.` then `x`
            sep = " " if _is(ch[0].children[0] if isinstance(ch[0], Tree) else ch[0], "INT") else ""
            return base + sep + "." + self.expr(ch[2])
        if kind in ("call", "stage"):
            return self.call(ch)
        if kind in ("args", "params", "inputs"):
            return ", ".join(self.expr(c) for c in ch if not _is(c, "COMMA"))
        if kind == "tuple_lit":
            items = [self.expr(c) for c in ch[1:-1] if not _is(c, "COMMA")]
            return "(" + items[0] + ",)" if len(items) == 1 else "(" + ", ".join(items) + ")"
        if kind == "kwarg":
            return "".join(self.expr(c) for c in ch)
        if kind == "std_import":  # import std.NAME
            return f"{ch[0]} " + "".join(self.expr(c) for c in ch[1:])
        if kind in ("labeled", "labeled_bare", "param", "input", "import_stmt"):
            return self.words(ch)
        if len(ch) == 1:  # literals and names
            return self.expr(ch[0])
        return " ".join(self.expr(c) for c in ch)  # a rule added to the grammar later

    def call(self, ch: list) -> str:
        """``label: f(args)``, ``f()``, ``f``: a call or a chain stage."""
        out = ""
        for c in ch:
            if _is(c, "COLON"):
                out += ": "
            elif _is(c, "LPAR") or _is(c, "RPAR") or _is(c, "NAME"):
                out += str(c)
            else:
                out += self.expr(c)
        return out

    def words(self, ch: list) -> str:
        """Tokens separated by spaces, except before ``:``."""
        out = ""
        for c in ch:
            piece = self.expr(c)
            out += piece if _is(c, "COLON") or not out else " " + piece
        return out
