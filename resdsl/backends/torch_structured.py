"""PyTorch backend, structured: generated code that reads like timm's or torchvision's.

:func:`generate` writes one ``nn.Module`` class per block of the spec (``Bottleneck``),
whose ``__init__`` takes the values in which the block's instances differ (channels,
stride, ...) and whose ``forward`` is the block's body; the network class composes them,
and runs of blocks labelled ``0``, ``1``, ... become ``nn.Sequential`` built in a loop.
Submodule names (and so state_dict keys) are the spec's, exactly as in the flat form of
:mod:`resdsl.backends.torch`, whose op table (``EMITTERS``) writes every layer and call.

How the structure is found, from the elaborated graph alone (no importer is involved):

* every name path (``layer1.0``) holding ops is a module; one that reads some values and
  produces one is an *instance*, collapsed into one item of its parent's body, of the block
  whose body made its ops (``Node.scope``; a path that only groups names is of no block);
* a path that is not one output from some inputs (torchvision MNASNet's ``layers``, whose
  ReLUs the spec names in the enclosing block; a block that only holds a buffer), or whose
  inner values are read from outside, is *dissolved*: its layers are items of the enclosing
  instance under dotted names (``layers.3``), registered in an ``nn.ModuleDict``;
* instances of one block whose bodies agree in ops, names and wiring are one class; the
  values that differ between them are the class's constructor parameters
  (anti-unification, :mod:`resdsl.antiunify`, shared with the importer): a column equal to
  an earlier one is that parameter, one always ``k`` times an earlier one is written
  ``k * channels``;
* a shortcut child (``downsample: shortcut(x, like=y)``) present in some instances of a
  block and not in others becomes ``self.downsample = None`` plus the condition under
  which it exists (``stride != 1 or in_channels != 4 * channels``), checked against every
  instance before it is used;
* a run of instances of one class labelled ``{prefix}0``, ``{prefix}1``, ..., each
  reading the previous one, is a loop (two that differ in most values are written out); a
  module that is only such a run is an ``nn.Sequential`` built by a generator expression;
* training-only outputs (an auxiliary classifier) are computed under
  ``if self.training:`` in the network's ``forward`` and returned after the others.

Every example and zoo model has this shape. When a graph does not (a block whose output
is read before its last op, a name that ``nn.ModuleDict`` uses), :func:`generate` writes
the flat form instead; :func:`structured` returns ``None`` then.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from ..antiunify import Slot, multiple, same, unify
from ..ir import Graph, Node
from ..passes import decompose
from . import torch as flat
from .torch import (
    _WIDTH,
    EMITTERS,
    _class_name,
    _is_attribute,
    _is_identifier,
    _literal,
    _module_call,
    file_head,
    file_tail,
)


class _NoStructureError(Exception):
    """The graph has no structure this generator writes: use the flat form."""


# ops whose constructor text only formats its attributes and input channels: an
# attribute or channel count may be a parameter of the class
_SYMBOLIC = {"conv2d", "conv1d", "std_conv2d", "batchnorm2d", "linear", "layernorm",
             "layernorm2d", "groupnorm", "attention"}  # fmt: skip
# ops whose forward call may read a per-instance value (stored on ``self``)
_CALL_ATTRS = {"dropout": ("p",), "drop_path": ("p",), "scale_shift": ("scale", "shift")}
_SHORTCUTS = {"shortcut", "project"}  # blocks that project only when the shape changes
_CHANNELS = {"out_channels": "channels", "out_features": "features", "groups": "groups"}
_MARK = "\x00"  # placeholders in templates: \x00<k>\x00 is the k-th parameter


class _Sym(int):
    """A value standing for an expression when an emitter formats it."""

    text: str

    def __new__(cls, text: str) -> _Sym:
        obj = super().__new__(cls, 0)
        obj.text = text
        return obj

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __hash__(self) -> int:
        return id(self)


# --- the module tree ----------------------------------------------------------------------------


@dataclass
class _Item:
    name: str  # relative name: the last segment of its path
    kind: str  # "op", "child", "loop"
    inputs: list[tuple[str, Any]]  # ("in", k) | ("at", item name) | ("short", name)
    value: str  # the graph value it produces
    node: Node | None = None
    child: _Inst | None = None
    run: list[_Inst] = field(default_factory=list)  # a loop's instances
    prefix: str = ""
    start: int = 0


@dataclass
class _Inst:
    path: str
    block: str | None
    items: list[_Item]
    ext: list[str]
    outs: list[str]
    height: int = 0
    cls: _Class | None = None
    args: tuple = ()  # values of the class's parameters
    short: _Inst | None = None  # the optional shortcut child, when present
    short_name: str = ""


@dataclass
class _Class:
    name: str  # the Python class name ("" for an inline nn.Sequential)
    params: list[tuple[str, str]]  # (name, family)
    template: str  # constructor text, parameters as \x00k\x00
    lines: list[str] = field(default_factory=list)  # the class definition


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


class _DissolveError(Exception):
    """A name path that is no instance: its items belong to the enclosing instance."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _tree(g: Graph) -> _Inst:
    """The instances of ``g``, each with its body of items; the network's is returned.

    A name path that is not one output computed from some inputs (``layers`` of torchvision's
    MNASNet, whose ReLUs the spec names in the enclosing block; a block that only holds a
    buffer) is *dissolved*: its layers are items of the enclosing instance, under dotted
    names (``layers.3``), written into an ``nn.ModuleDict``.
    """
    names = [n.name for n in g.nodes() if n.op != "input"]
    order = {n: k for k, n in enumerate(g.nx.nodes)}
    subtree: dict[str, list[str]] = defaultdict(list)
    for n in names:
        p = n
        while "." in p:
            p = _parent(p)
            subtree[p].append(n)
    # a path is an instance of the block whose body made its ops (Node.scope); a path that
    # only groups names inside a block or the network is an instance of no block
    blocks = {n.scope: n.block for n in g.nodes() if n.scope}
    outputs = {node for _, node in [*g.outputs, *g.training_outputs]}
    dissolved: set[str] = set()
    while True:
        try:
            return _build(g, names, subtree, blocks, order, outputs, dissolved)
        except _DissolveError as e:
            if not e.path or e.path in dissolved:
                raise _NoStructureError(f"`{e.path}` cannot be dissolved") from None
            dissolved.add(e.path)


def _build(g, names, subtree, blocks, order, outputs, dissolved) -> _Inst:
    insts: dict[str, _Inst] = {}
    for path in sorted(subtree, key=lambda p: (-p.count("."), p)):
        if path in dissolved:
            continue
        try:
            inst = _instance(g, path, subtree[path], order, outputs, insts, dissolved, None)
        except _DissolveError as e:
            if e.path != path:
                raise
            dissolved.add(path)
            continue
        inst.block = blocks.get(path)
        insts[path] = inst
    outs = [node for _, node in g.outputs]
    return _instance(g, "", names, order, outputs, insts, dissolved, outs)


def _owner(name: str, dissolved: set[str]) -> str:
    """The instance an op or instance path belongs to: its nearest ancestor not dissolved."""
    p = _parent(name)
    while p in dissolved:
        p = _parent(p)
    return p


def _instance(g, path, members, order, outputs, insts, dissolved, outs) -> _Inst:
    inside = set(members)
    ext: list[str] = list(g.inputs) if not path else []
    if path:
        for n in members:
            for src in g.inputs_of(n):
                if src not in inside and src not in ext:
                    ext.append(src)
        outs = [
            n for n in members
            if n in outputs or any(u not in inside for u in g.users_of(n))
        ]  # fmt: skip
        if len(outs) != 1 or not ext:
            raise _DissolveError(path)
    items: list[_Item] = []
    prefix = f"{path}." if path else ""
    for n in members:
        if _owner(n, dissolved) != path:
            continue
        node = g.node(n)
        if node.keys is not None:
            raise _NoStructureError("a composite's step reads weights under another name")
        items.append(_Item(n[len(prefix) :], "op", [], n, node=node))
    for child_path, child in insts.items():
        if child_path and _owner(child_path, dissolved) == path:
            items.append(_Item(child_path[len(prefix) :], "child", [], child.outs[0], child=child))
    items.sort(key=lambda it: order[it.value])
    where = {it.value: it.name for it in items}
    for it in items:
        reads = g.inputs_of(it.value) if it.kind == "op" else it.child.ext
        refs = []
        for src in reads:
            if src in where and where[src] != it.name:
                refs.append(("at", where[src]))
            elif src in ext:
                refs.append(("in", ext.index(src)))
            else:  # a value inside a child instance: that child is no instance
                inner = next(
                    (c.child.path for c in items if c.child and src.startswith(c.child.path + ".")),
                    "",
                )
                raise _DissolveError(inner)
        it.inputs = refs
    inst = _Inst(path, None, items, ext, outs)
    inst.height = 1 + max((it.child.height for it in items if it.child), default=-1)
    return inst


def _loops(inst: _Inst) -> None:
    """Runs of children of one class labelled ``{prefix}{k}``, each reading the previous."""
    items, out, k = inst.items, [], 0
    reads = Counter(ref for it in items for ref in it.inputs)
    indexed = re.compile(r"^(.*?)(\d+)$")
    while k < len(items):
        run = [items[k]]
        while k + len(run) < len(items):
            a, b = run[-1], items[k + len(run)]
            ma, mb = indexed.match(a.name), indexed.match(b.name)
            if not (
                a.kind == b.kind == "child" and a.child.cls is b.child.cls
                and b.inputs == [("at", a.name)] and reads[("at", a.name)] == 1
                and ma and mb and ma[1] == mb[1] and int(mb[2]) == int(ma[2]) + 1
                and (len(run) > 1 or len(a.inputs) == 1)
            ):  # fmt: skip
                break
            run.append(b)
        m = indexed.match(run[0].name)
        # `layer1` ... `layer4` read better written out; `0`, `1`, ... and long runs loop
        short = m is not None and m[1] and m[1][-1].isalnum() and len(run) < 5
        # two blocks that differ in most of their values are two layers, not a repeat
        unlike = (
            len(run) == 2
            and sum(
                repr(a) != repr(b)
                for a, b in zip(run[0].child.args, run[1].child.args, strict=True)
            )
            > 2
        )
        if len(run) < 2 or short or unlike or any(c in run[0].name for c in '.{}"\\'):
            out.append(items[k])
            k += 1
            continue
        last = run[-1]
        out.append(_Item(f"{m[1]}*", "loop", run[0].inputs, last.value,
                         run=[r.child for r in run], prefix=m[1], start=int(m[2])))  # fmt: skip
        for it in items[k + len(run) :]:
            it.inputs = [("at", out[-1].name) if r == ("at", last.name) else r for r in it.inputs]
        k += len(run)
    inst.items = out


def _shortcut(inst: _Inst, name: str | None) -> None:
    """Take the optional shortcut out of the body: its sum reads ``("short", name)``."""
    if name is None:
        return
    it = next((i for i in inst.items if i.name == name and i.kind == "child"), None)
    if it is not None:
        inst.items.remove(it)
        inst.short, inst.short_name = it.child, name
        ref = ("at", name)
    else:
        inst.short_name = name
        ref = ("in", 0)
    for c in inst.items:
        if c.kind == "op" and c.node.op == "add" and ref in c.inputs and len(c.inputs) == 2:
            c.inputs = [("short", name) if r == ref else r for r in c.inputs]
            return
    raise _NoStructureError(f"`{inst.path}`: no sum reads the shortcut")


def _normalise_shortcuts(level: list[_Inst]) -> None:
    """Blocks some of whose instances project: the shortcut becomes optional in all."""
    names: dict[str, str] = {}
    for inst in level:
        if inst.block is not None and (n := _short_name(inst)) is not None:
            names.setdefault(inst.block, n)
    for block, name in names.items():
        uses = [i for i in level if i.block == block]
        if all(_short_name(i) is not None for i in uses):
            continue  # every instance projects: the shortcut is an ordinary child
        for inst in uses:
            _shortcut(inst, name)


def _short_name(inst: _Inst) -> str | None:
    for it in inst.items:
        if (
            it.kind == "child" and it.child.block in _SHORTCUTS and it.inputs == [("in", 0)]
            and len(inst.ext) == 1 and "." not in it.name
        ):  # fmt: skip
            return it.name
    return None


# --- keys and slots -----------------------------------------------------------------------------


def _probe(node: Node, shapes: list[tuple]) -> list[tuple[str, Any]]:
    """Which attributes and input dims an op's constructor text formats, in order."""
    attrs = {k: _Sym(f"@a{k}@") for k in node.attrs}
    syms = [tuple(_Sym(f"@s{i}_{d}@") for d in range(len(s))) for i, s in enumerate(shapes)]
    text = EMITTERS[node.op].module(replace(node, attrs=attrs), syms)
    found = []
    for m in re.finditer(r"@(a[A-Za-z0-9_]+|s\d+_\d+)@", text):
        tag = m[1]
        found.append(
            ("attr", tag[1:]) if tag[0] == "a" else ("dim", tuple(map(int, tag[1:].split("_"))))
        )
    return list(dict.fromkeys(found))


@dataclass
class _Slot:
    family: str
    name: str
    value: Any
    kind: str = "ctor"  # or "call": read by forward, stored on self


def _op_slots(g: Graph, inst: _Inst, it: _Item) -> list[_Slot]:
    node = it.node
    shapes = [g.info(s).shape for s in g.inputs_of(node.name)]
    out = []
    if node.op in _SYMBOLIC:
        for what, where in _probe(node, shapes):
            if what == "attr":
                name = _CHANNELS.get(where, where)
                out.append(_Slot(_family(name), name, node.attrs[where]))
            else:
                port, dim = where
                ref = it.inputs[port] if port < len(it.inputs) else None
                name = (
                    "in_channels"
                    if ref == ("in", 0)
                    else (f"in_channels{ref[1] + 1}" if ref and ref[0] == "in" else "channels")
                )
                out.append(_Slot("channels", name, shapes[port][dim]))
    for attr in _CALL_ATTRS.get(node.op, ()):
        out.append(_Slot(attr, attr, node.attrs[attr], "call"))
    return out


def _family(name: str) -> str:
    return "channels" if name in ("channels", "features", "groups", "in_channels") else name


def _texts(g: Graph, it: _Item) -> tuple[str, str]:
    """An op's constructor and call text, concretely (what must agree across instances
    when the op is not one whose values may be parameters)."""
    node = it.node
    shapes = [g.info(s).shape for s in g.inputs_of(node.name)]
    em = EMITTERS[node.op]
    ctor = em.module(node, shapes) if em.module and node.op not in _SYMBOLIC else ""
    call = ""
    if node.op not in _CALL_ATTRS:
        args = [f"a{k}" for k in range(len(shapes))] or ["a0.shape[0]"]
        call = em.call(node, args, "m", *([shapes] if em.shaped else []))
    return ctor, call


def _key(g: Graph, inst: _Inst) -> tuple:
    key: list[Any] = [inst.block, len(inst.ext), inst.short_name]
    for it in inst.items:
        if it.kind == "op":
            extra: tuple = (it.node.op, tuple(sorted(it.node.attrs)), _texts(g, it))
        elif it.kind == "child":
            extra = (id(it.child.cls),)
        else:
            extra = (id(it.run[0].cls), it.prefix, it.start, _forms_kinds(it))
        key.append((it.kind, it.name, tuple(it.inputs), extra))
    return tuple(key)


def _forms(it: _Item) -> list[tuple]:
    """Per parameter of a loop's class: ("same", v), ("first", a, b) or ("each", values)."""
    out = []
    for k in range(len(it.run[0].args)):
        values = [r.args[k] for r in it.run]
        if len({repr(v) for v in values}) == 1:
            out.append(("same", values[0]))
        elif len({repr(v) for v in values[1:]}) == 1:
            out.append(("first", values[0], values[1]))
        else:
            out.append(("each", tuple(values)))
    return out


def _forms_kinds(it: _Item) -> tuple:
    return tuple(f[0] for f in _forms(it))


def _slots(g: Graph, inst: _Inst) -> list[_Slot]:
    out: list[_Slot] = []
    for it in inst.items:
        if it.kind == "op":
            out += _op_slots(g, inst, it)
        elif it.kind == "child":
            out += [_Slot(f, n, v) for (n, f), v in zip(it.child.cls.params, it.child.args,
                                                       strict=True)]  # fmt: skip
        else:
            out.append(_Slot("blocks", "blocks", len(it.run)))
            for (n, f), form in zip(it.run[0].cls.params, _forms(it), strict=True):
                if form[0] == "same":
                    out.append(_Slot(f, n, form[1]))
                elif form[0] == "first":
                    out += [_Slot(f, n, form[1]), _Slot(f, n, form[2])]
                else:
                    out.append(_Slot(f"{f}s", f"{n}s", form[1]))
    return out


# --- anti-unification ---------------------------------------------------------------------------


def _unify(columns: list[list[Any]], slots: list[_Slot]) -> tuple[list, list]:
    """Parameters (name, family, column) and, per slot, ("const", v) or ("expr", text)."""
    return unify(
        [Slot(s.name if _is_identifier(s.name) else "value", s.family, col, s.kind == "ctor")
         for s, col in zip(slots, columns, strict=True)],
        _NAMES_TAKEN,
    )  # fmt: skip


_NAMES_TAKEN = {"self", "x", "i", "out", "identity", "torch", "nn", "F", "OrderedDict"}


def _value_text(v: Any) -> str:
    if isinstance(v, tuple) and not (len(v) == 2 and v[0] == v[1]):
        return "(" + ", ".join(_value_text(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return _literal(v)


def _text(expr: tuple) -> str:
    return _value_text(expr[1]) if expr[0] == "const" else expr[1]


def _eval(text: str, env: dict[str, Any]) -> Any:
    """An expression this module wrote (a name, ``k * name``, a literal) for one instance."""
    m = re.fullmatch(r"(\d+) \* (\w+)", text)
    if m:
        return int(m[1]) * env[m[2]]
    if text in env:
        return env[text]
    raise _NoStructureError(f"cannot evaluate {text!r}")


# --- writing ------------------------------------------------------------------------------------


class _Writer:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.classes: list[_Class] = []
        self.names: set[str] = set()
        self.helpers: set[str] = set()
        self.ordered_dict = False
        self.training = g.training_only()

    def class_name(self, base: str) -> str:
        name, k = base, 2
        while name in self.names or name in flat._RESERVED:
            name, k = f"{base}{k}", k + 1
        self.names.add(name)
        return name

    # a group of instances of one key becomes one class
    def make(self, group: list[_Inst], top: bool = False) -> None:
        first = group[0]
        slots = _slots(self.g, first)
        per = [_slots(self.g, i) for i in group]
        columns = [[p[k].value for p in per] for k in range(len(slots))]
        params, exprs = _unify(columns, slots)
        short = self._short(group, params) if first.short_name else None
        kind = "class" if top else self._kind(first)
        if kind == "seq" and short is None:
            cls = _Class(
                "", [(p[0], p[1]) for p in params], self._seq_template(first, exprs, params)
            )
        elif kind == "run" and short is None:
            cls = _Class(
                "", [(p[0], p[1]) for p in params], self._run_template(first, exprs, params)
            )
        else:
            base = _class_name(first.block or _path_name(first.path))
            if top:
                base = _class_name(self.g.name)
            name = self.class_name(base)
            template = (
                f"{name}(" + ", ".join(_MARK + str(k) + _MARK for k in range(len(params))) + ")"
            )
            cls = _Class(name, [(p[0], p[1]) for p in params], template)
            cls.lines = self._class_lines(cls, first, group, exprs, params, short, top)
            self.classes.append(cls)
        for k, inst in enumerate(group):
            inst.cls = cls
            inst.args = tuple(p[2][k] for p in params)

    def _kind(self, inst: _Inst) -> str:
        if inst.block is None and len(inst.items) == 1 and inst.items[0].kind == "loop":
            return "run" if len(inst.ext) == 1 else "class"
        names = [it.name for it in inst.items]
        if names and names == [str(k) for k in range(len(names))] and len(inst.ext) == 1:
            prev = ("in", 0)
            for it in inst.items:
                if it.kind != "op" or EMITTERS[it.node.op].call is not _module_call:
                    return "class"
                if it.inputs != [prev] or it.node.op not in _SYMBOLIC:
                    return "class"
                prev = ("at", it.name)
            return "seq"
        return "class"

    def _ctor(self, it: _Item, exprs: list, at: int) -> tuple[str, int]:
        """An op's constructor text with its slots' expressions; the next slot index."""
        node = it.node
        shapes = [list(self.g.info(s).shape) for s in self.g.inputs_of(node.name)]
        attrs = dict(node.attrs)
        if node.op in _SYMBOLIC:
            for what, where in _probe(node, [tuple(s) for s in shapes]):
                e = exprs[at]
                at += 1
                value = e[1] if e[0] == "const" else _Sym(e[1])
                if what == "attr":
                    attrs[where] = value
                else:
                    shapes[where[0]][where[1]] = value
        em = EMITTERS[node.op]
        text = (
            em.module(replace(node, attrs=attrs), [tuple(s) for s in shapes]) if em.module else ""
        )
        return text, at

    def _seq_template(self, inst: _Inst, exprs: list, params: list) -> str:
        subst = self._placeholders(exprs, params)
        parts, at = [], 0
        for it in inst.items:
            text, at = self._ctor(it, subst, at)
            parts.append(text)
        return "nn.Sequential(" + ", ".join(parts) + ")"

    def _placeholders(self, exprs: list, params: list) -> list:
        index = {p[0]: k for k, p in enumerate(params)}
        out = []
        for e in exprs:
            if e[0] == "const":
                out.append(e)
            else:
                text = re.sub(r"[A-Za-z_]\w*", lambda m: _MARK + str(index[m[0]]) + _MARK
                              if m[0] in index else m[0], e[1])  # fmt: skip
                out.append(("expr", text))
        return out

    def _loop_call(self, it: _Item, exprs: list, at: int) -> tuple[str, str, int]:
        """``range`` bound and the element's constructor for a loop item."""
        n = _text(exprs[at])
        at += 1
        args = []
        for form in _forms(it):
            if form[0] == "first":
                a, b = _text(exprs[at]), _text(exprs[at + 1])
                at += 2
                args.append(a if a == b else f"{a} if i == 0 else {b}")
            elif form[0] == "same":
                args.append(_text(exprs[at]))
                at += 1
            else:
                args.append(f"{_text(exprs[at])}[i]")
                at += 1
        return n, _fill(it.run[0].cls.template, args), at

    def _run_template(self, inst: _Inst, exprs: list, params: list) -> str:
        (it,) = inst.items
        n, element, _ = self._loop_call(it, self._placeholders(exprs, params), 0)
        index = "i" if it.start == 0 else f"i + {it.start}"
        if it.prefix == "" and it.start == 0:
            return f"nn.Sequential(*({element} for i in range({n})))"
        self.ordered_dict = True
        return (f'nn.Sequential(OrderedDict((f"{it.prefix}{{{index}}}", {element}) '
                f"for i in range({n})))")  # fmt: skip

    def _short(self, group: list[_Inst], params: list) -> tuple[str, str, list] | None:
        """The shortcut's constructor (in the class's parameters) and its condition."""
        has = [i for i in group if i.short is not None]
        if not has:
            return None
        cls = has[0].short.cls
        if any(i.short.cls is not cls for i in has):
            raise _NoStructureError("shortcuts of different forms")
        envs = [{p[0]: p[2][group.index(i)] for p in params} for i in group]
        seq = self._kind(has[0].short) == "seq"
        if seq:  # its layers' values, each written in the block's parameters
            raw = _slots(self.g, has[0].short)
            per = [_slots(self.g, i.short) for i in has]
            slots = [(s.family, [p[k].value for p in per]) for k, s in enumerate(raw)]
        else:
            slots = [(fam, [i.short.args[k] for i in has]) for k, (_, fam) in enumerate(cls.params)]
        args = []
        for fam, col in slots:
            text = None
            candidates = [
                (p[0], [e[p[0]] for e, i in zip(envs, group, strict=True) if i.short is not None])
                for p in params
                if p[1] == fam
            ]
            for name, values in candidates:
                if [repr(v) for v in values] == [repr(v) for v in col]:
                    text = name
                    break
            if text is None:
                for name, values in candidates:
                    mult = multiple(col, [(name, fam, values)])
                    if mult:
                        text = mult
                        break
            if text is None and same(col):
                args.append(("const", col[0]))
                continue
            if text is None:
                raise _NoStructureError("a shortcut's value is no parameter of its block")
            args.append(("expr", text))
        if seq:
            exprs = args
            ctor = self._seq_template(has[0].short, exprs, [])
        else:
            ctor = _fill(cls.template, [_text(a) for a in args])
        # it projects when the shape changes: a stride, or other channels than its input's
        terms = [f"{p[0]} != 1" for p in params if p[1] == "stride"]
        cx = _column_expr([_SHAPES[i.ext[0]][0] for i in group], params)
        cy = _column_expr([_SHAPES[_short_like(i)][0] for i in group], params)
        if cx is None or cy is None:
            raise _NoStructureError("the shortcut's channels are no parameters of its block")
        if cx != cy:
            terms.append(f"{cx} != {cy}")
        if not terms:
            raise _NoStructureError("no condition for the shortcut")
        for env, inst in zip(envs, group, strict=True):
            holds = any(_holds(t, env) for t in terms)
            if holds != (inst.short is not None):
                raise _NoStructureError("the shortcut's condition does not match its instances")
        return " or ".join(terms), ctor, args

    def _class_lines(self, cls, first, group, exprs, params, short, top) -> list[str]:
        g = self.g
        base = "nn.Module"
        taken = set(_NAMES_TAKEN - {"out", "identity"}) | {p[0] for p in params} | self.names
        sig = ", ".join(["self", *(p[0] for p in params)])
        init = [f"    def __init__({sig}):", "        super().__init__()"]
        stored: list[str] = []
        containers: set[str] = set()
        at = 0
        # forward variables
        inputs = [self._input_name(first, k, top) for k in range(len(first.ext))]
        var: dict[tuple, str] = {("in", k): v for k, v in enumerate(inputs)}
        reads = Counter(r for it in first.items for r in it.inputs)
        reads.update(("in", 0) for it in first.items for r in it.inputs if r[0] == "short")
        fwd: list[str] = []
        fwd_pad = " " * 8
        fresh = ["out"]
        training = {it.name for it in first.items if it.value in self.training}
        if not top and training and len(training) < len(first.items):
            raise _NoStructureError("a training-only branch inside a block")
        ncall = 0
        shape_names = _ShapeNames(params)
        shapes_in = ", ".join(f"{v}: {shape_names.input(group, k)}" for k, v in enumerate(inputs))
        for it in first.items:
            ref = _ref(it.name)
            for r in it.inputs:  # the shortcut, right before the sum reading it
                if r[0] == "short" and r not in var:
                    sref, x = _ref(r[1]), var[("in", 0)]
                    var[r] = "identity"
                    fwd.append(f"        identity = {x} if {sref} is None else {sref}({x})")
            if it.kind == "op":
                node = it.node
                em = EMITTERS[node.op]
                if node.op in flat.HELPERS:
                    self.helpers.add(node.op)
                shapes = [g.info(s).shape for s in g.inputs_of(node.name)]
                if em.module is not None:
                    if node.op in _SYMBOLIC:
                        text, at = self._ctor(it, exprs, at)
                    else:
                        text = em.module(node, shapes)
                    init += self._declare(it.name, text, node, containers)
                call_node = node
                if node.op in _CALL_ATTRS:
                    attrs = dict(node.attrs)
                    for attr in _CALL_ATTRS[node.op]:
                        e = exprs[at]
                        at += 1
                        if e[0] == "expr":
                            attrs[attr] = _Sym(f"self.{e[1]}")
                            if e[1] not in stored:
                                stored.append(e[1])
                    call_node = replace(node, attrs=attrs)
                args = [var[r] for r in it.inputs] or [f"{inputs[0]}.shape[0]"]
                mref = None
                if em.module is not None:
                    mref = _ref(it.name, node.op in ("parameter", "buffer"))
                call = em.call(call_node, args, mref, *([shapes] if em.shaped else []))
            elif it.kind == "child":
                n = len(it.child.cls.params)
                args = [_text(e) for e in exprs[at : at + n]]
                at += n
                init += self._declare(it.name, _fill(it.child.cls.template, args), None, containers)
                call = f"{ref}({', '.join(var[r] for r in it.inputs)})"
            else:
                n, element, at = self._loop_call(it, exprs, at)
                index = "i" if it.start == 0 else f"i + {it.start}"
                key = f'f"{it.prefix}{{{index}}}"'
                init += [f"        for i in range({n}):",
                         f"            self.add_module({key}, {element})"]  # fmt: skip
                (src,) = it.inputs
                v = var[src]
                if reads[src] > 1:
                    v = self._fresh(taken, fresh, it.name)
                    fwd.append(f"        {v} = {var[src]}")
                # a count that is a parameter: forward reads the value __init__ stored
                names = re.findall(r"[A-Za-z_]\w*", n)
                stored += [name for name in names if name not in stored]
                bound = re.sub(r"[A-Za-z_]\w*", lambda m: f"self.{m[0]}", n)
                fwd += [f"        for i in range({bound}):",
                        f"            {v} = getattr(self, {key})({v})"]  # fmt: skip
                var[("at", it.name)] = v
                continue
            first_in = it.inputs[0] if it.inputs else None
            chained = first_in is not None and first_in[0] == "at" and first_in[1] in training
            if it.name in training and not (chained and reads[first_in] == 1):
                v = flat._variable(it.name, taken)  # a branch of its own: named after it
            elif first_in is not None and first_in[0] != "short" and reads[first_in] == 1:
                v = var[first_in]
            else:
                v = self._fresh(taken, fresh, it.name)
            var[("at", it.name)] = v
            ncall += 1
            # an auxiliary classifier's branch runs in training only, as torchvision's
            pad = " " * (12 if top and it.name in training else 8)
            if pad != fwd_pad and pad == " " * 12:
                fwd.append("        if self.training:")
            fwd_pad = pad
            line = f"{pad}{v} = {call}"
            comment = "# " + shape_names.shape(group, it)
            fwd += [f"{line}  {comment}"] if len(line) + len(comment) + 2 <= _WIDTH else [
                f"{pad}{comment}", line]  # fmt: skip
        if short is not None:
            cond, text, _ = short
            init += [f"        self.{first.short_name} = None  # only when the shape changes",
                     f"        if {cond}:",
                     f"            self.{first.short_name} = {text}"]  # fmt: skip
        init += [f"        self.{name} = {name}" for name in stored]
        if top:
            outs = [var[("at", _item_of(first, o))] for o in first.outs]
            ret = f"        return {', '.join(outs)}"
            if g.training_outputs:  # in training mode, as torchvision: (logits, aux, ...)
                extra = [var[("at", _item_of(first, o))] for _, o in g.training_outputs]
                ret = "\n".join(["        if self.training:",
                                 f"            return {', '.join(outs + extra)}", ret])  # fmt: skip
        else:
            ret = f"        return {var[('at', _item_of(first, first.outs[0]))]}"
        lines = [f"class {cls.name}({base}):"]
        if first.block and not top:
            where = first.path if len(group) == 1 else f"{first.path}, ... ({len(group)} uses)"
            lines.append(f'    """Block `{first.block}` of the spec: {where}."""')
            lines.append("")
        lines += [*_wrap_sig(init), "", f"    def forward(self, {', '.join(inputs)}):",
                  f"        # {shapes_in}", *fwd, ret]  # fmt: skip
        return lines

    def _input_name(self, inst: _Inst, k: int, top: bool) -> str:
        if top:
            name = inst.ext[k]
            return name if _is_identifier(name) and name not in _NAMES_TAKEN - {"x"} else f"x{k}"
        return "x" if len(inst.ext) == 1 else f"x{k}"

    def _fresh(self, taken: set[str], fresh: list[str], name: str) -> str:
        if fresh:
            v = fresh.pop()
            if v not in taken:
                taken.add(v)
                return v
        return flat._variable(name, taken)

    def _declare(self, name: str, text: str, node: Node | None, containers: set[str]) -> list[str]:
        """Lines registering layer ``name``; a dotted name's ``nn.ModuleDict`` s first."""
        lines = []
        *outer, seg = name.split(".")
        for k in range(len(outer)):
            path = ".".join(outer[: k + 1])
            if path not in containers:
                containers.add(path)
                lines += self._declare(path, "nn.ModuleDict()", None, containers)
        parent = _ref(".".join(outer)) if outer else "self"
        if outer and seg in _MODULE_DICT:  # would shadow a method of nn.ModuleDict
            raise _NoStructureError(f"`{name}` is a name nn.ModuleDict uses")
        if node is not None and node.op == "buffer":
            extra = "" if node.attrs["persistent"] else ", persistent=False"
            return [*lines, f'        {parent}.register_buffer("{seg}", {text}{extra})']
        if node is not None and node.op == "parameter":
            if not outer and _is_attribute(seg):
                return [*lines, f"        self.{seg} = {text}"]
            return [*lines, f'        {parent}.register_parameter("{seg}", {text})']
        if outer:
            return [*lines, f'        {parent}["{seg}"] = {text}']
        if _is_attribute(seg):
            return [*lines, f"        self.{seg} = {text}"]
        return [*lines, f'        self.add_module("{seg}", {text})']


_MODULE_DICT = {"clear", "pop", "keys", "items", "values", "update"}


def _path_name(path: str) -> str:
    """A class name for a path of no block: its last name, with the one before if it is a
    number (``layers.8`` -> ``layers_8``)."""
    segments = path.split(".")
    name = segments.pop()
    while segments and not name[:1].isalpha():
        name = f"{segments.pop()}_{name}"
    return name or "block"


def _column_expr(col: list[Any], params: list) -> str | None:
    if same(col):
        return _value_text(col[0])
    channels = [p for p in params if p[1] == "channels"]
    for name, _, other in channels:
        if [repr(v) for v in other] == [repr(v) for v in col]:
            return name
    return multiple(col, channels)


def _short_like(inst: _Inst) -> str:
    """The value the shortcut is added to (``like=y``)."""
    for it in inst.items:
        if ("short", inst.short_name) in it.inputs:
            (other,) = [r for r in it.inputs if r[0] != "short"]
            return inst.ext[other[1]] if other[0] == "in" else _value_of(inst, other[1])
    raise _NoStructureError("no sum reads the shortcut")


def _value_of(inst: _Inst, name: str) -> str:
    return next(it.value for it in inst.items if it.name == name)


def _holds(term: str, env: dict) -> bool:
    a, _, b = term.partition(" != ")
    value = _eval(a, env)
    other = int(b) if b.isdigit() else _eval(b, env)
    return _value_text(value) != _value_text(other)


def _fill(template: str, args: list[str]) -> str:
    def fold(m: re.Match) -> str:
        arg = args[int(m[2])]
        return str(int(m[1]) * int(arg)) if arg.isdigit() else m[0]

    template = re.sub(r"(\d+) \* " + _MARK + r"(\d+)" + _MARK, fold, template)
    return re.sub(_MARK + r"(\d+)" + _MARK, lambda m: args[int(m[1])], template)


def _ref(name: str, tensor: bool = False) -> str:
    """How a class's forward reads its layer ``name``: ``self.conv1``, ``self.layers["3"]``
    (a dissolved name path is an ``nn.ModuleDict``), ``self.table`` for a tensor."""
    first, *rest = name.split(".")
    ref = f"self.{first}" if _is_attribute(first) else f'getattr(self, "{first}")'
    for k, seg in enumerate(rest):
        if tensor and k == len(rest) - 1:
            return f"{ref}.{seg}" if _is_attribute(seg) else f'getattr({ref}, "{seg}")'
        ref += f'["{seg}"]'
    return ref


def _item_of(inst: _Inst, value: str) -> str:
    for it in inst.items:
        if it.value == value:
            return it.name
    raise _NoStructureError(f"`{value}` is not produced in `{inst.path or 'the network'}`")


def _wrap_sig(lines: list[str]) -> list[str]:
    """Lines longer than the width are split at their top-level commas."""
    out = []
    for line in lines:
        if len(line) <= _WIDTH or "(" not in line:
            out.append(line)
            continue
        out += _split(line)
    return out


def _split(line: str) -> list[str]:
    indent = len(line) - len(line.lstrip())
    head, depth, parts, cur = None, 0, [], ""
    for ch in line:
        if head is None:
            cur += ch
            if ch == "(":
                head, cur = cur, ""
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                parts.append(cur.strip())
                cur = ""
                depth = -1
                continue
            depth -= 1
        if depth == -1:
            cur += ch
            continue
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if head is None or depth != -1 or any(_generator(p) for p in parts):
        return [line]  # a generator as the only argument takes no trailing comma
    pad = " " * (indent + 4)
    out = [head]
    for p in parts:
        if not p:
            continue
        # an argument that is a call and still too long is split the same way
        long_call = len(pad) + len(p) >= _WIDTH and _is_call(p)
        out += _split(f"{pad}{p},") if long_call else [f"{pad}{p},"]
    return [*out, " " * indent + ")" + cur]


def _generator(text: str) -> bool:
    """Whether ``text`` is an unparenthesised generator expression (``f(i) for i in x``)."""
    depth = 0
    for k, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and text.startswith(" for ", k):
            return True
    return False


def _is_call(text: str) -> bool:
    """Whether ``text`` is one call, ``name(...)`` (not ``f(a) for i in ...``)."""
    head, paren, _ = text.partition("(")
    if not paren or not all(part.isidentifier() for part in head.split(".")):
        return False
    depth = 0
    for k, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and ch in ")]}":
            return k == len(text) - 1
    return False


class _ShapeNames:
    """Shape comments: a dim that is the same in every instance as a number, one equal to
    a parameter as its name, others as H, W (equal columns, equal letters)."""

    def __init__(self, params: list) -> None:
        self.params = params
        self.letters: dict[str, str] = {}

    def _dims(self, cols: list[list[int]]) -> str:
        out = ["B"]
        bases = "CHW" if len(cols) == 3 else "LD" if len(cols) == 2 else "N" * len(cols)
        for d, col in enumerate(cols):
            if same(col):
                out.append(str(col[0]))
                continue
            name = next((p[0] for p in self.params if p[1] == "channels" and p[2] == col), None)
            if name is None and d == 0:
                name = next((m for p in self.params if p[1] == "channels"
                             for m in [multiple(col, [p])] if m), None)  # fmt: skip
            if name is None:
                key = repr((bases[d], col))
                if key not in self.letters:
                    base = bases[d]
                    k = sum(1 for v in self.letters.values() if v.rstrip("0123456789") == base)
                    self.letters[key] = base + (str(k + 1) if k else "")
                name = self.letters[key]
            out.append(name)
        return "(" + ", ".join(out) + ")"

    def input(self, group: list[_Inst], k: int) -> str:
        return self._shape(group, lambda i: i.ext[k])

    def shape(self, group: list[_Inst], it: _Item) -> str:
        index = group[0].items.index(it)
        return self._shape(group, lambda i: i.items[index].value)

    def _shape(self, group: list[_Inst], value) -> str:
        shapes = [self._of(i, value(i)) for i in group]
        if len({len(s) for s in shapes}) != 1:
            return "(B, ...)"
        return self._dims([list(col) for col in zip(*shapes, strict=True)])

    def _of(self, inst: _Inst, value: str) -> tuple:
        return _SHAPES[value]


_SHAPES: dict[str, tuple] = {}


def structured(graph: Graph, source_path: str | None = None) -> str | None:
    """The structured source of ``graph``, or ``None`` when it has no such structure."""

    g = decompose(graph, EMITTERS)
    for node in g.nodes():
        if node.op not in EMITTERS and node.op != "input":
            return None  # the flat generator reports it
    try:
        top = _tree(g)
        _SHAPES.clear()
        _SHAPES.update({n.name: g.info(n.name).shape for n in g.nodes()})
        writer = _Writer(g)
        everything: list[_Inst] = []

        def collect(inst: _Inst) -> None:
            for it in inst.items:
                if it.child is not None:
                    collect(it.child)
            everything.append(inst)

        collect(top)
        pending = [i for i in everything if i is not top]
        while pending:
            ready = [
                i
                for i in pending
                if all(it.child.cls is not None for it in i.items if it.child is not None)
            ]
            waiting = {i.block for i in pending if i not in ready and i.block}
            # all instances of one block at once: those that project with those that do not
            level = [i for i in ready if i.block is None or i.block not in waiting]
            if not level:
                raise _NoStructureError("no order of the blocks")
            for inst in level:
                _loops(inst)
            _normalise_shortcuts(level)
            groups: dict[tuple, list[_Inst]] = defaultdict(list)
            for inst in level:
                groups[_key(g, inst)].append(inst)
            for group in groups.values():
                writer.make(group)
            pending = [i for i in pending if i.cls is None]
        _loops(top)
        writer.make([top], top=True)
    except _NoStructureError:
        return None
    network = writer.classes[-1].name
    body = [line for c in writer.classes for line in [*c.lines, "", ""]]
    imports = ["from collections import OrderedDict", ""] if writer.ordered_dict else []
    head = file_head(g, source_path, "\n".join(body), sorted(writer.helpers), imports)
    return "\n".join([*head, *body, *file_tail(network)])


def generate(graph: Graph, source_path: str | None = None) -> str:
    """Structured source of ``graph`` when its structure is found, else the flat form."""
    text = structured(graph, source_path)
    return text if text is not None else flat.generate(graph, source_path)
