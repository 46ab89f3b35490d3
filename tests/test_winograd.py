"""Winograd convolution (``resdsl.backends.tvm.winograd``) and its CPU rules.

The transform matrices are checked against the definition of the convolution in float64;
the rewrite against the list of what it must leave alone; the compiled kernels against the
PyTorch backend on shapes that hit the edge cases (channel counts no vector width divides,
both tile sides, a batch, a fused residual epilogue, the size limit).
"""

import textwrap

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import resdsl  # noqa: E402
from resdsl.backends.tvm import BuildOptions, winograd  # noqa: E402
from resdsl.backends.tvm.build import build  # noqa: E402
from resdsl.backends.tvm.schedules import fuse_passes, rule_for  # noqa: E402
from resdsl.weights import resolve  # noqa: E402

from .test_cpu_schedules import lowered  # noqa: E402
from .test_tvm import inputs_for, randomised, reference  # noqa: E402


@pytest.mark.parametrize("m", sorted(winograd.TRANSFORMS))
def test_transforms_compute_a_3x3_correlation(m):
    bt, g, at = winograd.TRANSFORMS[m]
    rng = np.random.default_rng(m)
    d = rng.standard_normal((m + 2, m + 2))
    k = rng.standard_normal((3, 3))
    direct = np.array([[np.sum(d[i : i + 3, j : j + 3] * k) for j in range(m)] for i in range(m)])
    via = at @ ((g @ k @ g.T) * (bt @ d @ bt.T)) @ at.T
    np.testing.assert_allclose(via, direct, rtol=1e-12, atol=1e-12)


def test_weight_transform_layout():
    # U[e, c, k] for e = a * (m + 2) + b is (G g G^T)[a, b] of output channel k, input c.
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((5, 3, 3, 7))  # OHWI
    u = winograd.weight_transform(weight, 2)
    assert u.shape == (16, 7, 5)
    _, g, _ = winograd.TRANSFORMS[2]
    np.testing.assert_allclose(u[1 * 4 + 2, 6, 3], (g @ weight[3, :, :, 6] @ g.T)[1, 2])


# Which convolutions are rewritten, and with which tile: only 3x3, stride 1, dilation 1,
# padding 1, one group, with an output side that the tile divides.
WHICH = """
network which() (x: (8, 12, 12), y: (8, 6, 6), z: (8, 7, 7)) {
    a = x -> ca: conv2d(16, 3, padding=1)
    b = y -> cb: conv2d(16, 3, padding=1)
    c = z -> cc: conv2d(16, 3, padding=1)
    d = x -> cd: conv2d(16, 3, stride=2, padding=1)
    e = x -> ce: conv2d(16, 3, padding=2, dilation=2)
    f = x -> cf: conv2d(16, 3, padding=1, groups=2)
    g = x -> cg: conv2d(16, 3)
    h = x -> ch: conv2d(16, 1)
    return a, b, c, d, e, f, g, h
}
"""


def fused_functions(net: resdsl.Network, options: BuildOptions) -> dict:
    """The PrimFuncs the rules (and tuning) see for ``options``."""
    target = options.tvm_target()
    with target:
        passes = fuse_passes(target, options)
        mod = tvm.transform.Sequential(passes)(lowered(net, None, options.batch))
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def _tiles(net: resdsl.Network, options: BuildOptions) -> list[int]:
    funcs = fused_functions(net, options)
    tiles = []
    for name, func in funcs.items():
        if name.startswith(winograd.GEMM):
            sch = tvm.s_tir.Schedule(func)
            (block,) = sch.get_child_blocks(sch.get_sblock("root"))
            tiles.append(int(sch.get(block).annotations[winograd.TILE]))
    return sorted(tiles)


def test_only_eligible_convolutions_are_rewritten():
    net = resdsl.loads(textwrap.dedent(WHICH))
    assert _tiles(net, BuildOptions("llvm")) == [2, 4]  # a: 12 = 3 x 4, b: 6 = 3 x 2


def test_winograd_can_be_turned_off():
    net = resdsl.loads(textwrap.dedent(WHICH))
    assert _tiles(net, BuildOptions("llvm", winograd=False)) == []


def test_size_limit(monkeypatch):
    # x's transformed input with m = 4: 36 positions x 9 tiles x 8 channels x 4 bytes.
    net = resdsl.loads(textwrap.dedent(WHICH))
    monkeypatch.setattr(winograd, "MAX_BYTES", 36 * 9 * 8 * 4 - 1)
    assert _tiles(net, BuildOptions("llvm")) == [2]  # a tried m = 2: 16 x 36 x 8 x 4 fits


# Parity: 5 input channels (a masked vector), 17 and 24 output channels (no 16-lane vector
# fits; 17 leaves the GEMM to Matmul, the rule of batched products), m = 4 and m = 2, a
# residual add + ReLU fused into the output transform, a batch of 3.
PARITY = """
network wino() (x: (5, 8, 8), y: (24, 6, 6)) {
    a = x -> c1: conv2d(17, 3, padding=1) -> relu
    b = x -> c2: conv2d(24, 3, padding=1, bias=false) -> b2: batchnorm2d
    r = relu((y -> c3: conv2d(24, 3, padding=1) -> b3: batchnorm2d) + y)
    return a, b, r
}
"""


@pytest.mark.parametrize("batch", [1, 3])
def test_parity_with_torch(batch):
    net = resdsl.loads(textwrap.dedent(PARITY))
    module = randomised(net)
    options = BuildOptions("llvm", batch=batch)
    funcs = fused_functions(net, options)
    target = options.tvm_target()
    rules = sorted(rule_for(f, target) for name, f in funcs.items() if "winograd" in name)
    # c1 and c2 share one padding and one input transform function (the same kernels on the
    # same shape); the padding is elementwise
    expected = ["Elementwise", "WinogradInput"] * 2 + ["WinogradGemm"] * 2 + ["WinogradOutput"] * 3
    assert rules == sorted([*expected, "Matmul"])
    executable = build(net, resolve(net.graph, module)[0], options)
    vm = tvm.runtime.vm.VirtualMachine(executable, tvm.cpu())
    xs = inputs_for(net, batch)
    got = vm["main"](*(tvm.runtime.tensor(x) for x in xs))
    want = reference(module, xs)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-5, err_msg=f"output {i}")


def test_no_winograd_is_for_llvm_only(tmp_path, capsys):
    from resdsl.cli import main

    spec = tmp_path / "net.res"
    spec.write_text(textwrap.dedent(WHICH))
    out = tmp_path / "x.onnx"
    code = main(["compile", str(spec), "--target", "onnx", "--no-winograd", "-o", str(out)])
    assert code == 2
    assert "--no-winograd applies to --target llvm" in capsys.readouterr().err
    assert not out.exists()
