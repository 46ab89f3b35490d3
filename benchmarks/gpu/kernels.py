"""The artifacts' CUDA kernels compiled in parallel before they are loaded (the GPU machine).

TVM 0.27 keeps an artifact's kernels in model.so as CUDA C++ and compiles them when it is
loaded, through the global function ``tvm_callback_cuda_compile`` (NVRTC), one artifact
after another: some 15-30 s each, minutes for sixteen artifacts, out of a ten-minute run.
So before the first load, :func:`precompile` finds each artifact's source in its model.so
(stored verbatim after its uint64 length), compiles the distinct sources in parallel worker
processes (``python benchmarks/gpu nvrtc-worker``) by the very function a load calls, after
the same set-up (resdsl.runtime's, for a runtime-only TVM), and :func:`install` puts a
wrapper in front of ``tvm_callback_cuda_compile`` that answers a source it has compiled
from that cache and passes any other to the original. The kernels are the same bytes;
only when they are compiled changes. Anything that fails here leaves the loads as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .settings import PACKAGE

MARK = b"\n#ifdef __CUDACC_RTC__"  # how TVM's CUDA codegen starts a source


def sha(code: str | bytes) -> str:
    return hashlib.sha256(code.encode() if isinstance(code, str) else code).hexdigest()


def embedded_cuda_sources(so: bytes) -> list[str]:
    """The CUDA sources stored in a model.so: each starts with MARK, after its length."""
    found, at = [], so.find(MARK)
    while at >= 8:
        (length,) = struct.unpack("<Q", so[at - 8 : at])
        code = so[at : at + length]
        if 0 < length <= len(so) - at and b"__global__" in code:
            with contextlib.suppress(UnicodeDecodeError):
                found.append(code.decode())
        at = so.find(MARK, at + 1)
    return found


def precompile(paths: list[Path], workers: int, timeout: float, say) -> dict[str, bytes]:
    """Compile the CUDA sources of the model.so files ``paths`` in ``workers`` processes;
    {sha256 of source: cubin} for those that compiled within ``timeout`` seconds."""
    sources: dict[str, str] = {}
    for p in paths:
        for code in embedded_cuda_sources(p.read_bytes()):
            sources.setdefault(sha(code), code)
    if not sources:
        say("kernels: no CUDA source found in the artifacts; they compile when loaded")
        return {}
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="resdsl-nvrtc-"))
    for key, code in sources.items():
        (work / f"{key}.cu").write_text(code)
    keys = sorted(sources)
    n = max(1, min(workers, len(keys)))
    procs = []
    for i in range(n):
        cmd = [sys.executable, str(PACKAGE), "nvrtc-worker", str(work), *keys[i::n]]
        log = open(work / f"worker{i}.log", "w")  # noqa: SIM115  (closed below)
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        try:
            proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    cache = {k: (work / f"{k}.cubin").read_bytes() for k in keys if (work / f"{k}.cubin").is_file()}
    if len(cache) < len(keys):
        tail = (work / "worker0.log").read_text()[-500:]
        say(f"kernels: {len(keys) - len(cache)} of {len(keys)} sources did not precompile "
            f"(they compile when loaded); worker 0 said: {tail.strip()}")  # fmt: skip
    say(f"kernels: {len(cache)} of {len(keys)} CUDA sources compiled in {n} processes in "
        f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    return cache


def install(cache: dict[str, bytes]):
    """Answer ``tvm_callback_cuda_compile`` from ``cache``, else as before; returns the
    statistics {"hits": n, "misses": n} as they accrue."""
    import tvm_ffi
    from tvm.support import nvcc  # registers the original callback

    original = nvcc.tvm_callback_cuda_compile
    stats = {"hits": 0, "misses": 0}

    def cached(code):
        hit = cache.get(sha(str(code)))
        if hit is None:
            stats["misses"] += 1
            return original(code)
        stats["hits"] += 1
        return hit

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", cached, override=True)
    return stats


def worker(argv: list[str]) -> int:
    """``nvrtc-worker DIR SHA...``: compile DIR/SHA.cu to DIR/SHA.cubin as a load would."""
    work, keys = Path(argv[0]), argv[1:]
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
    import torch  # noqa: F401  (libcudart, as in device)
    import tvm

    import resdsl.runtime

    resdsl.runtime._cuda_runtime(tvm)
    from tvm.support import nvcc

    for key in keys:
        code = (work / f"{key}.cu").read_text()
        out = nvcc.tvm_callback_cuda_compile(code)
        (work / f"{key}.cubin.tmp").write_bytes(bytes(out))
        os.replace(work / f"{key}.cubin.tmp", work / f"{key}.cubin")
    return 0
