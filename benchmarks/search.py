"""Search benchmark: scoring a ResNet-50-sized candidate with resdsl vs. building it in PyTorch.

A search script draws a candidate, builds it, checks that it is valid and counts its
parameters and MACs, thousands of times. This script times that loop on
``examples/search/resnet_space.res`` against the usual alternative, measured in the same
run on the same (single) core, in CPU time of this process:

* resdsl: ``space.sample(rng)`` (a uniformly random assignment), then ``space.build(a)`` for
  the candidate equal to torchvision's resnet50 (every shape checked), then
  ``net.num_params`` and ``net.macs``. The space is parsed once; block instances seen
  before are replayed rather than elaborated again (resdsl/search/incremental.py).
* PyTorch: ``torchvision.models.resnet.ResNet(Bottleneck, [3, 4, 6, 3])`` built on the
  ``meta`` device (no weights allocated), the sum of ``p.numel()``, and one forward pass of
  a (1, 3, 224, 224) meta tensor under ``torch.utils.flop_counter.FlopCounterMode``
  (FLOPs / 2 = MACs).

It also times random candidates of the whole space (sample + build + count, after a warm-up
that fills the caches as a long search would) and, for reference, ``resdsl.load`` of
``examples/resnet50.res`` from scratch. Both routes must agree on the counts. Targets: the
resdsl route at least 50x faster than the PyTorch one, and at least 200 candidates per second;
the exit status is 1 when either is missed.

    python benchmarks/search.py
    python benchmarks/search.py --repeats 500 --random 2000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.resnet import Bottleneck, ResNet

import resdsl

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "examples" / "search" / "resnet_space.res"
RESNET50 = dict(kind="bottleneck", depth1=3, depth2=4, depth3=6, depth4=3, width=64, stem=64,
                se=False)  # fmt: skip
TARGET_RATIO, TARGET_RATE = 50.0, 200.0


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median CPU seconds of ``repeats`` calls after one warm-up call, and the last result.

    CPU time of this process (``time.process_time``), not wall time: on a shared machine
    the wall clock also counts the time other processes hold the core.
    """
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return statistics.median(times), result


def resdsl_route(space, rng: random.Random) -> tuple[int, int]:
    space.sample(rng)
    net = space.build(RESNET50)
    return net.num_params, net.macs


def torch_route() -> tuple[int, int]:
    with torch.device("meta"):
        model = ResNet(Bottleneck, [3, 4, 6, 3])
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    return params, counter.get_total_flops() // 2


def random_rate(space, n: int, warmup: int) -> float:
    """Candidates per CPU second over ``n`` random candidates, after ``warmup`` of them."""
    rng = random.Random(1)
    for _ in range(warmup):
        space.build(space.sample(rng))
    start = time.process_time()
    for _ in range(n):
        net = space.build(space.sample(rng))
        net.num_params, net.macs  # noqa: B018 - the counts are the point
    return n / (time.process_time() - start)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=200, help="timed resdsl runs (default: 200)")
    p.add_argument("--torch-repeats", type=int, default=10, help="timed PyTorch runs (default 10)")
    p.add_argument("--random", type=int, default=1000, help="random candidates (default: 1000)")
    p.add_argument("--warmup", type=int, default=1000, help="warm-up candidates (default: 1000)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # one core for both routes
    space = resdsl.load_space(SPACE)
    rng = random.Random(0)
    ours_s, ours = median_time(lambda: resdsl_route(space, rng), args.repeats)
    load_s, _ = median_time(lambda: resdsl.load(ROOT / "examples" / "resnet50.res"), 20)
    rate = random_rate(space, args.random, args.warmup)
    theirs_s, theirs = median_time(torch_route, args.torch_repeats)
    ratio, r50_rate = theirs_s / ours_s, 1 / ours_s
    print(f"resdsl {resdsl.__version__} | torch {torch.__version__} | 1 thread | space "
          f"{space.size:,} candidates\n")  # fmt: skip
    print(f"{'route (CPU time of this process, median)':<58} {'ms':>8} {'cand/s':>8}")
    print(f"{'resdsl: sample + build + count (resnet50 candidate)':<58} {ours_s * 1e3:>8.3f} "
          f"{r50_rate:>8.0f}")  # fmt: skip
    print(f"{'resdsl: sample + build + count (random candidates)':<58} {1e3 / rate:>8.3f} "
          f"{rate:>8.0f}")  # fmt: skip
    print(f"{'resdsl.load(examples/resnet50.res) (reference)':<58} {load_s * 1e3:>8.3f} "
          f"{1 / load_s:>8.0f}")  # fmt: skip
    print(f"{'PyTorch: meta-device ResNet + FlopCounterMode':<58} {theirs_s * 1e3:>8.3f} "
          f"{1 / theirs_s:>8.0f}")  # fmt: skip
    print(f"\ncounts: resdsl {ours[0]:,} params {ours[1]:,} MACs; "
          f"PyTorch {theirs[0]:,} params {theirs[1]:,} MACs")  # fmt: skip
    print(f"speed-up over PyTorch: {ratio:.1f}x (target {TARGET_RATIO:.0f}x)")
    print(f"resnet50-sized candidates per second: {r50_rate:.0f} (target {TARGET_RATE:.0f})")
    ok = ours == theirs and ratio >= TARGET_RATIO and r50_rate >= TARGET_RATE
    print("OK" if ok else "FAIL: counts differ or a target is missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
