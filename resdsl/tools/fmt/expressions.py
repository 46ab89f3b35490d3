"""Expressions, each on one line: spacing is all the layout decides inside one."""

from __future__ import annotations

from lark import Token, Tree

from .source import is_token


def expr(node: Tree | Token) -> str:
    if isinstance(node, Token):
        return str(node)
    kind, ch = node.data, node.children
    if kind in ("binop", "compare", "or_", "and_", "chain", "cond", "cond_elif", "not_"):
        return " ".join(expr(c) for c in ch)
    if kind in ("unary", "index", "atom", "label"):
        return "".join(expr(c) for c in ch)
    if kind == "attribute":
        base = expr(ch[0])
        # `1 .x` must not become `1.x`, which reads as the float `1.` then `x`
        sep = (
            " " if is_token(ch[0].children[0] if isinstance(ch[0], Tree) else ch[0], "INT") else ""
        )
        return base + sep + "." + expr(ch[2])
    if kind in ("call", "stage"):
        return call(ch)
    if kind in ("args", "params", "inputs"):
        return ", ".join(expr(c) for c in ch if not is_token(c, "COMMA"))
    if kind == "tuple_lit":
        items = [expr(c) for c in ch[1:-1] if not is_token(c, "COMMA")]
        return "(" + items[0] + ",)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    if kind == "comprehension":  # ( element for i in range(n) ... )
        return "(" + " ".join(expr(c) for c in ch[1:-1]) + ")"
    if kind == "kwarg":
        return "".join(expr(c) for c in ch)
    if kind == "std_import":  # import std.NAME
        return f"{ch[0]} " + "".join(expr(c) for c in ch[1:])
    if kind in ("labeled", "labeled_bare", "param", "input", "import_stmt"):
        return words(ch)
    if len(ch) == 1:  # literals and names
        return expr(ch[0])
    return " ".join(expr(c) for c in ch)  # a rule added to the grammar later


def call(ch: list) -> str:
    """``label: f(args)``, ``f()``, ``f``: a call or a chain stage."""
    out = ""
    for c in ch:
        if is_token(c, "COLON"):
            out += ": "
        elif is_token(c, "LPAR") or is_token(c, "RPAR") or is_token(c, "NAME"):
            out += str(c)
        else:
            out += expr(c)
    return out


def words(ch: list) -> str:
    """Tokens separated by spaces, except before ``:``."""
    out = ""
    for c in ch:
        piece = expr(c)
        out += piece if is_token(c, "COLON") or not out else " " + piece
    return out
