"""The ONNX backend: parity of ONNX Runtime with the PyTorch backend on every op, the shapes of
ONNX's own strict shape inference against the IR's, readable names (nodes after the IR,
initializers after the state_dict), dynamic and fixed batch, torchvision's resnet18, and the
command line (exit codes, ``--check``, no partial file on failure).
"""

import importlib
import os
import textwrap

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import resdsl  # noqa: E402
from resdsl.backends import onnx as backend  # noqa: E402
from resdsl.cli import main  # noqa: E402
from resdsl.weights import check, from_module  # noqa: E402

from .backend_specs import BAD_SPEC, SMALL, TOKENS  # noqa: E402
from .conftest import EXAMPLES  # noqa: E402

# PyTorch's own note on the reference side of an even "same" kernel, not about this backend.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

# --- specs covering every op ---------------------------------------------------------------------

# conv2d: stride, explicit/"same"/"valid" padding with odd and even kernels, dilation, groups,
# bias on and off; batch norm after a conv, after a relu, after an add, eps, affine=false.
CONV = """
network conv() (x: (4, 9, 9)) {
    a = x -> c1: conv2d(6, 3, stride=2, padding=1, bias=false)
    b = x -> c2: conv2d(4, 4, padding="same") -> b2: batchnorm2d
    c = x -> c3: conv2d(4, 3, padding="same", dilation=2, bias=false) -> b3: batchnorm2d
    d = x -> c4: conv2d(8, 3, stride=(1, 2), padding=(2, 1), groups=2)
    e = x -> c5: conv2d(4, (2, 3), padding="valid", dilation=(2, 1), groups=4, bias=false)
    return a -> relu -> b1: batchnorm2d(eps=0.001), b + c -> b4: batchnorm2d(affine=false), d, e
}
"""

# Pooling in every lowering: ceil_mode where PyTorch drops the last window (m1, a3), extra end
# padding as large as the kernel with dilation (m2: a Pad first), count_include_pad with and
# without padding under ceil_mode (a1, a2: the padding is counted, the extra end is not),
# count_include_pad=false; adaptive pooling that divides the input and that does not; flatten.
POOL = """
network pool() (x: (3, 7, 9), w: (2, 4, 6), z: (2, 9, 9)) {
    m1 = w -> m1: maxpool2d(2, stride=3, padding=1, ceil_mode=true)
    m2 = z -> m2: maxpool2d(2, stride=3, padding=1, dilation=3, ceil_mode=true)
    m3 = x -> m3: maxpool2d(3, stride=2, padding=1)
    a1 = w -> a1: avgpool2d(3, stride=2, padding=1, ceil_mode=true)
    a2 = x -> a2: avgpool2d(2, stride=2, ceil_mode=true)
    a3 = w -> a3: avgpool2d(2, stride=3, padding=1, ceil_mode=true, count_include_pad=false)
    a4 = x -> a4: avgpool2d((2, 3), stride=(2, 1), padding=(1, 1))
    p1 = z -> p1: adaptive_avgpool2d((3, 3))
    p2 = x -> p2: adaptive_avgpool2d((3, 2))
    g = z -> g: adaptive_avgpool2d(1) -> flatten
    return m1, m2, m3, a1, a2, a3, a4, p1, p2, g, x -> global_avgpool, x -> flatten(1)
}
"""


# Gates and arithmetic: a (C, 1, 1) gate, a (W,) gate of lower rank, a highway mix, sub,
# scale_shift in all its forms (x * 1 is an identity), identity, a 3-input add, concat axis 1.
ARITH = """
network arith() (x: (4, 5, 5)) {
    s = x -> adaptive_avgpool2d(1) -> fc: conv2d(4, 1) -> sigmoid
    y = x * s
    g = x -> global_avgpool -> gate: linear(5) -> sigmoid
    t = x -> tc: conv2d(4, 1) -> sigmoid
    h = t * y + (1 - t) * x
    return y * g, h - x, x / 4, -x, x * 0.5 + 1, x * 1, x -> identity -> dropout(0.3),
           add(x, y, h), concat(x, y, axis=1)
}
"""

SPECS = {"conv": CONV, "pool": POOL, "tokens": TOKENS, "arith": ARITH}


# --- helpers -------------------------------------------------------------------------------------


def randomised(net: resdsl.Network) -> torch.nn.Module:
    """``net``'s module in eval mode with no weight left at a constant initial value (batch-norm
    statistics, zero biases, ones of norms, zero parameters), so every weight is exercised."""
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


def inputs_for(net: resdsl.Network, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal((batch, *net.graph.info(name).shape)).astype(np.float32)
        for name in net.graph.inputs
    }


def run_onnx(model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    data = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def run_torch(module: torch.nn.Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*(torch.from_numpy(x) for x in inputs.values()))
    return [y.numpy() for y in (out if isinstance(out, tuple) else (out,))]


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


class Lowered:
    def __init__(self, text: str, batch: int | None):
        self.net = resdsl.loads(textwrap.dedent(text))
        self.module = randomised(self.net)
        self.weights = check(self.net.graph, from_module(self.module))
        self.model = backend.to_onnx(self.net.graph, self.weights, batch=batch)


@pytest.fixture(scope="module")
def lowered():
    cache: dict[tuple[str, int | None], Lowered] = {}

    def get(name: str, batch: int | None = None) -> Lowered:
        if (name, batch) not in cache:
            cache[name, batch] = Lowered(SMALL if name == "small" else SPECS[name], batch)
        return cache[name, batch]

    return get


# --- 1. every op, parity with the PyTorch backend -------------------------------------------------


@pytest.mark.parametrize(("batch", "run_with"), [(None, 1), (None, 3), (2, 2)])
@pytest.mark.parametrize("name", list(SPECS))
def test_parity_with_torch(lowered, name, batch, run_with):
    """Dynamic batch runs with 1 and 3 samples from one model; a fixed batch with its size."""
    low = lowered(name, batch)
    xs = inputs_for(low.net, run_with)
    actual, expected = run_onnx(low.model, xs), run_torch(low.module, xs)
    assert len(actual) == len(expected) == len(low.net.graph.outputs)
    for (out, _), got, want in zip(low.net.graph.outputs, actual, expected, strict=True):
        assert got.shape == want.shape, out
        assert float(np.abs(got - want).max()) <= 1e-5, out


def test_fixed_batch_rejects_another_batch(lowered):
    low = lowered("small", 2)
    assert dims(low.model.graph.input[0]) == [2, 3, 8, 8]
    with pytest.raises(Exception, match="dimension"):
        run_onnx(low.model, inputs_for(low.net, 3))


def test_pooling_lowerings_are_the_intended_ones(lowered):
    """The cases POOL is built for do reach each branch of the pooling emitters."""
    nodes = {n.name: n for n in lowered("pool").model.graph.node}
    attrs = {name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for name, n in nodes.items()}  # fmt: skip
    assert "ceil_mode" not in str(attrs)  # lowered to explicit padding everywhere
    assert nodes["m2/padded"].op_type == "Pad"  # end padding >= kernel
    assert nodes["a1/padded"].op_type == "Pad"  # counted padding, uncounted extra
    assert attrs["a1"]["pads"] == [0, 0, 1, 1] and attrs["a1"]["count_include_pad"] == 0
    assert "a2/padded" not in nodes  # no padding to count
    assert attrs["a2"]["pads"] == [0, 0, 1, 1] and attrs["a2"]["count_include_pad"] == 0
    assert attrs["a4"]["pads"] == [1, 1, 1, 1] and attrs["a4"]["count_include_pad"] == 1
    assert nodes["p1"].op_type == "AveragePool"  # 9 / 3
    assert nodes["p2"].op_type == "MatMul"  # 7 / 3 and 9 / 2: PyTorch's bins
    assert nodes["g"].output == ["g/out"]  # the output `g` is the flatten after it


# --- 2. the checker, and ONNX's own shape inference against the IR --------------------------------


@pytest.mark.parametrize("batch", [None, 2])
@pytest.mark.parametrize("name", list(SPECS))
def test_checker_and_strict_shape_inference(lowered, name, batch):
    low = lowered(name, batch)
    onnx.checker.check_model(low.model, full_check=True)
    graph = low.net.graph
    want = {n.name: [batch or "batch", *graph.info(n.name).shape] for n in graph.nodes()}
    # what the model declares, then what inference derives without those declarations
    bare = onnx.ModelProto()
    bare.CopyFrom(low.model)
    del bare.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True)
    for model in (low.model, inferred):
        g = model.graph
        shapes = {v.name: dims(v) for v in [*g.input, *g.output, *g.value_info]}
        producer = {n.name: n.output[0] for n in g.node}
        for node in graph.nodes():
            value = node.name if node.op == "input" else producer[node.name]
            assert shapes[value] == want[node.name], node.name
        for out, node in graph.outputs:
            assert shapes[out] == want[node], out


@pytest.mark.parametrize("name", list(SPECS))
def test_names_follow_the_ir(lowered, name):
    """One ONNX node per IR node carries its name; helpers are `{IR name}/{step}`; initializers
    are the state_dict keys with the state_dict's values, or `{IR name}/{constant}`."""
    low = lowered(name)
    graph, model = low.net.graph, low.model.graph
    ir_names = [n.name for n in graph.nodes() if n.op != "input"]
    names = [n.name for n in model.node]
    assert [n for n in names if n in set(ir_names)] == ir_names  # once each, in order
    outputs = {out for out, _ in graph.outputs}
    for n in names:
        assert n in set(ir_names) or n.split("/")[0] in graph or n in outputs, n
    state = {k: v for k, v in low.weights.items() if not k.endswith("num_batches_tracked")}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.initializer}
    assert set(state) <= set(inits)
    for key, array in state.items():
        np.testing.assert_array_equal(inits[key], array, err_msg=key)
    assert all(k in state or k.split("/")[0] in graph for k in inits)


EDGE = """
network edge() (x: (2, 3, 3)) {
    fc = x -> c: conv2d(2, 1)
    y = fc -> relu
    return x, y, y, fc, y -> relu
}
"""


def test_outputs_that_are_inputs_repeated_or_named_like_nodes():
    """`return x, y, y, fc`: an input, one node twice, an output named like another node."""
    net = resdsl.loads(EDGE)
    module = randomised(net)
    model = backend.to_onnx(net.graph, check(net.graph, from_module(module)))
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == [out for out, _ in net.graph.outputs]
    xs = inputs_for(net, 2)
    for got, want in zip(run_onnx(model, xs), run_torch(module, xs), strict=True):
        assert float(np.abs(got - want).max()) <= 1e-6


def test_missing_emitter_is_a_located_error(monkeypatch):
    monkeypatch.delitem(backend.EMITTERS, "relu")
    net = resdsl.loads(SMALL, path="small.res")
    with pytest.raises(resdsl.SpecError) as info:
        backend.to_onnx(net.graph, check(net.graph, from_module(net.to_torch())))
    assert "`relu`" in info.value.message and "onnx" in info.value.message
    assert (info.value.line, info.value.column) == (3, 62)  # the `relu`


# --- 3. torchvision's resnet18 through the command line -------------------------------------------


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    """torchvision's resnet18 with random batch-norm statistics, its .pt file, and the model
    written by `resdsl compile --target onnx --weights` (dynamic batch)."""
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.resnet18().eval()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 * torch.rand(c, generator=gen) + 0.75)
                m.weight.copy_(1 + 0.1 * torch.randn(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
    d = tmp_path_factory.mktemp("resnet18")
    torch.save(reference.state_dict(), d / "resnet18.pt")
    path = d / "resnet18.onnx"
    args = ["compile", str(EXAMPLES / "resnet18.res"), "--target", "onnx"]
    assert main([*args, "--weights", str(d / "resnet18.pt"), "-o", str(path)]) == 0
    return reference, str(path)


@pytest.mark.parametrize("batch", [1, 3])
def test_resnet18_matches_torchvision(resnet18, batch):
    reference, path = resnet18
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        want = reference(x).numpy()
    (got,) = run_onnx(path, {"x": x.numpy()})
    assert got.shape == (batch, 1000)
    assert float(np.abs(got - want).max()) <= 1e-4


def test_resnet18_structure(resnet18):
    reference, path = resnet18
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    net = resdsl.load(EXAMPLES / "resnet18.res")
    assert [n.name for n in model.graph.node] == [n.name for n in net.graph.nodes()][1:]
    assert "layer1.0.conv1" in {n.name for n in model.graph.node}
    ops = {n.name: n.op_type for n in model.graph.node}
    assert ops["layer2.0.downsample.1"] == "BatchNormalization"  # kept, not folded
    state = {k for k in reference.state_dict() if not k.endswith("num_batches_tracked")}
    inits = [t.name for t in model.graph.initializer]
    assert [k for k in inits if "/" not in k] == [k for k in reference.state_dict() if k in state]
    assert [k for k in inits if "/" in k] == ["avgpool/axes"]  # ReduceMean's axes
    assert dims(model.graph.input[0]) == ["batch", 3, 224, 224]
    assert dims(model.graph.output[0]) == ["batch", 1000]
    assert model.opset_import[0].version == backend.OPSET
    assert model.producer_name == "resdsl"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["weights"].startswith("file ") and meta["weights"].endswith("resnet18.pt")
    assert meta["spec_sha256"] == net.spec_hash


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.res"))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_example(path, tmp_path):
    """Every example passes the checker and matches the PyTorch backend through onnxruntime
    (`--check`, tolerance 1e-5 + 1e-4 of the largest output). The ImageNet-size ones run at
    a fixed batch of 1 to keep the time down (about a minute for all of them)."""
    out = tmp_path / "m.onnx"
    batch = ["--batch", "1"] if resdsl.load(path).macs >= 1e9 else []
    assert main(["compile", str(path), "--target", "onnx", "--check", *batch, "-o", str(out)]) == 0
    onnx.checker.check_model(str(out), full_check=True)


# --- 4. the command line -------------------------------------------------------------------------


def test_cli_check_and_fixed_batch(spec, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    args = ["compile", spec(SMALL), "--target", "onnx", "-o", str(out)]
    assert main([*args, "--batch", "2", "--check"]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out} (ONNX opset {backend.OPSET}, batch 2)" in captured.err
    lines = captured.out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["check output0", "check y"]
    assert all(" max abs diff " in line and line.endswith(" ok") for line in lines)
    model = onnx.load(str(out))
    assert dims(model.graph.output[1]) == [2, 4, 8, 8]


def test_cli_check_fails_on_a_wrong_model(spec, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(backend.EMITTERS, "relu", backend.EMITTERS["sigmoid"])
    out = tmp_path / "m.onnx"
    assert main(["compile", spec(SMALL), "--target", "onnx", "--check", "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out
    assert "the ONNX model does not match the PyTorch backend" in captured.err


def test_output_is_deterministic(spec, tmp_path):
    path = spec(SMALL)
    for name in ("a.onnx", "b.onnx"):
        assert (
            main(["compile", path, "--target", "onnx", "--seed", "3", "-o", str(tmp_path / name)])
            == 0
        )
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert main(["compile", path, "--target", "onnx", "-o", str(tmp_path / "c.onnx")]) == 0
    assert (tmp_path / "c.onnx").read_bytes() != (tmp_path / "a.onnx").read_bytes()  # the seed


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "give it with -o FILE"),
        (["-o", "-"], "give it with -o FILE"),
        (["-o", "{tmp}"], "is a directory"),
        (["-o", "{tmp}/no/such/m.onnx"], "no such directory"),
        (["-o", "{tmp}/m.onnx", "--cpu", "skylake"], "--cpu applies to --target llvm or cuda"),
        (["-o", "{tmp}/m.onnx", "--arch", "sm_90"], "--arch applies to --target llvm or cuda"),
        (["-o", "{tmp}/m.onnx", "--dtype", "float16"], "float16 is not supported"),
        (["-o", "{tmp}/m.onnx", "--batch", "0"], "--batch must be at least 1"),
    ],
    ids=["no-output", "stdout", "directory", "no-directory", "cpu", "arch", "float16", "batch-0"],
)
def test_usage_errors(spec, tmp_path, capsys, flags, message):
    flags = [f.format(tmp=tmp_path) for f in flags]
    assert main(["compile", spec(SMALL), "--target", "onnx", *flags]) == 2
    assert message in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["net.res"]


def test_missing_onnx_is_a_usage_error(spec, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnx" else real(n, *a)
    )
    assert main(["compile", spec(SMALL), "--target", "onnx", "-o", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'resdsl[onnx]'" in capsys.readouterr().err


@pytest.fixture
def previous(spec, tmp_path):
    """An existing model at tmp_path/m.onnx and its bytes: failures must leave it as it was."""
    out = tmp_path / "m.onnx"
    assert main(["compile", spec(SMALL, "small.res"), "--target", "onnx", "-o", str(out)]) == 0
    return out, out.read_bytes()


def _only(tmp_path, *names):
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporaries


def test_bad_spec_writes_nothing(spec, tmp_path, previous, capsys):
    out, before = previous
    fresh = tmp_path / "fresh.onnx"
    for target in (out, fresh):
        assert main(["compile", spec(BAD_SPEC), "--target", "onnx", "-o", str(target)]) == 1
        err = capsys.readouterr().err
        assert "net.res:3:" in err and "E0301" in err
    assert out.read_bytes() == before
    _only(tmp_path, "m.onnx", "small.res", "net.res")


def test_bad_weights_write_nothing(spec, tmp_path, previous, capsys):
    out, before = previous
    net = resdsl.loads(SMALL)
    state = dict(net.to_torch().state_dict())
    state["fc.weight"] = torch.zeros(5, 3)
    torch.save(state, tmp_path / "w.pt")
    rc = main(["compile", spec(SMALL), "--target", "onnx", "--weights", str(tmp_path / "w.pt"),
               "-o", str(out)])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "E0601" in err and "`fc.weight`" in err and "(5, 3)" in err and "(5, 4)" in err
    assert out.read_bytes() == before


def test_missing_emitter_writes_nothing(spec, tmp_path, previous, monkeypatch, capsys):
    out, before = previous
    monkeypatch.delitem(backend.EMITTERS, "relu")
    assert main(["compile", spec(SMALL), "--target", "onnx", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "net.res:3:" in err and "`relu`" in err and "target onnx" in err
    assert out.read_bytes() == before


def test_weights_too_large_for_one_file_go_beside_it(spec, tmp_path, monkeypatch, capsys):
    """Beyond protobuf's 2 GiB (here: beyond 100 bytes) the weights are ONNX external data
    in `m.onnx.data`; ONNX Runtime and `resdsl import` read the pair, at parity."""
    out = tmp_path / "m.onnx"
    conv = spec(CONV, "conv.res")
    assert main(["compile", conv, "--target", "onnx", "-o", str(out), "--check"]) == 0
    inline = out.read_bytes()
    monkeypatch.setattr(backend, "MAX_BYTES", 100)
    assert main(["compile", conv, "--target", "onnx", "-o", str(out), "--check"]) == 0
    assert " ok" in capsys.readouterr().out
    _only(tmp_path, "m.onnx", "m.onnx.data", "conv.res")
    model = onnx.load(str(out), load_external_data=False)
    external = [t.name for t in model.graph.initializer if t.data_location == 1]
    assert external and all(len(t.raw_data) < 1024 for t in model.graph.initializer)
    assert len(out.read_bytes()) < len(inline)
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 9)).astype(np.float32)
    run = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run
    want = ort.InferenceSession(inline, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for a, b in zip(run(None, {"x": x}), want, strict=True):
        np.testing.assert_array_equal(a, b)  # the same weights
    text = resdsl.import_model(str(out))  # the importer reads the external data too
    assert resdsl.loads(text).num_params == resdsl.load(conv).num_params


def test_failure_while_writing_keeps_the_previous_file(
    spec, tmp_path, previous, monkeypatch, capsys
):
    """A failure of the OS after the temporary file was written (exit 4) keeps the old model."""
    out, before = previous
    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(os, "replace", failing_replace)
    assert main(["compile", spec(SMALL), "--target", "onnx", "--seed", "5", "-o", str(out)]) == 4
    monkeypatch.setattr(os, "replace", real_replace)
    assert "injected" in capsys.readouterr().err
    assert out.read_bytes() == before
    _only(tmp_path, "m.onnx", "small.res", "net.res")
