"""Front end: the grammar (in ``grammars/``), the Lark parser, and the AST."""

from .parser import parse, parse_expr

__all__ = ["parse", "parse_expr"]
