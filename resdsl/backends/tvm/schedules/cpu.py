"""Default CPU schedules for ``--target llvm``: small dlight-style rules, no tuning.

Relax's FuseOps/FuseTIR leave one PrimFunc per fused group (``conv2d + bias + add + relu``,
``matmul + bias``, ``max_pool2d``, ...) with plain serial loops. Each rule here recognises one
kind of PrimFunc and returns a :class:`tvm.s_tir.Schedule` for it, or ``None`` so that the
next rule may try (``ApplyDefaultSchedule`` takes the first that applies):

* :class:`Conv2d` -- a direct convolution (NHWC, to which the pipeline converts them, or
  NCHW) with a register tile of output channels by output columns, vectorised over output
  channels, parallel over output rows; the fused epilogue (bias, residual add, ReLU) is
  applied to the tile while it is in registers. In NHWC with AVX2, where a row is too short
  for whole tiles (7, 14), the output's pixels are one axis instead (1 x 1 convolutions
  padded to whole tiles of pixels and channels).
* :class:`DepthwiseConv2d` -- a depthwise convolution in NHWC: a tile of output columns by
  one vector of channels in registers over the unrolled taps, the padding tested per tap
  (not copied), the epilogue on the tile.
* :class:`Matmul` -- dense and batched products (``a[..., i, k] * b[..., k, j]``: linear
  layers on tokens, attention) with :class:`Conv2d`'s register tile and weight packing.
* :class:`SpatialReduction` -- everything else with one reduction: pooling, means, the
  convolutions :class:`Conv2d` declines: parallel over the outer output
  axes, vectorised over the innermost one where the inputs are contiguous along it.
* :class:`ChannelNorm` -- a layer norm over a non-contiguous axis (ConvNeXt's channel norm
  in NCHW).
* :class:`RowReduction` -- reductions along the contiguous last axis, row by row: softmax,
  token layer norms; the reductions vectorised as partial results per lane.
* :class:`Elementwise` -- injective functions (adds, activations, layout changes): parallel
  over the outer axes, vectorised innermost.

Rules only reorder, split, pad, cache and annotate loops, so they change no result beyond float
reassociation; ``tests/test_cpu_schedules.py`` checks them against the PyTorch backend.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


def register_tile(
    channels: int, width: int, machine: Machine, narrow: bool = True
) -> tuple[int, int, int] | None:
    """The accumulator tile of a convolution or matmul: (vectors, lanes, columns), or None.

    ``channels`` output channels (or matmul columns), contiguous, split into vectors of
    ``lanes``; ``width`` output columns (or matmul rows), each a broadcast per step. None
    when no lane count from the machine's down to 4 divides ``channels``. ``narrow``: the
    3- or 5-vector tiles of narrow vectors with 32 registers (False: for measuring).
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
    # With 32 registers, vectors narrower than the machine's (24 or 40 channels: 8 lanes of
    # AVX-512) that two do not divide: three or five vectors by up to 21 accumulators. One
    # vector by 14 columns loads a broadcast per FMA, and 8-lane FMAs issue twice as fast
    # as 16-lane ones on Zen 4 (144 -> 24 at 56 x 56: 0.25 -> 0.20 ms by 3 x 4 or 3 x 7;
    # 240 -> 40 at 28 x 28: 0.157 -> 0.136 ms by 5 x 4; 5 x 7 spills).
    if narrow and machine.registers >= 32 and lanes < machine.lanes and channels % (2 * lanes):
        for vectors in (5, 3):
            columns = _divisor_at_most(width, 21 // vectors)
            if channels % (vectors * lanes) == 0 and columns >= 2:
                return vectors, lanes, columns
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


# Independent accumulators that keep the FMA units busy: two units with a latency of 4 or 5
# cycles (Intel, AMD Zen) need 8 to 10 in flight.
FMA_IN_FLIGHT = 10


def tile_cycles(vectors: int, columns: int, width: int) -> float:
    """Estimated FMAs per cycle of a ``vectors x columns`` tile (16 registers) on rows of
    ``width``: ``v x c`` FMAs on two units, ``v + c`` loads (weight vectors, broadcasts) on
    two ports (``c + v x c`` where the weights do not fit in registers beside the
    accumulators), each accumulator's FMA latency (:data:`FMA_IN_FLIGHT` / 2 cycles), a
    partial last tile counted as a whole one."""
    fmas = vectors * columns
    loads = vectors + columns if fmas + vectors + 1 <= 16 else columns + fmas
    cycles = max(fmas / 2, loads / 2, FMA_IN_FLIGHT / 2)
    tiles = -(-width // columns)
    return fmas / cycles * width / (tiles * columns)


def pixel_tile(
    channels: int, pixels: int, machine: Machine, partial: bool = True
) -> tuple[int, int, int] | None:
    """The accumulator tile of an NHWC convolution whose pixels are one axis: (vectors, lanes,
    pixels per tile), or None for none (then rows are tiled, :func:`register_tile`).

    With 16 registers (AVX2), two or three vectors by the number of pixels that
    :func:`tile_cycles` rates best, where ``partial`` allows a last tile that the pixels do
    not fill (padded) and channels padded to whole tiles (by at most an eighth); otherwise
    the tile divides both. Near ties go to the larger tile. With 32 registers (AVX-512,
    not measured) None: rows, as before.
    """
    if machine.registers >= 32:
        return None
    lanes = _dividing_lanes(channels, machine)
    if channels % lanes:
        return None
    best, best_key = None, (0.0, 0, 0)
    # Not one vector: LLVM spills one vector by 10 or 13 pixels (2x slower than 1 x 7 by rows).
    # Where ``partial``, the channels may be padded too (440 = 27.5 x 16: RegNet's 1 x 1s).
    for vectors in (2, 3):
        tile = vectors * lanes
        padded = -(-channels // tile) * tile
        if padded != channels and (not partial or padded - channels > channels // 8):
            continue
        # accumulators, weight vectors and a broadcast in registers, one to spare
        most = min((machine.registers - 1 - vectors - 1) // vectors, pixels)
        if vectors == 3:
            most = min(4, pixels)  # 3 x 4: every register, as register_tile's (measured best)
        for rows in range(1, most + 1):
            if not partial and pixels % rows:
                continue
            # near ties: the larger tile, then fewer vectors (2 x 6 over 3 x 4)
            score = tile_cycles(vectors, rows, pixels) * channels / padded
            key = (round(score, 2), vectors * rows, -vectors)
            if key > best_key:
                best, best_key = (vectors, lanes, rows), key
    return best


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
    out_height: int = 0
    taps: int = 0  # kh x kw
    in_channels: int = 0  # input channels each output channel sums over (a group's)


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
    return _Conv(
        block, layout, weight, roles, extent["oc"], extent["oc"] // groups, extent["ow"],
        extent["oh"], extent["kh"] * extent["kw"], extent["ic"],
    )  # fmt: skip


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

    Pixel tiles (NHWC, 16 registers): the output's ``h x w`` pixels are one axis and the tile
    spans pixels rather than columns of a row where that is estimated faster
    (:meth:`_pixels`): rows of 7 or 14 leave partial tiles (7 = 4 + 3) or short ones, while
    49, 196 pixels take 2 x 5, 2 x 6 or 3 x 4 tiles. See :meth:`_tile_pixels`.
    """

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        convs = [c for b in _blocks(sch) if (c := _match_conv(sch, func, b)) is not None]
        if len(convs) != 1:
            return False
        conv = convs[0]
        machine = self.group_machine(conv, machine)
        tile = self.tile(conv, machine)
        pixels = self._pixels(sch, conv, tile, machine)
        if pixels is not None:
            tile = pixels
        if tile is None:
            return False
        ok, last = _epilogue(sch, conv.block)
        if not ok:
            return False
        if pixels and not self._pixel_epilogue(sch, conv, last):
            pixels, tile = None, self.tile(conv, machine)  # tile rows instead
        for producer in sch.get_producers(conv.block):  # the padding
            if _is_copy(sch.get(producer)):  # a "padding" by 0: read the input itself
                sch.compute_inline(producer)
            else:
                _parallel_vectorize(sch, producer, machine)
        if pixels:
            self._tile_pixels(sch, conv, last, *tile, machine)
        else:
            self._pack_weight(sch, conv, tile[0] * tile[1])
            self._tile(sch, conv, last, *tile)
        return True

    # NHWC: the output's h and w as one axis of pixels where that gives better tiles (see
    # _tile_pixels); False: rows of columns only (for measuring).
    fuse_pixels = True
    # Vectors within one group of a grouped convolution (group_machine), the short-reduction
    # tile (short_tile), narrow vectors' 3- or 5-vector tiles (register_tile); False: without
    # them, for measuring (benchmarks/kernels.py --without).
    group_vectors = True
    short_tiles = True
    narrow_tiles = True

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        sch = super().apply(func, target, tunable)
        if sch is None and self.fuse_pixels:  # a primitive refused the pixel tile: rows
            rows = Conv2d()
            rows.fuse_pixels = False
            sch = rows.apply(func, target, tunable)
        return sch

    def _pixels(self, sch, conv: _Conv, tile, machine: Machine) -> tuple[int, int, int] | None:
        """The register tile over pixels (``h x w`` as one axis), or None to tile rows.

        Taken where :func:`pixel_tile` expects more FMAs per cycle than the row tile, i.e.
        where the row tile has a tail (7 = 4 + 3, 14 = 6 + 6 + 2) or only short tiles. Only a
        1 x 1, stride-1 convolution may have a partial last tile (padded: see
        :meth:`_tile_pixels`); other convolutions only take tiles that divide the pixels.
        """
        if not self.fuse_pixels or conv.layout != "NHWC" or tile is None:
            return None
        stmt = sch.get(conv.block)
        extent = dict(zip(conv.roles, (int(iv.dom.extent) for iv in stmt.iter_vars), strict=True))
        data = stmt.reads[1 - conv.weight].source
        if extent["kh"] * extent["kw"] * extent["ic"] < 64:
            return None  # a short reduction: the tile's set-up and epilogue dominate
        # Padding pixels copies the input (P x C_in against P x C_in x C_out multiply-adds):
        # only where there are many output channels (192 -> 32 at 28 x 28 lost 50%).
        pointwise = (
            extent["kh"] == extent["kw"] == 1
            and [int(d) for d in data.shape[1:3]] == [conv.out_height, conv.out_width]
            and all(_is_copy(sch.get(b)) for b in sch.get_producers(conv.block))
            and conv.out_channels >= 128
        )
        pixels = conv.out_height * conv.out_width
        chosen = pixel_tile(conv.out_channels, pixels, machine, partial=pointwise)
        if chosen is None or (tile[0] >= 2 and conv.out_width % tile[2] == 0):
            # whole tiles of two or more vectors by rows already (28 x 28: 2 x 4): padding to
            # 2 x 6 measured 10% slower (104 -> 208 channels), the input copy included
            return None
        rows = tile_cycles(tile[0], tile[2], conv.out_width)
        return chosen if tile_cycles(chosen[0], chosen[2], pixels) > rows + 1e-9 else None

    @staticmethod
    def _pixel_epilogue(sch: s_tir.Schedule, conv: _Conv, last) -> bool:
        """Whether the epilogue block (if any) is ``out[n, h, w, c]`` over the output's shape,
        its iterators in that order (so that its h and w can become pixels too)."""
        if last is None:
            return True
        stmt = sch.get(last)
        if len(stmt.iter_vars) != 4 or len(stmt.writes) != 1:
            return False
        index = _indices(stmt.writes[0])
        variables = [iv.var for iv in stmt.iter_vars]
        if len(index) != 4 or not all(i.same_as(v) for i, v in zip(index, variables, strict=True)):
            return False
        shape = [int(iv.dom.extent) for iv in stmt.iter_vars]
        return shape[1:] == [conv.out_height, conv.out_width, conv.out_channels]

    @staticmethod
    def _tile_pixels(sch, conv: _Conv, last, vectors: int, lanes: int, rows: int, machine):
        """:meth:`_tile` with the output's ``h x w`` as one axis of pixels (NHWC).

        A row of 7 or 14 columns is too short for whole register tiles (7 = 4 + 3); the 49,
        196 or 784 pixels of a 7 x 7, 14 x 14 or 28 x 28 map are not. The convolution's and
        the epilogue's ``(h, w)`` iterators become one (``transform_block_layout``), the
        accumulators are laid out ``[n, pixel, c]``; the input is read at
        ``(pixel // w, pixel % w)``, an address computed once per tile. Where the tile does
        not divide the pixels (a 1 x 1, stride-1 convolution: see :meth:`pixel_tile`), the
        pixels are padded to whole tiles (``pad_einsum``: the input is copied, flattened, with
        zero rows after it), so that no tile has a bounds test in its unrolled loops, which
        keeps the accumulators out of registers; the epilogue writes the real pixels only.
        """
        block, width, tile = conv.block, conv.out_width, vectors * lanes
        pixels = conv.out_height * width
        pad = pixels % rows != 0 or conv.out_channels % tile != 0
        weight = sch.get(block).reads[conv.weight].source
        if not pad:
            Conv2d._pack_weight(sch, conv, vectors * lanes)
        if last is None:  # no epilogue: accumulate in registers, then copy out
            last = sch.cache_write(block, 0, "global")

        def flat(n, h, w, c):
            return (n, h * width + w, c)

        def fused(i0, i1, i2, i3, i4, i5, i6):
            r = dict(zip(conv.roles, (i0, i1, i2, i3, i4, i5, i6), strict=True))
            if pad:  # 1 x 1: kh and kw are 0
                return (r["n"], r["oh"] * width + r["ow"], r["oc"], r["ic"])
            return (r["n"], r["oh"] * width + r["ow"], r["oc"], r["kh"], r["kw"], r["ic"])

        sch.transform_block_layout(block, fused)
        sch.transform_layout(block, ("write", 0), flat)
        if pad:
            data = 1 - conv.weight
            cached = sch.cache_read(block, data, "global")
            sch.transform_block_layout(cached, flat)
            sch.transform_layout(cached, ("write", 0), flat)
            sch.pad_einsum(block, [1, rows, tile, 1])
            (copy,) = sch.get_consumers(block)  # padded accumulators -> the old buffer
            sch.compute_inline(copy)
            weights = [weight]  # the weight, or its copy padded with zero output channels
            for producer in sch.get_producers(block):
                stmt = sch.get(producer)
                if stmt.reads[0].source.same_as(weight):
                    weights.append(stmt.writes[0].source)
                    padded_weight = producer
                elif stmt.same_as(sch.get(cached)):  # pixels not padded: read the input itself
                    sch.compute_inline(cached)
                else:
                    sch.compute_inline(cached)  # the padding block reads the input itself
                    _parallel_vectorize(sch, producer, machine)
            stmt = sch.get(block)
            index = next(i for i, r in enumerate(stmt.reads) if r.source.same_as(weights[-1]))
            Conv2d._pack_weight(sch, replace(conv, block=block, weight=index), tile)
            if len(weights) > 1:  # packed at compile time with the weight
                sch.compute_inline(padded_weight)
        sch.set_scope(block, 0, "local")
        sch.transform_block_layout(last, flat)
        n, p, oc, *reduction = sch.get_loops(block)
        oc_o, oc_m, oc_v = sch.split(oc, [None, vectors, lanes])
        tiles = -(-pixels // rows)
        # A few tiles per parallel iteration: the accumulators' buffer is allocated once per
        # iteration (TVMBackendAllocWorkspace), ~0.1 us, which one tile of 3 x 4 at 14 x 14
        # did not amortise (576 -> 96 channels: 0.52 ms against 0.41 ms by rows).
        chunk = _divisor_at_most(tiles, 8)
        p_oo, p_oi, p_i = sch.split(p, [None, chunk, rows])
        sch.reorder(n, oc_o, p_oo, p_oi, *reduction, p_i, oc_m, oc_v)
        sch.parallel(sch.fuse(n, oc_o, p_oo))
        sch.unroll(p_i)
        sch.unroll(oc_m)
        sch.vectorize(oc_v)
        sch.reverse_compute_at(last, p_oi)
        sch.decompose_reduction(block, reduction[0])
        sch.vectorize(sch.get_loops(last)[-1])

    @staticmethod
    def group_machine(conv: _Conv, machine: Machine) -> Machine:
        """``machine`` with vectors no wider than a group's output channels where they divide
        them: a vector's lanes then read one input channel, one broadcast, where a vector
        across two groups reads two (RegNet's groups of 8 on 16 lanes: 4x onnxruntime's
        time; 8 lanes of AVX-512 match it)."""
        if conv.group_channels == conv.out_channels or not Conv2d.group_vectors:
            return machine
        return replace(machine, lanes=_dividing_lanes(conv.group_channels, machine))

    @staticmethod
    def tile(conv: _Conv, machine: Machine) -> tuple[int, int, int] | None:
        """(vectors per tile, lanes per vector, output columns per tile), or None."""
        # In NCHW a vector of lanes must read one input channel, so stay within a group.
        channels = conv.group_channels if conv.layout == "NCHW" else conv.out_channels
        short = Conv2d.short_tile(conv, machine) if Conv2d.short_tiles else None
        if short is not None:
            return short
        return register_tile(channels, conv.out_width, machine, Conv2d.narrow_tiles)

    @staticmethod
    def short_tile(conv: _Conv, machine: Machine) -> tuple[int, int, int] | None:
        """The tile of a 1 x 1 NHWC convolution over at most 32 input channels to at most six
        vectors of output channels, with 32 registers: all the channels by two columns (one
        vector: four), not the 16 accumulators of a long reduction. Measured on one Zen 4
        core (AVX-512), the kernel alone: 16 -> 96 at 112 x 112 0.96 -> 0.49 ms, 16 -> 48
        0.40 -> 0.21 ms, 32 -> 48 0.44 -> 0.37 ms, 32 -> 16 0.136 -> 0.118 ms; 32 -> 192 at
        28 x 28 unchanged."""
        if not (
            machine.registers >= 32 and conv.layout == "NHWC" and conv.taps == 1
            and 0 < conv.in_channels <= 32 and conv.group_channels == conv.out_channels
        ):  # fmt: skip
            return None
        lanes = _dividing_lanes(conv.out_channels, machine)
        if conv.out_channels % lanes:
            return None
        vectors = conv.out_channels // lanes
        if vectors > 6:  # part of the channels per tile: 24 -> 144 at 56 x 56 lost 40% by 3 x 2
            return None
        columns = _divisor_at_most(conv.out_width, 2 if vectors > 1 else 4)
        return (vectors, lanes, columns) if columns > 1 else None  # odd widths: as before

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
    columns (up to eight on one or two rows: a classifier), accumulated over all of ``k``,
    each step a broadcast of ``a`` times a vector of ``b``; a 2-D ``b`` that is a parameter
    (a weight) is repacked at compile time to ``[j / t, k, t]``; the epilogue is computed
    on the tile while it is in registers. Parallel over the outer axes, column tiles and
    row tiles. Rows and columns that the tile does not divide are padded (``pad_einsum``:
    ``a`` and ``b`` copied with zeros, the extra results dropped), so that no tile has a
    bounds test.
    """

    @staticmethod
    def tile(mm: _Matmul, machine: Machine) -> tuple[int, int, int]:
        """(vectors, lanes, rows) of the register tile.

        With 32 registers :func:`register_tile`'s. With 16, twelve accumulators: three vectors
        by four rows where 4 divides the rows and 6 does not (ConvNeXt's 3136, 784 and 196
        tokens: no padded copy of ``a``), else two vectors by six rows, the rows padded to
        whole tiles (ViT's 197 to 198). Against two vectors by four rows (eight accumulators,
        which left the FMA units waiting): ViT's 197 x 768 x 3072 product 13.8 -> 12.1 ms,
        197 x 3072 x 768 13.3 -> 11.5 ms, ConvNeXt's 3136 x 96 x 384 4.7 -> 4.4 ms (one
        core of a Zen 3 at ~77 GFLOP/s, as OpenBLAS). Three vectors by four rows on 197 rows
        measured ~5% slower than two by six; two by six on 3136 x 384 x 96 35% slower (the
        padded copy of ``a``). Columns that no lane count divides are padded to whole vectors
        (see :meth:`schedule`).

        One or two rows (a classifier at a micro-batch of 1 or 2): up to eight vectors of
        columns whose width divides the columns (1000 = 25 x 5 x 8), so that ``b`` is packed
        to whole tiles, each column panel one contiguous stream, with 5-10 accumulators in
        flight. Two vectors (16 columns, which do not divide 1000) left ``b`` unpacked, read
        a cache line from every row of a 4 KB stride (in ``compiled.py --profile``, ResNet-50's
        2048 x 1000 classifier took about 1.7 times as long on one row).
        """
        lanes = _dividing_lanes(mm.columns, machine)
        if mm.rows <= 2 and mm.columns % lanes == 0:
            return _divisor_at_most(mm.columns // lanes, 8), lanes, mm.rows
        tile = register_tile(mm.columns, mm.rows, machine, narrow=False)
        if tile is not None and machine.registers >= 32:
            return tile
        lanes = _dividing_lanes(mm.columns, machine)
        if mm.columns % lanes:
            lanes = machine.lanes
        if mm.columns % (3 * lanes) == 0 and mm.rows % 4 == 0 and mm.rows % 6:
            return 3, lanes, 4
        vectors = 2 if mm.columns >= 2 * lanes else 1
        whole = mm.columns % (2 * lanes) == 0 or mm.columns % lanes  # (padded to whole tiles)
        return vectors, lanes, min(6 if whole else 4, mm.rows)

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
            # Padded columns are padded to whole tiles of vectors (ViT's 197 keys to 208): to
            # whole vectors only (200) left a tail of one vector in a tile of two, whose
            # test kept q k^T at 28 GFLOP/s (2.1 -> 1.0 ms on 12 x 197 x 64 x 197).
            loops = len(sch.get_loops(mm.block))
            columns = vectors * lanes if padded else 1
            pad = [1] * (loops - 3) + [width if mm.rows % width else 1, columns, 1]
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
        if padded:
            # The epilogue of a tile of padded columns tests each column against the real
            # width, which scalarised it (on q k^T over 64 features it cost more than the
            # tile's FMAs): the epilogue runs once per tile of rows, over whole rows.
            sch.reorder(*outer, i_o, j_o, k, i_i, j_m, j_v)
            sch.parallel(sch.fuse(*outer, i_o))
        else:
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


class RowReduction(_Rule):
    """Reductions along the contiguous last axis, row by row: softmax and token layer norms
    (``max``, ``exp``, ``sum``, ``divide`` over ``x[..., j]``; ``mean``, ``variance``,
    ``normalise``).

    One parallel loop over the rows (the leading axes, fused); each row's blocks run in turn
    under it, their intermediate rows (``exp``) local to it. The elementwise blocks are
    vectorised along the row. A reduction whose length the lanes divide (768, 384, 96) is
    split into a vector of partial results (``rfactor``), summed at the end of the row;
    softmax's come as such partial results already (``fast_math`` writes them so, with a
    scalar tail: 197 keys are 24 chunks of 8 and 5); any other stays a scalar loop. An
    elementwise block with one consumer is inlined into it. TVM's ``Reduction`` rule kept
    every reduction a scalar chain (an add or max every 3-4 cycles): ViT-B's layer norm
    0.40 -> 0.08 ms, its softmax 1.7 -> ~0.5 ms (with ``fast_exp``), on one Zen 3 core.
    """

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, machine: Machine) -> bool:
        blocks = _blocks(sch)
        if len(blocks) < 2 or "R" in _kinds(sch.get(blocks[-1])):
            return False
        if not any("R" in _kinds(sch.get(b)) for b in blocks):
            return False
        last = blocks[-1]
        loops = sch.get_loops(last)
        extents = [_extent(sch, lp) for lp in loops]
        if len(loops) < 2 or None in extents:
            return False
        rows, width = len(loops) - 1, extents[-1]
        for b in blocks[:-1]:
            stmt = sch.get(b)
            kinds = _kinds(stmt)
            domain = [int(iv.dom.extent) for iv in stmt.iter_vars]
            if domain[:rows] != extents[:rows] or kinds[:rows] != "S" * rows:
                return False  # not the same rows
        lanes = _dividing_lanes(width, machine)
        for b in blocks[:-1]:
            if "R" not in _kinds(sch.get(b)) and len(sch.get_consumers(b)) == 1:
                try:
                    sch.compute_inline(b)
                except ScheduleError:  # e.g. a second output of the function: keep it
                    continue
        for b in _blocks(sch)[:-1]:
            stmt = sch.get(b)
            kinds, domain = _kinds(stmt), [int(iv.dom.extent) for iv in stmt.iter_vars]
            tail = [(k, e) for k, e in zip(kinds, domain, strict=True)][rows:]
            whole_row = [t for t in tail if t[1] != 1] == [("R", width)]
            if whole_row and width % lanes == 0 and width > lanes:
                k = sch.get_loops(b)[-1]
                _, k_i = sch.split(k, [None, lanes])
                sch.rfactor(k_i, len(stmt.writes[0].source.shape))
        total = 1
        for e in extents[:-1]:
            total *= e
        outer = sch.fuse(*loops[:rows]) if rows > 1 else loops[0]
        if total * width >= MIN_PARALLEL_WORK:
            sch.parallel(outer)
        for b in reversed(_blocks(sch)[:-1]):
            sch.compute_at(b, outer, preserve_unit_loops=True)
        for b in _blocks(sch):
            if "R" in _kinds(sch.get(b)):
                self._vectorise_partial(sch, b)
            else:
                inner = sch.get_loops(b)[-1]
                extent = _extent(sch, inner) or 1
                if extent == width and width % lanes == 0 and width > lanes:
                    sch.vectorize(sch.split(inner, [None, lanes])[1])
                elif extent == width and width > 1:  # 197: one vector of the row (LLVM
                    sch.vectorize(inner)  # splits it); lanes and a predicated tail: 1.4x slower
        return True

    @staticmethod
    def _vectorise_partial(sch: s_tir.Schedule, block) -> None:
        """A reduction into a vector of partial results (``rfactor``'s, or a chunked one):
        its one spatial loop of several iterations moved innermost and vectorised."""
        stmt = sch.get(block)
        loops = sch.get_loops(block)[1:]  # compute_at: one loop per block iterator
        if len(loops) != len(stmt.iter_vars):
            return
        spatial = [
            lp
            for lp, iv in zip(loops, stmt.iter_vars, strict=True)
            if iv.iter_type == tirx.IterVar.DataPar and (_extent(sch, lp) or 1) > 1
        ]
        reduce = [
            lp
            for lp, iv in zip(loops, stmt.iter_vars, strict=True)
            if iv.iter_type == tirx.IterVar.CommReduce
        ]
        if len(spatial) != 1 or not reduce:
            return
        sch.reorder(*reduce, spatial[0])
        sch.vectorize(spatial[0])
        sch.decompose_reduction(block, reduce[0])


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
        chosen = register_tile(columns, rows, machine, narrow=False)
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

    TVM's own CPU ``Reduction`` rule comes last, for functions with several reductions that
    none of ours takes.
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
        RowReduction(),
        Elementwise(),
        dlight_cpu.Reduction(),
    ]


def rule_for(func: tirx.PrimFunc, target: Target) -> str | None:
    """The name of the rule that schedules ``func`` for ``target``, or None if none applies."""
    for rule in cpu_rules():
        if rule.apply(func, target, False) is not None:
            return type(rule).__name__
    return None
