"""resdsl's CUDA schedule: float16 convolutions and matmuls on tensor cores, at any size.

TVM's default GPU rules (dlight) put a float16 matmul-like kernel on tensor cores only when
every extent exceeds 64, with one fixed 128x128 block tile, and accumulate in the output's
dtype. For a residual network in float16 that leaves every 64-channel convolution (all of
ResNet's first stage) on plain FMA units, and at batch 1 the deep stages (7x7 pixels) too;
the others accumulate thousands of products in float16.

:class:`TensorCoreMatmul` takes any float16 reduction that normalises to a matmul
(``C[s, i, j] += A[s, i, k] * B[s, j, k]``: convolutions as implicit GEMM, dense layers),
pads it to whole tiles, accumulates in float32 (the lowering asks for a float32 result and
casts afterwards; the cast, bias, residual add and ReLU of the fused epilogue run on the
stored accumulator), and picks the block tile per kernel (:func:`choose_tile`: the largest
that launches and pads little). The schedule itself (shared-memory staging with
a two-stage software pipeline, WMMA 16x16x16 fragments, epilogue through shared memory) is
dlight's ``MatmulTensorization`` with the tile made a parameter.

:func:`cuda_rules` is the rule list for ``ApplyDefaultSchedule``: this rule first, then
dlight's own rules for everything else (float32 matmuls, reductions, element-wise kernels).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.analysis import get_root_block

from ...._compat import dlight_matmul_helpers

matmul = dlight_matmul_helpers()  # dlight's matmul analyses, which it does not export

__all__ = [
    "TensorCoreMatmul",
    "Tile",
    "choose_tile",
    "cuda_rules",
    "dlight_rules",
    "launchable",
    "shared_bytes",
]

WMMA = 16  # the fragment size: 16x16x16
WARP = 32
VECTOR = 4  # float16 elements per thread per global/shared copy (8 bytes)
K_CHUNK = 4  # fragments along k per shared-memory stage: 64 elements
STATIC_SHARED = 48 * 1024  # bytes of static shared memory a block may declare


@dataclass(frozen=True)
class Tile:
    """A block tile: ``warps_i x warps_j`` warps, each ``frags_i x frags_j`` 16x16 fragments."""

    warps_i: int
    warps_j: int
    frags_i: int = 2
    frags_j: int = 2

    @property
    def rows(self) -> int:
        return WMMA * self.warps_i * self.frags_i

    @property
    def cols(self) -> int:
        return WMMA * self.warps_j * self.frags_j

    @property
    def warps(self) -> int:
        return self.warps_i * self.warps_j


# Largest first: a big tile reuses each loaded element most; smaller ones pad less where a
# dimension is small (64 channels, 49 pixels) or just over a multiple of 128.
TILES = (Tile(4, 4), Tile(2, 4), Tile(4, 2), Tile(2, 2), Tile(1, 2), Tile(2, 1), Tile(1, 1))


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def shared_bytes(tile: Tile) -> tuple[int, int]:
    """(static, dynamic) shared memory of a block with this tile, in bytes.

    Dynamic: the float16 A and B slices of one k step (64 wide, rows padded by 8 halves
    against bank conflicts), double-buffered by the software pipeline. Static: the float32
    accumulator tile staged for the epilogue, unless it is itself too big for static memory
    and goes to dynamic memory (the 128x128 tile).
    """
    k = WMMA * K_CHUNK
    operands = 2 * 2 * (tile.rows + tile.cols) * (k + 8)
    staging = 4 * tile.rows * tile.cols
    if 4 * tile.rows * tile.cols > STATIC_SHARED:
        return 0, operands + staging
    return staging, operands


def launchable(tile: Tile) -> bool:
    """Whether a block with this tile launches with TVM 0.27's CUDA runtime.

    A block may use more than 48 KiB of shared memory only by opting in, and TVM opts in
    only when the *dynamic* part alone exceeds 48 KiB: a block whose static and dynamic
    parts are each under the limit but together over it fails to launch
    (CUDA_ERROR_INVALID_VALUE; seen on an H200 with the 64x64 tile).
    """
    static, dynamic = shared_bytes(tile)
    return static + dynamic <= STATIC_SHARED or dynamic > STATIC_SHARED


def choose_tile(m: int, n: int) -> Tile:
    """The largest launchable tile that pads an ``m x n`` product by at most a quarter.

    Failing that (a dimension under 32, or just over a multiple of 128), the tile with the
    least padding, the one with more warps among equals. Large tiles measured best even
    where they leave multiprocessors idle (docs/performance.md, "Figures (NVIDIA H200)").
    """

    def waste(t: Tile) -> float:
        return _ceil(m, t.rows) * t.rows * _ceil(n, t.cols) * t.cols / (m * n) - 1

    tiles = [t for t in TILES if launchable(t)]
    for tile in tiles:
        if waste(tile) <= 0.25:
            return tile
    return min(tiles, key=lambda t: (waste(t), -t.warps))


def _extent(extent: tirx.Expr) -> int | None:
    return int(extent) if isinstance(extent, tirx.IntImm) else None


class TensorCoreMatmul(dlight.ScheduleRule):
    """float16 x float16 -> float32 matmul-like kernels on WMMA tensor cores (sm_70+)."""

    def is_target_available(self, target: tvm.target.Target) -> bool:
        # As dlight's GPUScheduleRule (which tvm.s_tir.dlight.gpu does not export).
        return super().is_target_available(target) and "gpu" in target.keys

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        if target.kind.name != "cuda":
            return None
        if matmul.check_sm_version(str(target.attrs.get("arch", ""))) < 70:
            return None
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(get_root_block(sch))
        reduction_blocks = matmul.get_reduction_blocks(sch, blocks)
        if reduction_blocks is None:
            return None
        main_block = reduction_blocks[0]
        if matmul.get_index_map(sch.get(main_block)) is None:
            return None
        if matmul.get_in_out_dtypes(sch.get(main_block)) != ("float16", "float32"):
            return None  # float16 accumulation is not accurate enough; let dlight have it

        # Normalise to C[S, I, J] += A[S, I, K] * B[S, J, K].
        reindex_a = sch.reindex(main_block, ("read", 0))
        reindex_b = sch.reindex(main_block, ("read", 1))
        reindex_c = sch.reindex(main_block, ("write", 0))
        matmul_map, a_map, b_map, c_map = matmul.get_index_map(sch.get(main_block))
        sch.transform_layout(reindex_a, ("write", 0), a_map)
        sch.transform_layout(reindex_b, ("write", 0), b_map)
        sch.transform_layout(reindex_c, ("read", 0), c_map)
        sch.transform_block_layout(main_block, matmul_map)

        extents = [_extent(v.dom.extent) for v in sch.get(main_block).iter_vars]
        if None in extents:
            return None  # a dynamic shape: resdsl builds fixed shapes only
        _, m, n, _ = extents
        if min(m, n) < WMMA:
            return None  # a matrix-vector product: dlight's GEMV rule is made for it
        tile = choose_tile(m, n)

        sch.pad_einsum(main_block, [1, tile.rows, tile.cols, WMMA * K_CHUNK])

        b, i, j, k = sch.get_loops(main_block)
        i, i_inner = sch.split(i, factors=[None, WMMA])
        j, j_inner = sch.split(j, factors=[None, WMMA])
        k, k_inner = sch.split(k, factors=[None, WMMA])
        sch.reorder(i, j, k, i_inner, j_inner, k_inner)
        block_inner = main_block
        block_outer = sch.blockize(i_inner)

        i0, i1, i2, i3 = sch.split(i, factors=[None, 1, tile.warps_i, tile.frags_i])
        j0, j1, j2, j3 = sch.split(j, factors=[1, None, tile.warps_j, tile.frags_j])
        k0, k1 = sch.split(k, factors=[None, K_CHUNK])
        sch.annotate(k0, "software_pipeline_order", [0, 3, 1, 4, 5, 2, 6])
        sch.annotate(k0, "software_pipeline_stage", [0, 0, 0, 0, 0, 1, 1])
        sch.annotate(k1, "software_pipeline_order", [0, 1, 2])
        sch.annotate(k1, "software_pipeline_stage", [0, 0, 1])
        sch.reorder(i0, j0, i1, j1, j2, i2, k0, k1, i3, j3)
        sch.bind(b, "blockIdx.z")
        sch.bind(sch.fuse(i0, j0), "blockIdx.x")
        sch.bind(sch.fuse(i1, j1), "blockIdx.y")
        thread_y = sch.fuse(j2, i2)
        sch.bind(thread_y, "threadIdx.y")

        def fetch_to_shared(block, index: int):
            read = sch.cache_read(block, index, "shared.dyn")
            sch.compute_at(read, k0)
            fused = sch.fuse(*sch.get_loops(read)[-2:])
            _, ty, tx, vec = sch.split(fused, factors=[None, tile.warps, WARP, VECTOR])
            sch.bind(tx, "threadIdx.x")
            sch.bind(ty, "threadIdx.y")
            sch.vectorize(vec)
            sch.storage_align(read, 0, axis=-2, factor=16, offset=8)
            sch.annotate(read, "tirx.manifest_shared_memory_local_stage", 1)
            sch.annotate(read, "double_buffer_scope", 0)
            return read

        matmul.auto_inline_producers(sch, fetch_to_shared(block_outer, 0))
        matmul.auto_inline_producers(sch, fetch_to_shared(block_outer, 1))

        a_frag = sch.cache_read(block_outer, 0, "wmma.matrix_a")
        b_frag = sch.cache_read(block_outer, 1, "wmma.matrix_b")
        sch.compute_at(a_frag, k1)
        sch.compute_at(b_frag, k1)
        # The float32 tile goes back to global memory through shared memory. Static shared
        # memory is capped at 48 KiB per block; a larger tile takes dynamic shared memory,
        # where TVM 0.27 plans it correctly only beside the 128x128 tile's operand buffers
        # (with smaller ones, merging the dynamic buffers mixes up their dtypes).
        store_scope = "shared.dyn" if tile.rows * tile.cols * 4 > STATIC_SHARED else "shared"
        to_global = sch.cache_write(block_outer, 0, store_scope)
        sch.storage_align(to_global, 0, -2, 16, 4)
        store = sch.cache_write(block_outer, 0, "wmma.accumulator")
        sch.reverse_compute_at(store, thread_y)
        sch.reverse_compute_at(to_global, thread_y)
        i, j = sch.get_loops(store)[-2:]
        i0, i1 = sch.split(i, factors=[None, WMMA])
        j0, j1 = sch.split(j, factors=[None, WMMA])
        sch.reorder(i0, j0, i1, j1)
        init = sch.get_child_blocks(sch.decompose_reduction(block_outer, k0))[0]

        from tvm.s_tir.tensor_intrin.cuda import get_wmma_intrin_group  # 30 s: only if needed

        intrin = get_wmma_intrin_group(
            load_scope="shared.dyn", store_scope=store_scope,
            in_dtype="float16", out_dtype="float32", trans_b=True,
        )  # fmt: skip
        try:
            for frag, name in ((a_frag, "load_a"), (b_frag, "load_b")):
                i, j = sch.get_loops(frag)[-2:]
                i0, i1 = sch.split(i, factors=[None, WMMA])
                j0, j1 = sch.split(j, factors=[None, WMMA])
                sch.reorder(i0, j0, i1, j1)
                sch.unroll(i0)
                sch.unroll(j0)
                sch.tensorize(i1, intrin[name])
            sch.tensorize(sch.get_loops(init)[-2], intrin["init"])
            sch.tensorize(sch.get_loops(store)[-2], intrin["store"])
            sch.tensorize(sch.get_loops(block_inner)[-3], intrin["compute"])
        except RuntimeError:  # ScheduleError, TVM's InternalError
            return None  # a block the intrinsics do not match: dlight's rules take it
        try:
            matmul.auto_inline_consumer_chain(sch, to_global)
        except (AssertionError, RuntimeError):  # an epilogue that does not inline into the
            return None  # tile's store: dlight's rules take the kernel
        fused = sch.fuse(*sch.get_loops(to_global)[-2:])
        _, tx, vec = sch.split(fused, factors=[None, WARP, VECTOR])
        sch.bind(tx, "threadIdx.x")
        sch.vectorize(vec)
        return sch


def dlight_rules() -> list[dlight.ScheduleRule]:
    """TVM's default GPU rules, as its CUDA pipeline applies them; one that fails on a
    function passes it to the next (:class:`Declining`)."""
    gpu = dlight.gpu
    rules = [gpu.Matmul(), gpu.GEMV(), gpu.Reduction(), gpu.GeneralReduction(), gpu.Fallback()]
    return [Declining(rule) for rule in rules]


class Declining(dlight.ScheduleRule):
    """``rule``, except that an assertion it fails on a function declines the function.

    dlight's ``Matmul`` asserts that a matmul's epilogue inlines into its cache-write stage
    (``auto_inline_consumer_chain``), which EfficientNet-B0's squeeze-excitation epilogues
    at batch 32 do not: the build stopped there, where the next rule can schedule it.
    """

    def __init__(self, rule: dlight.ScheduleRule) -> None:
        self.rule = rule

    def is_target_available(self, target: tvm.target.Target) -> bool:
        return self.rule.is_target_available(target)

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, tunable: bool):
        try:
            return self.rule.apply(func, target, tunable)
        except AssertionError:
            return None


def cuda_rules() -> list[dlight.ScheduleRule]:
    """resdsl's tensor-core rule, then TVM's default GPU rules (dlight)."""
    return [TensorCoreMatmul(), *dlight_rules()]
