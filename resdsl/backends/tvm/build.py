"""Targets, the compile pipeline, and the artifact: ``model.so`` + ``model.json``.

The Relax module from :mod:`.lower` goes through one of resdsl's pipelines, TVM's with
resdsl's schedules: for llvm :func:`.schedules.llvm_pipeline` (FuseOps/FuseTIR, then the
CPU rules), for CUDA :func:`.schedules.cuda_pipeline` (the tensor-core rule for float16,
then TVM's default GPU rules, dlight), so neither needs tuning; ``schedules="tvm"`` builds
CUDA with TVM's default pipeline instead. With a MetaSchedule database its records are
applied. The library is exported with ``export_library``; a CUDA build needs no GPU.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm

from ..._io import atomic_write, staged
from ...errors import SpecError
from ...ir import Graph
from ...network import Network
from ...runtime import DYNAMIC
from ...weights import Weights
from .. import MAX_BATCH
from .lower import to_relax

# CUDA kernels are stored in the library as CUDA C++ and compiled for the GPU that loads the
# artifact (TVM's runtime uses NVRTC, or nvcc with TVM_CUDA_COMPILE_MODE=nvcc), so the arch
# only steers code generation (e.g. which tensor-core paths exist); Ampere is a safe floor.
DEFAULT_CUDA_ARCH = "sm_80"
ARTIFACT_FORMAT = "resdsl-artifact/1"
# llvm: a batch runs in micro-batches whose largest activation stays under this many bytes,
# so that an op's input, output and a residual operand stay in the last-level cache; the
# whole batch at once streams every activation through memory, and too small a micro-batch
# starves the threads of small images. The measurements behind the figure:
# docs/performance.md, "Micro-batches".
ACTIVATION_BUDGET = 7 * 2**20
# llvm, a batch range: the largest micro-batch chosen unless --micro-batch says otherwise.
# A dynamic-batch build compiles the network at log2(micro-batch) + 1 sizes (see
# lower.dynamic_sizes), so compile time grows with it; beyond 8 samples at once the kernels
# of the images the budget admits gain little.
DYNAMIC_MICRO_LIMIT = 8


class TargetError(SpecError):
    """A target, architecture or dtype that cannot be built."""

    code = "E0701"


@dataclass(frozen=True)
class BuildOptions:
    """How to build: target kind, its details, dtype and the batch size: fixed (``batch``)
    or any in ``batch_range`` (low, high), which replaces ``batch``."""

    target: str = "llvm"  # llvm | cuda
    cpu: str | None = None  # llvm: -mcpu, e.g. "skylake-avx512"; default: the host
    arch: str | None = None  # cuda: e.g. "sm_80"
    dtype: str = "float32"
    batch: int = 1
    # cuda: "resdsl" (tensor cores for float16, see schedules.cuda) or "tvm" (TVM's default
    # GPU pipeline, for comparison); the layout convolutions run in (None: the measured best,
    # NHWC for float16 and NCHW for float32); one CUDA graph per call
    schedules: str = "resdsl"
    layout: str | None = None
    cuda_graph: bool = True
    # llvm: compute eligible 3x3 convolutions with Winograd's algorithm (see winograd.py)
    winograd: bool = True
    # llvm: run the batch in micro-batches of this many samples (it must divide the batch;
    # with a batch_range, the largest piece a batch is cut into); None: micro_batch_size's
    micro_batch: int | None = None
    # one artifact for every batch from low to high (Relax symbolic shapes; see
    # lower.to_relax); None: the fixed ``batch``
    batch_range: tuple[int, int] | None = None

    @property
    def dynamic(self) -> bool:
        return self.batch_range is not None

    @property
    def largest_batch(self) -> int:
        return self.batch_range[1] if self.batch_range else self.batch

    def cuda_layout(self) -> str:
        """The layout of a CUDA build's convolutions."""
        if self.layout is not None:
            return self.layout
        return "NHWC" if self.dtype == "float16" else "NCHW"

    def tvm_target(self) -> tvm.target.Target:
        if self.batch_range is not None:
            low, high = self.batch_range
            if not 1 <= low <= high <= MAX_BATCH:
                raise TargetError(
                    f"--batch LOW..HIGH needs 1 <= LOW <= HIGH <= {MAX_BATCH}, got {low}..{high}"
                )
        elif not 1 <= self.batch <= MAX_BATCH:
            raise TargetError(
                f"--batch must be at least 1 and at most {MAX_BATCH}, got {self.batch}"
            )
        if self.dtype not in ("float32", "float16"):
            raise TargetError(f"--dtype must be float32 or float16, got {self.dtype}")
        micro = self.micro_batch
        if micro is not None and self.dynamic and not 1 <= micro <= self.largest_batch:
            raise TargetError(
                f"--micro-batch must be between 1 and the largest batch ({self.largest_batch}), "
                f"got {micro}"
            )
        if micro is not None and not self.dynamic and (micro < 1 or self.batch % micro):
            raise TargetError(f"--micro-batch must divide the batch ({self.batch}), got {micro}")
        if micro is not None and micro != self.batch and self.target != "llvm":
            raise TargetError("--micro-batch applies to --target llvm")
        if self.target == "llvm":
            if self.dtype != "float32":
                raise TargetError("float16 is supported for --target cuda only")
            spec: dict[str, Any] = {"kind": "llvm"}
            if self.cpu:
                spec["mcpu"] = self.cpu
            else:  # the host's own CPU: vector width and features
                spec["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
            return tvm.target.Target(spec)
        if self.layout not in (None, "NCHW", "NHWC"):
            raise TargetError(f"layout must be NCHW or NHWC, got {self.layout!r}")
        if self.schedules not in ("resdsl", "tvm"):
            raise TargetError(f"schedules must be resdsl or tvm, got {self.schedules!r}")
        if self.target == "cuda":
            arch = self.arch or DEFAULT_CUDA_ARCH
            if not arch.startswith("sm_") or not arch[3:].isdigit():
                raise TargetError(f"--arch must look like sm_80, got {arch!r}")
            return tvm.target.Target({"kind": "cuda", "arch": arch})
        raise TargetError(f"unknown target {self.target!r}; expected llvm or cuda")


def micro_batch_size(graph: Graph, options: BuildOptions) -> int:
    """How many samples ``main`` runs at once: ``options.micro_batch``, or for llvm the
    largest divisor of the batch whose largest activation fits :data:`ACTIVATION_BUDGET`
    (at least 1); CUDA runs the whole batch.

    With a batch range: the largest piece a batch is cut into (a batch runs as pieces of
    this size and powers of two below it, see :func:`.lower.dynamic_sizes`): for llvm the
    largest power of two up to :data:`DYNAMIC_MICRO_LIMIT` whose activations fit the
    budget, for CUDA the largest power of two up to the range's high end.
    """
    if options.micro_batch is not None:
        options.tvm_target()  # checks it
        return options.micro_batch
    if options.dynamic:
        limit = options.largest_batch
        if options.target == "llvm":
            limit = min(
                limit, DYNAMIC_MICRO_LIMIT, max(1, ACTIVATION_BUDGET // _sample(graph, options))
            )
        return 1 << (limit.bit_length() - 1)
    batch = options.batch
    if options.target != "llvm":
        return batch
    sample = _sample(graph, options)
    fits = [m for m in range(1, batch + 1) if batch % m == 0 and m * sample <= ACTIVATION_BUDGET]
    return max(fits, default=1)


def _sample(graph: Graph, options: BuildOptions) -> int:
    """Bytes of one sample's largest activation."""
    itemsize = np.dtype(options.dtype).itemsize
    return max(int(np.prod(graph.info(node.name).shape)) * itemsize for node in graph.nodes())


def build(net: Network, weights: Weights, options: BuildOptions, database=None):
    """Lower and compile; returns a ``relax.Executable``."""
    from ...passes import run_inference_passes

    target = options.tvm_target()
    graph, weights = run_inference_passes(net.graph, weights)
    micro = micro_batch_size(net.graph, options)
    batch = options.batch_range or options.batch
    mod = to_relax(graph, weights, batch=batch, dtype=options.dtype, micro_batch=micro)
    with contextlib.ExitStack() as stack:
        if database is not None:
            stack.enter_context(database)
            stack.enter_context(tvm.transform.PassContext(opt_level=3))
        if options.target == "llvm":  # TVM's CPU default neither fuses nor schedules
            from .schedules import llvm_pipeline

            pipeline = llvm_pipeline(target, winograd=options.winograd)
            return tvm.compile(mod, target, relax_pipeline=pipeline)
        if options.schedules == "tvm":
            if database is not None:  # TVM's default GPU pipeline would ignore the records
                from .schedules import database_pipeline

                return tvm.compile(mod, target, relax_pipeline=database_pipeline(target))
            return tvm.compile(mod, target)
        from .schedules import CUDA_LAYOUTS, cuda_pipeline

        layouts = CUDA_LAYOUTS if options.cuda_layout() == "NHWC" else None
        # Not for a batch range: main calls the same network again before the result of the
        # previous call is concatenated, and a captured graph's lifted static storage would
        # be shared by the calls; untested on a GPU, so off (see docs/deploy.md)
        graph = options.cuda_graph and not options.dynamic
        pipeline = cuda_pipeline(target, layouts=layouts, cuda_graph=graph)
        return tvm.compile(mod, target, relax_pipeline=pipeline)


def cuda_source(executable) -> str | None:
    """The CUDA C++ of a CUDA build's kernels (what the runtime compiles on load), or None."""
    stack = [executable.mod]
    while stack:
        module = stack.pop()
        if module.kind == "cuda":
            return module.inspect_source()
        stack.extend(module.imports)
    return None


def metadata(net: Network, options: BuildOptions, weights_source: str) -> dict[str, Any]:
    """What ``model.json`` records: enough to run the library without the spec."""
    from ... import __version__

    target = options.tvm_target()
    g = net.graph
    batch: int | str = DYNAMIC if options.dynamic else options.batch

    def tensors(names: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return [
            {"name": label, "shape": [batch, *g.info(node).shape], "dtype": options.dtype}
            for label, node in names
        ]

    sizes = {"batch_range": list(options.batch_range)} if options.dynamic else {"batch": batch}
    return {
        "format": ARTIFACT_FORMAT,
        "resdsl_version": __version__,
        "tvm_version": tvm.__version__,
        "network": net.name,
        "spec": {"path": net.source, "sha256": net.spec_hash, "parameters": net.params},
        "target": {"kind": options.target, "tvm": json.loads(str(target))},
        "device": "cuda" if options.target == "cuda" else "cpu",
        "dtype": options.dtype,
        **sizes,
        "micro_batch": micro_batch_size(g, options),
        "dynamic_batch": options.dynamic,
        "inputs": tensors([(name, name) for name in g.inputs]),
        "outputs": tensors(g.outputs),
        "weights": weights_source,
        "library": "model.so",
    }


def write_artifact(executable, meta: dict[str, Any], out_dir: str) -> None:
    """Export into ``out_dir`` so that a failed run leaves an earlier artifact as it was and
    removes nothing but its own temporary files.

    The library is exported to a temporary name; ``model.json`` is written (atomically) only
    once that succeeded, and the library is renamed into place last, so any failure before
    the final rename keeps both old files. On a failure the temporary files are removed; a
    directory this call created is removed only if it is empty (``os.rmdir``): another
    compile into the same directory may have written its artifact there in the meantime,
    and that stays. A disk that fills up while the library is linked raises ``OSError``
    (``ENOSPC``), as any other write does, not the linker's ``RuntimeError``.
    """
    created = _make_directory(out_dir)
    try:
        text = json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n"
        library = os.path.join(out_dir, "model.so")
        with staged(library) as tmp:
            _export(executable, tmp, library)
            atomic_write(os.path.join(out_dir, "model.json"), text)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):  # not empty: someone else's files are there
                os.rmdir(out_dir)
        raise


def check_room(out_dir: str, size: int) -> None:
    """Raise ``OSError(ENOSPC)`` when a library of at least ``size`` bytes (its weights)
    cannot fit: in the temporary directory, where TVM writes the objects it links (LLVM
    ends the process when that write fails, exit 1), or where ``out_dir`` is."""
    hint = "; TVM writes them to the temporary directory: set TMPDIR to one with room"
    _check_room(tempfile.gettempdir(), size, "the library's objects", hint)
    _check_room(out_dir, size, os.path.join(out_dir, "model.so"))


def _check_room(path: str, size: int, what: str, hint: str = "") -> None:
    """Raise ``OSError(ENOSPC)`` if the file system of ``path`` (or of its nearest existing
    parent) has less than ``size`` bytes free."""
    where = os.path.abspath(path)
    while not os.path.exists(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return  # not knowable: let the write itself tell
    if free < size:
        raise OSError(
            errno.ENOSPC,
            f"cannot write {what}: {os.strerror(errno.ENOSPC)} ({where} has "
            f"{free / 2**20:.1f} MiB free; the library needs at least {size / 2**20:.1f} MiB"
            f"{hint})",
        )


def _make_directory(path: str) -> bool:
    """Create ``path`` (and missing parents); whether this call created it."""
    try:
        os.makedirs(path)
    except FileExistsError:
        return False
    return True


# What the linker (or the compiler writing objects) prints when the disk or quota is full.
_DISK_FULL = {errno.ENOSPC: os.strerror(errno.ENOSPC), errno.EDQUOT: os.strerror(errno.EDQUOT)}


def _export(executable, tmp: str, library: str) -> None:
    """``export_library`` into ``tmp``; a full disk is an ``OSError`` naming ``library``.

    TVM writes the objects into a temporary directory and links them with the system's C++
    compiler; a link that fails reaches Python as ``RuntimeError("Compilation error: ...")``
    with the linker's output, e.g. ``ld: final link failed: No space left on device``.
    """
    try:
        executable.export_library(tmp)
    except OSError:
        raise
    except Exception as e:
        text = str(e)
        for code, words in _DISK_FULL.items():
            if words in text:
                detail = next((ln.strip() for ln in text.splitlines() if words in ln), words)
                raise OSError(code, f"cannot write {library}: {words} ({detail})") from e
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to model.json")
