"""Front-end benchmark: resdsl vs. torchvision for counting a ResNet's params and MACs.

An architecture search script scores thousands of candidate networks by their size
(trainable parameters) and cost (multiply-accumulates for one sample). resdsl gets the two
numbers from the spec alone. This script measures it against the strongest PyTorch route a
user would pick, on the ResNet examples in ``examples/``, and checks that they agree.

Every route runs in this process on one thread (``torch.set_num_threads(1)``), and every
figure is the median CPU time of this process (``time.process_time``; the machine is
shared, and the wall clock would also count other processes' turns) of:

* resdsl, warm: ``resdsl.load(path)`` then reading ``net.num_params`` and ``net.macs``.
  resdsl's parse cache (the syntax tree of each file, ``resdsl.loader._CACHE``) stays
  filled between iterations, as in a search script that loads the same files over and
  over; the network is elaborated and shape-checked anew every time.
* resdsl, cold: the same, with the parse cache cleared before each iteration (untimed), so
  every load parses the spec again.
* torchvision on ``meta`` (the reference route, "tv meta"): ``torchvision.models.resnetXX()``
  built under ``torch.device("meta")`` (no weights allocated or initialised), the sum of
  ``p.numel()`` over its parameters, and one forward pass of a (1, 3, 224, 224) meta tensor
  under ``torch.no_grad()`` and ``torch.utils.flop_counter.FlopCounterMode``, which reports
  FLOPs = 2 * MACs; the table shows MACs.
* fvcore, when it is installed (a second column, else "not installed"): the same meta model,
  ``fvcore.nn.parameter_count`` and ``fvcore.nn.FlopCountAnalysis(...).total()`` (fvcore
  counts one multiply-add as one "flop", so its total is MACs).

Each measurement is warmed up once (imports, grammar construction, first-touch allocation)
and then repeated. The speed-ups are torchvision-on-meta time / resdsl time, warm and cold.

The project's target is a warm speed-up of at least 50x on resnet50 over that route; the
script exits with status 1 when it misses that target (when resnet50 is among the models
measured) or when a count differs.

    python benchmarks/frontend.py
    python benchmarks/frontend.py --models resnet18 resnet50 --repeats 50
"""

from __future__ import annotations

import argparse
import importlib.util
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
HAS_FVCORE = importlib.util.find_spec("fvcore") is not None


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
    fvcore_s: float | None = None  # None: fvcore not installed (or failed: fvcore_note)
    fvcore_macs: int | None = None
    fvcore_note: str = ""

    @property
    def ratio_warm(self) -> float:
        return self.torchvision_s / self.resdsl_warm_s

    @property
    def ratio_cold(self) -> float:
        return self.torchvision_s / self.resdsl_cold_s

    @property
    def macs_diff_pct(self) -> float:
        return 100.0 * (self.resdsl_macs - self.torchvision_macs) / self.torchvision_macs

    @property
    def counts_agree(self) -> bool:
        return (self.resdsl_params, self.resdsl_macs) == (
            self.torchvision_params,
            self.torchvision_macs,
        )


def median_time(fn: Callable[[], object], repeats: int, setup: Callable[[], None] | None = None):
    """Run ``fn`` once to warm up, then ``repeats`` times; return (median CPU seconds of this
    process, last result). ``setup`` runs before every call (the warm-up included), untimed.
    """
    if setup is not None:
        setup()
    result = fn()
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return statistics.median(times), result


def resdsl_counts(path: Path) -> tuple[int, int]:
    """What a search script does with resdsl: load the spec, read params and MACs."""
    net = resdsl.load(path)
    return net.num_params, net.macs


def meta_model(model: str) -> torch.nn.Module:
    with torch.device("meta"):
        return getattr(torchvision.models, model)()


def torchvision_counts(model: str) -> tuple[int, int]:
    """The strongest PyTorch route: build on the meta device, count, count MACs on meta."""
    module = meta_model(model)
    params = sum(p.numel() for p in module.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(torch.empty(1, 3, 224, 224, device="meta"))
    return params, counter.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per MAC


def fvcore_counts(model: str) -> tuple[int, int]:
    """fvcore's route on the same meta model: its parameter count and FlopCountAnalysis."""
    from fvcore.nn import FlopCountAnalysis, parameter_count

    module = meta_model(model).eval()
    params = parameter_count(module)[""]
    analysis = FlopCountAnalysis(module, torch.empty(1, 3, 224, 224, device="meta"))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return params, int(analysis.total())  # fvcore's "flops" are multiply-adds


def clear_parse_cache() -> None:
    resdsl.loader._CACHE.clear()


def measure_resdsl(model: str, repeats: int) -> tuple[float, float, int, int]:
    """(warm seconds, cold seconds, params, MACs) for ``examples/<model>.res``."""
    path = EXAMPLES / f"{model}.res"
    warm_s, (params, macs) = median_time(lambda: resdsl_counts(path), repeats)
    cold_s, _ = median_time(lambda: resdsl_counts(path), repeats, setup=clear_parse_cache)
    return warm_s, cold_s, params, macs


def measure_fvcore(model: str, repeats: int) -> tuple[float | None, int | None, str]:
    if not HAS_FVCORE:
        return None, None, "not installed"
    try:
        seconds, (_, macs) = median_time(lambda: fvcore_counts(model), repeats)
    except Exception as e:  # report it in the table; the reference route still counts
        return None, None, f"failed: {type(e).__name__}: {str(e)[:80]}"
    return seconds, macs, ""


def measure_all(models: list[str], repeats: int, torchvision_repeats: int) -> list[Result]:
    results = []
    for m in models:
        warm_s, cold_s, params, macs = measure_resdsl(m, repeats)
        tv_s, (tv_params, tv_macs) = median_time(lambda m=m: torchvision_counts(m),
                                                 torchvision_repeats)  # fmt: skip
        fv_s, fv_macs, note = measure_fvcore(m, torchvision_repeats)
        results.append(
            Result(m, warm_s, cold_s, tv_s, params, macs, tv_params, tv_macs, fv_s, fv_macs, note)
        )
    return results


def print_table(results: list[Result]) -> None:
    header = (
        f"{'model':<10} {'warm ms':>8} {'cold ms':>8} {'tv meta ms':>10} {'x warm':>7} "
        f"{'x cold':>7} {'fvcore ms':>13} {'params':>12} {'params eq':>9} {'resdsl MACs':>15} "
        f"{'tv MACs':>15} {'MACs diff':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        params_equal = "yes" if r.resdsl_params == r.torchvision_params else "NO"
        fv = f"{r.fvcore_s * 1e3:.1f}" if r.fvcore_s is not None else r.fvcore_note[:13]
        print(
            f"{r.model:<10} {r.resdsl_warm_s * 1e3:>8.2f} {r.resdsl_cold_s * 1e3:>8.2f} "
            f"{r.torchvision_s * 1e3:>10.1f} {r.ratio_warm:>6.1f}x {r.ratio_cold:>6.1f}x "
            f"{fv:>13} {r.resdsl_params:>12,} {params_equal:>9} "
            f"{r.resdsl_macs:>15,} {r.torchvision_macs:>15,} {r.macs_diff_pct:>8.3f}%"
        )
    print(
        "(x warm, x cold: tv meta ms / resdsl ms, i.e. against torchvision's model built on "
        "the meta device and counted with FlopCounterMode, one thread, CPU time)"
    )
    for r in results:
        if r.fvcore_note and r.fvcore_note != "not installed":
            print(f"note: {r.model}: fvcore {r.fvcore_note}")
        if r.fvcore_macs is not None and r.fvcore_macs != r.torchvision_macs:
            print(f"note: {r.model}: fvcore counts {r.fvcore_macs:,} MACs")
        if r.resdsl_params != r.torchvision_params:
            print(
                f"note: {r.model}: resdsl counts {r.resdsl_params:,} params, "
                f"torchvision {r.torchvision_params:,}"
            )


def check_target(results: list[Result]) -> int:
    """Exit status: 1 if a count differs or the resnet50 warm speed-up is under the target."""
    status = 0
    if not all(r.counts_agree for r in results):
        print("\nFAIL: resdsl's and torchvision's counts differ")
        status = 1
    target = next((r for r in results if r.model == TARGET_MODEL), None)
    if target is None:
        print(f"\n{TARGET_MODEL} not measured: speed-up target not checked")
        return status
    met = target.ratio_warm >= TARGET_RATIO
    print(
        f"\n{'OK' if met else 'FAIL'}: {TARGET_MODEL} warm speed-up over torchvision on the "
        f"meta device + FlopCounterMode is {target.ratio_warm:.1f}x (target "
        f"{TARGET_RATIO:.0f}x{'' if met else ': NOT met'}; resdsl "
        f"{target.resdsl_warm_s * 1e3:.2f} ms, torchvision {target.torchvision_s * 1e3:.1f} "
        f"ms); cold (spec parsed again): {target.ratio_cold:.1f}x"
    )
    return status if met else 1


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
        default=10,
        help="timed repeats for torchvision and fvcore (default 10)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.torchvision_repeats < 1:
        parser.error("repeat counts must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    fvcore = "fvcore installed" if HAS_FVCORE else "fvcore not installed"
    print(
        f"resdsl {resdsl.__version__} | "
        f"torch {torch.__version__} | torchvision {torchvision.__version__} | {fvcore} | "
        f"{torch.get_num_threads()} thread | CPU time (time.process_time), median of "
        f"{args.repeats} (resdsl) / {args.torchvision_repeats} (torchvision) repeats after 1 "
        "warm-up\n"
    )
    results = measure_all(args.models, args.repeats, args.torchvision_repeats)
    print_table(results)
    return check_target(results)


if __name__ == "__main__":
    sys.exit(main())
