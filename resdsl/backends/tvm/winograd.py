"""Winograd convolution for the CPU pipeline: 3x3 stride-1 convolutions in fewer multiplies.

A 3x3 convolution computed on ``m x m`` output tiles with Winograd's minimal filtering
algorithm F(m x m, 3 x 3) (Lavin & Gray, 2015) takes ``(m + 2)^2`` multiplies per tile and
channel pair instead of ``9 m^2``: 2.25x fewer for ``m = 2``, 4x fewer for ``m = 4``. In a
ResNet the eligible ones hold much of the arithmetic (64% of ResNet-18's multiply-adds, 31%
of ResNet-50's), and the direct kernels already run near the machine's FMA peak, so fewer
multiplies is what is left to gain.

:func:`winograd_pass` rewrites each eligible ``relax.nn.conv2d`` (NHWC, OHWI weight that
is a constant, 3x3, stride 1, dilation 1, padding 1, one group, output sides divisible by
``m``, float32) into four kernels::

    X = the input with a border of one zero          winograd_pad
    V[e, p, c] = (B^T d_p B)[e]        winograd_input: gather each tile d_p of X, transform
    M[e, p, k] = sum_c V[e, p, c] U[e, c, k]   winograd_gemm: (m+2)^2 independent matmuls
    Y[n, h, w, k] = (A^T M_p A)[h % m, w % m]   winograd_output: back to NHWC (+ epilogue)

where ``p`` numbers the output tiles, ``e`` the ``(m+2)^2`` transformed positions and
``U = G g G^T`` is the transformed weight, computed here once with NumPy. The transforms are
written out as explicit sums of the few non-zero matrix entries. Each kernel keeps its own
op pattern, so FuseOps attaches the convolution's epilogue (bias, residual add, ReLU) to
``winograd_output`` and nothing else; the CPU rules in :mod:`.schedules.cpu` recognise the
kernels by their block annotation (:data:`ROLE`, with the tile side under :data:`TILE`).

The result is the convolution exactly in real arithmetic; in float32 it rounds differently
from the direct sum: F(2x2) loses about one bit, F(4x4) a few more (its matrices hold 1/4,
1/6 and 1/24), well inside the 1e-3 parity bound; ``tests/test_winograd.py`` checks them
against PyTorch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

# B^T, G, A^T of F(m x m, 3 x 3), interpolation points 0, +-1 (m = 2) and 0, +-1, +-2 (m = 4).
TRANSFORMS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    2: (
        np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], "f8"),
        np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]], "f8"),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], "f8"),
    ),
    4: (
        np.array(
            [
                [4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1],
            ],
            "f8",
        ),
        np.array(
            [
                [1 / 4, 0, 0],
                [-1 / 6, -1 / 6, -1 / 6],
                [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6],
                [0, 0, 1],
            ],
            "f8",
        ),
        np.array(
            [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
            "f8",
        ),
    ),
}

# Tile sides tried in order, and the largest transformed input (bytes) worth the traffic.
TILES = (4, 2)
MAX_BYTES = 64 << 20

# The kernels' names, which are also the roles that the block annotation ROLE gives the CPU
# rules to look for (with the tile side under TILE).
PAD, INPUT, GEMM, OUTPUT = "winograd_pad", "winograd_input", "winograd_gemm", "winograd_output"
ROLE, TILE = "resdsl.winograd", "resdsl.winograd_tile"


def _attrs(role: str, shape: Shape) -> dict:
    return {ROLE: role, TILE: shape.m}


# FuseOps' op patterns (relay's OpPatternKind): an "out-elementwise-fusable" kernel takes the
# elementwise ops after it and nothing before it.
_OUT_EWISE_FUSABLE = 4


@dataclass(frozen=True)
class Shape:
    """An eligible convolution: NHWC input ``(n, h, w, c)``, ``k`` output channels."""

    n: int
    h: int
    w: int
    c: int
    k: int
    m: int  # output tile side

    @property
    def t(self) -> int:  # input tile side
        return self.m + 2

    @property
    def tiles(self) -> int:
        return self.n * (self.h // self.m) * (self.w // self.m)


def weight_transform(weight: np.ndarray, m: int) -> np.ndarray:
    """``U[e, c, k] = (G g_kc G^T)[e]`` for an OHWI 3x3 weight: shape ``((m+2)^2, C, K)``."""
    _, g, _ = TRANSFORMS[m]
    u = np.einsum("au,kuvc,bv->abck", g, weight.astype("f8"), g)
    t = m + 2
    return np.ascontiguousarray(u.reshape(t * t, weight.shape[3], weight.shape[0]))


def _combination(coefficients: np.ndarray, terms: list) -> tirx.PrimExpr:
    """``sum_i coefficients[i] * terms[i]`` over the non-zero coefficients."""
    total = None
    for coefficient, term in zip(coefficients, terms, strict=True):
        if coefficient == 0:
            continue
        if coefficient == 1:
            value = term
        elif coefficient == -1:
            value = -term
        else:
            value = term * tirx.const(float(coefficient), "float32")
        total = value if total is None else total + value
    return total if total is not None else tirx.const(0.0, "float32")


def _sandwich(left: np.ndarray, right: np.ndarray, element) -> tirx.PrimExpr:
    """``(left X right^T)`` for ``X[u, v] = element(u, v)``: one entry, as explicit sums."""
    size = len(right)
    return _combination(
        left, [_combination(right, [element(u, v) for v in range(size)]) for u in range(size)]
    )


def _choose(index: tirx.PrimExpr, options: list) -> tirx.PrimExpr:
    """``options[index]``: a Select chain that folds away once ``index`` is unrolled."""
    chosen = options[-1]
    for i in range(len(options) - 2, -1, -1):
        chosen = tirx.Select(index == i, options[i], chosen)
    return chosen


def winograd_pad(x: te.Tensor, shape: Shape) -> te.Tensor:
    """The input with a border of one zero, its own kernel.

    Separate so that no schedule (a tuning candidate included) can inline the bounds test
    into the transform, whose Select over positions, unless unrolled, evaluates every arm's
    loads: out of bounds at the border.
    """
    zero = tirx.const(0.0, "float32")

    def pad(n, y, z, c):
        inside = tirx.all(y >= 1, y <= shape.h, z >= 1, z <= shape.w)
        return tirx.if_then_else(inside, x[n, y - 1, z - 1, c], zero)

    return te.compute(
        (shape.n, shape.h + 2, shape.w + 2, shape.c), pad, name=PAD, attrs=_attrs(PAD, shape)
    )


def winograd_input(padded: te.Tensor, shape: Shape) -> te.Tensor:
    """``V[e, p, c]``: cut ``(m+2)^2`` tiles at stride ``m`` from the padded input, ``B^T d B``."""
    bt, _, _ = TRANSFORMS[shape.m]
    m, t = shape.m, shape.t
    rows, cols = shape.h // m, shape.w // m

    def transform(e, p, c):
        n, i, j = p // (rows * cols), p % (rows * cols) // cols, p % cols

        def d(u, v):
            return padded[n, i * m + u, j * m + v, c]

        # (B^T d B)[a, b] = sum_u bt[a, u] sum_v bt[b, v] d[u, v]
        return _choose(e, [_sandwich(bt[a], bt[b], d) for a in range(t) for b in range(t)])

    return te.compute(
        (t * t, shape.tiles, shape.c), transform, name=INPUT, attrs=_attrs(INPUT, shape)
    )


def winograd_gemm(v: te.Tensor, u: te.Tensor, shape: Shape) -> te.Tensor:
    """``M[e, p, k] = sum_c V[e, p, c] U[e, c, k]``."""
    c = te.reduce_axis((0, shape.c), name="c")
    return te.compute(
        (shape.t * shape.t, shape.tiles, shape.k),
        lambda e, p, k: te.sum(v[e, p, c] * u[e, c, k], axis=c),
        name=GEMM,
        attrs=_attrs(GEMM, shape),
    )


def winograd_output(mm: te.Tensor, shape: Shape) -> te.Tensor:
    """``Y[n, h, w, k] = (A^T M_p A)[h % m, w % m]`` with ``p`` the tile holding ``(h, w)``."""
    _, _, at = TRANSFORMS[shape.m]
    m, t = shape.m, shape.t
    rows, cols = shape.h // m, shape.w // m

    def transform(n, h, w, k):
        p = n * rows * cols + h // m * cols + w // m

        def tile(u, v):
            return mm[u * t + v, p, k]

        # (A^T M A)[r, s] = sum_u at[r, u] sum_v at[s, v] M[u t + v]
        by_row = [
            _choose(w % m, [_sandwich(at[r], at[s], tile) for s in range(m)]) for r in range(m)
        ]
        return _choose(h % m, by_row)

    return te.compute(
        (shape.n, shape.h, shape.w, shape.k), transform, name=OUTPUT, attrs=_attrs(OUTPUT, shape)
    )


def is_winograd(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` is (or was fused from) one of this module's kernels."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    root = sch.get_sblock(func.body.block.name_hint)
    return any(ROLE in sch.get(block).annotations for block in sch.get_child_blocks(root))


def eligible(call: relax.Call, tiles: tuple[int, ...], max_bytes: int) -> Shape | None:
    """How ``call`` is rewritten: its shape and the first tile side in ``tiles`` that divides
    its output, or None if it is not a convolution this rewrite takes.

    ``max_bytes`` bounds the transformed input ``V`` (as large as ``M``): beyond the caches
    the transforms' memory traffic costs more than the multiplies saved.
    """
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
        return None
    data, weight = call.args
    attrs = call.attrs
    if not isinstance(weight, tvm.ir.expr.Constant):
        return None
    if (
        attrs.data_layout != "NHWC"
        or attrs.kernel_layout != "OHWI"
        or attrs.out_layout not in ("", "NHWC")
        or attrs.groups != 1
        or [int(s) for s in attrs.strides] != [1, 1]
        or [int(d) for d in attrs.dilation] != [1, 1]
        or [int(p) for p in attrs.padding] != [1, 1, 1, 1]
    ):
        return None
    dtypes = {str(data.ty.dtype), str(weight.ty.dtype), str(attrs.out_dtype or data.ty.dtype)}
    if dtypes != {"float32"}:
        return None
    try:
        n, h, w, c = (int(s) for s in data.ty.shape)
        k, kh, kw, wc = (int(s) for s in weight.ty.shape)
    except (TypeError, ValueError):  # a symbolic shape
        return None
    if (kh, kw) != (3, 3) or wc != c:
        return None
    for m in tiles:
        if h % m == 0 and w % m == 0:
            shape = Shape(n, h, w, c, k, m)
            if shape.t**2 * shape.tiles * c * 4 <= max_bytes:
                return shape
    return None


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, tiles: tuple[int, ...], max_bytes: int) -> None:
        super().__init__(mod)
        self.tiles, self.max_bytes = tiles, max_bytes

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        shape = eligible(call, self.tiles, self.max_bytes)
        if shape is None:
            return call
        data, weight = call.args
        u = relax.const(weight_transform(weight.value.numpy(), shape.m).astype("float32"))
        attrs = {"op_pattern": _OUT_EWISE_FUSABLE}

        def kernel(te_func, *args):
            compute = functools.partial(te_func, shape=shape)
            name = te_func.__name__
            return self.builder_.call_te(
                compute, *args, primfunc_name_hint=name, primfunc_attrs=attrs
            )

        padded = self.builder_.emit(kernel(winograd_pad, data))
        v = self.builder_.emit(kernel(winograd_input, padded))
        mm = self.builder_.emit(kernel(winograd_gemm, v, u))
        return kernel(winograd_output, mm)


def winograd_pass(
    tiles: tuple[int, ...] | None = None, max_bytes: int | None = None
) -> tvm.transform.Pass:
    """Rewrite every eligible 3x3 convolution into F(m x m, 3 x 3) Winograd kernels, with
    ``m`` the first of ``tiles`` (default :data:`TILES`) that fits; see :func:`eligible`
    (default ``max_bytes``: :data:`MAX_BYTES`). Run it after ConvertLayout (NHWC) and
    FoldConstant (the weight must be a constant)."""
    tiles = TILES if tiles is None else tuple(tiles)
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    unknown = set(tiles) - set(TRANSFORMS)
    if unknown:
        raise ValueError(
            f"Winograd tiles must be among {sorted(TRANSFORMS)}, got {sorted(unknown)}"
        )

    @tvm.transform.module_pass(opt_level=0, name="ResdslWinograd")
    def rewrite(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Rewriter(mod, tiles, max_bytes)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return rewriter.builder_.finalize()

    return rewrite
