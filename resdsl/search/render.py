"""A candidate of a search space as a concrete ``.res`` file a user can read and commit.

The text is the space's own source with each choice replaced by the chosen literal, so
comments and layout survive. Blocks imported from other files are copied in (their
paths would not resolve from another directory); ``import std.NAME`` lines are kept, since
they resolve anywhere.
"""

from __future__ import annotations

from typing import Any

from ..errors import Span
from ..loader import Program, parse_cached, read_spec
from ..syntax import ast


def concrete_spec(
    program: Program, network: ast.Definition, text: str, params: dict[str, Any], header: str = ""
) -> str:
    """The network ``network`` of ``program`` (whose main file reads ``text``) with ``params``
    (choices and fixed parameters) written in, as a self-contained ``.res`` text."""
    edits: list[tuple[Span, str]] = []
    for p in network.params:
        if p.name in params:
            if p.default is not None:
                edits.append((p.default.span, literal(params[p.name])))
            else:
                end = Span(p.span.path, p.span.end_line, p.span.end_column, p.span.end_line,
                           p.span.end_column)  # fmt: skip
                edits.append((end, f" = {literal(params[p.name])}"))
    main = program.main
    for imp in main.imports:
        edits.append((imp.span, f"# {_import_text(imp)}: copied below" if _std(imp) is None
                      else ""))  # fmt: skip
    for d in main.definitions:
        if d.kind == "network" and d is not network:
            edits.append((d.span, ""))  # only the searched network is a candidate
    std, copied = _imports(main, set())
    parts = [_comment(header)] if header else []
    if std:
        parts.append("\n".join(std) + "\n")
    parts.append(_apply(text, edits).strip() + "\n")
    parts += copied
    return "\n".join(parts)


def literal(value: Any) -> str:
    """A value as spec text that parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"no literal for {value!r}")  # choices hold literals only


def _std(imp: ast.Import) -> str | None:
    return getattr(imp, "std", None)  # `import std.NAME`


def _import_text(imp: ast.Import) -> str:
    std = _std(imp)
    return f"import std.{std}" if std is not None else f'import "{imp.path}"'


def _imports(module: ast.Module, seen: set[str]) -> tuple[list[str], list[str]]:
    """(std import lines, copied block texts) for ``module``'s imports, recursively."""
    std: list[str] = []
    copied: list[str] = []
    base = module.path.rsplit("/", 1)[0] + "/" if "/" in module.path else ""
    for imp in module.imports:
        if _std(imp) is not None:
            std.append(_import_text(imp))
            continue
        path = base + imp.path
        if path in seen:
            continue
        seen.add(path)
        text = read_spec(path)
        child = parse_cached(text, path)
        blocks = [_slice(text, d.span) for d in child.definitions if d.kind == "block"]
        copied.append(f"# from {imp.path}\n" + "\n\n".join(blocks) + "\n")
        more_std, more = _imports(child, seen)
        std += more_std
        copied += more
    return list(dict.fromkeys(std)), copied


def _comment(text: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in text.splitlines())


def _offset(starts: list[int], line: int, column: int) -> int:
    return starts[line - 1] + column - 1


def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts += [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    return starts


def _slice(text: str, span: Span) -> str:
    starts = _line_starts(text)
    return text[_offset(starts, span.line, span.column) : _offset(starts, span.end_line,
                                                                  span.end_column)]  # fmt: skip


def _apply(text: str, edits: list[tuple[Span, str]]) -> str:
    """Replace each span of ``text`` by its new text (spans do not overlap)."""
    starts = _line_starts(text)
    located = sorted(
        ((_offset(starts, s.line, s.column), _offset(starts, s.end_line, s.end_column), new)
         for s, new in edits),
        reverse=True,
    )  # fmt: skip
    for start, end, new in located:
        text = text[:start] + new + text[end:]
    return text
