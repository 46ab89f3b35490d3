"""Canonical fingerprints: one hash per function a candidate computes, not per graph.

A tensor is a term: an input, a zero of a shape, or an op applied to terms. Terms are
hash-consed in a :class:`Terms` store (each distinct term once, as an int, with a stable
content hash), and built by rules that make equal functions equal terms:

* an op that is the identity at inference (``identity``, ``dropout``) is its input; a
  ``shortcut`` that is the identity was never a node;
* ``add`` and ``mul`` sort their operands (commutative);
* zeros (``prune_zeros``): ``zero`` is the zero of its shape, and so is ``mul`` by a zero;
  an op whose input is a zero is a zero when it maps zero to zero (the op table's
  ``maps_zero``: ReLU, pooling, a convolution without bias, ...) and a zero term is
  dropped from a sum (``x + 0`` is ``x``). That is the **function-preserving** equivalence
  (the default): batch norm of a zero is its shift, not zero, so ReLU-conv-BN of a zero
  edge stays;
* a node that does not reach an output is not hashed at all, and names never are, so
  relabelling a cell's internal nodes, or renaming weights, changes nothing.

**The benchmark's convention** (``convention="benchmark"``) is NAS-Bench-201's
``to_unique_str(consider_zero)``, whose classes the benchmark counts: any op of one input
applied to a zero is a zero, and terms are strings (:class:`Strings`), sums sorted as text.

Terms of a whole network are built from the graph (:func:`canonical_fingerprint`), or, for
a space, block instance by block instance (:class:`CanonicalElaborator`): an instance is
elaborated once per (block, arguments, input shapes) with placeholder inputs, and its
result terms are then instantiated for each new input by substitution, the rules applied
again (a cell that gets a zero input simplifies).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..ir import Graph, TensorInfo, TensorValue
from ..ops import OPS
from .counting import CountingElaborator, InstanceMemo

CONVENTIONS = ("function", "benchmark")
_COMMUTATIVE = frozenset({"add", "mul"})
# Attributes that say how a tensor is first initialised, not what the network computes.
_NOT_COMPUTED = {(op, k) for op in ("parameter", "buffer") for k in ("init", "std", "value")}


def attrs_key(op: str, attrs: Any, shape: tuple[int, ...]) -> tuple:
    """The attributes that make a node's function (a reshape is its output shape)."""
    if op == "reshape":  # `(768, -1)` and `(768, 196)` compute the same
        return (("shape", shape),)
    return tuple(sorted((k, v) for k, v in attrs.items() if (op, k) not in _NOT_COMPUTED))


class Terms:
    """A hash-consed store of terms under the function-preserving equivalence."""

    def __init__(self, prune_zeros: bool = True) -> None:
        self.prune = prune_zeros
        self.ids: dict[tuple, int] = {}
        self.terms: list[tuple] = []  # by id
        self.hashes: list[bytes] = []  # by id: stable across processes

    def _intern(self, term: tuple) -> int:
        found = self.ids.get(term)
        if found is not None:
            return found
        kind = term[0]
        children = term[5] if kind == "op" else ()
        head = term[:5] if kind == "op" else term
        digest = hashlib.blake2b(repr(head).encode(), digest_size=16)
        for c in children:
            digest.update(self.hashes[c])
        i = self.ids[term] = len(self.terms)
        self.terms.append(term)
        self.hashes.append(digest.digest())
        return i

    def input(self, index: int, info: TensorInfo) -> int:
        """The network's ``index``-th input."""
        return self._intern(("input", index, info.shape, info.dtype))

    def placeholder(self, index: int, info: TensorInfo) -> int:
        """A block instance's ``index``-th tensor argument, while it is recorded."""
        return self._intern(("in", index, info.shape, info.dtype))

    def zero(self, shape: tuple[int, ...]) -> int:
        return self._intern(("zero", shape))

    def is_zero(self, term: int) -> bool:
        return self.terms[term][0] == "zero"

    def op(self, op: str, attrs: tuple, info: TensorInfo, children: list[int],
           span: Any = None) -> int:  # fmt: skip
        """The term of ``op`` applied to ``children``, the rules applied."""
        definition = OPS[op]
        shape = info.shape
        if definition.inference_noop and len(children) == 1:
            return children[0]
        if self.prune:
            if op == "zero":
                return self.zero(shape)
            zeros = [c for c in children if self.is_zero(c)]
            if zeros:
                if op == "mul":
                    return self.zero(shape)
                if len(children) == 1 and definition.keeps_zero(dict(attrs)):
                    return self.zero(shape)
                if op == "add":
                    children = [c for c in children if not self.is_zero(c)]
                    if not children:
                        return self.zero(shape)
                    if len(children) == 1 and _shape(self.terms[children[0]]) == shape:
                        return children[0]
        if op in _COMMUTATIVE:
            children = sorted(children, key=self.hashes.__getitem__)
        return self._intern(("op", op, attrs, shape, info.dtype, tuple(children)))

    def export(self, roots: list[int]) -> tuple[tuple, list[int]]:
        """The terms ``roots`` are made of, children first and by position, for
        :meth:`instantiate`, and the roots' positions."""
        return _export(self.terms, roots, lambda t: t[5] if t[0] == "op" else ())

    def boundary(self, results: list[int], inputs: list[int], merges: bool) -> list[int]:
        return results  # terms are hash-consed: a block's result needs no token

    def instantiate(self, nodes: tuple, inputs: list[int]) -> list[int]:
        """Rebuild exported terms here with placeholder ``i`` as ``inputs[i]``, the rules
        applied again (a zero input simplifies what reads it)."""
        built: list[int] = []
        for t in nodes:
            kind = t[0]
            if kind == "in":
                built.append(inputs[t[1]])
            elif kind == "op":
                children = [built[c] for c in t[5]]
                built.append(self.op(t[1], t[2], TensorInfo(t[3], t[4]), children))
            else:
                built.append(self._intern(t))
        return built

    def fingerprint(self, outputs: list[int]) -> str:
        h = hashlib.blake2b(digest_size=16)
        for o in outputs:
            h.update(self.hashes[o])
        return h.hexdigest()


class Strings:
    """Terms as NAS-Bench-201's ``to_unique_str`` writes them (``convention="benchmark"``),
    generalised: a zero is ``#``; an op of one input applied to a zero is ``#``; otherwise
    ``(s)@op`` (a chain of one-input ops extends it, ``(s)@relu@conv2d(...)``); a sum joins
    its terms' strings sorted (one written sum ``a + b + c`` is one sum; a sum computed
    elsewhere is one term), zero terms kept. Strings are the benchmark's, so are their
    artefacts (`a+b` and `c` sort as strings): on NAS-Bench-201 it gives exactly its 6,466
    classes, where sorting terms structurally gives 6,900. A non-inline block instance's
    result is a token, the hash of its string, outside it (strings would grow with depth).
    """

    def __init__(self, prune_zeros: bool = True) -> None:
        self.prune = prune_zeros
        self.values: list[tuple] = []  # by id: ("atom", text) ("zero",) ("wrap", inner,
        self.recipes: list[tuple] = []  #   suffix) ("sum", items, span); how each was made
        self._sealed: dict[int, int] = {}  # a sealed input -> the value it seals
        self._names: dict[tuple, str] = {}  # (op, attributes) -> its text

    def _new(self, value: tuple, recipe: tuple) -> int:
        self.values.append(value)
        self.recipes.append(recipe)
        return len(self.values) - 1

    def text(self, i: int) -> str:
        v = self.values[i]
        kind = v[0]
        if kind == "atom":
            return v[1]
        if kind == "zero":
            return "#"
        if kind == "wrap":
            return "(" + v[1] + ")@" + "@".join(v[2])
        return "+".join(v[1])

    def input(self, index: int, info: TensorInfo) -> int:
        return self._new(("atom", f"x{index}"), ("input", index, info.shape, info.dtype))

    def placeholder(self, index: int, info: TensorInfo) -> int:
        return self._new(("atom", str(index)), ("in", index))

    def zero(self, shape: tuple[int, ...]) -> int:
        return self._new(("zero",), ("zero", shape))

    def is_zero(self, i: int) -> bool:
        return self.values[i][0] == "zero"

    def op(self, op: str, attrs: tuple, info: TensorInfo, children: list[int],
           span: Any = None) -> int:  # fmt: skip
        definition = OPS[op]
        if definition.inference_noop and len(children) == 1:
            return children[0]
        recipe = ("op", op, attrs, info, tuple(children), span)
        if self.prune and (op == "zero" or (
            any(self.is_zero(c) for c in children) and (len(children) == 1 or op == "mul")
        )):  # fmt: skip
            return self._new(("zero",), recipe)
        if op == "add":
            items: list[str] = []
            for c in children:
                v = self.values[c]
                if v[0] == "sum" and _within(v[2], span):  # `a + b + c`: one sum
                    items.extend(v[1])
                else:
                    items.append(self.text(c))
            return self._new(("sum", tuple(sorted(items)), span), recipe)
        name = self._names.get((op, attrs))
        if name is None:
            name = self._names[op, attrs] = _BENCHMARK_NAMES.get(op, op) + (
                repr(attrs) if attrs else ""
            )
        if len(children) == 1:
            v = self.values[children[0]]
            if v[0] == "wrap":
                return self._new(("wrap", v[1], (*v[2], name)), recipe)
            return self._new(("wrap", self.text(children[0]), (name,)), recipe)
        texts = [self.text(c) for c in children]
        return self._new(("wrap", ",".join(sorted(texts) if op in _COMMUTATIVE else texts),
                          (name,)), recipe)  # fmt: skip

    def boundary(self, results: list[int], inputs: list[int], merges: bool) -> list[int]:
        """A block instance's results as its caller sees them: an input passed through is
        the caller's value again; a result of an instance that sums (a cell) is a token,
        the hash of its string (strings grow exponentially only through sums)."""
        results = [self._sealed.get(r, r) for r in results]
        return [self._token(r, inputs) if merges else r for r in results]

    def _token(self, i: int, inputs: list[int]) -> int:
        if i in inputs or self.is_zero(i) or self.values[i][0] == "atom":
            return i
        digest = hashlib.blake2b(self.text(i).encode(), digest_size=10).hexdigest()
        return self._new(("atom", "h" + digest), ("token", i, *inputs))

    def _seal(self, i: int) -> int:
        """An input of a block instance: a chain of ops is extended only inside the
        instance that made it, so outside it is one term, ``((s)@a@b)@c``."""
        if self.values[i][0] != "wrap":
            return i
        sealed = self._new(("atom", self.text(i)), ("seal", i))
        self._sealed[sealed] = i
        return sealed

    def export(self, roots: list[int]) -> tuple[tuple, list[int]]:
        """The recipes of ``roots``, children by position, for :meth:`instantiate`."""
        return _export(self.recipes, roots, _recipe_children)

    def instantiate(self, nodes: tuple, inputs: list[int]) -> list[int]:
        """Rebuild recorded recipes here with placeholder ``i`` as ``inputs[i]``."""
        inputs = [self._seal(i) for i in inputs]
        built: list[int] = []
        for r in nodes:
            kind = r[0]
            if kind == "in":
                built.append(inputs[r[1]])
            elif kind == "zero":
                built.append(self.zero(r[1]))
            elif kind == "seal":
                built.append(self._seal(built[r[1]]))
            elif kind == "token":
                built.append(self._token(built[r[1]], [built[c] for c in r[2:]]))
            elif kind == "op":
                built.append(self.op(r[1], r[2], r[3], [built[c] for c in r[4]], r[5]))
            else:
                built.append(self._new(("atom", f"x{r[1]}"), r))
        return built

    def fingerprint(self, outputs: list[int]) -> str:
        text = "\n".join(self.text(o) for o in outputs)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


# The benchmark's name of an op, where its strings sort by it: NAS-Bench-201 calls a zero
# edge `none` (between `avg_pool_3x3` and `nor_conv_1x1`).
_BENCHMARK_NAMES = {"zero": "none"}


def _recipe_children(r: tuple) -> tuple[int, ...]:
    return r[4] if r[0] == "op" else (r[1:] if r[0] in ("token", "seal") else ())


def _with_children(r: tuple, children: tuple[int, ...]) -> tuple:
    if r[0] == "op":
        return (*r[:4], children, r[5])
    return (r[0], *children) if r[0] in ("token", "seal") else r


def _export(items: list[tuple], roots: list[int], children_of) -> tuple[tuple, list[int]]:
    """The items ``roots`` are made of, children first, children by position."""
    local: dict[int, int] = {}
    out: list[tuple] = []
    stack = [(r, False) for r in roots]
    while stack:
        i, ready = stack.pop()
        if i in local:
            continue
        children = children_of(items[i])
        if children and not ready:
            stack.append((i, True))
            stack.extend((c, False) for c in children if c not in local)
            continue
        item = items[i]
        if children:
            item = (
                _with_children(item, tuple(local[c] for c in children))
                if children_of is _recipe_children
                else (*item[:5], tuple(local[c] for c in children))
            )
        local[i] = len(out)
        out.append(item)
    return tuple(out), [local[r] for r in roots]


def _within(inner: Any, outer: Any) -> bool:
    """Whether span ``inner`` lies inside span ``outer`` (a sub-expression of it)."""
    if inner is None or outer is None or inner.path != outer.path:
        return False
    return (outer.line, outer.column) <= (inner.line, inner.column) and (
        inner.end_line, inner.end_column) <= (outer.end_line, outer.end_column)  # fmt: skip


def _shape(term: tuple) -> tuple[int, ...]:
    return term[3] if term[0] == "op" else (term[2] if term[0] in ("in", "input") else term[1])


def store(convention: str = "function", prune_zeros: bool = True) -> Terms | Strings:
    """An empty store of terms for ``convention`` ("function" or "benchmark")."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, not {convention!r}")
    return Strings(prune_zeros) if convention == "benchmark" else Terms(prune_zeros)


def canonical_fingerprint(network: Any, prune_zeros: bool = True) -> str:
    """A 32-hex-digit hash of the function a :class:`resdsl.Network` (or ``ir.Graph``)
    computes at inference under the function-preserving equivalence (the module doc);
    equal to ``SearchSpace.fingerprint(a, canonical=True)`` of the candidate it is. (The
    benchmark's convention needs the block instances: use the space.)"""
    graph: Graph = getattr(network, "graph", network)
    terms, of = Terms(prune_zeros), {}
    inputs = 0
    for node in graph.nodes():
        info = graph.info(node.name)
        if node.op == "input":
            of[node.name], inputs = terms.input(inputs, info), inputs + 1
            continue
        children = [of[src] for src in graph.inputs_of(node.name)]
        of[node.name] = terms.op(node.op, attrs_key(node.op, node.attrs, info.shape), info,
                                 children)  # fmt: skip
    return terms.fingerprint([of[node] for _, node in graph.outputs])


class CanonicalElaborator(CountingElaborator):
    """Elaborates a candidate into terms (``self.of``: tensor name -> term), recording each
    block instance's result terms once with placeholder inputs and substituting after."""

    def __init__(self, program, limits, memo: InstanceMemo, terms: Terms | Strings,
                 templates: dict) -> None:  # fmt: skip
        super().__init__(program, limits, memo)
        self.terms, self.templates = terms, templates
        self.of: dict[str, int] = {}
        self._inputs = 0

    def _input(self, inp, frame) -> TensorValue:
        value = super()._input(inp, frame)
        self.of[value.node] = self.terms.input(self._inputs, self.graph.infos[value.node])
        self._inputs += 1
        return value

    def emit(self, op_name, inputs, attr_args, kwargs, span, frame, label) -> TensorValue:
        value = super().emit(op_name, inputs, attr_args, kwargs, span, frame, label)
        info = self.graph.infos[value.node]
        attrs = self.emitted_attrs
        children = [self.of[i.node] for i in inputs]
        key = attrs_key(op_name, attrs, info.shape)
        self.of[value.node] = self.terms.op(op_name, key, info, children, span)
        return value

    def _memoised(self, definition, call, args, kwargs, frame, label, run):
        externals: list[TensorValue] = []
        infos = self.graph.infos
        key = (
            definition.name, label,
            tuple(self._arg_key(v, externals, infos) for v, _ in args),
            tuple(sorted((k, self._arg_key(v, externals, infos)) for k, (v, _) in kwargs.items())),
        )  # fmt: skip
        template = self.templates.get(key)
        if template is None:
            template = self._record(key, definition, call, args, kwargs, frame, label, run)
            if template is None:  # not memoisable: run it with the real inputs
                return run(definition, call, args, kwargs, frame)
        inputs = [self.of[t.node] for t in externals]
        return self._instance_value(template, inputs, call.span, definition.inline)

    def _record(self, key, definition, call, args, kwargs, frame, label, run):
        """Run the instance on placeholder inputs; its result with tensors as
        (info, term) pairs, or None when the result is not made of tensors and values."""
        fresh: list[TensorValue] = []

        def placeholder(value: Any) -> Any:
            if isinstance(value, TensorValue):
                name = f"\0p{next(self._fresh)}"
                info = self.graph.infos[value.node]
                self.graph.infos[name] = info
                self.of[name] = self.terms.placeholder(len(fresh), info)
                fresh.append(TensorValue(name, value.shape, value.span))
                return fresh[-1]
            if type(value) is tuple:
                return tuple(placeholder(v) for v in value)
            return value

        args = [(placeholder(v), s) for v, s in args]
        kwargs = {k: (placeholder(v), s) for k, (v, s) in kwargs.items()}  # as _arg_key
        errors = len(self.errors)
        result = run(definition, call, args, kwargs, frame)
        if len(self.errors) != errors:
            return None
        template = self._recorded(result)
        if template is not None:
            self.templates[key] = template
        return template

    def _recorded(self, value: Any) -> Any:
        roots: list[int] = []
        shape = self._shape_of(value, roots)
        if shape is _NOT_TENSORS:
            return None
        nodes, positions = self.terms.export(roots)
        merges = any(n[0] == "op" and n[1] == "add" for n in nodes)  # a cell, not a layer
        return (nodes, positions, shape, merges)

    def _shape_of(self, value: Any, roots: list[int]) -> Any:
        """The value with each tensor as (marker, info, index into ``roots``)."""
        if isinstance(value, TensorValue):
            roots.append(self.of[value.node])
            return (_TENSOR, self.graph.infos[value.node], len(roots) - 1)
        if type(value) is tuple:
            items = tuple(self._shape_of(v, roots) for v in value)
            return _NOT_TENSORS if any(i is _NOT_TENSORS for i in items) else items
        if isinstance(value, bool | int | float | str) or value is None:
            return value
        return _NOT_TENSORS

    def _instance_value(self, template: Any, inputs: list[int], span, inline: bool) -> Any:
        nodes, positions, shape, merges = template
        built = self.terms.instantiate(nodes, inputs)
        results = self.terms.boundary([built[p] for p in positions], inputs, merges and not inline)

        def build(t: Any) -> Any:
            if type(t) is tuple and t and t[0] is _TENSOR:
                name = f"\0{next(self._fresh)}"
                self.graph.infos[name] = t[1]
                self.of[name] = results[t[2]]
                return TensorValue(name, t[1].shape, span)
            if type(t) is tuple:
                return tuple(build(i) for i in t)
            return t

        return build(shape)


_TENSOR = object()  # marks a tensor in a recorded value
_NOT_TENSORS = object()
