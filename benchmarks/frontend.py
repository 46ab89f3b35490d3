"""Front-end benchmark: resdsl vs. torchvision for counting a ResNet's params and MACs.

An architecture search script scores thousands of candidate networks by their size
(trainable parameters) and cost (multiply-accumulates for one sample). Today it does that
by building each model in PyTorch and running it once under a FLOP counter. resdsl gets the
same two numbers from the spec alone, without allocating any weights. This script measures
both paths on the ResNet examples in ``examples/`` and checks that they agree.

For each model it measures the median wall time (``time.perf_counter``) of:

* resdsl, warm: ``resdsl.load(path)`` then reading ``net.num_params`` and ``net.macs``.
  resdsl's parse cache stays filled between iterations, which is what a search script that
  loads the same files over and over sees.
* resdsl, cold: the same, with the parse cache cleared (``resdsl.loader._CACHE.clear()``)
  before each iteration, so every load parses the spec again. The clear is not timed.
* torchvision: ``torchvision.models.resnetXX()`` (no weights), the sum of ``p.numel()``
  over its parameters, and one forward pass of a (1, 3, 224, 224) input under
  ``torch.no_grad()`` and ``torch.utils.flop_counter.FlopCounterMode``. That counter
  reports FLOPs = 2 * MACs; the table shows MACs.

Each measurement is warmed up once (imports, grammar construction, first-touch allocation)
and then repeated. All resdsl timings run before all torchvision ones, so that torch's
threads and allocator do not disturb them. The table gives both timings, the speed-up
(torchvision time / resdsl time) for the warm and the cold case, whether the parameter
counts are equal, and the two MAC counts with their relative difference.

The project's target is a warm speed-up of at least 50x on resnet50; the script exits with
status 1 when it misses that target (when resnet50 is among the models measured).

    python benchmarks/frontend.py
    python benchmarks/frontend.py --models resnet18 resnet50 --repeats 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import resdsl
import resdsl.loader

MODELS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TARGET_MODEL = "resnet50"
TARGET_RATIO = 50.0


@dataclass
class Result:
    model: str
    resdsl_warm_s: float
    resdsl_cold_s: float
    torchvision_s: float
    resdsl_params: int
    resdsl_macs: int
    torchvision_params: int
    torchvision_macs: int

    @property
    def ratio_warm(self) -> float:
        return self.torchvision_s / self.resdsl_warm_s

    @property
    def ratio_cold(self) -> float:
        return self.torchvision_s / self.resdsl_cold_s

    @property
    def macs_diff_pct(self) -> float:
        return 100.0 * (self.resdsl_macs - self.torchvision_macs) / self.torchvision_macs


def median_time(fn: Callable[[], object], repeats: int, setup: Callable[[], None] | None = None):
    """Run ``fn`` once to warm up, then ``repeats`` times; return (median seconds, last result).

    ``setup`` runs before every call (the warm-up included) and is not timed.
    """
    if setup is not None:
        setup()
    result = fn()
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def resdsl_counts(path: Path) -> tuple[int, int]:
    """What a search script does with resdsl: load the spec, read params and MACs."""
    net = resdsl.load(path)
    return net.num_params, net.macs


def torchvision_counts(model: str) -> tuple[int, int]:
    """What a search script does today: build the model, count params, count MACs."""
    module = getattr(torchvision.models, model)()
    params = sum(p.numel() for p in module.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(torch.randn(1, 3, 224, 224))
    return params, counter.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per MAC


def clear_parse_cache() -> None:
    resdsl.loader._CACHE.clear()


def measure_resdsl(model: str, repeats: int) -> tuple[float, float, int, int]:
    """(warm seconds, cold seconds, params, MACs) for ``examples/<model>.res``."""
    path = EXAMPLES / f"{model}.res"
    warm_s, (params, macs) = median_time(lambda: resdsl_counts(path), repeats)
    cold_s, _ = median_time(lambda: resdsl_counts(path), repeats, setup=clear_parse_cache)
    return warm_s, cold_s, params, macs


def measure_torchvision(model: str, repeats: int) -> tuple[float, int, int]:
    """(seconds, params, MACs) for ``torchvision.models.<model>``."""
    seconds, (params, macs) = median_time(lambda: torchvision_counts(model), repeats)
    return seconds, params, macs


def measure_all(models: list[str], repeats: int, torchvision_repeats: int) -> list[Result]:
    # All resdsl timings first, then all torchvision ones, so that no resdsl timing runs
    # right after a torch forward pass (its worker threads, allocator and caches).
    ours = {m: measure_resdsl(m, repeats) for m in models}
    theirs = {m: measure_torchvision(m, torchvision_repeats) for m in models}
    results = []
    for m in models:
        warm_s, cold_s, params, macs = ours[m]
        tv_s, tv_params, tv_macs = theirs[m]
        results.append(Result(m, warm_s, cold_s, tv_s, params, macs, tv_params, tv_macs))
    return results


def print_table(results: list[Result]) -> None:
    header = (
        f"{'model':<10} {'warm ms':>9} {'cold ms':>9} {'tv ms':>9} {'x warm':>8} {'x cold':>8} "
        f"{'params':>12} {'params eq':>9} {'resdsl MACs':>15} {'tv MACs':>15} {'MACs diff':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        params_equal = "yes" if r.resdsl_params == r.torchvision_params else "NO"
        print(
            f"{r.model:<10} {r.resdsl_warm_s * 1e3:>9.2f} {r.resdsl_cold_s * 1e3:>9.2f} "
            f"{r.torchvision_s * 1e3:>9.1f} {r.ratio_warm:>7.1f}x {r.ratio_cold:>7.1f}x "
            f"{r.resdsl_params:>12,} {params_equal:>9} "
            f"{r.resdsl_macs:>15,} {r.torchvision_macs:>15,} {r.macs_diff_pct:>9.3f}%"
        )
    for r in results:
        if r.resdsl_params != r.torchvision_params:
            print(
                f"note: {r.model}: resdsl counts {r.resdsl_params:,} params, "
                f"torchvision {r.torchvision_params:,}"
            )


def check_target(results: list[Result]) -> int:
    """Exit status: 1 if the resnet50 warm speed-up is under the target, else 0."""
    target = next((r for r in results if r.model == TARGET_MODEL), None)
    if target is None:
        print(f"\n{TARGET_MODEL} not measured: speed-up target not checked")
        return 0
    if target.ratio_warm < TARGET_RATIO:
        print(
            f"\nFAIL: {TARGET_MODEL} warm speed-up is {target.ratio_warm:.1f}x, "
            f"below the target of {TARGET_RATIO:.0f}x "
            f"(resdsl {target.resdsl_warm_s * 1e3:.2f} ms, "
            f"torchvision {target.torchvision_s * 1e3:.1f} ms)"
        )
        return 1
    print(
        f"\nOK: {TARGET_MODEL} warm speed-up is {target.ratio_warm:.1f}x "
        f"(target {TARGET_RATIO:.0f}x)"
    )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=MODELS, help="models to measure"
    )
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed repeats for resdsl (default 20)"
    )
    parser.add_argument(
        "--torchvision-repeats",
        type=int,
        default=5,
        help="timed repeats for torchvision (default 5)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.torchvision_repeats < 1:
        parser.error("repeat counts must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"resdsl {resdsl.__version__} | "
        f"torch {torch.__version__} | torchvision {torchvision.__version__} | "
        f"{torch.get_num_threads()} threads | median of {args.repeats} (resdsl) / "
        f"{args.torchvision_repeats} (torchvision) repeats after 1 warm-up\n"
    )
    results = measure_all(args.models, args.repeats, args.torchvision_repeats)
    print_table(results)
    return check_target(results)


if __name__ == "__main__":
    sys.exit(main())
