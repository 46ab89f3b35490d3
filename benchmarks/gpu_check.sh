#!/usr/bin/env bash
# GPU check of resdsl's CUDA artifacts: parity with torchvision and latency next to PyTorch.
#
# Two halves, on two machines; the Python for both is the package benchmarks/gpu/ (its
# docstring says what each machine needs, its modules go phase by phase).
#
#   bash benchmarks/gpu_check.sh prepare [OPTIONS]   # the build machine: TVM's compiler,
#                                                    # no GPU (up-to-date artifacts are kept)
#   bash benchmarks/gpu_check.sh run [OPTIONS]       # the GPU machine, unattended
#
# prepare options: --arch SM, --device-python X.Y, --carry-limit-mib N, --only NAME..., --force
#   (python benchmarks/gpu prepare --help). run options: --only TEXT..., --no-compile,
#   --compile-modes MODE..., --deadline S (python benchmarks/gpu device --help).
# Environment: BUNDLE_DIR (default build/gpu: what prepare builds and run reads, the one
#   path to carry to the GPU machine besides the working tree), OUT (where run writes its
#   results; default build/gpu-results), PYTHON (run's interpreter; default python3),
#   GPU_CHECK_TIMEOUT (seconds before run is killed; default 540: keep --deadline, default
#   450, below it).
# Results: $OUT/gpu_results.txt (the report), $OUT/gpu_results.json, $OUT/gpu_check.log.
# Exit status: 0 all artifacts match the reference; 1 a mismatch or an artifact that failed;
# 2 no GPU (prepare's dry run ends so, after rebuilding and importing everything);
# 3 the environment lacks something (the message says what).
#
# What travels, and why
# ---------------------
# The GPU machine needs nothing of ours installed: prepare puts it all in the bundle:
#   pylib/tvm       the installed tvm package without lib/libtvm_compiler.so (the
#                   compiler), 3rdparty/, src/, include/, web/, cmake/ and bytecode caches.
#                   Without the compiler library it imports with TVM_USE_RUNTIME_LIB=1.
#   pylib/tvm_ffi   without its sources, headers and test library, with its compiled core
#                   for both this machine's CPython (for the self-test) and the GPU
#                   machine's (--device-python; taken from the same apache-tvm-ffi
#                   version's wheel: the core is CPython-version specific, the rest of the
#                   wheel is identical).
#   pylib/lark, pylib/resdsl (all of it, grammar included)
#   artifacts/<model>-<dtype>-b<batch>[-<variant>]/  the CUDA artifacts of CONFIGS in
#                   benchmarks/gpu/settings.py, built for --arch: resnet18 and resnet50 in
#                   fp32 and fp16 with resdsl's defaults; resnet50 fp16 built two other ways
#                   for comparison in the same run: "tvm" (TVM's default GPU pipeline) and
#                   "nchw" (convolutions in NCHW); and "edges" (benchmarks/specs/edges.res:
#                   odd sizes and channel counts, stride 2, groups), whose reference is
#                   resdsl's PyTorch backend -- as skeletons, see below
#   specs/, manifest.json (seed, sha256 of the weights and of every model.so, tolerances)
#
# Why skeletons. The weights are compiled into model.so, once per batch size, and random
# weights do not compress; together they are far larger than a working tree. But the
# weights need not travel: they are derived from a seed. So prepare finds each weight
# constant in model.so (every one is a tensor of the weights after resdsl's inference
# passes -- batch norm folded -- cast to the artifact's dtype, the classifier's transposed,
# NHWC convolutions' in OHWI) and cuts it out; what is left (kernels, code, metadata) is
# xz-compressed, with the list of holes. The GPU side draws the same weights from the
# seed, runs the same resdsl passes (from the carried copy), refills the holes and checks
# the sha256 of the result against the model.so that was compiled here: it runs exactly the
# compiled artifacts, bit for bit. prepare prints the sizes, and fails if the bundle and
# the working tree together exceed --carry-limit-mib.
#
# The weights. torchvision's resnet18/resnet50 (their state_dicts load into the specs
# strictly), filled from NumPy's PCG64 seeded per tensor with torchvision's init scales,
# batch norms drawn away from the identity so that folding is tested. Not torch's RNG:
# its initialisers take CPU-dependent vectorised paths, and both machines must draw the
# same bits (the GPU side checks a sha256 and stops with a message if they differ).
#
# What the GPU side must do besides `resdsl.runtime.load` (which, for a runtime-only TVM,
# loads tvm/lib/libtvm_runtime_cuda.so and lets TVM's CUDA compiler hook run without the
# compiler library's Target object):
#  * import torch first: it loads the libcudart that TVM's CUDA runtime library links;
#  * TVM_FFI_DISABLE_TORCH_C_DLPACK=1, or tvm_ffi JIT-compiles a torch extension on import;
#  * compile the kernels: TVM 0.27 stores them in model.so as CUDA C++ and compiles them
#    when the artifact is loaded, with NVRTC from `cuda-bindings` (PyTorch's CUDA wheels
#    bring it) and the CUDA toolkit's headers (CUDA_PATH, found from nvcc). If
#    cuda-bindings is missing but nvcc is there, TVM_CUDA_COMPILE_MODE=nvcc is used;
#    with neither, the run stops with a message. prepare already compiled every
#    artifact's kernels with NVRTC for the target architecture, so they are known to compile.
#
# The checks (on the GPU, same seeded input): the fp32 reference is torchvision (for
# "edges": resdsl's PyTorch backend, net.to_torch) in fp32
# with TF32 off; resdsl fp32 must match it within 1e-3 abs, resdsl fp16 within
# 1e-2 * max|reference|. Latencies (median, synchronised per call): resdsl's VM on
# device-resident tensors (and through resdsl.runtime's NumPy call, copies included), and
# its PyTorch peers on the same model, dtype and batch: eager fp32 (TF32 off) and fp16 with
# cudnn.benchmark, in NCHW and in channels_last; torch.compile in modes "reduce-overhead"
# and "max-autotune" (both replay CUDA graphs, as resdsl's artifact does) and "default",
# mode by mode for as many shapes as --deadline allows (each compiles anew). The summary
# gives each artifact's ratio against eager and against the fastest peer measured.
# All of that does not fit one run: narrow it with --only and --compile-modes.
#
# Tested on the build machine: prepare compiles, NVRTC-checks, punches and rebuilds every
# artifact, then runs the device code on llvm artifacts in a subprocess that imports only
# the bundle's pylib, and finally dry-runs `run` (rebuild, import, stop on "no GPU").
# `python benchmarks/gpu peers-check` runs the PyTorch peers (eager NCHW/channels_last,
# torch.compile in each mode) and the summary on the CPU, on a tiny network.

set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 3
bundle="${BUNDLE_DIR:-build/gpu}"

case "${1:-}" in
prepare)
    shift
    exec python benchmarks/gpu prepare --bundle "$bundle" "$@"
    ;;
run)
    shift
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh prepare|run [OPTIONS]" >&2
    exit 2
    ;;
esac

out="${OUT:-$root/build/gpu-results}"
mkdir -p "$out"
py="${PYTHON:-python3}"
if [ ! -f "$bundle/manifest.json" ]; then
    echo "error: $bundle/manifest.json is missing: run 'bash benchmarks/gpu_check.sh prepare'" \
        "on the build machine and carry $bundle" | tee "$out/gpu_check.log" >&2
    exit 3
fi
case "$bundle" in
/*) pylib="$bundle/pylib" ;;
*) pylib="$root/$bundle/pylib" ;;
esac
export PYTHONPATH="$pylib"
export TVM_USE_RUNTIME_LIB=1 TVM_FFI_DISABLE_TORCH_C_DLPACK=1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# Pre-flight: messages for what would otherwise fail deep inside an import.
ver="$($py -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
if ! ls "$pylib"/tvm_ffi/core.cpython-"$ver"-*.so >/dev/null 2>&1; then
    echo "error: the carried tvm_ffi has no compiled core for this Python ($($py -V)):" \
        "rerun prepare with --device-python X.Y" | tee "$out/gpu_check.log" >&2
    exit 3
fi
if ! $py -c 'from cuda.bindings import nvrtc' >/dev/null 2>&1; then
    echo "WARNING: the cuda-bindings package (NVRTC) is missing: TVM needs it to compile the" \
        "artifacts' CUDA kernels when they are loaded (pip install cuda-bindings matching" \
        "the CUDA version); falling back to nvcc if there is one" | tee -a "$out/gpu_check.log"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    | tee -a "$out/gpu_check.log"

# The Python stops starting torch.compile runs at its --deadline; timeout is the backstop
# (the results files are rewritten after every step, so a killed run still leaves them).
timeout "${GPU_CHECK_TIMEOUT:-540}" "$py" benchmarks/gpu device --artifacts "$bundle" \
    --out "$out" "$@" 2>&1 | tee -a "$out/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "gpu_check: exit status $rc; results in $out" | tee -a "$out/gpu_check.log"
exit "$rc"
