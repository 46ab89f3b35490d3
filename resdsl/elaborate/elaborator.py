"""The :class:`Elaborator`: the interpreter's state, its entry point, and the public hooks
that architecture search builds on (:meth:`Elaborator.call_block`, :meth:`Elaborator.mark`,
:meth:`Elaborator.added_since`, :meth:`Elaborator.splice`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    DidYouMean,
    LimitError,
    Span,
    SpecError,
    TypeMismatchError,
    UnknownNameError,
    ValueRangeError,
)
from ..ir import Graph, Node, TensorInfo, TensorValue, freeze
from ..loader import Program
from ..ops import fmt_shape
from ..syntax import ast
from .calls import Calls
from .expressions import Expressions
from .functions import builtin_functions
from .limits import LimitChecks, Limits
from .macros import Projection
from .naming import Naming
from .statements import Statements, _error_order
from .values import PARAM_TYPES, Frame, TrainingOutput, _Poisoned, _Return, _Stop, describe

Edge = tuple[str, str, int, dict[str, Any]]  # source, target, parallel-edge key, data


@dataclass(frozen=True)
class Mark:
    """How far elaboration had got: taken by :meth:`Elaborator.mark`."""

    nodes: int
    names: int
    errors: int


@dataclass(frozen=True)
class Added:
    """What elaboration added since a :class:`Mark` (see :meth:`Elaborator.added_since`)."""

    nodes: tuple[tuple[Node, TensorInfo], ...]  # in insertion order
    edges: tuple[Edge, ...]  # every edge into those nodes, sources inside or not
    names: tuple[tuple[str, Span | None], ...]  # names claimed, the first one's scope first
    counters: tuple[tuple[tuple[str, str], int], ...]  # anonymous-name counters in that scope


@dataclass
class Elaborator(Statements, Expressions, Calls, Naming, LimitChecks):
    """An interpreter over the AST that builds the graph of one network.

    One class split by concern into mixins, one module each (an interpreter's handlers call
    each other freely, and a method call on ``self`` keeps the hot path fast): statements
    and error recovery (``statements.py``), expressions (``expressions.py``), calls, block
    instances and ``emit`` (``calls.py``), names (``naming.py``), limits (``limits.py``).
    This class holds the state and the entry point, :meth:`network`.

    **Hooks for search.** :meth:`call_block` runs every block instance: a subclass may
    override it (calling ``super().call_block``) to record or replay instances, with
    :meth:`mark`, :meth:`added_since` and :meth:`splice`. :meth:`typed`,
    :meth:`check_choice`, :meth:`choice_options` and :meth:`eval` evaluate parameters
    outside a run; :func:`pick_network` picks the network as :meth:`network` does.
    """

    program: Program
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self.graph = Graph()
        self.names: dict[str, Span | None] = {}  # every node and scope name in use
        self.counters: dict[tuple[str, str], int] = {}
        self.stack: list[tuple[ast.Definition, Span | None]] = []
        self.statement: Span | None = None  # the statement being run, for backstop errors
        self.errors: list[SpecError] = []  # recorded by statements that failed; see _exec
        self.instances: list[tuple[str, str, Span]] = []  # (name, block, call) being run
        self.projections: list[Projection] = []  # inserted by `shortcut`, in emission order
        self.builtins = builtin_functions(self)
        self.steps = 0  # work done, against limits.max_steps

    # --- entry point ---------------------------------------------------------------------------

    def network(self, name: str | None, params: dict[str, Any]) -> Graph:
        """Elaborate the network ``name`` with ``params`` (API or CLI values) into a graph."""
        definition = pick_network(self.program, name)
        self.graph.name = definition.name
        frame = Frame({}, "", definition.name)
        self._bind_params(definition, frame, {}, params, definition.name_span, from_api=True)
        for inp in definition.inputs:
            frame.vars[inp.name] = self._input(inp, frame)
        self.stack.append((definition, None))
        try:
            self._exec(definition.body, frame)
        except _Return as r:
            self._raise_recorded()
            self._outputs(r.stmt, r.value)
        except (_Poisoned, _Stop):
            self._raise_recorded()
            raise AssertionError("a poisoned value without an error") from None  # pragma: no cover
        else:
            self._raise_recorded()
            raise SpecError(f"network `{definition.name}` has no `return`", definition.name_span)
        self.graph.projections = tuple(self.projections)  # read by Network.projections
        return self.graph

    def _input(self, inp: ast.Input, frame: Frame) -> TensorValue:
        if inp.shape is None:
            raise TypeMismatchError(
                f"network input `{inp.name}` needs a shape", inp.span,
                hints=[f"write `{inp.name}: (3, 224, 224)` (per sample, without the batch)"],
            )  # fmt: skip
        shape = self.eval(inp.shape, frame)
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if not isinstance(shape, tuple) or not all(type(d) is int for d in shape):
            raise TypeMismatchError(
                f"the shape of `{inp.name}` must be a tuple of ints, got {describe(shape)}",
                inp.shape.span,
            )
        if not shape or any(d <= 0 for d in shape):
            raise ValueRangeError(
                f"the shape of `{inp.name}` must have positive sizes, got {fmt_shape(shape)}",
                inp.shape.span,
            )
        self._check_size(shape, inp.span)
        self._claim(inp.name, inp.span)
        node = Node("input", freeze({"shape": shape}), inp.name, inp.span)
        self.graph.add(node, [], TensorInfo(shape))
        return TensorValue(inp.name, shape, inp.span)

    def _outputs(self, ret: ast.Return, value: Any) -> None:
        values = value if isinstance(value, tuple) and len(ret.values) > 1 else (value,)
        taken: set[str] = set()
        for i, (v, expr) in enumerate(zip(values, ret.values, strict=True)):
            training = isinstance(v, TrainingOutput)
            if training:  # `training(aux)`: named after the marked expression
                v, expr = v.tensor, (expr.args[0] if isinstance(expr, ast.Call) else expr)
            if not isinstance(v, TensorValue):
                raise TypeMismatchError(f"a network returns tensors, got {describe(v)}", expr.span)
            name = expr.id if isinstance(expr, ast.Name) else "output"
            if len(values) > 1 and (name == "output" or name in taken):
                name = f"output{i}"  # unnamed, or the same value returned twice
            taken.add(name)
            outputs = self.graph.training_outputs if training else self.graph.outputs
            outputs.append((name, v.node))
        if not self.graph.outputs:
            raise TypeMismatchError(
                "a network needs an output that is not training-only", ret.span,
                hints=["return the inference output first: `return logits, training(aux)`"],
            )  # fmt: skip

    # --- hooks: recording and replaying what a block instance adds ------------------------------

    def mark(self) -> Mark:
        """Where elaboration stands now; :meth:`added_since` reports what came after."""
        return Mark(len(self.graph), len(self.names), len(self.errors))

    def failed_since(self, mark: Mark) -> bool:
        """Whether an error was recorded (and recovered from) since ``mark``."""
        return len(self.errors) > mark.errors

    def names_in_use(self, names: Iterable[str]) -> bool:
        """Whether any of ``names`` is already a node or scope name."""
        return not self.names.keys().isdisjoint(names)

    def added_since(self, mark: Mark) -> Added:
        """The nodes, in-edges, names and name counters added since ``mark``. Counters are
        those of the scope of the first name claimed (a block instance's own name)."""
        g = self.graph
        new = list(g.nx.nodes)[mark.nodes :]
        edges = [
            (src, name, key, dict(data))
            for name in new
            for src, _, key, data in g.nx.in_edges(name, keys=True, data=True)
        ]
        names = tuple(list(self.names.items())[mark.names :])
        scope = names[0][0] if names else ""
        counters = tuple(
            (k, v) for k, v in self.counters.items()
            if k[0] == scope or k[0].startswith(scope + ".")
        )  # fmt: skip
        nodes = tuple((g.node(n), g.info(n)) for n in new)
        return Added(nodes, tuple(edges), names, counters)

    def splice(
        self,
        nodes: Iterable[tuple[Node, TensorInfo]],
        edges: Iterable[Edge],
        names: Iterable[tuple[str, Span | None]],
        counters: Iterable[tuple[tuple[str, str], int]],
        span: Span | None,
    ) -> None:
        """Add recorded nodes, edges, names and counters (the parts of an :class:`Added`,
        edge sources renamed as needed) in bulk, as if they had been emitted one by one:
        edge keys must be those ``Graph.add`` gives. The node limit is checked."""
        g = self.graph.nx
        g.add_nodes_from((node.name, {"op": node, "info": info}) for node, info in nodes)
        g.add_edges_from(edges)
        self.names.update(names)
        self.counters.update(counters)
        if len(self.graph) > self.limits.max_nodes:
            raise LimitError(f"the network has more than {self.limits.max_nodes} ops", span)


def pick_network(program: Program, name: str | None) -> ast.Definition:
    """The network ``name`` of the main file (the only one there when ``name`` is None)."""
    main = program.main
    networks = [d for d in main.definitions if d.kind == "network"]
    if name is None:
        if len(networks) == 1:
            return networks[0]
        if not networks:
            raise SpecError(f"{main.path} defines no `network`", Span(main.path, 1, 1, 1, 1))
        names = ", ".join(n.name for n in networks)
        raise SpecError(
            f"{main.path} defines several networks ({names}); pick one by name",
            networks[1].name_span,
            hints=["pass `network=NAME` to resdsl.load, or `--network NAME` on the command line"],
        )
    found = {d.name: d for d in networks}.get(name)
    if found is None:
        raise UnknownNameError(
            f"no network named `{name}` in {main.path}",
            hints=DidYouMean([d.name for d in networks]).hint(name),
        )
    return found


def elaborate(program: Program, network: str | None = None, params: dict[str, Any] | None = None,
              limits: Limits | None = None) -> Graph:  # fmt: skip
    """Elaborate ``network`` (the only one in the main file by default) into a graph."""
    check_definitions(program)
    elaborator = Elaborator(program, limits or Limits())
    try:
        return elaborator.network(network, dict(params or {}))
    except RecursionError:  # a backstop: parse depth and call depth are limited before this
        raise LimitError("the spec nests too deeply to elaborate", elaborator.statement) from None


def check_definitions(program: Program) -> None:
    """Checks that need no elaboration: every parameter type is known (all are reported)."""
    errors: list[SpecError] = [
        UnknownNameError(
            f"unknown type `{p.type}`", p.type_span,
            hints=DidYouMean(list(PARAM_TYPES)).hint(p.type)
            or ["types: " + ", ".join(PARAM_TYPES)],
        )
        for definition in program.definitions.values()
        for p in definition.params
        if p.type not in PARAM_TYPES
    ]  # fmt: skip
    errors += [
        TypeMismatchError(
            f"`choice` is for network parameters; `{definition.name}` is a block",
            p.default.span, hints=["make it a network parameter and pass it to the block"],
        )
        for definition in program.definitions.values()
        for p in definition.params
        if isinstance(p.default, ast.Choice) and definition.kind != "network"
    ]  # fmt: skip
    if errors:
        errors.sort(key=_error_order)
        errors[0].errors = errors
        raise errors[0]
