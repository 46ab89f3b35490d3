#!/usr/bin/env bash
# GPU check of resdsl's CUDA artifacts: parity with torchvision and latency against PyTorch's
# best peer (issue 20): resnet50, convnext_tiny, efficientnet_b0 and vit_b_16 at batch 1 and
# 32 in float16 and float32, in one device call of at most 10 minutes.
#
# Two halves, on two machines; the Python for both is the package benchmarks/gpu/ (its
# docstring says what each machine needs, its modules go phase by phase).
#
#   bash benchmarks/gpu_check.sh prepare [OPTIONS]   # the build machine: TVM's compiler,
#                                                    # no GPU (up-to-date artifacts are kept)
#   bash benchmarks/gpu_check.sh --dry-run [OPTIONS] # the build machine: everything of `run`
#                                                    # that needs no GPU; exit 0 = in order
#   bash benchmarks/gpu_check.sh run [OPTIONS]       # the GPU machine, unattended
#
# prepare options: --arch SM, --device-python X.Y, --carry-limit-mib N, --only NAME...
#   (adds to the bundle), --extra (also the earlier checks' artifacts), --force
#   (python benchmarks/gpu prepare --help).
# run options: --only TEXT..., --deadline S, --compile-modes MODE..., --no-compile, --tf32,
#   --eager-nchw, --no-precompile, --budget S, --repeats N (python benchmarks/gpu device
#   --help).
# --dry-run (also `run --dry-run`) takes the run options, plus --skip STEP... (options,
#   configs, references, bundle, rebuild, peers, report); python benchmarks/gpu dry-run.
# Environment: BUNDLE_DIR (default build/gpu: what prepare builds and run reads, the one
#   path to carry to the GPU machine besides the working tree), OUT (where run writes its
#   results; default build/gpu-results), PYTHON (run's interpreter; default python3),
#   GPU_CHECK_TIMEOUT (seconds before run is killed; default 570: keep --deadline, default
#   530, at least 25 s below it; the `run` tool's call needs timeout_s 600).
# Results: $OUT/gpu_results.txt (the report), $OUT/gpu_results.json, $OUT/gpu_check.log,
#   $OUT/compile-*.log (each torch.compile subprocess).
# Exit status: 0 all artifacts match the reference (targets met or not: the report says);
# 1 a mismatch or an artifact that failed, or a dry run that found something out of order;
# 2 no GPU (prepare's check of the device step ends so, after rebuilding and importing
# everything); 3 the environment lacks something (the message says what).
#
# What is measured, in this order (each step bounded by --deadline; the most important first)
# ----------------------------------------------------------------------------------------
#  1. rebuild every artifact (below), re-deriving the weights; compile the artifacts' CUDA
#     kernels in parallel processes (benchmarks/gpu/kernels.py: the function a load calls,
#     16 at a time, rather than one artifact after another as each loads; --no-precompile
#     turns it off, and anything failing there leaves the loads to compile them);
#  2. shape by shape, in settings.CONFIGS' order (float16 before float32, batch 1 before 32,
#     resnet50, convnext_tiny, efficientnet_b0, vit_b_16): the float32 reference
#     (torchvision, NCHW, TF32 off), the resdsl artifact (load, parity, median latency on
#     device-resident tensors), and two PyTorch peers: eager in channels_last with cuDNN
#     autotuned (cudnn.benchmark), and that eager model captured with torch.cuda.graph and
#     replayed (CUDA-graphed eager);
#  3. torch.compile(mode="max-autotune") (CUDA graphs, autotuned kernels) shape by shape in
#     the same order, each in a subprocess that is killed at the deadline; none starts with
#     under --compile-allowance (45 s) left. All 16 do not fit: the report lists the ones
#     not measured, and their rows' ratio is against the best of the peers that were;
#  4. the summary: per artifact the ratio resdsl / best peer, issue 20's target (float16
#     <= 1.0x at batch 1 and <= 1.2x at batch 32; float32 <= 1.2x) marked met / NOT met,
#     and the achieved TFLOP/s (2 x resdsl's MAC count x batch / latency) against the GPU's
#     datasheet dense peak (settings.PEAKS: H100/H200 SXM, PCIe, NVL; float16 tensor cores
#     for float16, float32 CUDA cores for float32).
# TF32 is off on both sides by default: resdsl's float32 kernels have no TF32 path, and the
# float32 peers run with cudnn/matmul allow_tf32 False (--tf32 allows it for the peers; the
# report says which). The reference never uses TF32.
#
# What travels, and why
# ---------------------
# The GPU machine needs nothing of ours installed: prepare puts it all in the bundle:
#   pylib/tvm       the installed tvm package without lib/libtvm_compiler.so (the
#                   compiler), 3rdparty/, src/, include/, web/, cmake/ and bytecode caches.
#                   Without the compiler library it imports with TVM_USE_RUNTIME_LIB=1.
#   pylib/tvm_ffi   without its sources, headers and test library, with its compiled core
#                   for both this machine's CPython (for the self-test) and the GPU
#                   machine's (--device-python, default 3.12, and as spares 3.10, 3.11
#                   and 3.13, ~1 MiB each; taken from the same apache-tvm-ffi version's
#                   wheels: the core is CPython-version specific, the rest of the wheel is
#                   identical).
#   pylib/lark, pylib/resdsl (all of it, grammar included)
#   artifacts/<model>-<dtype>-b<batch>[-<variant>]/  the CUDA artifacts of CONFIGS in
#                   benchmarks/gpu/settings.py, built for --arch with resdsl's defaults
#                   (with --extra also EXTRA_CONFIGS: resnet18, resnet50 float16 built with
#                   TVM's default GPU pipeline ("tvm") and with NCHW convolutions ("nchw"),
#                   and "edges", benchmarks/specs/edges.res, checked against resdsl's
#                   PyTorch backend) -- as skeletons, see below
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
# The weights. torchvision's models (their state_dicts load into the specs strictly),
# every floating tensor (batch-norm statistics, layer norms, ConvNeXt's layer scales, ViT's
# class token and position embedding included) filled from NumPy's PCG64 seeded per tensor
# with torchvision's init scales, norms drawn away from the identity so that folding is
# tested (benchmarks/gpu/weights.py). Not torch's RNG: its initialisers take CPU-dependent
# vectorised paths, and both machines must draw the same bits (the GPU side checks a sha256
# and stops with a message if they differ).
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
# Parity (on the GPU, same seeded input): resdsl float32 must match the float32 reference
# within 1e-3 abs, resdsl float16 within 1e-2 * max|reference|; a target is "met" only with
# parity.
#
# Tested on the build machine: prepare compiles, NVRTC-checks, punches and rebuilds every
# artifact, then runs the device code on llvm artifacts in a subprocess that imports only
# the bundle's pylib, and finally checks `run`'s first step (rebuild, import, stop on "no
# GPU"). --dry-run checks the options and time budget, the configurations, the seeded
# references on the CPU (strict loads, spec == torchvision), the bundle (up to date, carry
# size), the rebuild, the peer code (eager, the CUDA-graph code with a CPU stand-in,
# torch.compile in its subprocess) on a tiny network, and the report on made-up times.
# Not testable without a GPU: the CUDA graph capture itself, torch.compile's CUDA build,
# kernel compilation at load (NVRTC on the device), the timings.

set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 3
bundle="${BUNDLE_DIR:-build/gpu}"

case "${1:-}" in
prepare)
    shift
    exec python benchmarks/gpu prepare --bundle "$bundle" "$@"
    ;;
--dry-run)
    shift
    exec python benchmarks/gpu dry-run --artifacts "$bundle" "$@"
    ;;
run)
    shift
    if [ "${1:-}" = "--dry-run" ]; then
        shift
        exec python benchmarks/gpu dry-run --artifacts "$bundle" "$@"
    fi
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh prepare|run|--dry-run [OPTIONS]" >&2
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

# The Python starts nothing after its --deadline (and kills a torch.compile still running);
# timeout is the backstop
# (the results files are rewritten after every step, so a killed run still leaves them).
timeout "${GPU_CHECK_TIMEOUT:-570}" "$py" benchmarks/gpu device --artifacts "$bundle" \
    --out "$out" "$@" 2>&1 | tee -a "$out/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "gpu_check: exit status $rc; results in $out" | tee -a "$out/gpu_check.log"
exit "$rc"
