"""resdsl's own default schedules, and the Relax pipelines that apply them.

TVM's default pipeline for a CPU target legalises every op to plain serial loops and does not
fuse them; :func:`llvm_pipeline` fuses (FuseOps/FuseTIR, as the CUDA pipeline does), applies
the tuning records of the current MetaSchedule database if there is one, schedules every
remaining function with :func:`.cpu.cpu_rules`, and folds the weight repacking those rules ask
for into the constants, so that an untuned build is parallel and vectorised.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax, te, tirx, topi
from tvm.relax import dpl
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.s_tir import dlight
from tvm.s_tir import meta_schedule as ms

from ..winograd import winograd_pass
from .cpu import (
    Conv2d,
    DepthwiseConv2d,
    Elementwise,
    Machine,
    Matmul,
    SpatialReduction,
    cpu_rules,
    rule_for,
)
from .cuda import TensorCoreMatmul, cuda_rules, dlight_rules

__all__ = [
    "CPU_LAYOUTS",
    "CUDA_LAYOUTS",
    "Conv2d",
    "DepthwiseConv2d",
    "Elementwise",
    "Machine",
    "Matmul",
    "SpatialReduction",
    "TensorCoreMatmul",
    "clip_as_min_max",
    "cpu_rules",
    "cuda_fuse_passes",
    "cuda_pipeline",
    "cuda_rules",
    "database_pipeline",
    "fast_math",
    "fuse_passes",
    "llvm_fuse_passes",
    "llvm_pipeline",
    "rule_for",
]


# Convolutions in NHWC: an input pixel's channels are contiguous, so the convolution's inner
# loop reads memory in order and its epilogue stores whole vectors; pooling and means then
# vectorise over channels too. Only the network's input and outputs are transposed.
CPU_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OHWI"]}
# float16 convolutions run in NHWC on CUDA: the implicit GEMM's reduction axis (kh, kw, ci)
# is then contiguous in memory, so its tiles load as vectors (figures: docs/performance.md,
# "CUDA").
CUDA_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OHWI"]}


def clip_as_min_max() -> tvm.transform.Pass:
    """Rewrite ``clip(x, lo, hi)`` as ``minimum(maximum(x, lo), hi)`` (the same values).

    TVM 0.27's ``relax.clip`` has no layout inference, so ConvertLayout leaves it in NCHW
    with a transpose on either side: every ReLU6 of a MobileNet would become three kernels
    instead of joining its convolution's epilogue. ``maximum``/``minimum`` follow NHWC.
    """
    data, low, high = dpl.wildcard(), dpl.wildcard(), dpl.wildcard()
    pattern = dpl.is_op("relax.clip")(data, low, high)

    def rewriter(call: relax.Call, matches: dict) -> relax.Expr:
        x, lo, hi = matches[data], matches[low], matches[high]
        dtype = x.ty.dtype
        bounds = [getattr(v, "value", None) for v in (lo, hi)]  # FloatImm or IntImm
        if not all(isinstance(b, int | float) for b in bounds):
            return call
        lo, hi = (relax.const(float(b), dtype) for b in bounds)
        return relax.op.minimum(relax.op.maximum(x, lo), hi)

    @tvm.transform.module_pass(opt_level=0, name="ResdslClipAsMinMax")
    def rewrite(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = mod.clone()  # a pass does not change its input
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod[gv] = dpl.rewrite_call(pattern, rewriter, func)
        return mod

    return rewrite


def _sigmoid(x: te.Tensor) -> te.Tensor:
    return topi.divide(
        tirx.const(1, x.dtype), topi.add(tirx.const(1, x.dtype), topi.fast_exp(topi.negative(x)))
    )


def _silu(x: te.Tensor) -> te.Tensor:
    return topi.multiply(x, _sigmoid(x))


def _gelu(x: te.Tensor) -> te.Tensor:
    half, root_half = tirx.const(0.5, x.dtype), tirx.const(0.5**0.5, x.dtype)
    erf = topi.fast_erf(topi.multiply(x, root_half))
    return topi.multiply(topi.multiply(x, half), topi.add(tirx.const(1, x.dtype), erf))


# float32 activations whose transcendental LLVM leaves to scalar libm calls (expf, erff) in
# a vectorised loop: computed with TVM's vectorisable polynomials instead.
_FAST = {
    "relax.exp": topi.fast_exp,
    "relax.sigmoid": _sigmoid,
    "relax.nn.silu": _silu,
    "relax.nn.gelu": _gelu,
}


@mutator
class _FastMath(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        name = getattr(call.op, "name", None)
        if name in _FAST and call.args[0].ty.dtype == "float32":
            return self.builder_.call_te(_FAST[name], call.args[0])
        return call


def fast_math() -> tvm.transform.Pass:
    """Compute float32 ``exp``, ``sigmoid``, SiLU and GELU (erf) with TVM's polynomial
    approximations (``topi.fast_exp``, ``topi.fast_erf``) so that they vectorise.

    LLVM has no vector ``expf``/``erff`` without a vector math library and calls the scalar
    ones lane by lane: an EfficientNet's SiLU epilogues took 4.6 ns an element, more than
    their 1x1 convolutions. The polynomials differ from libm by ~1e-6 relative (exp) and
    ~4e-7 absolute (erf); onnxruntime uses approximations of its own. Softmax keeps TVM's
    ``exp``.
    """

    @tvm.transform.module_pass(opt_level=0, name="ResdslFastMath")
    def rewrite(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _FastMath(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return rewriter.builder_.finalize()

    return rewrite


def llvm_fuse_passes(
    target: tvm.target.Target,
    layouts: dict[str, list[str]] | None = CPU_LAYOUTS,
    winograd: bool = True,
    fast: bool = True,
) -> list[tvm.transform.Pass]:
    """Convert layouts, legalise and fuse: the PrimFuncs that the rules (and tuning) see.

    ``layouts=None`` keeps the network's own (NCHW) layout; ``winograd`` computes eligible
    3x3 convolutions with :mod:`..winograd` (NHWC only); ``fast``: see :func:`fast_math`.
    """
    return [
        *([clip_as_min_max(), relax.transform.ConvertLayout(layouts)] if layouts else []),
        relax.transform.FoldConstant(),  # the weights ConvertLayout transposed
        *([winograd_pass()] if winograd else []),
        *([fast_math()] if fast else []),
        *cpu_generic.library_dispatch_passes(target),
        *cpu_generic.legalize_passes(target),
    ]


def llvm_pipeline(
    target: tvm.target.Target,
    layouts: dict[str, list[str]] | None = CPU_LAYOUTS,
    winograd: bool = True,
) -> tvm.transform.Pass:
    """The Relax pipeline for ``tvm.compile(mod, target, relax_pipeline=...)`` on a CPU."""

    @tvm.transform.module_pass(opt_level=0, name="ResdslLLVMPipeline")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            passes = llvm_fuse_passes(target, layouts, winograd)
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


def cuda_fuse_passes(
    target: tvm.target.Target, layouts: dict[str, list[str]] | None = None
) -> list[tvm.transform.Pass]:
    """Convert layouts, legalise and fuse for CUDA: the PrimFuncs the rules (and tuning) see."""
    from tvm.relax.backend.cuda import pipeline as cuda

    return [
        *([relax.transform.ConvertLayout(layouts)] if layouts else []),
        *cuda.library_dispatch_passes(target),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def cuda_pipeline(
    target: tvm.target.Target,
    layouts: dict[str, list[str]] | None = None,
    cuda_graph: bool = True,
) -> tvm.transform.Pass:
    """The Relax pipeline for CUDA: TVM's default one with resdsl's GPU rules.

    ``cuda_graph`` captures the whole network's kernel launches in one CUDA graph on the
    first call and replays it afterwards (Relax's ``RewriteCUDAGraph``): at batch 1 a
    ResNet is some sixty short kernels, and launching them one by one costs as much as
    running them.
    """
    from tvm.relax.backend.cuda import pipeline as cuda

    @tvm.transform.module_pass(opt_level=0, name="ResdslCUDAPipeline")
    def pipeline(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        passes = cuda_fuse_passes(target, layouts)
        if ms.Database.current() is not None:  # tuned functions keep their schedule
            passes.append(relax.transform.MetaScheduleApplyDatabase())
        passes += [
            dlight.ApplyDefaultSchedule(*cuda_rules()),
            *cuda.dataflow_lower_passes(target),
            *cuda.finalize_passes(target),
        ]
        config = dict(ctx.config)
        config["relax.backend.use_cuda_graph"] = cuda_graph
        with target, tvm.transform.PassContext(opt_level=ctx.opt_level, config=config):
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def fuse_passes(target: tvm.target.Target, options: Any = None) -> list[tvm.transform.Pass]:
    """Legalise and fuse, exactly as the build does before it applies records.

    ``options``: the :class:`.BuildOptions` of the build (for llvm, whether it uses
    Winograd; for CUDA, its layout and schedules); without them, the llvm default or TVM's
    default CUDA fusion in NCHW.
    """
    if target.kind.name == "llvm":
        return llvm_fuse_passes(target, winograd=options is None or options.winograd)
    nhwc = options is not None and options.schedules == "resdsl" and options.cuda_layout() == "NHWC"
    return cuda_fuse_passes(target, CUDA_LAYOUTS if nhwc else None)


def database_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """A Relax pipeline for ``cuda`` that applies the current database's records.

    For ``BuildOptions(schedules="tvm")``: TVM's default CUDA pipeline ignores the
    database: fuse, apply the records, give the remaining kernels the default GPU schedules
    (dlight), then lower as the default does. resdsl's own CUDA pipeline applies records
    itself (:func:`.schedules.cuda_pipeline`).
    """
    from tvm.relax.backend.cuda import pipeline as cuda  # the package omits two of these

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
