"""Regularized evolution (Real et al., 2019) over a search space under a MACs budget.

A population of candidates ages: each round, `--workers` children are made by mutating
the best of a random sample of the population (`space.mutate` changes one choice), scored
in parallel by a cheap proxy, and added while the oldest members leave. Children over the
budget or invalid are mutated again. A process pool by default, Ray with `--ray [ADDRESS]`.

    python examples/search/evolution.py --n 300 --population 30 --max-macs 1G --workers 4
    python examples/search/evolution.py --ray --workers 2
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections import deque

from tqdm import tqdm

from resdsl.search import SearchSpace, describe
from resdsl.search.parallel import Result
from resdsl.search.scripts import evaluator, open_space, script_parser

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = script_parser(__doc__.split("\n\n")[0], space=os.path.join(HERE, "resnet_space.res"),
                      n=200, n_help="candidates to evaluate", max_macs="1G")  # fmt: skip
    p.add_argument("--population", type=int, default=20, help="population size (default: 20)")
    p.add_argument("--tournament", type=int, default=5, help="sample size (default: 5)")
    return p.parse_args(argv)


def child(space: SearchSpace, population: deque[Result], k: int, rng: random.Random) -> dict:
    """Mutate the best of ``k`` random members until the child builds and fits the budget."""
    sample = rng.sample(list(population), min(k, len(population)))
    parent = max(sample, key=lambda r: r.value["score"]).assignment
    for _ in range(100):
        candidate = space.mutate(parent, rng)
        if space.admits(candidate):
            return candidate
    return space.sample(rng)  # a corner of the space with no fitting neighbour


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    space = open_space(args)
    rng = random.Random(args.seed)
    population: deque[Result] = deque()
    history: list[Result] = []
    bar = tqdm(total=args.n, disable=args.quiet, unit="cand")
    with evaluator(space, args) as ev:
        while len(history) < args.n:
            batch = min(ev.workers, args.n - len(history))
            if len(population) < args.population:
                batch = min(batch, args.population - len(population))
                candidates = [space.sample(rng) for _ in range(batch)]
            else:
                candidates = [child(space, population, args.tournament, rng) for _ in range(batch)]
            for result in ev.map(candidates):
                history.append(result)
                bar.update()
                if result.ok:
                    population.append(result)
                    if len(population) > args.population:
                        population.popleft()  # the oldest dies, not the worst
    bar.close()
    print(f"sampling and mutation: {space.stats}", file=sys.stderr)
    best = max((r for r in history if r.ok), key=lambda r: r.value["score"], default=None)
    if best is None:
        return 1
    v = best.value
    print(f"best: score {v['score']:.4g}, {v['params']:,} params, {v['macs']:,} MACs: "
          f"{describe(best.assignment)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
