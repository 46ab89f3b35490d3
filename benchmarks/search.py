"""Search benchmark: scoring random candidates of a ResNet space with resdsl vs. PyTorch.

A search script draws a candidate, builds it, checks that it is valid and counts its
parameters and MACs, thousands of times. This script times that loop on
``examples/search/resnet_space.res`` (5,184 candidates) on one core, in CPU time of the
process that runs it (``time.process_time``; the machine is shared, the wall clock would
also count other processes' turns):

* **warm, distinct random candidates** (the target): ``space.sample(rng)``, then
  ``space.build(a)``, ``net.num_params`` and ``net.macs``, for ``--random`` candidates that
  are all different from each other and from the ``--warmup`` candidates built before them
  (a repeated draw is drawn again, untimed). The space is loaded once, as a search holds
  it. What that process has cached when the timing starts is printed: the fragment cache
  (block instances of earlier candidates, replayed when a new candidate has the same
  instance with the same argument shapes: resdsl/search/incremental.py), the per-layer
  count memo and the choice-domain memo. The fragment cache's hits and misses during the
  timed candidates are counted and printed.
* **cold, first candidate of a fresh process**: a subprocess imports resdsl, loads the
  space (timed apart), then samples and builds one random candidate and counts it (timed):
  nothing is cached but what the import and the load did. ``--cold`` processes, one seed
  each; the median is reported.
* **empty caches, in a warm process**: the resnet50 candidate (torchvision's resnet50,
  name for name) and the random candidates again, each built after the space's caches are
  emptied (``SearchSpace._init_caches``, untimed): the cost without any fragment reuse.
* PyTorch: ``torchvision.models.resnet.ResNet(Bottleneck, [3, 4, 6, 3])`` built on the
  ``meta`` device (no weights allocated), the sum of ``p.numel()``, and one forward pass of
  a (1, 3, 224, 224) meta tensor under ``torch.utils.flop_counter.FlopCounterMode``
  (FLOPs / 2 = MACs), one torch thread. It has nothing to cache between calls but
  PyTorch's own dispatch state.

The resnet50 candidate is also built in the warm process (after the timed candidates,
none of which is resnet50; median of ``--repeats``), as a search meets it.

Both routes must agree on resnet50's counts. Targets: at least 200 distinct random
candidates per second, warm; and the resnet50 candidate in the warm process at least 50x
faster than the PyTorch route (the ratio with empty caches is printed beside it, met or
not).

**The whole NAS-Bench-201 space** (``examples/search/nas_bench_201.res``, 15,625 cells):
``space.enumerate()`` and ``space.counts(a)`` (parameters, MACs and output shapes without
building: resdsl/search/counting.py, replay.py) for every candidate, from a freshly loaded
space, in CPU time; then again in another fresh space with Python's garbage collector
disabled, to show what it costs. The reference route is xautodl's (``pip install xautodl``):
``TinyNetwork(C=16, N=5, genotype, 10)`` built with its weights and its parameters summed,
for ``--nb201-reference`` seeded candidates, extrapolated to the whole space; its MACs
(``FlopCounterMode``, one forward pass) are timed beside it. The counts of those
candidates must equal the reference's. Targets: the whole space in at most 10 s, and at
least 50x faster than building the reference models (without their forward pass).
Without xautodl the case is skipped (and said so). ``--classes`` also counts the space's
canonical classes under each equivalence (``space.fingerprint(a, canonical=True)``; the
benchmark's convention must give its 6,466 and 12,751).

The exit status is 1 when a target is missed or counts differ.

    python benchmarks/search.py
    python benchmarks/search.py --random 500 --warmup 500 --cold 3      # quicker
    python benchmarks/search.py --no-resnet --classes                   # NAS-Bench-201 only
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
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
NB201 = ROOT / "examples" / "search" / "nas_bench_201.res"
NB201_EDGES = ("edge1_0", "edge2_0", "edge2_1", "edge3_0", "edge3_1", "edge3_2")
TARGET_NB201_S, TARGET_NB201_RATIO = 10.0, 50.0

# The first candidate of a fresh process: run by ``python -c COLD SEED``; prints JSON.
COLD = f"""
import json, random, sys, time
start = time.process_time()
import resdsl
imported = time.process_time()
space = resdsl.load_space({str(SPACE)!r})
loaded = time.process_time()
a = space.sample(random.Random(int(sys.argv[1])))
net = space.build(a)
counts = (net.num_params, net.macs)
done = time.process_time()
print(json.dumps(dict(import_s=imported - start, load_s=loaded - imported,
                      first_s=done - loaded, macs=counts[1])))
"""


def key(assignment) -> tuple:
    return tuple(sorted(assignment.items()))


def distinct_candidates(space, rng: random.Random, n: int, seen: set) -> list[dict]:
    """``n`` candidates drawn with ``space.sample(rng)``, none of them in ``seen`` (updated)."""
    out = []
    if n > space.size - len(seen):
        raise SystemExit(f"the space has {space.size:,} candidates: too few for {n} more")
    while len(out) < n:
        a = space.sample(rng)
        if key(a) not in seen:
            seen.add(key(a))
            out.append(a)
    return out


def score(space, assignment) -> tuple[int, int]:
    net = space.build(assignment)
    return net.num_params, net.macs


class CountingCache:
    """Counts the hits and misses of the space's fragment cache (wraps its ``get``)."""

    def __init__(self, space) -> None:
        self.cache = space._fragments
        self.hits = self.misses = 0
        get = self.cache.get

        def counting_get(k):
            fragment = get(k)
            if fragment is None:
                self.misses += 1
            else:
                self.hits += 1
            return fragment

        self.cache.get = counting_get


def warm_rate(space, timed: list[dict]) -> tuple[float, tuple[int, int]]:
    """Candidates per CPU second over ``timed`` (each built once), and the fragment cache's
    (hits, misses) meanwhile."""
    counter = CountingCache(space)
    start = time.process_time()
    for a in timed:
        score(space, a)
    elapsed = time.process_time() - start
    return len(timed) / elapsed, (counter.hits, counter.misses)


def resnet50_warm(space, repeats: int) -> tuple[float, tuple[int, int]]:
    """Median CPU seconds of building the resnet50 candidate in the warm process (none of the
    candidates before was resnet50), and the fragment cache's (hits, misses) meanwhile. The
    space's record of the last net a budgeted ``sample`` built is cleared before each build
    (untimed; without a budget it is never set), so no build is answered whole."""
    counter, times = CountingCache(space), []
    for _ in range(repeats):
        space._last = None
        start = time.process_time()
        score(space, RESNET50)
        times.append(time.process_time() - start)
    return statistics.median(times), (counter.hits, counter.misses)


def empty_cache_times(space, candidates: list[dict]) -> list[float]:
    """CPU seconds of each candidate built right after the space's caches are emptied."""
    times = []
    for a in candidates:
        space._init_caches()  # untimed: fragments, count memo, domain memo, last net
        start = time.process_time()
        score(space, a)
        times.append(time.process_time() - start)
    return times


def cold_runs(n: int) -> list[dict]:
    """The first candidate of ``n`` fresh processes (seeds 0..n-1)."""
    runs = []
    for seed in range(n):
        done = subprocess.run(
            [sys.executable, "-c", COLD, str(seed)], capture_output=True, text=True, check=True,
            cwd=ROOT,
        )  # fmt: skip
        runs.append(json.loads(done.stdout))
    return runs


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median CPU seconds of ``repeats`` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return statistics.median(times), result


def torch_route() -> tuple[int, int]:
    with torch.device("meta"):
        model = ResNet(Bottleneck, [3, 4, 6, 3])
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    return params, counter.get_total_flops() // 2


def whole_space(gc_enabled: bool) -> tuple[float, list]:
    """CPU seconds of enumerating and counting every NAS-Bench-201 candidate in a fresh
    space, and the counts."""
    space = resdsl.load_space(NB201)
    enabled = gc.isenabled()
    if not gc_enabled:
        gc.disable()
    try:
        start = time.process_time()
        counts = [space.counts(a) for a in space.enumerate()]
        elapsed = time.process_time() - start
    finally:
        if enabled:
            gc.enable()
    return elapsed, counts


def reference_route(candidates: list[dict]) -> tuple[float, float, list[tuple[int, int]]]:
    """Mean CPU seconds per candidate of building xautodl's model with its weights and
    summing its parameters, of its MACs by one counted forward pass, and the counts."""
    from xautodl.models.cell_infers.tiny_network import TinyNetwork
    from xautodl.models.cell_searchs.genotypes import Structure

    build_s = macs_s = 0.0
    counts = []
    for a in candidates:
        e = [a[n] for n in NB201_EDGES]
        genotype = Structure([((e[0], 0),), ((e[1], 0), (e[2], 1)),
                              ((e[3], 0), (e[4], 1), (e[5], 2))])  # fmt: skip
        start = time.process_time()
        model = TinyNetwork(16, 5, genotype, 10)
        params = sum(p.numel() for p in model.parameters())
        built = time.process_time()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, 32, 32))
        macs_s += time.process_time() - built
        build_s += built - start
        counts.append((params, counter.get_total_flops() // 2))
    return build_s / len(candidates), macs_s / len(candidates), counts


def nas_bench_201(args: argparse.Namespace) -> bool:
    """The whole-space case; prints its rows and returns whether its targets are met."""
    try:
        import xautodl  # noqa: F401
    except ImportError:
        print("\nNAS-Bench-201: skipped (pip install xautodl for the reference route)")
        return True
    ours_s, counts = whole_space(gc_enabled=True)
    ours_nogc_s, _ = whole_space(gc_enabled=False)
    space = resdsl.load_space(NB201)
    rng = random.Random(args.seed)
    sample = [space.sample(rng) for _ in range(args.nb201_reference)]
    build_s, macs_s, theirs = reference_route(sample)
    index = {key(a): i for i, a in enumerate(space.enumerate())}
    agree = all(
        (counts[index[key(a)]].params, counts[index[key(a)]].macs) == t
        for a, t in zip(sample, theirs, strict=True)
    )
    n = space.size
    ratio, ratio_macs = build_s * n / ours_s, (build_s + macs_s) * n / ours_s
    print(f"\nNAS-Bench-201: the whole space ({n:,} candidates), CPU time")
    print(f"{'route':<66} {'s':>8} {'ms each':>8}")
    for label, total in [
        ("resdsl: enumerate() + counts() (params, MACs, shapes)", ours_s),
        ("resdsl: the same, garbage collector disabled", ours_nogc_s),
        (f"xautodl: build with weights + params (mean of {len(sample)}, x{n:,})", build_s * n),
        ("xautodl: + MACs by a counted forward pass", (build_s + macs_s) * n),
    ]:
        print(f"{label:<66} {total:>8.2f} {total / n * 1e3:>8.3f}")
    met = ours_s <= TARGET_NB201_S and ratio >= TARGET_NB201_RATIO and agree
    print(f"counts of the {len(sample)} reference candidates: "
          f"{'equal' if agree else 'DIFFERENT'}")  # fmt: skip
    if args.classes:
        met = classes(space) and met
    print(f"whole space in {ours_s:.2f} s (target {TARGET_NB201_S:.0f} s); {ratio:.0f}x faster "
          f"than building the reference models (target {TARGET_NB201_RATIO:.0f}x), "
          f"{ratio_macs:.0f}x with their MACs; garbage collection costs "
          f"{(ours_s - ours_nogc_s) / ours_s:.0%}: {'met' if met else 'NOT met'}")  # fmt: skip
    return met


def classes(space) -> bool:
    """The canonical classes of the whole space under each equivalence; whether the
    benchmark's convention gives the benchmark's own counts."""
    print(f"{'canonical classes (space.fingerprint(a, canonical=True, ...))':<66} "
          f"{'classes':>8} {'s':>8}")  # fmt: skip
    ok = True
    for label, options, expected in [
        ('convention="benchmark" (NAS-Bench-201: 6,466)', dict(convention="benchmark"), 6466),
        ('convention="benchmark", prune_zeros=False (12,751)',
         dict(convention="benchmark", prune_zeros=False), 12751),
        ('convention="function" (the default)', {}, None),
        ("convention=\"function\", prune_zeros=False", dict(prune_zeros=False), None),
    ]:  # fmt: skip
        start = time.process_time()
        found = {space.fingerprint(a, True, **options) for a in space.enumerate()}
        elapsed = time.process_time() - start
        ok = ok and (expected is None or len(found) == expected)
        print(f"  {label:<64} {len(found):>8,} {elapsed:>8.1f}")
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--random", type=int, default=1000,
                   help="timed distinct random candidates (default: 1000)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=1000,
                   help="distinct candidates built before them (default: 1000)")  # fmt: skip
    p.add_argument("--empty", type=int, default=100,
                   help="random candidates built with empty caches (default: 100)")  # fmt: skip
    p.add_argument("--cold", type=int, default=5, help="fresh processes (default: 5)")
    p.add_argument("--repeats", type=int, default=20,
                   help="resnet50 builds with empty caches (default: 20)")  # fmt: skip
    p.add_argument("--torch-repeats", type=int, default=10, help="PyTorch runs (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nb201-reference", type=int, default=30, metavar="N",
                   help="NAS-Bench-201 reference models built (default: 30)")  # fmt: skip
    p.add_argument("--no-nb201", action="store_true", help="skip the NAS-Bench-201 case")
    p.add_argument("--no-resnet", action="store_true", help="only the NAS-Bench-201 case")
    p.add_argument("--classes", action="store_true",
                   help="also count NAS-Bench-201's canonical classes (minutes)")  # fmt: skip
    args = p.parse_args(argv)
    if min(args.random, args.cold, args.repeats, args.torch_repeats, args.empty,
           args.nb201_reference) < 1:  # fmt: skip
        p.error("counts must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # one core for both routes
    if args.no_resnet:
        ok = nas_bench_201(args)
        print("OK" if ok else "FAIL: counts differ or a target is missed")
        return 0 if ok else 1
    cold = cold_runs(args.cold)  # first: this process's imports do not matter to them
    space = resdsl.load_space(SPACE)
    rng, seen = random.Random(args.seed), {key(RESNET50)}  # resnet50 is timed apart
    warmup = distinct_candidates(space, rng, args.warmup, seen)
    timed = distinct_candidates(space, rng, args.random, seen)
    for a in warmup:
        score(space, a)
    cached = (len(space._fragments.entries), len(space._counts), len(space._values_memo))
    rate, counter = warm_rate(space, timed)
    r50_warm_s, r50_counter = resnet50_warm(space, args.repeats)  # before emptying the caches
    empty_random = empty_cache_times(space, timed[: args.empty])
    r50_s = statistics.median(empty_cache_times(space, [RESNET50] * (args.repeats + 1))[1:])
    ours = score(space, RESNET50)
    theirs_s, theirs = median_time(torch_route, args.torch_repeats)

    cold_first = statistics.median(r["first_s"] for r in cold)
    cold_load = statistics.median(r["load_s"] for r in cold)
    cold_import = statistics.median(r["import_s"] for r in cold)
    empty_s = statistics.mean(empty_random)
    ratio, ratio_empty = theirs_s / r50_warm_s, theirs_s / r50_s
    print(f"resdsl {resdsl.__version__} | torch {torch.__version__} | 1 thread | CPU time "
          f"(time.process_time) | space {space.size:,} candidates\n")  # fmt: skip

    def row(label: str, seconds: float, rate: bool = True) -> None:
        print(f"{label:<66} {seconds * 1e3:>8.3f} " + (f"{1 / seconds:>8.0f}" if rate else ""))

    print(f"{'route':<66} {'ms':>8} {'cand/s':>8}")
    row(f"resdsl, warm: distinct random candidates (mean of {len(timed)})", 1 / rate)
    row(f"resdsl, empty caches: random candidates (mean of {len(empty_random)})", empty_s)
    row(f"resdsl, cold: first candidate of a fresh process (median of {len(cold)})", cold_first)
    row("  before it, in that process: import resdsl", cold_import, rate=False)
    row("  before it, in that process: resdsl.load_space", cold_load, rate=False)
    row("resdsl, warm: resnet50 candidate (median)", r50_warm_s)
    row("resdsl, empty caches: resnet50 candidate (median)", r50_s)
    row("PyTorch: meta-device ResNet-50 + FlopCounterMode (median)", theirs_s)
    print(f"\ncached before the warm timing (after {len(warmup)} other distinct candidates): "
          f"{cached[0]} fragments (block instances), {cached[1]} layer counts, {cached[2]} "
          f"choice domains; during it the fragment cache hit {counter[0]} times and missed "
          f"{counter[1]} (new instances elaborated); building resnet50 after them "
          f"(median of {args.repeats}, none of them resnet50): {r50_counter[0]} hits, "
          f"{r50_counter[1]} misses")  # fmt: skip
    print(f"counts of resnet50: resdsl {ours[0]:,} params {ours[1]:,} MACs; "
          f"PyTorch {theirs[0]:,} params {theirs[1]:,} MACs")  # fmt: skip
    print(f"distinct random candidates per second, warm: {rate:.0f} (target {TARGET_RATE:.0f}): "
          f"{'met' if rate >= TARGET_RATE else 'NOT met'}")  # fmt: skip
    print(
        f"speed-up over PyTorch, resnet50 candidate in the warm process: {ratio:.1f}x (target "
        f"{TARGET_RATIO:.0f}x): {'met' if ratio >= TARGET_RATIO else 'NOT met'}; with empty "
        f"caches: {ratio_empty:.1f}x ({'met' if ratio_empty >= TARGET_RATIO else 'NOT met'})"
    )
    ok = ours == theirs and ratio >= TARGET_RATIO and rate >= TARGET_RATE
    if not args.no_nb201:
        ok = nas_bench_201(args) and ok
    print("OK" if ok else "FAIL: counts differ or a target is missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
