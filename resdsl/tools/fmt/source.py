"""The concrete syntax tree the formatter lays out: every token, and the comments between.

A second Lark parser over the production grammar file keeps the tokens the production
parser drops and collects the comments the grammar ignores; :class:`Source` indexes both so
that the layout can ask which comments sit before a token and where the input had blank
lines.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree


@dataclass
class Comment:
    """A ``# ...`` comment: its text, whether it had a line to itself, and a blank line above."""

    text: str
    own_line: bool
    blank_before: bool


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


def concrete(text: str) -> tuple[Tree, list[Token]]:
    """The full parse tree of ``text`` and its comments, in source order."""
    _COMMENTS.clear()
    try:
        tree = _cst_parser().parse(text)
        return tree, list(_COMMENTS)
    finally:
        _COMMENTS.clear()


def is_token(node: object, kind: str) -> bool:
    return isinstance(node, Token) and node.type == kind


class Source:
    """The tokens of a concrete tree; ``gaps[i]`` are the comments before token i."""

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
