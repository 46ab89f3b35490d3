"""Ray Tune drives a space: its trial schedulers (ASHA, PBT, ...) and cluster execution run
the candidates of a spec's ``choice(...)`` parameters.

Ray Tune's own search spaces are flat: each key has one fixed domain. A resdsl space is
not, when a choice's values depend on an earlier one (``stem: int = choice(width // 2,
width)``), and it may have a budget. :class:`SpecSearcher` is therefore a Ray Tune
``Searcher`` that draws each trial's candidate with the space's own sampler: uniformly,
dependent choices consistent, within the budget, buildable, and (by default) never a
network already suggested (by fingerprint). A trial's config is ``{choice: value}``, and
:func:`build` turns it back into the candidate in the trainable:

>>> def train(config, space):
...     net = build(config, space)  # resdsl.Network; net.to_torch() to train it
...     for epoch in range(10):
...         ...
...         tune.report({"accuracy": accuracy})
>>> tuner = tune.Tuner(
...     tune.with_parameters(train, space=space),
...     tune_config=tune.TuneConfig(
...         search_alg=SpecSearcher(space, seed=0), scheduler=ASHAScheduler(),
...         metric="accuracy", mode="max", num_samples=64,
...     ),
...     param_space={"lr": tune.loguniform(1e-3, 1e-1)},  # optional: sampled alongside
... )

:func:`param_space` is the flat alternative for a space that is a plain product of its
choices (no dependent choices, no budget): Tune's own samplers then draw it.

Ray is imported only when :class:`SpecSearcher` or :func:`param_space` is first used, so
this module imports without Ray (``pip install 'ray[tune]'``).
"""

from __future__ import annotations

import functools
import logging
import math
import pickle
from collections.abc import Mapping
from typing import Any

from ..errors import SpecError
from ..network import Network
from .space import Assignment, SearchSpace, as_random, describe

# SpecSearcher is made by the module's __getattr__ on first use (it subclasses Ray's Searcher)
__all__ = ["SpecSearcher", "assignment", "build", "param_space"]  # noqa: F822

logger = logging.getLogger(__name__)

_NO_RAY = "Ray Tune is not installed: pip install 'ray[tune]'"


def assignment(config: Mapping[str, Any], space: SearchSpace) -> Assignment:
    """The space's choices in a trial's ``config`` (other keys, such as a learning rate,
    are left out). Lists are read as tuples: a config that went through JSON (a restored
    experiment, ``params.json``) still names its tuple-valued choices."""
    return {name: _tuples(config[name]) for name in space.choices if name in config}


def build(config: Mapping[str, Any], space: SearchSpace) -> Network:
    """The trial's candidate as a :class:`resdsl.Network` (``.to_torch()`` for a module).

    Raises :class:`resdsl.SpecError` for an invalid candidate, which only a flat
    :func:`param_space` can suggest."""
    return space.build(assignment(config, space))


def param_space(space: SearchSpace) -> dict[str, Any]:
    """``{choice: tune.choice(values)}`` for Tune's own samplers (random, grid, Optuna's,
    HyperOpt's ...), where the space is exactly the product of its choices' values.

    Raises ValueError for a space with a budget (a flat space cannot reject candidates) or
    whose choices are not independent (a value allowed only with some values of an earlier
    choice): use :class:`SpecSearcher` for those."""
    try:
        from ray import tune
    except ImportError:
        raise ImportError(_NO_RAY) from None
    if space.budget:
        raise ValueError(
            f"{space.network} has a budget, which a flat param_space cannot honour: "
            "use SpecSearcher(space), which samples within it"
        )
    choices = space.choices
    if math.prod(len(c.values) for c in choices.values()) != space.size:
        dependent = [n for n, c in choices.items() if set(c.depends_on) & choices.keys()]
        raise ValueError(
            f"{space.network} is not a product of its choices' values "
            f"(dependent: {', '.join(dependent) or 'through computed parameters'}): "
            "use SpecSearcher(space), which keeps dependent choices consistent"
        )
    return {name: tune.choice(list(c.values)) for name, c in choices.items()}


class _SpecSearcher:
    """A Ray Tune searcher over a resdsl space: each trial gets a candidate drawn by
    ``space.sample`` (uniform, dependent choices consistent, within the space's budget).

    ``seed``: an int, a ``random.Random`` or a NumPy ``Generator``; the same seed gives the
    same sequence of suggestions. ``unique``: skip candidates whose network (fingerprint)
    was already suggested, so a trial is never spent twice on one architecture; after
    ``max_draws`` draws in a row without a new one the space counts as exhausted and the
    searcher returns ``FINISHED`` (Tune then stops asking). Candidates that do not build
    (a ``SpecError``) are never suggested; ``invalid`` and ``duplicates`` count the draws
    thrown away.

    Hyperparameters other than the architecture go in the Tuner's ``param_space`` as Tune
    domains (``{"lr": tune.loguniform(1e-3, 1e-1)}``) or constants: the searcher samples the
    domains with the same random source and merges them into each config. Their names must
    not be choices of the space.

    After a trial, ``trials[trial_id]`` is its assignment and ``results[trial_id]`` its last
    result (None where it failed)."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: Any = None,
        unique: bool = True,
        max_draws: int = 100,
        metric: str | None = None,
        mode: str | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)  # Ray's Searcher
        self.space = space
        self.unique, self.max_draws = unique, max_draws
        self.rng = as_random(seed)
        self.seen: set[str] = set()  # fingerprints suggested
        self.trials: dict[str, Assignment] = {}
        self.results: dict[str, dict[str, Any] | None] = {}
        self.invalid = self.duplicates = 0
        self.finished = False  # the space ran out of new candidates
        self.extra: dict[str, Any] = {}  # Tune domains of param_space, sampled per trial

    # --- the Searcher interface ---------------------------------------------------------------

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Takes the Tuner's ``param_space``: its top-level Tune domains are sampled for each
        trial (constants Tune merges itself); ``metric``/``mode`` unless given already."""
        from ray.tune.search.sample import Domain, Function

        clash = sorted(config.keys() & self.space.choices.keys())
        if clash:
            raise ValueError(
                f"param_space names choices of {self.space.network}: {', '.join(clash)} "
                "(SpecSearcher decides those; fix one with load_space(..., name=value))"
            )
        for key, value in config.items():
            nested = _unresolved(value, Domain) and not isinstance(value, Domain)
            if nested or isinstance(value, Function):
                raise ValueError(
                    f"param_space[{key!r}]: SpecSearcher samples top-level Tune domains "
                    "(tune.choice, tune.uniform, tune.loguniform, ...) and constants only"
                )
        self.extra = {k: v for k, v in config.items() if isinstance(v, Domain)}
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next trial's config: ``{choice: value}`` plus sampled ``param_space`` domains;
        ``FINISHED`` when no new candidate turns up in ``max_draws`` draws."""
        candidate = None if self.finished else self._draw()
        if candidate is None:
            self.finished = True
            logger.info("%s: no new candidate in %d draws", self.space.network, self.max_draws)
            return self.FINISHED
        self.trials[trial_id] = candidate
        config: dict[str, Any] = dict(candidate)
        for key, domain in self.extra.items():
            config[key] = domain.sample(config, random_state=self.rng.getrandbits(64))
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        self.results[trial_id] = None if error else result

    def _draw(self) -> Assignment | None:
        exhausted = self.unique and len(self.seen) >= self.space.size  # every one suggested
        for _ in range(0 if exhausted else self.max_draws):
            candidate = self.space.sample(self.rng)  # under a budget: built and admitted
            try:
                fp = self.space.fingerprint(candidate)  # builds it (free after a budget)
            except SpecError:
                self.invalid += 1
                continue
            if self.unique and fp in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(fp)
            return candidate
        return None

    def describe(self, trial_id: str) -> str:
        """A trial's candidate in spec syntax: ``depth=2, width=64, se=true``."""
        return describe(self.trials[trial_id])

    # --- checkpointing: Tune saves the searcher with the experiment ---------------------------

    def get_state(self) -> dict[str, Any]:
        return {
            "rng": self.rng.getstate(), "seen": set(self.seen), "trials": dict(self.trials),
            "results": dict(self.results), "invalid": self.invalid,
            "duplicates": self.duplicates, "finished": self.finished,
        }  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.setstate(state["rng"])
        self.seen, self.trials, self.results = state["seen"], state["trials"], state["results"]
        self.invalid, self.duplicates = state["invalid"], state["duplicates"]
        self.finished = state["finished"]

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))  # a file this searcher wrote

    def __repr__(self) -> str:
        return f"<SpecSearcher {self.space.network}: {len(self.trials)} suggested>"


@functools.cache
def _searcher_class() -> type:
    """SpecSearcher: the body above with Ray Tune's ``Searcher`` as its base, made on first
    use so that importing this module does not import Ray."""
    try:
        from ray.tune.search import Searcher
    except ImportError:
        raise ImportError(_NO_RAY) from None
    namespace = {"__module__": __name__, "__qualname__": "SpecSearcher",
                 "__doc__": _SpecSearcher.__doc__}  # fmt: skip
    cls = type("SpecSearcher", (_SpecSearcher, Searcher), namespace)
    globals()["SpecSearcher"] = cls  # pickle finds the class by this name
    return cls


def __getattr__(name: str) -> Any:
    if name == "SpecSearcher":
        return _searcher_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _tuples(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def _unresolved(value: Any, domain: type) -> bool:
    """Whether a param_space value holds something for Tune to sample (a domain, a grid)."""
    if isinstance(value, domain):
        return True
    if isinstance(value, Mapping):
        return "grid_search" in value or any(_unresolved(v, domain) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_unresolved(v, domain) for v in value)
    return False
