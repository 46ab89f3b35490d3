"""resdsl's own default schedules, and the Relax pipeline that applies them for ``llvm``.

TVM's default pipeline for a CPU target legalises every op to plain serial loops and does not
fuse them; :func:`llvm_pipeline` fuses (FuseOps/FuseTIR, as the CUDA pipeline does), applies
the tuning records of the current MetaSchedule database if there is one, schedules every
remaining function with :func:`.cpu.cpu_rules`, and folds the weight repacking those rules ask
for into the constants, so that an untuned build is parallel and vectorised.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import dlight
from tvm.s_tir import meta_schedule as ms

from .cpu import Conv2d, Elementwise, Machine, SpatialReduction, cpu_rules, rule_for

__all__ = [
    "CPU_LAYOUTS",
    "Conv2d",
    "Elementwise",
    "Machine",
    "SpatialReduction",
    "cpu_rules",
    "fuse_passes",
    "llvm_pipeline",
    "rule_for",
]


# Convolutions in NHWC: an input pixel's channels are contiguous, so the convolution's inner
# loop reads memory in order and its epilogue stores whole vectors; pooling and means then
# vectorise over channels too. Only the network's input and outputs are transposed.
CPU_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OHWI"]}


def fuse_passes(
    target: tvm.target.Target, layouts: dict[str, list[str]] | None = CPU_LAYOUTS
) -> list[tvm.transform.Pass]:
    """Convert layouts, legalise and fuse: the PrimFuncs that the rules (and tuning) see.

    ``layouts=None`` keeps the network's own (NCHW) layout.
    """
    return [
        *([relax.transform.ConvertLayout(layouts)] if layouts else []),
        *cpu_generic.library_dispatch_passes(target),
        *cpu_generic.legalize_passes(target),
    ]


def llvm_pipeline(
    target: tvm.target.Target, layouts: dict[str, list[str]] | None = CPU_LAYOUTS
) -> tvm.transform.Pass:
    """The Relax pipeline for ``tvm.compile(mod, target, relax_pipeline=...)`` on a CPU."""

    @tvm.transform.module_pass(opt_level=0, name="ResdslLLVMPipeline")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            passes = fuse_passes(target, layouts)
            if ms.Database.current() is not None:  # tuned functions keep their schedule
                passes.append(relax.transform.MetaScheduleApplyDatabase())
            passes += [
                dlight.ApplyDefaultSchedule(*cpu_rules()),
                # Repacked weights: split the repacking off and run it now, on the constants.
                relax.transform.SplitLayoutRewritePreproc(),
                relax.transform.FoldConstant(),
                *cpu_generic.dataflow_lower_passes(target),
                *cpu_generic.finalize_passes(target),
            ]
            return tvm.transform.Sequential(passes)(mod)

    return pipeline
