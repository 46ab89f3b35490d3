"""Run a compiled artifact (``model.so`` + ``model.json``) on NumPy arrays.

Needs only NumPy and TVM's *runtime*: not the spec, not torch, not Lark, not TVM's
compiler. A TVM package without ``libtvm_compiler.so`` works: it is then imported with
``TVM_USE_RUNTIME_LIB=1`` (set here when the compiler library is absent). CPU artifacts
run on one thread per physical core (:func:`physical_cores`) unless ``TVM_NUM_THREADS``
is set.

>>> model = resdsl.runtime.load("out/")
>>> y = model(x)            # x: np.ndarray of the input's shape and dtype

An artifact compiled for a batch range (``compile --batch 1..64``) takes any batch in it:
``model.json`` gives its inputs' and outputs' batch axis as ``"batch"`` and the range as
``batch_range``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import numpy as np

from . import _compat
from .errors import SpecError

FORMAT = "resdsl-artifact/1"
# model.json is read only up to this size, and its values are bounded (see validate_meta)
MAX_META_BYTES = 2**20
MAX_DIM = 2**31 - 1  # one dimension of an input or output
MAX_ELEMENTS = 2**31 - 1  # all the elements of one input or output
MAX_RANK = 32
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
DEVICES = ("cpu", "cuda")
DYNAMIC = "batch"  # the size of a dynamic batch axis in model.json


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
    _compat.set_default_threads(physical_cores())


def _import_tvm():
    use_physical_cores()
    _compat.prefer_runtime_library()
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
    if not _compat.runtime_only(tvm):
        return
    _compat.without_current_target(tvm)
    lib = os.path.join(os.path.dirname(tvm.__file__), "lib", "libtvm_runtime_cuda.so")
    try:
        _compat.load_runtime_library(tvm, "tvm_runtime_cuda", lib)
    except OSError as e:  # missing, or libcudart not found
        raise ArtifactError(f"cannot load TVM's CUDA runtime: {e}") from None


class CompiledModel:
    """A loaded artifact. Call it with arrays, positionally or by input name."""

    def __init__(self, path: str) -> None:
        self.meta: dict[str, Any] = read_meta(path)
        library = library_path(path, self.meta["library"])
        tvm = _import_tvm()
        if self.meta["device"] == "cuda":
            _cuda_runtime(tvm)
        self.device = tvm.cuda(0) if self.meta["device"] == "cuda" else tvm.cpu(0)
        if not self.device.exist:
            raise ArtifactError(f"{path} was built for {self.meta['device']}; none is present")
        try:
            lib = tvm.runtime.load_module(library)
            self._vm = tvm.runtime.vm.VirtualMachine(lib, self.device)
            self._main = self._vm["main"]
        except Exception as e:  # TVMError for a missing or foreign library
            raise ArtifactError(f"cannot load {library}: {_first_line(e)}") from None
        self._tvm = tvm
        self._path = path
        self._check_signature()

    def _check_signature(self) -> None:
        """The library's ``main`` must take the inputs model.json names, in its order."""
        names = [i["name"] for i in self.inputs]
        try:
            params = _compat.vm_param_names(self._vm, "main")
        except Exception:  # not a Relax VM executable we can inspect: the call checks it
            return
        if params != names:
            raise ArtifactError(
                f"{os.path.join(self._path, 'model.json')} does not match the library: it "
                f"declares inputs ({', '.join(names)}), the library takes ({', '.join(params)})"
            )

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.meta["inputs"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.meta["outputs"]

    @property
    def batch_range(self) -> tuple[int, int] | None:
        """The batches a dynamic-batch artifact takes (low, high); None for a fixed batch."""
        low_high = self.meta.get("batch_range")
        return (low_high[0], low_high[1]) if low_high else None

    def __call__(self, *arrays: np.ndarray, **named: np.ndarray):
        """Run once; returns one array, or a tuple for several outputs."""
        args = self._arguments(arrays, named)
        meta_path = os.path.join(self._path, "model.json")
        try:
            result = self._main(*args)
        except (RuntimeError, ValueError, TypeError) as e:
            if "loc=param" not in str(e):
                raise
            # TVM's check of an argument: they fit model.json, so model.json is what is wrong
            message = _argument_mismatch(e, self.inputs)
            raise ArtifactError(f"{meta_path} does not match the library: {message}") from None
        tensor = self._tvm.runtime.Tensor
        results = [result] if isinstance(result, tensor) else list(result)
        if len(results) != len(self.outputs) or not all(isinstance(r, tensor) for r in results):
            raise ArtifactError(
                f"{meta_path} declares {len(self.outputs)} output(s), "
                f"the library returns {len(results)}"
            )
        out, batch = [], int(args[0].shape[0])
        for spec, r in zip(self.outputs, results, strict=True):
            shape = concrete_shape(spec, batch)
            if list(r.shape) != shape or str(r.dtype) != spec["dtype"]:
                raise ArtifactError(
                    f"{meta_path} does not match the library: output {spec['name']!r} is "
                    f"declared {tuple(shape)} {spec['dtype']}, the library returns "
                    f"{tuple(r.shape)} {r.dtype}"
                )
            out.append(r.numpy())
        return out[0] if len(out) == 1 else tuple(out)

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
        out, batches = [], set()
        for spec, array in zip(self.inputs, arrays, strict=True):
            array = np.asarray(array)
            if array.dtype.kind not in "biuf" or array.dtype.fields is not None:
                raise ArtifactError(
                    f"input {spec['name']!r} must hold numbers ({spec['dtype']}), "
                    f"got an array of {_dtype_name(array.dtype)}"
                )
            check_shape(self.meta, spec, array.shape)
            batches.add(array.shape[0] if array.shape else None)
            if len(batches) > 1:
                raise ArtifactError(
                    f"the inputs must have one batch size, got {' and '.join(map(str, batches))}"
                )
            array = np.ascontiguousarray(array.astype(spec["dtype"], copy=False))
            out.append(self._tvm.runtime.tensor(array, self.device))
        return out


def concrete_shape(spec: dict[str, Any], batch: int) -> list[int]:
    """The shape of ``spec`` (an input or output of ``model.json``) at ``batch``."""
    return [batch if size == DYNAMIC else size for size in spec["shape"]]


def check_shape(meta: dict[str, Any], spec: dict[str, Any], shape: tuple[int, ...]) -> None:
    """Raise :func:`shape_error` unless an array of ``shape`` fits the input ``spec`` of
    the artifact ``meta``: its own shape, any batch of a dynamic-batch artifact's range."""
    low_high = meta.get("batch_range")
    if not low_high:
        if list(shape) == spec["shape"]:
            return
    elif len(shape) == len(spec["shape"]) and shape and list(shape[1:]) == spec["shape"][1:]:
        low, high = low_high
        if low <= shape[0] <= high:
            return
        raise ArtifactError(
            f"input {spec['name']!r} has a batch of {shape[0]}; this artifact takes "
            f"batches from {low} to {high} (compile with --batch LOW..HIGH to change it)"
        )
    raise shape_error(spec, shape, dynamic=bool(low_high))


def shape_error(
    spec: dict[str, Any], shape: tuple[int, ...], dynamic: bool = False
) -> ArtifactError:
    """An input of the wrong shape for ``spec`` (an entry of ``model.inputs``)."""
    expected = str(tuple(spec["shape"])).replace(repr(DYNAMIC), "N")
    hint = "" if dynamic or not shape else " (the batch size is fixed when compiling)"
    return ArtifactError(
        f"input {spec['name']!r} must have shape {expected}, got {tuple(shape)}{hint}"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# TVM's check of a Relax argument: "... ErrorContext(fn=main, loc=param[0], param=x,
# annotation=R.Tensor((1, 3, 8, 8), dtype="float32")) ..."
_TVM_PARAM = re.compile(r'param=(\w+), annotation=R\.Tensor\(\(([\d, ]*)\), dtype="(\w+)"\)')


def _argument_mismatch(error: BaseException, inputs: list[dict[str, Any]]) -> str:
    """What TVM refused in an argument, in model.json's terms; else TVM's first line."""
    match = _TVM_PARAM.search(str(error))
    declared = {i["name"]: i for i in inputs}
    if not match or match[1] not in declared:
        return _first_line(error)
    spec = declared[match[1]]
    shape = tuple(int(d) for d in match[2].replace(" ", "").split(",") if d)
    return (
        f"input {spec['name']!r} is declared {tuple(spec['shape'])} {spec['dtype']}, "
        f"the library takes {shape} {match[3]}"
    )


def _dtype_name(dtype: np.dtype) -> str:
    if dtype.fields is not None:
        return f"a structured dtype {dtype}"
    kinds = {"U": "strings", "S": "bytes", "O": "Python objects", "V": "raw bytes", "c": "complex"}
    name = kinds.get(dtype.kind, "")
    return f"{name} ({dtype})" if name else str(dtype)


def read_meta(path: str) -> dict[str, Any]:
    """``path/model.json``, read with a size cap and validated (:func:`validate_meta`)."""
    meta_path = os.path.join(path, "model.json")
    if not os.path.lexists(meta_path):
        raise ArtifactError(f"{path} is not a resdsl artifact (no model.json)")
    if not os.path.isfile(meta_path):
        raise ArtifactError(f"{meta_path} is not a regular file")
    try:
        with open(meta_path, "rb") as f:
            data = f.read(MAX_META_BYTES + 1)
    except OSError as e:
        raise ArtifactError(f"cannot read {meta_path}: {e.strerror or e}") from None
    if len(data) > MAX_META_BYTES:
        raise ArtifactError(f"{meta_path} is larger than {MAX_META_BYTES // 2**20} MiB")
    try:
        meta = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ArtifactError(f"cannot read {meta_path}: it is not UTF-8 text") from None
    except RecursionError:
        raise ArtifactError(f"cannot read {meta_path}: it is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, or an integer of too many digits
        raise ArtifactError(f"cannot read {meta_path}: {e}") from None
    problem = validate_meta(meta)
    if problem:
        raise ArtifactError(f"{meta_path} is not valid: {problem}")
    return meta


# Top-level keys: (type, required). Keys not listed are allowed and ignored.
_META_KEYS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "format": (str, True),
    "device": (str, True),
    "library": (str, True),
    "inputs": (list, True),
    "outputs": (list, True),
    "dtype": (str, False),
    "batch": (int, False),
    "batch_range": (list, False),
    "micro_batch": (int, False),
    "dynamic_batch": (bool, False),
    "network": (str, False),
    "resdsl_version": (str, False),
    "tvm_version": (str, False),
    "weights": (str, False),
    "spec": (dict, False),
    "target": (dict, False),
}


def validate_meta(meta: Any) -> str | None:
    """What is wrong with a ``model.json`` object, or None when it fits the schema."""
    if not isinstance(meta, dict):
        return f"expected a JSON object, got {_json_type(meta)}"
    for key, (kind, required) in _META_KEYS.items():
        if key not in meta:
            if required:
                return f"missing key {key!r}"
            continue
        value = meta[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{key!r} must be {_json_type(kind)}, got {_json_type(value)}"
    if meta["format"] != FORMAT:
        return f"unknown format {_short(meta['format'])} (expected {FORMAT!r})"
    if meta["device"] not in DEVICES:
        return f"'device' must be one of {', '.join(DEVICES)}, got {_short(meta['device'])}"
    for key in ("batch", "micro_batch"):
        if key in meta and not 1 <= meta[key] <= MAX_DIM:
            return f"{key!r} must be between 1 and {MAX_DIM}, got {_short(meta[key])}"
    dynamic = meta.get("dynamic_batch", False)
    if dynamic != ("batch_range" in meta):
        return "'dynamic_batch' is true exactly when there is a 'batch_range'"
    if dynamic:
        low_high = meta["batch_range"]
        if (
            len(low_high) != 2
            or any(type(v) is not int for v in low_high)
            or not 1 <= low_high[0] <= low_high[1] <= MAX_DIM
        ):
            return (
                f"'batch_range' must be [LOW, HIGH] with 1 <= LOW <= HIGH, got {_short(low_high)}"
            )
    if "dtype" in meta and meta["dtype"] not in DTYPES:
        return f"'dtype' must be one of {', '.join(DTYPES)}, got {_short(meta['dtype'])}"
    library = meta["library"]
    if (
        not library.endswith(".so")
        or library in (".", "..")
        or any(c in library for c in "/\\\0")
        or os.path.basename(library) != library
    ):
        return f"'library' must be a file name ending in .so, got {_short(library)}"
    for key in ("inputs", "outputs"):
        if not meta[key]:
            return f"{key!r} is empty"
        names = set()
        for i, tensor in enumerate(meta[key]):
            problem = _validate_tensor(tensor, meta["batch_range"][1] if dynamic else None)
            if problem:
                return f"{key}[{i}]: {problem}"
            if tensor["name"] in names:
                return f"{key}[{i}]: the name {tensor['name']!r} is used twice"
            names.add(tensor["name"])
    return None


def _validate_tensor(tensor: Any, high: int | None = None) -> str | None:
    """``high``: the largest batch of a dynamic-batch artifact (its inputs and outputs
    then begin with the axis ``"batch"``)."""
    if not isinstance(tensor, dict):
        return f"expected an object, got {_json_type(tensor)}"
    if set(tensor) != {"name", "shape", "dtype"}:
        missing = sorted({"name", "shape", "dtype"} - set(tensor))
        extra = sorted(set(tensor) - {"name", "shape", "dtype"})
        return f"missing key {missing[0]!r}" if missing else f"unknown key {_short(extra[0])}"
    name, shape, dtype = tensor["name"], tensor["shape"], tensor["dtype"]
    if not isinstance(name, str) or not name.isidentifier() or len(name) > 1000:
        return f"'name' must be an identifier, got {_short(name)}"
    if dtype not in DTYPES:
        return f"'dtype' must be one of {', '.join(DTYPES)}, got {_short(dtype)}"
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        return f"'shape' must be a list of at most {MAX_RANK} sizes, got {_short(shape)}"
    if high is not None:  # counted at its largest below
        if not shape or shape[0] != DYNAMIC:
            return f"'shape' must start with {DYNAMIC!r} in a dynamic-batch artifact"
        shape = [high, *shape[1:]]
    elements = 1
    for size in shape:
        if type(size) is not int or not 1 <= size <= MAX_DIM:
            return f"'shape' sizes must be integers from 1 to {MAX_DIM}, got {_short(size)}"
        elements *= size
    if elements > MAX_ELEMENTS:
        return f"'shape' {_short(shape)} has more than {MAX_ELEMENTS} elements"
    return None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true or false",
             int: "an integer", float: "a number", type(None): "null"}  # fmt: skip
    if isinstance(value, type):
        return names.get(value, value.__name__)
    return names.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def library_path(path: str, library: str) -> str:
    """``path/library``; it must be a regular file whose real path stays in ``path``."""
    full = os.path.join(path, library)
    root = os.path.realpath(path)
    real = os.path.realpath(full)
    if os.path.dirname(real) != root:
        raise ArtifactError(f"{full} leaves the artifact directory {path} (a symbolic link)")
    if not os.path.isfile(real):
        raise ArtifactError(f"{full} is missing or not a regular file")
    problem = _elf_problem(real) if sys.platform.startswith("linux") else None
    if problem:
        raise ArtifactError(f"{full} is not a complete shared library: {problem}")
    return real


def _elf_problem(path: str) -> str | None:
    """Why ``path`` is not a whole ELF shared object, or None. The dynamic loader maps the
    file and takes SIGBUS reading past the end of a truncated one, so every header and
    segment must lie inside the file before it is loaded."""
    import struct

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        ident = f.read(64)
        if len(ident) < 52 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2):
            return "it is not an ELF file"
        wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
        fields = order + ("HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH")
        if len(ident) < struct.calcsize(fields) + 16:
            return "its ELF header is truncated"
        e_type, _, _, _, phoff, shoff, _, _, phsize, phnum, shsize, shnum, _ = struct.unpack(
            fields, ident[16 : 16 + struct.calcsize(fields)]
        )
        if e_type != 3:  # ET_DYN
            return "it is not a shared object"
        if phoff + phsize * phnum > size or shoff + shsize * shnum > size:
            return f"its headers reach past the end of the file ({size} bytes; truncated?)"
        segment = order + ("IIQQQQQQ" if wide else "IIIIIIII")
        if phsize < struct.calcsize(segment):
            return "its program headers are malformed"
        for i in range(phnum):
            f.seek(phoff + i * phsize)
            values = struct.unpack(segment, f.read(struct.calcsize(segment)))
            offset, filesz = (values[2], values[5]) if wide else (values[1], values[4])
            if offset + filesz > size:
                return f"a segment reaches past the end of the file ({size} bytes; truncated?)"
    return None


def load(path: str | os.PathLike[str]) -> CompiledModel:
    """Load the artifact directory written by ``resdsl compile --target llvm|cuda -o DIR``."""
    return CompiledModel(os.fspath(path))
