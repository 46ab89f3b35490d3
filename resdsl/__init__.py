"""resdsl: a compiler for residual neural-network architectures.

>>> import resdsl
>>> net = resdsl.load("examples/resnet50.res", num_classes=10)
>>> net.num_params, net.macs, net.output_shapes

The front end (Lark, NetworkX) is imported on first use, so ``import resdsl.runtime`` on a
deployment machine needs neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .api import create_model, list_models, load, loads
    from .elaborate import Limits
    from .importers import from_torch, import_model
    from .network import Network
    from .search import SearchSpace, load_space

__version__ = "0.1.0"

_LAZY = {
    "create_model": "api",
    "list_models": "api",
    "load": "api",
    "loads": "api",
    "Limits": "elaborate",
    "import_model": "importers",
    "from_torch": "importers",
    "Network": "network",
    "load_space": "search",
    "SearchSpace": "search",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'resdsl' has no attribute {name!r}")


__all__ = [
    "ArgumentError",
    "CycleError",
    "DuplicateNameError",
    "LimitError",
    "Limits",
    "Network",
    "SearchSpace",
    "ShapeError",
    "SpecError",
    "SpecImportError",
    "SpecSyntaxError",
    "TypeMismatchError",
    "UnknownNameError",
    "ValueRangeError",
    "__version__",
    "create_model",
    "from_torch",
    "import_model",
    "list_models",
    "load",
    "load_space",
    "loads",
    "render",
]
