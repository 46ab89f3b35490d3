"""What the GPU check builds and how it judges it; the defaults of its options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent  # run as ``python PACKAGE prepare|device``
ROOT = PACKAGE.parent.parent
FORMAT = "resdsl-gpu-check/1"

# Defaults of the command-line options: where things go, and what the GPU machine is.
BUNDLE = ROOT / "build" / "gpu"  # everything the GPU side needs; carried as one path
SELFTEST = ROOT / "build" / "gpu-selftest"  # CPU self-test of the bundle; not carried
CACHE = ROOT / "build" / "gpu-cache"  # downloaded wheels; not carried
ARCH = "sm_90"  # the GPU architecture the artifacts are compiled for
DEVICE_PYTHON = "3.12"  # the GPU machine's CPython (tvm_ffi's compiled core is per version)
# tvm_ffi's core is also carried for these, when their wheel can be had, so that a GPU machine
# with another CPython still runs (one device call leaves no second try); ~1 MiB each.
SPARE_PYTHONS = ("3.10", "3.11", "3.13")
DEVICE_MACHINE = "x86_64"  # the GPU machine's CPU (the platform of that core's wheel)
CARRY_LIMIT_MIB = 64.0  # how much may travel to the GPU machine (working tree + bundle)
# The device run's time: one call of at most 600 s on the lent machine. gpu_check.sh kills
# `run` after TIMEOUT s (GPU_CHECK_TIMEOUT); the Python starts nothing after DEADLINE s and
# kills a torch.compile still running then, leaving the rest for the summary and clean-up;
# it starts no torch.compile with less than COMPILE_ALLOWANCE s left.
TIMEOUT = 570.0
DEADLINE = 530.0
COMPILE_ALLOWANCE = 45.0
# The steps of ``dry-run`` (``--skip`` leaves some out; see dryrun.py).
DRY_RUN_STEPS = ("options", "configs", "references", "bundle", "rebuild", "peers", "report")

# Where each model's spec comes from; torchvision's models are the reference for theirs (their
# state_dicts load strictly into the specs), the others are compared with resdsl's own
# PyTorch backend (net.to_torch).
SPECS = {
    "resnet18": ROOT / "examples" / "resnet18.res",  # imports std.resnet (ships in resdsl)
    "resnet50": ROOT / "examples" / "resnet50.res",
    "convnext_tiny": ROOT / "examples" / "convnext_tiny.res",
    "efficientnet_b0": ROOT / "examples" / "efficientnet_b0.res",
    "vit_b_16": ROOT / "examples" / "vit_b_16.res",
    "edges": ROOT / "benchmarks" / "specs" / "edges.res",  # edge shapes for the CUDA rule
}
TORCHVISION = {"resnet18", "resnet50", "convnext_tiny", "efficientnet_b0", "vit_b_16"}

# Issue 20's matrix: the models, batches and dtypes measured against PyTorch's best peer.
MODELS = ("resnet50", "convnext_tiny", "efficientnet_b0", "vit_b_16")
BATCHES = (1, 32)
DTYPES = ("float16", "float32")
# (model, dtype, batch, variant), in the order the device run measures them (most important
# first: float16 before float32, batch 1 before 32, the models in MODELS' order). A variant
# is resdsl's default build ("") or one that differs from it in one BuildOptions field, for
# comparison in the same run (see VARIANTS).
CONFIGS = [(m, d, b, "") for d in DTYPES for b in BATCHES for m in MODELS]
# Built only with ``prepare --extra``: the configurations of the earlier checks (resnet18,
# resnet50 fp16 built two other ways: "tvm" = TVM's default GPU pipeline, "nchw" = its
# convolutions in NCHW; "edges" = odd sizes and channel counts, stride 2, groups).
EXTRA_CONFIGS = [
    ("resnet18", "float32", 1, ""),
    ("resnet18", "float16", 1, ""),
    *(("resnet50", "float16", b, v) for b in (1, 32) for v in ("tvm", "nchw")),
    ("edges", "float32", 3, ""),
    ("edges", "float16", 1, ""),
    ("edges", "float16", 3, ""),
]
SELFTEST_CONFIGS = [("resnet18", "float32", 1, ""), ("edges", "float32", 3, "")]
VARIANTS: dict[str, dict[str, Any]] = {
    "": {},
    "tvm": {"schedules": "tvm"},  # TVM's default GPU pipeline (dlight), no CUDA graph
    "nchw": {"layout": "NCHW"},  # float16 convolutions in NCHW (the default is NHWC)
}
# torch.compile's modes (--compile-modes; issue 20 asks for "max-autotune" only, the
# default). "reduce-overhead" and "max-autotune" replay the compiled model as CUDA graphs,
# as resdsl's artifact replays its own; "max-autotune" also autotunes its matmul and
# convolution kernels (slow to compile: each runs in a subprocess bounded by the deadline).
COMPILE_MODES = ("max-autotune", "reduce-overhead", "default")
DEFAULT_COMPILE_MODES = ("max-autotune",)
# The PyTorch peers an artifact is compared with; the summary's ratio is against the fastest
# one measured. "eager channels_last": cuDNN with cudnn.benchmark; "cuda graph": that eager
# model captured once with torch.cuda.graph and replayed; "eager" (NCHW, --eager-nchw) is
# timed only when asked (the float32 reference always runs in it).
PEERS = ("eager", "eager channels_last", "cuda graph", *(f"compile {m}" for m in COMPILE_MODES))
# Issue 20's targets: resdsl / best peer at most this, by dtype and batch (batch > 1: the
# batch-32 target); only for resdsl's default build of a model in MODELS.
TARGETS = {("float16", 1): 1.0, ("float16", 32): 1.2, ("float32", 1): 1.2, ("float32", 32): 1.2}
# Datasheet peaks (TFLOP/s, dense: without 2:4 sparsity), matched against
# torch.cuda.get_device_name in this order: "fp16" tensor cores (float16 inputs, float32
# accumulate), "tf32" tensor cores, "fp32" CUDA cores (what resdsl's float32 kernels use).
PEAKS = (
    ("H200 NVL", {"fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H200", {"fp16": 989.5, "tf32": 494.5, "fp32": 67.0}),  # SXM (name: "NVIDIA H200")
    ("H100 NVL", {"fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H100 PCIe", {"fp16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    ("H100", {"fp16": 989.5, "tf32": 494.5, "fp32": 67.0}),  # SXM ("NVIDIA H100 80GB HBM3")
)
HOLE_MIN_BYTES = 1024  # smaller constants stay in the skeleton
FP32_ABS_TOL = 1e-3
FP16_REL_TOL = 1e-2

EXIT_FAIL, EXIT_NO_GPU, EXIT_ENV = 1, 2, 3


def log(*parts: Any) -> None:
    print(*parts, flush=True)


def artifact_name(model: str, dtype: str, batch: int, variant: str = "") -> str:
    return f"{model}-{dtype}-b{batch}" + (f"-{variant}" if variant else "")


def target_for(model: str, dtype: str, batch: int, variant: str = "") -> float | None:
    """Issue 20's bound on resdsl / best peer for this artifact, or None (no target)."""
    if variant or model not in MODELS:
        return None
    return TARGETS.get((dtype, 1 if batch == 1 else 32))


def peak_for(gpu_name: str | None) -> tuple[str, dict[str, float]] | None:
    """The datasheet peaks of the GPU called ``gpu_name``: (row matched, peaks) or None."""
    for pattern, peaks in PEAKS:
        if gpu_name and pattern.lower() in gpu_name.lower():
            return pattern, peaks
    return None


def tflops(macs: int, batch: int, seconds: float) -> float:
    """Achieved TFLOP/s: two FLOPs per multiply-accumulate, ``macs`` per sample."""
    return 2.0 * macs * batch / seconds / 1e12
