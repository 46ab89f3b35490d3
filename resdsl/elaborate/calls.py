"""Calls: blocks, macros, ops and builtins; binding and type-checking parameters; emitting nodes.

``emit`` is the one place a node is created. ``call_block`` runs every block instance and
is the hook that :class:`resdsl.search.incremental.IncrementalElaborator` overrides.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import (
    ArgumentError,
    CycleError,
    DidYouMean,
    LimitError,
    Note,
    ShapeError,
    Span,
    SpecError,
    TypeMismatchError,
    UnknownNameError,
    ValueRangeError,
)
from ..ir import Node, TensorInfo, TensorValue, freeze
from ..names import check_label
from ..ops import OPS, AttrError, OpShapeError, fmt_shape
from ..ops.core import spec_text
from ..syntax import ast
from .limits import CALL_STEPS, NODE_STEPS
from .macros import MACROS
from .values import (
    PARAM_TYPES,
    POISON,
    BlockRef,
    Frame,
    MissingLabel,
    OpRef,
    Partial,
    TrainingOutput,
    _Poisoned,
    _Return,
    _tensors,
    _through,
    describe,
    instance_note,
    is_block,
    join_name,
)


class Calls:
    """Calls and block instances (mixed into :class:`~resdsl.elaborate.Elaborator`)."""

    def call(self, call: ast.Call, frame: Frame, piped: tuple[Any, Span] | None = None) -> Any:
        """Evaluate ``label: f(args)``; ``piped`` is the value flowing in through ``->``."""
        args = [(self.eval(a, frame), a.span) for a in call.args]
        if piped is not None:
            args.insert(0, piped)
        kwargs: dict[str, tuple[Any, Span]] = {}
        for key, value, key_span in call.kwargs:
            if key in kwargs:
                raise ArgumentError(f"keyword `{key}` is given twice", key_span)
            # the span covers `key=value`, so an unknown or mistyped keyword is underlined whole
            kwargs[key] = (self.eval(value, frame), _through(key_span, value.span))
        for value, span in [*args, *kwargs.values()]:
            if isinstance(value, TrainingOutput):
                raise TypeMismatchError(
                    "`training(...)` marks a network output, it is not a tensor to compute with",
                    span, hints=["compute with the tensor; mark it in the network's `return`"],
                )  # fmt: skip
        target = frame.vars.get(call.func)
        if target is POISON:
            raise _Poisoned
        if call.func in frame.vars and not is_block(target):
            raise TypeMismatchError(
                f"`{call.func}` is {describe(target)}, not a block or op", call.func_span
            )
        if target is None:
            definition = self.program.definitions.get(call.func)
            if definition is not None:
                target = BlockRef(definition)
        if isinstance(target, OpRef):  # an op passed as a block: call the op
            bound = {k: (v, s) for k, v, s in target.kwargs}
            kwargs = {**bound, **kwargs}  # the call's keywords win, as with a block's partial
            return self._call_op(dataclasses.replace(call, func=target.op), args, kwargs, frame)
        if is_block(target):
            if isinstance(target, Partial):
                kwargs = self._with_partial(target, call, args, kwargs)
            if target.definition.inline:
                return self.call_inline(target.definition, call, args, kwargs, frame)
            return self.call_block(target.definition, call, args, kwargs, frame)
        if call.func in MACROS:
            return MACROS[call.func](self, call, args, kwargs, frame)
        # `abs` and `sqrt` are ops on tensors and builtins on numbers
        numeric = call.func in self.builtins and not (args and isinstance(args[0][0], TensorValue))
        if call.func in OPS and call.func != "input" and not numeric:
            return self._call_op(call, args, kwargs, frame)
        if call.func in self.builtins:
            if call.label is not None:
                raise ArgumentError(
                    f"`{call.func}` is a function; only ops and blocks take a name", call.label.span
                )
            result = self.builtins[call.func](call, args, kwargs)
            self._check_scalar(result, call.span)
            return result
        known = [*OPS, *MACROS, *self.builtins, *self.program.definitions]
        raise UnknownNameError(
            f"unknown op or block `{call.func}`", call.func_span,
            hints=DidYouMean([k for k in known if k != "input"]).hint(call.func),
        )  # fmt: skip

    def _call_op(self, call: ast.Call, args, kwargs, frame: Frame) -> TensorValue:
        op = OPS[call.func]
        if op.inputs is None and args and _tensors(args[0][0]):  # concat(features)
            args = [(v, args[0][1]) for v in args[0][0]] + list(args[1:])
        n = 0
        while n < len(args) and isinstance(args[n][0], TensorValue):
            n += 1
        inputs, attr_args = args[:n], args[n:]
        for value, span in attr_args:
            if isinstance(value, TensorValue):
                raise TypeMismatchError(
                    f"`{op.name}` takes its tensor inputs first; this tensor comes after "
                    "an attribute", span,
                )  # fmt: skip
        expected = op.inputs if op.inputs is not None else op.min_inputs
        if (op.inputs is not None and n != op.inputs) or n < expected:
            count = f"{expected}" if op.inputs is not None else f"at least {expected}"
            raise ArgumentError(
                f"`{op.name}` takes {count} tensor input(s), got {n}", call.span,
                hints=[f"signature: {op.signature()}"],
            )  # fmt: skip
        return self.emit(
            op.name, [v for v, _ in inputs],
            dict(enumerate(attr_args)), kwargs, call.span, frame, call.label,
        )  # fmt: skip

    def emit(
        self,
        op_name: str,
        inputs: list[TensorValue],
        attr_args: dict[int, tuple[Any, Span]],
        kwargs: dict[str, tuple[Any, Span]],
        span: Span,
        frame: Frame,
        label: ast.Label | str | None,
    ) -> TensorValue:
        """Bind attributes, run the shape rule, name the node and add it to the graph."""
        op = OPS[op_name]
        try:
            attrs = op.bind(
                [v for v, _ in attr_args.values()], {k: v for k, (v, _) in kwargs.items()}
            )
        except AttrError as e:
            raise self._attr_error(op_name, e, attr_args, kwargs, span) from None
        try:
            shape = op.shape(attrs, [i.shape for i in inputs])
        except OpShapeError as e:
            raise ShapeError(e.message, span, hints=e.hints) from None
        self._check_size(shape, span)
        self._check_attr_ints(op_name, attrs, attr_args, kwargs, span)
        sizes = (len(v) for v in attrs.values() if type(v) is tuple)  # bound: flat tuples
        self._tick(NODE_STEPS + len(shape) + sum(sizes), span)  # long shapes, attrs: work
        for weight in op.weights(attrs, [i.shape for i in inputs]):
            self._check_size(weight.shape, span, f"weight `{weight.name}`")
        dtype = self._dtype(op_name, attrs, inputs, span)
        name = self._name(frame, label, op_name, span)
        node = Node(op_name, freeze(attrs), name, span, frame.prefix, frame.block)
        self.graph.add(node, [i.node for i in inputs], TensorInfo(shape, dtype))
        if len(self.graph) > self.limits.max_nodes:
            raise LimitError(f"the network has more than {self.limits.max_nodes} ops", span)
        return TensorValue(name, shape, span)

    def _dtype(self, op: str, attrs: dict, inputs: list[TensorValue], span: Span) -> str:
        """The output's dtype: float32, but for an int64 ``buffer``. An int64 tensor (an
        index) is read only as ``take``'s index, and ``take`` reads nothing else."""
        dtypes = [self.graph.info(i.node).dtype for i in inputs]
        for port, (value, dtype) in enumerate(zip(inputs, dtypes, strict=True)):
            index = op == "take" and port == 1
            if (dtype == "int64") != index:
                raise TypeMismatchError(
                    f"`take` needs an int64 index, got a {dtype} tensor" if index else
                    f"`{op}` computes with float tensors, got an int64 index", value.span or span,
                    hints=['an index is a `buffer(..., dtype="int64")` read by `take`'],
                )  # fmt: skip
        return attrs.get("dtype", "float32") if op == "buffer" else "float32"

    def _attr_error(self, op: str, e: AttrError, attr_args, kwargs, span: Span) -> SpecError:
        at_span = span
        if isinstance(e.at, int) and e.at in attr_args:
            at_span = attr_args[e.at][1]
        elif isinstance(e.at, str) and e.at in kwargs:
            at_span = kwargs[e.at][1]
        hints = [f"signature: {OPS[op].signature()}"]
        if e.kind == "unknown":
            hints = DidYouMean([a.name for a in OPS[op].attrs]).hint(str(e.at)) + hints
        kinds = {"type": TypeMismatchError, "value": ValueRangeError, "unknown": UnknownNameError}
        cls = kinds.get(e.kind, ArgumentError)
        return cls(e.message, at_span, hints=hints)

    def call_block(self, definition: ast.Definition, call: ast.Call, args, kwargs, frame):
        """Run one instance of block ``definition`` and return its value.

        The hook for search: every block instance comes through here, so a subclass may
        override it to record or replay instances (calling ``super().call_block``); see
        ``Elaborator.mark``, ``added_since`` and ``splice``. An inline block's calls, which
        open no scope, go through :meth:`call_inline` instead."""
        inputs, params = self._enter(definition, call, args)
        name = self._name(frame, call.label, definition.name, call.span)
        inner = Frame({}, name, definition.name)
        return self._run_block(definition, call, inputs, params, kwargs, inner, name)

    def call_inline(self, definition: ast.Definition, call: ast.Call, args, kwargs, frame):
        """Run a call of an ``inline block``: its body names nodes in the caller's scope, and
        the call's label is the variable ``label`` there (``"{label}": layernorm``)."""
        inputs, params = self._enter(definition, call, args)
        inner = Frame({}, frame.prefix, frame.block)  # its nodes belong to the caller's scope
        if call.label is None:
            inner.vars["label"] = MissingLabel(definition.name)
            name = None
        else:
            inner.vars["label"] = text = self.label_text(call.label, frame)
            for segment in text.split("."):  # refused here, not where the body uses it
                check_label(segment, call.label.span)
            name = join_name(frame.prefix, text)
        return self._run_block(definition, call, inputs, params, kwargs, inner, name)

    def _enter(self, definition: ast.Definition, call: ast.Call, args) -> tuple[list, list]:
        """Checks before a block runs (a block, no cycle, depth, tensors first); its tensor
        arguments and its parameters."""
        if definition.kind != "block":
            raise TypeMismatchError(
                f"`{definition.name}` is a network; only blocks can be called", call.func_span
            )
        if any(d is definition for d, _ in self.stack):
            chain = " -> ".join(d.name for d, _ in self.stack[1:]) + f" -> {definition.name}"
            raise CycleError(
                f"block `{definition.name}` calls itself: {chain.lstrip(' ->')}", call.span,
                notes=[Note(f"`{definition.name}` is defined here", definition.name_span)],
            )  # fmt: skip
        if len(self.stack) >= self.limits.max_call_depth:
            raise LimitError(f"blocks nested deeper than {self.limits.max_call_depth}", call.span)
        n_in = len(definition.inputs)
        self._tick(CALL_STEPS + len(definition.params) + n_in, call.span)
        inputs, params = args[:n_in], args[n_in:]
        if len(inputs) < n_in or not all(isinstance(v, TensorValue) for v, _ in inputs):
            names = ", ".join(i.name for i in definition.inputs)
            raise ArgumentError(
                f"block `{definition.name}` takes {n_in} tensor input(s) ({names}) first",
                call.span,
                hints=[f"chain it, `x -> {definition.name}(...)`, or pass the tensor first"],
                notes=[Note(f"`{definition.name}` is defined here", definition.name_span)],
            )
        return inputs, params

    def _run_block(self, definition, call, inputs, params, kwargs, inner: Frame, name):
        """Bind parameters and inputs in ``inner``, run the body, return its value. ``name``
        is the instance's (None for an unlabelled inline call), for notes on errors."""
        self._bind_params(definition, inner, dict(enumerate(params)), kwargs, call.span)
        for inp, (value, span) in zip(definition.inputs, inputs, strict=True):
            if inp.shape is not None:
                want = self.eval(inp.shape, inner)
                want = (want,) if type(want) is int else want  # `(x: 4)` means `(x: (4,))`
                if want != value.shape:
                    raise ShapeError(
                        f"`{definition.name}` expects `{inp.name}` of shape {want}, "
                        f"got {fmt_shape(value.shape)}", span,
                    )  # fmt: skip
            # inside the body, the value's origin is the block's input declaration
            inner.vars[inp.name] = TensorValue(value.node, value.shape, inp.span)
        self.stack.append((definition, call.span))
        self.instances.append((name, definition.name, call.span))
        try:
            self._exec(definition.body, inner)
        except _Return as r:
            return r.value
        except SpecError as e:  # say which instance failed: the body is shared by all of them
            if e.span is not None and e.span.path is not None and len(e.notes) < 8:
                e.notes.append(instance_note(name, definition.name, call.span))
            raise
        finally:
            self.stack.pop()
            self.instances.pop()
        raise SpecError(f"block `{definition.name}` ends without `return`", definition.name_span)

    def _with_partial(self, target: Partial, call: ast.Call, args, kwargs) -> dict:
        """The call's keywords over those ``partial`` bound; a parameter the call gives by
        position may not be bound too."""
        definition = target.definition
        n_in = len(definition.inputs)
        positional = {p.name: i for i, p in enumerate(definition.params[: len(args) - n_in])}
        merged = {}
        for key, value, span in target.kwargs:
            if key in positional and key not in kwargs:
                raise ArgumentError(
                    f"parameter `{key}` of `{definition.name}` is given by position and was "
                    "bound by `partial`", args[n_in + positional[key]][1],
                    hints=["give it by keyword to override the bound value, or do not bind it"],
                    notes=[Note("bound here", span)],
                )  # fmt: skip
            merged[key] = (value, span)
        merged.update(kwargs)  # the call's keywords win, as with functools.partial
        return merged

    def _bind_params(
        self, definition: ast.Definition, frame: Frame, positional: dict, named: dict,
        span: Span, from_api: bool = False,
    ) -> None:  # fmt: skip
        """Bind call arguments (or API/CLI parameters) to a definition's typed parameters."""
        params = definition.params
        if len(positional) > len(params):
            raise ArgumentError(
                f"`{definition.name}` takes {len(params)} parameter(s), got {len(positional)}",
                list(positional.values())[len(params)][1],
            )
        known = {p.name for p in params}
        for key in named:
            if key not in known:
                at = span if from_api else named[key][1]
                raise UnknownNameError(
                    f"`{definition.name}` has no parameter `{key}`", at,
                    hints=DidYouMean(sorted(known)).hint(key),
                )  # fmt: skip
        for i, p in enumerate(params):
            if i in positional and p.name in named:
                raise ArgumentError(f"parameter `{p.name}` is given twice", named[p.name][1])
            if i in positional:
                value, at = positional[i]
            elif p.name in named:
                value, at = named[p.name] if not from_api else (named[p.name], p.span)
            elif isinstance(p.default, ast.Choice):  # a space loaded as a spec: the first value
                value, at = self.choice_options(p.default, frame, p.type)[0], p.default.span
            elif p.default is not None:
                value, at = self.eval(p.default, frame), p.default.span
            else:
                raise ArgumentError(
                    f"`{definition.name}` needs parameter `{p.name}`", span,
                    notes=[Note("declared here", p.span)],
                )  # fmt: skip
            frame.vars[p.name] = self.typed(p, value, at)
            if isinstance(p.default, ast.Choice) and p.name in named:
                self.check_choice(p.name, p.default, frame, at, p.type)

    def check_choice(
        self, name: str, choice: ast.Choice, frame: Frame, at: Span, type_: str | None = None
    ) -> None:
        """A value given for a choice parameter must be one of the choice's values."""
        options = self.choice_options(choice, frame, type_)
        if frame.vars[name] not in options:
            values = ", ".join(spec_text(v) for v in options)
            raise ValueRangeError(
                f"`{name}` is a choice of {values}; got {spec_text(frame.vars[name])}", at,
                notes=[Note("the choice is here", choice.span)],
            )  # fmt: skip

    def typed(self, p: ast.Param, value: Any, at: Span) -> Any:
        """``value`` checked against parameter ``p``'s type (an int given for a float is
        made a float); a mismatch is a TypeMismatchError at ``at``."""
        check = PARAM_TYPES.get(p.type)
        if check is None:
            raise UnknownNameError(
                f"unknown type `{p.type}`", p.type_span,
                hints=DidYouMean(list(PARAM_TYPES)).hint(p.type)
                or ["types: " + ", ".join(PARAM_TYPES)],
            )  # fmt: skip
        if not check(value):
            raise TypeMismatchError(
                f"parameter `{p.name}` is {p.type}, got {describe(value)}", at,
                notes=[Note("declared here", p.span)],
            )  # fmt: skip
        return float(value) if p.type == "float" else value
