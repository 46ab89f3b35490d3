"""Importing ONNX models (``resdsl.importers.onnx_model``): zoo networks round-tripped through
resdsl's own ONNX exporter (same parameter count, outputs equal to ONNX Runtime's with the
imported weights loaded strictly), torchvision's resnet18 as PyTorch exports it, one error
naming every unsupported node, malformed and hostile files, and a fuzz of mutated models:
only SpecErrors escape.
"""

import contextlib
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from torch.nn import functional as F  # noqa: E402, N812

import resdsl  # noqa: E402
from resdsl.backends import onnx as backend  # noqa: E402
from resdsl.errors import SpecError  # noqa: E402
from resdsl.importers.graph import ModelImportError  # noqa: E402
from resdsl.importers.onnx_model import import_onnx  # noqa: E402
from resdsl.importers.writer import write_flat  # noqa: E402

FAST = ["resnet18", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5"]


def _reference(path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _imported_output(imported, x):
    """The imported spec built with PyTorch, the imported weights loaded strictly."""
    net = resdsl.loads(write_flat(imported))
    module = net.to_torch().eval()
    state = {k: torch.tensor(np.array(v)) for k, v in imported.weights.items()}
    module.load_state_dict(state, strict=True)
    with torch.no_grad():
        return net, module(torch.from_numpy(x)).numpy()


def _relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _round_trip(name, tmp_path):
    original = resdsl.load(f"zoo:{name}")
    path = str(tmp_path / f"{name}.onnx")
    backend.export(original, path)
    imported = import_onnx(path)
    x = np.random.default_rng(0).standard_normal((2, *imported.inputs[0][1])).astype(np.float32)
    net, out = _imported_output(imported, x)
    assert net.num_params == original.num_params
    assert _relative(out, _reference(path, x)) <= 1e-5


@pytest.mark.parametrize("name", FAST)
def test_zoo_round_trip(name, tmp_path):
    _round_trip(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext_tiny", "efficientnet_b0", "mobilenet_v2"])
def test_zoo_round_trip_slow(name, tmp_path):
    _round_trip(name, tmp_path)


def test_labels_are_the_state_dict_keys(tmp_path):
    """The exporter's initializers are state_dict keys: they come back as labels unchanged."""
    path = str(tmp_path / "r.onnx")
    model = backend.export(resdsl.load("zoo:resnet18"), path)
    imported = import_onnx(path)
    names = {t.name for t in model.graph.initializer if "/" not in t.name}  # not constants
    trainable = {k for k in imported.weights if not k.endswith("num_batches_tracked")}
    assert trainable == names
    assert "layer1.0.conv1" in {c.label for c in imported.calls}


def test_torchvision_export(tmp_path):
    """PyTorch's exporter folds batch norm into the convolutions and names weights
    ``onnx::Conv_*``: labels come from the node names (``/layer1/layer1.0/conv1/Conv``)."""
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18().eval()
    path = str(tmp_path / "tv.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, 3, 224, 224), path, dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})  # fmt: skip
    imported = import_onnx(path)
    labels = {c.label for c in imported.calls if c.label}
    assert {"conv1", "layer1.0.conv1", "fc"} <= labels
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    _, out = _imported_output(imported, x)
    assert _relative(out, _reference(path, x)) <= 1e-5


# --- small graphs ------------------------------------------------------------------------------


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _save(model, tmp_path, name="m.onnx"):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def _info(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_unsupported_ops_reported_together(tmp_path):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Einsum", ["r", "r"], ["e"], name="mix", equation="bij,bij->bij"),
        helper.make_node("LeakyRelu", ["e"], ["l"], name="leaky"),  # reads a bad value: quiet
        helper.make_node("NonMaxSuppression", ["x", "x"], ["n"], name="nms"),
    ]
    model = _model(nodes, [_info("x", ["N", 4, 5])], [_info("l", None), _info("n", None)])
    with pytest.raises(ModelImportError) as e:
        import_onnx(_save(model, tmp_path))
    text = str(e.value)
    assert "node mix (Einsum): ONNX op ai.onnx:Einsum" in text
    assert "node nms (NonMaxSuppression): ONNX op ai.onnx:NonMaxSuppression" in text
    assert [u.where for u in e.value.items] == ["node mix (Einsum)", "node nms (NonMaxSuppression)"]


def test_small_graph_ops(tmp_path):
    """Constant folding of a Shape chain into Reshape, scalars as scale_shift, Clip as relu6
    and clamp, Gemm without transB, a constant-index Gather, Slice, Erf-GELU, Softmax."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((12, 5)).astype(np.float32)  # (in, out): transB=0
    inits = [
        numpy_helper.from_array(w, "fc_w"),
        numpy_helper.from_array(np.asarray([0, -1], np.int64), "tail"),
        numpy_helper.from_array(np.asarray(0, np.int64), "zero"),
        numpy_helper.from_array(np.asarray(2.0, np.float32), "two"),
        numpy_helper.from_array(np.asarray(1.4142135, np.float32), "sqrt2"),
        numpy_helper.from_array(np.asarray(1.0, np.float32), "one"),
        numpy_helper.from_array(np.asarray(0.5, np.float32), "half"),
        numpy_helper.from_array(np.asarray([1], np.int64), "s1"),
        numpy_helper.from_array(np.asarray([3], np.int64), "e3"),
        numpy_helper.from_array(np.asarray([2], np.int64), "ax2"),
        numpy_helper.from_array(np.asarray(1, np.int64), "idx"),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero"], ["n1"]),
        helper.make_node("Slice", ["tail", "s1", "e3"], ["minus1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w"], ["fc"], name="fc"),
        helper.make_node("Mul", ["fc", "two"], ["scaled"]),
        helper.make_node("Clip", ["scaled", "", ""], ["unclipped"]),
        helper.make_node("Div", ["unclipped", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["a"]),
        helper.make_node("Mul", ["unclipped", "a"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["gelu"]),
        helper.make_node("Softmax", ["gelu"], ["soft"], axis=-1),
        helper.make_node("Slice", ["x", "s1", "e3", "ax2"], ["sl"]),
        helper.make_node("Gather", ["sl", "idx"], ["g"], axis=1),
        helper.make_node("Sub", ["one", "g"], ["neg"]),
        helper.make_node("HardSigmoid", ["neg"], ["hs"], alpha=0.3, beta=0.4),
    ]
    model = _model(nodes, [_info("x", ["N", 3, 4])], [_info("soft", None), _info("hs", None)],
                   inits)  # fmt: skip
    path = _save(model, tmp_path)
    imported = import_onnx(path)
    ops = [c.op for c in imported.calls]
    assert "gelu" in ops and "reshape" in ops and "select" in ops and "linear" in ops
    net = resdsl.loads(write_flat(imported))
    module = net.to_torch().eval()
    module.load_state_dict({k: torch.tensor(v) for k, v in imported.weights.items()}, strict=True)
    x = rng.standard_normal((3, 3, 4)).astype(np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})
    with torch.no_grad():
        actual = [t.numpy() for t in module(torch.from_numpy(x))]
    for a, b in zip(actual, expected, strict=True):
        assert _relative(a, b) <= 1e-5


def test_batch_axis_ops_are_unsupported(tmp_path):
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2], name="swap"),
        helper.make_node("Softmax", ["x"], ["s"], axis=0, name="over_batch"),
    ]
    model = _model(nodes, [_info("x", ["N", 3, 4])], [_info("t", None), _info("s", None)])
    with pytest.raises(ModelImportError) as e:
        import_onnx(_save(model, tmp_path))
    assert len(e.value.items) == 2
    assert "batch axis" in str(e.value)


# --- malformed and hostile files ---------------------------------------------------------------


def _valid(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    return _model(nodes, [_info("x", ["N", 3])], [_info("y", ["N", 3])])


@pytest.mark.parametrize(
    "data", [b"", b"not an onnx model at all", b"\x08\x07\x12\xff\xff\xff\xff\x0f"]
)
def test_not_onnx(data, tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelImportError):
        import_onnx(str(path))


def test_truncated_and_missing(tmp_path):
    data = _valid(tmp_path).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelImportError):
        import_onnx(str(path))
    with pytest.raises(ModelImportError, match="cannot read"):
        import_onnx(str(tmp_path / "missing.onnx"))


def test_cycle_and_missing_input(tmp_path):
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
    ]
    model = _model(nodes, [_info("x", ["N", 3])], [_info("b", None)])
    with pytest.raises(ModelImportError, match="cycle"):
        import_onnx(_save(model, tmp_path, "cycle.onnx"))
    nodes = [helper.make_node("Add", ["x", "nowhere"], ["y"], name="add")]
    model = _model(nodes, [_info("x", ["N", 3])], [_info("y", None)])
    with pytest.raises(ModelImportError, match="nowhere"):
        import_onnx(_save(model, tmp_path, "missing.onnx"))


def _external(name, location):
    """A (3,) float tensor whose data is in the file ``location``."""
    w = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[3])
    w.data_location = TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", location
    return w


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_the_directory_is_refused(location, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "secret.bin").write_bytes(np.zeros(3, np.float32).tobytes())
    w = _external("w", location)
    nodes = [helper.make_node("Add", ["x", "w"], ["y"], name="add")]
    model = _model(nodes, [_info("x", ["N", 3])], [_info("y", None)], [w])
    path = _save(model, tmp_path / "model")
    with pytest.raises(ModelImportError, match="outside the model's directory"):
        import_onnx(path)


def test_external_data_inside_the_directory(tmp_path):
    value = np.arange(3, dtype=np.float32)
    (tmp_path / "w.bin").write_bytes(value.tobytes())
    w = _external("w", "w.bin")
    nodes = [helper.make_node("Mul", ["x", "w"], ["y"], name="mul")]
    model = _model(nodes, [_info("x", ["N", 3])], [_info("y", None)], [w])
    imported = import_onnx(_save(model, tmp_path))
    assert np.array_equal(imported.weights["w"].reshape(-1), value)


# --- fuzz --------------------------------------------------------------------------------------

_SEED_BYTES = None


def _seed_bytes():
    global _SEED_BYTES
    if _SEED_BYTES is None:
        net = resdsl.loads(
            """
network small() (x: (3, 8, 8)) {
    y = x -> c: conv2d(4, 3, padding=1) -> b: batchnorm2d -> relu -> maxpool2d(2)
    return y -> flatten -> fc: linear(5) -> softmax
}
"""
        )
        from resdsl.weights import initialise

        model = backend.to_onnx(net.graph, initialise(net.graph))
        _SEED_BYTES = model.SerializeToString()
    return _SEED_BYTES


def _only_spec_errors(path):
    try:
        imported = import_onnx(path)
    except SpecError:
        return
    write_flat(imported)  # what was imported can be written


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzz_mutated_bytes(tmp_path_factory, data):
    raw = bytearray(_seed_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path_factory.mktemp("fuzz") / "m.onnx"
    path.write_bytes(bytes(raw))
    _only_spec_errors(str(path))


_OPS = ["Relu", "Sigmoid", "Add", "Mul", "Sub", "Div", "Transpose", "Softmax", "Flatten",
        "Reshape", "Concat", "ReduceMean", "MaxPool", "AveragePool", "GlobalAveragePool",
        "Clip", "Gather", "Slice", "Unsqueeze", "Squeeze", "Einsum", "Tanh", "MatMul"]  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzz_random_graphs(tmp_path_factory, data):
    """Random small graphs of random ops with random attributes and constant operands."""
    rank = data.draw(st.integers(2, 4))
    shape = ["N", *data.draw(st.lists(st.integers(1, 4), min_size=rank - 1, max_size=rank - 1))]
    values, nodes, inits = ["x"], [], []
    for k in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(_OPS))
        ins = [data.draw(st.sampled_from(values))]
        if op in ("Add", "Mul", "Sub", "Div", "Concat", "MatMul", "Einsum", "Reshape", "Gather",
                  "Slice", "Unsqueeze", "Squeeze"):  # fmt: skip
            if data.draw(st.booleans()) and op not in ("Reshape", "Gather", "Slice", "Unsqueeze",
                                                       "Squeeze"):  # fmt: skip
                ins.append(data.draw(st.sampled_from(values)))
            else:
                ints = op in ("Reshape", "Gather", "Slice", "Unsqueeze", "Squeeze")
                arr = np.asarray(
                    data.draw(st.lists(st.integers(-3, 4), min_size=1, max_size=4)),
                    np.int64 if ints else np.float32,
                )
                name = f"c{k}"
                inits.append(numpy_helper.from_array(arr, name))
                ins.append(name)
                if op == "Slice":
                    inits.append(numpy_helper.from_array(arr + 2, f"e{k}"))
                    ins.append(f"e{k}")
        attrs = {}
        if op in ("Softmax", "Flatten", "Concat", "Gather"):
            attrs["axis"] = data.draw(st.integers(-3, 3))
        if op == "Transpose":
            attrs["perm"] = data.draw(st.permutations(range(rank)))
        if op in ("MaxPool", "AveragePool"):
            attrs["kernel_shape"] = [data.draw(st.integers(1, 3))] * 2
            attrs["pads"] = data.draw(st.lists(st.integers(0, 2), min_size=4, max_size=4))
            attrs["ceil_mode"] = data.draw(st.integers(0, 1))
        if op == "Einsum":
            attrs["equation"] = "...,...->..."
        out = f"v{k}"
        nodes.append(helper.make_node(op, ins, [out], name=f"n{k}", **attrs))
        values.append(out)
    model = _model(nodes, [_info("x", shape)], [_info(values[-1], None)], inits)
    path = tmp_path_factory.mktemp("graphs") / "g.onnx"
    path.write_bytes(model.SerializeToString())
    try:
        imported = import_onnx(str(path))
    except SpecError:
        return
    with contextlib.suppress(SpecError):  # a graph the spec refuses is a SpecError too
        resdsl.loads(write_flat(imported))


# --- values whose batch is not their first axis ------------------------------------------------


def _export(module, shape, tmp_path, name="m.onnx"):
    """``module`` exported as torch.onnx.export writes it, the batch axis dynamic."""
    path = str(tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.randn(2, *shape), path, dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})  # fmt: skip
    return path


class _ClassTokenAttention(torch.nn.Module):
    """ViT's pattern: a class token expanded over the batch, batch-first self-attention
    (exported with the batch behind the tokens, (L, B, E), and merged with the heads,
    (B * H, L, d)), the class token's row out."""

    def __init__(self):
        super().__init__()
        self.class_token = torch.nn.Parameter(torch.randn(1, 1, 16))
        self.attention = torch.nn.MultiheadAttention(16, 4, batch_first=True)
        self.norm = torch.nn.LayerNorm(16)

    def forward(self, x):
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        y, _ = self.attention(x, x, x, need_weights=False)
        return self.norm(x + y)[:, 0]


class _Windows(torch.nn.Module):
    """Swin's and MaxViT's patterns: padding to whole windows with sizes read from the
    shape, windows moved into the batch axis, a mask built by slice assignment, einsum
    attention, the windows put back and the padding cropped."""

    def __init__(self, window=3):
        super().__init__()
        self.window = window
        self.qkv = torch.nn.Linear(8, 24)

    def forward(self, x):
        b, h, w, c = x.shape
        k = self.window
        x = torch.nn.functional.pad(x, (0, 0, 0, (k - w % k) % k, 0, (k - h % k) % k))
        hp, wp = x.shape[1], x.shape[2]
        x = x.view(b, hp // k, k, wp // k, k, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(-1, k * k, c)  # (B * windows, k * k, C)
        mask = x.new_zeros((k * k, k * k))
        mask[:k, k:] = -100.0
        mask[k:, :k] = -100.0
        q, kk, v = self.qkv(x).chunk(3, dim=-1)
        attn = torch.einsum("bic,bjc->bij", q, kk) + mask
        y = torch.einsum("bij,bjc->bic", attn.softmax(-1), v)
        y = y.view(b, hp // k, wp // k, k, k, c).permute(0, 1, 3, 2, 4, 5)
        return y.reshape(b, hp, wp, c)[:, :h, :w, :]


class _CosineAttention(torch.nn.Module):
    """Swin V2's attention: F.normalize'd queries and keys (ReduceL2, Clip, Expand), a
    clamped logit scale and a position MLP on a constant table (folded), heads merged
    with the batch."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(8, 24)
        self.logit_scale = torch.nn.Parameter(torch.log(10 * torch.rand(2, 1, 1) + 1))
        self.mlp = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 2))  # fmt: skip
        self.register_buffer("table", torch.randn(1, 5, 5, 2), persistent=False)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=4.6).exp()
        bias = self.mlp(self.table).view(-1, 2)[: n * n].view(n, n, 2).permute(2, 0, 1)
        attn = (attn + 16 * torch.sigmoid(bias)).softmax(-1)
        return (attn @ v).transpose(1, 2).reshape(b, n, c)


@pytest.mark.parametrize(
    ("module", "shape"),
    [(_ClassTokenAttention, (5, 16)), (_Windows, (7, 8, 8)), (_CosineAttention, (4, 8))],
)
def test_batch_behind_other_axes(module, shape, tmp_path):
    torch.manual_seed(0)
    path = _export(module(), shape, tmp_path)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    imported = import_onnx(path)
    x = np.random.default_rng(2).standard_normal((3, *shape)).astype(np.float32)
    _, out = _imported_output(imported, x)
    assert _relative(out, _reference(path, x)) <= 1e-5
    if module is _Windows:
        assert {"Pad", "Einsum", "ScatterND", "Mod"} <= ops
    elif module is _CosineAttention:
        assert {"ReduceL2", "Clip", "Expand"} <= ops
    else:
        assert {"Expand", "Transpose"} <= ops


def test_a_reshape_that_mixes_samples_is_refused(tmp_path):
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2], name="swap"),
        helper.make_node("Reshape", ["t", "shape"], ["r"], name="mix"),
    ]
    shape = numpy_helper.from_array(np.asarray([3, -1], np.int64), "shape")
    model = _model(nodes, [_info("x", [2, 3, 4])], [_info("r", None)], [shape])
    with pytest.raises(ModelImportError) as e:
        import_onnx(_save(model, tmp_path))
    assert "node mix (Reshape)" in str(e.value)


def test_shared_initializers_do_not_name_their_users(tmp_path):
    """PyTorch's exporter keeps one copy of equal initializers (an untrained model's zero
    biases) and reads it through Identity nodes: each layer is named after its node."""
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),  # folded: a zero bias
        nn.BatchNorm2d(4),  # kept: its zero bias is the initializer they share
        nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4),
    )  # fmt: skip
    path = _export(model, (3, 9, 9), tmp_path)
    graph = onnx.load(path).graph
    assert "Identity" in {n.op_type for n in graph.node}
    assert "3.bias" in {t.name for t in graph.initializer}
    imported = import_onnx(path)
    assert [c.label for c in imported.calls if c.op == "conv2d"] == ["0", "4"]
