"""The TVM backend: parity with the PyTorch backend on every op and connection kind, batch-norm
folding, CUDA builds without a GPU, torchvision checkpoints, atomic artifacts and failures,
``compile --check``, and the runtime without the compiler (``resdsl.runtime``, ``resdsl run``).

Each spec is compiled once per module (``built`` caches by name and batch); the specs are
small so the whole file stays quick on two CPU cores.
"""

import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import resdsl  # noqa: E402
from resdsl import runtime  # noqa: E402
from resdsl.backends.tvm import BuildOptions, compile_network, lower  # noqa: E402
from resdsl.cli import main  # noqa: E402
from resdsl.passes import run_inference_passes  # noqa: E402
from resdsl.weights import from_module  # noqa: E402

from .backend_specs import BAD_SPEC, SMALL, TOKENS  # noqa: E402
from .conftest import EXAMPLES  # noqa: E402

# `from .build import build` in the package rebinds `resdsl.backends.tvm.build` to the function,
# so the modules are taken from sys.modules.
TVM_PACKAGE = importlib.import_module("resdsl.backends.tvm")
BUILD_MODULE = importlib.import_module("resdsl.backends.tvm.build")

HAS_CUDA = bool(tvm.cuda(0).exist)

# --- specs covering every op and connection kind -------------------------------------------------

# conv2d: stride, explicit/"same"/"valid" padding with odd and even kernels, dilation, groups,
# bias on and off; batch norm folded into a conv (c2 with a bias, c3 without) and standalone
# (after a relu, after an add: not folded), non-default eps and affine=false; several outputs.
CONV = """
network conv() (x: (4, 9, 9)) {
    a = x -> c1: conv2d(6, 3, stride=2, padding=1, bias=false)
    b = x -> c2: conv2d(4, 4, padding="same") -> b2: batchnorm2d
    c = x -> c3: conv2d(4, 3, padding="same", dilation=2, bias=false) -> b3: batchnorm2d
    d = x -> c4: conv2d(8, 3, stride=(1, 2), padding=(2, 1), groups=2)
    e = x -> c5: conv2d(4, (2, 3), padding="valid", dilation=(2, 1), groups=4, bias=false)
    f = x -> c6: conv2d(4, 2, padding="same", dilation=3)
    return a -> relu -> b1: batchnorm2d(eps=0.001), b + c -> b4: batchnorm2d(affine=false),
           d, e, f
}
"""

# Pooling with ceil_mode (including windows PyTorch drops because they would start past the
# input, and windows hanging past the padding), padding, dilation, count_include_pad=false;
# adaptive pooling to a size that does not divide the input; flatten from axis 0 and 1.
POOL = """
network pool() (x: (3, 7, 9), z: (2, 5, 7), w: (2, 4, 6)) {
    a = x -> maxpool2d(3, stride=2, padding=1, ceil_mode=true)
    b = x -> maxpool2d(2, stride=1, dilation=2)
    c = x -> avgpool2d(3, stride=2, padding=1, ceil_mode=true, count_include_pad=false)
    d = x -> avgpool2d((2, 3), stride=(2, 1), padding=(1, 1))
    e = x -> avgpool2d(2)
    f = z -> adaptive_avgpool2d((3, 2))
    g = z -> adaptive_avgpool2d(1) -> flatten
    h = z -> global_avgpool
    i = w -> maxpool2d(2, stride=3, padding=1, ceil_mode=true)
    j = w -> avgpool2d(2, stride=3, padding=1, ceil_mode=true)
    k = w -> avgpool2d(3, stride=2, padding=1, ceil_mode=true)
    l = w -> maxpool2d(3, stride=2, padding=1, dilation=2, ceil_mode=true)
    return a, b, c, d, e, f, g, h, i, j, k, l, x -> flatten(1), z -> flatten(start=0)
}
"""


# Gates and arithmetic: squeeze-and-excitation (a (C, 1, 1) gate), a (W,) gate of lower rank,
# a highway mix t * h + (1 - t) * x, sub, scale_shift in its forms, identity and dropout.
ARITH = """
block se(reduction: int) (x) {
    s = x -> adaptive_avgpool2d(1) -> fc1: conv2d(x.channels // reduction, 1) -> relu
          -> fc2: conv2d(x.channels, 1) -> sigmoid
    return x * s
}
network arith() (x: (4, 5, 5)) {
    y = x -> c: conv2d(4, 3, padding=1) -> se: se(2)
    g = x -> global_avgpool -> gate: linear(5) -> sigmoid
    t = x -> tc: conv2d(4, 1) -> sigmoid
    h = t * y + (1 - t) * x
    return y * g, h - x, x / 4, -x, x * 0.5 + 1, x -> identity -> dropout(0.3)
}
"""

# Connections: identity skip, explicit project, automatic shortcut in both regimes (identity
# in b1, projection in b2), a dense block, a 3-input add, a conditional, concat on axes 0 and
# 1, standalone batch norm after an add and in the dense block, several outputs.
CONNECT = """
block res(planes: int, stride: int = 1) (x) {
    y = x -> conv1: conv2d(planes, 3, stride=stride, padding=1, bias=false)
          -> bn1: batchnorm2d -> relu
    return relu(y + down: shortcut(x, like=y))
}
block dense_block(layers: int, growth: int) (x) {
    dense x for i in range(layers) {
        x = x -> "bn{i}": batchnorm2d -> relu -> "conv{i}": conv2d(growth, 3, padding=1, bias=false)
    }
    return x
}
network connect(wide: bool = true) (x: (4, 6, 6)) {
    s = x + (x -> ic: conv2d(4, 3, padding=1) -> ib: batchnorm2d -> relu)
    p = s -> pc: conv2d(8, 3, stride=2, padding=1, bias=false) -> pb: batchnorm2d
    p = p + proj: project(s, 8, stride=2)
    r = p -> b1: res(8) -> b2: res(16, 2)
    d = s -> dense: dense_block(3, 2)
    m = add(s, x, if wide then relu(s) else s) -> sb: batchnorm2d
    return r -> global_avgpool -> fc: linear(5), d, concat(m, x, axis=1), concat(m, x)
}
"""

SPECS = {"conv": CONV, "pool": POOL, "tokens": TOKENS, "arith": ARITH, "connect": CONNECT}


CUDA_KERNEL = b'extern "C" __global__'  # TVM keeps CUDA kernels as CUDA C++ in the library


# --- helpers -------------------------------------------------------------------------------------


def randomised(net: resdsl.Network) -> torch.nn.Module:
    """``net``'s module in eval mode with nothing left at a constant initial value.

    Batch-norm statistics and affine parameters, layer-norm parameters, biases initialised to
    zero and zero-initialised ``parameter`` tensors are all drawn at random, so that folding
    and every weight are exercised (a variance is kept positive).
    """
    module = net.to_torch(seed=0).eval()
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for key, t in module.state_dict().items():  # tensors share storage with the module
            if not t.is_floating_point() or not t.numel():
                continue
            if key.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif bool((t == t.reshape(-1)[0]).all()):
                t.add_(0.5 * torch.randn(t.shape, generator=gen))
    return module


def inputs_for(net: resdsl.Network, batch: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((batch, *net.graph.info(name).shape)).astype(np.float32)
        for name in net.graph.inputs
    ]


def as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def reference(module: torch.nn.Module, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """The module's outputs for the whole batch, in one run (eval mode).

    One batched run, as the artifact makes: a backend that mixed samples up (a broadcast
    against the batch axis, a reduction over it) would then differ from the artifact instead
    of being hidden by running one sample at a time.
    """
    with torch.no_grad():
        out = module(*(torch.from_numpy(x) for x in xs))
    return tuple(y.numpy() for y in as_tuple(out))


def assert_matches_torch(b, model, batch: int) -> None:
    """Every output of the artifact ``model`` equals ``b.module``'s, both run once on the
    same seeded batch."""
    xs = inputs_for(b.net, batch)
    actual = as_tuple(model(*xs))
    expected = reference(b.module, xs)
    assert len(actual) == len(expected) == len(b.net.graph.outputs)
    for (out, _), got, want in zip(b.net.graph.outputs, actual, expected, strict=True):
        assert got.shape == want.shape, out
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=out)


def graph_ops(net: resdsl.Network) -> set[str]:
    return {node.op for node in net.graph.nodes()}


def snapshot(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


class Built:
    def __init__(self, net, module, path):
        self.net, self.module, self.path = net, module, path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``built(name, batch, micro_batch)``: the spec compiled for llvm with its randomised
    module's weights."""
    cache: dict[tuple[str, int, int | None], Built] = {}

    def get(name: str, batch: int = 1, micro_batch: int | None = None) -> Built:
        key = (name, batch, micro_batch)
        if key not in cache:
            text = SMALL if name == "small" else SPECS[name]
            net = resdsl.loads(textwrap.dedent(text))
            module = randomised(net)
            out = tmp_path_factory.mktemp(f"{name}-b{batch}")
            options = BuildOptions("llvm", batch=batch, micro_batch=micro_batch)
            compile_network(net, str(out), options, weights=module)
            cache[key] = Built(net, module, out)
        return cache[key]

    return get


@pytest.fixture
def spec_file(tmp_path):
    def write(text: str, name: str = "net.res") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


# --- 1. parity with the PyTorch backend ----------------------------------------------------------


def test_specs_use_non_default_attributes():
    graphs = [resdsl.loads(text).graph for text in SPECS.values()]
    nodes = [(g, n) for g in graphs for n in g.nodes()]

    def some(op, **attrs):
        return any(n.op == op and all(n.attrs[k] == v for k, v in attrs.items()) for _, n in nodes)

    convs = [n.attrs for _, n in nodes if n.op == "conv2d"]
    assert any(a["padding"] == "same" and a["kernel"][0] % 2 == 0 for a in convs)
    assert any(a["padding"] == "same" and a["kernel"][0] % 2 == 1 for a in convs)
    assert any(a["stride"] != (1, 1) for a in convs)
    assert any(a["dilation"] != (1, 1) for a in convs)
    assert any(a["groups"] > 1 for a in convs)
    assert some("conv2d", bias=True) and some("conv2d", bias=False)
    assert some("maxpool2d", ceil_mode=True) and some("avgpool2d", ceil_mode=True)
    assert some("avgpool2d", count_include_pad=False)
    assert some("adaptive_avgpool2d", output_size=(3, 2))
    assert some("flatten", start=0) and some("flatten", start=1)
    assert some("concat", axis=0) and some("concat", axis=1)
    assert some("batchnorm2d", affine=False)
    assert any(n.op == "add" and len(g.inputs_of(n.name)) == 3 for g, n in nodes)
    linear_ranks = {len(g.info(g.inputs_of(n.name)[0]).shape) for g, n in nodes if n.op == "linear"}
    assert {1, 2} <= linear_ranks


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", list(SPECS))
def test_parity_with_torch(built, name, batch):
    b = built(name, batch)
    model = runtime.load(b.path)
    assert model.meta["batch"] == batch
    assert_matches_torch(b, model, batch)


@pytest.mark.parametrize("name", list(SPECS))
def test_parity_in_micro_batches(built, name):
    """Batch 3 run by the artifact one sample at a time (several inputs and outputs split
    and concatenated), against one batched run of the PyTorch module."""
    b = built(name, 3, micro_batch=1)
    model = runtime.load(b.path)
    assert (model.meta["batch"], model.meta["micro_batch"]) == (3, 1)
    assert_matches_torch(b, model, 3)


def test_micro_batches_call_one_forward_function():
    net = resdsl.loads(CONNECT)
    graph, weights = run_inference_passes(net.graph, from_module(randomised(net)))
    whole = lower.to_relax(graph, weights, batch=4)
    assert [gv.name_hint for gv in whole.functions] == ["main"]
    split = lower.to_relax(graph, weights, batch=4, micro_batch=2)
    assert sorted(gv.name_hint for gv in split.functions) == ["forward", "main"]
    forward = split.get_global_var("forward")
    calls = []
    tvm.relax.analysis.post_order_visit(
        split["main"].body, lambda e: calls.append(e) if isinstance(e, tvm.relax.Call) else None
    )
    assert sum(1 for c in calls if c.op.same_as(forward)) == 2
    assert [int(d) for d in split["forward"].params[0].ty.shape] == [2, 4, 6, 6]
    with pytest.raises(ValueError, match="does not divide"):
        lower.to_relax(graph, weights, batch=4, micro_batch=3)


@pytest.mark.parametrize(
    ("example", "batch", "target", "expected"),
    [
        # 64x112x112 floats (3.06 MiB) a sample: two fit under the 7 MiB budget
        ("resnet50", 8, "llvm", 2),
        ("resnet50", 1, "llvm", 1),
        ("resnet50", 3, "llvm", 1),  # 3 does not divide by 2
        ("resnet18", 6, "llvm", 2),
        # 64x32x32 floats (0.25 MiB) a sample: 16 fit, 32 (8 MiB) do not
        ("preact_resnet18", 32, "llvm", 16),
        ("preact_resnet18", 24, "llvm", 24),
        ("preact_resnet18", 30, "llvm", 15),
        ("resnet50", 8, "cuda", 8),  # the GPU takes the whole batch
    ],
)
def test_micro_batch_size(example, batch, target, expected):
    net = resdsl.load(EXAMPLES / f"{example}.res")
    options = BuildOptions(target, batch=batch)
    assert BUILD_MODULE.micro_batch_size(net.graph, options) == expected


def test_micro_batch_given(capsys, tmp_path):
    net = resdsl.load(EXAMPLES / "resnet18.res")
    size = BUILD_MODULE.micro_batch_size
    assert size(net.graph, BuildOptions("llvm", batch=8, micro_batch=8)) == 8
    assert size(net.graph, BuildOptions("llvm", batch=8, micro_batch=4)) == 4
    with pytest.raises(BUILD_MODULE.TargetError, match="must divide the batch"):
        size(net.graph, BuildOptions("llvm", batch=8, micro_batch=3))
    with pytest.raises(BUILD_MODULE.TargetError, match="applies to --target llvm"):
        size(net.graph, BuildOptions("cuda", batch=8, micro_batch=4))
    spec = str(EXAMPLES / "resnet18.res")
    out = tmp_path / "art"
    for extra, message in [
        (["--target", "llvm", "--batch", "8", "--micro-batch", "3"], "must divide --batch (8)"),
        (["--target", "llvm", "--micro-batch", "2"], "must divide --batch (1)"),
        (["--target", "cuda", "--batch", "8", "--micro-batch", "4"], "applies to --target llvm"),
    ]:
        assert main(["compile", spec, "-o", str(out), *extra]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_inputs_by_name(built):
    b = built("pool")
    model = runtime.load(b.path)
    xs = inputs_for(b.net, 1)
    named = dict(zip(b.net.graph.inputs, xs, strict=True))
    for got, want in zip(model(**named), model(*xs), strict=True):
        np.testing.assert_array_equal(got, want)


# --- 2. batch-norm folding -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPECS))
def test_folded_graph_has_no_batchnorm_after_a_conv(name):
    net = resdsl.loads(SPECS[name])
    graph, _ = run_inference_passes(net.graph, from_module(randomised(net)))
    for node in graph.nodes():
        if node.op == "batchnorm2d":
            (src,) = graph.inputs_of(node.name)
            assert graph.node(src).op != "conv2d", node.name


def test_folding_removes_conv_bns_and_keeps_standalone_ones():
    net = resdsl.loads(CONV)
    graph, weights = run_inference_passes(net.graph, from_module(randomised(net)))
    bns = {n.name for n in graph.nodes() if n.op == "batchnorm2d"}
    assert bns == {"b1", "b4"}  # after a relu and after an add
    assert {"b2", "b3"} <= {n.name for n in net.graph.nodes()}
    assert graph.node("c3").attrs["bias"] is True  # the folded shift became a bias
    assert "c3.bias" in weights

    net = resdsl.loads(CONNECT)
    graph, _ = run_inference_passes(net.graph, from_module(randomised(net)))
    bns = {n.name for n in graph.nodes() if n.op == "batchnorm2d"}
    assert bns == {"sb", "dense.bn0", "dense.bn1", "dense.bn2"}


# --- 3. CUDA without a GPU -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda_resnet18(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda") / "resnet18"
    rc = main(["compile", str(EXAMPLES / "resnet18.res"), "--target", "cuda", "-o", str(out)])
    return rc, out


def test_cuda_build_metadata(cuda_resnet18):
    rc, out = cuda_resnet18
    assert rc == 0
    assert sorted(os.listdir(out)) == ["model.json", "model.so"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["format"] == "resdsl-artifact/1"
    assert meta["device"] == "cuda"
    assert meta["target"]["kind"] == "cuda"
    assert meta["target"]["tvm"]["kind"] == "cuda"
    assert meta["target"]["tvm"]["arch"] == "sm_80"
    assert meta["dtype"] == "float32"
    assert meta["batch"] == 1
    assert meta["dynamic_batch"] is False
    assert meta["inputs"] == [{"name": "x", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert [o["shape"] for o in meta["outputs"]] == [[1, 1000]]
    assert meta["library"] == "model.so"


def test_cuda_library_holds_cuda_kernels(cuda_resnet18, built):
    _, out = cuda_resnet18
    data = (out / "model.so").read_bytes()
    assert data.count(CUDA_KERNEL) >= 10  # one per fused kernel of resnet18
    assert b"_kernel(" in data
    assert CUDA_KERNEL not in (built("small").path / "model.so").read_bytes()  # llvm: none


@pytest.mark.skipif(HAS_CUDA, reason="checks the behaviour without a GPU")
def test_cuda_artifact_without_gpu_is_an_artifact_error(cuda_resnet18):
    _, out = cuda_resnet18
    with pytest.raises(runtime.ArtifactError, match="cuda"):
        runtime.load(out)


def test_cuda_arch_and_float16(spec_file, tmp_path):
    path = spec_file(SMALL)
    out = tmp_path / "sm90"
    assert main(["compile", path, "--target", "cuda", "--arch", "sm_90", "-o", str(out)]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["target"]["tvm"]["arch"] == "sm_90"
    assert CUDA_KERNEL in (out / "model.so").read_bytes()

    out = tmp_path / "fp16"
    assert main(["compile", path, "--target", "cuda", "--dtype", "float16", "-o", str(out)]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["dtype"] == "float16"
    assert {t["dtype"] for t in meta["inputs"] + meta["outputs"]} == {"float16"}
    data = (out / "model.so").read_bytes()
    assert CUDA_KERNEL in data
    assert b"cuda_fp16.h" in data


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--target", "llvm", "--dtype", "float16"], "float16 is supported for --target cuda only"),
        (["--target", "cuda", "--arch", "80"], "--arch must look like sm_80"),
    ],
    ids=["float16-llvm", "bad-arch"],  # --batch 0: a usage error, test_hardening_tvm.py
)
def test_bad_target_options_are_rejected(spec_file, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert main(["compile", spec_file(SMALL), *flags, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "E0701" in err
    assert not out.exists()


# --- 4. torchvision weights ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_resnet18(tmp_path_factory):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18().eval()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 * torch.rand(c, generator=gen) + 0.75)
                m.weight.copy_(1 + 0.1 * torch.randn(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
    x = torch.randn(1, 3, 224, 224, generator=gen)
    with torch.no_grad():
        y = model(x).numpy()
    d = tmp_path_factory.mktemp("torchvision")
    np.save(d / "x.npy", x.numpy())
    state = model.state_dict()
    torch.save(state, d / "resnet18.pt")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "resnet18.safetensors"))
    return d, y


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_torchvision_weights(torchvision_resnet18, tmp_path, suffix):
    d, expected = torchvision_resnet18
    out, y = tmp_path / "art", tmp_path / "y.npy"
    weights = str(d / f"resnet18{suffix}")
    args = ["compile", str(EXAMPLES / "resnet18.res"), "--target", "llvm", "--weights", weights]
    assert main([*args, "-o", str(out)]) == 0
    assert json.loads((out / "model.json").read_text())["weights"] == f"file {weights}"
    assert main(["run", str(out), "--input", str(d / "x.npy"), "--output", str(y)]) == 0
    actual = np.load(y)
    assert actual.shape == expected.shape == (1, 1000)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)


# --- 5. failures leave no partial artifact -------------------------------------------------------


@pytest.fixture
def previous(built, tmp_path):
    """A copy of a complete artifact in ``tmp_path/art``, and its bytes."""
    out = tmp_path / "art"
    shutil.copytree(built("small").path, out)
    return out, snapshot(out)


def test_bad_spec_writes_nothing(spec_file, tmp_path, capsys):
    out = tmp_path / "new"
    assert main(["compile", spec_file(BAD_SPEC), "--target", "llvm", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "net.res:3:" in err  # located
    assert "cannot add" in err
    assert not out.exists()


def test_bad_spec_leaves_previous_artifact(spec_file, previous, capsys):
    out, before = previous
    assert main(["compile", spec_file(BAD_SPEC), "--target", "llvm", "-o", str(out)]) == 1
    assert snapshot(out) == before


class Opaque:
    """Pickled by reference: ``torch.load(weights_only=True)`` must refuse to build it."""

    def __init__(self):
        self.payload = [1, 2, 3]


def _state(net: resdsl.Network) -> dict:
    return dict(randomised(net).state_dict())


@pytest.mark.parametrize("case", ["missing", "misshaped", "unexpected", "object", "not-a-dict"])
def test_bad_weights(spec_file, previous, tmp_path, capsys, case):
    out, before = previous
    net = resdsl.loads(SMALL)
    state = _state(net)
    path = tmp_path / "w.pt"
    if case == "missing":
        del state["c.weight"]
        expected = ["`c.weight`", "(4, 3, 3, 3)"]
    elif case == "misshaped":
        state["fc.weight"] = torch.zeros(5, 3)
        expected = ["`fc.weight`", "(5, 3)", "(5, 4)"]
    elif case == "unexpected":
        state["fc.extra"] = torch.zeros(2)
        expected = ["`fc.extra`"]
    elif case == "object":
        state = {"c.weight": Opaque()}
        expected = ["cannot read", "w.pt"]
    else:
        state = [torch.zeros(2)]
        expected = ["does not hold a state_dict"]
    torch.save(state, path)
    fresh = tmp_path / "fresh"
    for target in (out, fresh):
        rc = main(["compile", spec_file(SMALL), "--target", "llvm", "--weights", str(path),
                   "-o", str(target)])  # fmt: skip
        assert rc == 1
        err = capsys.readouterr().err
        assert "E0601" in err
        for text in expected:
            assert text in err
    assert snapshot(out) == before
    assert not fresh.exists()


def test_safetensors_with_a_missing_key(spec_file, tmp_path, capsys):
    from safetensors.torch import save_file

    state = _state(resdsl.loads(SMALL))
    del state["fc.bias"]
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    out = tmp_path / "out"
    rc = main(["compile", spec_file(SMALL), "--target", "llvm", "--weights", str(path),
               "-o", str(out)])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "`fc.bias`" in err and "(5,)" in err
    assert not out.exists()


def test_unsupported_op_names_op_and_target(spec_file, previous, monkeypatch, capsys):
    out, before = previous
    monkeypatch.delitem(lower.EMITTERS, "relu")
    path = spec_file(SMALL)
    assert main(["compile", path, "--target", "llvm", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "`relu`" in err
    assert "tvm" in err
    assert "net.res:3:" in err  # located at the relu
    assert snapshot(out) == before


def _no_temporaries(directory: pathlib.Path) -> None:
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".model")]


def test_export_failure_keeps_previous_artifact(previous, monkeypatch):
    out, before = previous
    real_build = TVM_PACKAGE.build

    class Failing:
        def __init__(self, executable):
            self.executable = executable

        def export_library(self, path, *args, **kwargs):
            pathlib.Path(path).write_bytes(b"\x7fELF half a library")
            raise RuntimeError("injected export failure")

    monkeypatch.setattr(TVM_PACKAGE, "build", lambda *a, **k: Failing(real_build(*a, **k)))
    net = resdsl.loads(SMALL)
    with pytest.raises(RuntimeError, match="injected export failure"):
        compile_network(net, str(out), BuildOptions("llvm"), seed=1)
    assert snapshot(out) == before
    _no_temporaries(out)


def test_export_failure_into_a_new_directory_leaves_no_files(tmp_path, monkeypatch):
    out = tmp_path / "new"

    def failing_export(self, path, *args, **kwargs):
        raise RuntimeError("injected export failure")

    real_build = TVM_PACKAGE.build

    def build(*args, **kwargs):
        executable = real_build(*args, **kwargs)
        monkeypatch.setattr(type(executable), "export_library", failing_export)
        return executable

    monkeypatch.setattr(TVM_PACKAGE, "build", build)
    with pytest.raises(RuntimeError, match="injected"):
        compile_network(resdsl.loads(SMALL), str(out), BuildOptions("llvm"))
    assert not out.exists() or not list(out.iterdir())


def test_metadata_write_failure_keeps_previous_artifact(previous, monkeypatch):
    out, before = previous

    def failing_write(path, data):
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(BUILD_MODULE, "atomic_write", failing_write)
    with pytest.raises(OSError, match="injected"):
        compile_network(resdsl.loads(SMALL), str(out), BuildOptions("llvm"), seed=1)
    _no_temporaries(out)
    assert snapshot(out) == before


# --- 6. compile --check --------------------------------------------------------------------------


def test_check_llvm(spec_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", spec_file(SMALL), "--target", "llvm", "--check", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line, name in zip(lines, ["output0", "y"], strict=True):
        assert line.startswith(f"check {name}: max abs diff ")
        assert line.endswith(" ok")


@pytest.mark.skipif(HAS_CUDA, reason="checks the behaviour without a GPU")
def test_check_cuda_is_skipped_without_gpu(spec_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", spec_file(SMALL), "--target", "cuda", "--check", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "check skipped" in captured.err
    assert "no CUDA device" in captured.err
    assert "max abs diff" not in captured.out
    assert (out / "model.so").exists()


def test_check_batch_2_with_a_lower_rank_gate(spec_file, tmp_path, capsys):
    path = spec_file("""
        network gate() (x: (4, 5, 5)) {
            g = x -> global_avgpool -> gate: linear(5) -> sigmoid
            return x * g
        }
    """)
    out = tmp_path / "out"
    rc = main(["compile", path, "--target", "llvm", "--batch", "2", "--check", "-o", str(out)])
    assert rc == 0


# --- 7. the runtime alone ------------------------------------------------------------------------

RUNTIME_ONLY = """
import sys
for name in ("torch", "lark", "networkx", "resdsl.api", "resdsl.elaborate"):
    sys.modules[name] = None
{prelude}
import numpy as np
import resdsl.runtime

model = resdsl.runtime.load(sys.argv[1])
x = np.load(sys.argv[2])
for got, want in zip(model(x), np.load(sys.argv[3]).values(), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
import tvm.base
assert tvm.base._RUNTIME_ONLY
assert "tvm.relax" not in sys.modules
print("runtime ok")
"""


def _run_runtime_only(built, tmp_path, prelude=""):
    b = built("small")
    deploy = tmp_path / "deploy"
    shutil.copytree(b.path, deploy)
    assert sorted(os.listdir(deploy)) == ["model.json", "model.so"]  # no spec travels
    xs = inputs_for(b.net, 1, seed=3)
    np.save(tmp_path / "x.npy", xs[0])
    np.savez(tmp_path / "y.npz", *runtime.load(b.path)(*xs))
    script = RUNTIME_ONLY.format(prelude=prelude)
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    return subprocess.run(
        [sys.executable, "-c", script, str(deploy), str(tmp_path / "x.npy"),
         str(tmp_path / "y.npz")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_runtime_only_with_vm_imported(built, tmp_path):
    """Everything but TVM's VM module import works without torch, lark, networkx, compiler."""
    result = _run_runtime_only(built, tmp_path, prelude="import tvm.runtime.vm")
    assert result.returncode == 0, result.stderr
    assert "runtime ok" in result.stdout


def test_runtime_only(built, tmp_path):
    result = _run_runtime_only(built, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "runtime ok" in result.stdout


def test_runtime_rejects_a_wrong_batch(built):
    model = runtime.load(built("small").path)
    with pytest.raises(runtime.ArtifactError) as info:
        model(np.zeros((2, 3, 8, 8), np.float32))
    message = str(info.value)
    assert "(1, 3, 8, 8)" in message
    assert "batch size is fixed" in message
    with pytest.raises(runtime.ArtifactError, match="takes 1 input"):
        model()


def test_runtime_without_model_json(built, tmp_path):
    shutil.copy(built("small").path / "model.so", tmp_path / "model.so")
    with pytest.raises(runtime.ArtifactError, match=r"no model\.json"):
        runtime.load(tmp_path)


# --- 8. resdsl run -------------------------------------------------------------------------------


def test_run_prints_each_output(built, capsys):
    assert main(["run", str(built("small").path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["output0", "y"]
    assert lines[0].startswith("output0: shape (1, 5) float32 mean ")
    assert lines[1].startswith("y: shape (1, 4, 8, 8) float32 mean ")


def test_run_writes_npz_for_two_outputs(built, tmp_path):
    b = built("small")
    x = inputs_for(b.net, 1, seed=5)[0]
    np.save(tmp_path / "x.npy", x)
    y = tmp_path / "y.npz"
    assert main(["run", str(b.path), "--input", f"x={tmp_path / 'x.npy'}", "--output", str(y)]) == 0
    with np.load(y) as saved:
        assert sorted(saved.files) == ["output0", "y"]
        expected = reference(b.module, [x])
        np.testing.assert_allclose(saved["output0"], expected[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(saved["y"], expected[1], rtol=1e-4, atol=1e-5)
    assert main(["run", str(b.path), "--output", str(tmp_path / "y.npy")]) == 2


CUDA_RUNTIME_ONLY = """
import tvm, tvm.runtime.vm
import resdsl.runtime as rt
from tvm.target import Target, _ffi_api
assert tvm.base._RUNTIME_ONLY and not hasattr(_ffi_api, "TargetCurrent")
try:
    rt._cuda_runtime(tvm)
    print("cuda library loaded")
except rt.ArtifactError as e:  # no driver here
    assert "TVM's CUDA runtime" in str(e), e
    print("no cuda library")
# TVM's CUDA compile hook asks for the current target: without the compiler library that
# raised AttributeError on a GPU machine; now it is None, and the GPU present decides
assert Target.current(allow_none=True) is None
print("shim ok")
"""


def test_runtime_only_cuda_shim(tmp_path):
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    result = subprocess.run(
        [sys.executable, "-c", CUDA_RUNTIME_ONLY], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "shim ok" in result.stdout
    if not HAS_CUDA:
        assert "no cuda library" in result.stdout
