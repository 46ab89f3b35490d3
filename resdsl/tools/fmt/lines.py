"""The formatter's output: lines of code, end-of-line comments, and comments between lines."""

from __future__ import annotations

from .source import Comment

WIDTH = 100
INDENT = 4


class FormatterError(Exception):
    """The formatted text would not mean the same as the input: a bug in resdsl, not the spec."""


class Lines:
    """Lines of code written so far, and the end-of-line comment of each (by line number)."""

    def __init__(self) -> None:
        self.lines: list[str] = []  # code
        self.trailing: dict[int, str] = {}  # line number -> its end-of-line comment

    def emit(self, indent: int, text: str) -> None:
        self.lines.append(" " * indent + text)

    def extend(self, code: str) -> None:
        """Continue the last line: ``}`` of an empty body, `` else {``."""
        if len(self.lines) - 1 in self.trailing:  # the layout never does this
            raise FormatterError("code after an end-of-line comment")
        self.lines[-1] += code

    def blank(self) -> None:
        if self.lines and self.lines[-1]:
            self.lines.append("")

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

    # --- comments ------------------------------------------------------------------------------

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
