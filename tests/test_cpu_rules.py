"""The depthwise convolution rule (``DepthwiseConv2d``) on odd shapes: which functions it takes,
and parity of llvm builds with the PyTorch backend (strides 1 and 2, dilation, no padding,
3x3/5x5/7x7 kernels, channel counts that the vector width does not divide, widths that the
column tile does not divide, fused epilogues, a batch of 2). Then ``Conv2d``'s pixel tiles
(``h x w`` as one axis, pixels and channels padded to whole tiles): the tile chosen and parity.
Then ``Matmul`` on one or two rows (classifiers): the packed weight and parity.
"""

import textwrap

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import resdsl  # noqa: E402
from resdsl.backends.tvm import BuildOptions  # noqa: E402
from resdsl.backends.tvm.build import build  # noqa: E402
from resdsl.backends.tvm.schedules import Conv2d, DepthwiseConv2d, rule_for  # noqa: E402
from resdsl.weights import resolve  # noqa: E402

from .test_cpu_schedules import NEEDS_AVX2, fused_functions  # noqa: E402
from .test_tvm import inputs_for, randomised, reference  # noqa: E402

DEPTHWISE = """
network depthwise() (x: (12, 17, 17), y: (20, 9, 9), z: (13, 11, 11), u: (48, 15, 15)) {
    a = x -> d1: conv2d(12, 3, stride=2, padding=1, groups=12) -> relu6
    b = x -> d2: conv2d(12, 5, padding=2, groups=12, bias=false) -> silu
    c = y -> d3: conv2d(20, 7, stride=2, padding=3, groups=20)
    d = z -> d4: conv2d(13, 3, padding=1, groups=13) -> relu
    e = x -> d5: conv2d(12, 3, padding=2, dilation=2, groups=12, bias=false) -> b5: batchnorm2d
    f = y -> d6: conv2d(20, 3, groups=20)
    g = relu((u -> d7: conv2d(48, 7, padding=3, groups=48, bias=false) -> b7: batchnorm2d) + u)
    h = u -> d8: conv2d(48, 5, stride=2, padding=2, groups=48) -> gelu
    return a, b, c, d, e, f, g, h
}
"""
# a: stride 2, 12 channels (4 lanes)    b: 5x5, SiLU    c: 7x7 stride 2, 20 channels, width 5
# d: 13 channels (no lane count from 4 divides them)    e: dilated, folded batch norm
# f: no padding    g: 7x7 (ConvNeXt's), width 15 = two tiles of 7 and a tail, residual add
# h: 5x5 stride 2 (EfficientNet's), width 8, GELU
CONVS = 8


@pytest.mark.parametrize("cpu", [None, pytest.param("haswell", marks=NEEDS_AVX2)])
def test_depthwise_rule_takes_every_depthwise_convolution(cpu):
    options = BuildOptions("llvm", cpu=cpu)
    funcs = fused_functions(resdsl.loads(textwrap.dedent(DEPTHWISE)), options)
    chosen = {name: rule_for(f, options.tvm_target()) for name, f in funcs.items()}
    assert list(chosen.values()).count("DepthwiseConv2d") == CONVS, chosen
    assert None not in chosen.values(), chosen


def test_depthwise_rule_declines_nchw_and_dense_convolutions():
    options = BuildOptions("llvm")
    text = """
    network n() (x: (16, 9, 9)) {
        a = x -> c1: conv2d(16, 3, padding=1, groups=16)
        b = x -> c2: conv2d(16, 3, padding=1)
        c = x -> c3: conv2d(32, 3, padding=1, groups=16)
        return a, b, c
    }
    """
    net = resdsl.loads(textwrap.dedent(text))
    for layout in ("NHWC", "NCHW"):
        funcs = fused_functions(net, options, layout)
        chosen = {name: rule_for(f, options.tvm_target()) for name, f in funcs.items()}
        expected = 1 if layout == "NHWC" else 0  # c1 in NHWC; c2 dense, c3 a multiplier of 2
        assert list(chosen.values()).count("DepthwiseConv2d") == expected, chosen


def test_depthwise_columns():
    assert [DepthwiseConv2d.columns(w) for w in (112, 56, 28, 14, 7, 8, 15, 5, 3)] == [
        7,
        7,
        7,
        7,
        7,
        4,
        5,
        5,
        3,
    ]


@pytest.mark.parametrize(
    ("cpu", "batch"), [(None, 1), pytest.param("haswell", 2, marks=NEEDS_AVX2)]
)
def test_depthwise_parity_with_torch(cpu, batch):
    net = resdsl.loads(textwrap.dedent(DEPTHWISE))
    assert_parity_with_torch(net, BuildOptions("llvm", cpu=cpu, batch=batch), batch)


def assert_parity_with_torch(net, options, batch):
    """The artifact built with randomised weights matches PyTorch within 1e-4 relative."""
    module = randomised(net)
    executable = build(net, resolve(net.graph, module)[0], options)
    vm = tvm.runtime.vm.VirtualMachine(executable, tvm.cpu())
    xs = inputs_for(net, batch)
    outs = vm["main"](*[tvm.runtime.tensor(x) for x in xs])
    for out, ref in zip(outs, reference(module, xs), strict=True):
        ref = np.asarray(ref)
        assert out.numpy().shape == ref.shape
        scale = max(float(np.abs(ref).max()), 1e-30)
        assert float(np.abs(out.numpy() - ref).max()) / scale < 1e-4


# Conv2d's pixel tiles (``h x w`` as one axis, NHWC): 1 x 1 convolutions whose pixels are
# padded to whole tiles (a: 49 -> 50 pixels and 136 -> 144 channels, 2 x 5; b: 25 pixels and
# a residual add; d: no epilogue at all, 128 channels), a 3 x 3 convolution whose row tile
# has a tail (14 = 6 + 6 + 2) and whose pixels take whole 3 x 4 tiles (c: grouped, so not
# Winograd), a strided 1 x 1
# (e) and a short reduction (f), which keep tiling rows.
PIXELS = """
network pixels() (x: (64, 7, 7), y: (72, 14, 14), z: (136, 5, 5), s: (16, 7, 7)) {
    a = x -> p1: conv2d(136, 1, bias=false) -> b1: batchnorm2d -> relu6
    b = relu((z -> p2: conv2d(136, 1, bias=false) -> b2: batchnorm2d) + z)
    c = y -> p3: conv2d(96, 3, padding=1, groups=4) -> silu
    d = x -> p4: conv2d(128, 1, bias=false)
    e = y -> p5: conv2d(160, 1, stride=2)
    f = s -> p6: conv2d(144, 1) -> relu
    return a, b, c, d, e, f
}
"""


@pytest.mark.parametrize(
    ("channels", "pixels", "partial", "tile"),
    [
        (440, 49, True, (2, 8, 5)),  # RegNet's 7 x 7: channels padded to 448, pixels to 50
        (208, 196, True, (2, 8, 6)),  # 196 = 32 x 6 + 4: padded to 198
        (208, 196, False, (2, 8, 4)),  # whole tiles only
        (576, 196, False, (3, 8, 4)),  # MobileNetV2's 14 x 14 expansion: 3 x 4 divides
        (440, 49, False, None),  # 55 vectors: neither two nor three divide them
        (13, 49, True, None),  # no lane count from 4 divides 13
    ],
)
def test_pixel_tile(channels, pixels, partial, tile):
    from resdsl.backends.tvm.schedules.cpu import Machine, pixel_tile

    assert pixel_tile(channels, pixels, Machine(lanes=8, registers=16), partial) == tile


@pytest.mark.parametrize(
    ("cpu", "batch"), [(None, 1), pytest.param("haswell", 2, marks=NEEDS_AVX2)]
)
def test_pixel_tiles_parity_with_torch(cpu, batch):
    net = resdsl.loads(textwrap.dedent(PIXELS))
    options = BuildOptions("llvm", cpu=cpu, batch=batch)
    funcs = fused_functions(net, options)
    chosen = {name: rule_for(f, options.tvm_target()) for name, f in funcs.items()}
    convs = [name for name in chosen if "conv2d" in name]
    assert len(convs) == 6 and all(chosen[name] == "Conv2d" for name in convs), chosen
    # ... without the fallback to rows (Conv2d.apply retries by rows where a primitive refuses)
    rule = Conv2d()
    for name in convs:
        assert super(Conv2d, rule).apply(funcs[name], options.tvm_target(), False), name
    assert_parity_with_torch(net, options, batch)


def test_compiled_benchmark_profile_flag():
    # benchmarks/compiled.py --profile [N] (the kernel profiles these rules were tuned with):
    # off by default, the top 15 without N
    import sys
    from pathlib import Path

    pytest.importorskip("torchvision")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        import compiled
    finally:
        sys.path.pop(0)
    assert compiled.parse_args([]).profile == 0
    assert compiled.parse_args(["--profile"]).profile == 15
    args = compiled.parse_args(["--profile", "5", "--profile-runs", "3"])
    assert (args.profile, args.profile_runs) == (5, 3)


@pytest.mark.parametrize(
    ("switch", "layer"),
    [
        ("group-vectors", "conv2d(16, 3, padding=1, groups=4) -> relu @ 16x6x6"),  # groups of 4
        ("short-tile", "conv2d(32, 1) @ 16x5x8"),  # 16 input channels, 2 columns
        ("narrow-tiles", "conv2d(24, 1) @ 64x4x8"),  # 3 vectors of 8 lanes with 32 registers
    ],
)
def test_kernel_benchmark_times_each_layer_with_and_without_a_rule(switch, layer, capsys):
    # benchmarks/kernels.py: a layer built twice, the rule on and off; both outputs are
    # checked against the PyTorch backend (exit status 1 past 1e-4), and the flag is restored
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        import kernels
    finally:
        sys.path.pop(0)
    assert kernels.main(["--layer", layer, "--without", switch, "--repeats", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].startswith(layer), lines
    assert f"| without {switch} " in lines[1]
    assert all(getattr(Conv2d, flag) for flag in kernels.SWITCHES.values())


# Matmul on one or two rows (a classifier at a batch of 1 or 2): as many vectors as divide
# the columns, up to eight (a: 1000 = 25 x 5 x 8, b: 24 = 3 x 8, c: 12 = 3 x 4), so that the
# weight is packed; d: 5 rows (the tile as before); e: 13 columns, which no lane count divides.
GEMV = """
network gemv() (x: (37, 3, 3), v: 50, u: (5, 19)) {
    a = x -> global_avgpool -> g1: linear(1000)
    b = v -> g2: linear(24, bias=false) -> relu
    c = v -> g3: linear(12) -> gelu
    d = u -> g4: linear(40)
    e = v -> g5: linear(13)
    return a, b, c, d, e
}
"""


@pytest.mark.parametrize(
    ("cpu", "batch"), [(None, 1), pytest.param("haswell", 1, marks=NEEDS_AVX2), (None, 2)]
)
def test_one_row_products_parity_with_torch(cpu, batch):
    net = resdsl.loads(textwrap.dedent(GEMV))
    assert_parity_with_torch(net, BuildOptions("llvm", cpu=cpu, batch=batch), batch)


@pytest.mark.parametrize("batch", [1, 2])
def test_one_row_products_pack_their_weight(batch):
    # One (two) rows by 1000 columns: 5 x 8 columns per tile divide them, so the weight is
    # packed at compile time (two vectors, 16 columns, did not divide 1000 and left it
    # unpacked; nor 24).
    from resdsl.backends.tvm.schedules.cpu import LAYOUT_PREPROC, Matmul

    options = BuildOptions("llvm", cpu="haswell", batch=batch)
    funcs = fused_functions(resdsl.loads(textwrap.dedent(GEMV)), options)
    target = options.tvm_target()
    for name, columns in (("g1", 1000), ("g2", 24), ("g3", 12)):
        (func,) = [f for n, f in funcs.items() if "matmul" in n and _width(f) == columns]
        sch = Matmul().apply(func, target, False)
        assert sch is not None, name
        assert LAYOUT_PREPROC in sch.mod.script(), name


def _width(func) -> int:
    """The columns of a product: the last axis of its output."""
    return int(func.params[-1].shape[-1])
