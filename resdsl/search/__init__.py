"""Architecture search over a spec: ``choice(...)`` parameters make a network a space.

>>> space = resdsl.load_space("examples/search/resnet_space.res", max_macs=2_000_000_000)
>>> space.size, list(space.choices)
>>> net = space.build(space.sample(0))

See docs/search.md. Parallel evaluation is in :mod:`resdsl.search.parallel`.
"""

from __future__ import annotations

from .canonical import canonical_fingerprint
from .counting import Counts
from .fingerprint import fingerprint
from .space import (
    Budget,
    Choice,
    SampleStats,
    SearchSpace,
    as_random,
    describe,
    load_space,
    loads_space,
)

__all__ = [
    "Budget",
    "Choice",
    "Counts",
    "SampleStats",
    "SearchSpace",
    "as_random",
    "canonical_fingerprint",
    "describe",
    "fingerprint",
    "load_space",
    "loads_space",
]
