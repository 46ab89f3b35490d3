"""Graph IR -> TVM Relax IRModule with ``relax.BlockBuilder``.

``EMITTERS`` maps every op of the op table to a small function, mirroring the PyTorch
backend's table: given the node, its Relax inputs and the weights, it emits Relax ops.
Weights become constants of the module (so the exported library is self-contained).
The batch size is fixed at compile time, or a range (:func:`to_relax` with ``batch=(low,
high)``): ``main`` then takes a symbolic batch and runs it on networks of fixed sizes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax import op as R  # noqa: N812 - the name TVM itself uses

from ...errors import SpecError
from ...ir import Graph, Node
from ...ops import Shape
from ...ops.layers import tensor_value
from ...ops.lowering import aligned, batch_axis, batchnorm_affine, conv_padding
from ...ops.tensors import pad_widths, reduced_axes, slice_bounds
from ...passes import decompose, derive_weights


@dataclass
class Context:
    """What an emitter needs besides its inputs: the builder, graph, weights and dtype."""

    bb: relax.BlockBuilder
    graph: Graph
    weights: dict[str, np.ndarray]
    dtype: str
    batch: int
    # constants by content, shared by the networks of one module (one copy in the library)
    constants: dict[tuple, relax.Constant] = field(default_factory=dict)

    def emit(self, expr: relax.Expr) -> relax.Var:
        return self.bb.emit(expr)

    def weight(self, node: Node, name: str, shape: Sequence[int] | None = None) -> relax.Constant:
        array = self.weights[node.key(name)]
        if shape is not None:
            array = array.reshape(shape)
        return self.const(array)

    def const(self, array: np.ndarray) -> relax.Constant:
        array = np.ascontiguousarray(np.asarray(array).astype(self.dtype))
        key = (array.shape, hashlib.blake2b(array.data, digest_size=16).digest())
        if key not in self.constants:
            self.constants[key] = relax.const(array)
        return self.constants[key]

    def out(self, node: Node) -> tuple[int, ...]:
        """The batched output shape of ``node``, as the graph records it."""
        return (self.batch, *self.graph.info(node.name).shape)

    @property
    def accumulator(self) -> str:
        """The dtype a sum of products accumulates in: float32 also for a float16 network.

        Convolutions and matmuls of a float16 build ask for a float32 result and cast it
        back, so that a K of thousands does not round at every step; the cast fuses into
        the kernel's epilogue.
        """
        return "float32"

    def products(self, expr: relax.Expr) -> relax.Var:
        """Emit a conv/matmul built with ``out_dtype=self.accumulator``, in the net's dtype."""
        y = self.emit(expr)
        return y if self.dtype == self.accumulator else self.emit(R.astype(y, self.dtype))


Emitter = Callable[[Context, Node, list[relax.Expr], list[Shape]], relax.Expr]


def _conv(fn: Callable[..., relax.Expr], spatial: int) -> Emitter:
    def emit(ctx: Context, node: Node, args: list[relax.Expr], shapes) -> relax.Expr:
        a = node.attrs
        y = ctx.products(
            fn(args[0], ctx.weight(node, "weight"), strides=a["stride"],
               padding=conv_padding(a, spatial), dilation=a["dilation"], groups=a["groups"],
               out_dtype=ctx.accumulator)
        )  # fmt: skip
        if a["bias"]:
            y = ctx.emit(R.add(y, ctx.weight(node, "bias", (1, -1, *(1,) * spatial))))
        return y

    return emit


def _batchnorm2d(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    """Inference form, x * scale + shift, with the statistics folded into two constants."""
    c = shapes[0][0]
    scale, shift = batchnorm_affine(ctx.weights, node.key, node.attrs["eps"], c)
    y = ctx.emit(R.multiply(args[0], ctx.const(scale.reshape(1, c, 1, 1))))
    return ctx.emit(R.add(y, ctx.const(shift.reshape(1, c, 1, 1))))


def _linear(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    weight = ctx.weights[node.key("weight")]
    y = ctx.products(R.matmul(args[0], ctx.const(weight.T), out_dtype=ctx.accumulator))
    if node.attrs["bias"]:
        y = ctx.emit(R.add(y, ctx.weight(node, "bias")))
    return y


def _pool(fn: Callable[..., relax.Expr], **extra: str) -> Emitter:
    def emit(ctx: Context, node: Node, args, shapes) -> relax.Expr:
        a = node.attrs
        ph, pw = a["padding"]
        more = {name: a[attr] for name, attr in extra.items()}
        return ctx.emit(
            fn(args[0], pool_size=a["kernel"], strides=a["stride"] or a["kernel"],
               padding=(ph, pw, ph, pw), ceil_mode=a["ceil_mode"], **more)
        )  # fmt: skip

    return emit


def _add(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    y, *rest = _aligned(ctx, args, shapes)
    for other in rest:
        y = ctx.emit(R.add(y, other))
    return y


def _aligned(ctx: Context, args, shapes) -> list[relax.Expr]:
    """Operands of a broadcasting op: per-sample shapes align on the last axis, batches on
    the first, so one of lower rank gains unit axes after its batch axis."""
    return [
        v if view is None else ctx.emit(R.reshape(v, (ctx.batch, *view[1:])))
        for v, view in zip(args, aligned(shapes), strict=True)
    ]


def _mul(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    return ctx.emit(R.multiply(*_aligned(ctx, args, shapes)))


def _scale_shift(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    y, (scale, shift) = args[0], (node.attrs["scale"], node.attrs["shift"])
    if scale != 1:
        y = ctx.emit(R.multiply(y, ctx.const(np.array(scale))))
    if shift != 0:
        y = ctx.emit(R.add(y, ctx.const(np.array(shift))))
    return y


def _clamp(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    """A missing bound is the dtype's extreme (TVM's clip takes both)."""
    info = np.finfo(ctx.dtype)
    low, high = node.attrs["min"], node.attrs["max"]
    low = float(info.min) if low is None else low
    high = float(info.max) if high is None else high
    return ctx.emit(R.clip(args[0], low, high))


def _layernorm(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    return ctx.emit(
        R.nn.layer_norm(args[0], ctx.weight(node, "weight"), ctx.weight(node, "bias"),
                        axes=[-1], epsilon=node.attrs["eps"])
    )  # fmt: skip


def _layernorm2d(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    """Native: normalised over the channel axis in place, no transposes."""
    return ctx.emit(
        R.nn.layer_norm(args[0], ctx.weight(node, "weight"), ctx.weight(node, "bias"),
                        axes=[1], epsilon=node.attrs["eps"])
    )  # fmt: skip


def _groupnorm(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    c, rank = shapes[0][0], len(shapes[0])
    if node.attrs["affine"]:
        gamma, beta = ctx.weight(node, "weight"), ctx.weight(node, "bias")
    else:
        gamma, beta = ctx.const(np.ones(c)), ctx.const(np.zeros(c))
    return ctx.emit(
        R.nn.group_norm(args[0], gamma, beta, num_groups=node.attrs["groups"], channel_axis=1,
                        axes=list(range(2, rank + 1)), epsilon=node.attrs["eps"])
    )  # fmt: skip


def _parameter(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    shape = node.attrs["shape"]
    if node.op == "buffer" and node.attrs["dtype"] == "int64":  # an index: read by `take`
        return relax.const(tensor_value(node.attrs).reshape(shape), "int64")
    if node.op == "buffer" and not node.attrs["persistent"]:  # a constant, not a weight
        value = ctx.const(tensor_value(node.attrs).reshape((1, *shape)))
    else:
        value = ctx.weight(node, "", (1, *shape))
    return ctx.emit(R.broadcast_to(value, (ctx.batch, *shape)))


def _select(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    axis, index = node.attrs["axis"] + 1, node.attrs["index"] % shapes[0][node.attrs["axis"]]
    y = ctx.emit(R.strided_slice(args[0], axes=[axis], begin=[index], end=[index + 1]))
    return ctx.emit(R.squeeze(y, axis=[axis]))


def _slice(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    axis, start, stop, step = slice_bounds(node.attrs, shapes[0])
    return ctx.emit(
        R.strided_slice(args[0], axes=[axis + 1], begin=[start], end=[stop], strides=[step])
    )


def _pad(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    widths = [w for pair in [(0, 0), *pad_widths(node.attrs, shapes[0])] for w in pair]
    return ctx.emit(R.nn.pad(args[0], widths, pad_value=node.attrs["value"]))


def _reduce(fn: Callable[..., relax.Expr]) -> Emitter:
    def emit(ctx: Context, node: Node, args, shapes) -> relax.Expr:
        axes = [a + 1 for a in reduced_axes(node.op, node.attrs, shapes[0])]
        return ctx.emit(fn(args[0], axis=axes, keepdims=node.attrs["keepdim"]))

    return emit


def _matmul(ctx: Context, node: Node, args, shapes) -> relax.Expr:
    return ctx.products(R.matmul(*_aligned(ctx, args, shapes), out_dtype=ctx.accumulator))


EMITTERS: dict[str, Emitter] = {
    "conv2d": _conv(R.nn.conv2d, 2),
    "conv1d": _conv(R.nn.conv1d, 1),
    "batchnorm2d": _batchnorm2d,
    "linear": _linear,
    "relu": lambda ctx, n, a, s: ctx.emit(R.nn.relu(a[0])),
    "identity": lambda ctx, n, a, s: a[0],
    "zero": lambda ctx, n, a, s: ctx.emit(R.zeros_like(a[0])),
    "dropout": lambda ctx, n, a, s: a[0],  # inference
    "maxpool2d": _pool(R.nn.max_pool2d, dilation="dilation"),
    "avgpool2d": _pool(R.nn.avg_pool2d, count_include_pad="count_include_pad"),
    "adaptive_avgpool2d": lambda ctx, n, a, s: ctx.emit(
        R.nn.adaptive_avg_pool2d(a[0], output_size=n.attrs["output_size"])
    ),
    "flatten": lambda ctx, n, a, s: ctx.emit(R.reshape(a[0], ctx.out(n))),
    "add": _add,
    "concat": lambda ctx, n, a, s: ctx.emit(R.concat(a, axis=n.attrs["axis"] + 1)),
    "mul": _mul,
    "sub": lambda ctx, n, a, s: ctx.emit(R.subtract(*_aligned(ctx, a, s))),
    "div": lambda ctx, n, a, s: ctx.emit(R.divide(*_aligned(ctx, a, s))),
    "exp": lambda ctx, n, a, s: ctx.emit(R.exp(a[0])),
    "sin": lambda ctx, n, a, s: ctx.emit(R.sin(a[0])),
    "cos": lambda ctx, n, a, s: ctx.emit(R.cos(a[0])),
    "tanh": lambda ctx, n, a, s: ctx.emit(R.tanh(a[0])),
    "leaky_relu": lambda ctx, n, a, s: ctx.emit(R.nn.leakyrelu(a[0], n.attrs["negative_slope"])),
    "abs": lambda ctx, n, a, s: ctx.emit(R.abs(a[0])),
    "sqrt": lambda ctx, n, a, s: ctx.emit(R.sqrt(a[0])),
    "take": lambda ctx, n, a, s: ctx.emit(  # clip: never out of bounds
        R.take(a[0], a[1], axis=n.attrs["axis"] % len(s[0]) + 1, mode="clip")
    ),
    "scale_shift": _scale_shift,
    "clamp": _clamp,
    "sigmoid": lambda ctx, n, a, s: ctx.emit(R.sigmoid(a[0])),
    "silu": lambda ctx, n, a, s: ctx.emit(R.nn.silu(a[0])),  # native: one fused kernel
    "gelu": lambda ctx, n, a, s: ctx.emit(
        (R.nn.gelu_tanh if n.attrs["approximate"] == "tanh" else R.nn.gelu)(a[0])
    ),
    "softmax": lambda ctx, n, a, s: ctx.emit(
        R.nn.softmax(a[0], axis=batch_axis(n.attrs["axis"], len(s[0])))
    ),
    "drop_path": lambda ctx, n, a, s: a[0],  # inference
    "layernorm": _layernorm,
    "layernorm2d": _layernorm2d,
    "groupnorm": _groupnorm,
    "parameter": _parameter,
    "buffer": _parameter,  # a parameter that is not learned: the same at inference
    "reshape": lambda ctx, n, a, s: ctx.emit(R.reshape(a[0], ctx.out(n))),
    "permute": lambda ctx, n, a, s: ctx.emit(
        R.permute_dims(a[0], [0, *(i + 1 for i in n.attrs["axes"])])
    ),
    "select": _select,
    "slice": _slice,
    "pad": _pad,
    "sum": _reduce(R.sum),
    "mean": _reduce(R.mean),
    "matmul": _matmul,
}


# The most micro-batches ``main`` calls ``forward`` for directly. More are run by a tree of
# functions, each of which calls the level below this often, and ``main`` makes fewer than
# this many calls per level, so the module grows with log(batch): unrolling a batch of 10,007
# one sample at a time made 10,007 calls, and TVM crashed on them after ~100 s.
MAX_CALLS = 32


def to_relax(
    graph: Graph,
    weights: dict[str, np.ndarray],
    *,
    batch: int | tuple[int, int] = 1,
    dtype: str = "float32",
    micro_batch: int | None = None,
) -> tvm.IRModule:
    """The network as a Relax module whose ``main(inputs...) -> outputs`` takes ``batch``.

    A ``batch`` of ``(low, high)`` gives ``main`` a symbolic batch: see
    :func:`_emit_dynamic`; ``micro_batch`` is then the largest network it runs at once.

    With a ``micro_batch`` that divides ``batch`` and is smaller, the network is emitted
    once, as the private function ``forward`` at the micro-batch size, and ``main`` splits
    its inputs along the batch axis, calls ``forward`` on each slice in turn and
    concatenates the results: the kernels are those of the smaller batch, whose
    activations stay in the cache (see :func:`.build.micro_batch_size`).

    Up to :data:`MAX_CALLS` micro-batches ``main`` calls ``forward`` directly. Beyond, the
    private functions ``forward_batch{N}`` run ``MAX_CALLS ** k`` micro-batches each (``N``
    samples) by calling the level below ``MAX_CALLS`` times, and ``main`` runs the batch as
    the fewest such pieces (the batch's digits in base ``MAX_CALLS``, so fewer than
    ``MAX_CALLS`` calls per level; 56 calls for 10,007 micro-batches). Relax has no loop
    construct; this keeps the module small whatever the batch, at the cost of one more copy
    of the inputs and outputs per level (the split and the concatenation).
    """
    graph = decompose(graph.inference(), EMITTERS)
    weights = derive_weights(graph, weights)
    for node in graph.nodes():
        if node.op != "input" and node.op not in EMITTERS:
            raise SpecError(f"op `{node.op}` has no TVM emitter (target tvm)", node.span)
    bb = relax.BlockBuilder()
    if isinstance(batch, tuple):
        _emit_dynamic(bb, graph, weights, dtype, micro_batch or 1)
        return bb.get()
    micro = batch if micro_batch is None else micro_batch
    if micro < 1 or batch % micro:
        raise ValueError(f"micro-batch {micro} does not divide the batch {batch}")
    if micro == batch:
        _emit_network(bb, "main", graph, weights, batch, dtype)
        return bb.get()
    forward = _emit_network(bb, "forward", graph, weights, micro, dtype, private=True)
    chunks = batch // micro
    levels = [(forward, 1)]  # (function, micro-batches it runs)
    if chunks > MAX_CALLS:
        while levels[-1][1] * MAX_CALLS <= chunks:
            below, size = levels[-1]
            name = f"forward_batch{size * MAX_CALLS * micro}"
            fn = _emit_pieces(bb, name, graph, dtype, [(below, size * micro)] * MAX_CALLS)
            levels.append((fn, size * MAX_CALLS))
    pieces, left = [], chunks
    for fn, size in reversed(levels):
        pieces += [(fn, size * micro)] * (left // size)
        left %= size
    _emit_pieces(bb, "main", graph, dtype, pieces, private=False)
    return bb.get()


def _emit_pieces(
    bb: relax.BlockBuilder,
    name: str,
    graph: Graph,
    dtype: str,
    pieces: list[tuple[relax.GlobalVar, int]],
    private: bool = True,
) -> relax.GlobalVar:
    """Emit ``name(inputs...) -> outputs``, whose batch is the sum of the pieces' sizes: it
    splits the inputs along the batch axis into the pieces, calls each piece's function on
    its slices in turn and concatenates the results."""
    sizes = [size for _, size in pieces]
    params = _params(graph, sum(sizes), dtype)
    if len(set(sizes)) == 1:
        sections: int | list[int] = len(sizes)
    else:
        sections = [int(i) for i in np.cumsum(sizes)[:-1]]
    with bb.function(name, params, private=private):
        with bb.dataflow():
            if len(pieces) == 1:  # e.g. a batch of exactly MAX_CALLS ** k micro-batches
                out = bb.emit_output(relax.Call(pieces[0][0], params))
            else:
                out = _split_call_concat(bb, graph, params, pieces, sections)
        bb.emit_func_output(out)
    return bb.get().get_global_var(name)


def _split_call_concat(
    bb: relax.BlockBuilder,
    graph: Graph,
    params: list[relax.Var],
    pieces: list[tuple[relax.GlobalVar, int]],
    sections: int | list[int],
) -> relax.Var:
    parts = [bb.emit(R.split(p, sections, axis=0)) for p in params]
    results = [
        bb.emit(relax.Call(fn, [bb.emit(p[i]) for p in parts])) for i, (fn, _) in enumerate(pieces)
    ]
    if len(graph.outputs) == 1:
        return bb.emit_output(R.concat(results, axis=0))
    columns = [[bb.emit(r[k]) for r in results] for k in range(len(graph.outputs))]
    return bb.emit_output(relax.Tuple([bb.emit(R.concat(c, axis=0)) for c in columns]))


def _params(graph: Graph, batch: int | tirx.Var, dtype: str) -> list[relax.Var]:
    return [
        relax.Var(name, relax.TensorType((batch, *graph.info(name).shape), dtype))
        for name in graph.inputs
    ]


def _emit_network(
    bb: relax.BlockBuilder,
    name: str,
    graph: Graph,
    weights: dict[str, np.ndarray],
    batch: int,
    dtype: str,
    private: bool = False,
    constants: dict[tuple, relax.Constant] | None = None,
) -> relax.GlobalVar:
    """Emit the graph as the function ``name(inputs...) -> outputs`` at ``batch``; the
    networks of one module share ``constants`` (a weight is stored once)."""
    params = _params(graph, batch, dtype)
    ctx = Context(bb, graph, weights, dtype, batch, {} if constants is None else constants)
    values: dict[str, Any] = dict(zip(graph.inputs, params, strict=True))
    with bb.function(name, params, private=private):
        with bb.dataflow():
            for node in graph.nodes():
                if node.op == "input":
                    continue
                srcs = graph.inputs_of(node.name)
                shapes = [graph.info(s).shape for s in srcs]
                values[node.name] = EMITTERS[node.op](ctx, node, [values[s] for s in srcs], shapes)
            outs = [values[node] for _, node in graph.outputs]
            result = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        bb.emit_func_output(result)
    return bb.get().get_global_var(name)


def dynamic_sizes(micro_batch: int) -> list[int]:
    """The batch sizes a dynamic-batch module holds a network for, largest first: the
    micro-batch and every power of two below it (any batch is a sum of them)."""
    return [
        micro_batch,
        *(2**k for k in reversed(range(micro_batch.bit_length())) if 2**k < micro_batch),
    ]


def _emit_dynamic(
    bb: relax.BlockBuilder,
    graph: Graph,
    weights: dict[str, np.ndarray],
    dtype: str,
    micro_batch: int,
) -> None:
    """Emit ``main`` with a symbolic batch ``n`` (any n >= 1) over fixed-size networks.

    The network is emitted as ``forward{s}`` for each size ``s`` of
    :func:`dynamic_sizes` (their weights shared), so every kernel has static shapes and
    the CPU rules schedule it as in a fixed-batch build. ``main`` dispatches on ``n``:
    a size it holds runs that network; otherwise it runs the largest size below ``n`` on
    the first samples, itself (recursively) on the rest, and concatenates the results.
    A batch of ``n`` takes at most ``n // micro_batch + log2(micro_batch)`` calls; on the
    batches that a fixed build would split into micro-batches of the same size, it runs
    the same kernels.
    """
    sizes = dynamic_sizes(micro_batch)
    constants: dict[tuple, relax.Constant] = {}
    forwards = {
        s: _emit_network(bb, f"forward{s}", graph, weights, s, dtype, True, constants)
        for s in sizes
    }
    n = tirx.Var("batch", "int64")
    params = _params(graph, n, dtype)
    shapes = [graph.info(node).shape for _, node in graph.outputs]

    types = [relax.TensorType((n, *shape), dtype) for shape in shapes]
    result = types[0] if len(types) == 1 else relax.TupleType(types)
    main = bb.add_func(relax.Function.create_empty(params, result), "main")

    def exact(size: int) -> relax.SeqExpr:
        seq = _Seq(bb)
        args = [seq.match(p, (size, *p.ty.shape.values[1:])) for p in params]
        return seq.end(seq.bind(relax.Call(forwards[size], args)))

    def split(size: int) -> relax.SeqExpr:
        seq = _Seq(bb)
        head = [
            seq.match(
                seq.bind(R.strided_slice(p, [0], [0], [size])), (size, *p.ty.shape.values[1:])
            )
            for p in params
        ]
        tail = [seq.bind(R.strided_slice(p, [0], [size], [n])) for p in params]
        parts = [seq.bind(relax.Call(forwards[size], head)), seq.bind(relax.Call(main, tail))]
        if len(shapes) == 1:
            return seq.end(seq.bind(R.concat(parts, axis=0)))
        columns = [[seq.bind(relax.TupleGetItem(p, k)) for p in parts] for k in range(len(shapes))]
        return seq.end(seq.bind(relax.Tuple([seq.bind(R.concat(c, axis=0)) for c in columns])))

    # if n == s: forward{s}; elif n > s: forward{s} on the first s and main on the rest
    # (sizes largest first); else n == 1 (an empty batch fails the size-1 shape check)
    larger = sizes[:-1]  # sizes[-1] is 1; a batch above 1 is split unless it is a size
    body: relax.Expr = exact(1)
    branches = [(n == s, exact(s)) for s in larger] + [(n > s, split(s)) for s in larger or [1]]
    for condition, branch in reversed(branches):
        body = relax.If(relax.prim_value(condition), branch, body)
    seq = _Seq(bb)
    out = seq.match(seq.bind(body), result)
    func = relax.Function(params, seq.end(out), result).with_attr("global_symbol", "main")
    bb.update_func(main, func)


class _Seq:
    """Bindings of one branch of ``main``: each value normalised (its type inferred)."""

    def __init__(self, bb: relax.BlockBuilder) -> None:
        self.bb, self.bindings = bb, []

    def bind(self, value: relax.Expr) -> relax.Var:
        value = self.bb.normalize(value)
        var = relax.Var(f"v{len(self.bindings)}", value.ty)
        self.bindings.append(relax.VarBinding(var, value))
        return var

    def match(self, value: relax.Expr, shape) -> relax.Var:
        ty = shape if isinstance(shape, relax.Type) else relax.TensorType(shape, value.ty.dtype)
        var = relax.Var(f"v{len(self.bindings)}", ty)
        self.bindings.append(relax.MatchCast(var, value, ty))
        return var

    def end(self, body: relax.Expr) -> relax.SeqExpr:
        return relax.SeqExpr([relax.BindingBlock(self.bindings)], body)
