"""Hierarchical names of nodes and block instances: labels, templates, ``{op}_{k}``.

A label may hold several segments joined by ``.`` (``"stem.conv"``): the name is then
nested in the scopes it spells out, which need no block and may be entered again later
(``"convs.{i}"`` and ``"bns.{i}"`` in one loop). Every proper prefix of a name in use is in
use too: a block instance or macro scope, or a scope a dotted label opened. So a name is
taken, as a node or as a scope, exactly when it is in ``names``.
"""

from __future__ import annotations

from ..errors import DuplicateNameError, LimitError, Note, Span, ValueRangeError
from ..names import check_label, segment_problem
from ..syntax import ast
from .values import Frame, _label_part, join_name


class Naming:
    """Naming (mixed into :class:`~resdsl.elaborate.Elaborator`, which holds ``names``,
    ``counters`` and ``limits``)."""

    def _name(self, frame: Frame, label: ast.Label | str | None, base: str, span: Span) -> str:
        """The hierarchical name of a new node, block instance or projection scope (one
        namespace for all)."""
        if label is None:
            k = self.counters.get((frame.prefix, base), 0)
            while True:
                full = join_name(frame.prefix, f"{base}_{k}")
                k += 1
                if full not in self.names:
                    break
            self.counters[(frame.prefix, base)] = k
            self._check_length(full, span)
            self._claim(full, span)
            return full
        at = label.span if isinstance(label, ast.Label) else span
        text = label if isinstance(label, str) else self.label_text(label, frame)
        segments = text.split(".")
        for segment in segments:
            check_label(segment, at)
        full = join_name(frame.prefix, text)
        if full in self.names:
            raise self._taken(full, at)
        self._check_length(full, at)
        opened = self._open_scopes(frame.prefix, segments[:-1], full, at)
        for name in opened:  # the scopes this label opens, outermost first
            self._claim(name, at)
        self._claim(full, span)
        return full

    def _open_scopes(self, prefix: str, segments: list[str], full: str, at: Span) -> list[str]:
        """The scopes of a dotted label not yet in use; one that names an op is an error."""
        opened = []
        for segment in segments:
            prefix = join_name(prefix, segment)
            if prefix not in self.names:
                opened.append(prefix)
            elif prefix in self.graph:
                first = self.names[prefix]
                raise DuplicateNameError(
                    f"`{prefix}` is an op, so it cannot also be a scope holding `{full}`", at,
                    hints=["a name is either a layer or a scope of other names: rename one"],
                    notes=[Note(f"`{prefix}` is named here", first)] if first else [],
                )  # fmt: skip
        return opened

    def _taken(self, full: str, at: Span) -> DuplicateNameError:
        first = self.names[full]
        inner = next((n for n in self.names if n.startswith(full + ".")), None)
        if inner is not None and full not in self.graph:
            message = f"the name `{full}` is already a scope (of `{inner}`)"
            hints = [
                "a block instance or a node needs a new name; a dotted label may add names "
                f'to the scope: `"{full.rpartition(".")[2]}.x": ...`'
            ]
        else:
            message = f"the name `{full}` is already used"
            hints = ['inside a loop, put the index in the name: `"conv{i}": conv2d(...)`']
        return DuplicateNameError(
            message, at, hints=hints, notes=[Note("first used here", first)] if first else []
        )

    def _check_length(self, full: str, at: Span) -> None:
        if len(full) > self.limits.max_name_length:
            raise LimitError(
                f"a name of {len(full)} characters exceeds the limit of "
                f"{self.limits.max_name_length}",
                at,
            )

    def _claim(self, name: str, span: Span | None) -> None:
        self.names[name] = span

    def label_text(self, label: ast.Label, frame: Frame) -> str:
        """The text of a label, its template holes evaluated in ``frame`` and checked: one
        or more segments of letters, digits, ``_`` and ``-``, joined by ``.``."""
        parts, size = [], 0
        for p in label.parts:  # checked as it grows: a template of many long holes
            parts.append(p if isinstance(p, str) else _label_part(self.eval(p, frame), p))
            size += len(parts[-1])
            if size > self.limits.max_name_length:
                raise LimitError(
                    f"a name of more than {self.limits.max_name_length} characters", label.span
                )
        text = "".join(parts)
        problem = segment_problem(text)
        if problem is not None:
            message, hint = problem
            raise ValueRangeError(message, label.span, hints=[hint])
        return text
