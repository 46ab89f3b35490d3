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
    "flatten_matmul_rows",
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


def _rewrite_functions(rewriter: PyExprMutator, mod: tvm.IRModule) -> tvm.IRModule:
    """Every Relax function of ``mod`` visited by ``rewriter`` (built on ``mod``); the
    module its builder holds then."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.finalize()


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


# Softmax's reductions are computed CHUNK lanes at a time (see :func:`_row_reduce`).
CHUNK = 8


def _row_reduce(f, rows: list[int], width: int, reducer, name: str) -> te.Tensor:
    """``reducer`` of ``f(*row, j)`` over ``j < width`` for each row, as ``CHUNK`` partial
    results (``j = c * CHUNK + lane``, reduced over ``c``: independent lanes that
    :class:`.cpu.RowReduction` vectorises), reduced in turn, then the ``width % CHUNK`` last.

    A plain reduction over a row is one chain of dependent instructions (a max or add every
    3 to 4 cycles): softmax's two over 197 keys took 1 ms of its 1.1 ms on ViT-B's
    12 x 197 rows; a reduction split by ``rfactor`` needs lanes that divide the width.
    """
    chunks = width // CHUNK
    c = te.reduce_axis((0, chunks), f"{name}_c")
    partial = te.compute(
        (*rows, CHUNK),
        lambda *i: reducer(f(*i[:-1], c * CHUNK + i[-1]), axis=c),
        name=f"{name}_partial",
    )
    lane = te.reduce_axis((0, CHUNK), f"{name}_lane")
    total = te.compute(rows, lambda *r: reducer(partial(*r, lane), axis=lane), name=name)
    if width % CHUNK == 0:
        return total
    t = te.reduce_axis((0, width % CHUNK), f"{name}_t")  # from 0: compute_at wants that
    tail = te.compute(
        rows, lambda *r: reducer(f(*r, chunks * CHUNK + t), axis=t), name=f"{name}_tail"
    )
    combine = tirx.max if reducer is te.max else (lambda a, b: a + b)
    return te.compute(rows, lambda *r: combine(total(*r), tail(*r)), name=f"{name}_all")


def _softmax(x: te.Tensor) -> te.Tensor:
    """Softmax over the last axis: ``exp`` as ``topi.fast_exp``, the max and the sum by
    :func:`_row_reduce`."""
    *rows, width = (int(e) for e in x.shape)
    if width < 2 * CHUNK:
        axis = len(x.shape) - 1
        exp = topi.fast_exp(topi.subtract(x, topi.max(x, axis=axis, keepdims=True)))
        return topi.divide(exp, topi.sum(exp, axis=axis, keepdims=True))
    peak = _row_reduce(lambda *i: x(*i), rows, width, te.max, "softmax_max")
    shifted = te.compute(x.shape, lambda *i: x(*i) - peak(*i[:-1]), name="softmax_shift")
    exp = topi.fast_exp(shifted)
    total = _row_reduce(lambda *i: exp(*i), rows, width, te.sum, "softmax_sum")
    return te.compute(x.shape, lambda *i: exp(*i) / total(*i[:-1]), name="softmax_norm")


# float32 activations whose transcendental LLVM leaves to scalar libm calls (expf, erff) in
# a vectorised loop: computed with TVM's vectorisable polynomials instead.
_FAST = {
    "relax.exp": topi.fast_exp,
    "relax.sigmoid": _sigmoid,
    "relax.nn.silu": _silu,
    "relax.nn.gelu": _gelu,
    "relax.nn.softmax": _softmax,
}


def _over_last_axis(call: relax.Call) -> bool:
    shape = _static_shape(call.args[0])
    return bool(shape) and int(call.attrs.axis) in (-1, len(shape) - 1)


@mutator
class _FastMath(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        name = getattr(call.op, "name", None)
        if name in _FAST and call.args[0].ty.dtype == "float32":
            if name == "relax.nn.softmax" and not _over_last_axis(call):
                return call
            return self.builder_.call_te(_FAST[name], call.args[0])
        return call


def fast_math() -> tvm.transform.Pass:
    """Compute float32 ``exp``, ``sigmoid``, SiLU and GELU (erf) with TVM's polynomial
    approximations (``topi.fast_exp``, ``topi.fast_erf``) so that they vectorise.

    LLVM has no vector ``expf``/``erff`` without a vector math library and calls the scalar
    ones lane by lane: an EfficientNet's SiLU epilogues took 4.6 ns an element, more than
    their 1x1 convolutions. The polynomials differ from libm by ~1e-6 relative (exp) and
    ~4e-7 absolute (erf); onnxruntime uses approximations of its own. Softmax over the last
    axis is rewritten too (:func:`_softmax`: ``fast_exp``, and max and sum reduced a chunk of
    lanes at a time); on ViT-B's 12 x 197 x 197 scores it differs from PyTorch's by ~4e-7
    relative to the largest probability.
    """

    @tvm.transform.module_pass(opt_level=0, name="ResdslFastMath")
    def rewrite(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return _rewrite_functions(_FastMath(mod), mod)

    return rewrite


# Ops that a product's epilogue applies elementwise, through which its rows stay flat.
_ROWWISE_UNARY = {
    "relax.nn.gelu",
    "relax.nn.gelu_tanh",
    "relax.nn.relu",
    "relax.nn.silu",
    "relax.sigmoid",
    "relax.tanh",
    "relax.exp",
    "relax.erf",
}
_ROWWISE_BINARY = {
    "relax.add",
    "relax.subtract",
    "relax.multiply",
    "relax.divide",
    "relax.maximum",
    "relax.minimum",
}


@mutator
class _FlattenRows(PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.flat: dict[relax.Var, tuple[relax.Var, list[int]]] = {}  # var: (rows, shape)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        flat = self._flatten(binding.value)
        if flat is None:
            super().visit_var_binding_(binding)
            return
        rows, shape = flat
        rows = self.builder_.emit(rows)
        self.flat[binding.var] = (rows, shape)
        # The original shape for other users (the reshape of the last op of an epilogue);
        # those that nothing uses go with DeadCodeElimination.
        reshape = relax.op.reshape(rows, shape)
        if isinstance(binding.var, relax.DataflowVar):
            back = self.builder_.emit(reshape)
        else:  # a dataflow block's output
            back = self.builder_.emit_output(reshape)
        self.set_var_remap(binding.var, back)

    def _flatten(self, value: relax.Expr) -> tuple[relax.Expr, list[int]] | None:
        if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
            return None
        name, args = value.op.name, list(value.args)
        if name == "relax.matmul":
            shape, wshape = _static_shape(args[0]), _static_shape(args[1])
            if shape is None or wshape is None or len(shape) < 3 or len(wshape) != 2:
                return None
            rows = 1
            for extent in shape[:-1]:
                rows *= extent
            x = self.builder_.emit(relax.op.reshape(self.visit_expr(args[0]), (rows, shape[-1])))
            product = relax.op.matmul(x, self.visit_expr(args[1]), out_dtype=value.attrs.out_dtype)
            return product, [*shape[:-1], wshape[-1]]
        if name in _ROWWISE_UNARY and len(args) == 1 and args[0] in self.flat:
            rows, shape = self.flat[args[0]]
            return relax.Call(value.op, [rows], value.attrs), shape
        if name in _ROWWISE_BINARY and len(args) == 2:
            flat = [a in self.flat for a in args]
            if all(flat):  # a residual add of two products' results
                (a, shape), (b, other) = self.flat[args[0]], self.flat[args[1]]
                if shape != other:
                    return None
                return relax.Call(value.op, [a, b], value.attrs), shape
            if not any(flat):
                return None
            rows, shape = self.flat[args[flat.index(True)]]
            other = args[flat.index(False)]
            other_shape = _static_shape(other)
            if other_shape is None:
                return None
            other = self.visit_expr(other)
            if other_shape == shape:
                other = self.builder_.emit(relax.op.reshape(other, (-1, shape[-1])))
            elif len(other_shape) > 1:
                if any(e != 1 for e in other_shape[:-1]):
                    return None  # broadcast along the rows' own axes
                other = self.builder_.emit(relax.op.reshape(other, other_shape[-2:]))
            operands = [rows, other] if flat[0] else [other, rows]
            return relax.Call(value.op, operands, value.attrs), shape
        return None


def _static_shape(expr: relax.Expr) -> list[int] | None:
    shape = getattr(expr.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None or not all(isinstance(v, tirx.IntImm) for v in values):
        return None
    return [int(v) for v in values]


def flatten_matmul_rows() -> tvm.transform.Pass:
    """Compute ``x[..., k] @ w[k, n]`` (``w`` 2-D, static shapes) as a product of
    ``prod(...)`` rows: ``reshape(reshape(x, (m, k)) @ w, (..., n))``.

    A ConvNeXt block's linear layers run on ``(1, 14, 14, 384)``: as a 4-D product its rows
    were the 14 columns of one image row, which :class:`.cpu.Matmul`'s tile of 6 does not
    divide (14 padded to 18), and a weight panel was streamed once per image row; as one
    product of 196 rows, 198 are computed. The reshape of ``x`` is a view (nothing fuses
    into a product's inputs); the one of the result joins the product's epilogue, which
    :class:`.cpu.Matmul` flattens back to rows.
    """

    @tvm.transform.module_pass(opt_level=0, name="ResdslFlattenMatmulRows")
    def rewrite(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return relax.transform.DeadCodeElimination()(_rewrite_functions(_FlattenRows(mod), mod))

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
        flatten_matmul_rows(),
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
