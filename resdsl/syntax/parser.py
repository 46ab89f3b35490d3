"""Text -> AST. One cached LALR parser; Lark's exceptions become :class:`SpecSyntaxError`."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from ..errors import (
    ArgumentError,
    DidYouMean,
    LimitError,
    Note,
    Span,
    SpecError,
    SpecSyntaxError,
    remember_source,
)
from . import ast


class _TooDeepError(Exception):
    """Raised from inside Lark's parse at the first tree more than MAX_DEPTH levels tall."""

    def __init__(self, tree: Tree) -> None:
        super().__init__(tree.data)
        self.line, self.column = tree.meta.line, tree.meta.column


class _Tree(Tree):
    """Lark's tree, that knows its height (levels of trees, itself included) so the parser
    stops at the first tree taller than :data:`MAX_DEPTH`. Lark builds bottom-up, so deep
    input (``t[0][0]...``, ``not not ...``) is refused after about ``MAX_DEPTH`` levels
    rather than after the whole text is parsed (a 60 KB chain took a second of CPU).

    The error is raised when that tree's parent is built, or after the parse for the root:
    by then Lark has given the tall tree its position (its first token, ``not`` included)."""

    def __init__(self, data, children, meta=None) -> None:
        super().__init__(data, children, meta)
        self.height = 0
        if data.startswith("_"):  # Lark's helper for `x*`, `_rule`: spliced into its parent,
            return  # which counts these children; counting here too would be quadratic
        height = 0
        for child in children:
            if isinstance(child, _Tree) and child.height > height:
                height = child.height
                if height > MAX_DEPTH:
                    raise _TooDeepError(child)
        self.height = height + 1


@lru_cache(maxsize=1)
def _parser() -> Lark:
    # The grammar ships inside the package (grammars/ is mapped to resdsl.grammars).
    text = resources.files("resdsl.grammars").joinpath("resdsl.lark").read_text("utf-8")
    return Lark(
        text, parser="lalr", start=["start", "expr"], propagate_positions=True, tree_class=_Tree
    )


def parse(text: str, path: str = "<string>") -> ast.Module:
    """Parse a whole ``.res`` file."""
    remember_source(path, text)
    return _transform(_parse(text, path, "start"), path)


def parse_expr(text: str, path: str = "<expr>") -> ast.Expr:
    """Parse one expression, e.g. a ``--set k=v`` value from the command line."""
    remember_source(path, text)
    return _transform(_parse(text, path, "expr"), path)


def _transform(tree, path: str):
    try:
        return _ToAst(path).transform(tree)
    except VisitError as e:  # a template label's own syntax error, raised mid-transform
        if isinstance(e.orig_exc, SpecError):
            raise e.orig_exc from None
        raise


# Reserved words: the grammar's keywords may not be assigned to.
KEYWORDS = frozenset(
    {
        "and", "assert", "block", "dense", "elif", "else", "false", "for", "if", "import",
        "in", "inline", "network", "not", "or", "repeat", "return", "then", "true",
    }
)  # fmt: skip
MAX_DEPTH = 100  # nesting of the syntax tree; deeper input is refused, not recursed into
MAX_LITERAL_DIGITS = 100  # any int past 2**62 is refused where it is used anyway
MAX_HOLES = 100  # `{...}` holes in one template label
# Parsing costs about 12 us of CPU per byte of dense code (`1+1+...`: lexing, Lark's tree,
# the AST): a bound on the size keeps a hostile spec within a second. The largest example
# is 3.5 KB. Bytes of a file (resdsl.loader.read_spec), characters of text given to parse.
MAX_SPEC_SIZE = 64 * 1024
MAX_STRING = 4_096  # characters of one string literal between its quotes, escapes as written


def check_size(size: int, path: str, unit: str = "characters") -> None:
    """Refuse a spec of more than :data:`MAX_SPEC_SIZE` bytes or characters, at its start."""
    if size > MAX_SPEC_SIZE:
        raise LimitError(
            f"the spec has {size:,} {unit}, more than the limit of {MAX_SPEC_SIZE:,}",
            Span(path, 1, 1, 1, 1),
            hints=["split it into files that import each other, or use loops and blocks"],
        )


def _parse(text: str, path: str, start: str):
    _check_brackets(text, path)  # first: it reads at most MAX_SPEC_SIZE characters
    check_size(len(text), path)
    try:
        return _parse_tree(text, start)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, path) from None
    except _TooDeepError as e:
        raise _too_deep(e, path) from None


def _parse_tree(text: str, start: str) -> _Tree:
    """Lark's tree of ``text``; :class:`_TooDeepError` for one taller than :data:`MAX_DEPTH`."""
    tree = _parser().parse(text, start=start)
    if tree.height > MAX_DEPTH:  # the root has no parent to notice
        raise _TooDeepError(tree)
    return tree


def _too_deep(e: _TooDeepError, path: str) -> LimitError:
    span = Span(path, e.line, e.column, e.line, e.column + 1)
    return LimitError(f"expression nested more than {MAX_DEPTH} levels deep", span)


# A string as the grammar lexes it: runs between escapes, so memory does not grow per
# character. One left open at the end of its line is skipped to there too: trying again from
# each quote inside it would take time quadratic in the line's length.
_BRACKETS = re.compile(
    r"""#[^\n]*|"[^"\\\n]*(?:\\.[^"\\\n]*)*\\?"?|'[^'\\\n]*(?:\\.[^'\\\n]*)*\\?'?"""
    r"""|[(\[{]|[)\]}]"""
)


def _check_brackets(text: str, path: str) -> None:
    """Refuse brackets nested more than ``MAX_DEPTH`` deep before parsing: a scan is fast,
    while Lark would build the whole deep tree first (seconds and hundreds of MB for
    ``((((...))))`` 100,000 deep). Strings and comments are skipped; imbalance is left to
    the parser. The scan stops after ``MAX_SPEC_SIZE`` characters, too many to parse."""
    depth = 0
    for m in _BRACKETS.finditer(text):
        if m.start() >= MAX_SPEC_SIZE:
            return
        char = m.group()  # a bracket, or a whole string or comment
        if char in ("(", "[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                span = _at(text, m.start(), path)
                raise LimitError(f"brackets nested more than {MAX_DEPTH} deep", span)
        elif char in (")", "]", "}"):
            depth = max(0, depth - 1)


def _at(text: str, pos: int, path: str) -> Span:
    """The one-character span at offset ``pos`` of ``text``."""
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return Span(path, line, column, line, column + 1)


# --- error messages ---------------------------------------------------------------------------

_FRIENDLY = {"NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
             "$END": "end of file"}  # fmt: skip
_OPERATORS = {"COMP_OP": "a comparison", "MUL_OP": "an operator", "POW_OP": "`**`"}
# Tokens after which an expression is complete: a chain stage or `if` may not follow them.
_EXPR_END = frozenset({"NAME", "INT", "FLOAT", "STRING", "RPAR", "RSQB", "TRUE", "FALSE"})
# Tokens that begin a definition: inside a body, one means a `}` is missing before it.
_DEFINITION_START = frozenset({"NETWORK", "BLOCK", "INLINE", "IMPORT", "$END"})
_STATEMENT_KEYWORDS = ["assert", "dense", "for", "if", "repeat", "return"]
_CONDITIONAL_HINT = "the conditional is written `if c then a else b`, not Python's `a if c else b`"


def _describe_terminal(name: str) -> str:
    if name in _FRIENDLY:
        return _FRIENDLY[name]
    if name in _OPERATORS:
        return _OPERATORS[name]
    for term in _parser().terminals:
        if term.name == name and term.pattern.type == "str":
            return f"`{term.pattern.value}`"
    return name.lower()


def _expected_words(names) -> str:
    """``{"NAME", "INT", "FLOAT", "LPAR"}`` -> ``"a name, a number or `(`"``: kinds of token
    first, then the tokens themselves, as a sentence."""
    names = set(names)
    if "FLOAT" in names:  # "a number" covers the integers too
        names.discard("INT")
    words = {_describe_terminal(n) for n in names - {"ADD_OP"}}
    words |= {"`+`", "`-`"} if "ADD_OP" in names else set()  # a sign, or an operator
    words = sorted(words, key=lambda w: (w.startswith("`"), w))
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _end(text: str) -> tuple[int, int]:
    """Line and column just after the last line's text (a final newline is not a new line).

    Lines are counted by "\\n" only, as Lark counts them; the span there is empty."""
    lines = text.split("\n")
    if len(lines) > 1 and not lines[-1]:
        lines.pop()
    return len(lines), len(lines[-1]) + 1


def _foreign_digit(char: str) -> bool:
    """A digit of another script (Bengali, fullwidth): Python reads it, resdsl does not."""
    return char.isdigit() and not char.isascii()


def _tokens_before(text: str, pos: int) -> list[Token]:
    """The last tokens of ``text`` before offset ``pos`` (as far as they lex), from a line
    start about 1,000 characters back: the context of an error. No token spans lines."""
    start = text.rfind("\n", 0, max(0, pos - 1_000)) + 1
    lines = text.count("\n", 0, start)
    tokens: list[Token] = []
    try:
        for t in _parser().lex(text[start:pos]):
            tokens.append(Token(t.type, t.value, t.start_pos + start, t.line + lines, t.column,
                                t.end_line + lines, t.end_column, t.end_pos + start))  # fmt: skip
    except UnexpectedInput:
        pass
    return tokens


def _tok_span(tok: Token, path: str) -> Span:
    return Span(path, tok.line, tok.column, tok.end_line, tok.end_column)


def _syntax_error(e: UnexpectedInput, text: str, path: str) -> SpecSyntaxError:
    line, column = max(e.line, 1), max(e.column, 1)
    width, terminals, tok = 1, set(), None
    if isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "$END":  # Lark gives $END the last token's position: use the real end
            found = "end of file"
            (line, column), width = _end(text), 0
        else:
            found = f"`{tok.value}`"
            width = max(1, len(str(tok.value)))
        terminals = set(e.accepts or e.expected)
    elif isinstance(e, UnexpectedCharacters):
        found = f"character {text[e.pos_in_stream]!r}"
    elif isinstance(e, UnexpectedEOF):
        found, terminals = "end of file", set(e.expected)
        (line, column), width = _end(text), 0
    else:  # pragma: no cover - Lark has no other kinds today
        found = "input"
    span = Span(path, line, column, line, column + width)
    if tok is not None and tok.type != "$END":
        better = _explain(tok, terminals, text, path)
        if better is not None:
            return better
    hints, notes = [], []
    if isinstance(e, UnexpectedCharacters) and _foreign_digit(text[e.pos_in_stream]):
        hints.append("numbers are written with the ASCII digits 0-9")
    kind = "$END" if tok is None or tok.type == "$END" else tok.type
    if "RBRACE" in terminals and kind in _DEFINITION_START:
        opener = _unclosed_brace(text, len(text) if kind == "$END" else tok.start_pos, path)
        if opener is not None:
            what, note = opener
            hints.append(f"a `{{` is not closed: add the `}}` that ends {what}")
            notes.append(note)
            return SpecSyntaxError(f"unexpected {found}", span, hints=hints, notes=notes)
    if terminals and len(terminals) <= 8:
        hints.append("expected " + _expected_words(terminals))
    if found == "`=`":
        hints.append("keyword arguments go inside a call's parentheses: `conv2d(64, 3, stride=2)`")
    return SpecSyntaxError(f"unexpected {found}", span, hints=hints, notes=notes)


def _explain(tok: Token, terminals: set, text: str, path: str) -> SpecSyntaxError | None:
    """A better diagnostic for a common mistake, or None: a Python conditional, a misspelt
    keyword, a chain stage without its `->`."""
    before = _tokens_before(text, tok.start_pos)
    prev = before[-1] if before else None
    if tok.type == "IF" and prev is not None and prev.type in _EXPR_END:
        return SpecSyntaxError("unexpected `if`", _tok_span(tok, path), hints=[_CONDITIONAL_HINT])
    if tok.type == "ELSE" and "LBRACE" in terminals:  # `y = a if c else b`: an `if` statement
        i = max((i for i, t in enumerate(before) if t.type == "IF"), default=0)
        if i and before[i - 1].type in _EXPR_END and before[i - 1].end_line == before[i].line:
            return SpecSyntaxError(
                "unexpected `if`", _tok_span(before[i], path), hints=[_CONDITIONAL_HINT]
            )
    if tok.type == "NAME":  # `netwrok net()`, `retrun`
        keywords = [_describe_terminal(t).strip("`") for t in terminals if t.isalpha()]
        close = DidYouMean([k for k in keywords if k in KEYWORDS]).hint(str(tok))
        if close:
            return SpecSyntaxError(f"`{tok}` is not a keyword", _tok_span(tok, path), hints=close)
    if terminals == {"COMMA", "EQUAL"} and prev is not None and prev.type == "NAME":
        # A statement began with the name `prev` (an assignment) that goes on with `tok`.
        first = before[-2] if len(before) > 1 else None
        same_line = tok.line == prev.end_line
        if same_line and tok.type not in ("LPAR", "COLON", "__ANON_0"):
            close = DidYouMean(_STATEMENT_KEYWORDS).hint(str(prev))
            if close:  # `retrun y`, `fro i in ...`
                return SpecSyntaxError(
                    f"`{prev}` is not a keyword", _tok_span(prev, path), hints=close
                )
        elif first is not None and first.type in _EXPR_END:
            # `x -> conv2d(8, 3)` then `relu` (alone, called, labelled or chained on): a stage
            stage = f"{prev}: ..." if tok.type == "COLON" else f"{prev}"
            return SpecSyntaxError(
                f"unexpected `{prev}`", _tok_span(prev, path),
                hints=[f"did you mean `->`? a chain goes on with `... -> {stage}`"],
            )  # fmt: skip
    return None


def _unclosed_brace(text: str, pos: int, path: str) -> tuple[str, Note] | None:
    """The `{` that is most likely not closed when a definition (or the end) comes inside a
    body at offset ``pos``: one whose `}` is indented less than its own line (that `}` closed
    an outer `{`), else the innermost `{` still open."""
    stack: list[int] = []
    for m in _BRACKETS.finditer(text, 0, pos):
        char = m.group()
        if char == "{":
            stack.append(m.start())
        elif char == "}" and stack:
            opener = stack.pop()
            line_start = text.rfind("\n", 0, m.start()) + 1
            if text[line_start : m.start()].strip():
                continue  # not the first thing on its line: its indentation says nothing
            if m.start() - line_start < _indent(text, opener):
                closer = text.count("\n", 0, m.start()) + 1
                why = f"the `}}` on line {closer} is indented as for an outer `{{`"
                return _brace_note(text, opener, path, why)
    if not stack:
        return None
    return _brace_note(text, stack[-1], path, "")


def _indent(text: str, pos: int) -> int:
    line_start = text.rfind("\n", 0, pos) + 1
    line = text[line_start:pos]
    return len(line) - len(line.lstrip(" \t"))


def _brace_note(text: str, opener: int, path: str, why: str) -> tuple[str, Note]:
    line_start = text.rfind("\n", 0, opener) + 1
    first = re.match(r"[ \t]*(\}[ \t]*)?([A-Za-z_]+)", text[line_start:opener])
    word = first.group(2) if first else ""
    if word == "inline":
        word = "block"
    span = _at(text, opener, path)
    what = f"the `{word}` body of line {span.line}" if word in KEYWORDS else \
        f"the body opened on line {span.line}"  # fmt: skip
    message = "this `{` is not closed" + (f" ({why})" if why else "")
    return what, Note(message, span)


# --- tree -> AST ------------------------------------------------------------------------------


def _interleave(operands: list) -> list:
    """``[a, b, c]`` -> ``[a, None, b, None, c]``: operand slots for ``_fold``."""
    out = []
    for i, item in enumerate(operands):
        out += [item] if i == 0 else [None, item]
    return out


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "{": "{", "}": "}"}


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), token[1:-1])


def _choice(call: ast.Call) -> ast.Choice:
    """``choice(a, b, ...)`` in a parameter default: the values, positionally."""
    if call.kwargs:
        key, _, span = call.kwargs[0]
        raise ArgumentError(f"`choice` takes values, not keyword arguments (`{key}=`)", span)
    if not call.args:
        raise ArgumentError("`choice` needs at least one value", call.span)
    return ast.Choice(call.span, call.args)


@v_args(meta=True)
class _ToAst(Transformer):
    """One method per grammar rule or alias, in grammar order."""

    def __init__(self, path: str, line: int = 0, column: int = 0) -> None:
        super().__init__()
        self.path = path
        self.line_offset, self.column_offset = line, column

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", False) or not hasattr(meta, "line"):
            return Span(self.path, 1, 1, 1, 1)
        return self._pos(meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok(self, tok: Token) -> Span:
        return self._pos(tok.line, tok.column, tok.end_line, tok.end_column)

    def _pos(self, line: int, col: int, end_line: int, end_col: int) -> Span:
        # Template labels are parsed on their own; shift back into the file.
        if self.line_offset:
            col += self.column_offset if line == 1 else 0
            end_col += self.column_offset if end_line == 1 else 0
            line, end_line = line + self.line_offset - 1, end_line + self.line_offset - 1
        return Span(self.path, line, col, end_line, end_col)

    # definitions
    def start(self, meta, items):
        imports = tuple(i for i in items if isinstance(i, ast.Import))
        defs = tuple(i for i in items if isinstance(i, ast.Definition))
        return ast.Module(self.path, imports, defs)

    def import_stmt(self, meta, children):
        self._check_string(children[0], self._span(meta))
        return ast.Import(self._span(meta), _unquote(children[0]))

    def std_import(self, meta, children):
        package, name = children
        if str(package) != "std":
            raise SpecSyntaxError(
                f"unknown library `{package}`: dotted imports name the standard library, "
                "`import std.NAME`", self._tok(package),
                hints=[f'a file is imported by its path: `import "{package}.res"`'],
            )  # fmt: skip
        return ast.Import(self._span(meta), f"std/{name}.res", std=str(name))

    def _definition(self, kind, meta, children, inline=False):
        name, params, inputs, body = children
        return ast.Definition(
            self._span(meta), kind, str(name), self._tok(name),
            tuple(params or ()), tuple(inputs or ()), body, inline,
        )  # fmt: skip

    def block_def(self, meta, children):
        return self._definition("block", meta, children)

    def inline_block_def(self, meta, children):
        return self._definition("block", meta, children, inline=True)

    def network_def(self, meta, children):
        return self._definition("network", meta, children)

    def params(self, meta, children):
        return [c for c in children if c is not None]

    inputs = params

    def param(self, meta, children):
        name, type_, default = children
        if isinstance(default, ast.Call) and default.func == "choice" and default.label is None:
            default = _choice(default)  # a search-space choice (docs/search.md)
        return ast.Param(self._span(meta), str(name), str(type_), self._tok(type_), default)

    def input(self, meta, children):
        name, shape = children
        return ast.Input(self._span(meta), str(name), shape)

    def body(self, meta, children):
        return tuple(children)

    # statements
    def assign(self, meta, children):
        *targets, value = children
        for t in targets:
            if str(t) in KEYWORDS:
                raise SpecSyntaxError(f"`{t}` is a keyword and cannot be assigned", self._tok(t))
        return ast.Assign(self._span(meta), tuple(str(t) for t in targets), value)

    def return_stmt(self, meta, children):
        return ast.Return(self._span(meta), tuple(children))

    def for_stmt(self, meta, children):
        var, iterable, body = children
        return ast.For(self._span(meta), str(var), iterable, body)

    def repeat_stmt(self, meta, children):
        return ast.Repeat(self._span(meta), children[0], children[1])

    def dense_stmt(self, meta, children):
        var, index, iterable, body = children
        return ast.Dense(self._span(meta), str(var), str(index), iterable, body)

    def if_stmt(self, meta, children):
        test, body, *elifs, otherwise = children  # `[else body]` is None when absent
        branches = ((test, body), *((t, b) for t, b in elifs))
        return ast.If(self._span(meta), branches, otherwise)

    def elif_clause(self, meta, children):
        return (children[0], children[1])

    def assert_stmt(self, meta, children):
        return ast.Assert(self._span(meta), children[0], children[1])

    # expressions
    def chain(self, meta, children):
        head, *stages = children
        return ast.Chain(self._span(meta), head, tuple(stages))

    def stage(self, meta, children):
        label, func, args = children
        args, kwargs = args or ((), ())
        return ast.Call(self._span(meta), str(func), self._tok(func), args, kwargs, label)

    def cond(self, meta, children):
        """``if a then x elif b then y else z`` is ``if a then x else (if b then y else z)``:
        each ``elif`` a conditional nested in the one before, spanning to the end."""
        test, then, *elifs, otherwise = children
        span = self._span(meta)
        if len(elifs) > MAX_DEPTH:  # each one nests the syntax tree one level deeper
            raise LimitError(
                f"a conditional with more than {MAX_DEPTH} `elif` clauses", elifs[MAX_DEPTH][0]
            )
        for elif_span, elif_test, elif_then in reversed(elifs):
            end = Span(self.path, elif_span.line, elif_span.column, span.end_line, span.end_column)
            otherwise = ast.Cond(end, elif_test, elif_then, otherwise)
        return ast.Cond(span, test, then, otherwise)

    def cond_elif(self, meta, children):
        return (self._span(meta), children[0], children[1])

    def _bool(self, op, meta, children):
        return self._fold([op if i % 2 else c for i, c in enumerate(_interleave(children))])

    def _fold(self, items: list) -> ast.Expr:
        """``[a, "+", b, "-", c]`` -> ``(a + b) - c``, spans from the operands."""
        left = items[0]
        for i in range(1, len(items), 2):
            right = items[i + 1]
            span = Span(self.path, left.span.line, left.span.column,
                        right.span.end_line, right.span.end_column)  # fmt: skip
            left = ast.BinOp(span, str(items[i]), left, right)
        return left

    def or_(self, meta, children):
        return self._bool("or", meta, children)

    def and_(self, meta, children):
        return self._bool("and", meta, children)

    def not_(self, meta, children):
        return ast.UnaryOp(self._span(meta), "not", children[0])

    def binop(self, meta, children):
        return self._fold(children)

    def compare(self, meta, children):
        left, op, right = children
        return ast.BinOp(self._span(meta), str(op), left, right)

    def unary(self, meta, children):
        return ast.UnaryOp(self._span(meta), str(children[0]), children[1])

    def attribute(self, meta, children):
        return ast.Attribute(self._span(meta), children[0], str(children[1]))

    def index(self, meta, children):
        return ast.Index(self._span(meta), children[0], children[1])

    def int_lit(self, meta, children):
        digits = str(children[0]).replace("_", "")
        if len(digits) > MAX_LITERAL_DIGITS:  # int() of thousands of digits is refused or slow
            raise LimitError(
                f"integer literal of {len(digits)} digits is too long", self._span(meta)
            )
        return ast.Literal(self._span(meta), int(digits))

    def float_lit(self, meta, children):
        value = float(str(children[0]).replace("_", ""))
        if math.isinf(value):
            raise LimitError(f"float literal {children[0]} is too large", self._span(meta))
        return ast.Literal(self._span(meta), value)

    def _check_string(self, token: Token, span: Span) -> None:
        if len(token) - 2 > MAX_STRING:
            raise LimitError(
                f"a string of {len(token) - 2:,} characters is longer than the limit of "
                f"{MAX_STRING:,}", span,
            )  # fmt: skip

    def str_lit(self, meta, children):
        self._check_string(children[0], self._span(meta))
        return ast.Literal(self._span(meta), _unquote(children[0]))

    def true_lit(self, meta, children):
        return ast.Literal(self._span(meta), True)

    def false_lit(self, meta, children):
        return ast.Literal(self._span(meta), False)

    def name(self, meta, children):
        return ast.Name(self._span(meta), str(children[0]))

    def tuple_lit(self, meta, children):
        return ast.TupleExpr(self._span(meta), tuple(c for c in children if c is not None))

    def comprehension(self, meta, children):
        element, *loops = children
        return ast.Comprehension(self._span(meta), element, tuple(loops))

    def comp_for(self, meta, children):
        name, iterable = children
        return (str(name), iterable)

    def call(self, meta, children):
        func, args = children
        args, kwargs = args or ((), ())
        return ast.Call(self._span(meta), str(func), self._tok(func), args, kwargs)

    def labeled(self, meta, children):
        label, call = children
        return ast.Call(self._span(meta), call.func, call.func_span, call.args, call.kwargs, label)

    def labeled_bare(self, meta, children):
        label, func = children
        return ast.Call(self._span(meta), str(func), self._tok(func), (), (), label)

    def args(self, meta, children):
        args = tuple(c for c in children if not isinstance(c, tuple))
        kwargs = tuple(c for c in children if isinstance(c, tuple))
        return args, kwargs

    def kwarg(self, meta, children):
        name, value = children
        return (str(name), value, self._tok(name))

    def label(self, meta, children):
        tok = children[0]
        span = self._tok(tok)
        if tok.type == "NAME":
            return ast.Label(span, str(tok), (str(tok),))
        parts = self._template(tok, span)  # first: its holes have bounds of their own
        self._check_string(tok, span)
        return ast.Label(span, str(tok), parts)

    def _template(self, tok: Token, span: Span) -> tuple[str | ast.Expr, ...]:
        """Split ``"layer{i + 1}"`` into ``("layer", <expr i + 1>)``."""
        body, parts, pos = str(tok)[1:-1], [], 0
        holes = list(re.finditer(r"\{([^{}]*)\}", body))
        if len(holes) > MAX_HOLES:  # each hole is parsed on its own: bound the count
            raise LimitError(f"a template label with more than {MAX_HOLES} holes", span)
        for m in holes:
            if m.start() > pos:
                parts.append(_unquote('"' + body[pos : m.start()] + '"'))
            inner = m.group(1)
            col = span.column + 1 + m.start(1)  # +1 for the opening quote
            try:
                tree = _parse_tree(inner, "expr")  # its depth is bounded as anywhere
            except (UnexpectedInput, _TooDeepError) as e:
                too_deep = isinstance(e, _TooDeepError)
                err = _too_deep(e, span.path) if too_deep else _syntax_error(e, inner, span.path)
                s = err.span
                err.span = Span(span.path, span.line, col + s.column - 1, span.line,
                                col + s.end_column - 1)  # fmt: skip
                raise err from None
            parts.append(_ToAst(self.path, span.line, col - 1).transform(tree))
            pos = m.end()
        if pos < len(body):
            parts.append(_unquote('"' + body[pos:] + '"'))
        return tuple(parts)
