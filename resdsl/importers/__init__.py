"""``resdsl import``: existing models as idiomatic specs.

Each importer reads one kind of source into an :class:`~.graph.Imported` graph of op-table
calls; :mod:`.writer` writes it as spec text. Sources:

* ``torchvision:NAME``, ``timm:NAME``, ``package.module:factory`` or an ``nn.Module``
  (:mod:`.torch_fx`, torch.fx symbolic tracing, or :mod:`.torch_export` where fx cannot
  trace it). Only this kind runs code: the factory's
  and the module's (docs/security.md); ``.res``, ``.onnx`` and ``.prototxt`` input never;
* ``model.onnx`` (:mod:`.onnx_model`, onnx's own parser and shape inference);
* ``deploy.prototxt`` (:mod:`.caffe`, Caffe's text format read with a Lark grammar).
"""

from __future__ import annotations

import os
from typing import Any

from .graph import Call, Imported, ModelImportError, Unsupported, scopes_from_labels, tidy

__all__ = [
    "Call",
    "Imported",
    "ModelImportError",
    "Unsupported",
    "from_torch",
    "import_graph",
    "import_model",
    "write",
]


def import_model(
    source: Any,
    example: Any = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    trace: str = "auto",
) -> str:
    """Spec text for ``source``: ``torchvision:NAME``, ``timm:NAME``,
    ``package.module:factory`` (runs that code), an ``nn.Module``, ``model.onnx`` or
    ``deploy.prototxt``. Raises :class:`ModelImportError` listing everything unsupported.
    ``trace`` (PyTorch sources): ``"auto"`` (torch.fx, torch.export where fx fails),
    ``"fx"`` or ``"export"`` only."""
    return write(import_graph(source, example, input_shape=input_shape, trace=trace))


def from_torch(module: Any, example_input: Any, *, trace: str = "auto") -> str:
    """Spec text for an ``nn.Module``, traced with ``example_input`` (a batched tensor)."""
    return import_model(module, example_input, trace=trace)


def import_graph(
    source: Any,
    example: Any = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    trace: str = "auto",
) -> Imported:
    """The :class:`Imported` graph of ``source``: a path (``.onnx``, ``.prototxt``), a
    ``torchvision:``/``timm:``/``module:factory`` reference, or an ``nn.Module`` (with an
    ``example`` input, or ``input_shape`` per sample); ``trace`` as for
    :func:`import_model`."""
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        if text.endswith(".onnx"):
            from .onnx_model import import_onnx

            return scopes_from_labels(tidy(import_onnx(text)))
        if text.endswith(".prototxt"):
            from .caffe import import_prototxt

            return tidy(import_prototxt(text))
    from .torch_fx import import_torch

    return tidy(import_torch(source, example, input_shape=input_shape, trace=trace))


TOLERANCE = 1e-4  # relative: what float reassociation leaves, in any model


def write(graph: Imported) -> str:
    """Spec text for ``graph``: blocks for repeated module classes, loops for their runs;
    written flat if the structure found does not elaborate (a bug to report, but the spec
    is still right). Where the source can run (PyTorch), the spec's outputs are checked
    against it on the example; a spec that differs is never returned."""
    import copy

    from ..api import loads
    from ..errors import SpecError
    from .writer import write_flat, write_structured

    problem = ""
    for writer in (write_structured, write_flat):
        try:
            text = writer(copy.deepcopy(graph))
            loads(text)
        except Exception as e:  # a bug of the structure found: the flat spec is still right
            first = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            if writer is write_flat:  # too large to write, say: an error, never a crash
                raise ModelImportError(
                    graph.origin, [], f"{graph.origin}: the imported spec cannot be written "
                    f"({problem + '; flat: ' if problem else ''}{first})",
                ) from None  # fmt: skip
            problem = f"structured: {first}"
            continue
        if graph.verify is None:
            return text
        try:
            difference = graph.verify(text)
        except (SpecError, RuntimeError) as e:  # the state_dict does not load, say
            problem = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            continue
        if difference <= TOLERANCE:
            return text
        problem = f"its outputs differ from the source's by {difference:.1e} (relative)"
    raise ModelImportError(
        graph.origin, [], f"{graph.origin}: the imported spec does not reproduce the model "
        f"({problem}); this is a bug in resdsl's importer, please report it",
    )  # fmt: skip
