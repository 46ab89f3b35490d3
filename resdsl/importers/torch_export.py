"""The ``torch.export`` route of the PyTorch importer: for models torch.fx cannot trace
(``isinstance(x, torch.Tensor)`` checks, Python that a proxy cannot stand in for) or whose
fx graph calls functions or methods the converter has no rule for (``x.squeeze(1)``,
``x.narrow(...)``, a library's own helper).

``torch.export`` (non-strict: it runs ``forward`` in Python on fake tensors) records the
model as ATen ops with every module that ran in each node's ``nn_module_stack``. This
module rebuilds from it the graph the fx route would have traced, so the one converter
(:mod:`.torch_fx`) reads both:

- the ops of one call of a leaf module (a module the op table has, as the fx trace keeps
  it) are folded back into one ``call_module`` node: its weights then keep their module
  paths as labels, and the converter reads the module's attributes as it does for fx;
- every other ATen op becomes the torch function or tensor method the converter has for it
  (``aten.add.Tensor`` is ``torch.add``, ``aten.view`` a reshape to the op's static result
  shape, ``aten.slice`` a subscript, ...); one without a counterpart stays as it is and is
  reported, with its module path, unless it computes a constant;
- parameters and buffers, lifted to inputs by export, are read by their module paths.

Shapes are the example's (export specialises them), as in the fx route's concrete trace.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any


def exported_graph(
    module: Any,
    example: Any,
    is_leaf: Callable[[Any], bool],
    has_rule: Callable[[str, Any], bool],
    setitem: Callable[[Any, Any, Any], Any],
) -> tuple[dict, Any]:
    """``module`` exported on ``example``, as ``(root, graph)`` for ``torch.fx.GraphModule``:
    the graph in the fx route's form, the root the modules and tensors it names.
    ``is_leaf(m)``: whether the fx route keeps module ``m`` as one call; ``has_rule(kind,
    target)``: whether the converter reads an fx node of that kind (``call_function``,
    ``call_method``) and target; ``setitem(t, index, value)``: the converter's function
    for ``t[index] = value`` (a number). Raises what ``torch.export`` raises when it cannot
    export the module."""
    import torch
    import torch.fx

    with torch.no_grad():
        # functional ATen: in-place ops (`x += y`, `relu_`) become their out-of-place forms
        program = torch.export.export(module, (example,), strict=False).run_decompositions({})
    signature = program.graph_signature
    state = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
    lifted = signature.inputs_to_lifted_tensor_constants
    user_inputs = set(signature.user_inputs)

    def tensor_of(name: str) -> Any:  # a lifted input: the module's own tensor
        if name in state:
            path = state[name]
            owner, _, attr = path.rpartition(".")
            return getattr(module.get_submodule(owner) if owner else module, attr)
        return program.constants[lifted[name]]

    nodes = list(program.graph.nodes)
    groups = _leaf_calls(module, nodes, is_leaf, lambda n: state.get(n.name, lifted.get(n.name)))
    graph = torch.fx.Graph()
    root: dict[str, Any] = {}
    env: dict[Any, Any] = {}

    reader: list[Any] = [None]  # the exported node being rebuilt

    def read(node: Any) -> Any:  # the new graph's node for the exported one
        if node not in env and node.op == "placeholder":  # a weight or constant, first read
            target = state.get(node.name) or f"_exported_constant.{lifted[node.name]}"
            root[target] = tensor_of(node.name)
            env[node] = graph.get_attr(target)
            stack = reader[0].meta.get("nn_module_stack")
            if stack:  # where it is read: where an error about it points
                env[node].meta["nn_module_stack"] = dict(stack)
        return env[node]

    done: set[Any] = set(_filled_slices(nodes))  # read as `setitem`'s number instead
    for node in nodes:
        if node in done:
            continue
        reader[0] = node
        if node.op == "placeholder":
            if node.name in user_inputs:
                env[node] = graph.placeholder(node.name)
            continue
        if node.op == "output":
            names = set(signature.user_outputs)
            outs = [read(a) for a in node.args[0] if getattr(a, "name", None) in names]
            graph.output(outs[0] if len(outs) == 1 else tuple(outs))
            continue
        group = groups.get(node)
        if group is not None:
            path, members, x, result = group
            root[path] = leaf = module.get_submodule(path)
            stack = _stack_to(node.meta.get("nn_module_stack") or {}, path)
            if isinstance(leaf, torch.nn.MultiheadAttention):  # one input: self-attention
                new = graph.call_module(path, (read(x),) * 3, {"need_weights": False})
                new.meta["nn_module_stack"] = stack
                new = graph.call_function(operator.getitem, (new, 0))  # (output, weights)
            else:
                new = graph.call_module(path, (read(x),))
            new.meta["nn_module_stack"] = stack
            env[result] = new
            done.update(members)
            continue
        if not node.users:  # export's own asserts on shapes and dtypes
            continue
        kind, target, args, kwargs = _counterpart(node, has_rule, setitem)
        args = torch.fx.node.map_arg(args, read)
        kwargs = torch.fx.node.map_arg(kwargs, read)
        new = graph.create_node(kind, target, args, kwargs)
        if "nn_module_stack" in node.meta:
            new.meta["nn_module_stack"] = dict(node.meta["nn_module_stack"])
        env[node] = new
    return root, graph


def _stack_to(stack: dict, path: str) -> dict:
    """``stack`` up to the entry of the module at ``path`` (excluded: the call is that
    module's, and its scope is its parent's)."""
    out = {}
    for key, value in stack.items():
        if value[0] == path:
            break
        out[key] = value
    return out


def _leaf_calls(
    module: Any, nodes: list, is_leaf: Callable[[Any], bool], owner: Callable[[Any], Any]
) -> dict:
    """The calls of leaf modules in the exported ``nodes``: for the first node of each,
    ``(path, nodes, input, result)``. A call is a run of consecutive nodes whose outermost
    leaf module is the same call of it (export's ``nn_module_stack`` key: ``m@1`` for a
    module's second call); only one that reads one tensor besides the module's own
    weights (``owner``: a lifted input's module path) and gives one result is folded (the
    rest stay ATen ops)."""
    leaf_of: dict[Any, tuple[str, str]] = {}
    cache: dict[str, bool] = {}
    for node in nodes:
        if node.op != "call_function":
            continue
        for key, (path, _cls) in (node.meta.get("nn_module_stack") or {}).items():
            if not path:
                continue
            if path not in cache:
                try:
                    cache[path] = bool(is_leaf(module.get_submodule(path)))
                except AttributeError:
                    cache[path] = False
            if cache[path]:  # the outermost: fx does not trace into a leaf
                leaf_of[node] = (path, key)  # the key tells calls apart (`lin@1`: the 2nd)
                break
    runs: list[tuple[Any, list]] = []
    for node in nodes:
        call = leaf_of.get(node)
        if call is None:
            if node.op == "call_function" and runs and runs[-1][0] is not None:
                runs.append((None, []))
            continue
        if runs and runs[-1][0] == call:
            runs[-1][1].append(node)
        else:
            runs.append((call, [node]))
    groups = {}
    for call, members in runs:
        if call is None:
            continue
        path = call[0]
        inside = set(members)
        inputs = []
        for n in members:
            for a in n.all_input_nodes:
                mine = str(owner(a) or "").startswith(path + ".")  # its own weight
                if a not in inside and not mine and a not in inputs:
                    inputs.append(a)
        results = [n for n in members if any(u not in inside for u in n.users)]
        if len(inputs) == 1 and len(results) == 1:
            groups[members[0]] = (path, members, inputs[0], results[0])
    return groups


def _filled_slices(nodes: list) -> list:
    """The ``aten.zero`` / ``aten.fill`` nodes (and the slices only they read) whose result
    only a ``slice_scatter`` writes back (``bias[a:b].zero_()``, functionalised): that is
    ``setitem`` with the number (see ``_counterpart``)."""
    out = []
    for node in nodes:
        if _name(node) in _FILLS and all(_name(u) == "slice_scatter" for u in node.users):
            out.append(node)
            piece = node.args[0]
            if _name(piece) == "slice" and set(piece.users) == {node}:
                out.append(piece)
    return out


def _name(node: Any) -> str | None:
    packet = getattr(getattr(node, "target", None), "_overloadpacket", None)
    return None if packet is None else packet.__name__


def _counterpart(
    node: Any, has_rule: Callable[[str, Any], bool], setitem: Callable[[Any, Any, Any], Any]
) -> tuple[str, Any, tuple, dict]:
    """The fx node (kind, target, args, kwargs) the converter reads for an ATen op:
    the torch function or tensor method it is, else the op itself."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    target, args, kwargs = node.target, tuple(node.args), dict(node.kwargs)
    packet = getattr(target, "_overloadpacket", None)
    if packet is None:  # operator.getitem of a tuple result, ...
        return "call_function", target, args, kwargs
    name = packet.__name__
    value = node.meta.get("val")
    if name in _VIEWS and isinstance(value, torch.Tensor):
        before = args[0].meta["val"].shape
        if value.dim() == 2 and len(before) > 2 and value.shape[0] == before[0]:
            return "call_function", torch.flatten, (args[0], 1), {}  # what `x.flatten(1)` was
        return "call_function", torch.reshape, (args[0], tuple(value.shape)), {}
    if name in ("split", "split_with_sizes", "chunk", "unbind"):
        a = _by_name(target, args, kwargs)
        if name == "chunk":
            return "call_function", torch.chunk, (a["input"], a["chunks"], a["dim"]), {}
        if name == "unbind":
            return "call_function", torch.unbind, (a["input"], a["dim"]), {}
        how = a["split_size"] if name == "split" else a["split_sizes"]
        return "call_function", torch.split, (a["input"], how, a["dim"]), {}
    if name == "slice_scatter" and _name(args[1]) in _FILLS:  # `t[a:b] = v`, v a number
        a = _by_name(target, args, kwargs)
        fill = a["src"]
        value = 0.0 if _name(fill) == "zero" else fill.args[1]
        index = _subscript(a["input"], a["dim"], slice(a["start"], a["end"], a["step"]))
        return "call_function", setitem, (a["input"], index, value), {}
    if name == "linalg_vector_norm":  # F.normalize's denominator, say
        a = _by_name(target, args, kwargs)
        return "call_function", torch.norm, (a["input"], a["ord"], a["dim"], a["keepdim"]), {}
    if name == "clamp_min":
        return "call_function", torch.clamp, (args[0], args[1]), {}
    if name == "expand" and node.users and all(_name(u) in _BROADCASTING for u in node.users):
        return "call_method", "contiguous", (args[0],), {}  # what reads it broadcasts anyway
    if name in _FRESH:  # reads only its argument's dtype: a constant
        return "call_method", name, args, kwargs
    if name in ("slice", "narrow", "index", "select"):
        a = _by_name(target, args, kwargs)
        x = a["input"]
        if name == "index":
            index = tuple(slice(None) if i is None else i for i in a["indices"])
        elif name == "select":  # `x[k]`, `x[:, k]`: a subscript, as fx records it
            index = _subscript(x, a["dim"], a["index"])
        else:
            if name == "narrow":
                a.update(end=a["start"] + a["length"], step=1)
            index = _subscript(x, a["dim"], slice(a["start"], a["end"], a["step"]))
        return "call_function", operator.getitem, (x, index), {}
    if name == "t":
        return "call_function", torch.transpose, (args[0], 0, 1), {}
    if name == "rsub":
        return "call_function", torch.sub, (args[1], args[0]), kwargs
    if name in _ALIASES:
        return "call_method", "contiguous", (args[0],), {}
    if name in ("_softmax", "softmax"):
        return "call_function", torch.softmax, (args[0], args[1]), {}
    if name == "_to_copy" or (name == "to" and isinstance(value, torch.Tensor)):
        return "call_method", "to", (args[0], value.dtype), {}
    for space in (torch, F):
        fn = getattr(space, name, None)
        if fn is not None and has_rule("call_function", fn):
            return "call_function", fn, args, kwargs
    if has_rule("call_method", name):
        return "call_method", name, args, kwargs
    return "call_function", target, args, kwargs


def _subscript(x: Any, dim: int, item: Any) -> Any:
    """The index of ``x[..., item]`` with ``item`` at axis ``dim`` (``x[item]`` at 0)."""
    before = (slice(None),) * (dim % x.meta["val"].dim())
    return (*before, item) if before else item


def _by_name(target: Any, args: tuple, kwargs: dict) -> dict:
    """An ATen op's arguments by their schema's names, defaults filled in."""
    from torch.fx.operator_schemas import normalize_function

    bound = normalize_function(target, args, kwargs, normalize_to_only_use_kwargs=True)
    return dict(bound.kwargs)


# ATen view ops: each is a reshape to its (static) result shape
_VIEWS = {
    "view", "_unsafe_view", "reshape", "squeeze", "unsqueeze", "flatten", "unflatten",
    "reshape_as", "view_as",
}  # fmt: skip
# ATen ops that fill a tensor with one number, and binary ops that broadcast
_FILLS = {"zero", "fill"}
_BROADCASTING = {"add", "sub", "mul", "div"}
# ATen ops that make a new tensor from their argument's dtype and device alone
_FRESH = {"new_zeros", "new_ones", "new_full"}
# ATen ops that return their input's values
_ALIASES = {"clone", "contiguous", "alias", "detach", "lift_fresh_copy"}
