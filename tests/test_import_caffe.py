"""Importing Caffe deploy.prototxt files (resdsl.importers.caffe).

The ResNet-50/101/152 prototxts of the original release (shared/reference/caffe, beside the
repository) are imported, written as specs, and checked: their parameter counts and MACs
equal the ones counted here straight from the prototxt layers, with Caffe's own output-size
arithmetic. A small handwritten net checks the numbers the imported module computes against
a hand-written PyTorch model and against a port of Caffe's pooling loops.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

import resdsl
from resdsl.errors import SpecError, SpecSyntaxError
from resdsl.importers import import_graph
from resdsl.importers.caffe import (
    Message,
    Word,
    import_prototxt,
    import_prototxt_text,
    parse_prototxt,
)
from resdsl.importers.graph import ModelImportError
from resdsl.importers.writer import write_flat

CAFFE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "caffe"
RESNETS = ["ResNet-50", "ResNet-101", "ResNet-152"]


def prototxt(name: str) -> Path:
    path = CAFFE / f"{name}-deploy.prototxt"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


# --- an independent count -----------------------------------------------------------------


def _first(msg: Message, name: str, default=None):
    found = msg.all(name)
    return found[0].value if found else default


def caffe_counts(path: Path) -> tuple[int, int]:
    """Learnable parameters and MACs of a deploy net, counted from its layers with Caffe's
    shape rules (conv: floor; pooling: ceil, less a window starting in the padding)."""
    net = parse_prototxt(path.read_text(), str(path))
    dims = [f.value for f in net.all("input_dim")]
    blobs = {_first(net, "input"): tuple(dims[1:])}
    params = macs = 0
    for f in net.all("layer"):
        layer = f.value
        kind, bottom = _first(layer, "type"), _first(layer, "bottom")
        top = _first(layer, "top")
        x = blobs[bottom]
        if kind == "Convolution":
            p = _first(layer, "convolution_param")
            out, k = _first(p, "num_output"), _first(p, "kernel_size")
            s, pad, g = _first(p, "stride", 1), _first(p, "pad", 0), _first(p, "group", 1)
            h, w = ((size + 2 * pad - k) // s + 1 for size in x[1:])
            bias = _first(p, "bias_term", Word("true")) == "true"
            params += out * x[0] // g * k * k + (out if bias else 0)
            macs += out * h * w * x[0] // g * k * k
            blobs[top] = (out, h, w)
        elif kind == "Scale":  # gamma and beta; the BatchNorm before it learns nothing
            bias = _first(_first(layer, "scale_param"), "bias_term", Word("false")) == "true"
            params += x[0] * (2 if bias else 1)
            blobs[top] = x
        elif kind == "Pooling":
            p = _first(layer, "pooling_param")
            k, s, pad = _first(p, "kernel_size"), _first(p, "stride", 1), _first(p, "pad", 0)
            sizes = []
            for size in x[1:]:
                n = math.ceil((size + 2 * pad - k) / s) + 1
                if pad and (n - 1) * s >= size + pad:
                    n -= 1
                sizes.append(n)
            blobs[top] = (x[0], *sizes)
        elif kind == "InnerProduct":
            out = _first(_first(layer, "inner_product_param"), "num_output")
            fan_in = math.prod(x)
            params += fan_in * out + out
            macs += fan_in * out
            blobs[top] = (out,)
        else:  # BatchNorm, ReLU, Eltwise, Softmax: the shape of the (first) bottom
            blobs[top] = x
    return params, macs


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_imports_with_the_counts_of_its_layers(name, tmp_path, capsys):
    path = prototxt(name)
    graph = import_prototxt(str(path))
    assert graph.name == name and graph.inputs == [("data", (3, 224, 224))]
    text = write_flat(graph)
    net = resdsl.loads(text)
    params, macs = caffe_counts(path)
    with capsys.disabled():
        print(f"\n{name}: {net.num_params:,} params ({params:,} counted), "
              f"{net.macs:,} MACs ({macs:,} counted)")  # fmt: skip
    assert (net.num_params, net.macs) == (params, macs)
    assert net.output_shapes == {next(iter(net.output_shapes)): (1000,)}
    spec = tmp_path / f"{name}.res"
    spec.write_text(text)
    from resdsl.cli import main

    assert main(["check", str(spec)]) == 0
    # the state_dict keys are the Caffe layer names; BatchNorm+Scale is one layer
    labels = {c.label for c in graph.calls if c.label}
    assert {"conv1", "bn_conv1", "res2a_branch1", "bn2a_branch1", "fc1000"} <= labels
    assert not any(c.label and c.label.startswith("scale") for c in graph.calls)
    conv1 = next(c for c in graph.calls if c.label == "conv1")
    assert conv1.source == f"{path}:8"  # its `layer {`


def test_resnet50_matches_the_paper():
    params, macs = caffe_counts(prototxt("ResNet-50"))
    assert 3.8e9 <= macs < 3.9e9  # "3.8 x 10^9 FLOPs" (multiply-adds), Table 1
    assert params == 25_557_032 + 64  # torchvision's ResNet-50, and conv1's bias


def test_import_graph_dispatches_on_the_suffix():
    path = prototxt("ResNet-50")
    assert len(import_graph(str(path)).calls) == len(import_prototxt(str(path)).calls)


def test_resnet50_compiles_for_llvm(tmp_path):
    pytest.importorskip("tvm")
    from resdsl.cli import main

    spec = tmp_path / "resnet50.res"
    spec.write_text(write_flat(import_prototxt(str(prototxt("ResNet-50")))))
    assert main(["compile", str(spec), "--target", "llvm", "-o", str(tmp_path / "out")]) == 0


# --- a small net, numerically -------------------------------------------------------------

TINY = """\
name: "tiny"
input: "data"
input_shape { dim: 2 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1/3x3" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
        batch_norm_param { use_global_stats: true eps: 0.001 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
        scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
# 12 -> 6 rounding up (5 rounding down)
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
# 6 -> 4 rounding up (3 down); the last window covers a row, the padding and past it
layer { name: "pool2" type: "Pooling" bottom: "pool1" top: "pool2"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc"
        inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def caffe_pool(x, kernel: int, stride: int, pad: int, ave: bool):
    """Caffe's PoolingLayer<Dtype>::Forward_cpu (and Reshape's output size), in numpy."""
    import numpy as np

    n, c, h, w = x.shape
    size = [math.ceil((d + 2 * pad - kernel) / stride) + 1 for d in (h, w)]
    if pad:
        size = [
            s - 1 if (s - 1) * stride >= d + pad else s for s, d in zip(size, (h, w), strict=True)
        ]
    out = np.zeros((n, c, *size), dtype=np.float64)
    for ph in range(size[0]):
        for pw in range(size[1]):
            hs, ws = ph * stride - pad, pw * stride - pad
            if ave:
                he, we = min(hs + kernel, h + pad), min(ws + kernel, w + pad)
                count = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                out[:, :, ph, pw] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / count
            else:
                he, we = min(hs + kernel, h), min(ws + kernel, w)
                hs, ws = max(hs, 0), max(ws, 0)
                out[:, :, ph, pw] = x[:, :, hs:he, ws:we].max(axis=(2, 3))
    return out


def test_tiny_net_matches_torch_and_caffe_pooling():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    graph = import_prototxt_text(TINY, "tiny.prototxt")
    assert [c.op for c in graph.calls] == [
        "conv2d", "batchnorm2d", "relu", "maxpool2d", "avgpool2d", "flatten", "linear",
        "softmax",
    ]  # fmt: skip
    bn = graph.calls[1]
    assert bn.label == "bn1" and bn.attrs == {"eps": 0.001} and bn.source == "tiny.prototxt:6"
    assert graph.calls[0].label == "conv1_3x3"
    net = resdsl.loads(write_flat(graph))
    model = net.to_torch().eval()

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1_3x3 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8, eps=1e-3)
            self.fc = nn.Linear(8 * 4 * 4, 5)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1_3x3(x)))
            x = nn.functional.max_pool2d(x, 3, stride=2, ceil_mode=True)
            x = nn.functional.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
            return torch.softmax(self.fc(x.flatten(1)), dim=1)

    torch.manual_seed(1)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5 if "var" in key else
                            torch.randn_like(value))  # fmt: skip
    reference = Reference().eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        got = model(x)
        assert got.shape == (2, 5)
        torch.testing.assert_close(got, reference(x))
        # the pools against Caffe's own loops, on the map after the ReLU
        feature = torch.relu(reference.bn1(reference.conv1_3x3(x))).double().numpy()
        pooled = caffe_pool(caffe_pool(feature, 3, 2, 0, ave=False), 3, 2, 1, ave=True)
        assert pooled.shape == (2, 8, 4, 4)
        logits = torch.from_numpy(pooled).float().flatten(1) @ reference.fc.weight.T
        torch.testing.assert_close(got, torch.softmax(logits + reference.fc.bias, dim=1))


def test_blobs_follow_their_last_writer():
    text = """
    input: "x" input_dim: 1 input_dim: 4 input_dim: 8 input_dim: 8
    layer { name: "c" type: "Convolution" bottom: "x" top: "y"
            convolution_param { num_output: 4 kernel_size: 1 bias_term: false } }
    layer { name: "split" type: "Split" bottom: "y" top: "y1" top: "y2" }
    layer { name: "r" type: "ReLU" bottom: "y1" top: "y1" }
    layer { name: "sum" type: "Eltwise" bottom: "x" bottom: "x" top: "x2" }
    layer { name: "sum" type: "Eltwise" bottom: "y1" bottom: "y2" top: "s" }
    layer { name: "g" type: "Pooling" bottom: "s" top: "g" pooling_param { pool: AVE global_pooling: true } }
    layer { name: "cat" type: "Concat" bottom: "g" bottom: "g" top: "cat" }
    layer { name: "drop" type: "Dropout" bottom: "s" top: "d" dropout_param { dropout_ratio: 0.25 } }
    layer { name: "trainonly" type: "Accuracy" bottom: "d" top: "acc" include { phase: TRAIN } }
    """  # noqa: E501
    graph = import_prototxt_text(text, "net.prototxt")
    ops = {c.id: (c.op, c.inputs, c.attrs) for c in graph.calls}
    assert ops["r"] == ("relu", ["c"], {})
    assert ops["sum_2"] == ("add", ["r", "c"], {})  # the ReLU wrote y1, not y2
    assert ops["g"][0] == "adaptive_avgpool2d"  # a Concat reads it: it keeps (C, 1, 1)
    assert ops["cat"] == ("concat", ["g", "g"], {"axis": 0})
    assert ops["drop"] == ("dropout", ["sum_2"], {"p": 0.25})
    assert graph.outputs == ["sum", "cat", "drop"]  # x2, then the blobs nothing reads
    net = resdsl.loads(write_flat(graph))
    assert list(net.output_shapes.values()) == [(4, 8, 8), (8, 1, 1), (4, 8, 8)]


def test_batchnorm_alone_and_global_pooling():
    text = """
    input: "x" input_shape { dim: 1 dim: 4 dim: 6 dim: 5 }
    layer { name: "bn" type: "BatchNorm" bottom: "x" top: "b" }
    layer { name: "gmax" type: "Pooling" bottom: "b" top: "m"
            pooling_param { pool: MAX global_pooling: true } }
    layer { name: "gave" type: "Pooling" bottom: "b" top: "a"
            pooling_param { pool: AVE global_pooling: true } }
    layer { name: "fc" type: "InnerProduct" bottom: "a" top: "fc"
            inner_product_param { num_output: 3 bias_term: false } }
    layer { name: "prod" type: "Eltwise" bottom: "m" bottom: "m" bottom: "m" top: "p"
            eltwise_param { operation: PROD } }
    """
    graph = import_prototxt_text(text)
    calls = [(c.op, c.attrs, c.label) for c in graph.calls]
    assert calls == [
        ("batchnorm2d", {"eps": 1e-5, "affine": False}, "bn"),
        ("maxpool2d", {"kernel": (6, 5), "stride": 1}, None),
        ("global_avgpool", {}, None),  # only an InnerProduct reads it: no flatten
        ("linear", {"out_features": 3, "bias": False}, "fc"),
        ("mul", {}, None),
        ("mul", {}, None),
    ]
    net = resdsl.loads(write_flat(graph))
    assert list(net.output_shapes.values()) == [(3,), (4, 1, 1)]
    assert net.num_params == 4 * 3  # a BatchNorm without its Scale learns nothing
    # a Scale that is not the only reader of the BatchNorm's output is not fused
    text = text.replace('bottom: "b" top: "m"', 'bottom: "x" top: "m"').replace(
        'layer { name: "gmax"',
        'layer { name: "s" type: "Scale" bottom: "b" top: "s" scale_param { bias_term: true } }'
        '\n    layer { name: "gmax"',
    )
    with pytest.raises(ModelImportError, match="Scale"):
        import_prototxt_text(text)


# --- errors -------------------------------------------------------------------------------

UNSUPPORTED = """\
input: "data"
input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "norm" type: "LRN" bottom: "conv" top: "norm" }
layer { name: "pool" type: "Pooling" bottom: "norm" top: "pool"
        pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 } }
layer { name: "scaled" type: "Eltwise" bottom: "conv" bottom: "conv" top: "s"
        eltwise_param { coeff: 0.5 coeff: 0.5 } }
layer { name: "relu" type: "ReLU" bottom: "s" top: "s" }
"""


def test_unsupported_layers_are_reported_together():
    with pytest.raises(ModelImportError) as info:
        import_prototxt_text(UNSUPPORTED, "bad.prototxt")
    e = info.value
    assert isinstance(e, SpecError)
    assert [(u.where, u.what) for u in e.items] == [
        ("bad.prototxt:5 (layer norm)", "Caffe layer type LRN"),
        ("bad.prototxt:6 (layer pool)", "Pooling `pool: STOCHASTIC`"),
        ("bad.prototxt:8 (layer scaled)", "Eltwise SUM with `coeff` [0.5, 0.5]"),
    ]
    assert "bad.prototxt:5 (layer norm): Caffe layer type LRN" in str(e)


def test_unsupported_parameters_and_forms(tmp_path):
    cases = {
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 2 kernel_size: 1 kernel_size: 1 kernel_size: 1 } }":
            "Convolution over 3 spatial axes",
        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" relu_param '
        "{ negative_slope: 0.1 } }": "ReLU with `negative_slope` (leaky ReLU)",
        'layer { name: "s" type: "Scale" bottom: "data" top: "s" }':
            "Caffe layer type Scale without `bias_term: true`",
        'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param '
        "{ kernel_size: 1 stride: 3 } }": "Pooling whose last window starts past the input "
            "(Caffe gives it an extra row or column)",
        'layer { name: "q" type: "Pooling" bottom: "data" top: "q" pooling_param '
        "{ kernel_size: 2 pad: 1 frobnicate: 1 } }": "Pooling parameter `frobnicate`",
    }  # fmt: skip
    for layer, what in cases.items():
        text = f'input: "data" input_shape {{ dim: 1 dim: 2 dim: 5 dim: 5 }}\n{layer}\n'
        with pytest.raises(ModelImportError) as info:
            import_prototxt_text(text, "x.prototxt")
        assert [u.what for u in info.value.items] == [what], layer
    with pytest.raises(ModelImportError, match="V1 net format"):
        import_prototxt_text('input: "data"\nlayers { type: CONVOLUTION }\n', "v1.prototxt")


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ('name: "x"\nlayer {\n  type: \n}\n', 4, 1, "unexpected `}`"),
        ('layer {\n  name: "x\n}\n', 2, 9, "unexpected character"),
        ("layer {\n  name: 'x'\n", 2, 12, "unexpected end of file"),
        ("input_dim: 3\ninput_dim 4\n", 2, 11, "unexpected `4`"),
        ("a: 1\n  b: @\n", 2, 6, "unexpected character '@'"),
    ],
)
def test_syntax_errors_are_located(text, line, column, message):
    with pytest.raises(SpecSyntaxError) as info:
        parse_prototxt(text, "net.prototxt")
    e = info.value
    assert (e.path, e.line, e.column) == ("net.prototxt", line, column)
    assert message in e.message
    assert resdsl.render(e).startswith(f"net.prototxt:{line}:{column}: error[E0101]")


def test_the_text_format():
    msg = parse_prototxt(
        "a: 'x\\n' \"y\"; b: -1.5e1f, c: 0x1F d: 017 e: -inf\n"
        "m < n: [1, 2] > m: { } l: [{ k: 1 }, { k: 2 }] # a comment\n",
        "t.prototxt",
    )
    values = [(f.name, f.value) for f in msg.fields if not isinstance(f.value, Message)]
    assert values == [("a", "x\ny"), ("b", -15.0), ("c", 31), ("d", 15), ("e", "-inf")]
    assert isinstance(msg.get("e").value, Word)
    (first, second) = msg.all("m")
    assert [f.value for f in first.value.all("n")] == [1, 2] and not second.value.fields
    assert [f.value.get("k").value for f in msg.all("l")] == [1, 2]
    assert msg.all("m")[0].span.line == 2


def test_bad_values_are_located():
    base = 'input: "data" input_shape { dim: 1 dim: 2 dim: 5 dim: 5 }\n'
    cases = [
        ('layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
         '  convolution_param { num_output: "eight" kernel_size: 1 } }', 3, "num_output"),
        ('layer { name: "c" type: "ReLU" bottom: "dat" top: "c" }', 2, "`dat`"),
        ('layer { name: "c" type: "Pooling" bottom: "data" top: "c"\n'
         "  pooling_param { kernel_size: 9 } }", 2, "empty output"),
        ('layer { name: "c" type: "Pooling" bottom: "data" top: "c"\n'
         "  pooling_param { pool: MAX pool: AVE kernel_size: 1 } }", 3, "given 2 times"),
    ]  # fmt: skip
    for layer, line, words in cases:
        with pytest.raises(SpecError) as info:
            import_prototxt_text(base + layer, "v.prototxt")
        assert info.value.line == line and words in info.value.message, layer
    with pytest.raises(SpecError, match="no such file"):
        import_prototxt("/nonexistent/deploy.prototxt")


def test_limits():
    with pytest.raises(SpecError, match="nested more than"):
        parse_prototxt("m {" * 200 + "}" * 200)
    with pytest.raises(SpecError, match="more than 100 characters"):
        parse_prototxt("n: " + "9" * 5000)
    start = time.process_time()
    parse_prototxt('layer { name: "x" type: "ReLU" }\n' * 2000)
    assert time.process_time() - start < 10


# --- fuzzing ------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


def _survives(text: str) -> None:
    try:
        graph = import_prototxt_text(text, "fuzz.prototxt")
        resdsl.loads(write_flat(graph))
    except SpecError:
        pass


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    st.lists(
        st.tuples(
            st.integers(0, len(TINY)),
            st.integers(0, 3),
            st.sampled_from([*"{}<>[]:;,\"'#-.0123456789eEx \nabcMAXAVE", "layer {"]),
        ),
        max_size=6,
    )
)
def test_fuzz_mutated_prototxt(mutations):
    text = TINY
    for at, cut, insert in mutations:
        at = min(at, len(text))
        text = text[:at] + insert + text[at + cut :]
    _survives(text)


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(st.text(max_size=200))
def test_fuzz_random_text(text):
    _survives(text)
