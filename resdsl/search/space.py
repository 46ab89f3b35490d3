"""Search spaces: a network whose parameters are ``choice(...)``, and what a search does with it.

A space is walked parameter by parameter, in declaration order. A choice's values are
evaluated with the earlier parameters bound, so ``width2: int = choice(width, width * 2)``
depends on ``width``. Counting, enumeration and uniform sampling share one recursion,
``_count(k, state)``: the number of complete candidates from parameter ``k`` on, memoised on
the values of the earlier parameters that later defaults still read (``_live``), so spaces
of independent choices are counted in linear time and exactly (Python ints).
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..elaborate import BlockRef, Elaborator, Frame, Limits, check_definitions, pick_network
from ..errors import (
    DidYouMean,
    LimitError,
    Note,
    Span,
    SpecError,
    UnknownNameError,
    ValueRangeError,
)
from ..loader import load_program, read_spec
from ..network import Network
from ..ops.core import spec_text
from ..syntax import ast
from .canonical import CanonicalElaborator, store
from .counting import Counts, InstanceMemo, NetworkReplay, count, seed_layers
from .fingerprint import fingerprint as graph_fingerprint
from .incremental import FragmentCache, IncrementalElaborator
from .render import concrete_spec
from .replay import Replay, plan

Assignment = dict[str, Any]


@dataclass(frozen=True)
class Choice:
    """One named choice of a space: a network parameter whose default is ``choice(...)``."""

    name: str
    type: str
    values: tuple[Any, ...]  # every value it can take, over all values of earlier choices
    depends_on: tuple[str, ...]  # the earlier parameters its values are computed from
    span: Span
    text: str  # the choice as written, e.g. "choice(width, width * 2)"


@dataclass
class SampleStats:
    """What rejection sampling did: candidates drawn and why some were thrown away."""

    drawn: int = 0
    over_budget: int = 0
    invalid: int = 0

    @property
    def rejected(self) -> int:
        return self.over_budget + self.invalid

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.drawn if self.drawn else 0.0

    def __str__(self) -> str:
        return (
            f"{self.drawn} drawn, {self.rejected} rejected ({self.over_budget} over budget, "
            f"{self.invalid} invalid): rejection rate {self.rejection_rate:.1%}"
        )


@dataclass(frozen=True)
class Budget:
    """Upper bounds on a candidate's trainable parameters and MACs (None: no bound)."""

    max_params: int | None = None
    max_macs: int | None = None

    def __bool__(self) -> bool:
        return self.max_params is not None or self.max_macs is not None

    def admits(self, net: Network) -> bool:
        return (self.max_params is None or net.num_params <= self.max_params) and (
            self.max_macs is None or net.macs <= self.max_macs
        )


@dataclass
class _Param:
    """A network parameter as the walk sees it."""

    decl: ast.Param
    free: bool  # a choice that the assignment decides
    fixed: Any = None  # the value given to load_space, if any
    has_fixed: bool = False


class SearchSpace:
    """A network whose parameters include ``choice(...)``. Build one with
    :func:`resdsl.load_space`; every method is deterministic given its random source.

    (Longer than most classes here: it is the one object a search holds, and counting,
    enumeration, sampling, mutation and Optuna all walk the same memoised ``_values`` /
    ``_count`` recursion, which would otherwise be passed between several objects.)"""

    def __init__(
        self,
        text: str,
        path: str,
        network: str | None = None,
        *,
        limits: Limits | None = None,
        budget: Budget | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.path, self.text = path, text
        self.program = load_program(text, path)
        check_definitions(self.program)
        self.limits = limits or Limits()
        self.budget = budget or Budget()
        self.stats = SampleStats()
        self._init_caches()
        # The network is picked as resdsl.load picks it (same errors and hints).
        self.definition = pick_network(self.program, network)
        self.network = self.definition.name
        self._params = self._declare(dict(params or {}))
        self._live = self._live_names()
        self.size  # noqa: B018 - evaluate every domain now: a broken space fails at load

    def _init_caches(self) -> None:
        self._el = Elaborator(self.program, self.limits)
        self._values_memo: dict[tuple, list[Any]] = {}
        self._count_memo: dict[tuple, int] = {}
        self._last: tuple[tuple, Network] | None = None  # the last net sample() built
        self._fragments = FragmentCache()  # block instances of earlier candidates
        self._counts: dict[tuple, tuple[int, int]] = {}  # (params, MACs) of layers seen
        self._instances = InstanceMemo()  # block instances' totals, for counts()
        self._instances.layers = self._counts
        self._replay: NetworkReplay | None = None  # the network body of a counted candidate
        self._templates: dict[tuple, dict] = {}  # per canonical convention: block instances
        self._fingerprints: dict[tuple, str] = {}

    # pickling (process pools, Ray): the caches and the interpreter are rebuilt
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in _CACHES:
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_caches()

    # --- the walk over parameters ------------------------------------------------------------

    def _declare(self, params: dict[str, Any]) -> list[_Param]:
        decls = self.definition.params
        known = [p.name for p in decls]
        for key in params:
            if key not in known:
                raise UnknownNameError(
                    f"network `{self.network}` has no parameter `{key}`",
                    self.definition.name_span, hints=DidYouMean(known).hint(key),
                )  # fmt: skip
        return [
            _Param(p, isinstance(p.default, ast.Choice) and p.name not in params,
                   params.get(p.name), p.name in params)
            for p in decls
        ]  # fmt: skip

    def _live_names(self) -> list[frozenset[str]]:
        """``live[k]``: names that parameters ``k`` and later read (their defaults)."""
        live, names = [frozenset()] * (len(self._params) + 1), frozenset()
        for k in range(len(self._params) - 1, -1, -1):
            default = self._params[k].decl.default
            names = names | (_names(default) if default is not None else frozenset())
            live[k] = names
        return live

    def _key(self, k: int, state: Mapping[str, Any]) -> tuple:
        return (k, *(_value_key(state[n]) for n in sorted(self._live[k] & state.keys())))

    def _values(self, k: int, state: Mapping[str, Any]) -> list[Any]:
        """The values parameter ``k`` can take given earlier ones: several for a free choice."""
        key = self._key(k, state)
        values = self._values_memo.get(key)
        if values is None:
            values = self._values_memo[key] = self._evaluate(self._params[k], state)
        return values

    def _evaluate(self, param: _Param, state: Mapping[str, Any]) -> list[Any]:
        p, el = param.decl, self._el
        frame = Frame(dict(state), "", self.network)
        if param.has_fixed:
            frame.vars[p.name] = el.typed(p, param.fixed, self.definition.name_span)
            if isinstance(p.default, ast.Choice):
                el.check_choice(p.name, p.default, frame, self.definition.name_span, p.type)
            return [frame.vars[p.name]]
        if param.free:
            return [
                el.typed(p, v, p.default.span) for v in el.choice_options(p.default, frame, p.type)
            ]
        if p.default is None:
            raise SpecError(
                f"network `{self.network}` needs parameter `{p.name}`", p.span,
                hints=[f"give it to load_space ({p.name}=...) or with --set {p.name}=..."],
            )  # fmt: skip
        return [el.typed(p, el.eval(p.default, frame), p.default.span)]

    def _advance(self, k: int, state: Mapping[str, Any], value: Any) -> dict[str, Any]:
        """The state after binding parameter ``k``: only what later parameters read."""
        live = self._live[k + 1]
        nxt = {n: v for n, v in state.items() if n in live}
        name = self._params[k].decl.name
        if name in live:
            nxt[name] = value
        return nxt

    def _count(self, k: int, state: Mapping[str, Any]) -> int:
        if k == len(self._params):
            return 1
        key = self._key(k, state)
        total = self._count_memo.get(key)
        if total is None:
            total = sum(
                self._count(k + 1, self._advance(k, state, v)) for v in self._values(k, state)
            )
            self._count_memo[key] = total
        return total

    # --- the space -----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of distinct assignments of the choices (exact)."""
        return self._count(0, {})

    @property
    def choices(self) -> dict[str, Choice]:
        """The named choices, in declaration order, with every value each can take."""
        seen: dict[str, dict[str, Any]] = {p.decl.name: {} for p in self._params if p.free}
        for assignment in self._contexts():
            for name, value in assignment.items():
                seen[name].setdefault(_value_key(value), value)
        params = [p.decl for p in self._params]
        earlier = {p.name: {q.name for q in params[:i]} for i, p in enumerate(params)}
        return {
            p.decl.name: Choice(
                p.decl.name, p.decl.type, tuple(seen[p.decl.name].values()),
                tuple(sorted(_names(p.decl.default) & earlier[p.decl.name])),
                p.decl.span, _source(p.decl.default.span, self.text),
            )
            for p in self._params if p.free
        }  # fmt: skip

    def _contexts(self) -> Iterator[Assignment]:
        """Each distinct (state, value) pair once: enough to collect every choice's values."""
        frontier: dict[tuple, dict[str, Any]] = {(): {}}
        for k, param in enumerate(self._params):
            nxt: dict[tuple, dict[str, Any]] = {}
            for state in frontier.values():
                for v in self._values(k, state):
                    after = self._advance(k, state, v)
                    if self._count(k + 1, after) == 0:
                        continue
                    if param.free:
                        yield {param.decl.name: v}
                    nxt.setdefault(self._key(k + 1, after), after)
            frontier = nxt

    def enumerate(self) -> Iterator[Assignment]:
        """Every assignment, lazily, in a fixed order (the first choice varies slowest)."""
        yield from self._walk(0, {}, {})

    def _walk(self, k: int, state: dict[str, Any], chosen: Assignment) -> Iterator[Assignment]:
        if k == len(self._params):
            yield dict(chosen)
            return
        param = self._params[k]
        for v in self._values(k, state):
            after = self._advance(k, state, v)
            if self._count(k + 1, after) == 0:
                continue  # a later choice has no values here
            if param.free:
                chosen[param.decl.name] = v
            yield from self._walk(k + 1, after, chosen)

    def assignment(self, index: int) -> Assignment:
        """The ``index``-th assignment of :meth:`enumerate` (0 <= index < size)."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a space of {self.size}")
        state: dict[str, Any] = {}
        chosen: Assignment = {}
        for k, param in enumerate(self._params):
            for v in self._values(k, state):
                after = self._advance(k, state, v)
                n = self._count(k + 1, after)
                if index < n:
                    break
                index -= n
            if param.free:
                chosen[param.decl.name] = v
            state = after
        return chosen

    # --- sampling and mutation ---------------------------------------------------------------

    def sample(self, rng_or_seed: random.Random | int | Any = None) -> Assignment:
        """A uniformly random assignment. Under a budget (``load_space(max_params=...,
        max_macs=...)``) candidates are drawn until one builds and fits; ``stats`` counts
        the rejections. Raises ValueRangeError after 1000 rejected draws in a row."""
        rng = as_random(rng_or_seed)
        for _ in range(1000):
            assignment = self.assignment(rng.randrange(self.size))
            if not self.budget:
                self.stats.drawn += 1
                return assignment
            if self.admits(assignment):
                return assignment
        raise ValueRangeError(
            f"no candidate of {self.network} within the budget in 1000 draws ({self.stats})",
            hints=["raise --max-params / --max-macs, or narrow the choices"],
        )

    def admits(self, assignment: Mapping[str, Any]) -> bool:
        """Whether the candidate builds and fits the budget; counted in ``stats``."""
        self.stats.drawn += 1
        try:
            net = self.build(assignment)
        except SpecError:
            self.stats.invalid += 1
            return False
        if not self.budget.admits(net):
            self.stats.over_budget += 1
            return False
        self._last = (_assignment_key(assignment), net)  # build() of it is then free
        return True

    def mutate(
        self, assignment: Mapping[str, Any], rng: random.Random | int | Any = None
    ) -> Assignment:
        """Change one choice to another of its values (uniformly), for evolutionary search.

        Later choices whose values depend on it keep their value when it is still allowed
        and are redrawn otherwise. An assignment of a space of one candidate is returned
        unchanged."""
        rng = as_random(rng)
        current = self._complete(assignment)
        movable = self._alternatives(current)
        if not movable:
            return current
        name, values = movable[rng.randrange(len(movable))]
        current[name] = values[rng.randrange(len(values))]
        return self._repair(current, rng)

    def _alternatives(self, current: Assignment) -> list[tuple[str, list[Any]]]:
        out, state = [], {}
        for k, param in enumerate(self._params):
            values = self._values(k, state)
            value = current[param.decl.name] if param.free else values[0]
            if param.free:
                others = [
                    v for v in values
                    if _value_key(v) != _value_key(value)
                    and self._feasible(k, state, v)
                ]  # fmt: skip
                if others:
                    out.append((param.decl.name, others))
            state = self._advance(k, state, value)
        return out

    def _feasible(self, k: int, state: Mapping[str, Any], value: Any) -> bool:
        return self._count(k + 1, self._advance(k, state, value)) > 0

    def _repair(self, current: Assignment, rng: random.Random) -> Assignment:
        """Keep each choice if still allowed (and completable), else redraw it uniformly."""
        state: dict[str, Any] = {}
        for k, param in enumerate(self._params):
            values = self._values(k, state)
            if not param.free:
                state = self._advance(k, state, values[0])
                continue
            name, keys = param.decl.name, [_value_key(v) for v in values]
            value = current[name]
            if _value_key(value) not in keys or not self._feasible(k, state, value):
                ok = [v for v in values if self._feasible(k, state, v)]
                value = current[name] = ok[rng.randrange(len(ok))]
            state = self._advance(k, state, value)
        return current

    def _complete(self, assignment: Mapping[str, Any]) -> Assignment:
        """Check an assignment against the domains; a missing choice takes its first value."""
        free = [p.decl.name for p in self._params if p.free]
        for name in assignment:
            if name not in free:
                fixed = any(p.decl.name == name for p in self._params)
                raise UnknownNameError(
                    f"`{name}` is not a choice of {self.network}"
                    + (" (it is a fixed parameter)" if fixed else ""),
                    hints=DidYouMean(free).hint(name) or [f"choices: {', '.join(free)}"],
                )
        state: dict[str, Any] = {}
        out: Assignment = {}
        for k, param in enumerate(self._params):
            values = self._values(k, state)
            value = values[0]
            if param.free:
                p = param.decl
                if p.name in assignment:
                    value = self._el.typed(p, assignment[p.name], p.default.span)
                    if _value_key(value) not in {_value_key(v) for v in values}:
                        raise ValueRangeError(
                            f"`{p.name}` is a choice of {_texts(values)}; got {spec_text(value)}",
                            p.default.span,
                            notes=[Note(f"in the candidate {describe(assignment)}")],
                        )
                out[p.name] = value
            state = self._advance(k, state, value)
        return out

    # --- candidates ----------------------------------------------------------------------------

    def params(self, assignment: Mapping[str, Any]) -> dict[str, Any]:
        """All network parameters of a candidate: its choices and the fixed parameters."""
        fixed = {p.decl.name: p.fixed for p in self._params if p.has_fixed}
        return {**fixed, **self._complete(assignment)}

    def build(self, assignment: Mapping[str, Any]) -> Network:
        """The candidate as a :class:`resdsl.Network`, like ``resdsl.load`` gives it.

        Raises SpecError; an error in the network notes the candidate's choice values."""
        if self._last is not None and self._last[0] == _assignment_key(assignment):
            return self._last[1]
        params = self.params(assignment)
        elaborator = IncrementalElaborator(self.program, self.limits, self._fragments)
        try:
            graph = elaborator.network(self.network, params)
        except RecursionError:  # the backstop of resdsl.elaborate.elaborate
            raise LimitError(
                "the spec nests too deeply to elaborate", elaborator.statement
            ) from None
        except SpecError as e:
            e.notes.append(Note(f"in the candidate {describe(self._complete(assignment))}"))
            raise
        net = Network(graph, params, self.path, self.program.digest)
        seed_layers(net, self._counts)
        self._last = (_assignment_key(assignment), net)  # fingerprint() of it is then free
        return net

    def counts(self, assignment: Mapping[str, Any]) -> Counts:
        """The candidate's parameters, MACs and output shapes without building it.

        Equal to ``build(assignment)``'s ``num_params`` and ``macs`` for every candidate that
        builds; a block instance seen before (same block, arguments and input shapes) is
        counted from its recorded totals, so its body is not run again and the names inside
        it are not checked again. Raises SpecError as ``build`` would for errors of shape,
        type and value."""
        params = self.params(assignment)
        if self._replay is not None:
            counts = self._replay.count(params, self.program, self.limits, self._instances)
            if counts is not None:
                return counts
        planned = self._plan
        trace = [] if planned is not None and self._replay is None else None
        try:
            counts, graph = count(self.program, self.network, params, self.limits,
                                  self._instances, trace)  # fmt: skip
        except RecursionError:
            raise LimitError("the spec nests too deeply to elaborate", None) from None
        except SpecError as e:
            e.notes.append(Note(f"in the candidate {describe(self._complete(assignment))}"))
            raise
        if graph.training_outputs:  # their branches are not in `macs`: count the build
            net = self.build(assignment)
            return Counts(net.num_params, net.macs, counts.outputs)
        if trace is not None:
            totals = (counts.params, counts.macs, 0)
            self._replay = NetworkReplay(
                Replay(planned, trace, totals, None), counts.outputs, self.definition
            )
        return counts

    @functools.cached_property
    def _plan(self):
        """How the choices reach the network body, if only as block arguments (replay.py)."""
        return plan(self.program, self.definition, {p.decl.name for p in self._params if p.free})

    def fingerprint(
        self, assignment: Mapping[str, Any], canonical: bool = False, *,
        convention: str = "function", prune_zeros: bool = True,
    ) -> str:  # fmt: skip
        """A hash of the candidate's graph (ops, attributes, edges, shapes; not names):
        two assignments that give the same network have the same fingerprint. It reuses
        the last candidate built, and remembers what it gave.

        ``canonical``: a hash of the function the candidate computes instead
        (:mod:`resdsl.search.canonical`): zeros pruned, nodes that do not reach an output
        dropped, ``add`` commutative, invariant under relabelling a cell's nodes.
        ``convention="benchmark"`` counts an op applied to a zero as a zero (NAS-Bench-201's
        convention; not function-preserving: batch norm of a zero is its shift), and
        ``prune_zeros=False`` treats ``zero`` as any other op."""
        key = (_assignment_key(assignment), canonical, convention, prune_zeros)
        found = self._fingerprints.get(key)
        if found is None:
            if len(self._fingerprints) > 100_000:
                self._fingerprints.clear()
            if canonical:
                found = self._canonical(assignment, convention, prune_zeros)
            else:
                found = graph_fingerprint(self.build(assignment))
            self._fingerprints[key] = found
        return found

    def _canonical(self, assignment: Mapping[str, Any], convention: str, prune: bool) -> str:
        params = self.params(assignment)
        templates = self._templates.setdefault((convention, prune), {})
        terms = store(convention, prune)  # per candidate; the templates are shared
        el = CanonicalElaborator(self.program, self.limits, self._instances, terms, templates)
        try:
            el.network(self.network, params)
        except RecursionError:
            raise LimitError("the spec nests too deeply to elaborate", None) from None
        except SpecError as e:
            e.notes.append(Note(f"in the candidate {describe(self._complete(assignment))}"))
            raise
        return terms.fingerprint([el.of[node] for _, node in el.graph.outputs])

    def unique(
        self, *, convention: str = "function", prune_zeros: bool = True
    ) -> Iterator[Assignment]:
        """One assignment per canonical class (:meth:`fingerprint` with ``canonical``), the
        first of each in :meth:`enumerate`'s order, lazily."""
        seen: set[str] = set()
        for assignment in self.enumerate():
            fp = self.fingerprint(assignment, True, convention=convention, prune_zeros=prune_zeros)
            if fp not in seen:
                seen.add(fp)
                yield assignment

    def to_spec(self, assignment: Mapping[str, Any], header: str = "") -> str:
        """The candidate as a concrete, self-contained ``.res`` text (no choices)."""
        params = self.params(assignment)
        return concrete_spec(self.program, self.definition, self.text, params, header)

    def suggest(self, trial: Any) -> Assignment:
        """An assignment drawn by an Optuna trial: each choice is one ``suggest_*`` call.

        A choice over consecutive ints is ``suggest_int``, any other ``suggest_categorical``.
        A choice whose values depend on earlier ones is named with their values
        (``width2[width=64]``), as Optuna wants one fixed set of values per name."""
        state: dict[str, Any] = {}
        out: Assignment = {}
        for k, param in enumerate(self._params):
            values = [v for v in self._values(k, state) if self._feasible(k, state, v)]
            value = values[0] if values else None
            if param.free:
                value = out[param.decl.name] = _suggest(trial, self._optuna_name(k, state), values)
            state = self._advance(k, state, value)
        trial.set_user_attr("candidate", describe(out))  # study.best_trial says what it is
        return out

    def _optuna_name(self, k: int, state: Mapping[str, Any]) -> str:
        p = self._params[k].decl
        deps = sorted(_names(p.default) & state.keys())
        if not deps:
            return p.name
        return f"{p.name}[{', '.join(f'{d}={spec_text(state[d])}' for d in deps)}]"

    def __repr__(self) -> str:
        return (
            f"<SearchSpace {self.network}: {len(self.choices)} choices, {self.size:,} candidates>"
        )


def load_space(
    path: str | os.PathLike[str],
    network: str | None = None,
    *,
    max_params: int | None = None,
    max_macs: int | None = None,
    limits: Limits | None = None,
    **params: Any,
) -> SearchSpace:
    """Parse the spec at ``path`` once, as a search space over its network's choices.

    ``params`` fix network parameters, choices included (a fixed choice is no longer a
    choice). ``max_params`` / ``max_macs`` are a budget that :meth:`SearchSpace.sample`
    honours by rejection. Raises :class:`resdsl.SpecError`.
    """
    path = os.fspath(path)
    return loads_space(
        read_spec(path), network, path=path, max_params=max_params, max_macs=max_macs,
        limits=limits, **params,
    )  # fmt: skip


def loads_space(
    text: str,
    network: str | None = None,
    *,
    path: str = "<string>",
    max_params: int | None = None,
    max_macs: int | None = None,
    limits: Limits | None = None,
    **params: Any,
) -> SearchSpace:
    """Like :func:`load_space`, from spec text."""
    budget = Budget(max_params, max_macs)
    return SearchSpace(text, path, network, limits=limits, budget=budget, params=params)


def as_random(rng_or_seed: Any) -> random.Random:
    """A ``random.Random`` from a seed, itself, or a NumPy ``Generator`` (one draw seeds it)."""
    if isinstance(rng_or_seed, random.Random):
        return rng_or_seed
    if rng_or_seed is None or isinstance(rng_or_seed, int):
        return random.Random(rng_or_seed)
    if hasattr(rng_or_seed, "integers"):  # numpy.random.Generator
        return random.Random(int(rng_or_seed.integers(2**63)))
    raise TypeError(f"expected a seed, random.Random or numpy Generator, got {rng_or_seed!r}")


def describe(assignment: Mapping[str, Any]) -> str:
    """``depth=2, width=64, se=true``: an assignment in spec syntax."""
    return ", ".join(f"{k}={spec_text(v)}" for k, v in assignment.items())


# What a space computes as it goes (rebuilt after pickling); `_plan` holds id()s of AST nodes.
_CACHES = (
    "_el", "_values_memo", "_count_memo", "_last", "_fragments", "_counts", "_instances",
    "_replay", "_templates", "_fingerprints", "_plan",
)  # fmt: skip

# --- helpers -------------------------------------------------------------------------------------


def _suggest(trial: Any, name: str, values: list[Any]) -> Any:
    ints = all(type(v) is int for v in values)
    if ints and len(values) > 2 and values == list(range(values[0], values[0] + len(values))):
        return trial.suggest_int(name, values[0], values[-1])
    if all(v is None or type(v) in (bool, int, float, str) for v in values):
        return trial.suggest_categorical(name, values)
    texts = [spec_text(v) for v in values]  # tuples: Optuna takes scalars only
    return values[texts.index(trial.suggest_categorical(name, texts))]


def _names(expr: Any) -> frozenset[str]:
    """Every name an expression reads (variables, and called names: a block parameter)."""
    out: set[str] = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Call):
            out.add(node.func)
        if isinstance(node, tuple):
            stack.extend(node)
        elif isinstance(node, ast.Expr | ast.Label):
            stack.extend(getattr(node, f.name) for f in fields(node))
    return frozenset(out)


def _value_key(value: Any) -> Any:
    # repr tells 1, 1.0 and True apart; a block is known by its name
    if isinstance(value, BlockRef):
        return ("block", value.definition.name)
    return repr(value)


def _assignment_key(assignment: Mapping[str, Any]) -> tuple:
    return tuple((k, _value_key(v)) for k, v in sorted(assignment.items()))


def _texts(values: list[Any]) -> str:
    return ", ".join(spec_text(v) for v in values)


def _source(span: Span, text: str) -> str:
    lines = text.splitlines()[span.line - 1 : span.end_line]
    if not lines:
        return ""
    if len(lines) == 1:
        return lines[0][span.column - 1 : span.end_column - 1]
    return " ".join([lines[0][span.column - 1 :], *lines[1:-1], lines[-1][: span.end_column - 1]])
