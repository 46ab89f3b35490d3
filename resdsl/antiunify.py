"""Anti-unification of block instances: the values in which the uses of one block differ
become its parameters.

Two tools find blocks in a graph of layers: the PyTorch generator
(:mod:`resdsl.backends.torch_structured`, classes with constructor arguments) and the
importer (:mod:`resdsl.importers.structure`, spec blocks with parameters). Both line up the
instances of one block and read, per *slot* (an attribute of a layer, an argument of a call),
the *column* of its values, one per instance. :func:`unify` turns the columns into
parameters: a column that never varies is a constant; one equal to an earlier parameter's of
the same family (channels with channels, not with a kernel size) is that parameter; one
that is always ``k`` times an earlier one is written ``k * name``; any other is a new
parameter, named after its slot.

A leaf: it imports no layer of resdsl, so layers above and below the backends may share it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NamedTuple


class Slot(NamedTuple):
    """One place where instances may differ: a name for its parameter, a family (only
    columns of one family are compared) and its values, one per instance."""

    name: str
    family: str
    values: list[Any]
    scaled: bool = True  # whether ``k * name`` may stand for it


class Param(NamedTuple):
    """A parameter found: its name, its family and its value in each instance."""

    name: str
    family: str
    values: list[Any]


def same(values: Sequence[Any]) -> bool:
    """Whether every value of a column is the same (compared as text: ``1`` and ``1.0``
    and ``True`` stay apart)."""
    return len({repr(v) for v in values}) == 1


def multiple(values: Sequence[Any], params: Sequence[Sequence[Any]]) -> str | None:
    """``"k * name"`` when every value is the same integer multiple ``k > 1`` of the values
    of one of ``params`` (``(name, family, values)``), else None."""
    if not all(type(v) is int and v for v in values):
        return None
    for name, _, other in params:
        if all(type(v) is int and v for v in other) and values[0] % other[0] == 0:
            factor = values[0] // other[0]
            if factor > 1 and all(a == factor * b for a, b in zip(values, other, strict=True)):
                return f"{factor} * {name}"
    return None


def unify(slots: Sequence[Slot], reserved: Collection[str]) -> tuple[list[Param], list[tuple]]:
    """The parameters of the instances, and per slot ``("const", value)`` or
    ``("expr", text)`` (a parameter's name or ``k * name``). A new parameter is named after
    its slot, with ``2``, ``3``, ... appended when that name is taken or ``reserved``."""
    params: list[Param] = []
    exprs: list[tuple] = []
    for slot in slots:
        col = slot.values
        if same(col):
            exprs.append(("const", col[0]))
            continue
        family = [p for p in params if p.family == slot.family]
        text = next((p.name for p in family if [repr(v) for v in p.values] == list(map(repr, col))),
                    None)  # fmt: skip
        if text is None and slot.scaled:
            text = multiple(col, family)
        if text is None:
            taken = {p.name for p in params}
            text, k = slot.name, 2
            while text in taken or text in reserved:
                text, k = f"{slot.name}{k}", k + 1
            params.append(Param(text, slot.family, col))
        exprs.append(("expr", text))
    return params, exprs
