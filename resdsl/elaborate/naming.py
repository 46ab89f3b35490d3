"""Hierarchical names of nodes and block instances: labels, templates, ``{op}_{k}``."""

from __future__ import annotations

from ..errors import DuplicateNameError, LimitError, Note, Span, ValueRangeError
from ..names import check_label
from ..syntax import ast
from .values import Frame, _label_part, join_name


class Naming:
    """Naming (mixed into :class:`~resdsl.elaborate.Elaborator`, which holds ``names``,
    ``counters`` and ``limits``)."""

    def _name(self, frame: Frame, label: ast.Label | str | None, base: str, span: Span) -> str:
        """The hierarchical name of a new node or block instance (one namespace for both)."""
        if label is None:
            k = self.counters.get((frame.prefix, base), 0)
            while True:
                full = join_name(frame.prefix, f"{base}_{k}")
                k += 1
                if full not in self.names:
                    break
            self.counters[(frame.prefix, base)] = k
        else:
            segment = label if isinstance(label, str) else self.label_text(label, frame)
            check_label(segment, label.span if isinstance(label, ast.Label) else span)
            full = join_name(frame.prefix, segment)
            if full in self.names:
                first = self.names[full]
                raise DuplicateNameError(
                    f"the name `{full}` is already used",
                    label.span if isinstance(label, ast.Label) else span,
                    hints=['inside a loop, put the index in the name: `"conv{i}": conv2d(...)`'],
                    notes=[Note("first used here", first)] if first else [],
                )
        if len(full) > self.limits.max_name_length:
            raise LimitError(
                f"a name of {len(full)} characters exceeds the limit of "
                f"{self.limits.max_name_length}",
                label.span if isinstance(label, ast.Label) else span,
            )
        self._claim(full, span)
        return full

    def _claim(self, name: str, span: Span | None) -> None:
        self.names[name] = span

    def label_text(self, label: ast.Label, frame: Frame) -> str:
        """The text of a label, its template holes evaluated in ``frame`` and checked."""
        parts, size = [], 0
        for p in label.parts:  # checked as it grows: a template of many long holes
            parts.append(p if isinstance(p, str) else _label_part(self.eval(p, frame), p))
            size += len(parts[-1])
            if size > self.limits.max_name_length:
                raise LimitError(
                    f"a name of more than {self.limits.max_name_length} characters", label.span
                )
        text = "".join(parts)
        if not text or not all(c.isalnum() or c == "_" for c in text) or not text.isascii():
            raise ValueRangeError(
                f"name {text!r} must be letters, digits and underscores", label.span
            )
        return text
