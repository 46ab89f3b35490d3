"""Compiled-model benchmark: resdsl's TVM CPU artifact vs. PyTorch eager and onnxruntime.

For each model (by default ResNet-18 and ResNet-50; ``--models`` adds MobileNetV2,
EfficientNet-B0, RegNetY-400MF, ConvNeXt-T and ViT-B/16, or ``all``) and batch size it
builds the torchvision model with seeded weights, compiles ``examples/<model>.res`` for
``--target llvm`` with exactly those
weights (``compile_network(..., weights=torchvision_model)``; the spec's names are
torchvision's, so its state_dict loads strictly) and measures the median time of one
forward pass of the same seeded input through:

* resdsl: the untuned artifact, run through ``resdsl.runtime.load(dir)`` on NumPy arrays
  (the time includes copying the input in and the output out, which is what a caller pays);
* resdsl tuned: the same, compiled with a MetaSchedule database, when ``--tuned-db DIR``
  holds tuning records (``database_workload.json`` + ``database_tuning_record.json``) in
  ``DIR/<model>-b<batch>/`` or ``DIR/<model>/`` (never another model's folder, nor records
  put in ``DIR`` itself, which could be any model's); otherwise skipped;
* resdsl dynamic (with ``--dynamic``): one artifact compiled for every batch from 1 to the
  largest of ``--batches`` (``compile --batch 1..N``), run at each batch size; its ratio to
  the fixed-batch artifact is issue 20's target (within 10%);
* PyTorch eager: ``model.eval()`` under ``torch.no_grad()``;
* onnxruntime: the model exported with ``torch.onnx.export`` (the dynamo-based exporter when
  onnxscript is installed, else, or when that fails, the TorchScript one with
  ``dynamo=False``), one export per (model, batch) with the batch fixed, as resdsl's
  artifact is compiled for one batch size (so both may specialise every shape), run by an
  ``InferenceSession`` on the ``CPUExecutionProvider``.

The weights: ``torch.manual_seed(seed)`` then torchvision's own initialisation, and then the
batch-norm affine parameters and running statistics are redrawn from a seeded generator
(torchvision initialises them to the identity, which would leave the artifact's batch-norm
folding untested). Input: ``numpy.random.default_rng(seed).standard_normal``.

Each engine is warmed up once (first-touch allocation, thread pools, onnxruntime's
arena). Then the engines of one (model, batch) are timed in rounds, one call of each per
round, so that load from other processes on a shared machine falls on all of them alike;
each engine's figure is the median over the rounds. The number of rounds adapts: at most
``--repeats``, at least ``--min-repeats``, and otherwise as many as fit in ``--budget``
seconds, judged from the warm-up calls; each timed call starts after a pause (``--settle``,
0.5 s), so that idle worker threads of the engine before have stopped spinning. Every
engine's output is compared with PyTorch eager's (max abs diff, and that relative to the
largest output); a difference over 1e-3 relative is flagged and makes the exit status 1.

GFLOP/s = 2 * MACs * batch / latency, with MACs from ``resdsl.load(spec).macs`` (a direct
convolution's count: resdsl's Winograd kernels do fewer multiplies, so its figure is an
effective rate). The
machine's peak is measured once, first, as the best of ``--peak-repeats`` runs of a kernel
that does nothing but independent float32 vector FMAs on registers, on as many threads as
the artifacts use; "% peak" is GFLOP/s over that. PyTorch's 2048^3 matrix product (MKL) is
printed next to it. Compile times are wall times of ``compile_network`` (lowering, TVM,
export).

Threads: every engine runs on the same number of threads, printed in the header and above
the tables: ``--threads N``, by default the physical cores this process may use
(``resdsl.runtime.physical_cores()``), set for all three (``TVM_NUM_THREADS``,
``torch.set_num_threads``, onnxruntime's intra-op threads).
Times are wall times (``time.perf_counter``); on a shared machine ``--threads 1 --clock cpu``
measures the calling thread's CPU time instead, which load from other processes disturbs
far less (every engine then runs in the calling thread).

    python benchmarks/compiled.py
    python benchmarks/compiled.py --models resnet18 --batches 1 --repeats 5
    python benchmarks/compiled.py --threads 1 --clock cpu     # on a busy machine
    python benchmarks/compiled.py --tuned-db tuning/          # add the tuned artifact
    python benchmarks/compiled.py --no-winograd               # resdsl's direct 3x3 kernels
    python benchmarks/compiled.py --batches 8 --micro-batch 4 # choose the micro-batch
    python benchmarks/compiled.py --dynamic                   # add the dynamic-batch artifact
    python benchmarks/compiled.py --models mobilenet_v2 --profile   # where the time goes

``--no-winograd`` and ``--micro-batch N`` build resdsl's artifacts with those
``BuildOptions`` (``resdsl compile``'s options of the same names), to measure what each
part of the pipeline gives.

``--profile [N]`` adds, after each (model, batch) is timed, where the time goes: resdsl's
artifact run ``--profile-runs`` more times with the Relax VM's instrument hook
(``VirtualMachine.set_instrument``) timing every call the VM makes (the fused kernels, and its
builtins such as allocations), and onnxruntime run as often in a second session with
``SessionOptions.enable_profiling`` (its per-node kernel times). For each engine the top N
(default 15) functions or nodes are printed, with time per forward pass (the same clock as
the tables), share of the summed times, calls per pass and the argument shapes.
onnxruntime's node times are its own wall times; on a busy machine they sum to more than a
pass's CPU time, so they are scaled to sum to the pass's time on the tables' clock (their
unscaled sum is printed). The instrumented runs are not part of the timed rounds, so the
tables are unchanged.

Exits 0 when every output agrees with PyTorch eager within 1e-3 relative, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision

import resdsl
import resdsl.runtime

DEFAULT_MODELS = ["resnet18", "resnet50"]
# The zoo's other families (issue 19): depthwise and grouped convolutions, SiLU, hard-swish and
# ReLU6 epilogues, squeeze-excitation, channel layer norms, attention. --models picks them.
MODELS = [
    *DEFAULT_MODELS, "mobilenet_v2", "efficientnet_b0", "regnet_y_400mf", "convnext_tiny",
    "vit_b_16",
]  # fmt: skip
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MISMATCH_REL = 1e-3  # flag an engine whose output differs from eager's by more than this

# What timed regions are measured with: wall time, or with --threads 1 --clock cpu the calling
# thread's CPU time (every engine then runs in the calling thread), which other processes on
# a shared machine disturb much less.
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = time.perf_counter
# A pause before each timed call: the previous engine's idle worker threads (OpenMP's,
# onnxruntime's, TVM's) spin for a while after a call before they sleep; they should not
# steal this one's cores. 20 ms was too short (docs/performance.md, "A correction to
# earlier figures").
SETTLE_S = 0.5


@dataclass
class Timing:
    engine: str
    median_s: float | None = None  # None: skipped
    repeats: int = 0
    max_abs_diff: float | None = None  # vs. PyTorch eager
    rel_diff: float | None = None
    note: str = ""


@dataclass
class Case:
    model: str
    batch: int
    macs: int  # per sample
    compile_s: dict[str, float] = field(default_factory=dict)
    timings: dict[str, Timing] = field(default_factory=dict)
    artifacts: dict[str, object] = field(default_factory=dict, repr=False)  # for --profile

    def gflops(self, t: Timing) -> float | None:
        if t.median_s is None:
            return None
        return 2.0 * self.macs * self.batch / t.median_s / 1e9

    def ratio(self, a: str, b: str) -> float | None:
        ta, tb = self.timings.get(a), self.timings.get(b)
        if not ta or not tb or ta.median_s is None or tb.median_s is None:
            return None
        return ta.median_s / tb.median_s


# --------------------------------------------------------------------------- weights, input


def seeded_torchvision(model: str, seed: int) -> torch.nn.Module:
    """torchvision's model, initialised under ``seed``, batch norms redrawn; in eval mode.

    A layer torchvision initialises to zeros (ViT's classifier head) is redrawn too, or the
    output would be zero whatever the network computes.
    """
    torch.manual_seed(seed)
    module = getattr(torchvision.models, model)()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Linear) and not m.weight.any():
                m.weight.copy_(0.02 * torch.randn(m.weight.shape, generator=gen))
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.rand(c, generator=gen) - 0.1)
                m.running_mean.copy_(0.2 * torch.rand(c, generator=gen) - 0.1)
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
    return module.eval()


def seeded_input(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 224, 224)).astype(np.float32)


# --------------------------------------------------------------------------- timing


def matmul_peak(repeats: int) -> float:
    """GFLOP/s of PyTorch's float32 2048^3 matrix product (MKL): the best of ``repeats``."""
    n = 2048
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    best = math.inf
    for _ in range(repeats + 1):  # the first one warms up
        start = clock()
        torch.mm(a, b, out=out)
        best = min(best, clock() - start)
    return 2.0 * n**3 / best / 1e9


def fma_peak(repeats: int, lanes: int) -> float:
    """GFLOP/s of independent vector FMAs on registers, on every TVM thread: the ceiling.

    Each thread keeps 12 vector accumulators (more than an FMA's latency times the FMA
    units, so the units never wait) and updates them 200,000 times.
    """
    import tvm
    from tvm.script import tirx as T  # noqa: N812 - the name TVM itself uses

    threads, chains, steps = tvm.get_global_func("runtime.NumThreads")(), 12, 200_000

    @T.prim_func
    def kernel(
        xy: T.Buffer((2, lanes), "float32"), out: T.Buffer((threads, chains, lanes), "float32")
    ):
        T.func_attr({"global_symbol": "kernel", "tirx.noalias": True})
        for t in T.parallel(threads):
            acc = T.decl_buffer((chains, lanes), "float32", scope="local")
            for j in T.unroll(chains):
                for v in T.vectorized(lanes):
                    acc[j, v] = xy[1, v]
            for _ in range(steps):
                for j in T.unroll(chains):
                    for v in T.vectorized(lanes):
                        acc[j, v] = acc[j, v] * xy[0, v] + xy[1, v]
            for j in T.unroll(chains):
                for v in T.vectorized(lanes):
                    out[t, j, v] = acc[j, v]

    from resdsl.backends.tvm import BuildOptions

    lib = tvm.tirx.build(tvm.IRModule({"kernel": kernel}), target=BuildOptions().tvm_target())
    xy = tvm.runtime.tensor(np.full((2, lanes), 0.5, np.float32))
    out = tvm.runtime.tensor(np.zeros((threads, chains, lanes), np.float32))
    best = math.inf
    for _ in range(repeats + 1):
        start = clock()
        lib["kernel"](xy, out)
        best = min(best, clock() - start)
    return 2.0 * threads * chains * lanes * steps / best / 1e9


def measure_together(
    engines: dict[str, Callable[[], np.ndarray]],
    max_repeats: int,
    min_repeats: int,
    budget_s: float,
    settle_s: float = SETTLE_S,
) -> dict[str, tuple[float, int, np.ndarray]]:
    """Warm each engine up, then time them in rounds (one call of each per round).

    Returns, per engine, (median seconds, rounds, its output).
    """
    outputs, warm = {}, 0.0
    for key, fn in engines.items():
        start = clock()
        outputs[key] = fn()
        warm += clock() - start
    rounds = max(min_repeats, min(max_repeats, int(budget_s / max(warm, 1e-9))))
    times: dict[str, list[float]] = {key: [] for key in engines}
    for _ in range(rounds):
        for key, fn in engines.items():
            time.sleep(settle_s)
            start = clock()
            outputs[key] = fn()
            times[key].append(clock() - start)
    return {key: (statistics.median(times[key]), rounds, outputs[key]) for key in engines}


def compare(timing: Timing, out: np.ndarray, reference: np.ndarray) -> None:
    diff = float(np.abs(out.astype(np.float32) - reference).max())
    timing.max_abs_diff = diff
    timing.rel_diff = diff / max(float(np.abs(reference).max()), 1e-30)


# --------------------------------------------------------------------------- engines


def compile_artifact(
    net, module, batch: int | tuple[int, int], out_dir: str, args, database=None
) -> float:
    """Compile for a fixed ``batch``, or for every batch of a (low, high) range."""
    from resdsl.backends.tvm import BuildOptions, compile_network

    options = BuildOptions(
        target="llvm",
        batch=batch if isinstance(batch, int) else 1,
        batch_range=batch if isinstance(batch, tuple) else None,
        winograd=not args.no_winograd,
        micro_batch=args.micro_batch,
    )
    start = time.perf_counter()
    compile_network(net, out_dir, options, weights=module, database=database)
    return time.perf_counter() - start


def find_tuning_db(root: str | None, model: str, batch: int):
    """A MetaSchedule JSONDatabase for (model, batch) under ``root``, or a reason why not.

    Only ``root/<model>-b<batch>/`` and ``root/<model>/`` are looked in: records in another
    model's folder, or in ``root`` itself (which could be any model's), are never used, so
    that a "tuned" figure is never an untuned build that found no records for its kernels.
    """
    if root is None:
        return None, "no --tuned-db given"
    for d in (Path(root) / f"{model}-b{batch}", Path(root) / model):
        records = d / "database_tuning_record.json"
        if (d / "database_workload.json").is_file() and records.is_file():
            if records.stat().st_size == 0:
                return None, f"{records} is empty"
            from tvm.s_tir import meta_schedule as ms

            db = ms.database.JSONDatabase(work_dir=str(d), allow_missing=False)
            if len(db) == 0:
                return None, f"{d} holds no tuning records"
            return db, str(d)
    where = f"{Path(root) / f'{model}-b{batch}'} or {Path(root) / model}"
    if (Path(root) / "database_tuning_record.json").is_file():
        return None, f"no records in {where} (those in {root} itself are not used)"
    return None, f"no MetaSchedule records for {model} in {where}"


def export_onnx(module: torch.nn.Module, path: str, batch: int) -> str:
    """Export for a fixed batch size (no dynamic axis); returns which exporter was used."""
    example = (torch.from_numpy(seeded_input(batch, 0)),)
    quiet = io.StringIO()
    if importlib.util.find_spec("onnxscript") is not None:
        try:
            start = time.perf_counter()
            with warnings.catch_warnings(), redirect_stdout(quiet), redirect_stderr(quiet):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, example, path, input_names=["x"], output_names=["y"],
                    dynamo=True,
                )  # fmt: skip
            return f"dynamo exporter, {time.perf_counter() - start:.1f} s"
        except Exception as e:  # fall back to the TorchScript exporter
            reason = f"dynamo exporter failed ({type(e).__name__}); "
    else:
        reason = "onnxscript not installed; "
    start = time.perf_counter()
    with warnings.catch_warnings(), redirect_stdout(quiet), redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, example, path, input_names=["x"], output_names=["y"], dynamo=False,
        )  # fmt: skip
    return reason + f"TorchScript exporter (dynamo=False), {time.perf_counter() - start:.1f} s"


ENGINES = {
    "resdsl": "resdsl (untuned)",
    "tuned": "resdsl (tuned)",
    "dynamic": "resdsl (dynamic)",
    "eager": "pytorch eager",
    "onnxruntime": "onnxruntime",
}


def run_model(model: str, args: argparse.Namespace, workdir: str) -> list[Case]:
    """Prepare every engine for each batch size of ``model``, then time them together."""
    import onnxruntime as ort

    module = seeded_torchvision(model, args.seed)
    net = resdsl.load(EXAMPLES / f"{model}.res")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    cases = []
    dynamic = compile_dynamic(model, net, module, args, workdir) if args.dynamic else None
    for batch in args.batches:
        onnx_path = os.path.join(workdir, f"{model}-b{batch}.onnx")
        how = export_onnx(module, onnx_path, batch)
        print(f"  {model} b{batch}: onnx export (batch fixed at {batch}): {how}", flush=True)
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        case = Case(model, batch, net.macs)
        x = seeded_input(batch, args.seed)
        xt = torch.from_numpy(x)

        def eager(xt=xt) -> np.ndarray:
            with torch.no_grad():
                return module(xt).numpy()

        engines = {
            "eager": eager,
            "onnxruntime": lambda x=x, s=session: s.run(None, {"x": x})[0],
        }
        engines |= compile_engines(case, net, module, x, args, workdir)
        if dynamic is not None:
            artifact, case.compile_s["dynamic"] = dynamic
            engines["dynamic"] = lambda a=artifact, x=x: a(x)
        timed = measure_together(
            engines, args.repeats, args.min_repeats, args.budget, settle_s=args.settle
        )
        for key in engines:
            t = case.timings.setdefault(key, Timing(ENGINES[key]))
            t.median_s, t.repeats, out = timed[key]
            if key != "eager":
                compare(t, out, timed["eager"][2])
        summary = ", ".join(f"{k} {timed[k][0] * 1e3:.1f} ms" for k in engines)
        print(f"  {model} b{batch}: {summary} ({timed['eager'][1]} rounds)", flush=True)
        if args.profile and "resdsl" in case.artifacts:
            print_profile(f"{model} b{batch}", case.artifacts["resdsl"], x, args)
            print_ort_profile(f"{model} b{batch}", onnx_path, x, args, workdir)
        cases.append(case)
    return cases


def compile_engines(case: Case, net, module, x: np.ndarray, args, workdir: str) -> dict:
    """Compile (timed) and load the untuned artifact, and the tuned one where records exist."""
    import tvm

    engines = {}
    for key in ("resdsl", "tuned"):
        t = case.timings[key] = Timing(ENGINES[key])
        database = None
        if key == "tuned":
            database, where = find_tuning_db(args.tuned_db, case.model, case.batch)
            if database is None:
                t.note = f"skipped: {where}"
                continue
            t.note = f"records from {where}"
        out_dir = os.path.join(workdir, f"{case.model}-b{case.batch}-{key}")
        case.compile_s[key] = compile_artifact(net, module, case.batch, out_dir, args, database)
        artifact = resdsl.runtime.load(out_dir)
        engines[key] = lambda a=artifact: a(x)
        case.artifacts[key] = artifact
        threads = tvm.get_global_func("runtime.NumThreads")()  # the pool starts here
        micro = artifact.meta["micro_batch"]
        print(
            f"  {case.model} b{case.batch}: {ENGINES[key]} compiled in "
            f"{case.compile_s[key]:.1f} s; runs on {threads} TVM threads"
            + (f", {micro} samples at a time" if micro != case.batch else ""),
            flush=True,
        )
    return engines


def compile_dynamic(model: str, net, module, args, workdir: str):
    """The artifact for batches 1 to the largest of ``--batches``, and its compile time."""
    high = max(args.batches)
    out_dir = os.path.join(workdir, f"{model}-dynamic")
    seconds = compile_artifact(net, module, (1, high), out_dir, args)
    artifact = resdsl.runtime.load(out_dir)
    print(
        f"  {model}: {ENGINES['dynamic']} for batches 1..{high} compiled in {seconds:.1f} s; "
        f"up to {artifact.meta['micro_batch']} samples at a time",
        flush=True,
    )
    return artifact, seconds


# --------------------------------------------------------------------------- profiles


@dataclass
class Entry:
    seconds: float = 0.0
    calls: int = 0
    detail: str = ""


def _print_top(title: str, entries: dict[str, Entry], runs: int, total_s: float, top: int):
    """The ``top`` entries by time: ms per pass, share of the summed times, calls per pass."""
    summed = sum(e.seconds for e in entries.values()) / runs
    print(f"  {title}: summed {summed * 1e3:.2f} ms per pass (whole pass {total_s * 1e3:.2f} ms)")
    print(f"    {'ms':>8} {'share':>6} {'calls':>5}  function / node")
    ranked = sorted(entries.items(), key=lambda kv: -kv[1].seconds)
    for name, e in ranked[:top]:
        share = 100 * e.seconds / runs / max(summed, 1e-12)
        print(
            f"    {e.seconds / runs * 1e3:>8.3f} {share:>5.1f}% {e.calls // runs:>5}  "
            f"{name[:60]}  {e.detail}"
        )
    rest = ranked[top:]
    if rest:
        print(f"    {sum(e.seconds for _, e in rest) / runs * 1e3:>8.3f} (the other {len(rest)})")
    sys.stdout.flush()


def print_profile(label: str, artifact, x: np.ndarray, args) -> None:
    """resdsl: time every call the Relax VM makes (``set_instrument``) over a few passes."""
    vm = artifact._vm
    entries: dict[str, Entry] = {}
    started: list[float] = []

    def instrument(func, symbol, before, ret, *call_args):
        if before:
            started.append(clock())
            return 0
        e = entries.setdefault(str(symbol), Entry())
        e.seconds += clock() - started.pop()
        e.calls += 1
        if not e.detail:
            shapes = [tuple(int(d) for d in a.shape) for a in call_args if hasattr(a, "shape")]
            e.detail = " ".join(str(s).replace(" ", "") for s in shapes)
        return 0

    artifact(x)  # warm
    start = clock()
    for _ in range(args.profile_runs):
        artifact(x)
    total = (clock() - start) / args.profile_runs
    vm.set_instrument(instrument)
    try:
        for _ in range(args.profile_runs):
            artifact(x)
    finally:
        vm.set_instrument(None)
    _print_top(f"{label} resdsl profile", entries, args.profile_runs, total, args.profile)


def print_ort_profile(label: str, onnx_path: str, x: np.ndarray, args, workdir: str) -> None:
    """onnxruntime: a second session with ``enable_profiling``; its per-node kernel times."""
    import json

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(workdir, "ort-profile")
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    session.run(None, {"x": x})  # warm: its events are dropped below
    start = clock()
    for _ in range(args.profile_runs):
        session.run(None, {"x": x})
    total = (clock() - start) / args.profile_runs
    with open(session.end_profiling()) as f:
        events = json.load(f)
    entries: dict[str, Entry] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        key = name[: -len("_kernel_time")]
        if key not in entries:  # the warm-up pass: dropped, its shapes kept
            e = entries[key] = Entry()
            a = event.get("args", {})
            shapes = [next(iter(s.values()), None) for s in a.get("input_type_shape", [])]
            e.detail = f"{a.get('op_name', '?')} " + " ".join(
                str(tuple(s)).replace(" ", "") for s in shapes if s is not None
            )
            continue
        entries[key].seconds += event["dur"] * 1e-6
        entries[key].calls += 1
    # its node times are wall times, which a busy machine stretches beyond the tables' CPU
    # time: scaled so that they sum to the timed pass (the shares are its own)
    wall = sum(e.seconds for e in entries.values()) / args.profile_runs
    for e in entries.values():
        e.seconds *= total / max(wall, 1e-12)
    title = f"{label} onnxruntime profile (node wall times {wall * 1e3:.2f} ms, scaled)"
    _print_top(title, entries, args.profile_runs, total, args.profile)


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return (
        missing
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (format(value, spec))
    )


# Issue 7's targets: untuned latency <= 1.5x PyTorch eager within 60 s of compiling; tuned
# latency <= onnxruntime's.
UNTUNED_VS_EAGER, COMPILE_S, TUNED_VS_ORT = 1.5, 60.0, 1.0
# Issue 19's: untuned latency <= onnxruntime's, every model, within 60 s of compiling.
UNTUNED_VS_ORT = 1.0
# Issue 20's: the dynamic-batch artifact within 10% of the fixed-batch one's latency.
DYNAMIC_VS_FIXED = 1.1


def _x(value: float | None, width: int) -> str:
    """A ratio right-aligned in ``width`` columns: ``0.93x``, or ``-`` where there is none."""
    return (_fmt(value, ".2f") + ("" if value is None else "x")).rjust(width)


def _model_width(cases: list[Case]) -> int:
    return max([9, *(len(c.model) for c in cases)])


def print_tables(cases: list[Case], peak: float, threads: int) -> None:
    print(f"every engine on {threads} thread{'s' if threads > 1 else ''}; {clock_name()}")
    w = _model_width(cases)
    header = (
        f"{'model':<{w}} {'batch':>5}  {'engine':<17} {'median ms':>10} {'rounds':>6} "
        f"{'GFLOP/s':>8} {'% peak':>6} {'max|diff| vs eager':>18} {'rel':>9}"
    )
    print(header)
    print("-" * len(header))
    for c in cases:
        for key in ENGINES:
            t = c.timings.get(key)
            if t is None:
                continue
            if t.median_s is None:
                print(f"{c.model:<{w}} {c.batch:>5}  {t.engine:<17} {t.note}")
                continue
            flag = "  MISMATCH" if t.rel_diff is not None and t.rel_diff > MISMATCH_REL else ""
            gflops = c.gflops(t)
            print(
                f"{c.model:<{w}} {c.batch:>5}  {t.engine:<17} {t.median_s * 1e3:>10.1f} "
                f"{t.repeats:>6} {_fmt(gflops, '.1f'):>8} {_fmt(100 * gflops / peak, '.0f'):>6} "
                f"{_fmt(t.max_abs_diff, '.2e', '(reference)'):>18} {_fmt(t.rel_diff, '.1e'):>9}"
                f"{flag}"
            )
    print(
        f"(% peak: of the measured {peak:.1f} GFLOP/s FMA peak. GFLOP/s counts a direct "
        "convolution's multiply-adds; resdsl's Winograd kernels do fewer, so its rate is an "
        "effective one and may pass 100%)\n"
    )
    print_ratios(cases)


def print_ratios(cases: list[Case]) -> None:
    dynamic = any("dynamic" in c.timings for c in cases)
    w = _model_width(cases)
    header = (
        f"{'model':<{w}} {'batch':>5}  {'resdsl/eager':>12} {'resdsl/ort':>10} "
        f"{'tuned/eager':>11} {'tuned/ort':>9} {'compile s':>9} {'tuned compile s':>15}"
        + (f" {'dynamic/fixed':>13} {'dynamic compile s':>17}" if dynamic else "")
    )
    print(header)
    print("-" * len(header))
    for c in cases:
        print(
            f"{c.model:<{w}} {c.batch:>5}  {_x(c.ratio('resdsl', 'eager'), 12)} "
            f"{_x(c.ratio('resdsl', 'onnxruntime'), 10)} "
            f"{_x(c.ratio('tuned', 'eager'), 11)} "
            f"{_x(c.ratio('tuned', 'onnxruntime'), 9)} "
            f"{_fmt(c.compile_s.get('resdsl'), '.1f'):>9} "
            f"{_fmt(c.compile_s.get('tuned'), '.1f'):>15}"
            + (
                f" {_x(c.ratio('dynamic', 'resdsl'), 13)} "
                f"{_fmt(c.compile_s.get('dynamic'), '.1f'):>17}"
                if dynamic
                else ""
            )
        )
    notes = {c.timings["tuned"].note for c in cases if c.timings.get("tuned")}
    for note in sorted(notes):
        print(f"note: resdsl (tuned): {note}")
    print_targets(cases)


def print_targets(cases: list[Case]) -> None:
    """Each target of issue 7 that this run measured: met or not."""
    for c in cases:
        compile_s = c.compile_s.get("resdsl")
        targets = (("target", "eager", UNTUNED_VS_EAGER),
                   ("target (issue 19)", "onnxruntime", UNTUNED_VS_ORT))  # fmt: skip
        for label, peer, bound in targets:
            ratio = c.ratio("resdsl", peer)
            if ratio is None or compile_s is None:
                continue
            met = ratio <= bound and compile_s <= COMPILE_S
            print(
                f"{label} untuned {c.model} b{c.batch}: {ratio:.2f}x {peer} "
                f"(<= {bound}x), compiled in {compile_s:.0f} s (<= {COMPILE_S:.0f} s): "
                f"{'met' if met else 'NOT met'}"
            )
        dynamic = c.ratio("dynamic", "resdsl")
        if dynamic is not None:
            met = "met" if dynamic <= DYNAMIC_VS_FIXED else "NOT met"
            print(
                f"target (issue 20) dynamic {c.model} b{c.batch}: {dynamic:.2f}x the "
                f"fixed-batch artifact (<= {DYNAMIC_VS_FIXED}x): {met}"
            )
        tuned = c.ratio("tuned", "onnxruntime")
        if tuned is not None:
            print(
                f"target tuned {c.model} b{c.batch}: {tuned:.2f}x onnxruntime "
                f"(<= {TUNED_VS_ORT}x): {'met' if tuned <= TUNED_VS_ORT else 'NOT met'}"
            )
    bad = mismatches(cases)
    if bad:
        print(f"FAIL: outputs differ from eager by more than {MISMATCH_REL:g} relative: "
              + ", ".join(bad))  # fmt: skip
    else:
        print(f"all outputs agree with PyTorch eager within {MISMATCH_REL:g} relative")


def mismatches(cases: list[Case]) -> list[str]:
    """The engines whose output differs from PyTorch eager's by more than MISMATCH_REL."""
    return [
        f"{c.model} b{c.batch} {t.engine}"
        for c in cases
        for t in c.timings.values()
        if t.rel_diff is not None and t.rel_diff > MISMATCH_REL
    ]


def clock_name() -> str:
    return "CPU time of the calling thread" if clock is time.thread_time else "wall time"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", choices=[*MODELS, "all"], default=DEFAULT_MODELS,
        help=f"default: {' '.join(DEFAULT_MODELS)}; 'all' adds {' '.join(MODELS[2:])}",
    )  # fmt: skip
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument(
        "--repeats", type=int, default=20, help="most timing rounds per case (default 20)"
    )
    parser.add_argument("--min-repeats", type=int, default=3, help="fewest rounds (default 3)")
    parser.add_argument(
        "--peak-repeats", type=int, default=20, help="runs of the peak kernels (default 20)"
    )
    parser.add_argument(
        "--settle", type=float, default=SETTLE_S,
        help=f"seconds of pause before each timed call (default {SETTLE_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--budget",
        type=float,
        default=15.0,
        help="seconds of timing rounds to aim for per (model, batch), between the two bounds "
        "(default 15)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="threads for every engine (default: the physical cores this process may use)",
    )
    parser.add_argument(
        "--no-winograd", action="store_true", help="resdsl: direct 3x3 convolutions"
    )
    parser.add_argument(
        "--micro-batch", type=int, metavar="N",
        help="resdsl: run the batch N samples at a time (N divides every --batches)",
    )  # fmt: skip
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time (default), or CPU time of the calling thread (needs --threads 1)",
    )
    parser.add_argument("--tuned-db", metavar="DIR", help="MetaSchedule tuning records")
    parser.add_argument(
        "--dynamic", action="store_true",
        help="also time one artifact compiled for batches 1..max(--batches) at each batch",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="weights and input (default 0)")
    parser.add_argument(
        "--profile", type=int, nargs="?", const=15, default=0, metavar="N",
        help="after each case, the top N (default 15) kernels of resdsl and onnxruntime",
    )  # fmt: skip
    parser.add_argument(
        "--profile-runs", type=int, default=10, help="passes profiled per engine (default 10)"
    )
    args = parser.parse_args(argv)
    if "all" in args.models:
        args.models = MODELS
    if args.repeats < 1 or args.min_repeats < 1 or args.min_repeats > args.repeats:
        parser.error("need 1 <= --min-repeats <= --repeats")
    if any(b < 1 for b in args.batches):
        parser.error("batch sizes must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.micro_batch is not None and any(b % args.micro_batch for b in args.batches):
        parser.error("--micro-batch must divide every batch size")
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (CPU time of other threads is not counted)")
    return args


def main(argv: list[str] | None = None) -> int:
    global clock
    args = parse_args(argv)
    clock = CLOCKS[args.clock]
    # One thread count for every engine; set before TVM's runtime starts its thread pool.
    args.threads = args.threads or resdsl.runtime.physical_cores()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    import onnxruntime as ort
    import tvm

    from resdsl.backends.tvm import BuildOptions

    print(
        f"resdsl {resdsl.__version__} | tvm {tvm.__version__} | torch {torch.__version__} | "
        f"torchvision {torchvision.__version__} | onnxruntime {ort.__version__} | "
        f"{os.cpu_count()} CPUs | target {BuildOptions().tvm_target()}\n"
        f"threads: {args.threads} for every engine (TVM_NUM_THREADS, torch "
        f"{torch.get_num_threads()}, onnxruntime intra-op {args.threads}) | resdsl build: "
        f"winograd {'off' if args.no_winograd else 'on'}, micro-batch "
        f"{args.micro_batch or 'default'}"
        + (f"; dynamic: batches 1..{max(args.batches)}" if args.dynamic else "")
        + "\n"
        f"median of {args.min_repeats}..{args.repeats} interleaved rounds (budget {args.budget:g}"
        f" s per case) after 1 warm-up; {args.clock} clock; seed {args.seed}"
    )
    from resdsl.backends.tvm.schedules import Machine

    peak = fma_peak(args.peak_repeats, Machine.of(BuildOptions().tvm_target()).lanes)
    print(
        f"machine peak: {peak:.1f} GFLOP/s float32 (vector FMAs on registers, "
        f"{tvm.get_global_func('runtime.NumThreads')()} TVM threads); PyTorch's 2048^3 matmul: "
        f"{matmul_peak(args.peak_repeats):.1f} GFLOP/s\n",
        flush=True,
    )
    start = time.perf_counter()
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="resdsl-bench-") as workdir:
        for model in args.models:
            cases += run_model(model, args, workdir)
    print(f"\n(measured in {time.perf_counter() - start:.0f} s)\n")
    print_tables(cases, peak, args.threads)
    return 1 if mismatches(cases) else 0


if __name__ == "__main__":
    sys.exit(main())
