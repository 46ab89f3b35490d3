"""Evaluating candidates in parallel: a local process pool by default, Ray when asked.

The engines are existing ones — :class:`concurrent.futures.ProcessPoolExecutor` and Ray
tasks — and both are driven the same way: the space is sent to each worker once, each task
carries one assignment, and results come back as they complete. A score function runs in a
worker as ``score(space, assignment)``; it must be picklable (a module-level function). A
:class:`resdsl.SpecError` it raises (an invalid candidate) is a result, not a failure of
the search; any other exception propagates.

>>> with Evaluator(space, proxy_score, workers=4) as ev:
...     for result in ev.map(space.sample(i) for i in range(100)):
...         print(result.assignment, result.value)
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError, render
from .space import Assignment, SearchSpace

Score = Callable[[SearchSpace, Assignment], Any]


@dataclass(frozen=True)
class Result:
    """One evaluated candidate: the score's value, or the rendered SpecError that made the
    candidate invalid (``value`` is then None)."""

    assignment: Assignment
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _evaluate(space: SearchSpace, score: Score, assignment: Assignment) -> Result:
    try:
        return Result(assignment, score(space, assignment))
    except SpecError as e:
        return Result(assignment, error=render(e))


# --- process pool worker state: set once per worker by the initializer --------------------------

_WORKER: tuple[SearchSpace, Score] | None = None


def _init_worker(space: SearchSpace, score: Score) -> None:
    global _WORKER
    _WORKER = (space, score)


def _pool_task(assignment: Assignment) -> Result:
    assert _WORKER is not None, "the pool initializer sets the worker state"
    return _evaluate(*_WORKER, assignment)


def _ray_task(space: SearchSpace, score: Score, assignment: Assignment) -> Result:
    return _evaluate(space, score, assignment)


class Evaluator:
    """Runs ``score(space, assignment)`` for many candidates on ``workers`` processes.

    ``ray``: None for a local process pool; ``"local"`` to start a local Ray instance with
    ``workers`` CPUs; an address (``"auto"``, ``"ray://host:10001"``) to join a cluster,
    where ``workers`` bounds the tasks in flight. ``workers=1`` without Ray evaluates in
    this process (no pool), which is what tests and debuggers want. Use as a context manager
    or call :meth:`close`; the pool lives across :meth:`map` calls (evolution's generations).
    """

    def __init__(
        self, space: SearchSpace, score: Score, *, workers: int | None = None,
        ray: str | None = None,
    ) -> None:  # fmt: skip
        self.space, self.score = space, score
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.ray = ray
        self._pool: cf.ProcessPoolExecutor | None = None
        self._ray_state: tuple[Any, Any, Any] | None = None  # (ray module, space ref, task)

    def map(self, candidates: Iterable[Assignment]) -> Iterator[Result]:
        """Evaluate ``candidates`` (any iterable, consumed lazily); yield results as they
        complete, at most ``2 * workers`` in flight."""
        if self.ray is not None:
            return self._map_ray(iter(candidates))
        if self.workers == 1:
            return (_evaluate(self.space, self.score, a) for a in candidates)
        return self._map_pool(iter(candidates))

    def _map_pool(self, candidates: Iterator[Assignment]) -> Iterator[Result]:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                self.workers, initializer=_init_worker, initargs=(self.space, self.score)
            )
        pending = {self._pool.submit(_pool_task, a) for a in self._take(candidates)}
        while pending:
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                yield future.result()
            pending |= {self._pool.submit(_pool_task, a) for a in self._take(candidates, done)}

    def _map_ray(self, candidates: Iterator[Assignment]) -> Iterator[Result]:
        ray, space_ref, task = self._ray_setup()
        pending = [task.remote(space_ref, self.score, a) for a in self._take(candidates)]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield from ray.get(done)
            pending += [task.remote(space_ref, self.score, a) for a in self._take(candidates, done)]

    def _take(self, candidates: Iterator[Assignment], done: Any = None) -> list[Assignment]:
        n = 2 * self.workers if done is None else len(done)
        return list(itertools.islice(candidates, n))

    def _ray_setup(self) -> tuple[Any, Any, Any]:
        if self._ray_state is None:
            try:
                import ray
            except ImportError:
                raise RuntimeError("Ray is not installed: pip install 'resdsl[search]'") from None
            if not ray.is_initialized():
                if self.ray == "local":
                    ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=self.ray, log_to_driver=False)
            task = ray.remote(num_cpus=1)(_ray_task)
            self._ray_state = (ray, ray.put(self.space), task)
        return self._ray_state

    def close(self) -> None:
        """Shut the process pool down (a Ray instance is left to Ray: ``ray.shutdown()``)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
