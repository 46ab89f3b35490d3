"""AST -> graph IR: bind parameters, run blocks and loops, name every op, infer shapes.

Elaboration is an interpreter over the AST. Scalars are Python values, tensors are
:class:`~resdsl.ir.TensorValue` handles; calling an op adds a node to the graph after
its shape rule (from the op table) accepts the inputs, so every later expression can
query shapes (``x.channels``) and a mismatch is reported where it is written.

The modules, by concern: ``values`` (value types, ``constant``), ``limits`` (``Limits`` and
step accounting), ``statements``, ``expressions``, ``calls`` (blocks, ops, parameters,
``emit``), ``naming``, ``macros`` (``shortcut``, ``project``), ``functions`` (builtins) and
``elaborator`` (the :class:`Elaborator`, :func:`elaborate`, and the hooks search uses).
"""

from __future__ import annotations

from .elaborator import Added, Elaborator, Mark, check_definitions, elaborate, pick_network
from .limits import CALL_STEPS, ERROR_STEPS, MAX_ATTR_INT, MAX_ERRORS, NODE_STEPS, Limits
from .macros import MACROS
from .values import (
    PARAM_TYPES,
    POISON,
    TENSOR_ATTRS,
    BlockRef,
    Frame,
    TensorValue,
    constant,
    describe,
    is_literal,
    join_name,
)

__all__ = [
    "CALL_STEPS",
    "ERROR_STEPS",
    "MACROS",
    "MAX_ATTR_INT",
    "MAX_ERRORS",
    "NODE_STEPS",
    "PARAM_TYPES",
    "POISON",
    "TENSOR_ATTRS",
    "Added",
    "BlockRef",
    "Elaborator",
    "Frame",
    "Limits",
    "Mark",
    "TensorValue",
    "check_definitions",
    "constant",
    "describe",
    "elaborate",
    "is_literal",
    "join_name",
    "pick_network",
]
