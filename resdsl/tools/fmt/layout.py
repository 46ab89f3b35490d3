"""The layout of a file: definitions, their headers and bodies, and statements.

:class:`Printer` walks the concrete tree in order; it reads tokens and comments through
:class:`~.source.Source`, writes through :class:`~.lines.Lines`, and prints every
expression through :meth:`Printer.expr` (one place to intercept, as the tests do).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lark import Token, Tree

from . import expressions
from .lines import INDENT, WIDTH, Lines
from .source import Comment, Source, is_token


@dataclass
class Group:
    """A definition's parameter or input list: ``(`` items ``)``, and its comments."""

    open: int  # token index of "("
    close: int  # token index of ")"
    texts: list[str]  # each item on one line
    ends: list[tuple[int, int]]  # per item: its last token, the last gap that follows it
    trailing_comma: bool
    opening: list[Comment] = field(default_factory=list)  # right after "("
    after: list[list[Comment]] = field(default_factory=list)  # after each item

    @classmethod
    def of(cls, printer: Printer, children: list) -> Group:
        lpar, rpar = printer.first(children[0]), printer.last(children[-1])
        items = (
            [c for c in children[1].children if isinstance(c, Tree)] if len(children) > 2 else []
        )
        ends = [
            (printer.last(it), printer.first(nxt) if nxt is not None else rpar)
            for it, nxt in zip(items, [*items[1:], None], strict=False)
        ]
        comma = bool(items) and is_token(printer.tokens[rpar - 1], "COMMA")
        return cls(lpar, rpar, [printer.expr(i) for i in items], ends, comma)

    def slots(self) -> list[int]:
        """The gaps where a comment can stay: after "(" and after each item."""
        if not self.texts:
            return []
        return [self.open + 1] + [i for own, end in self.ends for i in range(own + 1, end + 1)]

    def take_comments(self, printer: Printer) -> None:
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


class Printer(Source, Lines):
    """Walks the concrete tree and writes lines."""

    def __init__(self, text: str, tree: Tree, comments: list[Token]) -> None:
        Source.__init__(self, text, tree, comments)
        Lines.__init__(self)

    def expr(self, node: Tree | Token) -> str:
        return expressions.expr(node)

    # --- the file -----------------------------------------------------------------------------

    def module(self) -> str:
        previous: str | None = None
        for item in self.tree.children:
            i = self.first(item)
            is_def = item.data in ("block_def", "inline_block_def", "network_def")
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
        """``[inline] block NAME(params) (inputs) {``, then the body."""
        children = tree.children
        modifier = ""
        if tree.data == "inline_block_def":  # `inline block`: one space between the words
            modifier, children = f"{children[0]} ", children[1:]
        kw, name, *rest = children
        body = rest[-1]
        lparens = [i for i, c in enumerate(rest) if is_token(c, "LPAR")]
        groups = [
            Group.of(self, rest[lparens[0] : lparens[1]]),
            Group.of(self, rest[lparens[1] : -1]),
        ]
        start, end = self.first(tree), groups[1].close
        slots = {i for g in groups for i in g.slots()}
        if any(i not in slots for i in range(start + 1, end + 1) if i in self.gaps):
            # A comment the layout has no line for: all of the header's go above it, in order.
            self.own_lines(self.take(start + 1, end), 0)
        for g in groups:
            g.take_comments(self)
        line = f"{modifier}{kw} {name}"
        for k, g in enumerate(groups):
            last = k == len(groups) - 1
            if g.vertical:
                line = self.vertical(line + ("" if k == 0 else " "), g, last)
            else:
                words = g.words(" {" if last else "")
                wrap = (
                    None
                    if k == 0
                    else len(f"{modifier}{kw} {name}")
                    if not groups[0].vertical
                    else 0
                )
                line = self.fill(line, words, "" if k == 0 else " ", wrap)
        self.lines.append(line)
        self.body(body, 0, self.take(end + 1, self.first(body)))

    def vertical(self, line: str, group: Group, last: bool) -> str:
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
            elif is_token(c, "ELSE"):
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
            if value.data == "chain" and not is_token(children[-2], "COMMA"):
                breaks = {self.index[t.start_pos] + d for t in value.children[1::2] for d in (0, 1)}
        elif tree.data == "assert_stmt" and len(children) == 4:
            comma = self.index[children[2].start_pos]
            breaks = {comma, comma + 1}
        if any(i not in breaks for i in range(a + 1, b + 1) if i in self.gaps):
            self.own_lines(self.take(a + 1, b), indent)
        if not breaks:
            single = tree.data in ("assign", "return_stmt") and not is_token(children[-2], "COMMA")
            if single:  # a long call or tuple splits at its brackets
                head = self.prefix(children[:-1])
                head += "" if head.endswith(" ") else " "
                self.lines += self.layout(value, indent, head, "")
                return
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
            out += piece if is_token(c, "COMMA") or not out else " " + piece
        return out + (" " if children and is_token(children[-1], "EQUAL") else "")

    def chain(self, tree: Tree, prefix: str, indent: int) -> None:
        """A statement whose value is a chain, with comments only at the arrows (where they
        stay, one stage per line)."""
        if not prefix.endswith(" "):
            prefix += " "
        # Comments before or after an arrow follow the stage before it (the first line holds
        # the head and the first stage).
        stages = tree.children[2::2]
        slots: list[list[Comment]] = [[] for _ in stages]
        for n, arrow in enumerate(tree.children[1::2]):
            i = self.index[arrow.start_pos]
            slots[max(n - 1, 0)] += self.take(i, i + 1)
        if not any(slots):
            self.lines += self.chain_lines(tree, indent, prefix, "")
            return
        rows = [[0], *([n] for n in range(1, len(stages)))]
        per_row, align = self.chain_rows(tree, indent, prefix, "", rows)
        for k, lines in enumerate(per_row):
            self.lines += lines
            # after the last line, comments are the statement's own: at its indent
            self.slot(slots[rows[k][-1]], align if k + 1 < len(rows) else indent)

    def chain_lines(self, tree: Tree, indent: int, prefix: str, suffix: str) -> list[str]:
        """``prefix`` chain ``suffix`` as lines. One line when it fits. A chain the author
        broke keeps the author's breaks (several stages may share a line, as ``-> bn1:
        batchnorm2d -> relu``); otherwise a chain too long for one line puts each stage on
        its own line. Continuation lines align with the first arrow, or with the head when
        the first arrow starts a line."""
        head, arrows, stages = tree.children[0], tree.children[1::2], tree.children[2::2]
        texts = ["-> " + self.expr(s) for s in stages]
        one_line = " " * indent + prefix + self.expr(head) + " " + " ".join(texts) + suffix
        authored = [self.broken_before(self.index[a.start_pos]) for a in arrows]
        free = not any(authored) and not any(self.has_magic(n) for n in (head, *stages))
        if free and len(one_line) <= WIDTH:
            return [one_line]
        rows: list[list[int]] = [[]]  # the stages on each line; the first line holds the head
        for n, broken in enumerate(authored):
            if broken or (not any(authored) and n > 0):
                rows.append([])
            rows[-1].append(n)
        return [line for lines in self.chain_rows(tree, indent, prefix, suffix, rows)[0]
                for line in lines]  # fmt: skip

    def chain_rows(
        self, tree: Tree, indent: int, prefix: str, suffix: str, rows: list[list[int]]
    ) -> tuple[list[list[str]], int]:
        """The lines of each row of the chain (``rows[0]``: the stages beside the head) and
        the column the arrows of the continuation lines align at."""
        head, stages = tree.children[0], tree.children[2::2]
        first = rows[0]
        align = indent + len(prefix) + (len(self.expr(head)) + 1 if first else 0)
        if align > WIDTH:  # a head wider than a line: the arrows below it, one indent in
            align = indent + len(prefix) + INDENT
        out = []
        for k, row in enumerate(rows):
            nodes = [head, *(stages[n] for n in row)] if k == 0 else [stages[n] for n in row]
            words = [self.expr(nodes[0]) if k == 0 else "-> " + self.expr(nodes[0])]
            words += ["-> " + self.expr(n) for n in nodes[1:]]
            text = (prefix if k == 0 else "") + " ".join(words)
            before = text[: len(text) - len(self.expr(nodes[-1]))]
            end = suffix if k + 1 == len(rows) else ""
            at = indent if k == 0 else align
            # a split call's items indent from the statement when the chain is one line,
            # else from its stage's column (so the arrows below stay aligned)
            base = indent if len(rows) == 1 else align + 3 if (k or first) else indent + len(prefix)
            out.append(self.layout(nodes[-1], at, before, end, base))
        return out, align

    def broken_before(self, i: int) -> bool:
        """Whether the source starts a new line at token ``i``."""
        return self.tokens[i].line != self.tokens[i - 1].end_line

    # --- brackets -----------------------------------------------------------------------------

    def bracketed(self, node: Tree | Token) -> tuple[str, list, bool] | None:
        """A call, labelled call, chain stage, tuple or comprehension as (its text up to and
        including the opening bracket, its items, whether it has a magic trailing comma)."""
        if isinstance(node, Token):
            return None
        kind, ch = node.data, node.children
        if kind == "labeled":
            inner = self.bracketed(ch[-1])
            return None if inner is None else (f"{self.expr(ch[0])}: {inner[0]}", *inner[1:])
        if kind in ("call", "stage"):
            lpar = next((k for k, c in enumerate(ch) if is_token(c, "LPAR")), None)
            if lpar is None:
                return None
            args = next((c for c in ch if isinstance(c, Tree) and c.data == "args"), None)
            items = [c for c in args.children if not is_token(c, "COMMA")] if args else []
            magic = args is not None and is_token(args.children[-1], "COMMA")
            return expressions.call(ch[: lpar + 1]), items, magic
        if kind == "tuple_lit":
            items = [c for c in ch[1:-1] if not is_token(c, "COMMA")]
            return "(", items, len(items) > 1 and is_token(ch[-2], "COMMA")
        if kind == "comprehension":
            return "(", ch[1:-1], False
        return None

    def has_magic(self, node: Tree | Token) -> bool:
        """Whether ``node`` must break: it holds a call or tuple written with a trailing
        comma, or a chain the author broke."""
        if isinstance(node, Token):
            return False
        arrows = node.children[1::2] if node.data == "chain" else []
        if any(self.broken_before(self.index[a.start_pos]) for a in arrows):
            return True  # a chain the author broke keeps its breaks
        b = self.bracketed(node) if node.data in ("call", "stage", "tuple_lit") else None
        return bool(b and b[2]) or any(self.has_magic(c) for c in node.children)

    def layout(
        self, node: Tree | Token, indent: int, prefix: str, suffix: str, base: int | None = None
    ) -> list[str]:
        """``prefix`` ``node`` ``suffix`` at ``indent``: one line when it fits and holds no
        magic trailing comma; otherwise split at ``node``'s brackets, as black does. The
        items go one indent past ``base`` (``indent`` unless given), the closing bracket at
        ``base``: all on one line when they fit, filled when they are plain values (a
        tuple of numbers), else one per line with a trailing comma."""
        base = indent if base is None else base
        text = prefix + self.expr(node) + suffix
        if indent + len(text) <= WIDTH and not self.has_magic(node):
            return [" " * indent + text]
        if isinstance(node, Tree) and node.data == "kwarg":  # name=value: split the value
            name, value = node.children[0], node.children[-1]
            return self.layout(value, indent, f"{prefix}{name}=", suffix, base)
        if isinstance(node, Tree) and node.data == "chain":
            return self.chain_lines(node, indent, prefix, suffix)
        if isinstance(node, Tree) and node.data == "atom" and is_token(node.children[0], "LPAR"):
            return self.layout(node.children[1], indent, prefix + "(", ")" + suffix, base)
        if isinstance(node, Tree) and node.data in ("binop", "compare", "and_", "or_"):
            left = " ".join(self.expr(c) for c in node.children[:-1])  # split the right operand
            return self.layout(node.children[-1], indent, f"{prefix}{left} ", suffix, base)
        b = self.bracketed(node)
        if b is None or not b[1] or (node.data == "tuple_lit" and len(b[1]) == 1):
            return [" " * indent + text]  # `(x,)` split would lose its comma: `(x)`
        opening, items, magic = b
        inner, comprehension = base + INDENT, node.data == "comprehension"
        texts = [self.expr(i) for i in items]
        hug = (" " if comprehension else ", ").join(texts)
        plain = all(
            isinstance(i, Token) or len(i.children) == 1
            or (i.data == "unary" and all(isinstance(c, Token) or len(c.children) == 1
                                          for c in i.children))  # -1.5
            for i in items
        )  # fmt: skip
        if not magic and not any(map(self.has_magic, items)) and inner + len(hug) <= WIDTH:
            body = [" " * inner + hug]
        elif not magic and plain and not comprehension:
            body = [" " * inner]
            for k, t in enumerate(texts):
                piece = t + ("," if k + 1 < len(texts) else "")
                if len(body[-1]) + 1 + len(piece) > WIDTH and body[-1].strip():
                    body[-1] = body[-1].rstrip()
                    body.append(" " * inner)
                body[-1] += ("" if not body[-1].strip() else " ") + piece
        else:
            sep = "" if comprehension else ","
            body = [line for i in items for line in self.layout(i, inner, "", sep)]
        return [" " * indent + prefix + opening, *body, " " * base + ")" + suffix]

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
