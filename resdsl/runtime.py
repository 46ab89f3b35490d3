"""Run a compiled artifact (``model.so`` + ``model.json``) on NumPy arrays.

Needs only NumPy and TVM's *runtime*: not the spec, not torch, not Lark, not TVM's
compiler. A TVM package without ``libtvm_compiler.so`` works: it is then imported with
``TVM_USE_RUNTIME_LIB=1`` (set here when the compiler library is absent). CPU artifacts
run on one thread per physical core (:func:`physical_cores`) unless ``TVM_NUM_THREADS``
is set.

>>> model = resdsl.runtime.load("out/")
>>> y = model(x)            # x: np.ndarray of the input's shape and dtype
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any

import numpy as np

from .errors import SpecError

FORMAT = "resdsl-artifact/1"


class ArtifactError(SpecError):
    """An artifact that cannot be loaded, or inputs that do not fit it."""

    code = "E0801"


def physical_cores() -> int:
    """CPU cores this process may run on, counting SMT siblings once.

    Artifacts run on this many threads unless ``TVM_NUM_THREADS`` (or ``OMP_NUM_THREADS``)
    says otherwise.
    """
    if hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
    else:
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:  # no sysfs topology: count the CPU itself
            cores.add(str(cpu))
    return max(1, len(cores))


def use_physical_cores() -> None:
    """Size TVM's CPU thread pool to :func:`physical_cores` unless ``TVM_NUM_THREADS`` (or
    ``OMP_NUM_THREADS``) is set; it must run before the pool starts (its first parallel
    kernel), which reads the size once.

    TVM's own default is half the logical CPUs on x86 (it assumes 2-way SMT): on a VM
    without SMT that leaves half the cores idle. Artifacts run so, and tuning measures its
    candidates so, or it would pick schedules for a thread count they never run on.
    """
    if "TVM_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ:
        os.environ["TVM_NUM_THREADS"] = str(physical_cores())


def _import_tvm():
    use_physical_cores()
    if "tvm" not in sys.modules and "TVM_USE_RUNTIME_LIB" not in os.environ:
        spec = importlib.util.find_spec("tvm")
        lib = os.path.join(os.path.dirname(spec.origin), "lib") if spec and spec.origin else ""
        if lib and not os.path.exists(os.path.join(lib, "libtvm_compiler.so")):
            os.environ["TVM_USE_RUNTIME_LIB"] = "1"  # a runtime-only TVM package
    try:
        import tvm
        import tvm.runtime.vm  # not imported by `import tvm` in a runtime-only package
    except ImportError as e:
        raise ArtifactError(f"running an artifact needs TVM's runtime: {e}") from None
    return tvm


def _cuda_runtime(tvm) -> None:
    """Make a runtime-only TVM able to load a CUDA artifact.

    ``import tvm`` in runtime-only mode loads no device backend, so TVM's CUDA runtime
    library is loaded here. The artifact's kernels are CUDA C++, compiled on load (NVRTC,
    or nvcc with ``TVM_CUDA_COMPILE_MODE=nvcc``) by ``tvm.support.nvcc``, which asks for the
    current compilation target, an object only the compiler library provides; without it the
    arch is that of the GPU present, which is what the kernels must be compiled for anyway.
    """
    if not tvm.base._RUNTIME_ONLY:
        return
    from tvm.target import Target, _ffi_api

    if not hasattr(_ffi_api, "TargetCurrent"):
        Target.current = staticmethod(lambda allow_none=True: None)
    if "tvm_runtime_cuda" not in tvm.base._LOADED_LIBS:
        import ctypes

        lib = os.path.join(os.path.dirname(tvm.__file__), "lib", "libtvm_runtime_cuda.so")
        try:
            tvm.base._LOADED_LIBS["tvm_runtime_cuda"] = ctypes.CDLL(lib, ctypes.RTLD_LOCAL)
        except OSError as e:  # missing, or libcudart not found
            raise ArtifactError(f"cannot load TVM's CUDA runtime: {e}") from None


class CompiledModel:
    """A loaded artifact. Call it with arrays, positionally or by input name."""

    def __init__(self, path: str) -> None:
        meta_path = os.path.join(path, "model.json")
        try:
            with open(meta_path) as f:
                self.meta: dict[str, Any] = json.load(f)
        except FileNotFoundError:
            raise ArtifactError(f"{path} is not a resdsl artifact (no model.json)") from None
        except (OSError, json.JSONDecodeError) as e:
            raise ArtifactError(f"cannot read {meta_path}: {e}") from None
        if self.meta.get("format") != FORMAT:
            raise ArtifactError(f"{meta_path}: unknown format {self.meta.get('format')!r}")
        tvm = _import_tvm()
        if self.meta["device"] == "cuda":
            _cuda_runtime(tvm)
        self.device = tvm.cuda(0) if self.meta["device"] == "cuda" else tvm.cpu(0)
        if not self.device.exist:
            raise ArtifactError(f"{path} was built for {self.meta['device']}; none is present")
        library = os.path.join(path, self.meta["library"])
        try:
            lib = tvm.runtime.load_module(library)
        except Exception as e:  # TVMError for a missing or foreign library
            raise ArtifactError(f"cannot load {library}: {e}") from None
        self._tvm = tvm
        self._vm = tvm.runtime.vm.VirtualMachine(lib, self.device)
        self._main = self._vm["main"]

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.meta["inputs"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.meta["outputs"]

    def __call__(self, *arrays: np.ndarray, **named: np.ndarray):
        """Run once; returns one array, or a tuple for several outputs."""
        args = self._arguments(arrays, named)
        result = self._main(*args)
        if len(self.outputs) == 1:
            return result.numpy()
        return tuple(result[i].numpy() for i in range(len(self.outputs)))

    def _arguments(self, arrays, named) -> list[Any]:
        if arrays and named:
            raise ArtifactError("pass inputs positionally or by name, not both")
        names = [i["name"] for i in self.inputs]
        if named:
            unknown = sorted(set(named) - set(names))
            if unknown:
                raise ArtifactError(f"unknown input {unknown[0]!r}; inputs: {', '.join(names)}")
            arrays = tuple(named.get(n) for n in names)
        if len(arrays) != len(names) or any(a is None for a in arrays):
            raise ArtifactError(f"the model takes {len(names)} input(s): {', '.join(names)}")
        out = []
        for spec, array in zip(self.inputs, arrays, strict=True):
            array = np.asarray(array)
            if list(array.shape) != spec["shape"]:
                raise ArtifactError(
                    f"input {spec['name']!r} must have shape {tuple(spec['shape'])}, "
                    f"got {array.shape}"
                    + (" (the batch size is fixed when compiling)" if array.ndim else "")
                )
            array = np.ascontiguousarray(array.astype(spec["dtype"], copy=False))
            out.append(self._tvm.runtime.tensor(array, self.device))
        return out


def load(path: str | os.PathLike[str]) -> CompiledModel:
    """Load the artifact directory written by ``resdsl compile --target llvm|cuda -o DIR``."""
    return CompiledModel(os.fspath(path))
