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
DEVICE_MACHINE = "x86_64"  # the GPU machine's CPU (the platform of that core's wheel)
CARRY_LIMIT_MIB = 64.0  # how much may travel to the GPU machine (working tree + bundle)

# Where each model's spec comes from; torchvision's models are the reference for theirs, the
# others are compared with resdsl's own PyTorch backend (net.to_torch).
SPECS = {
    "resnet18": ROOT / "examples" / "resnet18.res",  # imports std.resnet (ships in resdsl)
    "resnet50": ROOT / "examples" / "resnet50.res",
    "edges": ROOT / "benchmarks" / "specs" / "edges.res",  # edge shapes for the CUDA rule
}
TORCHVISION = {"resnet18", "resnet50"}
# (model, dtype, batch, variant). A variant is resdsl's default build ("") or one that differs
# from it in one BuildOptions field, for comparison in the same run (see VARIANTS).
CONFIGS = [
    ("resnet18", "float32", 1, ""),
    ("resnet18", "float16", 1, ""),
    ("resnet50", "float32", 1, ""),
    ("resnet50", "float16", 1, ""),
    ("resnet50", "float32", 32, ""),
    ("resnet50", "float16", 32, ""),
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
# torch.compile's modes, in the order they run (each for every shape before the next, so a
# run cut short by --deadline still has the first ones): "reduce-overhead" and
# "max-autotune" replay the compiled model as CUDA graphs, as resdsl's artifact replays its
# own; "max-autotune" also autotunes its matmul/convolution kernels (slow to compile).
COMPILE_MODES = ("reduce-overhead", "default", "max-autotune")
# The PyTorch peers an artifact is compared with; the summary's ratio is against the fastest
# one measured. Eager runs with cudnn.benchmark on, in NCHW and in channels_last.
PEERS = ("eager", "eager channels_last", *(f"compile {m}" for m in COMPILE_MODES))
HOLE_MIN_BYTES = 1024  # smaller constants stay in the skeleton
FP32_ABS_TOL = 1e-3
FP16_REL_TOL = 1e-2

EXIT_FAIL, EXIT_NO_GPU, EXIT_ENV = 1, 2, 3


def log(*parts: Any) -> None:
    print(*parts, flush=True)


def artifact_name(model: str, dtype: str, batch: int, variant: str = "") -> str:
    return f"{model}-{dtype}-b{batch}" + (f"-{variant}" if variant else "")
