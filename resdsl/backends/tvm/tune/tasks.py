"""MetaSchedule tasks: the fused kernels of a network, as the build sees them."""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms


def tuning_target(target: tvm.target.Target) -> tvm.target.Target:
    """The build target plus the core count that MetaSchedule's CPU rules require."""
    if target.kind.name != "llvm" or "num-cores" in target.attrs:
        return target
    return tvm.target.Target({**target.export(), "num-cores": ms.utils.cpu_count(logical=False)})


def fuse_passes(target: tvm.target.Target, options: Any = None) -> list[tvm.transform.Pass]:
    """Legalise and fuse, exactly as the build does before it applies records.

    ``options``: the :class:`.BuildOptions` of the build (for llvm, whether it uses
    Winograd; for CUDA, its layout and schedules); without them, the llvm default or TVM's
    default CUDA fusion in NCHW.
    """
    if target.kind.name == "llvm":
        from ..schedules import llvm_fuse_passes

        return llvm_fuse_passes(target, winograd=options is None or options.winograd)
    from ..build import CUDA_LAYOUTS
    from ..schedules import cuda_fuse_passes

    nhwc = options is not None and options.schedules == "resdsl" and options.cuda_layout() == "NHWC"
    return cuda_fuse_passes(target, CUDA_LAYOUTS if nhwc else None)


def extract_tasks(
    mod: tvm.IRModule, target: tvm.target.Target, options: Any = None
) -> list[ms.ExtractedTask]:
    """One task per distinct fused kernel of ``mod``, weighted by how often it is called.

    Winograd's kernels (:mod:`.winograd`) are left out: they keep resdsl's rules. Tuning
    ResNet-50 at batch 8, MetaSchedule candidates for the input transform crashed the
    process (a segfault inside the kernel, twice, 16 and 26 minutes in); until that is
    understood they are not measured.
    """
    from ..winograd import is_winograd

    with target, tvm.transform.PassContext(opt_level=3):
        fused = tvm.transform.Sequential(fuse_passes(target, options))(mod)
    tasks = ms.relax_integration.extract_tasks(fused, target)
    return [task for task in tasks if not is_winograd(task.dispatched[0]["main"])]


def database_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """A Relax pipeline for ``cuda`` that applies the current database's records.

    For ``BuildOptions(schedules="tvm")``: TVM's default CUDA pipeline ignores the
    database: fuse, apply the records, give the remaining kernels the default GPU schedules
    (dlight), then lower as the default does. resdsl's own CUDA pipeline applies records
    itself (:func:`.schedules.cuda_pipeline`).
    """
    from tvm.relax.backend.cuda import pipeline as cuda  # the package omits two of these
    from tvm.s_tir import dlight

    from ..schedules.cuda import dlight_rules

    @tvm.transform.module_pass(opt_level=0, name="ResdslTunedGPUPipeline")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        passes = [
            *fuse_passes(target),
            relax.transform.MetaScheduleApplyDatabase(),
            dlight.ApplyDefaultSchedule(*dlight_rules()),
            *cuda.dataflow_lower_passes(target),
            *cuda.finalize_passes(target),
        ]
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def _relax_module(net: Any, options: Any, weights: Any, seed: int) -> tvm.IRModule:
    """The module the build compiles (kernels depend on shapes only, not on weight values)."""
    from ....passes import run_inference_passes
    from ....weights import resolve
    from ..build import micro_batch_size
    from ..lower import to_relax

    checked, _ = resolve(net.graph, weights, seed)
    graph, checked = run_inference_passes(net.graph, checked)
    micro = micro_batch_size(net.graph, options)
    return to_relax(graph, checked, batch=options.batch, dtype=options.dtype, micro_batch=micro)
