"""Importing a PyTorch module by torch.fx symbolic tracing (or, where that fails, from
``torch.export``'s graph read back into the same form: :mod:`.torch_export`).

Modules the op table has (``nn.Conv2d``, ``nn.BatchNorm2d``, torchvision's
``LayerNorm2d``, ...) are leaves of the trace and become one call each, labelled with their
module path, so the module's state_dict keys are the spec's. Every other module is traced
through: its functions and tensor methods map to ops, and the module path it ran in (fx's
``nn_module_stack``) becomes the call's scope, which the writer turns into blocks. Shapes
come from one run of the traced graph on the example input (``ShapeProp``).

Anything without an equivalent is collected, with the module path it ran in, and reported
in one :class:`~.graph.ModelImportError`. This is the one importer that runs code: the
module's own ``forward`` (traced), and for ``package.module:factory`` the factory.
"""

from __future__ import annotations

import importlib
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from .graph import Call, Imported, ModelImportError, Unsupported
from .writer import index_text

TRACES = ("auto", "fx", "export")


def import_torch(
    source: Any,
    example: Any = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    trace: str = "auto",
) -> Imported:
    """``source``: an ``nn.Module``, ``torchvision:NAME``, ``timm:NAME`` or
    ``package.module:factory``; ``example`` a batched input (default: 2 random samples of
    ``input_shape``, else of the model's usual input, 3 x 224 x 224). ``trace``:
    ``"auto"`` (torch.fx; torch.export where fx cannot trace the model or its graph has
    calls without a rule), ``"fx"`` or ``"export"`` only."""
    import torch

    if trace not in TRACES:
        raise ValueError(f"trace is one of {', '.join(TRACES)}, not {trace!r}")
    module, name, origin = _resolve(source)
    was_training = module.training
    if example is None:
        shape = input_shape or _default_shape(name)
        example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    try:
        eval_outputs = _output_count(
            _Converter(module.eval(), name, origin, trace).trace(example, True)
        )
        train_outputs = _output_count(
            _Converter(module.train(), name, origin, trace).trace(example, True)
        )
    finally:
        module.train(was_training)
    if train_outputs > eval_outputs:  # auxiliary classifiers: traced in training mode
        import copy

        copied = copy.deepcopy(module).train()  # its batch norms' statistics will move
        imported = _Converter(copied, name, origin, trace).run(example)
        imported.training_outputs = imported.outputs[eval_outputs:]
        imported.outputs = imported.outputs[:eval_outputs]
    else:
        try:
            imported = _run_either(module.eval(), name, origin, example, trace)
        finally:
            module.train(was_training)
    # the module's own state_dict: the spec's labels are its module paths
    imported.weights = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    imported.verify = _verifier(module, example)
    return imported


def _run_either(module: Any, name: str, origin: str, example: Any, trace: str) -> Imported:
    """The module converted from its fx trace, else, where that has ops without an
    equivalent (a custom ``autograd.Function``, a helper of the model's own), from
    ``torch.export``'s ATen graph, where everything the model calls is torch's own ops;
    if that fails too, the fx trace's error is the one reported (it names the model's
    own functions)."""
    converter = _Converter(module, name, origin, trace)
    try:
        return converter.run(example)
    except ModelImportError as e:
        if trace != "auto" or converter.exported or not e.items:
            raise
        try:
            return _Converter(module, name, origin, "export").run(example)
        except Exception:  # the first route's error is the clearer one
            raise e from None


def _verifier(module: Any, example: Any) -> Callable[[str], float]:
    """The relative max difference of a spec's PyTorch module, the source's state_dict
    loaded strictly, from the source on the example (eval mode)."""

    def verify(text: str) -> float:
        import torch

        from ..api import loads

        spec = loads(text).to_torch().eval()
        spec.load_state_dict(module.state_dict(), strict=True)
        was_training = module.training
        try:
            with torch.no_grad():
                want, got = _tensors(module.eval()(example)), _tensors(spec(example))
        finally:
            module.train(was_training)
        if len(want) != len(got) or any(a.shape != b.shape for a, b in zip(want, got, strict=True)):
            return float("inf")
        return max(
            float((b - a).abs().max() / a.abs().max().clamp_min(1e-12))
            for a, b in zip(want, got, strict=True)
        )

    return verify


def _tensors(value: Any) -> list:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    return [value]


def _output_count(graph: Any) -> int:
    (output,) = [n for n in graph.nodes if n.op == "output"]
    return len(_flatten(output.args[0]))


def _resolve(source: Any) -> tuple[Any, str, str]:
    import torch

    if isinstance(source, torch.nn.Module):
        cls = type(source).__name__
        return source, re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls).lower(), f"a {cls} module"
    text = str(source)
    kind, _, name = text.partition(":")
    if kind == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ModelImportError(text, [], f"{text}: torchvision has no model `{name}`")
        return torchvision.models.get_model(name, weights=None), name, text
    if kind == "timm":
        try:
            import timm
        except ImportError:
            raise ModelImportError(text, [], f"{text}: timm is not installed") from None
        if not timm.is_model(name):
            raise ModelImportError(text, [], f"{text}: timm has no model `{name}`")
        return timm.create_model(name, pretrained=False), name, text
    if name and ("." in kind or kind.isidentifier()):
        try:
            factory = getattr(importlib.import_module(kind), name)
        except (ImportError, AttributeError) as e:
            raise ModelImportError(text, [], f"{text}: cannot find the factory: {e}") from None
        module = factory()
        if not isinstance(module, torch.nn.Module):
            raise ModelImportError(
                text, [], f"{text}: the factory returned {type(module).__name__}, not a module"
            )
        return module, name, text
    raise ModelImportError(
        text, [], f"{text}: not a model reference (torchvision:NAME, timm:NAME, "
        "package.module:factory, model.onnx or deploy.prototxt)",
    )  # fmt: skip


def _default_shape(name: str) -> tuple[int, ...]:
    return {"inception_v3": (3, 299, 299)}.get(name, (3, 224, 224))


# --- leaves: modules that are one op -----------------------------------------------------------


def _pair(v: Any) -> Any:
    return tuple(v) if isinstance(v, tuple | list) else (v, v)


def _conv(m: Any) -> tuple[str, dict]:
    if m.padding_mode != "zeros":
        raise UnmappedError(f"padding_mode={m.padding_mode!r}")
    op = "conv2d" if m.weight.dim() == 4 else "conv1d"
    single = (lambda v: v[0]) if op == "conv1d" else _pair
    padding = m.padding if isinstance(m.padding, str) else single(m.padding)
    return op, {
        "out_channels": m.out_channels, "kernel": single(m.kernel_size),
        "stride": single(m.stride), "padding": padding, "dilation": single(m.dilation),
        "groups": m.groups, "bias": m.bias is not None,
    }  # fmt: skip


def _batchnorm(m: Any) -> tuple[str, dict]:
    if not m.track_running_stats:
        raise UnmappedError("track_running_stats=False")
    momentum = 0.1 if m.momentum is None else m.momentum
    return "batchnorm2d", {"eps": m.eps, "momentum": momentum, "affine": m.affine}


def _layernorm(m: Any) -> tuple[str, dict]:
    if len(m.normalized_shape) != 1 or not m.elementwise_affine or m.bias is None:
        raise UnmappedError("a layer norm over more than the last axis, or without affine weights")
    return "layernorm", {"eps": m.eps}


def _linear(m: Any) -> tuple[str, dict]:
    return "linear", {"out_features": m.out_features, "bias": m.bias is not None}


def _groupnorm(m: Any) -> tuple[str, dict]:
    return "groupnorm", {"groups": m.num_groups, "eps": m.eps, "affine": m.affine}


def _leaves() -> dict[type, Callable[[Any], tuple[str, dict]]]:
    from torch import nn

    out: dict[type, Callable[[Any], tuple[str, dict]]] = {
        nn.Conv2d: _conv,
        nn.Conv1d: _conv,
        nn.BatchNorm2d: _batchnorm,
        nn.Linear: _linear,
        nn.LayerNorm: _layernorm,
        nn.GroupNorm: _groupnorm,
        nn.ReLU: lambda m: ("relu", {}),
        nn.ReLU6: lambda m: ("relu6", {}),
        nn.SiLU: lambda m: ("silu", {}),
        nn.GELU: lambda m: ("gelu", {"approximate": m.approximate}),
        nn.Sigmoid: lambda m: ("sigmoid", {}),
        nn.Tanh: lambda m: ("tanh", {}),
        nn.LeakyReLU: lambda m: ("leaky_relu", {"negative_slope": float(m.negative_slope)}),
        nn.Hardswish: lambda m: ("hardswish", {}),
        nn.Hardsigmoid: lambda m: ("hardsigmoid", {}),
        nn.Hardtanh: lambda m: ("hardtanh", {"min_val": m.min_val, "max_val": m.max_val}),
        nn.Dropout: lambda m: ("dropout", {"p": m.p}),
        nn.MaxPool2d: lambda m: ("maxpool2d", {
            "kernel": _pair(m.kernel_size), "stride": _pair(m.stride), "padding": _pair(m.padding),
            "dilation": _pair(m.dilation), "ceil_mode": m.ceil_mode,
        }),
        nn.AvgPool2d: lambda m: ("avgpool2d", {
            "kernel": _pair(m.kernel_size), "stride": _pair(m.stride), "padding": _pair(m.padding),
            "ceil_mode": m.ceil_mode, "count_include_pad": m.count_include_pad,
        }),
        nn.AdaptiveAvgPool2d: lambda m: ("adaptive_avgpool2d", {"output_size": _pair(m.output_size)}),  # noqa: E501
        nn.Flatten: lambda m: ("flatten", {"start": m.start_dim - 1}),
        nn.Softmax: lambda m: ("softmax", {"axis": m.dim - 1 if m.dim > 0 else m.dim}),
        nn.Identity: lambda m: ("identity", {}),
    }  # fmt: skip
    try:
        from torchvision.models.convnext import LayerNorm2d
        from torchvision.ops import StochasticDepth
        from torchvision.ops.misc import Permute

        out[LayerNorm2d] = lambda m: ("layernorm2d", {"eps": m.eps})
        out[StochasticDepth] = _stochastic_depth
        out[Permute] = lambda m: ("permute", {"axes": _per_sample_axes(m.dims)})
    except ImportError:  # pragma: no cover - torchvision is installed with torch here
        pass
    return out


def _std_conv(m: Any) -> tuple[str, dict]:
    _, attrs = _conv(m)
    gamma = float(m.scale * m.weight[0].numel() ** 0.5)
    return "std_conv2d", {**attrs, "gamma": gamma, "eps": m.eps}


def _layernorm_by_name(m: Any) -> tuple[str, dict]:
    import torch

    if not isinstance(m, torch.nn.LayerNorm):
        raise UnmappedError("a LayerNorm that is not an nn.LayerNorm")
    return _layernorm(m)


# Classes known by name: the helpers of resdsl's generated PyTorch files (backends/torch.py
# HELPERS) and library classes with the same meaning (timm's LayerNorm and LayerNorm2d).
def _linear_by_name(m: Any) -> tuple[str, dict]:
    import torch

    if not isinstance(m, torch.nn.Linear):
        raise UnmappedError("a Linear that is not an nn.Linear")
    return _linear(m)


_GENERATED: dict[str, Callable[[Any], tuple[str, dict]]] = {
    "LayerNorm2d": lambda m: ("layernorm2d", {"eps": m.eps}),
    "ScaledStdConv2d": _std_conv,
    "LayerNorm": _layernorm_by_name,
    "Linear": _linear_by_name,  # timm's, an nn.Linear
    "DropPath": lambda m: ("drop_path", {"p": float(m.drop_prob)}),
    # timm's activation modules (timm.layers.activations)
    "GELU": lambda m: ("gelu", {}),
    "GELUTanh": lambda m: ("gelu", {"approximate": "tanh"}),
    "Swish": lambda m: ("silu", {}),
    "HardSwish": lambda m: ("hardswish", {}),
    "HardSigmoid": lambda m: ("hardsigmoid", {}),
    "Sigmoid": lambda m: ("sigmoid", {}),
    "Tanh": lambda m: ("tanh", {}),
}
# Normalisations fused with their activation (timm's norm_act layers): the norm (which
# owns the weights) then the activation module, by class name.
_NORM_ACT = {
    "BatchNormAct2d": _batchnorm,
    "LayerNormAct2d": lambda m: ("layernorm2d", {"eps": m.eps}),
}


def _stochastic_depth(m: Any) -> tuple[str, dict]:
    if m.mode != "row":
        raise UnmappedError(f"stochastic depth in mode {m.mode!r}")
    return "drop_path", {"p": m.p}


def _per_sample_axes(dims: Any) -> tuple[int, ...]:
    dims = list(dims)
    if dims[0] != 0:
        raise UnmappedError("a permutation that moves the batch axis")
    return tuple(d - 1 for d in dims[1:])


BATCHED, UNBATCHED = ("batched",), ("unbatched",)
_CONSTANT_LIMIT = 4096  # elements of a constant tensor written into the spec
# Ops that act on the last axes or on each element, the same whatever a tensor's first
# axis is: a module of these may read a tensor without a batch axis.
_LAST_AXES = {"linear", "layernorm", "dropout", "drop_path", "identity"}


def _module_rule(leaves: dict, m: Any) -> Callable[[Any], tuple[str, dict]] | None:
    """The rule giving a module's op and attributes: by its class, else by its class name."""
    return leaves.get(type(m)) or _GENERATED.get(type(m).__name__)


def _layout_free(leaves: dict, m: Any) -> bool:
    from ..ops import OPS
    from ..ops.core import Group

    rule = _module_rule(leaves, m)
    if rule is None:
        return False
    op = rule(m)[0]
    return op in _LAST_AXES or OPS[op].group is Group.ELEMENTWISE


class _Skipped(Exception):  # noqa: N818 - control flow, not an error
    """A node reads one that failed: skipped without an error of its own."""


class UnmappedError(Exception):
    """This call has no resdsl equivalent: the message says what of it."""


# --- the trace -----------------------------------------------------------------------------------


class _Converter:
    def __init__(self, module: Any, name: str, origin: str, trace: str = "auto") -> None:
        self.module, self.name, self.origin = module, name, origin
        self.leaves = _leaves()
        self.calls: list[Call] = []
        self.alias: dict[str, str] = {}  # fx node -> the id of the value it is
        self.consts: dict[str, Any] = {}  # fx node -> a Python value (sizes, tuples of ids)
        self.scopes: dict[str, str] = {}
        self.unsupported: list[Unsupported] = []
        self.failed: set[str] = set()  # nodes that could not be converted
        self.shapes: dict[str, tuple[int, ...]] = {}
        # how a tensor's torch axes relate to the batch (see `layout`); absent: batched
        self.layouts: dict[str, tuple] = {}
        self.batch = 0  # the example's batch size
        # constants: tensors computed from no input or weight (a non-persistent buffer, what
        # `forward` builds with torch.arange, ...), by node, with their values on the example
        self.values: dict[str, Any] = {}
        self.deferred: set[str] = set()  # constants not converted: written where read
        self.folded: set[str] = set()  # ids of calls converted from constants
        self.front = 0  # where the next constant written whole goes in `calls`
        self.written: dict[tuple, str] = {}  # a constant written whole -> its id
        self.concrete = False  # traced with sizes as numbers (see `trace`)
        self.exported = trace == "export"  # traced by torch.export (see `trace_export`)
        self.fx_only = trace == "fx"  # never by torch.export

    def trace(self, example: Any = None, scratch: bool = False) -> Any:
        """The module's fx graph, leaves the op table's modules. Where symbolic tracing
        fails (control flow on a tensor's shape: Hiera, NaFlexViT), and an ``example`` is
        given, the module is traced on it with every size a number (the graph is the
        example's, as the spec is); on a copy of the module if ``scratch`` and it is in
        training mode (the run moves batch norms' statistics)."""
        import torch.fx

        if self.exported:
            return self.trace_export(example)
        is_leaf = self.is_leaf

        class Tracer(torch.fx.Tracer):
            proxy_buffer_attributes = True  # a buffer is a node, not a traced-out constant

            def is_leaf_module(self, m: Any, qualname: str) -> bool:
                return is_leaf(m)

        tracer = Tracer(autowrap_functions=tuple(_wrapped(self.module)))
        try:
            graph = tracer.trace(self.module)
        except Exception as e:  # data-dependent control flow, unsupported Python
            problem = f"{type(e).__name__}: {_first_line(e)}"
            graph = None if example is None else self.trace_concrete(Tracer, example, scratch)
            if graph is not None:
                return graph
            if example is None or self.fx_only:
                raise ModelImportError(
                    self.origin, [], f"{self.origin}: torch.fx cannot trace it: {problem}"
                ) from None
            try:
                return self.trace_export(example)
            except Exception as e:  # both routes failed: say why each did
                raise ModelImportError(
                    self.origin, [], f"{self.origin}: torch.fx cannot trace it: {problem}; "
                    f"nor can torch.export: {type(e).__name__}: {_first_line(e)}",
                ) from None  # fmt: skip
        self.root = tracer.root
        return graph

    def is_leaf(self, m: Any) -> bool:
        """Whether the trace keeps ``m`` as one call: a module the op table has (and, as fx
        does by default, any other of ``torch.nn``'s but ``Sequential``)."""
        import torch

        name = type(m).__name__
        if isinstance(m, tuple(self.leaves)) or name in _GENERATED or name in _NORM_ACT:
            return True
        if name == "Conv2dSame":
            return True
        where = type(m).__module__ or ""
        return where.startswith(("torch.nn.", "torch.ao.nn.")) and not isinstance(
            m, torch.nn.Sequential
        )

    def trace_export(self, example: Any) -> Any:
        """The graph by ``torch.export`` (see :mod:`.torch_export`): ATen ops, read back as
        the functions and leaf modules of an fx trace with sizes as numbers."""
        from .torch_export import exported_graph

        def has_rule(kind: str, target: Any) -> bool:
            table = _FUNCTIONS if kind == "call_function" else _METHODS
            return table.get(target) is not None

        self.root, graph = exported_graph(self.module, example, self.is_leaf, has_rule, _setitem)
        self.concrete = self.exported = True
        return graph

    def trace_concrete(self, base: type, example: Any, scratch: bool) -> Any:
        """The graph traced with sizes as numbers (see ``trace``), or None."""
        import copy
        import inspect

        import torch

        values: dict[Any, Any] = {}
        inputs = [example]

        class Tracer(_concrete_tracer(base, values)):  # type: ignore[misc]
            def create_proxy(self, kind: str, target: Any, args: tuple, *rest: Any,
                             **more: Any) -> Any:  # fmt: skip
                if kind == "placeholder" and inputs:
                    proxy = super().create_proxy(kind, target, (), *rest, **more)
                    values[proxy.node] = inputs.pop(0)
                    return proxy
                return super().create_proxy(kind, target, args, *rest, **more)

        module = copy.deepcopy(self.module) if scratch and self.module.training else self.module
        tracer = Tracer(autowrap_functions=tuple(_wrapped(self.module)))
        try:
            # the optional arguments of `forward` (Hiera's mask=None) at their defaults
            params = list(inspect.signature(module.forward).parameters.values())[1:]
            fixed = {p.name: p.default for p in params if p.default is not p.empty}
            with torch.no_grad():
                graph = tracer.trace(module, concrete_args=fixed or None)
        except Exception:  # the symbolic trace's error is the one reported
            return None
        self.root = tracer.root
        self.concrete = True
        return graph

    def run(self, example: Any) -> Imported:
        import torch.fx

        graph = self.trace(example)
        gm = torch.fx.GraphModule(self.root, graph)
        if self.concrete:
            gm.graph.eliminate_dead_code()  # what an assignment left unread (`bias[a:b]`)
            gm.recompile()
        self.state_keys = set(self.module.state_dict())
        _inline_wrapped(self, gm, example)
        try:
            with torch.no_grad():
                _ConstantProp(gm, self).propagate(example)
        except Exception as e:  # the traced graph does not run on the example
            first = str(e).splitlines()[0] if str(e) else ""
            raise ModelImportError(
                self.origin, [], f"{self.origin}: the traced model does not run on the "
                f"example input: {type(e).__name__}: {first}",
            ) from None  # fmt: skip
        self.gm = gm
        inputs, outputs = [], []
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                meta = node.meta.get("tensor_meta")
                if meta is None:  # an optional argument left at its default (None)
                    self.consts[node.name] = node.args[0] if node.args else None
                    continue
                inputs.append((node.name, tuple(meta.shape)[1:]))
                self.batch = self.batch or int(meta.shape[0])
                self.alias[node.name] = node.name
            else:
                try:
                    if node.op == "output":
                        for a in _flatten(node.args[0]):
                            if getattr(a, "name", None) in self.deferred:
                                self.materialise(a)
                        outputs = [self.output(a, node) for a in _flatten(node.args[0])]
                    elif node.name in self.values:
                        self.fold(node)
                    else:
                        self.convert(node)
                except UnmappedError as e:
                    self.failed.add(node.name)
                    self.unsupported.append(
                        Unsupported(self.where(node), f"{self.what(node)}: {e}")
                    )
                except _Skipped:
                    self.failed.add(node.name)
                except Exception as e:  # a case the converter does not know: say where
                    self.failed.add(node.name)
                    what = f"{self.what(node)}: cannot convert ({type(e).__name__}: {e})"
                    self.unsupported.append(Unsupported(self.where(node), what))
        if self.unsupported:
            raise ModelImportError(self.origin, self.unsupported)
        self.prune(outputs)
        for name, shape in inputs:
            self.shapes[name] = shape
        return Imported(
            self.name, inputs, self.calls, outputs, self.scopes, self.origin, self.shapes
        )

    # --- helpers -----------------------------------------------------------------------------

    def where(self, node: Any) -> str:
        if node.op == "call_module":
            return node.target
        stack = node.meta.get("nn_module_stack") or {}
        path = _module_path(stack)
        return f"{path or '(top level)'} ({node.name})"

    def what(self, node: Any) -> str:
        if node.op == "call_module":
            return f"module {type(self.gm.get_submodule(node.target)).__qualname__}"
        target = node.target
        if callable(target):
            module = getattr(target, "__module__", "") or ""
            return f"{module}.{getattr(target, '__name__', target)}".lstrip(".")
        return f"Tensor.{target}" if node.op == "call_method" else str(target)

    def scope_of(self, node: Any) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        path = _module_path(stack)
        for key, (qual, cls) in stack.items():
            path_k = qual if isinstance(qual, str) else key
            if path_k:
                self.scopes.setdefault(
                    path_k, getattr(cls, "__name__", str(cls)).rsplit(".", 1)[-1]
                )
        if node.op == "call_module":  # a leaf: its scope is its parent
            return node.target.rpartition(".")[0]
        return path

    def shape(self, node: Any) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise UnmappedError("an op whose result is not one tensor")
        return tuple(meta.shape)

    # A tensor of the trace is one of three layouts. BATCHED: axis 0 is the batch, the
    # rest a sample (what the network's input is). UNBATCHED: no batch axis, the same for
    # every sample (a parameter, a buffer and what is computed from them alone: a relative
    # position bias); the op table's values are per sample, so it is that value whole.
    # ("merged", k): axis 0 is the batch times k, a sample (k, ...) (Swin's windows moved
    # into the batch axis by a reshape); per-sample axes are the torch axes then.
    def layout(self, arg: Any) -> tuple:
        return self.layouts.get(getattr(arg, "name", None), BATCHED)

    def set_layout(self, node: Any, layout: tuple) -> None:
        if layout == BATCHED:
            self.layouts.pop(node.name, None)
        else:
            self.layouts[node.name] = layout

    def sample_shape(self, arg: Any) -> tuple[int, ...]:
        """``arg``'s shape per sample, as the op table sees it."""
        shape, layout = self.shape(arg), self.layout(arg)
        if layout == UNBATCHED:
            return shape
        return (layout[1], *shape[1:]) if layout[0] == "merged" else shape[1:]

    def axis(self, arg: Any, dim: int) -> int:
        """Torch axis ``dim`` of ``arg`` as a per-sample axis."""
        rank, layout = len(self.shape(arg)), self.layout(arg)
        dim %= rank
        if layout == UNBATCHED:
            return dim
        if dim == 0:
            raise UnmappedError("an op along the batch axis")
        return dim - 1 if layout == BATCHED else dim

    def axes(self, arg: Any, dims: Any, layout: tuple | None = None) -> tuple[int, ...]:
        """A torch permutation of ``arg``'s axes as one of its per-sample axes."""
        dims, layout = list(dims), layout or self.layout(arg)
        if layout == UNBATCHED:
            return tuple(dims)
        if dims[0] != 0:
            raise UnmappedError("a permutation that moves the batch axis")
        return tuple(d - 1 for d in dims[1:]) if layout == BATCHED else (0, *dims[1:])

    def output(self, arg: Any, node: Any) -> str:
        if self.layout(arg) != BATCHED:
            raise UnmappedError("an output whose first axis is not the batch")
        return self.value(arg, node)

    def value(self, arg: Any, user: Any) -> str:
        """The id of the tensor ``arg`` (an fx node)."""
        import torch.fx

        if isinstance(arg, torch.fx.Node) and arg.name in self.failed:
            raise _Skipped  # its own error is reported; its users' would only repeat it
        if not isinstance(arg, torch.fx.Node) or arg.name not in self.alias:
            raise UnmappedError(f"an input that is not a tensor ({arg!r})")
        return self.alias[arg.name]

    def const(self, arg: Any) -> Any:
        """A Python value of the trace (an int, a size from `x.shape`, a tuple of them)."""
        import torch.fx

        if isinstance(arg, torch.fx.Node):
            if arg.name in self.failed:
                raise _Skipped
            if arg.name in self.consts:
                return self.consts[arg.name]
            raise UnmappedError(f"a value computed from tensors ({arg.name})")
        if isinstance(arg, tuple | list):
            return type(arg)(self.const(a) for a in arg)
        return arg

    def emit(
        self, node: Any, op: str, attrs: dict, inputs: list[str], label: str | None = None
    ) -> None:
        from ..ops import OPS

        OPS[op].bind([], attrs)  # the attributes are the table's (a bug here, not the model's)
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            self.shapes[node.name] = self.sample_shape(node)
        self.calls.append(
            Call(node.name, op, attrs, inputs, label, self.scope_of(node), self.where(node))
        )
        self.alias[node.name] = node.name

    # --- constants -----------------------------------------------------------------------------

    def fold(self, node: Any) -> None:
        """A constant: converted as any node where it can be, else deferred (its value is
        known) until a node that is not a constant reads it."""
        if any(n.name in self.deferred for n in node.all_input_nodes):
            self.deferred.add(node.name)
            return
        before = len(self.calls)
        try:
            self.convert(node)
        except (UnmappedError, _Skipped):
            self.deferred.add(node.name)
            self.alias.pop(node.name, None)
        except Exception:  # a constant the converter cannot take: deferred too
            self.deferred.add(node.name)
            self.alias.pop(node.name, None)
        self.folded.update(k.id for k in self.calls[before:])

    def materialise(self, node: Any, quiet: bool = False) -> None:
        """Write the deferred constant ``node`` as calls where it is first read: the
        constants it is computed from written first and ``node`` converted from them where
        it can be (the tensor a model computes once and reads in every block is written
        once), else its own value (:mod:`.constants`). One that cannot be written is
        reported where it is computed (raised, if ``quiet``)."""
        import torch

        from .constants import ConstantError, constant_calls

        if node.name not in self.deferred:
            return
        self.deferred.discard(node.name)
        value = self.values[node.name]
        sources = [n for n in node.all_input_nodes if n.name in self.deferred]
        if (sources and not _periodic(node)) or not isinstance(value, torch.Tensor):
            try:
                for n in sources:
                    self.materialise(n, quiet=True)
                before = len(self.calls)
                try:
                    self.convert(node)
                finally:
                    self.folded.update(k.id for k in self.calls[before:])
                return
            except (UnmappedError, _Skipped, ConstantError, LookupError, TypeError, ValueError):
                self.alias.pop(node.name, None)
                if not isinstance(value, torch.Tensor):
                    if quiet:
                        raise ConstantError("a constant that is not one tensor") from None
                    self.failed.add(node.name)
                    what = f"{self.what(node)}: a constant that is not one tensor"
                    self.unsupported.append(Unsupported(self.where(node), what))
                    raise _Skipped from None
        layout = UNBATCHED
        if value.dim() > 1 and (value.shape[0] == 1 or (
            self.batch > 1 and value.shape[0] == self.batch and bool((value == value[:1]).all())
        )):  # fmt: skip
            # a leading 1 (broadcast over the batch), or the batch size read from the input
            # (XCiT's `torch.zeros(B, H, W)`): one sample's value
            value, layout = value[0], BATCHED
        key = (str(value.dtype), tuple(value.shape), value.detach().cpu().numpy().tobytes())
        if key in self.written:  # the same constant again (each block's): written once
            self.alias[node.name] = self.written[key]
            self.set_layout(node, layout)
            return
        label = node.target if node.op == "get_attr" else None
        try:
            calls = constant_calls(node.name, value, label, self.scope_of(node), self.where(node))
        except ConstantError as e:
            if quiet:
                self.deferred.add(node.name)
                raise
            self.failed.add(node.name)
            self.unsupported.append(Unsupported(self.where(node), f"{self.what(node)}: {e}"))
            raise _Skipped from None
        # first in the network: it reads nothing, and a block reading it takes it as an input
        self.calls[self.front : self.front] = calls
        self.front += len(calls)
        self.folded.update(k.id for k in calls)
        self.alias[node.name] = self.written[key] = node.name
        self.set_layout(node, layout)
        self.shapes[node.name] = tuple(value.shape)

    def shared_constant(self, cid: str, value: Any, scope: str, where: str) -> str:
        """The id of a constant tensor written first in the network, once for all readers."""
        from .constants import ConstantError, constant_calls

        key = (str(value.dtype), tuple(value.shape), value.detach().cpu().numpy().tobytes())
        if key not in self.written:
            try:
                calls = constant_calls(cid, value, None, scope, where)
            except ConstantError as e:
                raise UnmappedError(str(e)) from None
            self.calls[self.front : self.front] = calls
            self.front += len(calls)
            self.folded.update(k.id for k in calls)
            self.written[key] = cid
        return self.written[key]

    def prune(self, outputs: list[str]) -> None:
        """Drop the calls converted from constants that no output reads (the start of a
        constant written whole where it is read)."""
        if not self.folded:
            return
        by_id = {k.id: k for k in self.calls}
        live, stack = set(), [*outputs]
        while stack:
            k = stack.pop()
            if k in live:
                continue
            live.add(k)
            stack.extend(by_id[k].inputs if k in by_id else ())
        self.calls = [k for k in self.calls if k.id in live or k.id not in self.folded]

    # --- nodes ---------------------------------------------------------------------------------

    def convert(self, node: Any) -> None:
        import torch

        for n in node.all_input_nodes:
            if n.name in self.deferred and not _reads_raw(node, n):
                self.materialise(n)
        if any(n.name in self.failed for n in node.all_input_nodes):
            if not self.known(node):  # unsupported itself: reported too, all in one run
                raise UnmappedError(f"no op for this {_KIND.get(node.op, 'call')}")
            raise _Skipped  # it reads a value that failed: that one is reported
        if node.op == "get_attr":
            if node.users and all(_reads_shape(u) for u in node.users):
                return  # only its size or dtype is read (XCiT's `weight.device`)
            self.tensor_attr(node)
            return
        layouts = {self.layout(n) for n in node.all_input_nodes if n.name in self.alias}
        if len(layouts) == 1:
            self.set_layout(node, layouts.pop())
        elif layouts and not self.mixes(node):
            raise UnmappedError("tensors with and without a batch axis together")
        if node.op == "call_function" and _is_tuple_class(node.target):
            return  # a named tuple of outputs: see _flatten
        if node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            if isinstance(m, torch.nn.MultiheadAttention):
                self.attention(node, m)
                return
            if type(m) is torch.nn.BatchNorm1d:
                self.batchnorm1d(node, m)
                return
            if self.layout(node) != BATCHED and not _layout_free(self.leaves, m):
                raise UnmappedError("this module on a tensor whose first axis is not the batch")
            if type(m).__name__ in _NORM_ACT:
                self.norm_act(node, m)
                return
            if type(m).__name__ == "Conv2dSame":
                self.conv_same(node, m)
                return
            rule = _module_rule(self.leaves, m)
            if rule is None:
                raise UnmappedError("no op for this module")
            op, attrs = rule(m)
            if op == "identity":
                self.alias[node.name] = self.value(node.args[0], node)
                return
            owns = any(True for _ in m.parameters(recurse=False)) or any(
                True for _ in m.buffers(recurse=False)
            )
            self.emit(
                node, op, attrs, [self.value(node.args[0], node)], node.target if owns else None
            )
            return
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape") or not isinstance(meta.shape, torch.Size):
            self.scalar(node)
            return
        if node.op == "call_function" and getattr(node.target, "__name__", "") == "drop_path":
            a = _bound(node, ["x", "p", "training"], {"p": 0.0})
            p = float(self.const(a["p"]))
            self.emit(node, "drop_path", {"p": p}, [self.value(a["x"], node)])
            return
        fn = (
            _FUNCTIONS.get(node.target) if node.op == "call_function" else _METHODS.get(node.target)
        )
        if fn is None:
            raise UnmappedError("no op for this function")
        fn(self, node)

    def batchnorm1d(self, node: Any, m: Any) -> None:
        """``nn.BatchNorm1d`` on (B, C), (B, C, L), or tokens with the batch merged into
        their first axis (LeViT's ``bn(x.flatten(0, 1))``: a sample is (N, C)): the
        channels moved first and the rest made a (C, L, 1) map for ``batchnorm2d``, whose
        weights are the module's, then back."""
        x = node.args[0]
        layout, sample = self.layout(x), self.sample_shape(x)
        tokens = layout[0] == "merged" and len(sample) == 2
        if not (tokens or (layout == BATCHED and len(sample) in (1, 2))):
            raise UnmappedError(f"BatchNorm1d on a per-sample shape {sample}")
        op, attrs = _batchnorm(m)
        scope, where, current = self.scope_of(node), self.where(node), self.value(x, node)

        def step(tag: str, op: str, attrs: dict, label: str | None = None) -> None:
            nonlocal current
            self.calls.append(Call(f"{node.name}/{tag}", op, attrs, [current], label, scope,
                                   where))  # fmt: skip
            current = f"{node.name}/{tag}"

        channels_first = (sample[1], sample[0]) if tokens else sample
        if tokens:
            step("t", "permute", {"axes": (1, 0)})
        step("map", "reshape", {"shape": (*channels_first, 1, 1)[:3]})
        step("bn", op, attrs, node.target)
        if tokens:
            step("back", "reshape", {"shape": (sample[1], sample[0])})
            self.emit(node, "permute", {"axes": (1, 0)}, [current])
        else:
            self.emit(node, "reshape", {"shape": sample}, [current])

    def conv_same(self, node: Any, m: Any) -> None:
        """timm's ``Conv2dSame`` (TensorFlow's "SAME"): the padding it computes from the
        input size, then the convolution without padding."""

        op, attrs = _conv(m)
        (h, w) = self.shape(node.args[0])[-2:]
        pads = []
        for size, k, s, d in zip((w, h), attrs["kernel"][::-1], attrs["stride"][::-1],
                                 attrs["dilation"][::-1], strict=True):  # fmt: skip
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        x = self.value(node.args[0], node)
        attrs["padding"] = (0, 0)
        if any(pads):
            self.calls.append(Call(f"{node.name}/pad", "pad", {"pads": tuple(pads)}, [x], None,
                                   self.scope_of(node), self.where(node)))  # fmt: skip
            x = f"{node.name}/pad"
        self.emit(node, op, attrs, [x], node.target)

    def mixes(self, node: Any) -> bool:
        """Whether ``node`` is a broadcasting binary op (its operands may differ in layout)."""
        fn = (
            _FUNCTIONS.get(node.target) if node.op == "call_function" else _METHODS.get(node.target)
        )
        return getattr(fn, "broadcasts", False)

    def known(self, node: Any) -> bool:
        """Whether the converter has a rule for ``node``'s module or function at all."""
        import torch

        if node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            name = type(m).__name__
            return (
                type(m) in self.leaves or name in _GENERATED or name in _NORM_ACT
                or name == "Conv2dSame" or isinstance(m, torch.nn.MultiheadAttention)
                or type(m) is torch.nn.BatchNorm1d
            )  # fmt: skip
        if node.op == "call_method":
            return node.target in _METHODS or node.target in _SCALAR_METHODS
        if node.op == "call_function":
            target = node.target
            return (
                _FUNCTIONS.get(target) is not None or target in _STATIC or target is getattr
                or _is_tuple_class(target) or getattr(target, "__name__", "") == "drop_path"
                or target in (_torch("chunk"), _torch("split"), _torch("unbind"))
            )  # fmt: skip
        return True

    def norm_act(self, node: Any, m: Any) -> None:
        """timm's ``BatchNormAct2d`` and the like: the norm, labelled by the module (its
        weights), then its activation (``m.act``, a module the table has, or none)."""
        import torch

        op, attrs = _NORM_ACT[type(m).__name__](m)
        act = getattr(m, "act", None)
        steps: list[tuple[str, dict]] = []
        if act is not None and not isinstance(act, torch.nn.Identity):
            rule = _module_rule(self.leaves, act)
            if rule is None:
                raise UnmappedError(f"its activation {type(act).__name__}")
            steps.append(rule(act))
        x = self.value(node.args[0], node)
        norm_id = f"{node.name}/norm" if steps else node.name
        self.calls.append(Call(norm_id, op, attrs, [x], node.target, self.scope_of(node),
                               self.where(node)))  # fmt: skip
        for act_op, act_attrs in steps:
            self.calls.append(Call(node.name, act_op, act_attrs, [norm_id], None,
                                   self.scope_of(node), self.where(node)))  # fmt: skip
        self.alias[node.name] = node.name

    def attention(self, node: Any, m: Any) -> None:
        """``mha(x, x, x, need_weights=False)``: self-attention, batch first; its result is
        a pair whose first element is the output."""
        q, k, v = (node.args + (None,) * 3)[:3]
        if not (q is k is v) or not m.batch_first or node.kwargs.get("need_weights", True):
            raise UnmappedError("only batch-first self-attention with need_weights=False")
        if m.in_proj_weight is None or m.bias_k is not None or not m._qkv_same_embed_dim:
            raise UnmappedError("only the packed in_proj layout without bias_k/bias_v")
        x = self.value(q, node)
        attrs = {"heads": m.num_heads, "dropout": m.dropout}
        self.calls.append(
            Call(
                node.name,
                "attention",
                attrs,
                [x],
                node.target,
                self.scope_of(node),
                self.where(node),
            )
        )
        self.consts[node.name] = ("pieces", [node.name, None])

    def scalar(self, node: Any) -> None:
        """A node whose value is not one tensor: sizes (``x.shape[0]``), tuples of tensors
        (``x.chunk(2)``) and what picks from them."""
        target, args = node.target, node.args
        if getattr(target, "__name__", "") == "_assert_is_none":  # fx's check of an argument
            return  # left at its default, None (the concrete trace's)
        if node.op == "call_function" and target is getattr and args[1] == "shape":
            self.consts[node.name] = ("shape", self.shape(args[0]))
            return
        if node.op == "call_function" and target is getattr and args[1] in ("dtype", "device"):
            meta = args[0].meta.get("tensor_meta")  # what `x.to(...)` reads: float32 here
            self.consts[node.name] = getattr(meta, args[1], None)
            return
        if node.op == "call_method" and target == "size":
            shape = self.shape(args[0])
            self.consts[node.name] = shape[args[1]] if len(args) > 1 else ("shape", shape)
            return
        if node.op == "call_function" and target is operator.getitem:
            base = self.consts.get(args[0].name) if hasattr(args[0], "name") else None
            if isinstance(base, tuple) and base and base[0] == "shape":
                self.consts[node.name] = base[1][args[1]]
                return
            if isinstance(base, tuple) and base and base[0] == "pieces":
                self.alias[node.name] = base[1][args[1]]
                return
        if target in ("chunk", "split", _torch("chunk"), _torch("split")):
            self.split(node)
            return
        if target in ("unbind", _torch("unbind")):
            _unbind(self, node)
            return
        if node.op == "call_method" and target == "dim":
            self.consts[node.name] = len(self.shape(args[0]))
            return
        if node.op == "call_function" and target in _STATIC:
            values = [self.const(a) for a in args]
            if target is _torch("_assert"):  # a shape check of the source: true when traced
                if not values[0]:
                    raise UnmappedError("an assertion that fails on the example input")
                return
            self.consts[node.name] = target(*values)
            return
        raise UnmappedError("a value that is not a tensor")

    def tensor_attr(self, node: Any) -> None:
        t = operator.attrgetter(node.target)(self.gm)
        shape = tuple(t.shape)
        per_sample = shape[1:] if len(shape) > 1 and shape[0] == 1 else shape
        stored = None if per_sample != shape else shape
        is_param = any(t is p for p in self.module.parameters())
        attrs = {"shape": per_sample, **({"stored": stored} if stored else {})}
        if stored:  # no leading 1: the tensor has no batch axis
            self.layouts[node.name] = UNBATCHED
        if not is_param:
            if t.dtype == __import__("torch").int64:
                values = tuple(int(v) for v in t.flatten().tolist())
                if len(values) > _CONSTANT_LIMIT and index_text(values) is None:
                    raise UnmappedError(
                        f"an index buffer of {len(values):,} elements (only "
                        "relative_position_index(window) and absolute_offset_index"
                        "(resolution, stride) are written without their elements)"
                    )
                attrs.update(values=values, dtype="int64")
            elif not t.is_floating_point():
                raise UnmappedError(f"a {t.dtype} buffer")
            if node.target not in self.state_keys:  # not saved: a constant, written out
                attrs.update(persistent=False, **_constant(t, attrs))
        self.emit(node, "parameter" if is_param else "buffer", attrs, [], node.target)

    def split(self, node: Any) -> None:
        """``x.chunk(n, dim)``, ``x.split(size or sizes, dim)``: one ``slice`` per piece."""
        args = [*node.args, None, None, None]
        x, how = args[0], self.const(args[1])
        dim = self.const(args[2] if args[2] is not None else node.kwargs.get("dim", 0))
        axis, size = self.axis(x, dim), self.shape(x)[dim]
        name = node.target if isinstance(node.target, str) else node.target.__name__
        if name == "chunk":
            step = -(-size // how)
            sizes = [min(step, size - k) for k in range(0, size, step)]
        elif isinstance(how, tuple | list):
            sizes = list(how)
        else:
            sizes = [min(how, size - k) for k in range(0, size, how)]
        ids, start = [], 0
        for k, n in enumerate(sizes):
            ids.append(f"{node.name}_{k}")
            attrs = {"axis": axis, "start": start, "end": start + n}
            self.calls.append(Call(ids[-1], "slice", attrs, [self.value(x, node)], None,
                                   self.scope_of(node), self.where(node)))  # fmt: skip
            start += n
        self.consts[node.name] = ("pieces", ids, self.layout(x))


def _constant(t: Any, attrs: dict) -> dict:
    """A constant tensor as buffer attributes: an init where all its elements are one
    number, else its elements (at most ``_CONSTANT_LIMIT``)."""
    if "values" in attrs:
        return {}
    if t.numel() and bool((t == t.flatten()[0]).all()):
        value = float(t.flatten()[0])
        return {"init": "zeros"} if value == 0 else {"init": "constant", "value": value}
    if t.numel() > _CONSTANT_LIMIT:
        raise UnmappedError(f"a constant of {t.numel():,} elements")
    return {"values": tuple(float(v) for v in t.flatten().tolist())}


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else ""


def _wrapped(module: Any) -> list[Callable]:
    """Functions the trace keeps as one call: ``drop_path`` of the model's own module (a
    resdsl-generated module's helper, timm's), which is the op of that name."""
    import sys

    out = []
    for cls in type(module).__mro__:
        fn = getattr(sys.modules.get(cls.__module__), "drop_path", None)
        if callable(fn) and fn not in out:
            out.append(fn)
    return out


def _torch(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _flatten(value: Any) -> list:
    """The tensors of an output: nested tuples, lists, and named tuples (``GoogLeNetOutputs``,
    which the trace records as a call of the tuple class)."""
    if isinstance(value, tuple | list):
        return [v for item in value for v in _flatten(item)]
    if getattr(value, "op", None) == "call_function" and _is_tuple_class(value.target):
        return _flatten(tuple(value.args) + tuple(value.kwargs.values()))
    return [value]


def _is_tuple_class(target: Any) -> bool:
    return isinstance(target, type) and issubclass(target, tuple)


def _module_path(stack: dict) -> str:
    if not stack:
        return ""
    key, value = list(stack.items())[-1]
    return value[0] if isinstance(value, tuple) else key


_STATIC_ATTRS = ("shape", "dtype", "device", "ndim")


def _ConstantProp(gm: Any, converter: _Converter) -> Any:  # noqa: N802 - a class, built late
    """fx's ``ShapeProp`` that also keeps the value of each constant tensor (see
    ``_Converter.values``): one computed from no input, parameter or saved buffer (sizes
    read from the input are fixed by the trace)."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    params = {name for name, _ in converter.module.named_parameters()}
    dynamic: set[str] = set()

    class Prop(ShapeProp):
        def run_node(self, n: Any) -> Any:
            result = super().run_node(n)
            if n.op in ("placeholder", "call_module", "output"):
                dynamic.add(n.name)
            elif n.op == "get_attr":
                if n.target in converter.state_keys or n.target in params:
                    dynamic.add(n.name)
            elif _reads_shape(n) or _fresh(n):
                pass
            elif any(a.name in dynamic for a in n.all_input_nodes):
                dynamic.add(n.name)
            if n.name not in dynamic and (
                isinstance(result, torch.Tensor)
                or (isinstance(result, tuple | list) and bool(result)
                    and all(isinstance(t, torch.Tensor) for t in result))
            ):  # fmt: skip
                converter.values[n.name] = result
            return result

    return Prop(gm)


def _reads_shape(node: Any) -> bool:
    """``x.shape``, ``x.dtype``, ``x.size()``, ``x.dim()``: what the trace fixes."""
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in _STATIC_ATTRS
    return node.op == "call_method" and node.target in ("size", "dim")


_FRESH_METHODS = ("new_zeros", "new_ones", "new_full")


def _fresh(node: Any) -> bool:
    """``x.new_zeros(size)`` and the like: a new tensor that reads only ``x``'s dtype."""
    return node.op == "call_method" and node.target in _FRESH_METHODS


def _reads_raw(node: Any, arg: Any) -> bool:
    """Whether ``node``'s converter reads the constant ``arg`` as a value, not as calls: the
    weight of a functional convolution; a size read from it."""
    if _reads_shape(node):
        return True
    if node.op == "call_function" and node.target is operator.getitem and node.args[0] is not arg:
        return True  # an index: see _getitem
    if node.op != "call_function" or getattr(node.target, "__name__", "") != "conv2d":
        return False
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    return weight is arg


# --- functions and methods -----------------------------------------------------------------------


def _binary(op: str) -> Callable[[_Converter, Any], None]:
    def convert(c: _Converter, node: Any) -> None:
        a, b = node.args[0], node.args[1]
        tensors = [hasattr(v, "name") and v.name in c.alias for v in (a, b)]
        if all(tensors):
            inputs = _broadcast(c, node, [a, b])
            c.emit(node, op, {}, inputs)
            return
        number = c.const(b if tensors[0] else a)
        x = c.value(a if tensors[0] else b, node)
        if not isinstance(number, int | float):
            raise UnmappedError("an operand that is neither a tensor nor a number")
        if op == "add":
            attrs = {"shift": float(number)}
        elif op == "mul":
            attrs = {"scale": float(number)}
        elif op == "sub":
            attrs = (
                {"shift": -float(number)} if tensors[0] else {"scale": -1.0, "shift": float(number)}
            )
        elif op == "div" and tensors[0]:
            attrs = {"scale": 1.0 / float(number)}
        else:
            raise UnmappedError("a number divided by a tensor")
        c.emit(node, "scale_shift", attrs, [x])

    convert.broadcasts = True  # type: ignore[attr-defined]
    return convert


def _broadcast(c: _Converter, node: Any, operands: list[Any]) -> list[str]:
    """The ids of a broadcasting op's operands, and its layout. Torch aligns shapes on the
    last axis, as the op table aligns per-sample shapes; an operand without a batch axis
    whose first axis meets the batch must be 1 there (a reshape drops it), one with a batch
    axis must have it where the result has its own, or be 1 there (a broadcast parameter)."""
    out = c.shape(node)
    layouts = {
        c.layout(t) for t in operands
        if c.layout(t) != UNBATCHED and c.shape(t)[:1] == out[:1] and len(c.shape(t)) == len(out)
    }  # fmt: skip
    if len(layouts) > 1:
        raise UnmappedError("operands whose first axes hold the batch differently")
    layout = layouts.pop() if layouts else c.layout(node)
    c.set_layout(node, layout)
    ids = []
    for t in operands:
        shape, own = c.shape(t), c.layout(t)
        ids.append(c.value(t, node))
        if own == UNBATCHED and layout != UNBATCHED and len(shape) == len(out):
            if shape[0] != 1:
                raise UnmappedError("a tensor without a batch axis broadcast over the batch")
            ids[-1] = f"{node.name}/{t.name}"
            c.calls.append(Call(ids[-1], "reshape", {"shape": shape[1:]}, [c.value(t, node)],
                                None, c.scope_of(node), c.where(node)))  # fmt: skip
        elif own != UNBATCHED and shape[0] != 1 and (shape[0], len(shape)) != (out[0], len(out)):
            raise UnmappedError("a broadcast that meets the batch axis with another axis")
    return ids


def _unary(op: str, **attrs: Any) -> Callable[[_Converter, Any], None]:
    def convert(c: _Converter, node: Any) -> None:
        c.emit(node, op, dict(attrs), [c.value(node.args[0], node)])

    return convert


def _alias(c: _Converter, node: Any) -> None:
    c.alias[node.name] = c.value(node.args[0], node)


def _flatten_fn(c: _Converter, node: Any) -> None:
    x = node.args[0]
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    rank = len(c.shape(x))
    if end % rank != rank - 1:
        _reshape_to(c, node, x, c.shape(node))
        return
    c.emit(node, "flatten", {"start": c.axis(x, start)}, [c.value(x, node)])


def _reshape(c: _Converter, node: Any) -> None:
    x, out = node.args[0], c.shape(node)
    source = next((k for k in c.calls if k.id == c.alias.get(x.name)), None)
    if source is not None and source.op in ("parameter", "buffer") and out[:1] == (1,):
        # a parameter stored without its batch axis, given one: the parameter's own shape
        stored = source.attrs.get("stored") or source.attrs["shape"]
        source.attrs["shape"] = out[1:]
        source.attrs["stored"] = stored if tuple(stored) != (1, *out[1:]) else None
        source.attrs = {k: v for k, v in source.attrs.items() if v is not None}
        c.alias[node.name] = source.id
        c.shapes[source.id] = out[1:]
        c.set_layout(node, BATCHED)
        return
    if source is not None and source.attrs.get("dtype") == "int64" and len(x.users) == 1:
        # an index buffer read in another shape (`index.view(-1)`): the buffer has that shape
        source.attrs["stored"] = source.attrs.get("stored") or source.attrs["shape"]
        source.attrs["shape"] = out
        c.alias[node.name] = source.id
        c.shapes[source.id] = out
        return
    _reshape_to(c, node, x, out)


def _reshape_to(c: _Converter, node: Any, x: Any, out: tuple[int, ...]) -> None:
    """``x`` reshaped to the torch shape ``out``. A leading 1 given to a tensor without a
    batch axis becomes its (broadcast) batch axis; a first axis that is a multiple of the
    batch keeps each sample's elements together (row-major), so it holds the batch times
    the quotient: ``(B * windows, ...)`` is a sample ``(windows, ...)``."""
    layout, first = c.layout(x), c.shape(x)[0]
    if layout == UNBATCHED or (layout == BATCHED and first == 1 != c.batch):
        # no batch axis, or a broadcast one (a parameter's leading 1)
        layout = BATCHED if len(out) > 1 and out[0] == 1 else UNBATCHED
    elif out and out[0] == first:
        pass
    elif out and c.batch and out[0] % c.batch == 0:
        k = out[0] // c.batch
        layout = BATCHED if k == 1 else ("merged", k)
    else:
        raise UnmappedError("a reshape that moves the batch")
    c.set_layout(node, layout)
    if c.sample_shape(node) == c.sample_shape(x):
        c.alias[node.name] = c.value(x, node)
        return
    c.emit(node, "reshape", {"shape": c.sample_shape(node)}, [c.value(x, node)])


def _reshape_as(c: _Converter, node: Any) -> None:
    """``x.reshape_as(y)``: ``x`` reshaped to ``y``'s shape (the trace's); ``y`` is read
    for its shape only, so its layout may differ (LeViT's tokens, merged into the batch
    for a batch norm, reshaped back as the input was)."""
    c.set_layout(node, c.layout(node.args[0]))
    _reshape_to(c, node, node.args[0], c.shape(node))


_reshape_as.broadcasts = True  # type: ignore[attr-defined] # reads only y's shape


def _permute(c: _Converter, node: Any) -> None:
    dims = node.args[1:] if len(node.args) > 2 or isinstance(node.args[1], int) else node.args[1]
    x = node.args[0]
    rank = len(c.shape(x))
    dims = [d % rank for d in c.const(tuple(dims))]
    if dims[0] != 0 and len(dims) > 1 and dims[1] == 0 and c.layout(x) != UNBATCHED:
        # attention's `qkv.permute(2, 0, 3, 1, 4)`: the batch moves to axis 1 until the
        # first axis is indexed away (`q, k, v = qkv.unbind(0)`); kept pending until then
        c.consts[node.name] = ("permuted", c.value(x, node), tuple(dims), c.layout(x))
        return
    c.emit(node, "permute", {"axes": c.axes(x, dims)}, [c.value(x, node)])


def _permuted_piece(c: _Converter, node: Any, pending: tuple, k: int, out: str) -> str:
    """``x.permute(dims)[k]`` as ``select(x, dims[0], k)`` then the rest of the
    permutation (the batch axis first again); returns the id of the piece."""
    _, source, dims, layout = pending
    first = dims[0]
    rest = [d if d < first else d - 1 for d in dims[1:]]
    scope, where = c.scope_of(node), c.where(node)
    picked = f"{out}/select"
    axis = first - 1 if layout == BATCHED else first
    c.calls.append(Call(picked, "select", {"axis": axis, "index": k}, [source], None,
                        scope, where))  # fmt: skip
    if rest == sorted(rest):
        return picked
    c.calls.append(Call(out, "permute", {"axes": c.axes(None, rest, layout)}, [picked], None,
                        scope, where))  # fmt: skip
    return out


def _unbind(c: _Converter, node: Any) -> None:
    a = _bound(node, ["input", "dim"], {"dim": 0})
    x, dim = a["input"], c.const(a["dim"])
    pending = c.consts.get(x.name) if hasattr(x, "name") else None
    if isinstance(pending, tuple) and pending and pending[0] == "permuted" and dim == 0:
        count = c.shape(x)[0]  # the permuted tensor's first axis: what is unbound
        ids = [_permuted_piece(c, node, pending, k, f"{node.name}_{k}") for k in range(count)]
        c.consts[node.name] = ("pieces", ids, pending[3])
        return
    rank = len(c.shape(x))
    axis = c.axis(x, dim)
    count = c.shape(x)[dim % rank]
    ids = []
    for k in range(count):
        ids.append(f"{node.name}_{k}")
        c.calls.append(Call(ids[-1], "select", {"axis": axis, "index": k}, [c.value(x, node)],
                            None, c.scope_of(node), c.where(node)))  # fmt: skip
    c.consts[node.name] = ("pieces", ids, c.layout(x))


def _transpose(c: _Converter, node: Any) -> None:
    rank = len(c.shape(node.args[0]))
    a, b = (c.const(d) % rank for d in node.args[1:3])
    dims = list(range(rank))
    dims[a], dims[b] = dims[b], dims[a]
    c.emit(node, "permute", {"axes": c.axes(node.args[0], dims)}, [c.value(node.args[0], node)])


def _cat(c: _Converter, node: Any) -> None:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    c.emit(node, "concat", {"axis": c.axis(tensors[0], dim)}, [c.value(t, node) for t in tensors])


def _stack(c: _Converter, node: Any) -> None:
    """``torch.stack(tensors, dim)``: each given a unit axis there, then concatenated."""
    a = _bound(node, ["tensors", "dim"], {"dim": 0})
    dim = c.const(a["dim"])
    if (
        dim == 0
        and c.layout(node) == BATCHED
        and node.users
        and all(_is_sum_over_first(u) for u in node.users)
    ):  # stacked in front of the batch to be summed over at once (EfficientViM's heads)
        c.consts[node.name] = ("stacked", [c.value(t, node) for t in a["tensors"]])
        return
    axis = c.axis(node, dim)
    scope, where, ids = c.scope_of(node), c.where(node), []
    for k, t in enumerate(a["tensors"]):
        shape = list(c.sample_shape(t))
        shape.insert(axis, 1)
        ids.append(f"{node.name}/{k}")
        c.calls.append(Call(ids[-1], "reshape", {"shape": tuple(shape)}, [c.value(t, node)],
                            None, scope, where))  # fmt: skip
    c.emit(node, "concat", {"axis": axis}, ids)


def _is_sum_over_first(node: Any) -> bool:
    """Whether ``node`` is ``x.sum(0)`` / ``torch.sum(x, 0)``, the axis not kept."""
    if node.target not in ("sum", _torch("sum")):
        return False
    a = _bound(node, ["input", "dim", "keepdim"], {"dim": None, "keepdim": False})
    return a["dim"] in (0, (0,), [0]) and not a["keepdim"]


def _sum(c: _Converter, node: Any) -> None:
    """``x.sum(dims, keepdim)``; over the front of a ``torch.stack(..., 0)``: the sum of the
    stacked tensors."""
    a = _bound(node, ["input", "dim", "keepdim"], {"dim": None, "keepdim": False})
    x = a["input"]
    stacked = c.consts.get(x.name) if hasattr(x, "name") else None
    if isinstance(stacked, tuple) and stacked and stacked[0] == "stacked":
        ids, scope, where = stacked[1], c.scope_of(node), c.where(node)
        total = ids[0]
        for k, other in enumerate(ids[1:-1]):
            c.calls.append(Call(f"{node.name}/{k}", "add", {}, [total, other], None, scope, where))
            total = f"{node.name}/{k}"
        if len(ids) == 1:
            c.alias[node.name] = total
            return
        c.emit(node, "add", {}, [total, ids[-1]])
        return
    dims = c.const(a["dim"])
    if dims is None:
        raise UnmappedError("a sum over every axis")
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    attrs = {"axis": tuple(c.axis(x, d) for d in dims), "keepdim": bool(c.const(a["keepdim"]))}
    c.emit(node, "sum", attrs, [c.value(x, node)])


def _mean(c: _Converter, node: Any) -> None:
    x = node.args[0]
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    c.emit(node, "mean", {"axis": tuple(c.axis(x, d) for d in dims), "keepdim": keep},
           [c.value(x, node)])  # fmt: skip


def _adaptive_avg(c: _Converter, node: Any) -> None:
    size = node.args[1] if len(node.args) > 1 else node.kwargs["output_size"]
    c.emit(
        node,
        "adaptive_avgpool2d",
        {"output_size": _pair(c.const(size))},
        [c.value(node.args[0], node)],
    )


def _softmax(c: _Converter, node: Any) -> None:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    c.emit(node, "softmax", {"axis": c.axis(node.args[0], dim)}, [c.value(node.args[0], node)])


def _dropout(c: _Converter, node: Any) -> None:
    p = node.args[1] if len(node.args) > 1 else node.kwargs.get("p", 0.5)
    c.emit(node, "dropout", {"p": float(p)}, [c.value(node.args[0], node)])


def _getitem(c: _Converter, node: Any) -> None:
    """``x[:, 0]`` (select), ``x[:, a:b]`` (slice), ``x[..., ::2]`` on tensors,
    ``table[index]`` (take, an int64 index) and a piece of a split."""
    import torch.fx

    x, index = node.args
    pieces = c.consts.get(x.name) if hasattr(x, "name") else None
    if isinstance(pieces, tuple) and pieces and pieces[0] == "pieces":
        c.alias[node.name] = pieces[1][index]
        c.set_layout(node, pieces[2] if len(pieces) > 2 else BATCHED)
        return
    if isinstance(pieces, tuple) and pieces and pieces[0] == "permuted" and type(index) is int:
        c.alias[node.name] = _permuted_piece(c, node, pieces, index, node.name)
        c.set_layout(node, pieces[3])
        return
    c.set_layout(node, c.layout(x))
    shape = c.shape(x)
    index = list(index) if isinstance(index, tuple) else [index]
    if index[:1] == [None] and all(i == slice(None) for i in index[1:]):
        _unsqueeze(c, node)  # t[None]: a leading unit axis
        return
    index = [_index_item(c, i) for i in index]
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index[at : at + 1] = [slice(None)] * (len(shape) - len(index) + 1)
    if None not in index:  # `x[:, :H]` where H is the whole axis (Swin's unpadding): no step
        index = [slice(None) if _whole(i, n) else i for i, n in zip(index, shape, strict=False)]
    if c.layout(x) != UNBATCHED:
        if not index or index[0] != slice(None):
            raise UnmappedError("indexing along the batch axis")
        index[0] = None  # the batch axis: no per-sample axis
    ids, offset = c.value(x, node), -1 if c.layout(x) == BATCHED else 0
    steps = [(k, i) for k, i in enumerate(index) if i is not None and i != slice(None)]
    for n, (k, item) in enumerate(steps):
        at = k + offset - sum(1 for _, i in steps[:n] if isinstance(i, int))
        step_id = node.name if n == len(steps) - 1 else f"{node.name}_{n}"
        scope, where = c.scope_of(node), c.where(node)
        if isinstance(item, torch.fx.Node) and item.name in c.deferred:
            if _bordered_take(c, node, item, ids, at, step_id):
                ids = step_id
                continue
            c.materialise(item)
        if isinstance(item, torch.fx.Node):
            rank, last = len(c.shape(item)), n == len(steps) - 1
            if c.layout(item) != UNBATCHED or not (rank == 1 or (rank > 1 and last)):
                raise UnmappedError("indexing with a tensor other than a rank-1 index")
            if rank > 1:  # LeViT's `biases[:, idxs]`: take along the flat index, reshaped
                held = _constant_value(c, item)
                if held is None:
                    raise UnmappedError("indexing with a computed tensor other than rank-1")
                values = tuple(int(v) for v in held.flatten().tolist())
                size = len(values)
                attrs = {"shape": (size,), "stored": (size,), "persistent": False,
                         "values": values, "dtype": "int64"}  # fmt: skip
                if size > _CONSTANT_LIMIT and index_text(values) is None:
                    raise UnmappedError(f"an index of {size:,} elements with no form")
                c.calls.append(Call(f"{step_id}/flat", "buffer", attrs, [], None, scope, where))
                c.calls.append(Call(f"{step_id}/take", "take", {"axis": at},
                                    [ids, f"{step_id}/flat"], None, scope, where))  # fmt: skip
                call = Call(step_id, "reshape", {"shape": c.sample_shape(node)},
                            [f"{step_id}/take"], None, scope, where)  # fmt: skip
            else:
                call = Call(step_id, "take", {"axis": at}, [ids, c.value(item, node)], None,
                            scope, where)  # fmt: skip
        elif isinstance(item, int):
            call = Call(step_id, "select", {"axis": at, "index": item}, [ids], None, scope, where)
        elif isinstance(item, slice) and all(
            type(v) is int or v is None for v in (item.start, item.stop, item.step)
        ):
            attrs = {"axis": at, "start": item.start or 0, "step": item.step or 1}
            if item.stop is not None and item.stop < shape[k]:
                attrs["end"] = item.stop
            call = Call(step_id, "slice", attrs, [ids], None, scope, where)
        else:
            raise UnmappedError(f"indexing with {item!r}")
        c.calls.append(call)
        ids = step_id
    if not steps:
        c.alias[node.name] = ids
        return
    c.shapes[node.name] = c.sample_shape(node)
    c.alias[node.name] = ids


def _constant_value(c: _Converter, node: Any) -> Any:
    """The int64 tensor an index node holds: a buffer, or a constant computed in
    ``forward``; None for anything else."""
    import torch

    if node.op == "get_attr":
        value = operator.attrgetter(node.target)(c.gm)
    else:
        value = c.values.get(node.name)
    ok = isinstance(value, torch.Tensor) and value.dtype == torch.int64
    return value if ok else None


def _whole(item: Any, size: int) -> bool:
    """Whether ``item`` is a slice of every element of an axis of ``size``."""
    ends = (item.start, item.stop, item.step) if isinstance(item, slice) else (None,)
    return (
        isinstance(item, slice) and all(type(v) is int or v is None for v in ends)
        and item.indices(size) == (0, size, 1)
    )  # fmt: skip


def _bordered_take(c: _Converter, node: Any, item: Any, data: str, axis: int, out: str) -> bool:
    """``table[index]`` with BEiT's index (relative offsets, and a row and column for the
    class token): the table read through each part, the parts concatenated."""
    import torch

    from .constants import bordered_take

    parts = bordered_take(c.values[item.name])
    if parts is None or c.layout(item) not in (UNBATCHED, BATCHED) or len(c.shape(item)) != 1:
        return False
    top, column, n = parts
    from ..elaborate.functions import _relative_position_index

    inner = torch.tensor(_relative_position_index(*_window_of(n)), dtype=torch.int64)
    shape = list(c.sample_shape(node.args[0]))
    before, after = shape[:axis], shape[axis + 1 :]
    scope, where = c.scope_of(node), c.where(node)

    def read(tag: str, index: Any, rows: int, cols: int) -> str:
        i = c.shared_constant(f"{out}/{tag}_index", index, scope, where)
        c.calls.append(Call(f"{out}/{tag}", "take", {"axis": axis}, [data, i], None, scope,
                            where))  # fmt: skip
        c.calls.append(Call(f"{out}/{tag}_2d", "reshape", {"shape": (*before, rows, cols, *after)},
                            [f"{out}/{tag}"], None, scope, where))  # fmt: skip
        return f"{out}/{tag}_2d"

    first = read("top", torch.tensor(top), 1, n + 1)
    left = read("left", torch.tensor(column), n, 1)
    body = read("inner", inner, n, n)
    lower = f"{out}/lower"
    c.calls.append(Call(lower, "concat", {"axis": len(before) + 1}, [left, body], None, scope,
                        where))  # fmt: skip
    c.calls.append(Call(f"{out}/whole", "concat", {"axis": len(before)}, [first, lower], None,
                        scope, where))  # fmt: skip
    c.calls.append(Call(out, "reshape", {"shape": (*before, (n + 1) ** 2, *after)},
                        [f"{out}/whole"], None, scope, where))  # fmt: skip
    return True


def _window_of(n: int) -> tuple[int, int]:
    """The window whose relative_position_index has n x n entries: the squarest."""

    h = max(h for h in range(1, math.isqrt(n) + 1) if n % h == 0)
    return h, n // h


def _index_item(c: _Converter, item: Any) -> Any:
    """An index with the sizes read from the trace in it as numbers (``x[:, :n]`` with
    ``n = x.shape[1] - 1``); a tensor stays a node (``table[index]``)."""
    import torch.fx

    if isinstance(item, slice):
        return slice(*(_index_item(c, v) for v in (item.start, item.stop, item.step)))
    if isinstance(item, torch.fx.Node) and item.name not in c.alias and item.name not in c.deferred:
        return c.const(item)
    return item


def _bound(node: Any, names: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments by name: positional ones in ``names`` order, then keywords."""
    out = dict(defaults)
    out.update(zip(names, node.args, strict=False))
    out.update(node.kwargs)
    return out


def _window(c: _Converter, a: dict[str, Any]) -> dict[str, Any]:
    """A functional pooling's kernel, stride (the kernel when left out), padding and
    ceil_mode, as the op's attributes."""
    kernel = _pair(c.const(a["kernel_size"]))
    stride = kernel if a["stride"] in (None, []) else _pair(c.const(a["stride"]))
    padding = _pair(c.const(a["padding"]))
    return {
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "ceil_mode": bool(a["ceil_mode"]),
    }


def _max_pool(c: _Converter, node: Any) -> None:
    a = _bound(node, ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode"],
               {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False})  # fmt: skip
    if a.get("return_indices"):
        raise UnmappedError("max pooling that returns indices")
    attrs = {**_window(c, a), "dilation": _pair(c.const(a["dilation"]))}
    c.emit(node, "maxpool2d", attrs, [c.value(a["input"], node)])


def _avg_pool(c: _Converter, node: Any) -> None:
    a = _bound(node, ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                      "divisor_override"], {"stride": None, "padding": 0, "ceil_mode": False,
                      "count_include_pad": True, "divisor_override": None})  # fmt: skip
    if a["divisor_override"] is not None:
        raise UnmappedError("average pooling with divisor_override")
    attrs = {**_window(c, a), "count_include_pad": bool(a["count_include_pad"])}
    c.emit(node, "avgpool2d", attrs, [c.value(a["input"], node)])


def _pad(c: _Converter, node: Any) -> None:
    a = _bound(node, ["input", "pad", "mode", "value"], {"mode": "constant", "value": None})
    pads = tuple(c.const(a["pad"]))
    free = len(c.shape(a["input"])) - (c.layout(a["input"]) != UNBATCHED)
    if len(pads) > 2 * free:
        raise UnmappedError("padding of the batch axis")
    if a["mode"] in ("reflect", "replicate"):
        _pad_by_slices(c, node, a["input"], pads, a["mode"])
        return
    if a["mode"] != "constant":
        raise UnmappedError(f"padding in mode {a['mode']!r}")
    if not any(pads):  # Swin's padding to a multiple of the window, none here
        _alias(c, node)
        return
    c.emit(
        node, "pad", {"pads": pads, "value": float(a["value"] or 0.0)}, [c.value(a["input"], node)]
    )


def _pad_by_slices(c: _Converter, node: Any, x: Any, pads: tuple, mode: str) -> None:
    """``F.pad(x, pads, mode="reflect" or "replicate")``: each padded axis as the input
    with one-element slices of it concatenated on each side (TResNet's blur pooling)."""
    shape, scope, where = list(c.sample_shape(x)), c.scope_of(node), c.where(node)
    current = c.value(x, node)
    for k in range(len(pads) // 2):
        before, after = pads[2 * k], pads[2 * k + 1]
        if not (before or after):
            continue
        axis, n = len(shape) - 1 - k, shape[len(shape) - 1 - k]
        if (mode == "reflect" and max(before, after) >= n) or min(before, after) < 0:
            raise UnmappedError(f"{mode} padding of {max(before, after)} on an axis of {n}")
        if mode == "reflect":
            picks = [before - j for j in range(before)], [n - 2 - j for j in range(after)]
        else:
            picks = [0] * before, [n - 1] * after
        pieces = []
        for i in [*picks[0], None, *picks[1]]:
            if i is None:
                pieces.append(current)
                continue
            pieces.append(f"{node.name}/{k}/{len(pieces)}")
            c.calls.append(Call(pieces[-1], "slice", {"axis": axis, "start": i, "end": i + 1},
                                [current], None, scope, where))  # fmt: skip
        last = k == len(pads) // 2 - 1 or not any(pads[2 * k + 2 :])
        out = node.name if last else f"{node.name}/{k}"
        if last:
            c.emit(node, "concat", {"axis": axis}, pieces)
        else:
            c.calls.append(Call(out, "concat", {"axis": axis}, pieces, None, scope, where))
        current = out
        shape[axis] += before + after


def _conv_fn(c: _Converter, node: Any) -> None:
    """``F.conv2d(x, weight, ...)`` with a constant weight, one filter for every channel
    (depthwise: TResNet's blur pooling): the sum of the strided slices of ``x``, each
    times its weight."""
    a = _bound(node, ["input", "weight", "bias", "stride", "padding", "dilation", "groups"],
               {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})  # fmt: skip
    w = a["weight"]
    value = c.values.get(getattr(w, "name", None))
    x = a["input"]
    if value is None or a["bias"] is not None or value.dim() != 4:
        raise UnmappedError("a functional convolution whose weight is not a constant")
    channels = c.sample_shape(x)[0] if len(c.sample_shape(x)) == 3 else None
    groups, dilation = c.const(a["groups"]), _pair(c.const(a["dilation"]))
    if (
        c.layout(x) != BATCHED or groups != channels or value.shape[:2] != (channels, 1)
        or dilation != (1, 1) or not bool((value == value[:1]).all())
    ):  # fmt: skip
        raise UnmappedError("a functional convolution other than one filter for every channel")
    kernel = value[0, 0].tolist()
    stride, padding = _pair(c.const(a["stride"])), c.const(a["padding"])
    if isinstance(padding, str):
        raise UnmappedError(f"a functional convolution with padding={padding!r}")
    padding = _pair(padding)
    scope, where = c.scope_of(node), c.where(node)
    source = c.value(x, node)
    if any(padding):
        pads = (padding[1], padding[1], padding[0], padding[0])
        c.calls.append(Call(f"{node.name}/pad", "pad", {"pads": pads}, [source], None, scope,
                            where))  # fmt: skip
        source = f"{node.name}/pad"
    out = c.shape(node)[-2:]
    terms = []
    for i, row in enumerate(kernel):
        for j, weight in enumerate(row):
            if weight == 0:
                continue
            base, piece = f"{node.name}/{i}_{j}", source
            for axis, start, size, step in ((1, i, out[0], stride[0]), (2, j, out[1], stride[1])):
                attrs = {"axis": axis, "start": start, "end": start + (size - 1) * step + 1,
                         "step": step}  # fmt: skip
                c.calls.append(Call(f"{base}/{axis}", "slice", attrs, [piece], None, scope,
                                    where))  # fmt: skip
                piece = f"{base}/{axis}"
            c.calls.append(Call(base, "scale_shift", {"scale": float(weight)}, [piece], None,
                                scope, where))  # fmt: skip
            terms.append(base)
    if not terms:
        raise UnmappedError("a functional convolution with a zero filter")
    total = terms[0]
    for k, term in enumerate(terms[1:-1]):
        c.calls.append(Call(f"{node.name}/sum{k}", "add", {}, [total, term], None, scope, where))
        total = f"{node.name}/sum{k}"
    if len(terms) == 1:
        c.emit(node, "scale_shift", {"scale": 1.0}, [total])
    else:
        c.emit(node, "add", {}, [total, terms[-1]])


_conv_fn.broadcasts = True  # type: ignore[attr-defined] # its constant weight


def _repeat(c: _Converter, node: Any) -> None:
    """``x.repeat(B, 1, ...)`` of a tensor broadcast over the batch (a leading 1), or
    ``x.repeat(1, ...)``: ``x`` itself."""
    x = node.args[0]
    sizes = node.args[1:]
    if len(sizes) == 1 and isinstance(sizes[0], tuple | list):
        sizes = sizes[0]
    sizes = list(c.const(tuple(sizes)))
    shape = c.shape(x)
    if c.layout(x) != BATCHED or len(sizes) != len(shape) or any(s != 1 for s in sizes[1:]):
        raise UnmappedError("a repeat other than over the batch")
    if sizes[0] != 1 and not (shape[0] == 1 and sizes[0] == c.batch):
        raise UnmappedError("a repeat along the batch axis")
    _alias(c, node)


def _periodic(node: Any) -> bool:
    """Whether ``node`` is a sine or cosine. Of a constant, its value is written (a sine
    table has few distinct parts to broadcast; what it is computed from may be larger)."""
    return node.target in ("sin", "cos") or getattr(node.target, "__name__", "") in ("sin", "cos")


def _repeat_interleave(c: _Converter, node: Any) -> None:
    """``x.repeat_interleave(r, dim)`` with an integer ``r``: each element ``r`` times in a
    row, that is ``r`` copies side by side on a unit axis after ``dim``, merged into it."""
    a = _bound(node, ["input", "repeats", "dim"], {"dim": None})
    x, repeats, dim = a["input"], c.const(a["repeats"]), c.const(a["dim"])
    if not isinstance(repeats, int) or dim is None:
        raise UnmappedError("a repeat_interleave by a tensor of counts, or of the flat tensor")
    c.set_layout(node, c.layout(x))
    axis = c.axis(x, dim)
    shape = list(c.sample_shape(x))
    shape.insert(axis + 1, 1)
    scope, where, unit = c.scope_of(node), c.where(node), f"{node.name}/unit"
    c.calls.append(Call(unit, "reshape", {"shape": tuple(shape)}, [c.value(x, node)],
                        None, scope, where))  # fmt: skip
    copies = f"{node.name}/copies"
    c.calls.append(Call(copies, "concat", {"axis": axis + 1}, [unit] * repeats,
                        None, scope, where))  # fmt: skip
    c.emit(node, "reshape", {"shape": c.sample_shape(node)}, [copies])


def _to(c: _Converter, node: Any) -> None:
    """``x.to(dtype or device)``: ``x`` when it stays a float32 tensor."""
    import torch

    meta = node.meta.get("tensor_meta")
    if meta is None or meta.dtype != torch.float32:
        raise UnmappedError(f"a conversion to {getattr(meta, 'dtype', 'another type')}")
    _alias(c, node)


def _roll(c: _Converter, node: Any) -> None:
    a = _bound(node, ["input", "shifts", "dims"], {"dims": None})
    if a["dims"] is None:
        raise UnmappedError("a roll of the flattened tensor")
    shifts, dims = c.const(a["shifts"]), c.const(a["dims"])
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    c.emit(node, "roll", {"shifts": shifts, "axes": tuple(c.axis(a["input"], d) for d in dims)},
           [c.value(a["input"], node)])  # fmt: skip


def _clamp(c: _Converter, node: Any) -> None:
    a = _bound(node, ["input", "min", "max"], {"min": None, "max": None})
    attrs = {k: float(c.const(a[k])) for k in ("min", "max") if a[k] is not None}
    c.emit(node, "clamp", attrs, [c.value(a["input"], node)])


def _select(c: _Converter, node: Any) -> None:
    a = _bound(node, ["input", "dim", "index"], {})
    attrs = {"axis": c.axis(a["input"], c.const(a["dim"])), "index": c.const(a["index"])}
    c.emit(node, "select", attrs, [c.value(a["input"], node)])


def _einsum(c: _Converter, node: Any) -> None:
    """The matrix products attention writes with einsum: ``...id,...jd->...ij`` (q k^T)
    and ``...ij,...jd->...id`` (weights times values), the leading letters shared."""
    equation, *operands = node.args
    if len(operands) == 1 and isinstance(operands[0], tuple | list):
        operands = list(operands[0])
    text = c.const(equation).replace(" ", "")
    inputs, _, out = text.partition("->")
    terms = inputs.split(",")
    if len(terms) != 2 or len(operands) != 2:
        raise UnmappedError(f"einsum {text!r} (only two-operand matrix products)")
    a, b = terms
    batch = a[:-2]
    if not (len(a) == len(b) == len(out) and b[:-2] == batch == out[:-2] and batch):
        raise UnmappedError(f"einsum {text!r} (only batched matrix products)")
    (i, k), (j, l), (oi, oj) = a[-2:], b[-2:], out[-2:]  # noqa: E741
    x, y = (c.value(o, node) for o in operands)
    rank = len(c.sample_shape(operands[0]))
    swap = (*range(rank - 2), rank - 1, rank - 2)
    if (oi, oj) == (i, j) and k == l:  # a @ b^T
        tid = f"{node.name}/t"
        c.calls.append(
            Call(tid, "permute", {"axes": swap}, [y], None, c.scope_of(node), c.where(node))
        )
        c.emit(node, "matmul", {}, [x, tid])
    elif (oi, oj) == (i, l) and k == j:  # a @ b
        c.emit(node, "matmul", {}, [x, y])
    else:
        raise UnmappedError(f"einsum {text!r} (only a b and a b^T)")


def _sdpa(c: _Converter, node: Any) -> None:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask)``: softmax(q k^T * scale +
    mask) v, the mask a float one or none; no dropout or causality (as a model evaluates
    it)."""
    names = ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"]
    defaults = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None}
    a = _bound(node, names, defaults)
    mask = a["attn_mask"]
    if mask is not None and getattr(mask, "name", None) not in c.alias:
        mask = c.const(mask)  # an optional argument of the model's, left at None
    if c.const(a["is_causal"]):
        raise UnmappedError("causal attention")
    if mask is not None and (not hasattr(mask, "name") or not mask.meta["tensor_meta"].dtype
                             .is_floating_point):  # fmt: skip
        raise UnmappedError("attention with a boolean mask")
    q, k, v = (c.value(a[n], node) for n in ("query", "key", "value"))
    shape = c.sample_shape(a["query"])
    scale = c.const(a["scale"])
    scale = shape[-1] ** -0.5 if scale is None else float(scale)
    rank = len(shape)
    swap = (*range(rank - 2), rank - 1, rank - 2)
    scope, where = c.scope_of(node), c.where(node)
    steps = [
        (f"{node.name}/q", "scale_shift", {"scale": scale}, [q]),
        (f"{node.name}/kt", "permute", {"axes": swap}, [k]),
        (f"{node.name}/scores", "matmul", {}, [f"{node.name}/q", f"{node.name}/kt"]),
    ]
    scores = steps[-1][0]
    if mask is not None:  # a float mask is added to the scores (a relative position bias)
        bias = c.value(mask, node)
        if c.layout(mask) == UNBATCHED and len(c.shape(mask)) > len(shape):
            if c.shape(mask)[0] != 1:
                raise UnmappedError("a mask without a batch axis broadcast over the batch")
            steps.append((f"{node.name}/mask", "reshape", {"shape": c.shape(mask)[1:]}, [bias]))
            bias = steps[-1][0]
        steps.append((f"{node.name}/masked", "add", {}, [scores, bias]))
        scores = steps[-1][0]
    steps.append((f"{node.name}/weights", "softmax", {"axis": -1}, [scores]))
    for sid, op, attrs, inputs in steps:
        c.calls.append(Call(sid, op, attrs, inputs, None, scope, where))
    c.set_layout(node, c.layout(a["query"]))  # the query's (a mask's may differ)
    c.emit(node, "matmul", {}, [f"{node.name}/weights", v])


_sdpa.broadcasts = True  # type: ignore[attr-defined] # its mask


def _norm(c: _Converter, node: Any) -> None:
    """``x.norm(p=2, dim, keepdim)``: sqrt(sum(x * x)) over the axes (ConvNeXt V2's GRN)."""
    a = _bound(node, ["input", "p", "dim", "keepdim"], {"p": "fro", "dim": None, "keepdim": False})
    if c.const(a["p"]) not in (2, 2.0, "fro") or a["dim"] is None:
        raise UnmappedError("a norm other than L2 over given axes")
    x = c.value(a["input"], node)
    dims = c.const(a["dim"])
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    axes = tuple(c.axis(a["input"], d) for d in dims)
    scope, where = c.scope_of(node), c.where(node)
    c.calls.append(Call(f"{node.name}/sq", "mul", {}, [x, x], None, scope, where))
    c.calls.append(Call(f"{node.name}/sum", "sum", {"axis": axes, "keepdim": bool(a["keepdim"])},
                        [f"{node.name}/sq"], None, scope, where))  # fmt: skip
    c.emit(node, "sqrt", {}, [f"{node.name}/sum"])


def _linear_fn(c: _Converter, node: Any) -> None:
    """``F.linear(x, weight, bias)`` with tensors of the model as weights (BEiT's qkv with a
    bias concatenated in forward): x @ weight^T + bias."""
    a = _bound(node, ["input", "weight", "bias"], {"bias": None})
    w = a["weight"]
    if c.layout(w) != UNBATCHED or len(c.shape(w)) != 2:
        raise UnmappedError("a linear layer whose weight is not a matrix of the model")
    c.set_layout(node, c.layout(a["input"]))  # the weight's and bias's have no batch axis
    scope, where = c.scope_of(node), c.where(node)
    wt, product = f"{node.name}/wt", f"{node.name}/xw"
    c.calls.append(Call(wt, "permute", {"axes": (1, 0)}, [c.value(w, node)], None, scope, where))
    if a["bias"] is None:
        c.emit(node, "matmul", {}, [c.value(a["input"], node), wt])
        return
    c.calls.append(Call(product, "matmul", {}, [c.value(a["input"], node), wt], None, scope,
                        where))  # fmt: skip
    c.emit(node, "add", {}, [product, c.value(a["bias"], node)])


_linear_fn.broadcasts = True  # type: ignore[attr-defined]


def _addcmul(c: _Converter, node: Any) -> None:
    """``torch.addcmul(x, a, b, value=v)``: x + v * a * b."""
    p = _bound(node, ["input", "tensor1", "tensor2", "value"], {"value": 1})
    x, a, b = (c.value(p[k], node) for k in ("input", "tensor1", "tensor2"))
    scope, where = c.scope_of(node), c.where(node)
    c.calls.append(Call(f"{node.name}/ab", "mul", {}, [a, b], None, scope, where))
    product = f"{node.name}/ab"
    value = float(c.const(p["value"]))
    if value != 1:
        c.calls.append(Call(f"{node.name}/v", "scale_shift", {"scale": value}, [product], None,
                            scope, where))  # fmt: skip
        product = f"{node.name}/v"
    c.emit(node, "add", {}, [x, product])


def _leaky_relu(c: _Converter, node: Any) -> None:
    a = _bound(node, ["input", "negative_slope"], {"negative_slope": 0.01})
    attrs = {"negative_slope": float(c.const(a["negative_slope"]))}
    c.emit(node, "leaky_relu", attrs, [c.value(a["input"], node)])


def _hardtanh(c: _Converter, node: Any) -> None:
    a = _bound(node, ["input", "min_val", "max_val"], {"min_val": -1.0, "max_val": 1.0})
    attrs = {"min_val": float(a["min_val"]), "max_val": float(a["max_val"])}
    c.emit(node, "hardtanh", attrs, [c.value(a["input"], node)])


def _normalize(c: _Converter, node: Any) -> None:
    a = _bound(node, ["input", "p", "dim", "eps"], {"p": 2.0, "dim": 1, "eps": 1e-12})
    if a["p"] != 2:
        raise UnmappedError(f"a p={a['p']} norm")
    attrs = {"axis": c.axis(a["input"], c.const(a["dim"])), "eps": float(a["eps"])}
    c.emit(node, "normalize", attrs, [c.value(a["input"], node)])


def _layer_norm_fn(c: _Converter, node: Any) -> None:
    raise UnmappedError("functional layer_norm (a module is imported)")


def _unsqueeze(c: _Converter, node: Any) -> None:
    x, out = node.args[0], c.shape(node)
    if c.layout(x) != UNBATCHED and out[0] != c.shape(x)[0]:
        raise UnmappedError("an axis in front of the batch")
    _reshape_to(c, node, x, out)


def _broadcast_alias(c: _Converter, node: Any) -> None:
    """``y.expand_as(x)`` read only by ops that broadcast anyway (``x * y``): ``y`` itself."""
    if any(u.target not in _BROADCASTING for u in node.users):
        raise UnmappedError("an expansion read by an op that does not broadcast")
    _alias(c, node)


def _expand(c: _Converter, node: Any) -> None:
    """``t.expand(n, -1, -1)`` of a parameter broadcast over the batch: the parameter is."""
    x, out = node.args[0], c.shape(node)
    if c.layout(x) == UNBATCHED and out[1:] == c.shape(x):
        c.set_layout(node, BATCHED)  # the batch axis in front: what the op table has
    elif c.layout(x) != BATCHED or out[1:] != c.shape(x)[1:]:
        raise UnmappedError("an expand that changes a per-sample shape")
    _alias(c, node)


def _interpolate(c: _Converter, node: Any) -> None:
    """``F.interpolate(x, size or scale_factor, mode)``: linear in ``x`` and separable, so
    each resized axis is ``x`` times a constant matrix (the op's own weights: what it makes
    of each unit vector), the axis moved last for it (NaFlexViT's position tables)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    names = ["input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
             "antialias"]  # fmt: skip
    a = _bound(node, names, {"size": None, "scale_factor": None, "mode": "nearest",
                             "align_corners": None, "recompute_scale_factor": None,
                             "antialias": False})  # fmt: skip
    x, mode = a["input"], c.const(a["mode"])
    if mode not in ("nearest", "linear", "bilinear", "bicubic", "nearest-exact"):
        raise UnmappedError(f"interpolation in mode {mode!r}")
    src, out = c.shape(x), c.shape(node)
    spatial = len(src) - 2
    options = {"mode": mode}
    if mode in ("linear", "bilinear", "bicubic"):
        options["align_corners"] = c.const(a["align_corners"])
    if c.const(a["antialias"]):  # in two passes, one per axis: separable too
        options["antialias"] = True
    scale = c.const(a["scale_factor"])
    if scale is not None and c.const(a["size"]) is None:  # the source's own rounding of it
        scales = tuple(scale) if isinstance(scale, tuple | list) else (scale,) * spatial
        options["scale_factor"] = scales
        options["recompute_scale_factor"] = c.const(a["recompute_scale_factor"])
    current, scope, where = c.value(x, node), c.scope_of(node), c.where(node)
    rank = len(c.sample_shape(x))
    steps = [k for k in range(spatial) if src[2 + k] != out[2 + k]]
    if not steps:
        _alias(c, node)
        return
    for n, k in enumerate(steps):
        # the op on unit vectors along axis k, constant along the other spatial axes (kept
        # at their sizes: with antialias, an axis of size 1 changes the kernel along k)
        size_in = src[2 + k]
        shape = [size_in, 1] + [size_in if j == k else 1 for j in range(spatial)]
        sizes = [size_in, 1] + [src[2 + j] for j in range(spatial)]
        basis = torch.eye(size_in).reshape(shape).expand(sizes)  # sample j: unit vector j
        unit = {**options}
        if "scale_factor" in unit:
            unit["scale_factor"] = tuple(v if j == k else 1.0 for j, v in
                                         enumerate(unit["scale_factor"]))  # fmt: skip
        else:
            unit["size"] = tuple(out[2 + j] if j == k else src[2 + j] for j in range(spatial))
        weights = F.interpolate(basis.float().contiguous(), **unit)
        along = tuple(slice(None) if j == k else 0 for j in range(spatial))
        matrix = weights[(slice(None), 0, *along)]  # (in, out): row j is unit vector j's image
        if matrix.shape[1] != out[2 + k]:
            raise UnmappedError("an interpolation whose axes are not resized one by one")
        axis = c.axis(x, 2 + k)
        m = c.shared_constant(f"{node.name}/matrix{k}", matrix, scope, where)
        swap = list(range(rank))
        swap[axis], swap[-1] = swap[-1], swap[axis]
        if axis != rank - 1:
            c.calls.append(Call(f"{node.name}/t{k}", "permute", {"axes": tuple(swap)}, [current],
                                None, scope, where))  # fmt: skip
            current = f"{node.name}/t{k}"
        last = n == len(steps) - 1 and axis == rank - 1
        if last:
            c.emit(node, "matmul", {}, [current, m])
            return
        c.calls.append(Call(f"{node.name}/m{k}", "matmul", {}, [current, m], None, scope, where))
        current = f"{node.name}/m{k}"
        if axis != rank - 1:
            final = n == len(steps) - 1
            cid = node.name if final else f"{node.name}/b{k}"
            if final:
                c.emit(node, "permute", {"axes": tuple(swap)}, [current])
                return
            c.calls.append(Call(cid, "permute", {"axes": tuple(swap)}, [current], None, scope,
                                where))  # fmt: skip
            current = cid


_interpolate.broadcasts = True  # type: ignore[attr-defined] # its constant matrices


def _amax(c: _Converter, node: Any) -> None:
    """``x.amax(dim, keepdim)`` over one axis of k elements: that axis moved first and the
    rest flattened, (1, k, rest), max-pooled with a (k, 1) window."""
    a = _bound(node, ["input", "dim", "keepdim"], {"dim": (), "keepdim": False})
    x, dims = a["input"], c.const(a["dim"])
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(dims) != 1:
        raise UnmappedError("a maximum over other than one axis")
    axis, shape = c.axis(x, dims[0]), list(c.sample_shape(x))
    k = shape[axis]
    rest = [n for j, n in enumerate(shape) if j != axis]
    scope, where, current = c.scope_of(node), c.where(node), c.value(x, node)
    if axis != 0:
        axes = (axis, *(j for j in range(len(shape)) if j != axis))
        c.calls.append(Call(f"{node.name}/first", "permute", {"axes": axes}, [current], None,
                            scope, where))  # fmt: skip
        current = f"{node.name}/first"
    size = 1
    for n in rest:
        size *= n
    c.calls.append(Call(f"{node.name}/3d", "reshape", {"shape": (1, k, size)}, [current], None,
                        scope, where))  # fmt: skip
    pool = {"kernel": (k, 1), "stride": (k, 1), "padding": (0, 0), "dilation": (1, 1),
            "ceil_mode": False}  # fmt: skip
    c.calls.append(Call(f"{node.name}/pool", "maxpool2d", pool, [f"{node.name}/3d"], None,
                        scope, where))  # fmt: skip
    c.emit(node, "reshape", {"shape": c.sample_shape(node)}, [f"{node.name}/pool"])


def _tile(c: _Converter, node: Any) -> None:
    """``x.tile(reps)``: copies of ``x`` concatenated along each repeated axis."""
    x, reps = node.args[0], node.args[1:]
    if len(reps) == 1 and isinstance(reps[0], tuple | list):
        reps = reps[0]
    reps = list(c.const(tuple(reps)))
    rank = len(c.shape(x))
    reps = [1] * (rank - len(reps)) + reps
    if len(reps) != rank:
        raise UnmappedError("a tile that adds axes")
    current, scope, where = c.value(x, node), c.scope_of(node), c.where(node)
    steps = [d for d, r in enumerate(reps) if r != 1]
    if not steps:
        _alias(c, node)
        return
    for n, d in enumerate(steps):
        axis = c.axis(x, d)
        if n == len(steps) - 1:
            c.emit(node, "concat", {"axis": axis}, [current] * reps[d])
            return
        c.calls.append(Call(f"{node.name}/{d}", "concat", {"axis": axis}, [current] * reps[d],
                            None, scope, where))  # fmt: skip
        current = f"{node.name}/{d}"


def _setitem_fn(c: _Converter, node: Any) -> None:
    """``t[a:b] = v`` (traced as :func:`_setitem`) along one axis, ``v`` a number: the
    slices before and after, and ``v`` where the slice was (Swin V2's query and value bias
    with the key's part zeroed)."""
    t, index, value = node.args
    value = c.const(value)
    if not isinstance(value, int | float):
        raise UnmappedError("an assignment of a tensor into a slice")
    index = list(index) if isinstance(index, tuple) else [index]
    index = [_index_item(c, i) for i in index]
    shape = c.shape(t)
    steps = [(k, i) for k, i in enumerate(index) if i != slice(None)]
    if len(steps) != 1 or not isinstance(steps[0][1], slice) or steps[0][1].step not in (None, 1):
        raise UnmappedError("an assignment into other than one slice of one axis")
    k, item = steps[0]
    start, end, _ = item.indices(shape[k])
    axis = c.axis(t, k)
    x, scope, where = c.value(t, node), c.scope_of(node), c.where(node)
    pieces = []
    for tag, a, b in (("before", 0, start), ("part", start, end), ("after", end, shape[k])):
        if b <= a:
            continue
        pieces.append(f"{node.name}/{tag}")
        c.calls.append(Call(pieces[-1], "slice", {"axis": axis, "start": a, "end": b}, [x],
                            None, scope, where))  # fmt: skip
        if tag == "part":
            c.calls.append(Call(f"{node.name}/value", "scale_shift",
                                {"scale": 0.0, "shift": float(value)}, [pieces[-1]], None,
                                scope, where))  # fmt: skip
            pieces[-1] = f"{node.name}/value"
    c.emit(node, "concat", {"axis": axis}, pieces)


def _functions() -> tuple[dict, dict]:
    import torch
    import torch.nn.functional as F  # noqa: N812

    functions: dict[Any, Callable[[_Converter, Any], None]] = {
        operator.add: _binary("add"), torch.add: _binary("add"),
        operator.sub: _binary("sub"), torch.sub: _binary("sub"),
        operator.mul: _binary("mul"), torch.mul: _binary("mul"),
        operator.truediv: _binary("div"), torch.div: _binary("div"),
        operator.matmul: _binary("matmul"), torch.matmul: _binary("matmul"),
        operator.getitem: _getitem,
        torch.flatten: _flatten_fn, torch.cat: _cat, torch.concat: _cat, torch.stack: _stack,
        torch.relu: _unary("relu"), F.relu: _unary("relu"), F.relu6: _unary("relu6"),
        torch.sigmoid: _unary("sigmoid"), F.sigmoid: _unary("sigmoid"),
        torch.tanh: _unary("tanh"), F.silu: _unary("silu"), F.gelu: _unary("gelu"),
        F.hardswish: _unary("hardswish"), F.hardsigmoid: _unary("hardsigmoid"),
        F.leaky_relu: _leaky_relu,
        torch.exp: _unary("exp"), torch.abs: _unary("abs"), torch.sqrt: _unary("sqrt"),
        torch.sin: _unary("sin"), torch.cos: _unary("cos"),
        torch.repeat_interleave: _repeat_interleave,
        F.adaptive_avg_pool2d: _adaptive_avg, torch.mean: _mean,
        F.softmax: _softmax, torch.softmax: _softmax, F.dropout: _dropout,
        torch.permute: _permute, torch.transpose: _transpose, torch.swapaxes: _transpose,
        torch.reshape: _reshape,
        F.layer_norm: _layer_norm_fn, F.max_pool2d: _max_pool, F.avg_pool2d: _avg_pool,
        F.pad: _pad, torch.roll: _roll, torch.clamp: _clamp, F.hardtanh: _hardtanh,
        F.normalize: _normalize, torch.select: _select, torch.einsum: _einsum,
        F.scaled_dot_product_attention: _sdpa, torch.norm: _norm, F.linear: _linear_fn,
        torch.addcmul: _addcmul,
        torch.unsqueeze: _unsqueeze, torch.sum: _sum,
        operator.neg: _unary("scale_shift", scale=-1.0),
        torch.neg: _unary("scale_shift", scale=-1.0), torch.conv2d: _conv_fn,
        F.conv2d: _conv_fn, _setitem: _setitem_fn, F.interpolate: _interpolate,
        torch.amax: _amax, torch.tile: _tile,
    }  # fmt: skip
    methods: dict[str, Callable[[_Converter, Any], None]] = {
        "view": _reshape, "reshape": _reshape, "flatten": _flatten_fn, "permute": _permute,
        "transpose": _transpose, "swapaxes": _transpose, "mean": _mean, "contiguous": _alias,
        "clone": _alias,
        "expand": _expand, "softmax": _softmax, "relu": _unary("relu"),
        "sigmoid": _unary("sigmoid"), "add": _binary("add"), "mul": _binary("mul"),
        "matmul": _binary("matmul"), "div": _binary("div"), "clamp": _clamp,
        "abs": _unary("abs"), "exp": _unary("exp"), "tanh": _unary("tanh"), "sub": _binary("sub"),
        "select": _select, "norm": _norm, "unsqueeze": _unsqueeze, "expand_as": _broadcast_alias,
        "float": _alias, "type_as": _alias, "sum": _sum, "repeat": _repeat, "to": _to,
        "sin": _unary("sin"), "cos": _unary("cos"), "repeat_interleave": _repeat_interleave,
        "amax": _amax, "tile": _tile, "reshape_as": _reshape_as, "view_as": _reshape_as,
    }  # fmt: skip
    return functions, methods


class _Table(dict):
    """The function and method tables, built on first use (they need torch)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def get(self, key: Any, default: Any = None) -> Any:
        if not self:
            self.update(_functions()[self.index])
        try:
            return super().get(key, default)
        except TypeError:  # an unhashable target
            return default

    def __contains__(self, key: Any) -> bool:  # ``known`` may ask before any ``get``
        return self.get(key, _MISSING) is not _MISSING


_MISSING = object()


_BROADCASTING = {
    operator.add, operator.sub, operator.mul, operator.truediv, "add", "mul", "sub", "div",
}  # fmt: skip
_KIND = {"call_module": "module", "call_function": "function", "call_method": "method"}
_SCALAR_METHODS = {"size", "dim", "chunk", "split", "unbind"}
_STATIC = {
    operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
    operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
    operator.and_, operator.or_, operator.not_, operator.getitem, _torch("_assert"),
    operator.mod, operator.neg, operator.pow,
}  # fmt: skip
_FUNCTIONS = _Table(0)
_METHODS = _Table(1)


# --- functions the source wraps (torch.fx.wrap): traced through with concrete shapes --------------


def _setitem(t: Any, index: Any, value: Any) -> Any:
    """``t[index] = value`` as a function: how an in-place assignment in a wrapped function
    is traced (on a copy, so what read ``t`` before keeps its value)."""
    out = t.clone()
    out[index] = value
    return out


def _inline_wrapped(converter: _Converter, gm: Any, example: Any) -> None:
    """Replace each call of a function the source keeps out of the trace (``torch.fx.wrap``:
    torchvision's Swin attention, whose control flow reads its input's shape) that reads
    the input or a weight, and has no op, by the function's own body, traced with the
    shapes its arguments have on the example (sizes are numbers there, as everywhere in
    the trace). A body that does not trace so is left as the call it was (reported)."""
    import torch
    import torch.fx

    dynamic: set[Any] = set()
    params = {name for name, _ in converter.module.named_parameters()}
    targets = []
    for n in gm.graph.nodes:
        if n.op in ("placeholder", "call_module") or (
            n.op == "get_attr" and (n.target in converter.state_keys or n.target in params)
        ):
            dynamic.add(n)
        elif not _reads_shape(n) and any(a in dynamic for a in n.all_input_nodes):
            dynamic.add(n)
            if n.op == "call_function" and _inlinable(n.target):
                targets.append(n)
    if not targets:
        return
    wanted = {a for n in targets for a in n.all_input_nodes}
    seen: dict[Any, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            result = super().run_node(n)
            if n in wanted:
                seen[n] = result
            return result

    with torch.no_grad():
        Recorder(gm).run(example)
    changed = False
    for node in targets:
        try:
            with torch.no_grad():
                sub, arg_nodes, result_value = _trace_concrete(node, seen)
        except Exception:  # left as the call it was: reported there
            continue
        placeholders = [n for n in sub.nodes if n.op == "placeholder"]
        env: dict[Any, Any] = dict(zip(placeholders, arg_nodes, strict=True))
        out = None
        with gm.graph.inserting_before(node):
            for n in sub.nodes:
                if n.op == "placeholder":
                    continue
                if n.op == "output":
                    out = torch.fx.node.map_arg(n.args[0], env.__getitem__)
                    continue
                new = gm.graph.node_copy(n, env.__getitem__)
                for key in ("nn_module_stack", "stack_trace"):
                    if key in node.meta:
                        new.meta[key] = node.meta[key]
                env[n] = new
        node.replace_all_uses_with(out)
        if isinstance(out, torch.fx.Node):
            seen[out] = result_value
        gm.graph.erase_node(node)
        changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()


def _inlinable(target: Any) -> bool:
    """A Python function of the model's library that the converter has no rule for."""
    import inspect

    if not inspect.isfunction(target) or target is _setitem:
        return False
    if getattr(target, "__name__", "") == "drop_path" or _FUNCTIONS.get(target) is not None:
        return False
    return (getattr(target, "__module__", "") or "").split(".")[0] != "torch"


_IN_PLACE_FILL = {"zero_": 0.0, "fill_": None}


def _concrete_tracer(base: type, values: dict) -> type:
    """A subclass of the fx tracer ``base`` whose proxies know their value on the example
    (``values``, by node, filled as the trace goes): sizes read from them are numbers, so
    control flow on shapes runs as it does on the example. An assignment into a tensor
    (``mask[a:b, c:d] = k``, ``bias[a:b].zero_()``) is traced as :func:`_setitem` and what
    reads the tensor later reads its result."""
    import torch
    import torch.fx

    class Concrete(torch.fx.Proxy):
        base: Any = None  # (proxy, index) for what ``proxy[index]`` returned

        @property
        def shape(self) -> Any:
            return values[self.node].shape

        def size(self, dim: int | None = None) -> Any:
            shape = values[self.node].shape
            return shape if dim is None else shape[dim]

        def dim(self) -> int:
            return values[self.node].dim()

        @property
        def ndim(self) -> int:
            return values[self.node].dim()

        @property
        def dtype(self) -> Any:
            return values[self.node].dtype

        @property
        def device(self) -> Any:
            return values[self.node].device

        @property
        def is_cuda(self) -> bool:
            return bool(values[self.node].is_cuda)

        def numel(self) -> int:
            return values[self.node].numel()

        def __len__(self) -> int:
            return len(values[self.node])

        def __iter__(self) -> Any:
            value = values[self.node]
            if isinstance(value, tuple | list):  # a tuple a call returned
                return iter([self[k] for k in range(len(value))])
            raise torch.fx.proxy.TraceError("iterating a tensor")

        def __bool__(self) -> bool:
            raise torch.fx.proxy.TraceError("a branch on a tensor's value")

        def __setitem__(self, index: Any, value: Any) -> None:
            self.assign(index, value)

        def assign(self, index: Any, value: Any) -> None:
            new = self.tracer.create_proxy("call_function", _setitem, (self, index, value), {})
            self.node = new.node  # what reads this tensor from now on reads the new value

    class Tracer(base):
        def proxy(self, n: Any) -> Any:
            return Concrete(n, self)

        def create_proxy(self, kind: str, target: Any, args: tuple, kwargs: dict, *rest: Any,
                         **more: Any) -> Any:  # fmt: skip
            if kind == "call_method" and target.endswith("_") and not target.startswith("__"):
                x = args[0]
                if isinstance(x, Concrete) and x.base is None and _fresh_result(x.node, values):
                    # `x.add_(y)` on a tensor nothing else reads or shares: `x = x.add(y)`
                    new = self.create_proxy(kind, target[:-1], args, kwargs, *rest, **more)
                    x.node = new.node
                    return x
                if target not in _IN_PLACE_FILL or not isinstance(x, Concrete) or x.base is None:
                    raise torch.fx.proxy.TraceError(f"in-place {target}")
                fill = _IN_PLACE_FILL[target]
                fill = args[1] if fill is None else fill
                source, index = x.base
                source.assign(index, fill)
                return source
            proxy = super().create_proxy(kind, target, args, kwargs, *rest, **more)
            n = proxy.node
            a = torch.fx.node.map_arg(n.args, values.__getitem__)
            k = torch.fx.node.map_arg(n.kwargs, values.__getitem__)
            if kind == "placeholder":
                if n not in values:
                    values[n] = a[0] if a else None  # an optional argument: its default
            elif kind == "call_function":
                values[n] = n.target(*a, **k)
            elif kind == "call_method":
                values[n] = getattr(a[0], n.target)(*a[1:], **k)
            elif kind == "call_module":
                values[n] = _unpatched_call(self.root.get_submodule(n.target), a, k)
            elif kind == "get_attr":
                values[n] = _raw_attr(self.root, n.target)
            if (
                kind == "call_function"
                and target is operator.getitem
                and isinstance(args[0], Concrete)
            ):
                proxy.base = (args[0], args[1])
            return proxy

        def create_arg(self, a: Any) -> Any:
            node = super().create_arg(a)
            if getattr(node, "op", None) == "get_attr" and node not in values:
                values[node] = a  # a tensor made from numbers (`torch.arange(n)`)
            return node

    return Tracer


def _fresh_result(node: Any, values: dict) -> bool:
    """Whether ``node``'s value is a tensor that nothing has read yet and that shares its
    memory with no other value of the trace (not a view, not a weight): an in-place op
    on it changes nothing else."""
    import torch

    value = values.get(node)
    if node.users or node.op in ("placeholder", "get_attr") or not isinstance(value, torch.Tensor):
        return False
    ptr = value.untyped_storage().data_ptr()
    return not any(
        v is not value and isinstance(v, torch.Tensor) and v.untyped_storage().data_ptr() == ptr
        for v in values.values()
    )


def _raw_attr(root: Any, target: str) -> Any:
    """``root.a.b``, read without ``nn.Module.__getattr__`` (the tracer's, while it runs)."""
    t = root
    for part in target.split("."):
        d = object.__getattribute__(t, "__dict__")
        for table in ("_parameters", "_buffers", "_modules"):
            if part in d.get(table, {}):
                t = d[table][part]
                break
        else:
            t = getattr(t, part)
    return t


def _unpatched_call(module: Any, args: Any, kwargs: Any) -> Any:
    """``module(*args, **kwargs)`` on tensors, during a trace: with ``nn.Module``'s own
    ``__call__`` and ``__getattr__``, which the tracer replaces while it runs."""
    import torch
    from torch.fx import _symbolic_trace as fx_trace

    patched = torch.nn.Module.__call__, torch.nn.Module.__getattr__
    torch.nn.Module.__call__ = fx_trace._orig_module_call  # type: ignore[method-assign]
    torch.nn.Module.__getattr__ = fx_trace._orig_module_getattr  # type: ignore[method-assign]
    try:
        return module(*args, **kwargs)
    finally:
        torch.nn.Module.__call__, torch.nn.Module.__getattr__ = patched  # type: ignore[method-assign]


def _trace_concrete(node: Any, seen: dict) -> tuple[Any, list, Any]:
    """The graph of ``node``'s function called on its arguments' example values, a
    placeholder for each tensor argument (returned, in order), every size a number; and
    the function's value on them."""
    import torch
    import torch.fx

    values: dict[Any, Any] = {}
    tracer = _concrete_tracer(torch.fx.Tracer, values)()
    tracer.graph = torch.fx.Graph(tracer_cls=type(tracer))
    tracer.root = torch.nn.Module()
    tracer.tensor_attrs = {}
    arg_nodes: list[Any] = []

    def argument(a: Any) -> Any:
        if not isinstance(a, torch.fx.Node):
            return a
        value = seen[a]
        if not isinstance(value, torch.Tensor):
            return value
        p = tracer.create_proxy("placeholder", f"arg{len(arg_nodes)}", (), {})
        values[p.node] = value
        arg_nodes.append(a)
        return p

    args = torch.fx.node.map_aggregate(node.args, argument)
    kwargs = torch.fx.node.map_aggregate(node.kwargs, argument)
    result = node.target(*args, **kwargs)
    if not isinstance(result, torch.fx.Proxy):
        raise torch.fx.proxy.TraceError("a wrapped function that returns no tensor it computes")
    tracer.create_node("output", "output", (result.node,), {})
    tracer.graph.eliminate_dead_code()  # what an assignment left unread (`bias[a:b]`)
    if any(n.op == "get_attr" for n in tracer.graph.nodes):
        raise torch.fx.proxy.TraceError("a tensor created from Python values")
    return tracer.graph, arg_nodes, values[result.node]
