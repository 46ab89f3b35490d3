"""Blocks and loops from an imported graph: the idiomatic spec.

Bottom-up over the module tree, each module instance whose calls read some values and
produce one becomes a call of a block, and the instances of one class whose bodies differ
only in attribute values become one block with those values as parameters
(anti-unification, :mod:`resdsl.antiunify`, shared with the PyTorch generator: a value
that varies is a parameter, two that always agree are one, one that is always an integer
multiple of another is written so). Within a body:

* a 1x1 convolution + batch norm projection of the block's input that is added to its
  result, and in a class that projects somewhere the identity it stands for, become
  ``y + downsample: shortcut(x, like=y)``: it projects only when the shapes differ, as
  torchvision's ``downsample`` does;
* runs of calls to one block labelled ``0``, ``1``, ... that feed each other become a
  ``for`` loop, each argument a constant, ``if i == 0 then a else b`` or an element of a
  tuple.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..antiunify import Slot, unify
from .graph import Call, Imported

BLOCK, SHORTCUT, LOOP = "@block", "@shortcut", "@loop"


@dataclass(frozen=True)
class Expr:
    """Spec text standing for an attribute value (a parameter, ``4 * planes``)."""

    text: str


@dataclass
class Block:
    """A block definition: name, parameters (name, type), input ids, body, returned id."""

    name: str
    params: list[tuple[str, str]]
    inputs: list[str]
    calls: list[Call]
    output: str


@dataclass
class Structured:
    blocks: list[Block] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)  # the network's body


@dataclass
class _Instance:
    scope: str
    cls: str
    body: list[Call]
    ext: list[str]
    out: str
    block: str | None = None
    args: tuple = ()
    params: tuple[str, ...] = ()  # the block's parameter names


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


def relative(label: str | None, scope: str) -> str | None:
    """A label path as written inside the block instance ``scope``."""
    if label is None or not scope:
        return label
    return label[len(scope) + 1 :] if label.startswith(scope + ".") else label


def structure(g: Imported) -> Structured:
    calls = [Call(c.id, c.op, dict(c.attrs), list(c.inputs), c.label, c.scope, c.source)
             for c in g.calls]  # fmt: skip
    instances: dict[str, _Instance] = {}
    # 1. collapse module instances, deepest first, into block calls
    paths = {c.scope for c in calls if c.scope}
    paths |= {p[:k] for p in paths for k in range(len(p)) if p[k] == "."}  # their ancestors
    for scope in sorted(paths, key=lambda s: (-s.count("."), s)):
        members = [c for c in calls if c.scope == scope]
        members = _hoisted(members, scope)
        ids = {c.id for c in members}
        ext = list(dict.fromkeys(i for c in members for i in c.inputs if i not in ids))
        outside = {i for c in calls if c.scope != scope for i in c.inputs}
        outside |= {*g.outputs, *g.training_outputs}
        outs = [c.id for c in members if c.id in outside]
        if not members:
            continue
        own = {id(c) for c in members}
        stray = any(  # a call of the module's own (a shared buffer) left outside it
            c.label and c.label.startswith(scope + ".") for c in calls if id(c) not in own
        )
        if len(outs) != 1 or not ext or stray:
            for c in members:  # not a block: its calls stay, in the enclosing body
                c.scope = _parent(scope)
            continue
        instances[scope] = _Instance(scope, g.scopes.get(scope, "module"), members, ext, outs[0])
        index = calls.index(members[0])
        for c in members:
            calls.remove(c)
        calls.insert(index, Call(outs[0], BLOCK, {"instance": scope}, ext, scope, _parent(scope)))
        # a constant is written where a layer first reads it, so an instance's later member
        # may read one that its first member precedes: the block call goes after it
        calls = _in_order(calls)
    # 2. shortcuts first (they drop projection instances from the bodies), then by height:
    # an instance after the instances it calls, all of one class and shape as one block
    projecting = {
        i.cls for i in instances.values()
        for c in i.body if c.op == BLOCK and _is_projection(instances[c.attrs["instance"]])
    }  # fmt: skip
    for inst in instances.values():
        inst.body = _with_shortcuts(inst, instances, inst.cls in projecting)
    height: dict[str, int] = {}

    def measure(inst: _Instance) -> int:
        if inst.scope not in height:
            children = [instances[c.attrs["instance"]] for c in inst.body if c.op == BLOCK]
            height[inst.scope] = 1 + max((measure(c) for c in children), default=-1)
        return height[inst.scope]

    blocks: dict[str, Block] = {}
    for level in sorted({measure(i) for i in instances.values()}):
        batch = [i for i in instances.values() if height[i.scope] == level]
        for inst in batch:
            inst.body = _with_loops(inst, instances)
            _bind(inst.body, instances)
        groups: dict[tuple, list[_Instance]] = defaultdict(list)
        for inst in batch:
            groups[(inst.cls, _shape_key(inst))].append(inst)
        for (cls, _), same in groups.items():
            body = same[0].body
            if len(body) == 1 and body[0].op == LOOP and cls in ("Sequential", "ModuleList"):
                cls = body[0].attrs["block"] + "s"  # a stage: "bottlenecks"
            block = _unify(_block_name(cls, blocks), same)
            blocks[block.name] = block
    top = _Instance("", "", calls, [], "")
    calls = _with_loops(top, instances)
    _bind(calls, instances)
    calls = _inline_once(blocks, calls)
    return Structured(_ordered(blocks, calls), calls)


def _in_order(calls: list[Call]) -> list[Call]:
    """``calls`` with each after the calls whose values it reads, otherwise in their order
    (a call waits only for a producer that comes later)."""
    position = {c.id: k for k, c in enumerate(calls)}
    waiting: dict[str, list[Call]] = defaultdict(list)
    done: set[str] = set()
    out: list[Call] = []

    def place(c: Call) -> None:
        late = [i for i in c.inputs if i in position and i not in done]
        if late:
            waiting[late[0]].append(c)
            return
        out.append(c)
        done.add(c.id)
        for w in waiting.pop(c.id, []):
            place(w)

    for c in calls:
        place(c)
    if len(out) != len(calls):  # a cycle: not a structure to write
        raise ValueError("the calls read each other in a cycle")
    return out


def _inline_once(blocks: dict[str, Block], top: list[Call]) -> list[Call]:
    """A block without parameters called once is written out where it is called (its
    labels under the call's): it names no reusable unit, it only nests."""
    while True:
        bodies = [top, *(b.calls for b in blocks.values())]
        uses: dict[str, int] = defaultdict(int)
        for body in bodies:
            for c in body:
                if c.op in (BLOCK, LOOP):
                    uses[c.attrs["block"]] += 2 if c.op == LOOP else 1
        once = {n for n, k in uses.items() if k == 1 and not blocks[n].params}
        # innermost first: a block spliced in must not call one spliced away in this round
        once = {n for n in once if not any(
            c.op == BLOCK and c.attrs["block"] in once for c in blocks[n].calls)}  # fmt: skip
        if not once:
            return top
        for body in bodies:
            for k, c in enumerate(body):
                if c.op == BLOCK and c.attrs["block"] in once and c.label:
                    body[k : k + 1] = _spliced(blocks[c.attrs["block"]], c)
        for name in once:
            del blocks[name]


def _spliced(block: Block, call: Call) -> list[Call]:
    """``block``'s body in place of ``call``: ids made unique, labels under the call's."""
    ids = {i: f"{call.id}/{i}" for i in (c.id for c in block.calls)}
    ids.update(zip(block.inputs, call.inputs, strict=True))
    ids[block.output] = call.id
    out = []
    for c in block.calls:
        attrs = dict(c.attrs)
        if c.op == LOOP:
            attrs["prefix"] = f"{call.label}.{attrs['prefix']}"
        label = f"{call.label}.{c.label}" if c.label else None
        out.append(Call(ids[c.id], c.op, attrs, [ids.get(i, i) for i in c.inputs], label,
                        call.scope, c.source))  # fmt: skip
    return out


def _bind(body: list[Call], instances: dict[str, _Instance]) -> None:
    """Block calls get their block's name and arguments."""
    for c in body:
        if c.op == BLOCK and "instance" in c.attrs:
            inst = instances[c.attrs.pop("instance")]
            c.attrs.update(block=inst.block, args=inst.args, names=inst.params)


def _ordered(blocks: dict[str, Block], top: list[Call]) -> list[Block]:
    """The blocks the network calls (directly or not), callees before callers."""
    out: dict[str, Block] = {}

    def visit(name: str) -> None:
        if name in out:
            return
        for c in blocks[name].calls:
            if c.op in (BLOCK, LOOP):
                visit(c.attrs["block"])
        out[name] = blocks[name]

    for c in top:
        if c.op in (BLOCK, LOOP):
            visit(c.attrs["block"])
    return list(out.values())


def _block_name(cls: str, taken: dict) -> str:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls).lower()
    snake = re.sub(r"[^a-z0-9_]", "_", snake).strip("_") or "block"
    if snake[0].isdigit():
        snake = f"b_{snake}"
    name, k = snake, 2
    while name in taken:
        name, k = f"{snake}_{k}", k + 1
    return name


def _hoisted(members: list[Call], scope: str) -> list[Call]:
    """A module that starts by concatenating its inputs (a DenseNet layer reads all earlier
    features) takes the concatenation instead: the ``concat`` moves to the caller, so
    instances that read different numbers of tensors become calls of one block."""
    if len(members) < 2 or members[0].op != "concat" or len(members[0].inputs) < 2:
        return members
    first, ids = members[0], {c.id for c in members}
    if any(i in ids for i in first.inputs) or any(
        i in c.inputs for c in members[1:] for i in first.inputs
    ):  # fmt: skip
        return members
    first.scope = _parent(scope)
    return members[1:]


# --- shortcuts ---------------------------------------------------------------------------------


def _is_projection(inst: _Instance) -> bool:
    """A 1x1 convolution without bias or padding, then a default batch norm, labelled
    ``0`` and ``1`` (the layers ``shortcut`` makes)."""
    if [c.op for c in inst.body] != ["conv2d", "batchnorm2d"]:
        return False
    if [relative(c.label, inst.scope) for c in inst.body] != ["0", "1"]:
        return False
    conv, bn = inst.body
    k = conv.attrs
    return (
        _one(k.get("kernel")) and not k.get("bias", True) and k.get("groups", 1) == 1
        and _zero(k.get("padding", 0)) and _one(k.get("dilation", 1))
        and bn.inputs == [conv.id] and bn.attrs.get("eps", 1e-5) == 1e-5
        and bn.attrs.get("momentum", 0.1) == 0.1 and bn.attrs.get("affine", True)
    )  # fmt: skip


def _one(v: Any) -> bool:
    return v in (1, (1, 1))


def _zero(v: Any) -> bool:
    return v in (0, (0, 0))


def _with_shortcuts(inst: _Instance, instances: dict, projects: bool) -> list[Call]:
    """``add(y, projection(x))`` and, in a class that projects somewhere, ``add(y, x)``
    with ``x`` the block's single input: ``y + downsample: shortcut(x, like=y)``."""
    if not projects or len(inst.ext) != 1:
        return inst.body
    out = list(inst.body)
    for c in out:
        if c.op != "add" or len(c.inputs) != 2:
            continue
        y, other = c.inputs
        proj = next((p for p in out if p.id == other and p.op == BLOCK), None)
        if proj is not None and proj.inputs == inst.ext:
            if not _is_projection(instances[proj.attrs["instance"]]):
                continue
            label = proj.label
            out.remove(proj)
        elif other == inst.ext[0]:
            label = f"{inst.scope}.downsample"
        else:
            continue
        sid = f"{c.id}/shortcut"
        at = out.index(c)
        out.insert(at, Call(sid, SHORTCUT, {}, [inst.ext[0], y], label, inst.scope, c.source))
        out[at + 1] = Call(c.id, "add", {}, [y, sid], c.label, c.scope, c.source)
        break
    return out


# --- loops -------------------------------------------------------------------------------------

_INDEXED = re.compile(r"^(?P<prefix>.*?)(?P<n>\d+)$")


def _with_loops(inst: _Instance, instances: dict[str, _Instance]) -> list[Call]:
    """Runs of calls to one block labelled ``{prefix}{k}``, ``{prefix}{k + 1}``, ... each
    reading the previous one's value, become one ``@loop`` call."""
    body, out, k = inst.body, [], 0
    while k < len(body):
        run = [body[k]]
        while k + len(run) < len(body) and _continues(run[-1], body[k + len(run)], inst, instances):
            run.append(body[k + len(run)])
        repeated = len(run) == 2 and instances[run[0].attrs["instance"]].args == instances[
            run[1].attrs["instance"]].args  # fmt: skip
        if len(run) < 3 and not repeated:  # two different calls read better written out
            out.append(body[k])
            k += 1
            continue
        first = _INDEXED.match(relative(run[0].label, inst.scope) or "")
        callees = [instances[c.attrs["instance"]] for c in run]
        forms = []
        for a in range(len(callees[0].args)):
            values = [i.args[a] for i in callees]
            rest = values[1:]
            forms.append(("first", values[0], rest[0]) if len(set(map(repr, rest))) == 1
                         else ("each", tuple(values)))  # fmt: skip
        out.append(Call(run[-1].id, LOOP, {
            "block": callees[0].block, "names": callees[0].params, "prefix": first["prefix"],
            "start": int(first["n"]), "n": len(run), "forms": forms,
        }, list(run[0].inputs), None, inst.scope, run[0].source))  # fmt: skip
        k += len(run)
    return out


def _continues(a: Call, b: Call, inst: _Instance, instances: dict) -> bool:
    if a.op != BLOCK or b.op != BLOCK or b.inputs != [a.id] or len(a.inputs) != 1:
        return False
    readers = [c for c in inst.body if a.id in c.inputs]
    if readers != [b] or a.id == inst.out:  # `a`'s value is read only by `b`
        return False
    ia, ib = instances[a.attrs["instance"]], instances[b.attrs["instance"]]
    if ia.block != ib.block:
        return False
    ma = _INDEXED.match(relative(a.label, inst.scope) or "")
    mb = _INDEXED.match(relative(b.label, inst.scope) or "")
    return bool(ma and mb and ma["prefix"] == mb["prefix"] and int(mb["n"]) == int(ma["n"]) + 1)


# --- anti-unification --------------------------------------------------------------------------


def _shape_key(inst: _Instance) -> tuple:
    """What instances of one block share: ops, labels, wiring and attribute names."""
    index = {c.id: k for k, c in enumerate(inst.body)}
    refs = {i: ("in", k) for k, i in enumerate(inst.ext)}
    key = []
    for c in inst.body:
        inputs = tuple(refs.get(i) or ("at", index[i]) for i in c.inputs)
        label = relative(c.label, inst.scope)
        if c.op == LOOP:
            kinds = tuple(f[0] for f in c.attrs["forms"])
            extra = (c.attrs["block"], c.attrs["prefix"], c.attrs["start"], kinds)
        elif c.op == BLOCK:
            extra = (c.attrs["block"],)
        else:
            extra = tuple(sorted(c.attrs))
        key.append((c.op, label, inputs, extra))
    return tuple(key)


def _positions(c: Call) -> list[tuple[str, Any]]:
    """(name, value) of each attribute value of a body call, in a fixed order."""
    if c.op == BLOCK:
        return list(zip(c.attrs["names"], c.attrs["args"], strict=True))
    if c.op == LOOP:
        out: list[tuple[str, Any]] = [("blocks", c.attrs["n"])]
        for name, form in zip(c.attrs["names"], c.attrs["forms"], strict=True):
            if form[0] == "first":
                out += [(name, form[1]), (f"{name}_rest", form[2])]
            else:
                out.append((name, form[1]))
        return out
    if c.op == SHORTCUT:
        return []
    return [(_ATTR_NAMES.get(k, k), _compact(c.op, k, c.attrs[k])) for k in sorted(c.attrs)]


def _compact(op: str, attr: str, value: Any) -> Any:
    """A pair attribute of two equal values as one int, as specs write it."""
    from ..ops import OPS

    kind = next((a.kind for a in OPS[op].attrs if a.name == attr), "")
    if kind in ("pair", "optional_pair", "padding") and isinstance(value, tuple):
        return value[0] if len(set(value)) == 1 else value
    return value


_ATTR_NAMES = {"out_channels": "channels", "out_features": "features"}


def _unify(name: str, same: list[_Instance]) -> Block:
    """One block for instances of one shape: values that vary become parameters."""
    first = same[0]
    columns: list[list[Any]] = []  # per position: its value in each instance
    names: list[str] = []
    for k, c in enumerate(first.body):
        for p, (pname, _) in enumerate(_positions(c)):
            names.append(pname)
            columns.append([_positions(i.body[k])[p][1] for i in same])
    for col in columns:
        if any(type(v) is tuple for v in col) and any(type(v) is int for v in col):
            col[:] = [(v, v) if type(v) is int else v for v in col]  # pairs: (3, 3) with (1, 7)
    # one parameter for columns that always agree, or an integer multiple of one: only
    # within a family of attributes (channels with channels or groups, ...), so two values
    # that agree by chance stay two parameters
    slots = [Slot(re.sub(r"[^A-Za-z0-9_]", "_", pname), _kin(_family(pname)), col)
             for pname, col in zip(names, columns, strict=True)]  # fmt: skip
    found, unified = unify(slots, _RESERVED)
    params = [(p.name, _type(p.values), p.values) for p in found]  # name, type, column
    exprs = [Expr(e[1]) if e[0] == "expr" else e[1] for e in unified]
    params.sort(key=lambda p: _ORDER.get(_family(p[0]), len(_ORDER)))
    # the body with the parameters in, labels relative to the instance
    body, e = [], iter(exprs)
    rename = {i: "x" if len(first.ext) == 1 else f"x{k}" for k, i in enumerate(first.ext)}
    for c in first.body:
        values = [next(e) for _ in _positions(c)]
        body.append(_substituted(c, values, first.scope, rename))
    block = Block(name, [(p[0], p[1]) for p in params], list(rename.values()), body,
                  rename.get(first.out, first.out))  # fmt: skip
    for inst in same:
        inst.block = name
        inst.args = tuple(
            next(col[same.index(inst)] for p, col in ((q[0], q[2]) for q in params) if p == pname)
            for pname, _ in block.params
        )
        inst.params = tuple(p for p, _ in block.params)
    return block


_RESERVED = {"x", "x0", "x1", "x2", "x3", "i", "label"}
# parameters of the families a block's signature lists first, in this order
_ORDER = {n: k for k, n in enumerate(
    ["channels", "features", "blocks", "kernel", "stride", "padding", "groups", "dilation"]
)}  # fmt: skip


def _family(name: str) -> str:
    """``channels2``, ``channels_rest`` -> ``channels``."""
    return re.sub(r"(_rest)?\d*$", "", name)


def _kin(family: str) -> str:
    """The families whose values may be one parameter: a group count is a channel count."""
    return "channels" if family == "groups" else family


def _type(col: list[Any]) -> str:
    kinds = {type(v) for v in col}
    if kinds == {bool}:
        return "bool"
    if kinds <= {int}:
        return "int"
    if kinds <= {int, float}:
        return "float"
    if kinds == {str}:
        return "str"
    return "tuple"


def _substituted(c: Call, values: list[Any], scope: str, rename: dict[str, str]) -> Call:
    label = relative(c.label, scope)
    inputs = [rename.get(i, i) for i in c.inputs]
    cid = rename.get(c.id, c.id)
    if c.op == BLOCK:
        attrs = {**c.attrs, "args": tuple(values)}
    elif c.op == LOOP:
        it, forms = iter(values[1:]), []
        for form in c.attrs["forms"]:
            forms.append(
                ("first", next(it), next(it)) if form[0] == "first" else ("each", next(it))
            )
        attrs = {**c.attrs, "n": values[0], "forms": forms}
    elif c.op == SHORTCUT:
        attrs = {}
    else:
        attrs = dict(zip(sorted(c.attrs), values, strict=True))
    return Call(cid, c.op, attrs, inputs, label, "", c.source)
