"""``device`` (the GPU machine): rebuild the artifacts, check them, time them.

The phases, in order: probe the environment and import the carried runtime; re-derive the
weights and rebuild every ``model.so`` byte for byte; PyTorch eager (the float32 reference
and eager timings, in PyTorch's default NCHW layout and in ``channels_last`` with cuDNN's
autotuner on); the resdsl artifacts (load, parity, timing); torch.compile while time is
left, in the modes of ``--compile-modes`` (default ``reduce-overhead``, ``default``,
``max-autotune``: ``reduce-overhead`` and ``max-autotune`` replay the model as CUDA graphs,
as resdsl's artifact does); the summary table, with each artifact's ratio against the
fastest PyTorch peer measured for its model, dtype and batch (``settings.PEERS``). Without
a GPU, a CUDA run stops after the rebuild (the dry run ``prepare`` does).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .environment import choose_kernel_compiler, import_runtime, probe
from .report import Report, first_lines, median_time, summary
from .settings import (
    EXIT_ENV,
    EXIT_FAIL,
    EXIT_NO_GPU,
    FP16_REL_TOL,
    FP32_ABS_TOL,
    artifact_name,
)
from .skeleton import fill
from .weights import folded_weights, seeded_input, seeded_weights, state_sha256


def device(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    where = Path(args.artifacts)
    manifest = json.loads((where / "manifest.json").read_text())
    report = Report(Path(args.out))
    want_cuda = any(a["target"] == "cuda" for a in manifest["artifacts"])
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")

    import torch  # noqa: F401  (before tvm: it loads libcudart, which TVM's CUDA library links)

    env = probe(report, want_cuda)
    report.say(
        f"python {env['python']} | torch {env['torch']} | torchvision {env['torchvision']} | "
        f"numpy {env['numpy']} | GPU: {env.get('gpu', 'none')} {env.get('capability', '')}"
    )
    has_gpu = env["cuda_available"]
    if want_cuda:
        choose_kernel_compiler(report, env)
    pylib = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0]
    tvm, runtime = import_runtime(report, Path(pylib) if pylib else None, want_cuda and has_gpu)

    models = rederive_weights(report, manifest, where)
    selected = [
        a for a in manifest["artifacts"] if not args.only or any(w in a["name"] for w in args.only)
    ]
    ready = rebuild(report, manifest, where, models, selected)
    report.say(f"{len(ready)} of {len(selected)} artifacts rebuilt byte for byte "
               f"({time.perf_counter() - t0:.0f} s so far)")  # fmt: skip

    if want_cuda and not has_gpu:
        report.say("no CUDA GPU here (torch.cuda.is_available() is False): dry run ends before "
                   "the GPU checks")  # fmt: skip
        return EXIT_NO_GPU
    if report.data["problems"]:
        report.say("stopping: fix the problems above first")
        return EXIT_ENV

    bench = Bench(report, models, ready, "cuda" if want_cuda else "cpu", args.repeats, args.budget)
    bench.setup(manifest["seed"])
    torch_eager(bench)
    failed = resdsl_artifacts(bench, runtime, tvm)
    torch_compile(bench, args, t0)
    summary(report, ready, bench.timings)
    report.say(f"\n{len(ready) - len(failed)} of {len(selected)} artifacts passed"
               f"{': FAILED ' + ', '.join(failed) if failed else ''} "
               f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    return EXIT_FAIL if failed or len(ready) < len(selected) else 0


# --- the weights and the artifacts ----------------------------------------------------------


def rederive_weights(report: Report, manifest: dict, where: Path) -> dict[str, Any]:
    """Each model's weights, re-derived from the seed and checked against prepare's."""
    seed = manifest["seed"]
    models: dict[str, Any] = {}
    for name, info in manifest["models"].items():
        start = time.perf_counter()
        module, state = seeded_weights(name, seed, where / info["spec"])
        sha = state_sha256(state)
        if sha != info["state_sha256"]:
            report.problem(
                f"{name}: the weights re-derived from seed {seed} differ from prepare's "
                f"(sha256 {sha[:12]} vs {info['state_sha256'][:12]}): NumPy draws differently here"
            )
            continue
        folded = folded_weights(where / info["spec"], state)
        models[name] = {"module": module, "folded": folded, "macs": info["macs"],
                        "input_shape": tuple(info.get("input_shape", (3, 224, 224)))}  # fmt: skip
        report.say(f"{name}: weights re-derived and checked in {time.perf_counter() - start:.1f} s")
    return models


def rebuild(report: Report, manifest: dict, where: Path, models, selected) -> list:
    """Every selected artifact's model.so, refilled and checked byte for byte: (entry, dir)."""
    built = Path(tempfile.mkdtemp(prefix="resdsl-gpu-"))
    ready = []
    for a in manifest["artifacts"]:
        if a["model"] not in models:
            continue
        if a not in selected:
            continue
        src, dst = where / "artifacts" / a["name"], built / a["name"]
        dst.mkdir(parents=True)
        holes = json.loads((src / "holes.json").read_text())
        so = fill((src / "model.so.xz").read_bytes(), holes, models[a["model"]]["folded"],
                  a["dtype"])  # fmt: skip
        if hashlib.sha256(so).hexdigest() != a["so_sha256"]:
            report.problem(f"{a['name']}: rebuilt model.so differs from the compiled one")
            continue
        (dst / "model.so").write_bytes(so)
        shutil.copy2(src / "model.json", dst / "model.json")
        ready.append((a, dst))
    return ready


# --- the measurements -------------------------------------------------------------------------


@dataclass
class Bench:
    """What the measuring phases share: the models, the artifacts, inputs and references."""

    report: Report
    models: dict[str, Any]
    ready: list
    dev: str  # "cuda", or "cpu" for the self-test's llvm artifacts
    repeats: int
    budget: float  # seconds per timing
    inputs: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    refs: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    torch_modules: dict[tuple[str, str], Any] = field(default_factory=dict)

    @property
    def timings(self) -> dict[str, dict[str, Any]]:
        return self.report.data["torch"]

    @property
    def dtypes(self) -> tuple[str, ...]:
        return ("float32", "float16") if self.dev == "cuda" else ("float32",)

    def setup(self, seed: int) -> None:
        import torch

        if self.dev == "cuda":
            torch.backends.cudnn.allow_tf32 = False  # strict fp32 for the reference
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.benchmark = True
        for a, _ in self.ready:
            shape = self.models[a["model"]]["input_shape"]
            key = (a["model"], a["batch"])
            self.inputs.setdefault(key, seeded_input(a["batch"], seed, shape))

    def batches(self, name: str) -> list[int]:
        return sorted({a["batch"] for a, _ in self.ready if a["model"] == name})

    def sync(self) -> None:
        if self.dev == "cuda":
            import torch

            torch.cuda.synchronize()

    def time(self, fn, sync=None) -> tuple[float, int]:
        return median_time(fn, sync or self.sync, self.repeats, self.budget)

    def gflops(self, model: str, batch: int, seconds: float) -> float:
        return 2 * self.models[model]["macs"] * batch / seconds / 1e9


def record_peer(b: Bench, key: str, peer: str, seconds: float, diff: float, **extra: Any) -> None:
    """A PyTorch peer's median for ``key`` (model-dtype-batch) in ``timings[key]["peers"]``
    (ms), its max|diff| from the float32 reference in ``["peer_max_abs_diff_vs_fp32"]``."""
    entry = b.timings.setdefault(key, {})
    entry.setdefault("peers", {})[peer] = seconds * 1e3
    entry.setdefault("peer_max_abs_diff_vs_fp32", {})[peer] = diff
    entry.update(extra)


def torch_eager(b: Bench) -> None:
    """PyTorch eager: the fp32 reference, and fp32/fp16 timings in NCHW and channels_last."""
    import torch

    b.report.say("\n-- PyTorch eager (cudnn.benchmark on; NCHW, then channels_last)")
    for name in b.models:
        for dtype in b.dtypes:
            m = b.models[name]["module"]
            m = m.to(b.dev) if dtype == "float32" else copy.deepcopy(m).to(b.dev).half()
            b.torch_modules[(name, dtype)] = m
            cl = copy.deepcopy(m).to(memory_format=torch.channels_last)
            b.torch_modules[(name, dtype, "channels_last")] = cl
        for batch in b.batches(name):
            x32 = torch.from_numpy(b.inputs[(name, batch)]).to(b.dev)
            for dtype in b.dtypes:
                key = f"{name}-{dtype}-b{batch}"
                x = x32 if dtype == "float32" else x32.half()
                for layout in ("", "channels_last"):
                    m = b.torch_modules[(name, dtype, layout) if layout else (name, dtype)]
                    xl = x.contiguous(memory_format=torch.channels_last) if layout else x
                    with torch.inference_mode():
                        out = m(xl).float().cpu().numpy()
                        if dtype == "float32" and not layout:
                            b.refs[(name, batch)] = out
                        diff = float(np.abs(out - b.refs[(name, batch)]).max())
                        med, n = b.time(lambda m=m, x=xl: m(x))
                    peer = "eager channels_last" if layout else "eager"
                    extra = {} if layout else {"eager_ms": med * 1e3,
                                               "eager_max_abs_diff_vs_fp32": diff}  # fmt: skip
                    record_peer(b, key, peer, med, diff, **extra)
                    gfl = b.gflops(name, batch, med)
                    b.report.say(f"{key:<24} {peer:<19} {med * 1e3:8.3f} ms (n={n}, {gfl:8.1f} "
                                 f"GFLOP/s)  max|diff| vs fp32 ref {diff:.2e}")  # fmt: skip


def resdsl_artifacts(b: Bench, runtime, tvm) -> list[str]:
    """resdsl artifacts: load (compiles the kernels), parity, timing; the failed ones."""
    b.report.say("\n-- resdsl artifacts (resdsl.runtime)")
    failed = []
    for a, path in b.ready:
        res: dict[str, Any] = {"compile_here_s": a["compile_s"]}
        b.report.data["artifacts"][a["name"]] = res
        loaded = _load_and_run(b, a, path, runtime, res)
        if loaded is None:
            failed.append(a["name"])
            continue
        model, out = loaded
        ok, rule = _parity(b, a, out, res)
        if not ok:
            failed.append(a["name"])
        _time_artifact(b, a, model, tvm, res, rule)
    return failed


def _load_and_run(b: Bench, a: dict, path: Path, runtime, res: dict):
    """Load an artifact and run it once: (model, output), or None after a problem."""
    key = a["name"]
    start = time.perf_counter()
    try:
        model = runtime.load(path)
    except Exception as e:
        res["error"] = f"load: {e}"
        b.report.problem(f"{key}: cannot load: {first_lines(e)}")
        return None
    res["load_s"] = time.perf_counter() - start
    x = b.inputs[(a["model"], a["batch"])]
    start = time.perf_counter()
    try:
        out = model(x)
    except Exception as e:
        res["error"] = f"run: {e}"
        b.report.problem(f"{key}: first run failed: {first_lines(e)}")
        return None
    res["first_run_s"] = time.perf_counter() - start
    return model, out


def _parity(b: Bench, a: dict, out: np.ndarray, res: dict) -> tuple[bool, str]:
    """The output against the float32 reference: fp32 absolute, fp16 relative to its scale.
    Returns whether it passed, and the rule applied."""
    ref = b.refs[(a["model"], a["batch"])]
    diff = float(np.abs(out.astype(np.float32) - ref).max())
    scale = float(np.abs(ref).max())
    if a["dtype"] == "float32":
        tol, rule = FP32_ABS_TOL, f"abs <= {FP32_ABS_TOL:g}"
    else:
        tol = FP16_REL_TOL * scale
        rule = f"<= {FP16_REL_TOL:g} * max|ref| = {tol:.3g}"
    ok = bool(np.isfinite(out).all()) and diff <= tol
    res.update(max_abs_diff=diff, ref_max_abs=scale, tolerance=tol, ok=ok)
    return ok, rule


def _time_artifact(b: Bench, a: dict, model, tvm, res: dict, rule: str) -> None:
    """The numpy call (copies in and out) and the VM on device-resident tensors."""
    x = b.inputs[(a["model"], a["batch"])]
    med_np, _ = b.time(lambda m=model, x=x: m(x))
    tdev = model.device
    xt = tvm.runtime.tensor(np.ascontiguousarray(x.astype(a["dtype"])), tdev)
    main = model._main  # the VM's "main"; resdsl.runtime keeps it there
    med, n = b.time(lambda f=main, t=xt: f(t), tdev.sync)
    gfl = b.gflops(a["model"], a["batch"], med)
    eager = b.timings.get(artifact_name(a["model"], a["dtype"], a["batch"]), {}).get("eager_ms")
    res.update(ms=med * 1e3, numpy_call_ms=med_np * 1e3, repeats=n, gflops=gfl, eager_ms=eager)
    b.report.say(
        f"{a['name']:<24} load {res['load_s']:5.1f} s | parity {'PASS' if res['ok'] else 'FAIL'}: "
        f"max|diff| {res['max_abs_diff']:.2e} ({rule}) | {med * 1e3:8.3f} ms on device "
        f"(n={n}, {gfl:8.1f} GFLOP/s), {med_np * 1e3:8.3f} ms numpy in/out"
        + (f" | eager {eager:.3f} ms" if eager else "")
    )


def compile_plan(b: Bench, modes: list[str]) -> list[tuple[str, str, str, int]]:
    """(mode, model, dtype, batch) in the order they are compiled: mode by mode (the first
    mode for every shape before the next mode), so that a run cut short by the deadline has
    the first modes everywhere rather than every mode for the first shapes."""
    dtypes = ("float16", "float32") if b.dev == "cuda" else ("float32",)
    plan = []
    for mode in modes:
        for name in b.models:
            for batch in b.batches(name):
                for dtype in dtypes:
                    key = f"{name}-{dtype}-b{batch}"
                    if any(a["name"].startswith(key) for a, _ in b.ready):
                        plan.append((mode, name, dtype, batch))
    return plan


def torch_compile(b: Bench, args: argparse.Namespace, t0: float) -> None:
    """torch.compile in each mode, while time is left (each shape and mode compiles anew)."""
    modes = [] if args.no_compile else args.compile_modes
    b.report.say(f"\n-- torch.compile ({', '.join(modes) or 'none'}), while under "
                 f"{args.deadline:.0f} s")  # fmt: skip
    for mode, name, dtype, batch in compile_plan(b, modes):
        key = f"{name}-{dtype}-b{batch}"
        allowance = args.autotune_allowance if mode == "max-autotune" else args.compile_allowance
        if time.perf_counter() - t0 > args.deadline - allowance:
            b.report.say(f"{key:<24} torch.compile {mode} skipped: time budget")
            continue
        _compile_one(b, name, dtype, batch, mode)


def _compile_one(b: Bench, name: str, dtype: str, batch: int, mode: str) -> None:
    import torch

    key = f"{name}-{dtype}-b{batch}"
    m = b.torch_modules[(name, dtype)]
    x = torch.from_numpy(b.inputs[(name, batch)]).to(b.dev)
    x = x.half() if dtype == "float16" else x
    peer = f"compile {mode}"
    try:
        torch._dynamo.reset()  # each mode compiles from scratch, not on another's cache
        compiled = torch.compile(m, mode=mode)
        start = time.perf_counter()
        with torch.inference_mode():
            out = compiled(x).float().cpu().numpy()  # a copy: CUDA graphs reuse outputs
            compile_s = time.perf_counter() - start
            med, n = b.time(lambda c=compiled, x=x: c(x))
    except Exception as e:
        b.report.say(f"{key:<24} torch.compile {mode} failed: {type(e).__name__}: "
                     f"{str(e)[:300]}")  # fmt: skip
        return
    diff = float(np.abs(out - b.refs[(name, batch)]).max())
    gfl = b.gflops(name, batch, med)
    extra = {"compile_ms": med * 1e3, "compile_s": compile_s} if mode == "default" else {}
    record_peer(b, key, peer, med, diff, **extra)
    b.timings[key].setdefault("peer_compile_s", {})[peer] = compile_s
    b.report.say(f"{key:<24} {peer:<27} {med * 1e3:8.3f} ms (n={n}, {gfl:8.1f} "
                 f"GFLOP/s; compiled in {compile_s:.0f} s) max|diff| vs fp32 ref "
                 f"{diff:.2e}")  # fmt: skip
