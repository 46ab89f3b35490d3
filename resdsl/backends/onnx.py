"""ONNX backend: the graph IR lowered straight to an ONNX model with ``onnx.helper``.

``EMITTERS`` maps every op of the op table to a small function, the mirror of the PyTorch
and TVM tables: given a :class:`Builder`, the IR node, the names of its input values and
their per-sample shapes, it adds ONNX nodes and returns the name of the node's output value.

The model reads like the spec in Netron: the ONNX node that computes an IR node's value is
named after it (``layer1.0.conv1``); an op that needs several ONNX nodes names its helpers
``layer1.0.attn/scores`` and so on; weights are initializers named by their state_dict keys
(``layer1.0.conv1.weight``, unchanged values, so a weight file and the model agree), and
every IR value carries its shape as ``value_info``. Inference semantics: batch norm uses its
running statistics (kept as ``BatchNormalization``, not folded), dropout and drop_path are
``Identity``. The batch axis is the symbolic dimension ``batch`` unless a fixed size is given.
Every shape follows from ONNX's own static shape inference (no data propagation needed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._io import atomic_write
from ..errors import SpecError
from ..ir import Graph, Node
from ..ops import Shape
from ..ops.layers import tensor_value
from ..ops.lowering import aligned, batch_axis, conv_padding
from ..ops.tensors import pad_widths, reduced_axes, slice_bounds
from ..passes import decompose, derive_weights
from ..weights import Weights, expected, resolve
from .check import Comparison, compare, random_inputs, reference

if TYPE_CHECKING:
    import onnx

    from ..network import Network

OPSET = 21  # ai.onnx; LayerNormalization needs 17, Gelu 20
IR_VERSION = 10  # the IR version that introduced opset 21
BATCH = "batch"  # name of the symbolic batch dimension
MAX_BYTES = 2**31 - 2**24  # protobuf's limit on one message, less room for the graph


@dataclass
class Builder:
    """The model under construction: nodes, initializers and the names already used."""

    graph: Graph
    weights: Weights
    batch: int | str  # a fixed size or the symbolic dimension's name
    values: dict[str, str]  # IR node -> name of its output value
    nodes: list[Any] = field(default_factory=list)
    initializers: dict[str, Any] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)  # value names in use (incl. initializers)

    def _claim(self, name: str) -> str:
        if name in self.taken:  # IR names hold no "/", so only a bug in an emitter gets here
            raise RuntimeError(f"ONNX value name {name!r} used twice")
        self.taken.add(name)
        return name

    def weight(self, node: Node, name: str) -> str:
        """The initializer for one of ``node``'s weights, named by its state_dict key."""
        from onnx import numpy_helper

        key = node.key(name)
        if key not in self.initializers:
            array = np.ascontiguousarray(self.weights[key], dtype=np.float32)
            self.initializers[key] = numpy_helper.from_array(array, key)
        return key

    def const(self, node: Node, label: str, value: Any, dtype: Any = np.float32) -> str:
        """A constant that is not a weight (axes, shapes, scales): ``{node}/{label}``."""
        from onnx import numpy_helper

        name = self._claim(f"{node.name}/{label}")
        self.initializers[name] = numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        return name

    def ints(self, node: Node, label: str, values: Sequence[int]) -> str:
        return self.const(node, label, list(values), np.int64)

    def op(
        self,
        op_type: str,
        inputs: Sequence[str],
        node: Node,
        step: str | Sequence[str] | None = None,
        **attrs: Any,
    ) -> Any:
        """Add one ONNX node. Without ``step`` it computes ``node``'s value and is named after
        it; otherwise it is a helper named ``{node}/{step}`` (one step per output)."""
        from onnx import helper

        if step is None:
            name, outputs = node.name, [self.values[node.name]]
        else:
            steps = [step] if isinstance(step, str) else list(step)
            name = f"{node.name}/{'_'.join(steps)}"
            outputs = [self._claim(f"{node.name}/{s}") for s in steps]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def out_shape(self, node: Node) -> Shape:
        return self.graph.info(node.name).shape


Emitter = Callable[[Builder, Node, list[str], list[Shape]], str]


def _unary(op_type: str, **attrs: Any) -> Emitter:
    return lambda b, n, a, s: b.op(op_type, a, n, **attrs)


# --- layers ------------------------------------------------------------------------------------


def _conv(spatial: int) -> Emitter:
    def emit(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
        a = node.attrs
        weights = [b.weight(node, "weight")] + ([b.weight(node, "bias")] if a["bias"] else [])
        ints = (lambda v: [v]) if spatial == 1 else list
        return b.op(
            "Conv", [args[0], *weights], node, kernel_shape=ints(a["kernel"]),
            strides=ints(a["stride"]), pads=list(conv_padding(a, spatial)),
            dilations=ints(a["dilation"]), group=a["groups"],
        )  # fmt: skip

    return emit


def _batchnorm2d(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    """Inference mode: normalised with the running statistics."""
    if node.attrs["affine"]:
        scale, shift = b.weight(node, "weight"), b.weight(node, "bias")
    else:  # the op needs a scale and a shift; these are not in the state_dict
        c = shapes[0][0]
        scale, shift = b.const(node, "scale", np.ones(c)), b.const(node, "shift", np.zeros(c))
    inputs = [args[0], scale, shift, b.weight(node, "running_mean"), b.weight(node, "running_var")]
    return b.op("BatchNormalization", inputs, node, epsilon=node.attrs["eps"])


def _linear(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    """Gemm for a vector per sample; MatMul with the transposed weight for tokens."""
    if len(shapes[0]) == 1:
        weight = b.weight(node, "weight")  # first: initializers follow the state_dict's order
        bias = [b.weight(node, "bias")] if node.attrs["bias"] else []
        return b.op("Gemm", [args[0], weight, *bias], node, transB=1)
    return _matmul_t(b, node, args[0], "weight", "bias" if node.attrs["bias"] else None, "")


def _matmul_t(b: Builder, node: Node, x: str, weight: str, bias: str | None, step: str) -> str:
    """``x @ W.T + bias`` with W stored as in the state_dict ((out, in)); ``step`` "" makes the
    last node compute ``node``'s value, else its helpers are named ``{node}/{step}...``."""
    prefix = f"{step}_" if step else ""
    w_t = b.op("Transpose", [b.weight(node, weight)], node, f"{prefix}weight_t", perm=[1, 0])
    if bias is None:
        return b.op("MatMul", [x, w_t], node, step or None)
    y = b.op("MatMul", [x, w_t], node, f"{prefix}matmul")
    return b.op("Add", [y, b.weight(node, bias)], node, step or None)


def _layernorm(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    inputs = [args[0], b.weight(node, "weight"), b.weight(node, "bias")]
    return b.op("LayerNormalization", inputs, node, axis=-1, epsilon=node.attrs["eps"])


def _parameter(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    """The (1, *shape) tensor broadcast over the batch.

    With a fixed batch this is an ``Expand`` to a constant shape. With the symbolic batch a
    shape computed at run time (``Shape`` -> ``Expand``) would leave the dimensions unknown
    to ONNX's static shape inference, so the batch is taken from a (batch, 1, ..., 1) slice
    of the first input instead: ``Where(cond, p, p)`` broadcasts ``p`` against it and is
    ``p`` whatever the condition's values are.
    """
    rank = 1 + len(node.attrs["shape"])
    if node.op == "buffer" and node.attrs["dtype"] == "int64":  # an index: read by `take`
        index = tensor_value(node.attrs).reshape(node.attrs["shape"])
        return b.op("Identity", [b.const(node, "index", index, np.int64)], node)
    if node.op == "buffer" and not node.attrs["persistent"]:  # a constant, not a weight
        p = b.const(node, "value", tensor_value(node.attrs))
    else:
        p = b.weight(node, "")
    if node.attrs["stored"] not in (None, (1, *node.attrs["shape"])):
        p = b.op("Reshape", [p, b.ints(node, "stored_shape", [1, *node.attrs["shape"]])], node,
                 "unstored")  # fmt: skip
    if isinstance(b.batch, int):
        return b.op("Expand", [p, b.ints(node, "shape", [b.batch, *node.attrs["shape"]])], node)
    first = b.graph.inputs[0]
    carrier, x_rank = b.values[first], 1 + len(b.graph.info(first).shape)
    if x_rank > 1:  # keep one element of each sample: (batch, 1, ..., 1)
        ones = [1] * (x_rank - 1)
        starts, ends = b.ints(node, "starts", [0] * (x_rank - 1)), b.ints(node, "ends", ones)
        axes = b.ints(node, "axes", range(1, x_rank))
        carrier = b.op("Slice", [carrier, starts, ends, axes], node, "batch_slice")
    carrier = b.op("Reshape", [carrier, b.ints(node, "batch_shape", [0] + [1] * (rank - 1))],
                   node, "batch_like")  # fmt: skip
    cond = b.op("IsNaN", [carrier], node, "batch_cond")
    return b.op("Where", [cond, p, p], node)


# --- pooling -----------------------------------------------------------------------------------


def _pool_pads(b: Builder, node: Node, shape: Shape, dilation: Sequence[int]) -> list[int]:
    """(top, left, bottom, right) padding that gives PyTorch's output size without ceil_mode.

    ONNX's ceil_mode keeps a last window that starts in the right padding (PyTorch drops it)
    and ONNX Runtime's average then counts padding differently, so ceil_mode is lowered to
    extra padding at the end: just enough for the windows PyTorch keeps.
    """
    a, out = node.attrs, b.out_shape(node)[1:]
    ph, pw = a["padding"]
    stride = a["stride"] or a["kernel"]
    extra = [
        max(0, (o - 1) * s + d * (k - 1) + 1 - (size + 2 * p))
        for o, s, d, k, size, p in zip(out, stride, dilation, a["kernel"], shape[1:], (ph, pw),
                                       strict=True)
    ]  # fmt: skip
    return [ph, pw, ph + extra[0], pw + extra[1]]


def _pool_attrs(node: Node, pads: Sequence[int], **more: Any) -> dict[str, Any]:
    a = node.attrs
    return {"kernel_shape": list(a["kernel"]), "strides": list(a["stride"] or a["kernel"]),
            "pads": list(pads), **more}  # fmt: skip


def _maxpool2d(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    dilation = node.attrs["dilation"]
    pads = _pool_pads(b, node, shapes[0], dilation)
    x = args[0]
    if pads[2] >= node.attrs["kernel"][0] or pads[3] >= node.attrs["kernel"][1]:
        # ONNX Runtime refuses pads as large as the kernel (possible with dilation): pad
        # with -inf first, which is what a max over the padding means.
        full = [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]
        x = b.op("Pad", [x, b.ints(node, "pads", full), b.const(node, "pad_value", -np.inf)],
                 node, "padded")  # fmt: skip
        pads = [0, 0, 0, 0]
    return b.op("MaxPool", [x], node, **_pool_attrs(node, pads, dilations=list(dilation)))


def _avgpool2d(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    """count_include_pad counts the padding, but not the extra end padding of ceil_mode: that
    padding becomes zeros (``Pad``) and the pool excludes only the extra part."""
    a = node.attrs
    pads = _pool_pads(b, node, shapes[0], (1, 1))
    ph, pw = a["padding"]
    if not a["count_include_pad"] or pads == [ph, pw, ph, pw]:
        return b.op("AveragePool", args, node, **_pool_attrs(
            node, pads, count_include_pad=int(a["count_include_pad"])))  # fmt: skip
    x = args[0]
    if ph or pw:
        full = [0, 0, ph, pw, 0, 0, ph, pw]
        x = b.op("Pad", [x, b.ints(node, "pads", full)], node, "padded")
    extra = [0, 0, pads[2] - ph, pads[3] - pw]
    return b.op("AveragePool", [x], node, **_pool_attrs(node, extra, count_include_pad=0))


def _adaptive_avgpool2d(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    """An AveragePool when the output size divides the input; otherwise PyTorch's bins
    (floor(i * n / m) to ceil((i + 1) * n / m)) as two averaging matrices: rows @ x @ cols."""
    (_, h, w), (oh, ow) = shapes[0], node.attrs["output_size"]
    if h % oh == 0 and w % ow == 0:
        k = [h // oh, w // ow]
        return b.op("AveragePool", args, node, kernel_shape=k, strides=k)
    rows = b.const(node, "rows", _bins(h, oh))
    cols = b.const(node, "cols", _bins(w, ow).T)
    y = b.op("MatMul", [rows, args[0]], node, "pool_rows")
    return b.op("MatMul", [y, cols], node)


def _bins(n: int, m: int) -> np.ndarray:
    """(m, n): row i averages PyTorch's adaptive bin i of an axis of size n."""
    out = np.zeros((m, n), np.float32)
    for i in range(m):
        start, end = (i * n) // m, -(-((i + 1) * n) // m)
        out[i, start:end] = 1.0 / (end - start)
    return out


# --- movement and arithmetic -------------------------------------------------------------------


def _flatten(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    start = node.attrs["start"]
    if start == 0:
        return b.op("Flatten", args, node, axis=1)
    return _reshape_to(b, node, args[0], b.out_shape(node))


def _reshape_to(b: Builder, node: Node, x: str, shape: Shape) -> str:
    """Reshape keeping the batch axis (0 copies it, so it may stay symbolic)."""
    return b.op("Reshape", [x, b.ints(node, "shape", [0, *shape])], node)


def _add(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    return b.op("Add" if len(args) == 2 else "Sum", _aligned(b, node, args, shapes), node)


def _aligned(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> list[str]:
    """Operands of a broadcasting op, each with unit axes after its batch axis where its
    per-sample rank is lower (per-sample shapes align on the last axis)."""
    return [
        x if view is None else b.op("Unsqueeze", [x, b.ints(node, f"axes{i}", range(
            1, len(view) - len(s)))], node, f"unsqueeze{i}")
        for i, (x, s, view) in enumerate(zip(args, shapes, aligned(shapes), strict=True))
    ]  # fmt: skip


def _mul(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    return b.op("Mul", _aligned(b, node, args, shapes), node)


def _matmul(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    return b.op("MatMul", _aligned(b, node, args, shapes), node)


def _clamp(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    bounds = [
        "" if node.attrs[k] is None else b.const(node, k, node.attrs[k]) for k in ("min", "max")
    ]
    return b.op("Clip", [args[0], *bounds], node)


def _slice(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    axis, start, stop, step = slice_bounds(node.attrs, shapes[0])
    inputs = [b.ints(node, label, [v]) for label, v in
              (("starts", start), ("ends", stop), ("axes", axis + 1), ("steps", step))]  # fmt: skip
    return b.op("Slice", [args[0], *inputs], node)


def _pad(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    widths = [(0, 0), *pad_widths(node.attrs, shapes[0])]
    pads = [w for w, _ in widths] + [w for _, w in widths]
    value = b.const(node, "value", node.attrs["value"])
    return b.op("Pad", [args[0], b.ints(node, "pads", pads), value], node)


def _reduce(op_type: str) -> Emitter:
    def emit(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
        axes = [a + 1 for a in reduced_axes(node.op, node.attrs, shapes[0])]
        keep = int(node.attrs["keepdim"])
        return b.op(op_type, [args[0], b.ints(node, "axes", axes)], node, keepdims=keep)

    return emit


def _groupnorm(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    """Each group as one instance of InstanceNormalization (over a (B, G, rest) view), then
    the per-channel affine: ONNX's GroupNormalization is not in ONNX Runtime's opset 21."""
    c, g = shapes[0][0], node.attrs["groups"]
    y = b.op("Reshape", [args[0], b.ints(node, "groups_shape", [0, g, -1])], node, "grouped")
    y = b.op("InstanceNormalization", [y, b.const(node, "ones", np.ones(g)),
             b.const(node, "zeros", np.zeros(g))], node, "normalised",
             epsilon=node.attrs["eps"])  # fmt: skip
    if not node.attrs["affine"]:
        return _reshape_to(b, node, y, shapes[0])
    y = b.op("Reshape", [y, b.ints(node, "shape", [0, *shapes[0]])], node, "ungrouped")
    per_channel = b.ints(node, "affine_shape", [1, c, *(1,) * (len(shapes[0]) - 1)])
    scale = b.op("Reshape", [b.weight(node, "weight"), per_channel], node, "scale")
    shift = b.op("Reshape", [b.weight(node, "bias"), per_channel], node, "shift")
    return b.op("Add", [b.op("Mul", [y, scale], node, "scaled"), shift], node)


def _scale_shift(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    """x * scale + shift, leaving out a factor of 1 and a shift of 0 (as the other backends)."""
    scale, shift = node.attrs["scale"], node.attrs["shift"]
    steps = [("Mul", "scale", scale)] if scale != 1 else []
    steps += [("Add", "shift", shift)] if shift != 0 else []
    y = args[0]
    for i, (op_type, label, value) in enumerate(steps):
        last = i == len(steps) - 1
        y = b.op(op_type, [y, b.const(node, label, value)], node, None if last else "scaled")
    return y if steps else b.op("Identity", args, node)


def _select(b: Builder, node: Node, args: list[str], shapes: list[Shape]) -> str:
    """Gather with a scalar index drops the axis."""
    axis = node.attrs["axis"]
    index = b.const(node, "index", node.attrs["index"] % shapes[0][axis], np.int64)
    return b.op("Gather", [args[0], index], node, axis=axis + 1)


EMITTERS: dict[str, Emitter] = {
    "conv2d": _conv(2),
    "conv1d": _conv(1),
    "batchnorm2d": _batchnorm2d,
    "linear": _linear,
    "relu": _unary("Relu"),
    "identity": _unary("Identity"),
    "zero": lambda b, n, a, s: b.op("ConstantOfShape", [b.op("Shape", a, n, "shape")], n),
    "dropout": _unary("Identity"),  # inference
    "maxpool2d": _maxpool2d,
    "avgpool2d": _avgpool2d,
    "adaptive_avgpool2d": _adaptive_avgpool2d,
    "flatten": _flatten,
    "add": _add,
    "concat": lambda b, n, a, s: b.op("Concat", a, n, axis=n.attrs["axis"] + 1),
    "mul": _mul,
    "sub": lambda b, n, a, s: b.op("Sub", _aligned(b, n, a, s), n),
    "div": lambda b, n, a, s: b.op("Div", _aligned(b, n, a, s), n),
    "exp": _unary("Exp"),
    "sin": _unary("Sin"),
    "cos": _unary("Cos"),
    "tanh": _unary("Tanh"),
    "leaky_relu": lambda b, n, a, s: b.op("LeakyRelu", a, n, alpha=n.attrs["negative_slope"]),
    "abs": _unary("Abs"),
    "sqrt": _unary("Sqrt"),
    "take": lambda b, n, a, s: b.op("Gather", a, n, axis=n.attrs["axis"] % len(s[0]) + 1),
    "scale_shift": _scale_shift,
    "clamp": _clamp,
    "sigmoid": _unary("Sigmoid"),
    "hardsigmoid": _unary("HardSigmoid", alpha=1 / 6, beta=0.5),  # native: one node
    "hardswish": _unary("HardSwish"),  # native: one node
    "gelu": lambda b, n, a, s: b.op("Gelu", a, n, approximate=n.attrs["approximate"]),
    "softmax": lambda b, n, a, s: b.op(
        "Softmax", a, n, axis=batch_axis(n.attrs["axis"], len(s[0]))
    ),
    "drop_path": _unary("Identity"),  # inference
    "layernorm": _layernorm,
    "groupnorm": _groupnorm,
    "parameter": _parameter,
    "buffer": _parameter,  # a parameter that is not learned: the same at inference
    "reshape": lambda b, n, a, s: _reshape_to(b, n, a[0], b.out_shape(n)),
    "permute": lambda b, n, a, s: b.op(
        "Transpose", a, n, perm=[0, *(i + 1 for i in n.attrs["axes"])]
    ),
    "select": _select,
    "slice": _slice,
    "pad": _pad,
    "sum": _reduce("ReduceSum"),
    "mean": _reduce("ReduceMean"),
    "matmul": _matmul,
}


# --- the model ---------------------------------------------------------------------------------


def _value_names(graph: Graph) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Each IR node's output value name, and the graph outputs that need an ``Identity``.

    A value is named after its node, except that a node returned (once) as a graph output
    writes that output directly. Outputs that name a graph input or a node returned twice
    get an ``Identity``. Names of weights are never reused for values.
    """
    taken = set(expected(graph)) | set(graph.inputs)
    firsts: dict[str, str] = {}
    for out, node in graph.outputs:
        if node not in graph.inputs and node not in firsts:
            firsts[node] = out
    taken |= {out for out, _ in graph.outputs}
    names = {name: name for name in graph.inputs}
    for node in graph.nx.nodes:
        if node in names:
            continue
        names[node] = firsts.get(node) or (node if node not in taken else f"{node}/out")
    copies = [(out, node) for out, node in graph.outputs if names[node] != out]
    return names, copies


def to_onnx(
    graph: Graph,
    weights: Weights,
    *,
    batch: int | None = None,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """The network as an ONNX model (opset :data:`OPSET`).

    ``weights`` are keyed by state_dict key (see :mod:`resdsl.weights`). ``batch`` fixes the
    batch size; ``None`` makes it the symbolic dimension ``batch``.
    """
    from onnx import TensorProto, helper

    from .. import __version__

    if batch is not None and batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    graph = decompose(graph.inference(), EMITTERS)
    weights = derive_weights(graph, weights)
    b = _lower(graph, weights, BATCH if batch is None else batch)

    def info(value: str, node: str):
        shape, dtype = [b.batch, *graph.info(node).shape], graph.info(node).dtype
        if dtype == "int64":  # an index (a buffer read by `take`): per sample, no batch
            return helper.make_tensor_value_info(value, TensorProto.INT64, shape[1:])
        return helper.make_tensor_value_info(value, TensorProto.FLOAT, shape)

    outputs = {out for out, _ in graph.outputs}
    onnx_graph = helper.make_graph(
        b.nodes,
        graph.name,
        [info(b.values[n], n) for n in graph.inputs],
        [info(out, node) for out, node in graph.outputs],
        initializer=list(b.initializers.values()),
        value_info=[info(b.values[n.name], n.name) for n in graph.nodes()
                    if n.op != "input" and b.values[n.name] not in outputs],
    )  # fmt: skip
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="resdsl",
        producer_version=__version__,
    )
    helper.set_model_props(model, metadata or {})
    return model


def _lower(graph: Graph, weights: Weights, batch: int | str) -> Builder:
    """Every IR node through its emitter, in graph order, then the outputs' ``Identity``s."""
    from onnx import helper

    for node in graph.nodes():
        if node.op != "input" and node.op not in EMITTERS:
            raise SpecError(f"op `{node.op}` has no ONNX emitter (target onnx)", node.span)
    names, copies = _value_names(graph)
    b = Builder(graph, weights, batch, names)
    b.taken = set(expected(graph)) | set(names.values()) | {out for out, _ in graph.outputs}
    for node in graph.nodes():
        if node.op != "input":
            srcs = graph.inputs_of(node.name)
            shapes = [graph.info(s).shape for s in srcs]
            EMITTERS[node.op](b, node, [names[s] for s in srcs], shapes)
    for out, node in copies:
        name = out if out not in graph else f"{out}/output"
        b.nodes.append(helper.make_node("Identity", [names[node]], [out], name=name))
    return b


def export(
    net: Network,
    path: str,
    *,
    weights: Any = None,
    seed: int = 0,
    batch: int | None = None,
) -> onnx.ModelProto:
    """Lower ``net``, check the model with ONNX's checker, and write it to ``path`` atomically.

    ``weights``: a ``.safetensors``/PyTorch state_dict path, an ``nn.Module`` or a dict keyed
    by the spec's names; ``None`` initialises them from ``seed``. Returns the model.
    """
    import json

    import onnx

    checked, source = resolve(net.graph, weights, seed)
    size = sum(a.nbytes for a in checked.values())
    metadata = {
        "spec": net.source,
        "spec_sha256": net.spec_hash,
        "parameters": json.dumps(net.params, sort_keys=True, default=list),
        "weights": source,
    }
    model = to_onnx(net.graph, checked, batch=batch, metadata=metadata)
    if size > MAX_BYTES:  # beyond one protobuf message: the weights go beside the model
        return _write_with_external_data(model, path)
    onnx.checker.check_model(model, full_check=True)  # a failure here is a bug in this module
    atomic_write(path, model.SerializeToString(deterministic=True))
    return model


def _write_with_external_data(model: Any, path: str) -> Any:
    """``model`` written as ``path`` and its weights as ``path + ".data"`` beside it (ONNX's
    external data: one file, the tensors in order), both checked before either replaces
    anything; ONNX Runtime and ``resdsl import`` read the pair."""
    import shutil
    import tempfile

    import onnx
    from onnx.external_data_helper import set_external_data

    from .._io import _umask, check_target

    data_path = path + ".data"
    location = os.path.basename(data_path)
    for target in (path, data_path):
        check_target(target)  # a link or a folder there is refused, not replaced
    folder = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(
        os.path.abspath(path)))  # fmt: skip
    try:
        model_tmp, data_tmp = os.path.join(folder, "model.onnx"), os.path.join(folder, location)
        with open(data_tmp, "wb") as f:
            offset = 0
            for tensor in model.graph.initializer:
                raw = tensor.raw_data
                if len(raw) < 1024:  # small ones stay in the model
                    continue
                f.write(raw)
                set_external_data(tensor, location=location, offset=offset, length=len(raw))
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
                offset += len(raw)
            f.flush()
            os.fsync(f.fileno())
        with open(model_tmp, "wb") as f:
            f.write(model.SerializeToString(deterministic=True))
            f.flush()
            os.fsync(f.fileno())
        onnx.checker.check_model(model_tmp, full_check=True)  # a failure is a bug here
        for tmp, target in ((data_tmp, data_path), (model_tmp, path)):
            os.chmod(tmp, 0o666 & ~_umask())  # mkdtemp's folder, the usual file modes
            check_target(target)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return model


# --- compile --check ---------------------------------------------------------------------------


def cross_check(
    net: Network, path: str, weights: Weights, *, batch: int = 2, seed: int = 0
) -> list[Comparison]:
    """Run the model at ``path`` with ONNX Runtime (CPU) and the PyTorch backend (eval mode,
    the same weights) on one seeded random input of ``batch`` samples; compare each output."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    shapes = [(batch, *net.graph.info(name).shape) for name in net.graph.inputs]
    inputs = random_inputs(shapes, seed)
    actual = session.run([out for out, _ in net.graph.outputs],
                         dict(zip(net.graph.inputs, inputs, strict=True)))  # fmt: skip
    names = [name for name, _ in net.graph.outputs]
    return compare(names, reference(net, weights, inputs), actual)
