"""Importing an ONNX model (``model.onnx``) as op-table calls.

The file is read with onnx's own parser and never executed: shapes come from ONNX's static
shape inference (with data propagation), and the constant subgraphs an op needs (a
``Reshape`` target computed by ``Shape`` -> ``Gather`` -> ``Concat``, ``Constant`` nodes,
a transposed weight) are folded with NumPy. The batch axis is the first axis of every value;
calls get per-sample shapes and axes. ``Shape`` of a value reads the batch as the sentinel
:data:`BATCH`, so a target that copies the batch size is recognised.

Weight-owning ops are labelled after their initializers when those are named as state_dict
keys (``layer1.0.conv1.weight`` -> ``layer1.0.conv1``, as resdsl's own exporter and
PyTorch's write them), otherwise after the node (``/layer1/layer1.0/conv1/Conv`` ->
``layer1.0.conv1``). The weights, keyed by the spec's state_dict keys, are the returned
graph's ``weights`` attribute.

A value that no output needs is not read (resdsl's exporter broadcasts a parameter over the
batch with ``Where(IsNaN(...), p, p)``: only ``p`` matters). Nodes without an equivalent are
collected and reported together in one :class:`ModelImportError`.
"""

# ruff: noqa: N802, N815  (handlers are named after ONNX ops: _op_MaxPool)
from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..names import SEGMENT, reserved
from .graph import Call, Imported, ModelImportError, Unsupported

BATCH = 2**31 - 1  # the batch size as ``Shape`` reads it: a prime no real axis has
MAX_FOLD = 1 << 24  # elements a folded constant may hold
MAX_VALUES = 1024  # elements of a constant written into the spec (`buffer(values=...)`)
_BIG = 2**62  # a Slice bound at least this large means "to the end"


class _Skip(Exception):  # noqa: N818 - not an error: a reason to skip
    """This node has no resdsl equivalent: the message says why (appended to the op)."""


@dataclass(eq=False)
class _Const:
    """A value known without running the model. ``name``: the initializer it is (``view``
    "same"), a reshape ("reshape") or the transpose ("T") of; ``orig`` that initializer."""

    value: np.ndarray
    name: str | None = None
    orig: np.ndarray | None = None
    view: str = "same"
    batch: bool = False  # holds the batch sentinel (a shape)


# Where a tensor's batch is: (axis, outer, inner): its ONNX axis ``axis`` has ``outer *
# batch * inner`` elements. Batch first is (0, 1, 1); attention as PyTorch exports it moves
# the batch behind the tokens, (L, B, E), and merges it with the heads, (B * H, L, d), and
# Swin's windows, (B * windows, ...). ``outer`` and ``inner``, where not 1, are per-sample
# axes in its place: the per-sample value of (B * H, L, d) is (H, L, d).
_FIRST = (0, 1, 1)


@dataclass(eq=False)
class _Tensor:
    """A value computed per sample: ``id`` a call or graph input, ``shape`` per sample,
    ``lay`` where its batch is among its ONNX axes (see ``_FIRST``)."""

    id: str
    shape: tuple[int, ...] | None
    lay: tuple[int, int, int] = _FIRST

    @property
    def rank(self) -> int:  # ONNX's: with the batch axis
        if self.shape is None:
            raise _Skip(" (the input's shape is unknown)")
        _, outer, inner = self.lay
        return len(self.shape) + 1 - (outer > 1) - (inner > 1)

    def groups(self) -> list[list[int]]:
        """The per-sample axes of each ONNX axis: one each, 0 to 2 for the batch's."""
        at, outer, inner = self.lay
        out, j = [], 0
        for i in range(self.rank):
            n = (outer > 1) + (inner > 1) if i == at else 1
            out.append(list(range(j, j + n)))
            j += n
        return out

    def full(self, batch: int) -> list[int]:
        """The ONNX shape, with ``batch`` for the batch."""
        at, outer, inner = self.lay
        return [
            outer * batch * inner if i == at else (self.shape or ())[g[0]]
            for i, g in enumerate(self.groups())
        ]


class _Bad:
    """The output of a node that could not be imported (reported once, at that node)."""


_BAD = _Bad()


def import_onnx(path: str) -> Imported:
    """The :class:`Imported` graph of the ONNX model at ``path``, with ``weights`` keyed by
    the spec's state_dict keys. Raises :class:`ModelImportError` for anything it cannot
    read: a malformed file, or every node without a resdsl equivalent at once."""
    model = _load(path)
    return _Importer(path, model).run()


# --- loading -----------------------------------------------------------------------------------


def _fail(path: str, message: str) -> ModelImportError:
    return ModelImportError(path, [], f"{path}: {message}")


def _load(path: str) -> Any:
    try:
        import onnx
        from onnx import external_data_helper
    except ImportError as e:  # pragma: no cover - onnx is a dependency of this importer
        raise _fail(path, f"importing ONNX needs the `onnx` package ({e})") from None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _fail(path, f"cannot read the file: {e.strerror or e}") from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf's DecodeError and friends: not a model
        raise _fail(path, f"not an ONNX model ({type(e).__name__}: {e})") from None
    if not isinstance(model, onnx.ModelProto) or not model.HasField("graph"):
        raise _fail(path, "not an ONNX model (no graph)")
    base = os.path.dirname(os.path.abspath(path))
    tensors = list(external_data_helper._get_all_tensors(model))
    external = [t for t in tensors if external_data_helper.uses_external_data(t)]
    for t in external:
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        full = os.path.realpath(os.path.join(base, location))
        if (
            not location
            or os.path.isabs(location)
            or os.path.commonpath([full, os.path.realpath(base)]) != os.path.realpath(base)
        ):
            raise _fail(
                path,
                f"tensor {t.name!r} keeps its data at {location!r}, outside the model's "
                "directory: refused",
            )
        if not os.path.isfile(full):
            raise _fail(path, f"tensor {t.name!r}: its external data file {location!r} is missing")
    if external:
        try:
            external_data_helper.load_external_data_for_model(model, base)
        except Exception as e:
            raise _fail(path, f"cannot read external data ({type(e).__name__}: {e})") from None
    return model


def _infer(model: Any) -> Any:
    from onnx import shape_inference

    try:
        return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        try:
            return shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:
            return model  # shapes only where the file gives them


def _dims(type_proto: Any) -> tuple[int | str | None, ...] | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return tuple(out)


def _f32(value: float) -> float:
    """A float attribute as written: float32's shortest repr (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


# --- labels ------------------------------------------------------------------------------------


def _label_path(text: str) -> bool:
    segs = text.split(".")
    return all(SEGMENT.fullmatch(s) and reserved(s) is None for s in segs)


def _node_label(name: str, op_type: str) -> str:
    """A label from a node name: PyTorch's ``/layer1/layer1.0/conv1/Conv`` ->
    ``layer1.0.conv1``; anything else sanitised."""
    parts: list[str] = []
    for p in (p for p in name.strip("/").split("/") if p):
        if parts and p.startswith(parts[-1] + "."):
            parts[-1] = p
        else:
            parts.append(p)
    if len(parts) > 1 and re.fullmatch(re.escape(op_type) + r"(_\d+)?", parts[-1]):
        parts.pop()
    segs = [re.sub(r"[^A-Za-z0-9_-]", "_", s) for s in ".".join(parts).split(".")]
    segs = [s if reserved(s) is None else s.strip("_") + "_" for s in segs if s.strip("_")]
    return ".".join(segs)


# --- the importer ------------------------------------------------------------------------------

_UNARY = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Sin": "sin",
    "Cos": "cos",
    "Exp": "exp",
    "Abs": "abs",
    "Sqrt": "sqrt",
    "HardSwish": "hardswish",
}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
# ops whose conversion handles a batch that is not the first axis (``_Tensor.lay``)
_ANY_LAYOUT = {
    "Identity", "Dropout", "Cast", "Relu", "Sigmoid", "Tanh", "Exp", "Abs", "Sqrt",
    "HardSwish", "Gelu", "Clip", "Softmax", "Add", "Sub", "Mul", "Div", "MatMul", "Gemm",
    "Shape", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Gather", "Concat",
    "LayerNormalization", "Einsum", "Slice", "Split", "ReduceMean", "ReduceSum", "ReduceL2",
    "Expand",
}  # fmt: skip
_FOLDABLE = {
    "Identity", "Cast", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Concat", "Gather",
    "Slice", "Add", "Sub", "Mul", "Div", "Neg", "Sqrt", "Shape", "ConstantOfShape", "Range",
    "Equal", "Where", "Expand", "Floor", "Ceil", "Min", "Max", "Abs", "Size", "Flatten",
    "Dropout", "Exp", "Relu", "Sigmoid", "Tanh", "Pow", "Not", "Less", "Greater", "Mod",
    "ScatterND", "MatMul", "Clip",
}  # fmt: skip


class _Importer:
    def __init__(self, path: str, model: Any) -> None:
        self.path = path
        self.model = _infer(model)
        g = self.model.graph
        self.graph = g
        self.opset = next(
            (o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 1
        )
        self.shapes: dict[str, tuple[int | str | None, ...] | None] = {}
        for v in [*g.input, *g.value_info, *g.output]:
            dims = _dims(v.type)
            if dims is not None:
                self.shapes[v.name] = dims
        self.values: dict[str, Any] = {}
        self.calls: list[Call] = []
        self.ids: set[str] = set()
        self.weights: dict[str, np.ndarray] = {}
        self.call_shapes: dict[str, tuple[int, ...]] = {}  # per-sample shapes by call id
        self.labels: set[str] = set()
        self.prefixes: set[str] = set()
        self.items: list[Unsupported] = []
        self.materialised: dict[tuple[int, tuple[int, ...]], str] = {}
        self.batch: int | None = None
        self.done: dict[int, Any] = {}  # node index -> its output, fused into an earlier call

    # values

    def run(self) -> Imported:
        from onnx import numpy_helper

        g = self.graph
        inits = {}
        for t in g.initializer:
            try:
                inits[t.name] = numpy_helper.to_array(t)
            except Exception as e:
                raise _fail(self.path, f"initializer {t.name!r} is unreadable ({e})") from None
        for name, arr in inits.items():
            self.values[name] = _Const(_as_float32(arr), name, _as_float32(arr))
        inputs: list[tuple[str, tuple[int, ...]]] = []
        for v in g.input:
            if v.name in inits:
                continue
            dims = self.shapes.get(v.name)
            if not dims or any(not isinstance(d, int) for d in dims[1:]):
                raise _fail(
                    self.path,
                    f"input {v.name!r} needs a known shape (batch, ...), got {_fmt_dims(dims)}",
                )
            if len(dims) < 2:
                raise _fail(self.path, f"input {v.name!r} has no axes besides the batch")
            if isinstance(dims[0], int):
                self.batch = dims[0]
            shape = tuple(int(d) for d in dims[1:])  # type: ignore[arg-type]
            if any(d < 1 for d in shape):
                raise _fail(self.path, f"input {v.name!r} has an empty axis: {_fmt_dims(dims)}")
            inputs.append((v.name, shape))
            self.values[v.name] = _Tensor(v.name, shape)
            self.ids.add(v.name)
        if not inputs:
            raise _fail(self.path, "the model has no inputs")
        if not g.output:
            raise _fail(self.path, "the model has no outputs")
        nodes = self._sorted(g, set(self.values))
        self.nodes = nodes
        gelus = self._gelu_patterns(nodes)
        live = self._live(nodes, gelus)
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            if i in live:
                for name in node.input:
                    self.consumers.setdefault(name, []).append(i)
        outputs_set = {o.name for o in g.output}
        self.graph_outputs = outputs_set
        for i, node in enumerate(nodes):
            if i not in live:
                continue
            if i in self.done:
                self._set(node.output[0], self.done[i])
                continue
            if i in gelus:
                x = self.values.get(gelus[i], _BAD)
                if isinstance(x, _Tensor):
                    self._set(node.output[0], self._call(node.output[0], "gelu", {}, [x], node))
                else:
                    self._set(node.output[0], _BAD)
                continue
            self._convert(i, node)
        outputs: list[str] = []
        for o in g.output:
            v = self.values.get(o.name, _BAD)
            if isinstance(v, _Const):
                dims = self.shapes.get(o.name)
                try:
                    v = self._tensor(v, len(dims) if dims else v.value.ndim + 1)
                except _Skip as e:
                    self.items.append(Unsupported(f"output {o.name}", f"a constant output{e}"))
                    continue
            if v is _BAD and not self.items:  # pragma: no cover - a bug if it happens
                self.items.append(Unsupported(f"output {o.name}", "a value not computed"))
            if isinstance(v, _Tensor) and v.lay != _FIRST:
                self.items.append(Unsupported(f"output {o.name}", "its batch axis is not first"))
                continue
            if isinstance(v, _Tensor):
                if v.id in dict(inputs):
                    v = self._call(o.name + "/output", "identity", {}, [v])
                outputs.append(v.id)
        if self.items:
            raise ModelImportError(self.path, self.items)
        calls = _merge_scale_shift(_prune(self.calls, outputs), outputs)
        name = (
            re.sub(r"[^A-Za-z0-9_]", "_", g.name or "")
            or os.path.splitext(os.path.basename(self.path))[0]
        )
        imported = Imported(name, inputs, calls, outputs, origin=os.path.basename(self.path))
        imported.shapes = {**dict(inputs), **self.call_shapes}
        keep = {c.label for c in calls if c.label}
        imported.weights = {
            k: v for k, v in self.weights.items() if any(_owns(lab, k) for lab in keep)
        }
        return imported

    def _sorted(self, g: Any, known: set[str]) -> list[Any]:
        """The nodes in a topological order (ONNX requires one; a cycle or a value nobody
        computes is an error)."""
        producers: dict[str, int] = {}
        for i, node in enumerate(g.node):
            for o in node.output:
                if o:
                    if o in producers or o in known:
                        raise _fail(self.path, f"value {o!r} is computed twice")
                    producers[o] = i
        deps: list[set[int]] = []
        for i, node in enumerate(g.node):
            d: set[int] = set()
            for name in node.input:
                if not name or name in known:
                    continue
                if name not in producers:
                    raise _fail(
                        self.path,
                        f"node {node.name or i} ({node.op_type}) reads {name!r}, which no "
                        "node, input or initializer gives",
                    )
                d.add(producers[name])
            deps.append(d)
        for o in g.output:
            if o.name not in producers and o.name not in known:
                raise _fail(self.path, f"output {o.name!r} is computed by no node")
        order: list[int] = []
        state = [0] * len(g.node)
        for start in range(len(g.node)):
            if state[start]:
                continue
            stack = [(start, iter(sorted(deps[start])))]
            state[start] = 1
            while stack:
                i, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    stack.pop()
                    state[i] = 2
                    order.append(i)
                elif state[nxt] == 1:
                    raise _fail(
                        self.path, f"the graph has a cycle through node {g.node[nxt].name or nxt}"
                    )
                elif state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter(sorted(deps[nxt]))))
        return [g.node[i] for i in order]

    def _static(self, name: str) -> np.ndarray | None:
        v = self.values.get(name)
        if isinstance(v, _Const):
            return v.value
        node = self._producer.get(name)
        if node is not None and node.op_type == "Constant":
            try:
                return _constant_value(node)
            except Exception:
                return None
        return None

    def _gelu_patterns(self, nodes: list[Any]) -> dict[int, str]:
        """Erf-based GELU (``x * 0.5 * (1 + erf(x / sqrt 2))`` in either grouping, as PyTorch
        exports it before opset 20): the index of its last node -> x."""
        self._producer = {o: n for n in nodes for o in n.output}
        index = {id(n): i for i, n in enumerate(nodes)}
        users: dict[str, list[Any]] = {}
        for n in nodes:
            for name in n.input:
                users.setdefault(name, []).append(n)

        def scalar(name: str, target: float) -> bool:
            v = self._static(name)
            return v is not None and v.size == 1 and abs(float(v.reshape(())) - target) < 1e-4

        def other(n: Any, name: str) -> str | None:
            ins = list(n.input)
            if len(ins) != 2 or name not in ins:
                return None
            return ins[1] if ins[0] == name else ins[0]

        def only_user(name: str, op_type: str) -> Any:
            us = users.get(name, [])
            return us[0] if len(us) == 1 and us[0].op_type == op_type else None

        out: dict[int, str] = {}
        for n in nodes:
            if n.op_type != "Erf" or len(n.input) != 1:
                continue
            pre = self._producer.get(n.input[0])
            if pre is None or len(pre.input) != 2:
                continue
            x, c = pre.input
            if not (
                (pre.op_type == "Div" and scalar(c, math.sqrt(2)))
                or (pre.op_type == "Mul" and scalar(c, 1 / math.sqrt(2)))
            ):
                continue
            add = only_user(n.output[0], "Add")
            if add is None or not scalar(other(add, n.output[0]) or "", 1.0):
                continue
            mul = only_user(add.output[0], "Mul")
            if mul is None:
                continue
            m = other(mul, add.output[0])
            if m == x:  # (x * (1 + erf)) * 0.5
                last = only_user(mul.output[0], "Mul")
                if last is None or not scalar(other(last, mul.output[0]) or "", 0.5):
                    continue
                out[index[id(last)]] = x
            else:  # (x * 0.5) * (1 + erf)
                half = self._producer.get(m or "")
                if half is None or half.op_type != "Mul" or other(half, x) is None:
                    continue
                if not scalar(other(half, x) or "", 0.5):
                    continue
                out[index[id(mul)]] = x
        return out

    def _live(self, nodes: list[Any], gelus: dict[int, str]) -> set[int]:
        needed = {o.name for o in self.graph.output}
        live: set[int] = set()
        for i in range(len(nodes) - 1, -1, -1):
            node = nodes[i]
            if not any(o in needed for o in node.output):
                continue
            live.add(i)
            if i in gelus:
                needed.add(gelus[i])
            elif (
                node.op_type == "Where" and len(node.input) == 3 and node.input[1] == node.input[2]
            ):
                needed.add(node.input[1])
            else:
                needed.update(node.input)
        return live

    def _set(self, name: str, value: Any) -> None:
        if name:
            self.values[name] = value

    def _per_sample(self, name: str) -> tuple[int, ...] | None:
        dims = self.shapes.get(name)
        if not dims or any(not isinstance(d, int) for d in dims[1:]):
            return None
        return tuple(int(d) for d in dims[1:])  # type: ignore[arg-type]

    def _fresh(self, base: str) -> str:
        out, k = base, 1
        while out in self.ids:
            out, k = f"{base}#{k}", k + 1
        self.ids.add(out)
        return out

    def _call(
        self,
        out: str,
        op: str,
        attrs: dict[str, Any],
        inputs: list[_Tensor],
        node: Any = None,
        label: str | None = None,
        shape: tuple[int, ...] | str | None = "infer",
        lay: tuple[int, int, int] | None = None,
    ) -> _Tensor:
        """A call of ``op``; its batch is where its first input's is, unless ``lay``."""
        cid = self._fresh(out)
        source = f"node {node.name or node.op_type} ({node.op_type})" if node is not None else ""
        self.calls.append(Call(cid, op, attrs, [t.id for t in inputs], label, "", source))
        if lay is None:
            lay = inputs[0].lay if inputs else _FIRST
        if shape == "infer":
            shape = _op_shape(op, attrs, inputs) or (
                self._per_sample(out) if lay == _FIRST else None
            )
        if isinstance(shape, tuple):
            self.call_shapes[cid] = shape
        return _Tensor(cid, shape, lay)  # type: ignore[arg-type]

    def _label(self, node: Any, *candidates: tuple[str | None, str]) -> str:
        """A fresh label: the first candidate initializer named ``<label>.<suffix>``, else
        one from the node name, else from the op type."""
        for name, suffix in candidates:
            if name and name.endswith("." + suffix):
                base = name[: -len(suffix) - 1]
                if base and _label_path(base) and self._free(base):
                    return self._claim(base)
        base = _node_label(node.name or "", node.op_type) or node.op_type.lower()
        return self._claim(self._unique(base))

    def _free(self, label: str) -> bool:
        if label in self.labels or label in self.prefixes:
            return False
        segs = label.split(".")
        return not any(".".join(segs[:k]) in self.labels for k in range(1, len(segs)))

    def _unique(self, base: str) -> str:
        if not _label_path(base):
            base = _node_label(base, "") or "layer"
        out, k = base, 1
        while not self._free(out):
            out, k = f"{base}_{k}", k + 1
        return out

    def _claim(self, label: str) -> str:
        self.labels.add(label)
        segs = label.split(".")
        self.prefixes.update(".".join(segs[:k]) for k in range(1, len(segs)))
        return label

    # conversion

    def _convert(self, i: int, node: Any) -> None:
        op = node.op_type
        where = f"node {node.name or i} ({op})"
        domain = node.domain or "ai.onnx"
        ins = [self.values.get(n, _BAD) if n else None for n in node.input]
        if op == "Where" and len(ins) == 3 and node.input[1] == node.input[2]:
            ins[0] = None  # the condition is never read: both branches are one value
            self._set(node.output[0], self._op_Where(node, ins))
            return
        if any(v is _BAD for v in ins):
            for o in node.output:
                self._set(o, _BAD)
            return
        try:
            if node.domain not in ("", "ai.onnx"):
                raise _Skip("")
            if op == "Constant":
                self._set(node.output[0], _Const(_as_float32(_constant_value(node))))
                return
            if op in _FOLDABLE and all(v is None or isinstance(v, _Const) for v in ins):
                for name, value in zip(node.output, self._fold(node, ins), strict=False):
                    self._set(name, value)
                return
            handler = getattr(self, f"_op_{op}", None)
            if handler is None:
                raise _Skip("")
            if op not in _ANY_LAYOUT and any(
                isinstance(v, _Tensor) and v.lay != _FIRST for v in ins
            ):
                raise _Skip(" (on a value whose batch is not its first axis)")
            result = handler(node, ins)
            if not isinstance(result, list):
                result = [result]
            for name, value in zip(node.output, result, strict=False):
                self._set(name, value)
        except _Skip as e:
            self.items.append(Unsupported(where, f"ONNX op {domain}:{op}{e}"))
            for o in node.output:
                self._set(o, _BAD)
        except Exception as e:  # a malformed node: reported like an unsupported one
            self.items.append(
                Unsupported(
                    where, f"ONNX op {domain}:{op} (cannot read it: {type(e).__name__}: {e})"
                )
            )
            for o in node.output:
                self._set(o, _BAD)

    def _attrs(self, node: Any) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def _x(self, v: Any) -> _Tensor:
        if isinstance(v, _Tensor):
            return v
        raise _Skip(" (a constant where a computed value is expected)")

    def _const(self, v: Any, what: str) -> _Const:
        if isinstance(v, _Const):
            return v
        raise _Skip(f" ({what} must be a constant)")

    def _ints(self, v: Any, what: str) -> list[int]:
        c = self._const(v, what).value
        if c.dtype.kind not in "iu":
            raise _Skip(f" ({what} must be integers)")
        return [int(x) for x in c.reshape(-1)]

    def _only_first_output(self, node: Any) -> None:
        for o in node.output[1:]:
            if o and (o in self.consumers or o in self.graph_outputs):
                raise _Skip(f" (its output {o!r} is read)")

    def _axis_of(self, x: _Tensor, axis: int, what: str = "axis") -> int:
        """ONNX axis ``axis`` of ``x`` as a per-sample axis (``x``'s batch anywhere)."""
        if x.lay == _FIRST:
            return self._axis(axis, x.rank, what)
        a = axis + x.rank if axis < 0 else axis
        if not 0 <= a < x.rank:
            raise _Skip(f" ({what} {axis} out of range)")
        if a == x.lay[0]:
            raise _Skip(f" ({what} {axis} holds the batch)")
        return x.groups()[a][0]

    def _axis(self, axis: int, rank: int, what: str = "axis") -> int:
        """A per-sample axis (>= 0) from an ONNX axis over ``rank`` axes with the batch."""
        a = axis + rank if axis < 0 else axis
        if not 0 <= a < rank:
            raise _Skip(f" ({what} {axis} out of range)")
        if a == 0:
            raise _Skip(f" ({what} {axis} is the batch axis)")
        return a - 1

    def _tensor(self, v: Any, rank: int, lay: tuple[int, int, int] = _FIRST) -> _Tensor:
        """A constant operand as a call: a ``parameter`` when it is a named initializer (a
        weight such as a layer scale), else a ``buffer`` holding its values. ``rank`` and
        ``lay``: those of the value it meets."""
        if isinstance(v, _Tensor):
            return v
        c = self._const(v, "the operand")
        if c.batch or c.value.dtype.kind not in "f":
            raise _Skip(" (an integer constant as an operand)")
        arr = c.value
        if lay != _FIRST and arr.ndim > rank - 1 - lay[0]:  # it meets the batch's axis
            at, outer, inner = lay
            full = (1,) * (rank - arr.ndim) + arr.shape
            if len(full) != rank or full[at] != 1:
                raise _Skip(f" (a constant of shape {arr.shape} spans the batch axis)")
            ones = (1,) * ((outer > 1) + (inner > 1))
            ps = (*full[:at], *ones, *full[at + 1 :])
        elif arr.ndim == rank and arr.shape[0] == 1:
            ps = arr.shape[1:]
        elif arr.ndim < rank:
            ps = arr.shape
        else:
            raise _Skip(f" (a constant of shape {arr.shape} spans the batch axis)")
        ps = tuple(int(d) for d in ps) or (1,)
        key = (id(c), ps)
        if key in self.materialised:
            return _Tensor(self.materialised[key], ps)
        if c.name and _label_path(c.name) and self._free(c.name):
            label = self._claim(c.name)
            stored = (1, *ps)
            if c.orig is not None and c.view != "T" and c.orig.size == arr.size:
                data = c.orig
                stored = tuple(int(d) for d in c.orig.shape) or (1,)
            else:
                data = arr.reshape(stored)
            data = data.reshape(stored)
            attrs: dict[str, Any] = {"shape": ps}
            if stored != (1, *ps):
                attrs["stored"] = stored
            t = self._call(label, "parameter", attrs, [], None, label, ps)
            self.weights[label] = np.ascontiguousarray(data, np.float32)
        elif arr.size <= MAX_VALUES:
            values = tuple(float(_f32(x)) for x in arr.reshape(-1))
            t = self._call(c.name or "constant", "buffer", {
                "shape": ps, "values": values, "persistent": False}, [], shape=ps)  # fmt: skip
        else:
            label = self._claim(self._unique(_node_label(c.name or "constant", "") or "constant"))
            attrs = {"shape": ps}
            t = self._call(label, "parameter", attrs, [], None, label, ps)
            self.weights[label] = np.ascontiguousarray(arr.reshape((1, *ps)), np.float32)
        self.materialised[key] = t.id
        return t

    # constant folding

    def _fold(self, node: Any, ins: list[_Const | None]) -> list[_Const]:
        op, a = node.op_type, self._attrs(node)
        vals = [v.value if v is not None else None for v in ins]
        batch = any(v is not None and v.batch for v in ins)
        first = ins[0] if ins else None

        def out(value: Any, view: str | None = None) -> list[_Const]:
            arr = np.asarray(value)
            if arr.size > MAX_FOLD:
                raise _Skip(f" (a constant of {arr.size} elements)")
            batch_held = batch and _holds_batch(arr)
            if view and first is not None and first.orig is not None:
                v = view
                if first.view != "same":
                    v = "reshape" if view == "reshape" and first.view == "reshape" else "other"
                return [_Const(arr, first.name, first.orig, v, batch_held)]
            return [_Const(arr, batch=batch_held)]

        x = vals[0] if vals else None
        if op == "Identity" and first is not None and first.name is not None:
            # PyTorch's exporter shares one initializer among equal weights (the zero
            # biases of an untrained model) through Identity nodes: its name is not theirs
            return [_Const(first.value, batch=first.batch)]
        if op in ("Identity", "Dropout"):
            return [ins[0]]  # type: ignore[list-item]
        if op == "Cast":
            from onnx import helper

            return out(x.astype(helper.tensor_dtype_to_np_dtype(a["to"])))
        if op == "Reshape":
            target = [int(t) for t in vals[1].reshape(-1)]
            if not a.get("allowzero", 0):
                target = [x.shape[i] if t == 0 else t for i, t in enumerate(target)]
            return out(x.reshape(target), "reshape")
        if op == "Flatten":
            axis = a.get("axis", 1) % max(x.ndim, 1) if x.ndim else 0
            return out(x.reshape(int(np.prod(x.shape[:axis])), -1), "reshape")
        if op == "Transpose":
            perm = a.get("perm") or list(range(x.ndim))[::-1]
            return out(np.transpose(x, perm), "T" if list(perm) == [1, 0] else "other")
        if op in ("Unsqueeze", "Squeeze"):
            axes = a.get("axes") if "axes" in a else (
                [int(t) for t in vals[1].reshape(-1)] if len(vals) > 1 and vals[1] is not None
                else None)  # fmt: skip
            if op == "Unsqueeze":
                rank = x.ndim + len(axes)
                shape = list(x.shape)
                for ax in sorted(ax % rank for ax in axes):
                    shape.insert(ax, 1)
                return out(x.reshape(shape), "reshape")
            if axes is None:
                return out(np.squeeze(x), "reshape")
            return out(np.squeeze(x, tuple(ax % x.ndim for ax in axes)), "reshape")
        if op == "Concat":
            return out(np.concatenate([v for v in vals if v is not None], axis=a["axis"]))
        if op == "Gather":
            return out(np.take(x, vals[1].astype(np.int64), axis=a.get("axis", 0)))
        if op == "Slice":
            if self.opset < 10:
                starts, ends, axes = a["starts"], a["ends"], a.get("axes")
                steps = None
            else:
                starts, ends = vals[1].reshape(-1), vals[2].reshape(-1)
                axes = vals[3].reshape(-1) if len(vals) > 3 and vals[3] is not None else None
                steps = vals[4].reshape(-1) if len(vals) > 4 and vals[4] is not None else None
            axes = list(range(len(starts))) if axes is None else axes
            steps = [1] * len(starts) if steps is None else steps
            index = [slice(None)] * x.ndim
            for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
                index[int(ax)] = slice(_clip(int(s)), _clip(int(e)), int(st))
            return out(x[tuple(index)])
        if op == "Shape":
            start, end = a.get("start", 0), a.get("end")
            dims = np.asarray(x.shape, np.int64)[start:end]
            return [_Const(dims, batch=batch and _holds_batch(dims))]
        if op == "Size":
            return out(np.asarray(x.size, np.int64))
        if op == "ConstantOfShape":
            shape = [int(t) for t in x.reshape(-1)]
            if math.prod(shape) > MAX_FOLD or any(d < 0 for d in shape):
                raise _Skip(f" (a constant of shape {shape})")
            from onnx import numpy_helper

            fill = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            return out(np.full(shape, fill.reshape(-1)[0], fill.dtype))
        if op == "Range":
            start, limit, delta = (float(v.reshape(())) for v in vals[:3])
            if delta == 0 or abs((limit - start) / delta) > MAX_FOLD:
                raise _Skip(" (a range too long)")
            return out(np.arange(vals[0].reshape(()), vals[1].reshape(()), vals[2].reshape(())))
        if op == "Expand":
            shape = [int(t) for t in vals[1].reshape(-1)]
            if ins[1].batch and shape and shape[0] == BATCH:
                # a constant repeated for every sample (a class token): one sample's copy
                shape[0] = 1
                if not x.ndim or np.broadcast_shapes(x.shape, tuple(shape)) == x.shape:
                    return [ins[0]]
            full = np.broadcast_shapes(x.shape, tuple(shape))
            if math.prod(full) > MAX_FOLD:
                raise _Skip(f" (a constant of shape {full})")
            return out(np.broadcast_to(x, full).copy())
        if op == "Where":
            return out(np.where(vals[0], vals[1], vals[2]))
        if op == "Clip":  # of constants: Swin V2's logit scale, clamped
            if self.opset < 11:
                lo, hi = a.get("min"), a.get("max")
            else:
                lo, hi = (v if v is None else v.reshape(()) for v in [*vals, None, None][1:3])
            return out(np.clip(x, lo, hi))
        if op == "MatMul":  # of constants: Swin V2's position MLP on its coordinate table
            if (
                x.ndim == 0
                or vals[1].ndim == 0
                or x.shape[-1] != vals[1].shape[max(vals[1].ndim - 2, 0)]
            ):
                raise _Skip(" (operands that do not fit)")
            return out(np.matmul(x, vals[1]))
        if op == "ScatterND":  # Swin's shifted-window mask, built by slice assignments
            index, updates = vals[1].astype(np.int64), vals[2]
            k = index.shape[-1] if index.ndim else 0
            if not 1 <= k <= x.ndim or updates.shape != index.shape[:-1] + x.shape[k:]:
                raise _Skip(" (indices and updates do not fit the data)")
            if np.any(index < -np.asarray(x.shape[:k])) or np.any(index >= x.shape[:k]):
                raise _Skip(" (an index out of range)")
            where = tuple(np.moveaxis(index, -1, 0))
            result = x.copy()
            reduction = a.get("reduction", b"none")
            reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
            if reduction == "none":
                result[where] = updates
            elif reduction in ("add", "mul", "min", "max"):
                ufunc = {"add": np.add, "mul": np.multiply, "min": np.minimum, "max": np.maximum}
                ufunc[reduction].at(result, where, updates)
            else:
                raise _Skip(f" (reduction {reduction!r})")
            return out(result)
        binary = {
            "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Equal": np.equal,
            "Pow": np.power, "Less": np.less, "Greater": np.greater,
            "Mod": np.fmod if a.get("fmod") else np.mod,
        }  # fmt: skip
        if op == "Mod" and np.any(vals[1] == 0):
            raise _Skip(" (a division by zero)")
        if op in binary:
            return out(binary[op](vals[0], vals[1]))
        if op == "Div":
            if x.dtype.kind in "iu":
                if np.any(vals[1] == 0):
                    raise _Skip(" (an integer division by zero)")
                return out(np.trunc(x / vals[1]).astype(x.dtype))
            return out(np.divide(x, vals[1]))
        if op in ("Min", "Max"):
            f = np.minimum if op == "Min" else np.maximum
            acc = vals[0]
            for v in vals[1:]:
                acc = f(acc, v)
            return out(acc)
        unary = {
            "Neg": np.negative, "Sqrt": np.sqrt, "Floor": np.floor, "Ceil": np.ceil,
            "Abs": np.abs, "Exp": np.exp, "Tanh": np.tanh, "Not": np.logical_not,
            "Relu": lambda v: np.maximum(v, 0), "Sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        }  # fmt: skip
        if op in unary:
            with np.errstate(all="ignore"):
                return out(unary[op](x))
        raise _Skip("")

    # ops

    def _unary(self, node: Any, ins: list[Any]) -> _Tensor:
        return self._call(node.output[0], _UNARY[node.op_type], {}, [self._x(ins[0])], node)

    _op_Relu = _op_Sigmoid = _op_Tanh = _op_Exp = _op_Abs = _op_Sqrt = _op_HardSwish = _unary

    def _op_Shape(self, node: Any, ins: list[Any]) -> _Const:
        x = self._x(ins[0])
        if x.shape is None:
            raise _Skip(" (unknown input shape)")
        a = self._attrs(node)
        dims = np.asarray(x.full(self.batch or BATCH), np.int64)[a.get("start", 0) : a.get("end")]
        return _Const(dims, batch=self.batch is None and _holds_batch(dims))

    def _op_Identity(self, node: Any, ins: list[Any]) -> Any:
        return ins[0]

    def _op_Dropout(self, node: Any, ins: list[Any]) -> Any:
        self._only_first_output(node)
        return ins[0]

    def _op_Cast(self, node: Any, ins: list[Any]) -> Any:
        from onnx import TensorProto

        if self._attrs(node).get("to") not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            raise _Skip(" (a cast to a type other than float)")
        return self._x(ins[0])

    def _op_Gelu(self, node: Any, ins: list[Any]) -> _Tensor:
        approx = self._attrs(node).get("approximate", b"none")
        approx = approx.decode() if isinstance(approx, bytes) else str(approx)
        if approx not in ("none", "tanh"):
            raise _Skip(f" (approximate={approx!r})")
        attrs = {"approximate": approx} if approx != "none" else {}
        return self._call(node.output[0], "gelu", attrs, [self._x(ins[0])], node)

    def _op_Clip(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        a = self._attrs(node)
        if self.opset < 11:
            lo, hi = a.get("min"), a.get("max")
        else:
            bounds = [None, None]
            for k, v in enumerate(ins[1:3]):
                if v is not None:
                    bounds[k] = float(self._const(v, "the bound").value.reshape(()))
            lo, hi = bounds
        lo = None if lo is None or lo <= -3.4e38 else _f32(lo)
        hi = None if hi is None or hi >= 3.4e38 else _f32(hi)
        if lo == 0 and hi == 6:
            return self._call(node.output[0], "relu6", {}, [x], node)
        if lo == 0 and hi is None:
            return self._call(node.output[0], "relu", {}, [x], node)
        if lo is None and hi is None:
            return x
        return self._call(node.output[0], "clamp", {"min": lo, "max": hi}, [x], node)

    def _op_HardSigmoid(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        a = self._attrs(node)
        alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
        if abs(alpha - 1 / 6) < 1e-6 and abs(beta - 0.5) < 1e-7:
            return self._call(node.output[0], "hardsigmoid", {}, [x], node)
        affine = {"scale": _f32(alpha), "shift": _f32(beta)}
        y = self._call(node.output[0] + "/affine", "scale_shift", affine, [x], node, shape=x.shape)
        return self._call(node.output[0], "clamp", {"min": 0.0, "max": 1.0}, [y], node)

    def _op_Softmax(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        axis = self._attrs(node).get("axis", 1 if self.opset < 13 else -1)
        a = self._axis_of(x, axis)
        last = len(x.shape or ()) - 1
        if self.opset < 13 and a != last:
            raise _Skip(" (before opset 13, Softmax over several axes)")
        attrs = {} if a == last else {"axis": a}
        return self._call(node.output[0], "softmax", attrs, [x], node)

    def _binary(self, node: Any, ins: list[Any]) -> _Tensor:
        a, b = ins[0], ins[1]
        op = _BINARY[node.op_type]
        out_dims = self.shapes.get(node.output[0])
        if isinstance(a, _Tensor) and isinstance(b, _Tensor):
            if a.rank != b.rank:
                raise _Skip(" (operands of different ranks broadcast across the batch axis)")
            if a.lay != b.lay:
                raise _Skip(" (operands whose batches are in different places)")
            return self._call(node.output[0], op, {}, [a, b], node)
        t, c = (a, b) if isinstance(a, _Tensor) else (b, a)
        c = self._const(c, "an operand")
        if out_dims is not None and len(out_dims) != t.rank:
            raise _Skip(" (a constant operand of higher rank)")
        named = c.name is not None and _label_path(c.name)
        if c.value.size == 1 and not named and c.value.dtype.kind == "f":
            s = _f32(float(c.value.reshape(())))
            t_first = t is a
            attrs: dict[str, Any] | None = None
            if op == "add":
                attrs = {"shift": s}
            elif op == "sub":
                attrs = {"shift": _f32(-s)} if t_first else {"scale": -1.0, "shift": s}
            elif op == "mul":
                attrs = {"scale": s}
            elif op == "div" and t_first and s != 0:
                attrs = {"scale": _f32(1 / s)}
            if attrs is not None:
                return self._call(node.output[0], "scale_shift", attrs, [t], node)
        m = self._tensor(c, t.rank, t.lay)
        return self._call(
            node.output[0], op, {}, [a if a is t else m, b if b is t else m], node, lay=t.lay
        )

    _op_Add = _op_Sub = _op_Mul = _op_Div = _binary

    def _op_Sum(self, node: Any, ins: list[Any]) -> Any:
        ts = [self._x(v) for v in ins]
        if len(ts) == 1:
            return ts[0]
        if len({t.rank for t in ts}) != 1:
            raise _Skip(" (operands of different ranks)")
        return self._call(node.output[0], "add", {}, ts, node)

    def _op_Where(self, node: Any, ins: list[Any]) -> Any:
        if len(node.input) == 3 and node.input[1] == node.input[2]:
            v = self.values.get(node.input[1], _BAD)
            if isinstance(v, _Const):
                dims = self.shapes.get(node.output[0])
                if not dims:
                    raise _Skip(" (unknown output shape)")
                return self._tensor(v, len(dims))
            return v
        raise _Skip(" (with a computed condition)")

    def _op_Conv(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        w = self._const(ins[1], "the weight")
        b = self._const(ins[2], "the bias") if len(ins) > 2 and ins[2] is not None else None
        a = self._attrs(node)
        spatial = w.value.ndim - 2
        if spatial not in (1, 2) or x.shape is None or len(x.shape) != spatial + 1:
            raise _Skip(f" ({spatial}-D convolution)" if spatial not in (1, 2) else " (input rank)")
        kernel = tuple(int(k) for k in w.value.shape[2:])
        stride = tuple(a.get("strides", [1] * spatial))
        dilation = tuple(a.get("dilations", [1] * spatial))
        groups = int(a.get("group", 1))
        if w.value.shape[1] * groups != x.shape[0]:
            raise _Skip(" (the weight does not fit the input's channels)")
        if tuple(a.get("kernel_shape", kernel)) != kernel:
            raise _Skip(" (kernel_shape differs from the weight's)")
        begin, end = self._pads(a, x.shape[1:], kernel, stride, dilation)
        label = self._label(node, (w.name, "weight"), (b.name if b else None, "bias"))
        if begin != end:  # asymmetric: the padding first, as its own op
            pads = tuple(p for k in reversed(range(spatial)) for p in (begin[k], end[k]))
            shape = (
                x.shape[0],
                *(s + p + q for s, p, q in zip(x.shape[1:], begin, end, strict=True)),
            )
            x = self._call(node.output[0] + "/pad", "pad", {"pads": pads}, [x], node, shape=shape)
            begin = end = (0,) * spatial
        if spatial == 1:
            attrs = {"out_channels": int(w.value.shape[0]), "kernel": kernel[0],
                     "stride": stride[0], "padding": begin[0], "dilation": dilation[0]}  # fmt: skip
            op = "conv1d"
        else:
            attrs = {"out_channels": int(w.value.shape[0]), "kernel": kernel, "stride": stride,
                     "padding": tuple(begin), "dilation": dilation}  # fmt: skip
            op = "conv2d"
        attrs["groups"] = groups
        attrs["bias"] = b is not None
        self.weights[f"{label}.weight"] = _weight(w)
        if b is not None:
            self.weights[f"{label}.bias"] = _weight(b).reshape(-1)
        return self._call(node.output[0], op, attrs, [x], node, label)

    def _pads(
        self, a: dict[str, Any], size: tuple[int, ...], kernel: tuple[int, ...],
        stride: tuple[int, ...], dilation: tuple[int, ...],
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:  # fmt: skip
        n = len(kernel)
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto in ("NOTSET", ""):
            pads = list(a.get("pads", [0] * 2 * n))
            if len(pads) != 2 * n or any(p < 0 for p in pads):
                raise _Skip(f" (pads {pads})")
            return tuple(pads[:n]), tuple(pads[n:])
        if auto == "VALID":
            return (0,) * n, (0,) * n
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for s, k, st, d in zip(size, kernel, stride, dilation, strict=True):
                total = max((-(-s // st) - 1) * st + d * (k - 1) + 1 - s, 0)
                small = total // 2
                begin.append(small if auto == "SAME_UPPER" else total - small)
                end.append(total - begin[-1])
            return tuple(begin), tuple(end)
        raise _Skip(f" (auto_pad={auto})")

    def _op_BatchNormalization(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        scale, shift, mean, var = (self._const(v, "a statistic") for v in ins[1:5])
        a = self._attrs(node)
        if a.get("training_mode", 0):
            raise _Skip(" (training mode)")
        self._only_first_output(node)
        if x.shape is None or len(x.shape) != 3:
            raise _Skip(" (batch norm of a value that is not a (C, H, W) map)")
        affine = not (
            not (scale.name and _label_path(scale.name))
            and np.all(scale.value == 1)
            and np.all(shift.value == 0)
        )
        label = self._label(
            node, (scale.name if affine else None, "weight"), (mean.name, "running_mean")
        )
        attrs: dict[str, Any] = {"eps": _f32(a.get("epsilon", 1e-5))}
        if not affine:
            attrs["affine"] = False
        else:
            self.weights[f"{label}.weight"] = _weight(scale).reshape(-1)
            self.weights[f"{label}.bias"] = _weight(shift).reshape(-1)
        self.weights[f"{label}.running_mean"] = _weight(mean).reshape(-1)
        self.weights[f"{label}.running_var"] = _weight(var).reshape(-1)
        self.weights[f"{label}.num_batches_tracked"] = np.asarray(0, np.int64)
        return self._call(node.output[0], "batchnorm2d", attrs, [x], node, label)

    def _linear(
        self, node: Any, x: _Tensor, weight: np.ndarray, bias: np.ndarray | None, label: str
    ) -> _Tensor:
        self.weights[f"{label}.weight"] = np.ascontiguousarray(weight, np.float32)
        attrs: dict[str, Any] = {"out_features": int(weight.shape[0])}
        if bias is not None:
            self.weights[f"{label}.bias"] = np.ascontiguousarray(bias, np.float32)
        else:
            attrs["bias"] = False
        out = node.output[0]
        return self._call(out, "linear", attrs, [x], node, label)

    def _op_Gemm(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        w = self._const(ins[1], "B (the weight)")
        c = self._const(ins[2], "C (the bias)") if len(ins) > 2 and ins[2] is not None else None
        a = self._attrs(node)
        if a.get("transA", 0) or x.rank != 2 or x.lay[0] != 0 or w.value.ndim != 2:
            raise _Skip(" (only x @ W with a (batch, features) input)")
        weight = w.value if a.get("transB", 0) else w.value.T
        weight = weight * np.float32(a.get("alpha", 1.0)) if a.get("alpha", 1.0) != 1 else weight
        if weight.shape[1] != x.shape[-1]:  # type: ignore[index]
            raise _Skip(" (the weight does not fit the input)")
        bias = None
        if c is not None:
            try:
                bias = np.broadcast_to(c.value, (1, weight.shape[0])).reshape(-1)
            except ValueError:
                raise _Skip(" (a bias that is not per output feature)") from None
            bias = bias * np.float32(a.get("beta", 1.0))
        names = ((w.name if w.view == "same" else None, "weight"),
                 (c.name if c is not None else None, "bias"))  # fmt: skip
        return self._linear(node, x, weight, bias, self._label(node, *names))

    def _op_MatMul(self, node: Any, ins: list[Any]) -> _Tensor:
        a, b = ins
        if isinstance(a, _Tensor) and isinstance(b, _Tensor):
            if a.rank != b.rank:
                raise _Skip(" (operands of different ranks broadcast across the batch axis)")
            if a.lay != b.lay or a.lay[0] >= a.rank - 2:
                raise _Skip(" (a product over the batch's axis)")
            return self._call(node.output[0], "matmul", {}, [a, b], node)
        x = self._x(a)
        if x.lay[0] == x.rank - 1:
            raise _Skip(" (a product over the batch's axis)")
        w = self._const(b, "the weight")
        if w.value.ndim != 2 or x.shape is None or not x.shape or x.shape[-1] != w.value.shape[0]:
            raise _Skip(" (a constant operand that is not an (in, out) matrix)")
        weight = w.value.T
        wname = w.name if w.view == "T" else None
        # x @ W + bias: the Add that reads only this product becomes the bias
        bias, bname = None, None
        users = self.consumers.get(node.output[0], [])
        if len(users) == 1 and node.output[0] not in self.graph_outputs:
            add = self.nodes[users[0]]
            if add.op_type == "Add" and len(add.input) == 2:
                other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
                c = self.values.get(other)
                if (
                    isinstance(c, _Const)
                    and c.value.dtype.kind == "f"
                    and c.value.shape[-1:] == (weight.shape[0],)
                    and c.value.size == weight.shape[0]
                    and other != node.output[0]
                ):
                    bias, bname = c.value.reshape(-1), c.name
                    label = self._label(node, (wname, "weight"), (bname, "bias"))
                    out = self._linear(add, x, weight, bias, label)
                    self.done[users[0]] = out
                    return out
        label = self._label(node, (wname, "weight"))
        return self._linear(node, x, weight, None, label)

    def _op_Einsum(self, node: Any, ins: list[Any]) -> _Tensor:
        """A batched matrix product (``bhid,bhjd->bhij``, ``bhij,bhjd->bhid``: MaxViT's
        attention), ``b`` transposed first where its last two letters are swapped."""
        eq = self._attrs(node)["equation"]
        eq = (eq.decode() if isinstance(eq, bytes) else eq).replace(" ", "")
        if len(ins) != 2 or eq.count("->") != 1 or "..." in eq:
            raise _Skip(f" ({eq!r}: only batched matrix products of two values)")
        (ta, tb), out = eq.split("->")[0].split(","), eq.split("->")[1]
        a, b = self._x(ins[0]), self._x(ins[1])
        shared = ta[:-2]
        if not (
            len(ta) == len(tb) == len(out) == a.rank == b.rank >= 3
            and tb[:-2] == shared == out[:-2]
            and len(set(ta + tb)) == len(ta) + 1
            and out[-2] == ta[-2]
            and {tb[-2], tb[-1]} == {ta[-1], out[-1]}
            and a.lay == b.lay
            and a.lay[0] < a.rank - 2
        ):
            raise _Skip(f" ({eq!r}: only batched matrix products)")
        if tb[-2:] != ta[-1] + out[-1]:  # b is (..., j, k): its last two axes swapped
            n = len(b.shape or ())
            axes = (*range(n - 2), n - 1, n - 2)
            b = self._call(node.output[0] + "/transpose", "permute", {"axes": axes}, [b], node)
        return self._call(node.output[0], "matmul", {}, [a, b], node)

    def _pool(self, node: Any, ins: list[Any], op: str) -> _Tensor:
        x = self._x(ins[0])
        self._only_first_output(node)
        a = self._attrs(node)
        if x.shape is None or len(x.shape) != 3:
            raise _Skip(" (only 2-D pooling of (C, H, W))")
        kernel = tuple(int(k) for k in a["kernel_shape"])
        stride = tuple(int(s) for s in a.get("strides", [1, 1]))
        dilation = tuple(int(d) for d in a.get("dilations", [1, 1]))
        if len(kernel) != 2 or len(stride) != 2:
            raise _Skip(" (only 2-D pooling)")
        if op == "avgpool2d" and dilation != (1, 1):
            raise _Skip(" (dilated average pooling)")
        begin, end = self._pads(a, x.shape[1:], kernel, stride, dilation)
        onnx_ceil = bool(a.get("ceil_mode", 0))
        out = self._per_sample(node.output[0])
        target = out[1:] if out is not None and len(out) == 3 else tuple(
            _pool_size(s, k, st, d, p, q, onnx_ceil)
            for s, k, st, d, p, q in zip(x.shape[1:], kernel, stride, dilation, begin, end,
                                         strict=True))  # fmt: skip
        include = bool(a.get("count_include_pad", 0)) and op == "avgpool2d"
        if include and begin != end:
            raise _Skip(" (count_include_pad with asymmetric pads)")
        for k, d, p in zip(kernel, dilation, begin, strict=True):
            if p > (d * (k - 1) + 1) // 2 or (op == "avgpool2d" and p > k // 2):
                raise _Skip(f" (padding {p} more than half the kernel {k})")
        for ceil in [False] if include else [False, True]:
            sizes = tuple(
                _torch_pool_size(s, k, st, d, p, ceil)
                for s, k, st, d, p in zip(x.shape[1:], kernel, stride, dilation, begin, strict=True)
            )
            if sizes == tuple(target):
                break
        else:
            raise _Skip(
                f" (its windows with pads {list(begin) + list(end)} have no PyTorch equivalent)"
            )
        attrs: dict[str, Any] = {"kernel": kernel, "stride": stride, "padding": tuple(begin)}
        if op == "maxpool2d":
            attrs["dilation"] = dilation
        if ceil:
            attrs["ceil_mode"] = True
        if op == "avgpool2d":
            attrs["count_include_pad"] = include
        return self._call(node.output[0], op, attrs, [x], node)

    def _op_MaxPool(self, node: Any, ins: list[Any]) -> _Tensor:
        return self._pool(node, ins, "maxpool2d")

    def _op_AveragePool(self, node: Any, ins: list[Any]) -> _Tensor:
        return self._pool(node, ins, "avgpool2d")

    def _op_GlobalAveragePool(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        if x.shape is None or len(x.shape) != 3:
            raise _Skip(" (only of (C, H, W))")
        return self._call(node.output[0], "adaptive_avgpool2d", {"output_size": (1, 1)}, [x], node)

    def _op_GlobalMaxPool(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        if x.shape is None or len(x.shape) != 3:
            raise _Skip(" (only of (C, H, W))")
        k = tuple(x.shape[1:])
        return self._call(node.output[0], "maxpool2d", {"kernel": k, "stride": k}, [x], node)

    def _reshape(
        self, node: Any, x: _Tensor, shape: tuple[int, ...], lay: tuple[int, int, int] = _FIRST
    ) -> _Tensor:
        if x.shape is not None and tuple(shape) == tuple(x.shape):
            return x if lay == x.lay else _Tensor(x.id, x.shape, lay)
        return self._call(
            node.output[0], "reshape", {"shape": tuple(shape)}, [x], node, shape=shape, lay=lay
        )

    def _op_Flatten(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        axis = self._attrs(node).get("axis", 1)
        if (axis + x.rank if axis < 0 else axis) != 1:
            raise _Skip(f" (axis {axis}: only 1 keeps the batch axis)")
        if len(x.shape or ()) == 1:
            return x
        return self._call(node.output[0], "flatten", {}, [x], node, shape=(math.prod(x.shape),))  # type: ignore[arg-type]

    def _op_Reshape(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        if x.shape is None:
            raise _Skip(" (unknown input shape)")
        target = self._ints(ins[1], "the shape")
        if not target:
            raise _Skip(" (to a scalar)")
        allowzero = self._attrs(node).get("allowzero", 0)
        full = x.full(BATCH)
        dims: list[int] = []
        for i, t in enumerate(target):
            if t == 0 and not allowzero:
                if i >= len(full):
                    raise _Skip(" (a 0 beyond the input's axes)")
                t = full[i]
            dims.append(t)
        return self._reshape_full(node, x, dims, target)

    def _reshape_full(
        self, node: Any, x: _Tensor, dims: list[int], target: list[int] | None = None
    ) -> _Tensor:
        """``x`` reshaped to the ONNX shape ``dims`` (-1 inferred; an axis holding the
        batch a multiple of :data:`BATCH`, or the first axis at a known batch size, or
        else the inferred axis). A reshape keeps the order of the elements, so the batch
        keeps its stride: it stays one factor of one axis, and each sample's elements keep
        their order, which makes the per-sample value a reshape too. A reshape that splits
        the batch or mixes samples is refused."""
        assert x.shape is not None
        target = dims if target is None else target
        size = math.prod(x.shape)
        if any(d < -1 or d == 0 for d in dims) or dims.count(-1) > 1:
            raise _Skip(f" (shape {target})")
        held = [j for j, d in enumerate(dims) if d > 0 and d % BATCH == 0]
        if len(held) > 1:
            raise _Skip(f" (shape {target} has the batch in two axes)")
        if held:
            j, q = held[0], dims[held[0]] // BATCH
        elif self.batch is not None and dims[0] == self.batch and x.lay == _FIRST:
            j, q = 0, 1
        elif -1 in dims and self.batch in (None, 1):
            j, q = dims.index(-1), None  # the inferred axis holds the batch
        else:
            raise _Skip(f" (shape {target}: where the batch goes is unknown)")
        rest = [d for k, d in enumerate(dims) if k != j]
        if q is None:
            known = math.prod(rest)
            if size % known:
                raise _Skip(f" (shape {target} does not fit {tuple(x.shape)})")
            q = size // known
        elif -1 in rest:
            known = q * math.prod(d for d in rest if d != -1)
            if size % known:
                raise _Skip(f" (shape {target} does not fit {tuple(x.shape)})")
            rest[rest.index(-1)] = size // known
        if q * math.prod(rest) != size:
            raise _Skip(f" (shape {target} does not fit {tuple(x.shape)})")
        at, _, inner = x.lay
        stride = inner * math.prod(x.full(1)[at + 1 :])  # elements after the batch's
        after = math.prod(rest[j:])
        if stride % after or q % (stride // after):
            raise _Skip(f" (shape {target} mixes samples)")
        inner = stride // after
        outer = q // inner
        shape = (*rest[:j], *([outer] if outer > 1 else []), *([inner] if inner > 1 else []),
                 *rest[j:])  # fmt: skip
        return self._reshape(node, x, shape, (j, outer, inner))

    def _axes_input(self, node: Any, ins: list[Any]) -> list[int] | None:
        a = self._attrs(node)
        if "axes" in a:
            return [int(v) for v in a["axes"]]
        if len(ins) > 1 and ins[1] is not None:
            return self._ints(ins[1], "the axes")
        return None

    def _op_Unsqueeze(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        axes = self._axes_input(node, ins) or []
        rank = x.rank + len(axes)
        dims = x.full(BATCH)
        for ax in sorted(ax + rank if ax < 0 else ax for ax in axes):
            if not 0 <= ax < rank:
                raise _Skip(f" (axis {ax} out of range)")
            dims.insert(ax, 1)
        return self._reshape_full(node, x, dims)

    def _op_Squeeze(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        axes = self._axes_input(node, ins)
        dims = x.full(BATCH)
        if axes is None:
            drop = [i for i, d in enumerate(dims) if d == 1]
        else:
            drop = [ax + x.rank if ax < 0 else ax for ax in axes]
            if any(not 0 <= i < x.rank or dims[i] != 1 for i in drop):
                raise _Skip(" (an axis that is not 1)")
        return self._reshape_full(node, x, [d for i, d in enumerate(dims) if i not in drop])

    def _op_Transpose(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        perm = list(self._attrs(node).get("perm") or range(x.rank)[::-1])
        if sorted(perm) != list(range(x.rank)):
            raise _Skip(f" (perm {perm})")
        groups = x.groups()
        axes = tuple(a for p in perm for a in groups[p])
        lay = (perm.index(x.lay[0]), x.lay[1], x.lay[2])
        if axes == tuple(range(len(axes))):
            return x if lay == x.lay else _Tensor(x.id, x.shape, lay)
        return self._call(node.output[0], "permute", {"axes": axes}, [x], node, lay=lay)

    def _op_Concat(self, node: Any, ins: list[Any]) -> _Tensor:
        tensors = [v for v in ins if isinstance(v, _Tensor)]
        if not tensors:
            raise _Skip(" (no computed input)")
        rank, lay = tensors[0].rank, tensors[0].lay
        if any(t.lay != lay for t in tensors):
            raise _Skip(" (values whose batches are in different places)")
        parts = [self._tensor(v, rank, lay) for v in ins if v is not None]
        if len(parts) == 1:
            return parts[0]
        axis = self._axis_of(tensors[0], self._attrs(node)["axis"])
        attrs = {"axis": axis} if axis else {}
        return self._call(node.output[0], "concat", attrs, parts, node, lay=lay)

    def _slices(
        self, node: Any, x: _Tensor, out: str, specs: list[tuple[int, int, int, int]]
    ) -> _Tensor:
        """One ``slice`` call per axis that changes: (axis, start, end, step), ONNX's."""
        shape = list(x.shape or ())
        todo = []
        for axis, start, end, step in specs:
            a = axis + x.rank if axis < 0 else axis
            if not 0 <= a < x.rank:
                raise _Skip(f" (axis {axis} out of range)")
            if step <= 0:
                raise _Skip(f" (step {step})")
            if a == x.lay[0]:
                whole = min(x.full(self.batch or BATCH)[a], _BIG)
                if start in (0,) and end >= whole and step == 1:
                    continue
                raise _Skip(" (slices the batch axis)")
            pa = x.groups()[a][0]
            n = shape[pa]
            lo, hi, _ = slice(_clip(start), _clip(end), step).indices(n)
            hi = max(lo, hi)
            if lo == 0 and hi == n and step == 1:
                continue
            if hi == lo:
                raise _Skip(" (an empty slice)")
            todo.append((pa, lo, hi, step))
            shape[pa] = len(range(lo, hi, step))
        y = x
        cur = list(x.shape or ())
        for k, (axis, lo, hi, step) in enumerate(todo):
            cur[axis] = len(range(lo, hi, step))
            attrs: dict[str, Any] = {"axis": axis, "start": lo}
            if hi != (x.shape or ())[axis]:
                attrs["end"] = hi
            if step != 1:
                attrs["step"] = step
            name = out if k == len(todo) - 1 else f"{out}/axis{axis}"
            y = self._call(name, "slice", attrs, [y], node, shape=tuple(cur))
        return y

    def _op_Slice(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        if x.shape is None:
            raise _Skip(" (unknown input shape)")
        if self.opset < 10:
            a = self._attrs(node)
            starts, ends = list(a["starts"]), list(a["ends"])
            axes = list(a.get("axes", range(len(starts))))
            steps = [1] * len(starts)
        else:
            starts, ends = self._ints(ins[1], "starts"), self._ints(ins[2], "ends")
            axes = self._ints(ins[3], "axes") if len(ins) > 3 and ins[3] is not None else list(
                range(len(starts)))  # fmt: skip
            steps = self._ints(ins[4], "steps") if len(ins) > 4 and ins[4] is not None else [
                1] * len(starts)  # fmt: skip
        if not (len(starts) == len(ends) == len(axes) == len(steps)):
            raise _Skip(" (starts, ends, axes and steps of different lengths)")
        return self._slices(
            node, x, node.output[0], list(zip(axes, starts, ends, steps, strict=True))
        )

    def _op_Pad(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        if x.shape is None:
            raise _Skip(" (unknown input shape)")
        a = self._attrs(node)
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise _Skip(f" (mode {mode!r})")
        if self.opset < 11:
            pads, value = list(a["pads"]), float(a.get("value", 0.0))
        else:
            pads = self._ints(ins[1], "the pads")
            value = 0.0
            if len(ins) > 2 and ins[2] is not None:
                value = float(self._const(ins[2], "the padding value").value.reshape(-1)[0])
        axes = list(range(x.rank))
        if len(ins) > 3 and ins[3] is not None:
            axes = [ax + x.rank if ax < 0 else ax for ax in self._ints(ins[3], "the axes")]
        if len(pads) != 2 * len(axes) or any(not 0 <= ax < x.rank for ax in axes):
            raise _Skip(f" ({len(pads)} pads for {len(axes)} axes)")
        if any(p < 0 for p in pads):
            raise _Skip(" (a negative pad crops)")
        widths = {ax: (pads[i], pads[i + len(axes)]) for i, ax in enumerate(axes)}
        if widths.pop(0, (0, 0)) != (0, 0):
            raise _Skip(" (pads the batch axis)")
        padded = [ax for ax, (b, e) in widths.items() if b or e]
        if not padded:
            return x
        # F.pad's pairs: the last axis first, down to the first padded one
        axes = range(x.rank - 1, min(padded) - 1, -1)
        torch_pads = [w for ax in axes for w in widths.get(ax, (0, 0))]
        attrs: dict[str, Any] = {"pads": tuple(torch_pads)}
        if value:
            attrs["value"] = value
        return self._call(node.output[0], "pad", attrs, [x], node)

    def _op_Split(self, node: Any, ins: list[Any]) -> list[_Tensor]:
        x = self._x(ins[0])
        a = self._attrs(node)
        onnx_axis = a.get("axis", 0) % max(x.rank, 1)
        n = (x.shape or ())[self._axis_of(x, onnx_axis)]
        if "split" in a:
            sizes = list(a["split"])
        elif len(ins) > 1 and ins[1] is not None:
            sizes = self._ints(ins[1], "the split")
        else:
            k = a.get("num_outputs", len(node.output))
            step = -(-n // k)
            sizes = [min(step, n - i * step) for i in range(k)]
        if sum(sizes) != n or len(sizes) != len(node.output) or min(sizes) < 1:
            raise _Skip(f" (sizes {sizes} of an axis of {n})")
        out, start = [], 0
        for name, size in zip(node.output, sizes, strict=True):
            out.append(self._slices(node, x, name, [(onnx_axis, start, start + size, 1)]))
            start += size
        return out

    def _op_Gather(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        index = self._const(ins[1], "the index").value
        if index.dtype.kind not in "iu" or index.ndim > 1:
            raise _Skip(" (a constant index of integers, at most 1-D)")
        onnx_axis = self._attrs(node).get("axis", 0)
        axis = self._axis_of(x, onnx_axis)
        n = (x.shape or ())[axis]
        if np.any(index < -n) or np.any(index >= n):
            raise _Skip(" (an index out of range)")
        if index.ndim == 0:
            attrs = {"axis": axis, "index": int(index) % n}
            at, outer, inner = x.lay
            if onnx_axis % x.rank < at:
                at -= 1  # the axis in front of the batch's is gone
            return self._call(node.output[0], "select", attrs, [x], node, lay=(at, outer, inner))
        values = tuple(int(i) % n for i in index)
        idx = self._call(node.output[0] + "/index", "buffer", {
            "shape": (len(values),), "values": values, "dtype": "int64", "persistent": False},
            [], node, shape=(len(values),))  # fmt: skip
        return self._call(node.output[0], "take", {"axis": axis}, [x, idx], node)

    def _reduce(self, node: Any, ins: list[Any], op: str, out: str | None = None) -> _Tensor:
        x = self._x(ins[0])
        a = self._attrs(node)
        axes = self._axes_input(node, ins)
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return x
            raise _Skip(" (over every axis, the batch too)")
        per = tuple(sorted({self._axis_of(x, ax) for ax in axes}))
        attrs: dict[str, Any] = {"axis": per}
        at, outer, inner = x.lay
        if a.get("keepdims", 1):
            attrs["keepdim"] = True
        else:  # the axes in front of the batch's are gone
            at -= len({ax % x.rank for ax in axes if ax % x.rank < at})
        return self._call(out or node.output[0], op, attrs, [x], node, lay=(at, outer, inner))

    def _op_ReduceMean(self, node: Any, ins: list[Any]) -> _Tensor:
        return self._reduce(node, ins, "mean")

    def _op_ReduceSum(self, node: Any, ins: list[Any]) -> _Tensor:
        return self._reduce(node, ins, "sum")

    def _op_ReduceL2(self, node: Any, ins: list[Any]) -> _Tensor:
        """The L2 norm (F.normalize's, Swin V2's cosine attention): sqrt(sum(x * x))."""
        x = self._x(ins[0])
        out = node.output[0]
        square = self._call(out + "/square", "mul", {}, [x, x], node)
        total = self._reduce(node, [square, *ins[1:]], "sum", out + "/sum")
        return self._call(out, "sqrt", {}, [total], node)

    def _op_Expand(self, node: Any, ins: list[Any]) -> _Tensor:
        """A computed value broadcast to a shape: left as it is where every reader is an
        elementwise op whose other operand has that shape (it broadcasts alike)."""
        x = self._x(ins[0])
        target = self._ints(ins[1], "the shape")
        full = x.full(BATCH)
        if len(target) > len(full):
            raise _Skip(" (a broadcast that adds axes)")
        target = [1] * (len(full) - len(target)) + target
        want = [f if t == 1 else t for f, t in zip(full, target, strict=True)]
        if want == full:
            return x
        for i in self.consumers.get(node.output[0], []):
            user = self.nodes[i]
            others = [self.values.get(n) for n in user.input if n != node.output[0]]
            if user.op_type not in _BINARY or len(others) != 1:
                raise _Skip(" (a broadcast read by other than an elementwise op)")
            other = others[0]
            shape = other.full(BATCH) if isinstance(other, _Tensor) else (
                list(other.value.shape) if isinstance(other, _Const) else None)  # fmt: skip
            if shape != want:
                raise _Skip(" (a broadcast to a shape its reader does not have)")
        if node.output[0] in self.graph_outputs:
            raise _Skip(" (a broadcast output)")
        return x

    def _op_LayerNormalization(self, node: Any, ins: list[Any]) -> _Tensor:
        x = self._x(ins[0])
        self._only_first_output(node)
        a = self._attrs(node)
        axis = a.get("axis", -1)
        if (axis + x.rank if axis < 0 else axis) != x.rank - 1 or x.lay[0] == x.rank - 1:
            raise _Skip(f" (axis {axis}: only over the last axis)")
        scale = self._const(ins[1], "the scale")
        shift = self._const(ins[2], "the bias") if len(ins) > 2 and ins[2] is not None else None
        c = (x.shape or (0,))[-1]
        if scale.value.size != c or (shift is not None and shift.value.size != c):
            raise _Skip(" (a scale or bias that is not per feature)")
        label = self._label(node, (scale.name, "weight"), (shift.name if shift else None, "bias"))
        self.weights[f"{label}.weight"] = _weight(scale).reshape(-1)
        self.weights[f"{label}.bias"] = (
            _weight(shift).reshape(-1) if shift is not None else np.zeros(c, np.float32)
        )
        attrs = {"eps": _f32(a.get("epsilon", 1e-5))}
        return self._call(node.output[0], "layernorm", attrs, [x], node, label)


# --- helpers -----------------------------------------------------------------------------------


def _as_float32(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "f" and arr.dtype != np.float32:
        return arr.astype(np.float32)
    return arr


def _weight(c: _Const) -> np.ndarray:
    return np.ascontiguousarray(c.value, np.float32)


def _holds_batch(arr: np.ndarray) -> bool:
    """Whether a value computed from a shape that holds :data:`BATCH` may still hold it: an
    integer one only where it has a multiple of it (Swin's mask is built from a shape's
    other sizes), any other conservatively."""
    if arr.dtype.kind not in "iu":
        return True
    return bool(np.any((arr != 0) & (arr % BATCH == 0)))


def _clip(v: int) -> int:
    return max(-_BIG, min(_BIG, v))


def _fmt_dims(dims: Any) -> str:
    if dims is None:
        return "no shape"
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _constant_value(node: Any) -> np.ndarray:
    from onnx import helper, numpy_helper

    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if a.name in ("value", "sparse_value"):
            if a.name == "sparse_value":
                raise ValueError("a sparse constant")
            return numpy_helper.to_array(v)
        if a.name == "value_float":
            return np.asarray(v, np.float32)
        if a.name == "value_floats":
            return np.asarray(list(v), np.float32)
        if a.name == "value_int":
            return np.asarray(v, np.int64)
        if a.name == "value_ints":
            return np.asarray(list(v), np.int64)
    raise ValueError("a Constant without a value")


def _pool_size(s: int, k: int, st: int, d: int, p: int, q: int, ceil: bool) -> int:
    span = s + p + q - d * (k - 1) - 1
    return (-(-span // st) if ceil else span // st) + 1


def _torch_pool_size(s: int, k: int, st: int, d: int, p: int, ceil: bool) -> int:
    span = s + 2 * p - d * (k - 1) - 1
    out = (-(-span // st) if ceil else span // st) + 1
    if ceil and (out - 1) * st >= s + p:
        out -= 1
    return out


def _op_shape(op: str, attrs: dict[str, Any], inputs: list[_Tensor]) -> tuple[int, ...] | None:
    """The per-sample output shape by the op table's own rule (None where it refuses)."""
    from ..ops import OPS

    if any(t.shape is None for t in inputs):
        return None
    try:
        spec = OPS[op]
        return tuple(spec.shape(spec.bind([], attrs), [t.shape for t in inputs]))
    except Exception:
        return None


def _owns(label: str, key: str) -> bool:
    return key == label or key.startswith(label + ".")


def _prune(calls: list[Call], outputs: list[str]) -> list[Call]:
    """The calls the outputs need."""
    by_id = {c.id: c for c in calls}
    need, stack = set(), list(outputs)
    while stack:
        v = stack.pop()
        if v in need or v not in by_id:
            continue
        need.add(v)
        stack.extend(by_id[v].inputs)
    return [c for c in calls if c.id in need]


def _merge_scale_shift(calls: list[Call], outputs: list[str]) -> list[Call]:
    """``x * a`` then ``+ b`` (how ONNX writes one ``scale_shift``) as one call."""
    uses = Counter(i for c in calls for i in c.inputs)
    uses.update(outputs)
    by_id = {c.id: c for c in calls}
    dropped: set[str] = set()
    for c in calls:
        if c.op != "scale_shift" or set(c.attrs) != {"shift"}:
            continue
        first = by_id.get(c.inputs[0])
        if first is None or first.op != "scale_shift" or set(first.attrs) != {"scale"}:
            continue
        if uses[first.id] != 1:
            continue
        c.attrs = {"scale": first.attrs["scale"], "shift": c.attrs["shift"]}
        c.inputs = list(first.inputs)
        dropped.add(first.id)
    return [c for c in calls if c.id not in dropped]
