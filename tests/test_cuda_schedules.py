"""resdsl's CUDA schedules, checked without a GPU: which kernels go to tensor cores, with
what accumulator, tile and shared memory, and that NVRTC compiles them.

Numerical parity on a GPU is benchmarks/gpu_check.sh's job (it compares every artifact
with torchvision); the kernels here are the same code paths on small shapes.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

pytest.importorskip("tvm")

import resdsl
from resdsl.backends.tvm import BuildOptions, build, cuda_source, resolve
from resdsl.backends.tvm.lower import to_relax
from resdsl.backends.tvm.schedules.cuda import (
    STATIC_SHARED,
    Tile,
    choose_tile,
    launchable,
    shared_bytes,
)
from resdsl.passes import run_inference_passes

from .conftest import ROOT

# 64 channels (TVM's default rules keep those off tensor cores), a strided 1x1 projection,
# a 7x7 map at the end (batch 1: 49 rows), a grouped conv and a classifier.
SPEC = """
network convs() (x: (16, 28, 28)) {
    y = x -> stem: conv2d(64, 3, padding=1) -> batchnorm2d -> relu
    y = (y -> a: conv2d(64, 3, padding=1) -> relu) + y
    z = y -> p: conv2d(128, 1, stride=4) -> relu
    z = z -> g: conv2d(128, 3, padding=1, groups=4) -> relu
    return z -> global_avgpool -> fc: linear(10)
}
"""


def _kernels(source: str) -> dict[str, str]:
    """Kernel name -> body, from the generated CUDA C++."""
    heads = list(re.finditer(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(", source))
    ends = [h.start() for h in heads[1:]] + [len(source)]
    return {h.group(1): source[h.start() : end] for h, end in zip(heads, ends, strict=True)}


@pytest.fixture(scope="module")
def fp16_source():
    net = resdsl.loads(SPEC)
    weights, _ = resolve(net.graph, None, 0)
    options = BuildOptions(target="cuda", arch="sm_90", dtype="float16", batch=1)
    return cuda_source(build(net, weights, options))


def test_tile_choice():
    # A large GEMM takes the largest tile.
    assert choose_tile(4096, 4096) == Tile(4, 4)
    # 64 columns: a 128-wide tile would be half padding; 128 x 64 pads nothing.
    assert choose_tile(32 * 56 * 56, 64) == Tile(4, 2)
    assert choose_tile(64, 32 * 56 * 56) == Tile(2, 4)
    # 64 x 64 would pad nothing but does not launch (below): 32 x 64 does.
    assert choose_tile(64, 64) == Tile(1, 2)
    # 49 rows (batch 1, 7x7 pixels), 512 columns: tiles of 32 or 64 rows both pad the rows
    # to 64 (31%), 128 rows to 128; least padding, then most warps: 64 x 128.
    assert choose_tile(49, 512) == Tile(2, 4)
    # 1000 columns: 128 x 128 pads by 2.4%.
    assert choose_tile(256, 1000) == Tile(4, 4)
    assert (Tile(2, 4).rows, Tile(2, 4).cols, Tile(2, 4).warps) == (64, 128, 8)


def test_launchable_tiles():
    # static + dynamic shared memory over 48 KiB with the dynamic part under it: TVM does not
    # opt the kernel in, and the launch fails (seen on an H200). 64x64: 16 KiB of float32
    # staging + 2 stages x (64 + 64) rows x 72 halves = 36 KiB.
    assert shared_bytes(Tile(2, 2)) == (16384, 36864)
    assert not launchable(Tile(2, 2))
    # 128x64: 32 KiB static, 54 KiB dynamic (opted in); 32x32: 22.5 KiB in all
    assert launchable(Tile(4, 2)) and launchable(Tile(1, 1))
    # 128x128: the staging (64 KiB) is dynamic too
    assert shared_bytes(Tile(4, 4)) == (0, 2 * 2 * 256 * 72 + 65536)


def test_default_cuda_layouts():
    assert BuildOptions(target="cuda", dtype="float16").cuda_layout() == "NHWC"
    assert BuildOptions(target="cuda", dtype="float32").cuda_layout() == "NCHW"
    assert BuildOptions(target="cuda", dtype="float16", layout="NCHW").cuda_layout() == "NCHW"


def test_float16_convolutions_run_in_nhwc(fp16_source):
    convs = [n for n in _kernels(fp16_source) if "conv2d" in n]
    assert convs and all("nhwc" in _kernels(fp16_source)[n] for n in convs)


def test_float16_products_accumulate_in_float32():
    net = resdsl.loads(SPEC)
    weights, _ = resolve(net.graph, None, 0)
    graph, folded = run_inference_passes(net.graph, weights)
    text = to_relax(graph, folded, dtype="float16").script()
    convs = re.findall(r"R\.nn\.conv2d\(.*", text)
    assert len(convs) == 4 and all('out_dtype="float32"' in c for c in convs)
    assert "R.matmul(" in text and text.count("R.astype(") >= 5  # each back to float16


def test_every_float16_conv_runs_on_tensor_cores(fp16_source):
    kernels = _kernels(fp16_source)
    convs = {name: body for name, body in kernels.items() if "conv2d" in name}
    assert len(convs) == 4  # stem, a, p, g: each fused with its epilogue
    # a grouped conv does not normalise to one matmul: dlight's rules take it (FMA units)
    grouped = [n for n, b in convs.items() if "wmma" not in b]
    assert len(grouped) == 1 and "/ 4)" not in grouped[0]
    for name, body in convs.items():
        if name in grouped:
            continue
        assert "wmma::mma_sync" in body, name
        assert "wmma::accumulator, 16, 16, 16, float>" in body, name
        assert "wmma::accumulator, 16, 16, 16, half>" not in body, name
    # the classifier at batch 1 is a matrix-vector product: not a tensor-core kernel
    fc = [b for n, b in kernels.items() if "matmul" in n]
    assert fc and all("wmma" not in b for b in fc)


def test_static_shared_memory_fits(fp16_source):
    for name, body in _kernels(fp16_source).items():
        static = re.findall(r"__shared__ [^;]*?(float|half|int) \w+\[(\d+)\]", body)
        size = {"float": 4, "half": 2, "int": 4}
        assert sum(size[t] * int(n) for t, n in static) <= STATIC_SHARED, name


def test_large_tile_uses_dynamic_shared_memory():
    net = resdsl.loads("network big() (x: (64, 64, 64)) { return x -> conv2d(256, 1) }")
    weights, _ = resolve(net.graph, None, 0)
    options = BuildOptions(target="cuda", arch="sm_90", dtype="float16", batch=8)
    source = cuda_source(build(net, weights, options))
    # 8 * 64 * 64 rows x 256 columns: 128x128 tiles (256 blocks); their float32 staging
    # (64 KiB) is over the static limit, so it is dynamic shared memory
    assert "wmma::mma_sync" in source
    assert not re.search(r"__shared__ [^;]*float \w+\[\d+\]", source)
    assert "buf_dyn_shmem" in source


def _cuda_headers() -> str | None:
    nvcc = shutil.which("nvcc")
    for root in (
        os.environ.get("CUDA_PATH"),
        nvcc and os.path.dirname(os.path.dirname(os.path.realpath(nvcc))),
        "/usr/local/cuda",
    ):
        if root and os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")):
            return root
    return None


def test_nvrtc_compiles_the_kernels(fp16_source, monkeypatch):
    pytest.importorskip("cuda.bindings.nvrtc")
    from tvm.support import nvcc

    headers = _cuda_headers()
    if headers is None:
        pytest.skip("no CUDA toolkit headers")
    monkeypatch.setenv("CUDA_PATH", headers)
    cubin = nvcc.compile_cuda(fp16_source, target_format="cubin", arch="sm_90", compiler="nvrtc")
    assert len(cubin) > 10_000


# --- parity on a GPU (runs where one is present; elsewhere the builds alone are checked) ---

# Shapes chosen against the tensor-core rule (odd sizes and channel counts, stride 2, 1x1 and
# 5x5 kernels, a grouped conv, a residual add): the network `benchmarks/gpu_check.sh prepare
# --extra` adds to the GPU check.
EDGES = ROOT / "benchmarks" / "specs" / "edges.res"


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_edge_shapes_match_pytorch_on_a_gpu(tmp_path, dtype, batch):
    import numpy as np
    import torch
    import tvm

    from resdsl import runtime
    from resdsl.backends.tvm import compile_network

    from .torch_helpers import randomise_batchnorm

    net = resdsl.load(EDGES)
    module = randomise_batchnorm(net.to_torch(seed=0).eval())
    options = BuildOptions(target="cuda", arch="sm_80", dtype=dtype, batch=batch)
    compile_network(net, str(tmp_path / "out"), options, weights=module)
    if not tvm.cuda(0).exist:
        pytest.skip("no CUDA GPU here: built only")
    x = np.random.default_rng(batch).standard_normal((batch, 5, 13, 11)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = runtime.load(tmp_path / "out")(x.astype(dtype)).astype(np.float32)
    scale = float(np.abs(want).max())
    tolerance = 1e-2 * scale if dtype == "float16" else 1e-4 * max(scale, 1.0)
    assert float(np.abs(got - want).max()) <= tolerance


def test_a_kernel_the_intrinsics_do_not_fit_falls_back_to_dlight(monkeypatch):
    from tvm import s_tir

    def refuse(*args, **kwargs):
        raise RuntimeError("ScheduleError: the intrinsic does not match")

    monkeypatch.setattr(s_tir.Schedule, "tensorize", refuse)
    net = resdsl.loads("network one() (x: (64, 14, 14)) { return x -> conv2d(64, 3, padding=1) }")
    weights, _ = resolve(net.graph, None, 0)
    options = BuildOptions(target="cuda", arch="sm_90", dtype="float16")
    source = cuda_source(build(net, weights, options))
    assert "conv2d" in source and "wmma" not in source  # built, on dlight's FMA schedule


def test_a_dlight_rule_that_fails_an_assertion_passes_the_kernel_on(monkeypatch):
    """dlight's Matmul asserts that a matmul's epilogue inlines (EfficientNet-B0's SE
    epilogues at batch 32 do not): the next rule schedules the kernel instead of the build
    stopping with an internal error."""
    from tvm.s_tir import dlight

    calls = []

    def fails(self, func, target, tunable):
        calls.append(func)
        raise AssertionError("There are some consumers of the cache-write stage that are not")

    monkeypatch.setattr(dlight.gpu.Matmul, "apply", fails)
    net = resdsl.loads("network one() (x: (8, 6)) { return x -> linear(16) -> relu }")
    weights, _ = resolve(net.graph, None, 0)
    source = cuda_source(build(net, weights, BuildOptions(target="cuda", arch="sm_90")))
    assert calls and "__global__" in source  # asked, failed, and built by another rule
