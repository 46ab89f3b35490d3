"""Default CPU schedules for ``--target llvm``: small dlight-style rules, no tuning.

Relax's FuseOps/FuseTIR leave one PrimFunc per fused group (``conv2d + bias + add + relu``,
``matmul + bias``, ``max_pool2d``, ...) with plain serial loops. Each rule here recognises one
kind of PrimFunc and returns a :class:`tvm.s_tir.Schedule` for it, or ``None`` so that the
next rule may try (``ApplyDefaultSchedule`` takes the first that applies):

* :class:`Conv2d` -- a direct convolution (NHWC, to which the pipeline converts them, or
  NCHW) with a register tile of output channels by output columns, vectorised over output
  channels, parallel over output rows; the fused epilogue (bias, residual add, ReLU) is
  applied to the tile while it is in registers.
* :class:`DepthwiseConv2d` -- a depthwise convolution in NHWC: a tile of output columns by
  one vector of channels in registers over the unrolled taps, the padding tested per tap
  (not copied), the epilogue on the tile.
* :class:`Matmul` -- dense and batched products (``a[..., i, k] * b[..., k, j]``: linear
  layers on tokens, attention) with :class:`Conv2d`'s register tile and weight packing.
* :class:`SpatialReduction` -- everything else with one reduction: pooling, means, the
  convolutions :class:`Conv2d` declines: parallel over the outer output
  axes, vectorised over the innermost one where the inputs are contiguous along it.
* :class:`ChannelNorm` -- a layer norm over a non-contiguous axis (ConvNeXt's channel norm
  in NCHW); other multi-reduction functions (softmax, token layer norms) go to TVM's rule.
* :class:`Elementwise` -- injective functions (adds, activations, layout changes): parallel
  over the outer axes, vectorised innermost.

Rules only reorder, split, pad, cache and annotate loops, so they change no result beyond float
reassociation; ``tests/test_cpu_schedules.py`` checks them against the PyTorch backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight import cpu as dlight_cpu
from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width, target_has_features

from .. import winograd

# The block annotation Relax's SplitLayoutRewritePreproc looks for: such a block (it only
# repacks a constant weight) becomes its own function, which FoldConstant then runs at
# compile time, so the packed weights are stored in the library and cost nothing per call.
LAYOUT_PREPROC = "meta_schedule.layout_rewrite_preproc"

# Below this many output elements a parallel loop costs more to launch than it saves.
MIN_PARALLEL_WORK = 4096


@dataclass(frozen=True)
class Machine:
    """What the schedules need to know about the CPU: vector lanes and vector registers."""

    lanes: int  # float32 lanes in one vector register
    registers: int  # architectural vector registers

    @classmethod
    def of(cls, target: Target) -> Machine:
        # llvm_get_vector_width reports the host's width whatever -mcpu says, so x86 is
        # decided from the target's own features (AVX-512: 32 x 512 bit, AVX: 16 x 256 bit).
        if target_has_features("avx512f", target):
            return cls(lanes=16, registers=32)
        if target_has_features("avx", target):
            return cls(lanes=8, registers=16)
        if target_has_features("sse2", target):
            return cls(lanes=4, registers=16)
        bits = llvm_get_vector_width(target)
        return cls(lanes=max(bits, 128) // 32, registers=32)


class _Rule(dlight.ScheduleRule):
    """Common plumbing: a rule declines (``None``) where a schedule primitive refuses."""

    def is_target_available(self, target: Target) -> bool:
        # As dlight's CPUScheduleRule (which tvm.s_tir.dlight.cpu does not export).
        return super().is_target_available(target) and target.kind.name == "llvm"

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        try:
            return sch if self.schedule(sch, func, Machine.of(target)) else None
        except ScheduleError:  # a pattern this rule does not handle: let the next one try
            return None
        except ValueError:  # a primitive's own check refused (reverse_compute_at on a group
            return None  # norm's fused reshape epilogue): the same, the next rule tries

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        """Schedule ``sch`` in place; False if the rule does not apply."""
        raise NotImplementedError


# --------------------------------------------------------------------------- block helpers


def _blocks(sch: s_tir.Schedule) -> list[s_tir.schedule.SBlockRV]:
    """The leaf blocks of the function, in program order."""
    root = sch.get_sblock(sch.mod["main"].body.block.name_hint)
    return sch.get_child_blocks(root)


def _kinds(stmt: s_tir.SBlock) -> str:
    """Iteration kinds of a block, e.g. ``"SSSSRRR"`` for a convolution."""
    names = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(names.get(iv.iter_type, "O") for iv in stmt.iter_vars)


def _indices(region) -> list[tirx.Expr]:
    return [r.min for r in region.region]


def _uses(expr: tirx.Expr, *variables: tirx.Var) -> list[bool]:
    """For each of ``variables``, whether ``expr`` mentions it."""
    found = collect_vars_used_in_prim_expr(expr)
    return [any(v.same_as(f) for f in found) for v in variables]


def _only(expr: tirx.Expr, *allowed: tirx.Var) -> bool:
    """Whether ``expr`` mentions no variable but ``allowed``."""
    found = collect_vars_used_in_prim_expr(expr)
    return all(any(f.same_as(v) for v in allowed) for f in found)


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _epilogue(sch: s_tir.Schedule, block) -> tuple[bool, s_tir.schedule.SBlockRV | None]:
    """Inline the elementwise blocks after ``block`` into the last one (bias, residual, ReLU).

    Returns (ok, the last block or None when there is none). Not ok when a later block is
    not injective or cannot be inlined (e.g. a second function output); the rule then
    declines the function.
    """
    blocks = _blocks(sch)
    after = blocks[[sch.get(b).same_as(sch.get(block)) for b in blocks].index(True) + 1 :]
    if any("R" in _kinds(sch.get(b)) for b in after):
        return False, None
    for b in after[:-1]:
        try:
            sch.compute_inline(b)
        except ScheduleError:
            return False, None
    return True, (after[-1] if after else None)


def _parallel_vectorize(sch: s_tir.Schedule, block, machine: Machine) -> None:
    """Injective block: fuse the outer loops into one parallel loop, vectorise the innermost.

    Only the innermost loop is vectorised (not a fused one) so that vector accesses stay
    contiguous; a width that the lanes do not divide gets a masked tail.
    """
    loops = sch.get_loops(block)
    if not loops:
        return
    extents = [_extent(sch, lp) for lp in loops]
    if None in extents:
        return
    inner = loops[-1]
    if extents[-1] >= 2:
        lanes = machine.lanes if extents[-1] >= machine.lanes else extents[-1]
        if extents[-1] > lanes:
            _, inner = sch.split(inner, [None, lanes])
        sch.vectorize(inner)
    total = 1
    for e in extents:
        total *= e
    if len(loops) > 1 and total >= MIN_PARALLEL_WORK:
        sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0])


def _dividing_lanes(extent: int, machine: Machine) -> int:
    """The machine's lane count, halved (down to 4) until it divides ``extent`` if it can."""
    lanes = machine.lanes
    while lanes > 4 and extent % lanes:
        lanes //= 2
    return lanes


def _vector_lanes(extent: int, machine: Machine) -> int:
    """Lanes to vectorise a loop of ``extent`` by: whole vectors where a lane count down to 4
    divides it (1000 outputs are 125 x 8), else a masked tail (beats scalar code for 7, 13).
    """
    lanes = _dividing_lanes(extent, machine)
    return lanes if extent % lanes == 0 else min(machine.lanes, extent)


def register_tile(channels: int, width: int, machine: Machine) -> tuple[int, int, int] | None:
    """The accumulator tile of a convolution or matmul: (vectors, lanes, columns), or None.

    ``channels`` output channels (or matmul columns), contiguous, split into vectors of
    ``lanes``; ``width`` output columns (or matmul rows), each a broadcast per step. None
    when no lane count from the machine's down to 4 divides ``channels``.
    """
    lanes = _dividing_lanes(channels, machine)
    if channels % lanes:
        return None
    # About 16 accumulators (12 with 16 registers) measure best: more spill once LLVM also
    # needs registers for the weight vectors, broadcasts and addresses. Four vectors by four
    # columns, where they divide, load less per multiply than two by eight (6% faster on
    # the 1x1 convolutions at 56x56, 10% on the stem); two by seven is kept where 4 does not
    # divide the width (14, 7), whose tail of two columns costs more than that.
    if machine.registers >= 32 and channels % (4 * lanes) == 0 and width % 4 == 0:
        return 4, lanes, 4
    # Three vectors by four columns where two vectors do not divide the channels but three do
    # (MobileNetV2's 24-channel projections): one vector by eight columns loads a broadcast
    # per FMA; 3 x 4 loads 7 values per 12 FMAs (0.55 -> 0.37 ms on 144 -> 24 at 56 x 56).
    # Where two vectors divide, three measured no better (slower at 16 -> 96 at 112 x 112).
    # Measured with AVX2 only (16 registers); AVX-512 keeps one vector by more columns.
    three = channels % (2 * lanes) and channels % (3 * lanes) == 0
    if machine.registers < 32 and three and width % 4 == 0:
        return 3, lanes, 4
    vectors = 2 if channels % (2 * lanes) == 0 else 1
    most = min(machine.registers - 4, 16) // vectors
    columns = _divisor_at_most(width, most)
    if columns * 2 <= most and width > most:  # no good divisor: take a tail
        columns = most
        # A tail of one column costs almost a whole tile: 4 + 3 beat 6 + 1 on width 7 with 16
        # registers (MobileNetV2's and ResNet-50's convolutions at 7 x 7: 10-20% faster);
        # 5 + 5 + 4 lost to 6 + 6 + 2 on width 14.
        if width % columns == 1 and width % 4 > 1:
            columns = 4
    return vectors, lanes, columns


def _is_copy(stmt: s_tir.SBlock) -> bool:
    """Whether a block only copies one buffer into another of the same shape (a pad by 0)."""
    if len(stmt.reads) != 1 or len(stmt.writes) != 1:
        return False
    source, target = stmt.reads[0].source, stmt.writes[0].source
    same = [int(a) == int(b) for a, b in zip(source.shape, target.shape, strict=False)]
    return len(source.shape) == len(target.shape) and all(same)


def _divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


# --------------------------------------------------------------------------- conv2d


# The two layouts the rule takes (resdsl's pipeline converts convolutions to NHWC): the roles
# of the output's, the weight's and the input's axes, and the order of the reduction loops
# (innermost last: contiguous in the input).
_CONV_LAYOUTS = {
    "NCHW": (("n", "oc", "oh", "ow"), ("oc", "ic", "kh", "kw"), ("n", "c", "h", "w")),
    "NHWC": (("n", "oh", "ow", "oc"), ("oc", "kh", "kw", "ic"), ("n", "h", "w", "c")),
}
_REDUCTION_ORDER = {"NCHW": ("ic", "kh", "kw"), "NHWC": ("kh", "kw", "ic")}


@dataclass(frozen=True)
class _Conv:
    """A matched convolution block and what its schedule depends on."""

    block: s_tir.schedule.SBlockRV | None
    layout: str  # NCHW or NHWC
    weight: int  # index of the weight in the block's reads
    roles: tuple[str, ...]  # the role of each block iterator (and loop), in order
    out_channels: int
    group_channels: int  # output channels per group (all of them when groups == 1)
    out_width: int


def _position(variables: list[tirx.Var], expr: tirx.Expr) -> int | None:
    """Where ``expr`` is among ``variables``, if it is one of them."""
    return next((i for i, v in enumerate(variables) if expr.same_as(v)), None)


def _match_conv(sch: s_tir.Schedule, func: tirx.PrimFunc, block) -> _Conv | None:
    """``out[n, oc, oh, ow] += data[n, c(oc, ic), oh*s + kh*d, ow*s + kw*d] * w[oc, ic, kh, kw]``

    in NCHW/OIHW or NHWC/OHWI, where the weight is a function parameter (a constant, so it
    can be repacked).
    """
    stmt = sch.get(block)
    if _kinds(stmt) != "SSSSRRR" or len(stmt.reads) != 2 or len(stmt.writes) != 1:
        return None
    if any(len(r.region) != 4 for r in (*stmt.reads, *stmt.writes)):
        return None
    for layout in _CONV_LAYOUTS:
        conv = _match_layout(stmt, func, block, layout)
        if conv is not None:
            return conv
    return None


def _match_layout(stmt: s_tir.SBlock, func: tirx.PrimFunc, block, layout: str) -> _Conv | None:
    out_roles, weight_roles, data_roles = _CONV_LAYOUTS[layout]
    variables = [iv.var for iv in stmt.iter_vars]
    out = _indices(stmt.writes[0])
    place = {r: _position(variables, i) for r, i in zip(out_roles, out, strict=True)}
    weight = None
    for w, region in enumerate(stmt.reads):
        index = _indices(region)
        found = {r: _position(variables, i) for r, i in zip(weight_roles, index, strict=True)}
        if (
            found["oc"] == place["oc"]
            and {found["ic"], found["kh"], found["kw"]} == {4, 5, 6}
            and any(p.same_as(region.source) for p in func.params)
        ):
            weight, place = w, place | found
            break
    if weight is None or {place[r] for r in out_roles} != {0, 1, 2, 3}:
        return None
    v = {r: variables[i] for r, i in place.items()}
    data = dict(zip(data_roles, _indices(stmt.reads[1 - weight]), strict=True))
    if not (
        data["n"].same_as(v["n"])
        and _only(data["h"], v["oh"], v["kh"])
        and _only(data["w"], v["ow"], v["kw"])
    ):
        return None
    extent = {r: int(stmt.iter_vars[i].dom.extent) for r, i in place.items()}
    in_channels = int(stmt.reads[1 - weight].source.shape[data_roles.index("c")])
    groups = 1 if data["c"].same_as(v["ic"]) else in_channels // extent["ic"]
    if not _only(data["c"], v["oc"], v["ic"]) or (groups == 1 and not data["c"].same_as(v["ic"])):
        return None  # not a channel index this rule knows
    roles = tuple(sorted(place, key=place.__getitem__))
    return _Conv(block, layout, weight, roles, extent["oc"], extent["oc"] // groups, extent["ow"])


class Conv2d(_Rule):
    """Direct convolution (NHWC, or NCHW) with its fused epilogue.

    The weight is repacked at compile time to ``[oc / t, <reduction axes>, t]`` so that the
    ``t`` output channels of a tile are one or two contiguous vector loads, read in loop
    order. For each output row (parallel) and each tile of ``w`` output columns, the ``t x w``
    accumulators stay in vector registers over the whole reduction; each step multiplies a
    broadcast input value by a weight vector. The epilogue (bias, residual, ReLU) reads the
    tile from registers and writes it out. Padding is materialised once per call (parallel,
    vectorised), so the inner loop has no bounds checks.

    NHWC is the layout this is for: an input pixel's channels are contiguous (the reduction
    walks memory in order) and the epilogue stores whole vectors. In NCHW each input channel
    is a separate plane and the tile is transposed on the way out; grouped convolutions take
    the NCHW path only when a group's channels fill whole vectors.
    """

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        convs = [c for b in _blocks(sch) if (c := _match_conv(sch, func, b)) is not None]
        if len(convs) != 1:
            return False
        conv = convs[0]
        tile = self.tile(conv, machine)
        if tile is None:
            return False
        ok, last = _epilogue(sch, conv.block)
        if not ok:
            return False
        for producer in sch.get_producers(conv.block):  # the padding
            if _is_copy(sch.get(producer)):  # a "padding" by 0: read the input itself
                sch.compute_inline(producer)
            else:
                _parallel_vectorize(sch, producer, machine)
        self._pack_weight(sch, conv, tile[0] * tile[1])
        self._tile(sch, conv, last, *tile)
        return True

    @staticmethod
    def tile(conv: _Conv, machine: Machine) -> tuple[int, int, int] | None:
        """(vectors per tile, lanes per vector, output columns per tile), or None."""
        # In NCHW a vector of lanes must read one input channel, so stay within a group.
        channels = conv.group_channels if conv.layout == "NCHW" else conv.out_channels
        return register_tile(channels, conv.out_width, machine)

    @staticmethod
    def _pack_weight(sch: s_tir.Schedule, conv: _Conv, oc_tile: int, pad: bool = False) -> None:
        """Repack the weight at compile time to ``[oc / t, <reduction axes>, t]`` (zeros past
        the last output channel where ``pad``: ``t`` does not divide them)."""
        _, weight_roles, _ = _CONV_LAYOUTS[conv.layout]
        order = _REDUCTION_ORDER[conv.layout]

        def packed_index(a, b, c, d):
            axis = dict(zip(weight_roles, (a, b, c, d), strict=True))
            return (axis["oc"] // oc_tile, *(axis[r] for r in order), axis["oc"] % oc_tile)

        packed = sch.cache_read(conv.block, conv.weight, "global")
        sch.transform_layout(packed, ("write", 0), packed_index, pad_value=0.0 if pad else None)
        sch.annotate(packed, LAYOUT_PREPROC, 1)

    @staticmethod
    def _tile(sch: s_tir.Schedule, conv: _Conv, last, vectors: int, lanes: int, width: int):
        block, oc_tile = conv.block, vectors * lanes
        if last is None:  # no epilogue: accumulate in registers, then copy out
            last = sch.cache_write(block, 0, "local")
        else:
            sch.set_scope(block, 0, "local")
        if conv.layout == "NCHW":  # lay the tile out [column][channel]: lane vectors contiguous
            sch.transform_layout(
                block, ("write", 0), lambda n, c, h, w: (n, c // oc_tile, h, w, c % oc_tile)
            )
        loop = dict(zip(conv.roles, sch.get_loops(block), strict=True))
        oc_o, oc_m, oc_v = sch.split(loop["oc"], [None, vectors, lanes])
        ow_o, ow_i = sch.split(loop["ow"], [None, width])
        reduction = [loop[r] for r in _REDUCTION_ORDER[conv.layout]]
        sch.reorder(loop["n"], oc_o, loop["oh"], ow_o, *reduction, ow_i, oc_m, oc_v)
        sch.parallel(sch.fuse(loop["n"], oc_o, loop["oh"]))
        for unrolled in (ow_i, oc_m, loop["kw"]) if conv.layout == "NCHW" else (ow_i, oc_m):
            sch.unroll(unrolled)
        sch.vectorize(oc_v)
        sch.reverse_compute_at(last, ow_o)
        sch.decompose_reduction(block, reduction[0])
        sch.vectorize(sch.get_loops(last)[-1])


class DepthwiseConv2d(_Rule):
    """Depthwise convolution in NHWC (one input channel per output channel) with its epilogue.

    ``out[n, oh, ow, c] = sum(x[n, oh*s + kh*d - p, ow*s + kw*d - p, c] * w[c, kh, kw])``:
    no reduction over channels, so :class:`Conv2d`'s broadcast-times-vector tile does not
    fit (each step is one input vector times one weight vector). Vectorised over channels
    (the weight is repacked at compile time to ``[c / lanes, kh, kw, 1, lanes]``), a tile of
    ``w`` output columns by one vector of channels is accumulated in registers over the
    unrolled ``kh x kw`` taps, and the epilogue (bias, ReLU6, SiLU, ...) is applied to the
    tile. The padding is not materialised: it is inlined into the taps (a test per tap,
    uniform across a vector's lanes), so no padded copy of the input is written and read
    back, which at stride 2 cost more than the convolution. Parallel over output rows.
    """

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        convs = [c for b in _blocks(sch) if (c := _match_conv(sch, func, b)) is not None]
        if len(convs) != 1:
            return False
        conv = convs[0]
        stmt = sch.get(conv.block)
        if conv.layout != "NHWC" or conv.group_channels != 1:
            return False
        extents = dict(zip(conv.roles, (int(iv.dom.extent) for iv in stmt.iter_vars), strict=True))
        if extents["ic"] != 1:
            return False
        data = stmt.reads[1 - conv.weight].source
        if int(data.shape[3]) != conv.out_channels:
            return False  # a channel multiplier: not one input channel per output channel
        ok, last = _epilogue(sch, conv.block)
        if not ok:
            return False
        for producer in sch.get_producers(conv.block):  # the padding: tested per tap instead
            sch.compute_inline(producer)
        lanes = _vector_lanes(conv.out_channels, machine)
        Conv2d._pack_weight(sch, conv, lanes, pad=conv.out_channels % lanes != 0)
        block = conv.block
        if last is None:
            last = sch.cache_write(block, 0, "local")
        else:
            sch.set_scope(block, 0, "local")
        loop = dict(zip(conv.roles, sch.get_loops(block), strict=True))
        width = self.columns(conv.out_width)
        c_o, c_v = sch.split(loop["oc"], [None, lanes])
        ow_o, ow_i = sch.split(loop["ow"], [None, width])
        taps = (loop["kh"], loop["kw"], loop["ic"])
        sch.reorder(loop["n"], loop["oh"], ow_o, c_o, *taps, ow_i, c_v)
        sch.parallel(sch.fuse(loop["n"], loop["oh"]))
        for unrolled in (loop["kh"], loop["kw"], ow_i):
            sch.unroll(unrolled)
        sch.vectorize(c_v)
        sch.reverse_compute_at(last, c_o)
        sch.decompose_reduction(block, loop["kh"])
        sch.vectorize(sch.get_loops(last)[-1])
        return True

    @staticmethod
    def columns(width: int) -> int:
        """Output columns per tile: a divisor of the width from 7 down to 4, else 7 with a
        tail. Seven measured best on MobileNetV2's layers (widths 112 to 7): eight columns
        took 1.5x as long at 56 x 56 x 144 (stride 1), two or four up to 1.8x."""
        for d in (7, 6, 5, 4):
            if width % d == 0:
                return d
        return min(width, 7)


# --------------------------------------------------------------------------- matmul


@dataclass(frozen=True)
class _Matmul:
    """A matched ``out[..., i, j] += a[..., i, k] * b[..., k, j]`` block."""

    block: s_tir.schedule.SBlockRV
    b: int  # index of ``b`` in the block's reads
    pack: bool  # ``b`` is a 2-D function parameter (a weight): repack it at compile time
    rows: int  # extent of i
    columns: int  # extent of j


def _match_matmul(sch: s_tir.Schedule, func: tirx.PrimFunc, block) -> _Matmul | None:
    stmt = sch.get(block)
    kinds = _kinds(stmt)
    if len(kinds) < 3 or kinds[-1] != "R" or set(kinds[:-1]) != {"S"}:
        return None
    if len(stmt.reads) != 2 or len(stmt.writes) != 1:
        return None
    variables = [iv.var for iv in stmt.iter_vars]
    i, j, k = variables[-3:]
    out = _indices(stmt.writes[0])
    if len(out) < 2 or not (out[-1].same_as(j) and out[-2].same_as(i)):
        return None
    for b, region in enumerate(stmt.reads):
        a_index, b_index = _indices(stmt.reads[1 - b]), _indices(region)
        if (
            len(b_index) >= 2
            and b_index[-1].same_as(j)
            and b_index[-2].same_as(k)
            and not any(_uses(e, i)[0] for e in b_index)
            and a_index[-1].same_as(k)
            and any(e.same_as(i) for e in a_index[:-1])
            and not any(_uses(e, j)[0] for e in a_index)
        ):
            pack = len(b_index) == 2 and any(p.same_as(region.source) for p in func.params)
            rows, columns = (int(iv.dom.extent) for iv in stmt.iter_vars[-3:-1])
            return _Matmul(block, b, pack, rows, columns)
    return None


class Matmul(_Rule):
    """Dense and batched matrix products with their fused epilogue (bias, GELU, residual).

    ``out[..., i, j] += a[..., i, k] * b[..., k, j]``: linear layers on tokens (a ViT's or a
    ConvNeXt block's MLP, ``a`` of any rank), attention's ``softmax(q k^T) v``. As
    :class:`Conv2d`'s kernel: a register tile of ``w`` rows by one to four vectors of
    columns, accumulated over all of ``k``, each step a broadcast of ``a`` times a vector
    of ``b``; a 2-D ``b`` that is a parameter (a weight) is repacked at compile time to
    ``[j / t, k, t]``; the epilogue is computed on the tile while it is in registers.
    Parallel over the outer axes, column tiles and row tiles. Rows and columns that the
    tile does not divide are padded (``pad_einsum``: ``a`` and ``b`` copied with zeros, the
    extra results dropped), so that no tile has a bounds test.
    """

    @staticmethod
    def tile(mm: _Matmul, machine: Machine) -> tuple[int, int, int]:
        """(vectors, lanes, rows) of the register tile.

        With 32 registers :func:`register_tile`'s; with 16, two vectors by four rows (eight
        accumulators): the six rows :class:`Conv2d` takes measured 2.3x slower on ViT's
        197 x 768 x 2304 product (with a tail), four and five rows alike. Columns that no
        lane count divides are padded to whole vectors (see :meth:`schedule`).
        """
        tile = register_tile(mm.columns, mm.rows, machine)
        if tile is not None and machine.registers >= 32:
            return tile
        lanes = _dividing_lanes(mm.columns, machine)
        if mm.columns % lanes:
            lanes = machine.lanes
        vectors = 2 if mm.columns >= 2 * lanes else 1
        return vectors, lanes, min(4, mm.rows)

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        blocks = _blocks(sch)
        reductions = [b for b in blocks if "R" in _kinds(sch.get(b))]
        if len(reductions) != 1:
            return False
        mm = _match_matmul(sch, func, reductions[0])
        if mm is None or sch.get_producers(mm.block):
            return False
        vectors, lanes, width = self.tile(mm, machine)
        weight = sch.get(mm.block).reads[mm.b].source if mm.pack else None
        padded = mm.columns % lanes != 0
        if padded or mm.rows % width:
            # Pad a and b to whole tiles, the product too, the extra rows and columns dropped:
            # a tail tile's bounds test in the unrolled loops keeps the accumulators out of
            # registers (ConvNeXt's 7-row products ran at 11 GFLOP/s with a tail of 3; a
            # lane mask would scalarise every tile of 197 keys).
            loops = len(sch.get_loops(mm.block))
            pad = [1] * (loops - 3) + [width if mm.rows % width else 1, lanes if padded else 1, 1]
            sch.pad_einsum(mm.block, pad)
            for producer in sch.get_producers(mm.block):
                _parallel_vectorize(sch, producer, machine)
        ok, last = _epilogue(sch, mm.block)
        if not ok:
            return False
        t = vectors * lanes
        reads = [r.source for r in sch.get(mm.block).reads]
        if weight is not None and not padded and mm.columns % t == 0 and weight in reads:
            packed = sch.cache_read(mm.block, reads.index(weight), "global")
            sch.transform_layout(packed, ("write", 0), lambda k, j: (j // t, k, j % t))
            sch.annotate(packed, LAYOUT_PREPROC, 1)
        block = mm.block
        if last is None:
            last = sch.cache_write(block, 0, "local")
        else:
            sch.set_scope(block, 0, "local")
        *outer, i, j, k = sch.get_loops(block)
        j_o, j_m, j_v = sch.split(j, [None, vectors, lanes])
        i_o, i_i = sch.split(i, [None, width])
        sch.reorder(*outer, j_o, i_o, k, i_i, j_m, j_v)
        sch.parallel(sch.fuse(*outer, j_o, i_o))
        sch.unroll(i_i)
        sch.unroll(j_m)
        sch.vectorize(j_v)
        sch.reverse_compute_at(last, sch.get_loops(block)[0])
        sch.decompose_reduction(block, k)
        sch.vectorize(sch.get_loops(last)[-1])
        return True


# --------------------------------------------------------------------------- other reductions


class SpatialReduction(_Rule):
    """One reduction block (``S...S R...R``) with elementwise producers and epilogue.

    Covers pooling, means, the convolutions :class:`Conv2d` declines and products
    :class:`Matmul` declines. Producers (padding) are inlined; the outer output axes are
    fused into one parallel loop. When the innermost output axis ``j`` is contiguous in
    every input that depends on it, the reduction loops move outside ``j`` and ``j`` is
    split into a few unrolled vectors of accumulators kept in registers (several, so that
    consecutive FMAs do not wait on each other).
    """

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        blocks = _blocks(sch)
        reductions = [b for b in blocks if "R" in _kinds(sch.get(b))]
        if len(reductions) != 1:
            return False
        (block,) = reductions
        kinds = _kinds(sch.get(block))
        spatial = len(kinds) - len(kinds.lstrip("S"))
        if spatial == 0 or set(kinds[spatial:]) != {"R"}:
            return False
        for producer in sch.get_producers(block):
            sch.compute_inline(producer)
        ok, last = _epilogue(sch, block)
        if not ok:
            return False
        loops = sch.get_loops(block)
        width = _extent(sch, loops[spatial - 1]) or 1
        if width > 1 and self._contiguous_innermost(sch.get(block), spatial):
            self._vectorised(sch, block, last, loops, spatial, machine)
        else:
            outer = sch.fuse(*loops[:spatial]) if spatial > 1 else loops[0]
            sch.parallel(outer)
            if last is not None:
                sch.reverse_compute_at(last, outer)
        return True

    @staticmethod
    def _contiguous_innermost(stmt: s_tir.SBlock, spatial: int) -> bool:
        """Whether the innermost output axis indexes only the last axis of each input."""
        j = stmt.iter_vars[spatial - 1].var
        uses = [
            [_uses(index, j)[0] for index in _indices(region)]
            for region in stmt.reads
            if not region.source.same_as(stmt.writes[0].source)
        ]
        return any(any(u) for u in uses) and all(not any(u[:-1]) for u in uses)

    @staticmethod
    def _vectorised(sch, block, last, loops, spatial: int, machine: Machine) -> None:
        j = loops[spatial - 1]
        extent = _extent(sch, j) or 1
        lanes = _vector_lanes(extent, machine)
        vectors = max(1, min(4, extent // lanes))
        j_o, j_u, j_v = sch.split(j, [None, vectors, lanes])
        sch.reorder(j_o, *loops[spatial:], j_u, j_v)
        if last is None:
            last = sch.cache_write(block, 0, "local")
        else:
            sch.set_scope(block, 0, "local")
        outer = sch.fuse(*loops[: spatial - 1], j_o) if spatial > 1 else j_o
        sch.parallel(outer)
        sch.reverse_compute_at(last, outer)
        sch.unroll(j_u)
        sch.vectorize(j_v)
        sch.decompose_reduction(block, loops[spatial])
        tail = sch.get_loops(last)[-1]
        if (_extent(sch, tail) or 1) > 1:
            sch.vectorize(tail)


# --------------------------------------------------------------------------- normalisation


class ChannelNorm(_Rule):
    """A normalisation over an axis that is not the innermost: ConvNeXt's channel layer norm
    in NCHW (``LayerNorm2d``: mean and variance over ``c`` of ``x[n, c, h, w]``).

    Each reduction runs on its own, its reduction loops outside the innermost output axis
    (``w``), which is contiguous in the input and vectorised; the outer axes are parallel.
    The elementwise blocks are inlined into the last one (parallel, vectorised). TVM's
    ``Reduction`` rule computes each reduction inside the output's loops, once per channel
    of the output: 64 ms against ~0.1 ms on ConvNeXt-T's 384 x 14 x 14 norm.
    """

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        blocks = _blocks(sch)
        reductions = [b for b in blocks if "R" in _kinds(sch.get(b))]
        if len(reductions) < 2 or "R" in _kinds(sch.get(blocks[-1])):
            return False
        for b in reductions:
            kinds = _kinds(sch.get(b))
            spatial = len(kinds) - len(kinds.lstrip("S"))
            if spatial == 0 or set(kinds[spatial:]) != {"R"}:
                return False
            if not SpatialReduction._contiguous_innermost(sch.get(b), spatial):
                return False  # reduced along the contiguous axis: TVM's Reduction rule's case
        for b in blocks[:-1]:
            if "R" not in _kinds(sch.get(b)):
                try:
                    sch.compute_inline(b)
                except ScheduleError:
                    return False
        for b in reductions:
            spatial = len(_kinds(sch.get(b)).rstrip("R"))
            loops = sch.get_loops(b)
            inner = loops[spatial - 1]
            sch.reorder(*loops[spatial:], inner)
            sch.vectorize(inner)
            if spatial > 1:
                sch.parallel(sch.fuse(*loops[: spatial - 1]) if spatial > 2 else loops[0])
            sch.decompose_reduction(b, loops[spatial])
        _parallel_vectorize(sch, _blocks(sch)[-1], machine)
        return True


# --------------------------------------------------------------------------- winograd


def _role(sch: s_tir.Schedule, block) -> str | None:
    """The Winograd role (``winograd.INPUT``, ...) a block was built with, if any."""
    value = sch.get(block).annotations.get(winograd.ROLE)
    return str(value) if value is not None else None


def _split_lanes(sch: s_tir.Schedule, loop, machine: Machine):
    """Split ``loop`` into (outer, vector lanes): see :func:`_vector_lanes`."""
    return sch.split(loop, [None, _vector_lanes(_extent(sch, loop) or 1, machine)])


class WinogradInput(_Rule):
    """``winograd_input``: each tile's ``B^T d B``, read from the padded input.

    (The padding is a kernel of its own, ``winograd_pad``, which :class:`Elementwise`
    schedules.) One tile per iteration of a parallel loop, a vector of channels at a time,
    with all ``(m+2)^2`` positions unrolled: each input vector is loaded once and the Select
    over positions folds away.
    """

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        blocks = _blocks(sch)
        if len(blocks) != 1 or _role(sch, blocks[0]) != winograd.INPUT:
            return False
        (block,) = blocks
        e, p, c = sch.get_loops(block)
        c_o, c_v = _split_lanes(sch, c, machine)
        sch.reorder(p, c_o, e, c_v)
        sch.parallel(p)
        sch.unroll(e)
        sch.vectorize(c_v)
        return True


class WinogradGemm(_Rule):
    """``winograd_gemm``: ``(m+2)^2`` matmuls ``M[e] = V[e] U[e]``, register-tiled.

    Like :class:`Conv2d`'s inner kernel: ``U`` is repacked at compile time to
    ``[e, k / t, c, t]``; a tile of ``w`` rows (output tiles) by ``t`` columns (output
    channels, one or two vectors) is accumulated in registers over all ``c``, each step a
    broadcast of ``V`` times a vector of ``U``. Parallel over positions, column tiles and
    row tiles.
    """

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        blocks = _blocks(sch)
        if len(blocks) != 1 or _role(sch, blocks[0]) != winograd.GEMM:
            return False
        (block,) = blocks
        stmt = sch.get(block)
        rows, columns = (int(iv.dom.extent) for iv in stmt.iter_vars[1:3])
        chosen = register_tile(columns, rows, machine)
        if chosen is None:
            return False
        vectors, lanes, width = chosen
        tile = vectors * lanes
        packed = sch.cache_read(block, 1, "global")  # U: the constant, second by construction
        sch.transform_layout(packed, ("write", 0), lambda e, c, k: (e, k // tile, c, k % tile))
        sch.annotate(packed, LAYOUT_PREPROC, 1)
        out = sch.cache_write(block, 0, "local")
        e, p, k, c = sch.get_loops(block)
        k_o, k_m, k_v = sch.split(k, [None, vectors, lanes])
        p_o, p_i = sch.split(p, [None, width])
        sch.reorder(e, k_o, p_o, c, p_i, k_m, k_v)
        sch.parallel(sch.fuse(e, k_o, p_o))
        sch.unroll(p_i)
        sch.unroll(k_m)
        sch.vectorize(k_v)
        sch.reverse_compute_at(out, sch.get_loops(block)[0])
        sch.decompose_reduction(block, c)
        sch.vectorize(sch.get_loops(out)[-1])
        return True


class WinogradOutput(_Rule):
    """``winograd_output`` and the convolution's epilogue (bias, residual add, ReLU).

    Everything is inlined into the last block, whose ``h`` and ``w`` loops are split by the
    tile side ``m`` with the ``m x m`` outputs of a tile unrolled (so the Select over them
    folds and the tile's ``M`` vectors are loaded once), vectorised over channels, parallel
    over rows of tiles.
    """

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        blocks = _blocks(sch)
        if not blocks or _role(sch, blocks[0]) != winograd.OUTPUT:
            return False
        if any("R" in _kinds(sch.get(b)) for b in blocks):
            return False
        m = int(sch.get(blocks[0]).annotations[winograd.TILE])
        for b in blocks[:-1]:
            sch.compute_inline(b)  # a block that cannot be inlined: ScheduleError, decline
        last = blocks[-1]
        loops = sch.get_loops(last)
        if len(loops) != 4:
            return False
        n, h, w, k = loops
        h_o, h_i = sch.split(h, [None, m])
        w_o, w_i = sch.split(w, [None, m])
        k_o, k_v = _split_lanes(sch, k, machine)
        sch.reorder(n, h_o, w_o, k_o, h_i, w_i, k_v)
        sch.parallel(sch.fuse(n, h_o))
        sch.unroll(h_i)
        sch.unroll(w_i)
        sch.vectorize(k_v)
        return True


# --------------------------------------------------------------------------- elementwise


class Elementwise(_Rule):
    """Injective functions: inline into the last block(s), then parallel + vectorise."""

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        blocks = _blocks(sch)
        if not blocks or any("R" in _kinds(sch.get(b)) for b in blocks):
            return False
        for b in blocks[:-1]:
            try:
                sch.compute_inline(b)
            except ScheduleError:  # e.g. a block whose output is also a function output
                continue
        for b in _blocks(sch):
            _parallel_vectorize(sch, b, machine)
        return True


def cpu_rules() -> list[dlight.ScheduleRule]:
    """The rules in the order they are tried; the first that applies schedules a function.

    TVM's own CPU ``Reduction`` rule comes last, for functions with several reductions
    (softmax, layer norm) that none of ours takes.
    """
    return [
        WinogradInput(),
        WinogradGemm(),
        WinogradOutput(),
        DepthwiseConv2d(),
        Conv2d(),
        Matmul(),
        SpatialReduction(),
        ChannelNorm(),
        Elementwise(),
        dlight_cpu.Reduction(),
    ]


def rule_for(func: tirx.PrimFunc, target: Target) -> str | None:
    """The name of the rule that schedules ``func`` for ``target``, or None if none applies."""
    for rule in cpu_rules():
        if rule.apply(func, target, False) is not None:
            return type(rule).__name__
    return None
