"""resdsl's CPU schedule rules (``resdsl.backends.tvm.schedules``): which rule takes which
function, the tile choices, and numerical parity of llvm builds with the PyTorch backend on
convolution, linear and pooling shapes chosen for the edge cases (widths the tile does not
divide, channel counts that fill no vector, strides, groups, fused epilogues).

Parity runs for the host CPU and, where the host has AVX2, for ``-mcpu=haswell`` (8 lanes,
16 registers) so that both register budgets are exercised whatever machine runs the tests.
"""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import resdsl  # noqa: E402
from resdsl.backends.tvm import BuildOptions, compile_network  # noqa: E402
from resdsl.backends.tvm.build import build  # noqa: E402
from resdsl.backends.tvm.lower import to_relax  # noqa: E402
from resdsl.backends.tvm.schedules import (  # noqa: E402
    CPU_LAYOUTS,
    Conv2d,
    Machine,
    llvm_fuse_passes,
    llvm_pipeline,
    rule_for,
)
from resdsl.backends.tvm.schedules.cpu import Matmul, _Conv, _Matmul  # noqa: E402
from resdsl.passes import run_inference_passes  # noqa: E402
from resdsl.weights import resolve  # noqa: E402

from .conftest import EXAMPLES  # noqa: E402
from .test_tvm import inputs_for, randomised, reference  # noqa: E402

# Convolutions, each with what it exercises (with 16 lanes; with 8 the same rules apply).
CONVS = """
network convs() (x: (16, 13, 13)) {
    a = x -> c1: conv2d(32, 3, padding=1)
    b = x -> c2: conv2d(24, 1, bias=false) -> relu
    c = x -> c3: conv2d(16, 7, stride=2, padding=3)
    d = x -> c4: conv2d(32, 1, stride=2, bias=false) -> b4: batchnorm2d
    e = x -> c5: conv2d(32, 3, padding=2, dilation=2, groups=2) -> relu
    f = x -> c6: conv2d(16, 3, padding=1, groups=16)
    g = x -> c7: conv2d(8, 3, stride=2, padding=1, groups=4, bias=false)
    h = x -> c8: conv2d(6, 3, dilation=2)
    r = relu((x -> c9: conv2d(16, 3, padding=1, bias=false) -> b9: batchnorm2d) + x)
    return a, b, c, d, e, f, g, h, r
}
"""
# a: 3x3 + bias, 2 vectors, width 13 = a tile and a tail    b: 1x1, 24 channels, ReLU
# c: 7x7 stride 2 (width 7)    d: strided 1x1 projection + folded batch norm
# e: grouped (16 channels a group), dilated    f: depthwise    g: 2 channels a group, stride 2
# h: 6 channels (no lane count divides), dilation, no padding    r: residual add + ReLU fused
# In NHWC (the pipeline's layout) DepthwiseConv2d takes f, Conv2d all others but h; in NCHW
# Conv2d leaves f and g, whose groups are narrower than a vector.
CONV_RULES = {
    "NHWC": {"Conv2d": 7, "DepthwiseConv2d": 1, "SpatialReduction": 1},
    "NCHW": {"Conv2d": 6, "SpatialReduction": 3},
}

# Linear layers (matmul + bias epilogue, widths 48 / 7 / 10), pooling, means.
HEADS = """
network heads() (x: (16, 9, 11), v: 40) {
    m = x -> maxpool2d(3, stride=2, padding=1)
    a = x -> avgpool2d(2, ceil_mode=true)
    g = x -> global_avgpool -> fc: linear(10)
    l = v -> l1: linear(48) -> relu -> l2: linear(7, bias=false)
    p = x -> adaptive_avgpool2d(1) -> flatten
    return m, a, g, l, p
}
"""
# The three linear layers are Matmul's; the pools and means SpatialReduction's.
HEAD_RULES = {
    "NHWC": {"SpatialReduction": 4, "Matmul": 3},
    "NCHW": {"SpatialReduction": 4, "Matmul": 3},
}

# 64 output channels on widths 4 divides: the 4 x 4 register tile (the others are 13 wide);
# a 1x1 convolution without padding reads its input in place (no copy).
TILES = """
network tiles() (x: (16, 8, 8)) {
    a = x -> t1: conv2d(64, 1) -> relu
    p = x -> t3: conv2d(64, 1, stride=2, bias=false)
    b = relu((x -> t2: conv2d(64, 3, stride=2, padding=1) -> tb: batchnorm2d) + p)
    return a, b
}
"""
TILE_RULES = {"NHWC": {"Conv2d": 3}, "NCHW": {"Conv2d": 3}}

# The families of issue 19: depthwise 3x3/5x5/7x7 convolutions with ReLU6 (a clamp), SiLU,
# GELU epilogues, a grouped convolution, squeeze-excitation, ConvNeXt's channel layer norm
# (in NCHW between permutes), an MLP on tokens, and attention (q k^T over 13 keys, which no
# lane count divides, softmax, the product with v).
MODERN = """
import std.transformer

network modern() (x: (16, 13, 13), t: (13, 32)) {
    a = x -> d1: conv2d(16, 3, padding=1, groups=16) -> relu6
    b = x -> d2: conv2d(16, 5, stride=2, padding=2, groups=16, bias=false) -> silu
    c = x -> d3: conv2d(16, 7, padding=3, groups=16) -> ln: layernorm2d(1e-6)
    g = x -> g1: conv2d(32, 3, padding=1, groups=4) -> gelu
    s = x -> adaptive_avgpool2d(1) -> se1: conv2d(8, 1) -> silu -> se2: conv2d(16, 1) -> sigmoid
    m = x -> permute((1, 2, 0)) -> l1: linear(48) -> gelu -> l2: linear(16)
    y = t -> encoder: encoder(1, 2, 64)
    return a, b, c, g, s * x, m, y
}
"""
# In NHWC the depthwise convolutions are DepthwiseConv2d's (ReLU6 and SiLU in their
# epilogues), the others Conv2d's (the SE gate in its epilogue); in NCHW the depthwise ones
# are SpatialReduction's. The token MLP, the attention's projections
# and its two products are Matmul's. In NHWC the channel norm reduces over the contiguous
# axis, as the token norms and the softmax do: RowReduction's; in NCHW it is ChannelNorm's.
MODERN_RULES = {
    "NHWC": {
        "Conv2d": 3,
        "DepthwiseConv2d": 3,
        "Matmul": 8,
        "RowReduction": 3,
        "SpatialReduction": 1,
    },
    "NCHW": {"Conv2d": 3, "Matmul": 8, "ChannelNorm": 1, "RowReduction": 2, "SpatialReduction": 4},
}

# Transformer shapes of issue 19 in small: attention over 37 tokens (softmax over 37 keys:
# four chunks of 8 and a tail of 5), token layer norms over 48 features (split by rfactor),
# a ConvNeXt block's MLP on (7, 6, 24) tokens, flattened to one product of 42 rows with a
# residual, and a layer norm over 20 channels (no vector of lanes divides it).
TOKENS = """
import std.transformer

network tokens() (t: (37, 48), x: (24, 7, 6), v: (5, 20)) {
    y = t -> encoder: encoder(1, 4, 96)
    m = x -> permute((1, 2, 0)) -> ln: layernorm(1e-6) -> l1: linear(96) -> gelu -> l2: linear(24)
    r = m + (x -> permute((1, 2, 0)))
    n = v -> ln2: layernorm(1e-5)
    return y, r, n
}
"""
# The encoder's qkv and proj products, its MLP's two and its two attention products are
# Matmul's, as the block's two linear layers; the softmax and the norms (the encoder's three
# share one function) are RowReduction's.
TOKEN_RULES = {
    "NHWC": {"Matmul": 8, "RowReduction": 4},
    "NCHW": {"Matmul": 8, "RowReduction": 4},
}

SPECS = {
    "convs": (CONVS, CONV_RULES),
    "heads": (HEADS, HEAD_RULES),
    "tiles": (TILES, TILE_RULES),
    "modern": (MODERN, MODERN_RULES),
    "tokens": (TOKENS, TOKEN_RULES),
}


def _host_has_avx2() -> bool:
    host = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    return tvm.target.codegen.target_has_features("avx2", host)


NEEDS_AVX2 = pytest.mark.skipif(not _host_has_avx2(), reason="the host has no AVX2")


LAYOUTS = {"NHWC": CPU_LAYOUTS, "NCHW": None}  # NCHW: no conversion


def lowered(net: resdsl.Network, module, batch: int = 1) -> tvm.IRModule:
    """``net`` as Relax, with ``module``'s weights (seeded ones for None)."""
    graph, weights = run_inference_passes(net.graph, resolve(net.graph, module)[0])
    return to_relax(graph, weights, batch=batch)


def fused_functions(net: resdsl.Network, options: BuildOptions, layout: str = "NHWC"):
    """The PrimFuncs the rules see: the spec lowered (seeded weights), legalised and fused."""
    target = options.tvm_target()
    with target:
        passes = llvm_fuse_passes(target, LAYOUTS[layout])
        mod = tvm.transform.Sequential(passes)(lowered(net, None, options.batch))
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.mark.parametrize(
    ("cpu", "layout"),
    [(None, "NHWC"), (None, "NCHW"), pytest.param("haswell", "NHWC", marks=NEEDS_AVX2)],
)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_rules_take_the_functions_they_are_for(name, cpu, layout):
    text, expected = SPECS[name][0], SPECS[name][1][layout]
    options = BuildOptions("llvm", cpu=cpu)
    funcs = fused_functions(resdsl.loads(textwrap.dedent(text)), options, layout)
    chosen = {fname: rule_for(f, options.tvm_target()) for fname, f in funcs.items()}
    counts = {rule: list(chosen.values()).count(rule) for rule in expected}
    assert counts == expected, chosen
    assert None not in chosen.values(), chosen  # nothing is left with serial loops


# Each spec for both targets, once with a batch of 2 (the batch axis joins the parallel loop);
# the convolutions also in NCHW, the layout the rules take when nothing converts it.
@pytest.mark.parametrize(
    ("name", "cpu", "batch", "layout"),
    [
        ("convs", None, 1, "NHWC"),
        ("heads", None, 2, "NHWC"),
        ("convs", None, 1, "NCHW"),
        ("tiles", None, 2, "NHWC"),
        ("tiles", None, 1, "NCHW"),
        ("modern", None, 1, "NHWC"),
        ("tokens", None, 1, "NHWC"),
        pytest.param("tokens", "haswell", 2, "NHWC", marks=NEEDS_AVX2),
        pytest.param("modern", None, 2, "NCHW", marks=pytest.mark.slow),  # ~30 s each
        pytest.param("convs", "haswell", 2, "NHWC", marks=NEEDS_AVX2),
        pytest.param("modern", "haswell", 2, "NHWC", marks=[NEEDS_AVX2, pytest.mark.slow]),
        pytest.param("heads", "haswell", 1, "NHWC", marks=NEEDS_AVX2),
    ],
)
def test_parity_with_torch(name, cpu, batch, layout):
    net = resdsl.loads(textwrap.dedent(SPECS[name][0]))
    module = randomised(net)
    options = BuildOptions("llvm", cpu=cpu, batch=batch)
    if layout == "NHWC":  # what `resdsl compile` does
        executable = build(net, resolve(net.graph, module)[0], options)
    else:
        target = options.tvm_target()
        pipeline = llvm_pipeline(target, LAYOUTS[layout])
        executable = tvm.compile(lowered(net, module, batch), target, relax_pipeline=pipeline)
    vm = tvm.runtime.vm.VirtualMachine(executable, tvm.cpu())
    xs = inputs_for(net, batch)
    got = vm["main"](*(tvm.runtime.tensor(x) for x in xs))
    got = [got] if isinstance(got, tvm.runtime.Tensor) else list(got)
    want = reference(module, xs)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-5, err_msg=f"output {i}")


def test_activations_join_the_convolution_and_vectorise():
    # ReLU6 is a clip, which ConvertLayout cannot move to NHWC: rewritten as maximum/minimum
    # it joins the convolution's epilogue instead of a transpose, clip, transpose. SiLU,
    # sigmoid and GELU use TVM's polynomial exp/erf, which LLVM vectorises.
    funcs = fused_functions(resdsl.loads(textwrap.dedent(MODERN)), BuildOptions("llvm"))
    assert not [name for name in funcs if "clip" in name], sorted(funcs)
    assert [name for name in funcs if "conv2d" in name and "maximum_minimum" in name]
    activations = ("silu", "gelu", "sigmoid")
    scripts = [f.script() for name, f in funcs.items() if any(a in name for a in activations)]
    assert len(scripts) == 6, sorted(funcs)
    assert not [text for text in scripts if "T.exp(" in text or "T.erf(" in text]


def test_resnet18_is_scheduled_throughout():
    net = resdsl.load(EXAMPLES / "resnet18.res")
    options = BuildOptions("llvm")
    target = options.tvm_target()
    chosen = {name: rule_for(f, target) for name, f in fused_functions(net, options).items()}
    convs = [rule for name, rule in chosen.items() if "conv2d" in name]
    assert convs and set(convs) == {"Conv2d"}, chosen
    assert None not in chosen.values(), chosen


@pytest.mark.parametrize(
    ("mcpu", "lanes", "registers"),
    [("znver4", 16, 32), ("skylake-avx512", 16, 32), ("haswell", 8, 16), ("x86-64", 4, 16)],
)
def test_machine_from_target(mcpu, lanes, registers):
    machine = Machine.of(tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    assert (machine.lanes, machine.registers) == (lanes, registers)


AVX512, AVX2 = Machine(16, 32), Machine(8, 16)


@pytest.mark.parametrize(
    ("machine", "layout", "channels", "groups", "width", "tile"),
    [
        (AVX512, "NHWC", 64, 1, 56, (4, 16, 4)),  # 16 accumulators: 4 vectors x 4 columns
        (AVX512, "NHWC", 256, 1, 112, (4, 16, 4)),
        (AVX512, "NHWC", 64, 1, 14, (2, 16, 7)),  # 4 does not divide 14: 2 x 7
        (AVX512, "NHWC", 32, 1, 56, (2, 16, 8)),  # 32 channels: 2 vectors x 8 columns
        (AVX512, "NHWC", 512, 1, 7, (2, 16, 7)),
        (AVX512, "NHWC", 48, 1, 56, (1, 16, 14)),  # one vector: about twice the columns
        (AVX512, "NHWC", 96, 1, 13, (2, 16, 8)),  # no divisor near 8: a tile of 8, a tail of 5
        (AVX512, "NHWC", 24, 1, 9, (3, 8, 3)),  # 24 channels: 3 vectors of 8 lanes, 3 columns
        (AVX512, "NHWC", 24, 1, 56, (3, 8, 7)),  # up to 21 accumulators
        (AVX512, "NHWC", 40, 1, 28, (5, 8, 4)),  # 5 vectors of 8 by 4 columns
        (AVX512, "NHWC", 40, 1, 7, (1, 8, 7)),  # 5 x 1 would be five accumulators: as before
        (AVX512, "NHWC", 6, 1, 9, None),  # no lane count divides 6: left to SpatialReduction
        (AVX512, "NHWC", 16, 16, 9, (1, 16, 9)),  # depthwise: lanes read neighbouring channels
        (AVX512, "NCHW", 16, 16, 9, None),  # ... but lanes must share an input plane in NCHW
        (AVX512, "NCHW", 32, 2, 9, (1, 16, 9)),  # a group fills a vector
        (AVX2, "NHWC", 64, 1, 56, (2, 8, 4)),  # 12 accumulators with 16 registers
        (AVX2, "NHWC", 64, 1, 112, (2, 8, 4)),
        (AVX2, "NHWC", 24, 1, 56, (3, 8, 4)),  # 3 vectors x 4 columns, not 1 x 8
        (AVX2, "NHWC", 24, 1, 7, (1, 8, 7)),  # ... where 4 divides the width
        (AVX2, "NHWC", 144, 1, 56, (2, 8, 4)),  # two vectors divide: 2 x 4
        (AVX2, "NHWC", 960, 1, 7, (2, 8, 4)),  # 4 + 3 columns, not 6 + a tail of 1
        (AVX2, "NHWC", 96, 1, 14, (2, 8, 6)),  # 6 + 6 + 2
    ],
)
def test_conv_tile(machine, layout, channels, groups, width, tile):
    conv = _Conv(None, layout, 1, (), channels, channels // groups, width)
    assert Conv2d.tile(conv, machine) == tile


@pytest.mark.parametrize(
    ("machine", "in_channels", "channels", "taps", "width", "tile"),
    [
        (AVX512, 16, 96, 1, 112, (6, 16, 2)),  # a short reduction: every channel, 2 columns
        (AVX512, 32, 48, 1, 112, (3, 16, 2)),
        (AVX512, 32, 16, 1, 112, (1, 16, 4)),  # one vector: 4 columns
        (AVX512, 32, 16, 1, 7, (1, 16, 7)),  # no divisor of 7 from 2 to 4: as before
        (AVX512, 24, 144, 1, 56, (1, 16, 14)),  # nine vectors do not fit one tile: as before
        (AVX512, 64, 96, 1, 112, (2, 16, 8)),  # a longer reduction: as before
        (AVX512, 16, 96, 9, 112, (2, 16, 8)),  # 3 x 3: as before
        (AVX2, 16, 96, 1, 112, (2, 8, 4)),  # measured with 32 registers only
    ],
)
def test_conv_tile_of_a_short_reduction(machine, in_channels, channels, taps, width, tile):
    conv = _Conv(None, "NHWC", 1, (), channels, channels, width, width, taps, in_channels)
    assert Conv2d.tile(conv, machine) == tile


@pytest.mark.parametrize(
    ("machine", "channels", "groups", "width", "tile"),
    [
        # RegNet's groups of 8 on AVX-512: 8 lanes, so a vector reads one input channel;
        # 208 = 26 x 8 channels, 2 vectors (4 do not divide 26), 7 columns divide 14
        (AVX512, 208, 26, 14, (2, 8, 7)),
        (AVX512, 48, 6, 56, (2, 8, 8)),  # 48 = 6 x 8: 2 vectors by 8 columns
        (AVX512, 64, 2, 56, (4, 16, 4)),  # groups of 32 fill whole vectors of 16: unchanged
        (AVX2, 208, 26, 14, (2, 8, 6)),  # AVX2: 8 lanes already, 6 + 6 + 2 columns
    ],
)
def test_grouped_conv_vectors_stay_within_a_group(machine, channels, groups, width, tile):
    conv = _Conv(None, "NHWC", 1, (), channels, channels // groups, width)
    narrowed = Conv2d.group_machine(conv, machine)
    assert narrowed.lanes <= channels // groups or narrowed == machine
    assert Conv2d.tile(conv, narrowed) == tile


@pytest.mark.parametrize(
    ("rows", "columns", "tile"),
    [
        (197, 3072, (2, 8, 6)),  # ViT's tokens: two vectors by six rows, 198 rows computed
        (197, 768, (2, 8, 6)),
        (3136, 384, (3, 8, 4)),  # ConvNeXt's: 4 divides the rows, 6 does not: 3 x 4, no pad
        (196, 1536, (3, 8, 4)),
        (3136, 96, (3, 8, 4)),
        (49, 3072, (2, 8, 6)),  # 4 does not divide 49 either: 2 x 6
        (12, 48, (2, 8, 6)),  # 6 divides the rows
        (1, 1000, (5, 8, 1)),  # a classifier: one row, 5 vectors divide 1000 (b packed)
        (1, 768, (8, 8, 1)),  # one row: up to eight vectors
        (1, 12, (3, 4, 1)),  # 4 lanes
        (1, 13, (1, 8, 1)),  # no lane count divides 13: as before
        (2, 1000, (5, 8, 2)),  # two rows (a micro-batch of 2): the same
        (3, 1000, (2, 8, 3)),  # three: as before
    ],
)
def test_matmul_tile(rows, columns, tile):
    assert Matmul.tile(_Matmul(None, 1, True, rows, columns), AVX2) == tile


def test_products_of_tokens_are_flattened_to_rows():
    # ConvNeXt's linear layers on (H, W, C) tokens are one product of H * W rows, bias,
    # GELU and residual add in its epilogue; the reshapes around it are views, not kernels.
    net = resdsl.loads(textwrap.dedent(TOKENS))
    funcs = fused_functions(net, BuildOptions("llvm"))
    products = [f for name, f in funcs.items() if name.startswith("fused_matmul")]
    shapes = {tuple(int(e) for e in f.params[0].shape) for f in products}
    assert (42, 24) in shapes and (42, 96) in shapes, shapes
    target = BuildOptions("llvm").tvm_target()
    mod = llvm_pipeline(target)(lowered(net, randomised(net)))
    main = mod["main"].script()
    assert "vm.builtin.reshape" in main
    assert not re.search(r"^\s*reshape\d*\(", main, re.MULTILINE), main  # no reshape kernel


def test_softmax_uses_the_fast_exp_and_chunked_reductions():
    funcs = fused_functions(resdsl.loads(textwrap.dedent(TOKENS)), BuildOptions("llvm"))
    (softmax,) = [f.script() for name, f in funcs.items() if "softmax" in name]
    assert "T.exp(" not in softmax
    assert "softmax_max_partial" in softmax and "softmax_sum_tail" in softmax


def test_only_real_padding_is_materialised():
    # Of the three convolutions in TILES only t2 pads; the 1x1 ones read their input in place.
    options = BuildOptions("llvm")
    target = options.tvm_target()
    funcs = fused_functions(resdsl.loads(textwrap.dedent(TILES)), options)
    scheduled = [
        Conv2d().apply(f, target, False).mod["main"].script()
        for name, f in funcs.items()
        if "conv2d" in name
    ]
    assert len(scheduled) == 3
    assert sum("pad_temp" in text for text in scheduled) == 1


def test_weights_are_repacked_at_compile_time():
    net = resdsl.loads(textwrap.dedent(CONVS))
    target = BuildOptions("llvm").tvm_target()
    mod = llvm_pipeline(target)(lowered(net, randomised(net)))
    main = mod["main"].script()
    assert "_prepacked" in main  # the convolutions run on packed weights ...
    assert "_weight_prepack" not in main  # ... that were packed while compiling


@pytest.mark.skipif(
    not pathlib.Path("/sys/devices/system/cpu/cpu0/topology").is_dir(), reason="Linux sysfs"
)
def test_artifacts_run_on_every_physical_core(tmp_path):
    # TVM alone takes half the logical CPUs on x86 (1 of this 2-core VM's 2); resdsl.runtime
    # sizes the pool to the physical cores unless TVM_NUM_THREADS says otherwise.
    net = resdsl.loads("network tiny() (x: 4) { return x -> fc: linear(2) }")
    compile_network(net, str(tmp_path), BuildOptions("llvm"))
    script = (
        "import sys, tvm, resdsl.runtime as rt; rt.load(sys.argv[1]); "
        "print(tvm.get_global_func('runtime.NumThreads')(), rt.physical_cores())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    pool, cores = map(int, run.stdout.split())
    assert pool == cores == len({*_siblings()}), run.stdout


def _siblings() -> list[str]:
    """One entry per physical core available to this process (its SMT siblings' list)."""
    root = pathlib.Path("/sys/devices/system/cpu")
    cpus = sorted(os.sched_getaffinity(0))
    return [(root / f"cpu{c}/topology/thread_siblings_list").read_text().strip() for c in cpus]
