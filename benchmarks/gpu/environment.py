"""The machine the check runs on: CUDA toolkit, NVRTC, and importing the carried runtime."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .report import Report


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package is missing
        return False


def find_cuda_path() -> str | None:
    """A CUDA toolkit with headers (what TVM's NVRTC path needs), or None."""
    candidates = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda", *sorted(map(str, Path("/usr/local").glob("cuda-*")))]
    for c in candidates:
        if not c:
            continue
        for inc in ("include", "targets/x86_64-linux/include"):
            if os.path.isfile(os.path.join(c, inc, "cuda_runtime.h")):
                return c
    return None


def nvrtc_check(source: str, arch: str) -> dict[str, Any]:
    """Compile an artifact's kernels with NVRTC for ``arch``, as the GPU side will on load."""
    if not has_module("cuda.bindings"):
        return {"ok": None, "note": "cuda-bindings not installed here: NVRTC check skipped"}
    cuda_path = find_cuda_path()
    if cuda_path is None:
        return {"ok": None, "note": "no CUDA headers here: NVRTC check skipped"}
    os.environ["CUDA_PATH"] = cuda_path
    from tvm.support import nvcc

    start = time.perf_counter()
    try:
        # the GPU side compiles for the device's sm_90 as sm_90a (TVM adds the 'a' from sm_90 on)
        arch = arch + "a" if int(arch[3:]) >= 90 else arch
        cubin = nvcc.compile_cuda(source, target_format="cubin", arch=arch, compiler="nvrtc")
    except Exception as e:
        return {"ok": False, "note": f"NVRTC failed: {str(e)[:2000]}"}
    seconds = round(time.perf_counter() - start, 2)
    return {"ok": True, "arch": arch, "seconds": seconds, "cubin_bytes": len(cubin)}


def device_env(bundle: Path) -> dict[str, str]:
    """The environment the GPU step runs in (gpu_check.sh sets the same)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(bundle / "pylib")
    env["TVM_USE_RUNTIME_LIB"] = "1"
    env["TVM_FFI_DISABLE_TORCH_C_DLPACK"] = "1"  # else tvm_ffi JIT-builds a torch extension
    env["PYTHONUNBUFFERED"] = "1"
    return env


def probe(report: Report, want_cuda: bool) -> dict[str, Any]:
    """Versions, the GPU, NVRTC, the CUDA headers; None values are problems."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "numpy": np.__version__,
    }
    import torch
    import torchvision

    env["torch"] = torch.__version__
    env["torchvision"] = torchvision.__version__
    env["cuda_available"] = torch.cuda.is_available()
    if env["cuda_available"]:
        env["gpu"] = torch.cuda.get_device_name(0)
        env["capability"] = "sm_{}{}".format(*torch.cuda.get_device_capability(0))
    if want_cuda:
        try:
            from cuda.bindings import nvrtc

            _, major, minor = nvrtc.nvrtcVersion()
            env["nvrtc"] = f"{major}.{minor}"
        except Exception as e:  # ImportError, or a missing libnvrtc
            env["nvrtc"] = None
            env["nvrtc_error"] = f"{type(e).__name__}: {e}"
        env["cuda_path"] = find_cuda_path()
        env["nvcc"] = shutil.which("nvcc")
    report.data["env"] = env
    return env


def choose_kernel_compiler(report: Report, env: dict[str, Any]) -> None:
    """NVRTC, else nvcc: what compiles the artifacts' CUDA kernels when they are loaded."""
    report.say(
        f"NVRTC (cuda-bindings): {env['nvrtc'] or 'MISSING'} | CUDA headers: "
        f"{env['cuda_path'] or 'MISSING'} | nvcc: {env['nvcc'] or 'none'}"
    )
    if env["nvrtc"] is None:
        if env["nvcc"] and env["cuda_path"]:
            os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
            report.say(
                "NOTE: cuda-bindings (NVRTC) is missing: TVM compiles the artifacts' CUDA "
                "kernels with nvcc instead (TVM_CUDA_COMPILE_MODE=nvcc)"
            )
        else:
            report.problem(
                "TVM 0.27 compiles an artifact's CUDA kernels when it is loaded, with NVRTC "
                "from the `cuda-bindings` package (PyTorch's CUDA wheels bring it) or with "
                "nvcc; neither is here. Install cuda-bindings matching the driver's CUDA "
                f"({env.get('nvrtc_error', '')})"
            )
    if env["cuda_path"] is None:
        report.problem(
            "no CUDA toolkit headers (include/cuda_runtime.h) found: NVRTC needs them; "
            "set CUDA_PATH"
        )
    else:
        os.environ["CUDA_PATH"] = env["cuda_path"]


def import_runtime(report: Report, bundle_pylib: Path | None, want_cuda: bool):
    """Import the carried TVM runtime and resdsl; load TVM's CUDA runtime library."""
    # resdsl.runtime uses tvm.runtime.vm, which only `import tvm.relax` imports, and a
    # runtime-only TVM skips relax: import it here.
    import tvm
    import tvm.runtime.vm
    import tvm_ffi

    import resdsl
    import resdsl.runtime

    where = {
        "tvm": tvm.__file__, "tvm_ffi": tvm_ffi.__file__, "resdsl": resdsl.__file__,
        "runtime_only": bool(tvm.base._RUNTIME_ONLY), "tvm_version": tvm.__version__,
    }  # fmt: skip
    report.data["env"]["imported"] = where
    report.say(f"tvm {tvm.__version__} from {Path(tvm.__file__).parent} "
               f"(runtime only: {where['runtime_only']}); resdsl from "
               f"{Path(resdsl.__file__).parent}")  # fmt: skip
    if bundle_pylib is not None:
        for mod in ("tvm", "tvm_ffi", "resdsl"):
            if not Path(where[mod]).resolve().is_relative_to(bundle_pylib.resolve()):
                report.problem(f"{mod} was imported from {where[mod]}, not the carried copy")
    if want_cuda:
        # resdsl.runtime loads TVM's CUDA runtime library for a runtime-only TVM; the
        # libcudart it links comes from torch (imported first), else from NVIDIA's wheels.
        try:
            resdsl.runtime._cuda_runtime(tvm)
        except resdsl.runtime.ArtifactError as first:
            try:
                _preload_cudart()
                resdsl.runtime._cuda_runtime(tvm)
            except (OSError, resdsl.runtime.ArtifactError) as e:
                report.problem(f"{first}; after preloading libcudart: {e}")
    return tvm, resdsl.runtime


def _preload_cudart() -> None:
    import ctypes

    try:
        import nvidia  # the namespace package of NVIDIA's CUDA wheels
    except ImportError as e:
        raise OSError("no NVIDIA CUDA wheels installed") from e

    for base in nvidia.__path__:
        for lib in sorted(Path(base).glob("*/lib/libcudart.so.*")):
            ctypes.CDLL(str(lib), ctypes.RTLD_GLOBAL)
            return
    raise OSError("no libcudart.so in the nvidia wheels")
