"""resdsl: a compiler for residual neural-network architectures.

>>> import resdsl
>>> net = resdsl.load("examples/resnet50.res", num_classes=10)
>>> net.num_params, net.macs, net.output_shapes
"""

from .api import load, loads
from .elaborate import Limits
from .errors import (
    ArgumentError,
    CycleError,
    DuplicateNameError,
    LimitError,
    ShapeError,
    SpecError,
    SpecImportError,
    SpecSyntaxError,
    TypeMismatchError,
    UnknownNameError,
    ValueRangeError,
    render,
)
from .network import Network

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "CycleError",
    "DuplicateNameError",
    "LimitError",
    "Limits",
    "Network",
    "ShapeError",
    "SpecError",
    "SpecImportError",
    "SpecSyntaxError",
    "TypeMismatchError",
    "UnknownNameError",
    "ValueRangeError",
    "__version__",
    "load",
    "loads",
    "render",
]
