"""The op table: one entry per op with its signature, shape rule, params and MACs."""

from . import table as _table  # noqa: F401 - registers the ops
from . import variants as _variants  # noqa: F401 - registers the ops
from .core import (
    OPS,
    REQUIRED,
    Attr,
    AttrError,
    Group,
    OpDef,
    OpShapeError,
    Shape,
    Weight,
    register,
    weight_key,
)
from .table import fmt_shape, projection_hint, projection_stride

__all__ = [
    "OPS",
    "REQUIRED",
    "Attr",
    "AttrError",
    "Group",
    "OpDef",
    "OpShapeError",
    "Shape",
    "Weight",
    "fmt_shape",
    "projection_hint",
    "projection_stride",
    "register",
    "weight_key",
]
