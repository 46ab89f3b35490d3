"""The op table: one entry per op with its signature, shape rule, params and MACs."""

from . import elementwise as _elementwise  # noqa: F401 - registers the ops
from . import layers as _layers  # noqa: F401 - registers the ops
from . import table as _table  # noqa: F401 - registers the ops
from . import tensors as _tensors  # noqa: F401 - registers the ops
from .core import (
    OPS,
    REQUIRED,
    Attr,
    AttrError,
    Decomposition,
    Derived,
    Group,
    OpDef,
    OpShapeError,
    Receptive,
    Shape,
    Step,
    Value,
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
    "Decomposition",
    "Derived",
    "Group",
    "OpDef",
    "OpShapeError",
    "Receptive",
    "Shape",
    "Step",
    "Value",
    "Weight",
    "fmt_shape",
    "projection_hint",
    "projection_stride",
    "register",
    "weight_key",
]
