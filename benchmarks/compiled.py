"""Compiled-model benchmark: resdsl's TVM CPU artifact vs. PyTorch eager and onnxruntime.

For each model (ResNet-18, ResNet-50) and batch size it builds the torchvision model with
seeded weights, compiles ``examples/<model>.res`` for ``--target llvm`` with exactly those
weights (``compile_network(..., weights=torchvision_model)``; the spec's names are
torchvision's, so its state_dict loads strictly) and measures the median wall time
(``time.perf_counter``) of one forward pass of the same seeded input through:

* resdsl: the untuned artifact, run through ``resdsl.runtime.load(dir)`` on NumPy arrays
  (the time includes copying the input in and the output out, which is what a caller pays);
* resdsl tuned: the same, compiled with a MetaSchedule database, when ``--tuned-db DIR``
  holds tuning records (``database_workload.json`` + ``database_tuning_record.json``) in
  ``DIR/<model>-b<batch>/``, ``DIR/<model>/`` or ``DIR/`` itself; otherwise skipped;
* PyTorch eager: ``model.eval()`` under ``torch.no_grad()``, torch's default thread count;
* onnxruntime: the model exported with ``torch.onnx.export`` (the dynamo-based exporter when
  onnxscript is installed, else, or when that fails, the TorchScript one with
  ``dynamo=False``), one export per model with a dynamic batch axis, run by an
  ``InferenceSession`` on the ``CPUExecutionProvider``.

The weights: ``torch.manual_seed(seed)`` then torchvision's own initialisation, and then the
batch-norm affine parameters and running statistics are redrawn from a seeded generator
(torchvision initialises them to the identity, which would leave the artifact's batch-norm
folding untested). Input: ``numpy.random.default_rng(seed).standard_normal``.

Each engine is warmed up once (first-touch allocation, thread pools, onnxruntime's
arena) before it is timed. Untuned TVM code is slow (seconds per image), so the number of
timed repeats adapts: at most ``--repeats``, at least ``--min-repeats``, and otherwise as many
as fit in ``--budget`` seconds per measurement, judged from the warm-up call. The table says
how many were used. Every engine's output is compared with PyTorch eager's (max abs diff, and
that relative to the largest output); a difference over 1e-3 relative is flagged.

GFLOP/s = 2 * MACs * batch / latency, with MACs from ``resdsl.load(spec).macs``.

    python benchmarks/compiled.py
    python benchmarks/compiled.py --models resnet18 --batches 1 --repeats 5
    python benchmarks/compiled.py --tuned-db tuning/          # add the tuned artifact

Exits 0 (mismatches are flagged in the output, not in the exit status).
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

MODELS = ["resnet18", "resnet50"]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MISMATCH_REL = 1e-3  # flag an engine whose output differs from eager's by more than this


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
    """torchvision's model, initialised under ``seed``, batch norms redrawn; in eval mode."""
    torch.manual_seed(seed)
    module = getattr(torchvision.models, model)()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in module.modules():
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


def measure(
    fn: Callable[[], np.ndarray], max_repeats: int, min_repeats: int, budget_s: float
) -> tuple[float, int, np.ndarray]:
    """Warm up once, then time ``fn``; returns (median seconds, repeats used, last output)."""
    start = time.perf_counter()
    out = fn()
    warm_s = time.perf_counter() - start
    repeats = max(min_repeats, min(max_repeats, int(budget_s / max(warm_s, 1e-9))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), repeats, out


def compare(timing: Timing, out: np.ndarray, reference: np.ndarray) -> None:
    diff = float(np.abs(out.astype(np.float32) - reference).max())
    timing.max_abs_diff = diff
    timing.rel_diff = diff / max(float(np.abs(reference).max()), 1e-30)


# --------------------------------------------------------------------------- engines


def compile_artifact(net, module, batch: int, out_dir: str, database=None) -> float:
    from resdsl.backends.tvm import BuildOptions, compile_network

    start = time.perf_counter()
    compile_network(
        net, out_dir, BuildOptions(target="llvm", batch=batch), weights=module, database=database
    )
    return time.perf_counter() - start


def find_tuning_db(root: str | None, model: str, batch: int):
    """A MetaSchedule JSONDatabase for (model, batch) under ``root``, or a reason why not."""
    if root is None:
        return None, "no --tuned-db given"
    for d in (Path(root) / f"{model}-b{batch}", Path(root) / model, Path(root)):
        records = d / "database_tuning_record.json"
        if (d / "database_workload.json").is_file() and records.is_file():
            if records.stat().st_size == 0:
                return None, f"{records} is empty"
            from tvm.s_tir import meta_schedule as ms

            db = ms.database.JSONDatabase(work_dir=str(d), allow_missing=False)
            if len(db) == 0:
                return None, f"{d} holds no tuning records"
            return db, str(d)
    return None, f"no MetaSchedule records for {model} under {root}"


def export_onnx(module: torch.nn.Module, path: str) -> str:
    """Export with a dynamic batch axis; returns which exporter was used."""
    example = (torch.from_numpy(seeded_input(1, 0)),)
    quiet = io.StringIO()
    if importlib.util.find_spec("onnxscript") is not None:
        try:
            start = time.perf_counter()
            with warnings.catch_warnings(), redirect_stdout(quiet), redirect_stderr(quiet):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, example, path, input_names=["x"], output_names=["y"],
                    dynamo=True, dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
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
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )  # fmt: skip
    return reason + f"TorchScript exporter (dynamo=False), {time.perf_counter() - start:.1f} s"


def run_model(model: str, args: argparse.Namespace, workdir: str) -> list[Case]:
    import onnxruntime as ort

    timing_args = (args.repeats, args.min_repeats, args.budget)
    module = seeded_torchvision(model, args.seed)
    net = resdsl.load(EXAMPLES / f"{model}.res")
    cases = [Case(model, b, net.macs) for b in args.batches]
    inputs = {c.batch: seeded_input(c.batch, args.seed) for c in cases}
    refs: dict[int, np.ndarray] = {}

    # PyTorch eager first: its output is the reference for the others.
    for c in cases:
        x = torch.from_numpy(inputs[c.batch])

        def eager(x=x) -> np.ndarray:
            with torch.no_grad():
                return module(x).numpy()

        t = Timing("pytorch eager")
        t.median_s, t.repeats, refs[c.batch] = measure(eager, *timing_args)
        c.timings["eager"] = t
        print(f"  {model} b{c.batch}: eager {t.median_s * 1e3:.1f} ms (n={t.repeats})", flush=True)

    # onnxruntime: one export per model (dynamic batch), one session.
    onnx_path = os.path.join(workdir, f"{model}.onnx")
    how = export_onnx(module, onnx_path)
    print(f"  {model}: onnx export: {how}", flush=True)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    for c in cases:
        x = inputs[c.batch]
        t = Timing("onnxruntime")
        t.median_s, t.repeats, out = measure(
            lambda x=x, s=session: s.run(None, {"x": x})[0], *timing_args
        )
        compare(t, out, refs[c.batch])
        c.timings["onnxruntime"] = t
        print(f"  {model} b{c.batch}: onnxruntime {t.median_s * 1e3:.1f} ms (n={t.repeats})")

    # resdsl: compile (timed), load, run; untuned, then tuned where records exist.
    for c in cases:
        for key, label in (("resdsl", "resdsl (untuned)"), ("tuned", "resdsl (tuned)")):
            t = Timing(label)
            c.timings[key] = t
            database = None
            if key == "tuned":
                database, where = find_tuning_db(args.tuned_db, model, c.batch)
                if database is None:
                    t.note = f"skipped: {where}"
                    continue
                t.note = f"records from {where}"
            out_dir = os.path.join(workdir, f"{model}-b{c.batch}-{key}")
            c.compile_s[key] = compile_artifact(net, module, c.batch, out_dir, database)
            artifact = resdsl.runtime.load(out_dir)
            x = inputs[c.batch]
            t.median_s, t.repeats, out = measure(lambda a=artifact, x=x: a(x), *timing_args)
            compare(t, out, refs[c.batch])
            print(
                f"  {model} b{c.batch}: {label} compiled in {c.compile_s[key]:.1f} s, "
                f"{t.median_s * 1e3:.1f} ms (n={t.repeats})",
                flush=True,
            )
    return cases


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return (
        missing
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (format(value, spec))
    )


def print_tables(cases: list[Case]) -> None:
    header = (
        f"{'model':<9} {'batch':>5}  {'engine':<17} {'median ms':>10} {'repeats':>7} "
        f"{'GFLOP/s':>8} {'max|diff| vs eager':>18} {'rel':>9}"
    )
    print(header)
    print("-" * len(header))
    for c in cases:
        for key in ("resdsl", "tuned", "eager", "onnxruntime"):
            t = c.timings.get(key)
            if t is None:
                continue
            if t.median_s is None:
                print(f"{c.model:<9} {c.batch:>5}  {t.engine:<17} {t.note}")
                continue
            flag = "  MISMATCH" if t.rel_diff is not None and t.rel_diff > MISMATCH_REL else ""
            print(
                f"{c.model:<9} {c.batch:>5}  {t.engine:<17} {t.median_s * 1e3:>10.1f} "
                f"{t.repeats:>7} {_fmt(c.gflops(t), '.1f'):>8} "
                f"{_fmt(t.max_abs_diff, '.2e', '(reference)'):>18} {_fmt(t.rel_diff, '.1e'):>9}"
                f"{flag}"
            )
    print()
    header = (
        f"{'model':<9} {'batch':>5}  {'resdsl/eager':>12} {'resdsl/ort':>10} "
        f"{'tuned/eager':>11} {'tuned/ort':>9} {'compile s':>9} {'tuned compile s':>15}"
    )
    print(header)
    print("-" * len(header))
    for c in cases:
        print(
            f"{c.model:<9} {c.batch:>5}  {_fmt(c.ratio('resdsl', 'eager'), '.1f'):>11}x "
            f"{_fmt(c.ratio('resdsl', 'onnxruntime'), '.1f'):>9}x "
            f"{_fmt(c.ratio('tuned', 'eager'), '.1f'):>10}x "
            f"{_fmt(c.ratio('tuned', 'onnxruntime'), '.1f'):>8}x "
            f"{_fmt(c.compile_s.get('resdsl'), '.1f'):>9} "
            f"{_fmt(c.compile_s.get('tuned'), '.1f'):>15}"
        )
    notes = {c.timings["tuned"].note for c in cases if c.timings.get("tuned")}
    for note in sorted(notes):
        print(f"note: resdsl (tuned): {note}")
    bad = [
        f"{c.model} b{c.batch} {t.engine}"
        for c in cases
        for t in c.timings.values()
        if t.rel_diff is not None and t.rel_diff > MISMATCH_REL
    ]
    if bad:
        print(f"WARNING: outputs differ from eager by more than {MISMATCH_REL:g} relative: "
              + ", ".join(bad))  # fmt: skip
    else:
        print(f"all outputs agree with PyTorch eager within {MISMATCH_REL:g} relative")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument(
        "--repeats", type=int, default=20, help="most timed repeats per measurement (default 20)"
    )
    parser.add_argument(
        "--min-repeats", type=int, default=3, help="fewest timed repeats (default 3)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=15.0,
        help="seconds of timed repeats to aim for per measurement, between the two bounds "
        "(default 15)",
    )
    parser.add_argument("--tuned-db", metavar="DIR", help="MetaSchedule tuning records")
    parser.add_argument("--seed", type=int, default=0, help="weights and input (default 0)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.min_repeats < 1 or args.min_repeats > args.repeats:
        parser.error("need 1 <= --min-repeats <= --repeats")
    if any(b < 1 for b in args.batches):
        parser.error("batch sizes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort
    import tvm

    print(
        f"resdsl {resdsl.__version__} | tvm {tvm.__version__} | torch {torch.__version__} | "
        f"torchvision {torchvision.__version__} | onnxruntime {ort.__version__} | "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs\n"
        f"median of {args.min_repeats}..{args.repeats} timed repeats (budget {args.budget:g} s "
        f"per measurement) after 1 warm-up; seed {args.seed}\n"
    )
    start = time.perf_counter()
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="resdsl-bench-") as workdir:
        for model in args.models:
            cases += run_model(model, args, workdir)
    print(f"\n(measured in {time.perf_counter() - start:.0f} s)\n")
    print_tables(cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
