"""``device`` (the GPU machine): rebuild the artifacts, check them, time them.

The phases, in order, each bounded by ``--deadline`` (seconds from the start):

1. probe the environment and import the carried runtime; re-derive the weights and
   rebuild every selected ``model.so`` byte for byte (without a GPU, a CUDA run stops here:
   the dry run that ``prepare`` and ``dry-run`` do); compile the artifacts' CUDA kernels
   in parallel processes (:mod:`.kernels`; ``--no-precompile``: as each loads);
2. shape by shape (model, dtype, batch) in the manifest's order, most important first
   (``settings.CONFIGS``): the float32 reference (torchvision in NCHW, TF32 off), the resdsl
   artifacts of that shape (load, parity, timing on device-resident tensors), and the cheap
   PyTorch peers: eager in ``channels_last`` with cuDNN autotuned (``cudnn.benchmark``) and
   that eager model captured as a CUDA graph and replayed (``--eager-nchw`` adds eager in
   NCHW);
3. torch.compile (``--compile-modes``, default ``max-autotune``) shape by shape in the same
   order, each in a subprocess that is killed at the deadline, and none started with less
   than ``--compile-allowance`` seconds left;
4. the summary (:func:`.report.summary`): per artifact the ratio against the fastest peer
   measured, issue 20's target met or not, achieved TFLOP/s against the GPU's peak.

TF32: off for the reference always; for the float32 peers off unless ``--tf32`` (resdsl's
float32 kernels have no TF32 path either way). The report states which.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .environment import choose_kernel_compiler, import_runtime, probe
from .kernels import embedded_cuda_sources, install, precompile, sha
from .report import Report, first_lines, median_time, summary
from .settings import (
    EXIT_ENV,
    EXIT_FAIL,
    EXIT_NO_GPU,
    FP16_REL_TOL,
    FP32_ABS_TOL,
    PACKAGE,
    tflops,
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

    selected = select(manifest["artifacts"], args.only)
    wanted = {a["model"] for a in selected}
    models = rederive_weights(report, manifest, where, wanted)
    built = Path(tempfile.mkdtemp(prefix="resdsl-gpu-"))
    try:
        ready = rebuild(report, where, models, selected, built)
        report.say(f"{len(ready)} of {len(selected)} artifacts rebuilt byte for byte "
                   f"({time.perf_counter() - t0:.0f} s so far)")  # fmt: skip

        sources = {sha(c) for _, d in ready for c in embedded_cuda_sources(_so(d, want_cuda))}
        report.say(f"{len(sources)} distinct CUDA sources in the artifacts")
        if want_cuda and not has_gpu:
            report.say("no CUDA GPU here (torch.cuda.is_available() is False): dry run ends "
                       "before the GPU checks")  # fmt: skip
            return EXIT_NO_GPU
        if want_cuda and ready and not args.no_precompile:
            workers = min(16, os.cpu_count() or 1)
            cache = precompile([d / "model.so" for _, d in ready], workers,
                               min(240.0, args.deadline / 2), report.say)  # fmt: skip
            report.data["kernel_cache"] = install(cache)
        if report.data["problems"]:
            report.say("stopping: fix the problems above first")
            return EXIT_ENV

        dev = "cuda" if want_cuda else "cpu"
        bench = Bench(report, models, ready, dev, args.repeats, args.budget, tf32=args.tf32,
                      eager_nchw=args.eager_nchw, t0=t0, deadline=args.deadline)  # fmt: skip
        bench.setup(manifest["seed"])
        report.data["run"] = {
            "peers": peers_expected(args), "tf32_peers": args.tf32, "tf32_reference": False,
            "deadline_s": args.deadline, "compile_allowance_s": args.compile_allowance,
            "budget_s": args.budget, "repeats": args.repeats,
        }  # fmt: skip
        failed = measure(bench, runtime, tvm)
        torch_compile(bench, args, where)
        summary(
            report,
            ready,
            bench.timings,
            peers_expected(args),
            env.get("gpu"),
            args.tf32,
            {k: v["macs"] for k, v in models.items()},
            select(manifest.get("failed", []), args.only),
        )
    finally:
        shutil.rmtree(built, ignore_errors=True)
    report.say(f"\n{len(ready) - len(failed)} of {len(selected)} artifacts passed"
               f"{': FAILED ' + ', '.join(failed) if failed else ''} "
               f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    return EXIT_FAIL if failed or len(ready) < len(selected) else 0


def _so(directory: Path, cuda: bool) -> bytes:
    return (directory / "model.so").read_bytes() if cuda else b""


def select(artifacts: list[dict], only: list[str] | None) -> list[dict]:
    """The artifacts whose names contain one of ``only`` (all without it), in manifest order."""
    return [a for a in artifacts if not only or any(w in a["name"] for w in only)]


def peers_expected(args: argparse.Namespace) -> list[str]:
    """The PyTorch peers this run means to time (the summary says which ones it missed)."""
    modes = [] if args.no_compile else args.compile_modes
    return [*(["eager"] if args.eager_nchw else []), "eager channels_last", "cuda graph",
            *(f"compile {m}" for m in modes)]  # fmt: skip


# --- the weights and the artifacts ----------------------------------------------------------


def rederive_weights(report: Report, manifest: dict, where: Path, wanted=None) -> dict[str, Any]:
    """Each model's weights, re-derived from the seed and checked against prepare's."""
    seed = manifest["seed"]
    models: dict[str, Any] = {}
    for name, info in manifest["models"].items():
        if wanted is not None and name not in wanted:
            continue
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
                        "input_shape": tuple(info.get("input_shape", (3, 224, 224))),
                        "spec": str(where / info["spec"])}  # fmt: skip
        report.say(f"{name}: weights re-derived and checked in {time.perf_counter() - start:.1f} s")
    return models


def rebuild(report: Report, where: Path, models, selected, built: Path) -> list:
    """Every selected artifact's model.so, refilled into ``built`` and checked byte for
    byte: [(entry, dir)], in the order of ``selected``."""
    ready = []
    for a in selected:
        if a["model"] not in models:
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
    dev: str  # "cuda", or "cpu" for the self-test's llvm artifacts and the dry run
    repeats: int
    budget: float  # seconds per timing
    tf32: bool = False  # TF32 for the float32 peers (never for the reference)
    eager_nchw: bool = False  # also time eager in NCHW (the reference's layout)
    t0: float = field(default_factory=time.perf_counter)
    deadline: float = float("inf")  # seconds after t0
    seed: int = 0
    inputs: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    refs: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    torch_modules: dict[tuple, Any] = field(default_factory=dict)

    @property
    def timings(self) -> dict[str, dict[str, Any]]:
        return self.report.data["torch"]

    def left(self) -> float:
        """Seconds left before the deadline."""
        return self.deadline - (time.perf_counter() - self.t0)

    def setup(self, seed: int) -> None:
        import torch

        self.seed = seed
        if self.dev == "cuda":
            torch.backends.cudnn.benchmark = True
            self.set_tf32(self.tf32)
        for a, _ in self.ready:
            shape = self.models[a["model"]]["input_shape"]
            key = (a["model"], a["batch"])
            self.inputs.setdefault(key, seeded_input(a["batch"], seed, shape))

    def set_tf32(self, on: bool) -> None:
        import torch

        torch.backends.cudnn.allow_tf32 = on
        torch.backends.cuda.matmul.allow_tf32 = on

    def sync(self) -> None:
        if self.dev == "cuda":
            import torch

            torch.cuda.synchronize()

    def time(self, fn, sync=None) -> tuple[float, int]:
        return median_time(fn, sync or self.sync, self.repeats, self.budget)

    def tflops(self, model: str, batch: int, seconds: float) -> float:
        return tflops(self.models[model]["macs"], batch, seconds)

    def module(self, name: str, dtype: str, layout: str = "") -> Any:
        """The PyTorch model on the device in ``dtype`` (and ``layout``), made once."""
        import torch

        key = (name, dtype, layout)
        if key not in self.torch_modules:
            m = self.models[name]["module"]
            if dtype == "float16" or layout:
                m = copy.deepcopy(m)
            m = m.to(self.dev)
            if dtype == "float16":
                m = m.half()
            if layout:
                m = m.to(memory_format=torch.channels_last)
            self.torch_modules[key] = m.eval()
        return self.torch_modules[key]

    def x(self, name: str, dtype: str, batch: int, layout: str = "") -> Any:
        import torch

        x = torch.from_numpy(self.inputs[(name, batch)]).to(self.dev)
        x = x.half() if dtype == "float16" else x
        return x.contiguous(memory_format=torch.channels_last) if layout else x


def record_peer(b: Bench, key: str, peer: str, seconds: float, diff: float, **extra: Any) -> None:
    """A PyTorch peer's median for ``key`` (model-dtype-batch) in ``timings[key]["peers"]``
    (ms), its max|diff| from the float32 reference in ``["peer_max_abs_diff_vs_fp32"]``."""
    entry = b.timings.setdefault(key, {})
    entry.setdefault("peers", {})[peer] = seconds * 1e3
    entry.setdefault("peer_max_abs_diff_vs_fp32", {})[peer] = diff
    entry.update(extra)


def measure(b: Bench, runtime, tvm) -> list[str]:
    """Phase 2, shape by shape in the artifacts' order: reference, artifacts, cheap peers.
    Returns the names of the artifacts that failed."""
    tf32 = "on" if b.tf32 else "off"
    b.report.say(f"\n-- by shape: float32 reference (NCHW, TF32 off), resdsl artifacts, then "
                 f"PyTorch eager channels_last and CUDA-graphed eager (cudnn.benchmark on; "
                 f"TF32 for float32 peers: {tf32})")  # fmt: skip
    failed: list[str] = []
    peered: set[str] = set()
    for a, path in b.ready:
        key = f"{a['model']}-{a['dtype']}-b{a['batch']}"
        if b.left() <= 0:
            b.report.say(f"{a['name']:<28} skipped: past the deadline")
            failed.append(a["name"])
            continue
        reference(b, a["model"], a["batch"])
        if path is not None:
            failed += resdsl_artifact(b, a, path, runtime, tvm)
        if key not in peered:
            peered.add(key)
            cheap_peers(b, a["model"], a["dtype"], a["batch"])
    return failed


def reference(b: Bench, name: str, batch: int) -> np.ndarray:
    """The float32 reference output for (model, batch): NCHW, TF32 off (timed as the "eager"
    peer with --eager-nchw)."""
    import torch

    if (name, batch) not in b.refs:
        m, x = b.module(name, "float32"), b.x(name, "float32", batch)
        if b.dev == "cuda":
            b.set_tf32(False)
        with torch.inference_mode():
            b.refs[(name, batch)] = m(x).float().cpu().numpy()
        if b.dev == "cuda":
            b.set_tf32(b.tf32)
    return b.refs[(name, batch)]


def _say_peer(b: Bench, key: str, peer: str, med: float, n: int, diff: float, more="") -> None:
    name, batch = key.split("-")[0], int(key.rsplit("-b", 1)[1])
    tf = b.tflops(name, batch, med)
    b.report.say(f"{key:<28} {peer:<24} {med * 1e3:8.3f} ms (n={n}, {tf:7.2f} TFLOP/s"
                 f"{more}) max|diff| vs fp32 ref {diff:.2e}")  # fmt: skip


def cheap_peers(b: Bench, name: str, dtype: str, batch: int) -> None:
    """Eager (channels_last; NCHW with --eager-nchw) and the CUDA graph of channels_last eager."""
    import torch

    key = f"{name}-{dtype}-b{batch}"
    ref = b.refs[(name, batch)]
    for layout in ["", "channels_last"] if b.eager_nchw else ["channels_last"]:
        m, x = b.module(name, dtype, layout), b.x(name, dtype, batch, layout)
        peer = "eager channels_last" if layout else "eager"
        try:
            with torch.inference_mode():
                diff = float(np.abs(m(x).float().cpu().numpy() - ref).max())
                med, n = b.time(lambda m=m, x=x: m(x))
        except Exception as e:  # e.g. out of memory: the other peers still run
            b.report.say(f"{key:<28} {peer} failed: {type(e).__name__}: {str(e)[:300]}")
            continue
        record_peer(b, key, peer, med, diff)
        _say_peer(b, key, peer, med, n, diff)
    try:
        m, x = b.module(name, dtype, "channels_last"), b.x(name, dtype, batch, "channels_last")
        replay, out = graphed(m, x, b.dev)
        replay()
        b.sync()
        diff = float(np.abs(out.float().cpu().numpy() - ref).max())
        med, n = b.time(replay)
    except Exception as e:
        b.report.say(f"{key:<28} cuda graph failed: {type(e).__name__}: {str(e)[:300]}")
        return
    record_peer(b, key, "cuda graph", med, diff)
    _say_peer(b, key, "cuda graph", med, n, diff, "" if b.dev == "cuda" else "; CPU stand-in")


def graphed(m, x, dev: str):
    """``m`` on a static copy of ``x`` captured as a CUDA graph: (replay, static output).

    cuDNN's autotuner and the caching allocator warm up on a side stream first (three
    calls), as torch.cuda.graphs' documentation prescribes. Without CUDA (the dry run) the
    same static buffers are used and ``replay`` calls the model: a stand-in that checks the
    code around the capture, not the capture."""
    import torch

    static_x = x.clone()
    if dev != "cuda":
        with torch.inference_mode():
            static_out = m(static_x)

        def replay() -> None:
            with torch.inference_mode():
                static_out.copy_(m(static_x))

        return replay, static_out
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            m(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_out = m(static_x)
    return graph.replay, static_out


def resdsl_artifact(b: Bench, a: dict, path: Path, runtime, tvm) -> list[str]:
    """One resdsl artifact: load (compiles the kernels), parity, timing; [name] if it failed."""
    res: dict[str, Any] = {"compile_here_s": a.get("compile_s")}
    b.report.data["artifacts"][a["name"]] = res
    loaded = _load_and_run(b, a, path, runtime, res)
    if loaded is None:
        return [a["name"]]
    model, out = loaded
    ok, rule = _parity(b, a, out, res)
    try:
        _time_artifact(b, a, model, tvm, res, rule)
    except Exception as e:
        b.report.problem(f"{a['name']}: timing failed: {first_lines(e)}")
        return [a["name"]]
    return [] if ok else [a["name"]]


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
    """The VM on device-resident tensors (the figure compared), and the numpy call (copies
    in and out; a quarter of the time budget)."""
    x = b.inputs[(a["model"], a["batch"])]
    tdev = model.device
    xt = tvm.runtime.tensor(np.ascontiguousarray(x.astype(a["dtype"])), tdev)
    main = model._main  # the VM's "main"; resdsl.runtime keeps it there
    med, n = b.time(lambda f=main, t=xt: f(t), tdev.sync)
    med_np, _ = median_time(lambda m=model, x=x: m(x), b.sync, b.repeats, b.budget / 4)
    tf = b.tflops(a["model"], a["batch"], med)
    res.update(ms=med * 1e3, numpy_call_ms=med_np * 1e3, repeats=n, tflops=tf)
    b.report.say(
        f"{a['name']:<28} load {res['load_s']:5.1f} s | parity {'PASS' if res['ok'] else 'FAIL'}: "
        f"max|diff| {res['max_abs_diff']:.2e} ({rule}) | {med * 1e3:8.3f} ms on device "
        f"(n={n}, {tf:7.2f} TFLOP/s), {med_np * 1e3:8.3f} ms numpy in/out"
    )


# --- torch.compile, in subprocesses bounded by the deadline ---------------------------------------


def compile_plan(b: Bench, modes: list[str]) -> list[tuple[str, str, str, int]]:
    """(mode, model, dtype, batch) in the order they are compiled: mode by mode (the first
    mode for every shape before the next), shapes in the artifacts' order (most important
    first), each shape once."""
    shapes: list[tuple[str, str, int]] = []
    for a, _ in b.ready:
        shape = (a["model"], a["dtype"], a["batch"])
        if shape not in shapes:
            shapes.append(shape)
    return [(mode, *shape) for mode in modes for shape in shapes]


def torch_compile(b: Bench, args: argparse.Namespace, where: Path | None) -> None:
    """torch.compile in each mode while time is left: one subprocess per shape and mode
    (:func:`compile_child`), killed at the deadline; none started with less than
    ``--compile-allowance`` seconds left."""
    modes = [] if args.no_compile else args.compile_modes
    b.report.say(f"\n-- torch.compile ({', '.join(modes) or 'none'}), each in a subprocess "
                 f"killed at the deadline ({args.deadline:.0f} s); none started with less "
                 f"than {args.compile_allowance:.0f} s left")  # fmt: skip
    for mode, name, dtype, batch in compile_plan(b, modes):
        key, peer = f"{name}-{dtype}-b{batch}", f"compile {mode}"
        left = b.left()
        if left < args.compile_allowance:
            b.report.say(f"{key:<28} {peer} skipped: {max(left, 0):.0f} s left")
            b.timings.setdefault(key, {}).setdefault("skipped", []).append(peer)
            continue
        _compile_one(b, where, name, dtype, batch, mode, left)


def _compile_one(b: Bench, where, name: str, dtype: str, batch: int, mode: str, left: float):
    import subprocess

    key, peer = f"{name}-{dtype}-b{batch}", f"compile {mode}"
    work = Path(tempfile.mkdtemp(prefix="resdsl-compile-"))
    log = b.report.out / f"compile-{key}-{mode}.log"
    info = b.models[name]
    cmd = [
        sys.executable, str(PACKAGE), "compile-peer",
        "--model", name, "--spec", str(info.get("spec") or ""), "--dtype", dtype,
        "--batch", str(batch), "--mode", mode, "--seed", str(b.seed),
        "--shape", ",".join(map(str, info["input_shape"])), "--device", b.dev,
        "--repeats", str(b.repeats), "--budget", str(b.budget), "--work", str(work),
    ] + (["--tf32"] if b.tf32 else [])  # fmt: skip
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
    wall = time.perf_counter() - start
    result_file = work / "result.json"
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if rc is None or "ms" not in result:
        why = (f"killed at the deadline after {wall:.0f} s" if rc is None
               else result.get("error") or f"exit status {rc}; see {log.name}")  # fmt: skip
        b.report.say(f"{key:<28} {peer} not measured: {why}")
        b.timings.setdefault(key, {}).setdefault("failed", {})[peer] = why
        shutil.rmtree(work, ignore_errors=True)
        return
    out = np.load(work / "out.npy")
    shutil.rmtree(work, ignore_errors=True)
    diff = float(np.abs(out - b.refs[(name, batch)]).max())
    record_peer(b, key, peer, result["ms"] / 1e3, diff)
    b.timings[key].setdefault("peer_compile_s", {})[peer] = result["compile_s"]
    more = f"; compiled in {result['compile_s']:.0f} s, {wall:.0f} s in all"
    _say_peer(b, key, peer, result["ms"] / 1e3, result["repeats"], diff, more)


def _kill_group(proc) -> None:
    import contextlib
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def compile_child(args: argparse.Namespace) -> int:
    """``compile-peer`` (internal): one torch.compile peer in this process; writes
    ``WORK/result.json`` (ms, repeats, compile_s) and ``WORK/out.npy`` (its output, float32)."""
    import torch

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    if args.model == "tiny":
        from .peers_check import tiny_resnet

        module = tiny_resnet()
    else:
        module, _ = seeded_weights(args.model, args.seed, Path(args.spec) if args.spec else None)
    shape = tuple(int(s) for s in args.shape.split(","))
    x = torch.from_numpy(seeded_input(args.batch, args.seed, shape)).to(args.device)
    module = module.to(args.device)
    if args.dtype == "float16":
        module, x = module.half(), x.half()
    module = module.to(memory_format=torch.channels_last).eval()
    x = x.contiguous(memory_format=torch.channels_last)

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    try:
        compiled = torch.compile(module, mode=args.mode)
        start = time.perf_counter()
        with torch.inference_mode():
            out = compiled(x).float().cpu().numpy()  # a copy: CUDA graphs reuse outputs
            compile_s = time.perf_counter() - start
            med, n = median_time(lambda: compiled(x), sync, args.repeats, args.budget)
    except Exception as e:
        result = {"error": f"{type(e).__name__}: {first_lines(e, 2)[:300]}"}
        (work / "result.json").write_text(json.dumps(result) + "\n")
        return 1
    np.save(work / "out.npy", out)
    result = {"ms": med * 1e3, "repeats": n, "compile_s": compile_s}
    (work / "result.json").write_text(json.dumps(result) + "\n")
    return 0
