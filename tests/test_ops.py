"""Table tests for the op table: shape rules, parameter counts and MACs, worked by hand."""

import pytest

from resdsl.ops import OPS, OpShapeError, projection_hint, projection_stride


def run(op, inputs, *args, **kwargs):
    entry = OPS[op]
    attrs = entry.bind(args, kwargs)
    out = entry.shape(attrs, inputs)
    return out, entry.params(attrs, inputs, out), entry.count_macs(attrs, inputs, out)


@pytest.mark.parametrize(
    ("inputs", "args", "kwargs", "shape", "params", "macs"),
    [
        # 7x7/2 stem of ResNet: floor((224 + 6 - 7) / 2) + 1 = 112
        ([(3, 224, 224)], (64, 7), {"stride": 2, "padding": 3, "bias": False},
         (64, 112, 112), 64 * 3 * 49, 64 * 112 * 112 * 3 * 49),
        # 3x3 with bias, no padding: 32 - 2 = 30
        ([(16, 32, 32)], (8, 3), {}, (8, 30, 30), 8 * 16 * 9 + 8, 8 * 30 * 30 * 16 * 9),
        # grouped: each output channel sees 16 / 4 = 4 input channels
        ([(16, 8, 8)], (32, 3), {"padding": 1, "groups": 4},
         (32, 8, 8), 32 * 4 * 9 + 32, 32 * 8 * 8 * 4 * 9),
        # depthwise
        ([(16, 8, 8)], (16, 3), {"padding": 1, "groups": 16, "bias": False},
         (16, 8, 8), 16 * 9, 16 * 8 * 8 * 9),
        # dilation 2: effective kernel 5 -> 10 - 4 = 6
        ([(1, 10, 10)], (1, 3), {"dilation": 2}, (1, 6, 6), 10, 36 * 9),
        # rectangular kernel and stride: h = (9 - 3) // 2 + 1 = 4, w = (9 - 1) // 1 + 1 = 9
        ([(2, 9, 9)], (4, (3, 1)), {"stride": (2, 1)}, (4, 4, 9), 4 * 2 * 3 + 4, 4 * 4 * 9 * 2 * 3),
        # "same" keeps H and W at stride 1
        ([(3, 17, 13)], (5, 3), {"padding": "same"}, (5, 17, 13), 5 * 3 * 9 + 5, 5 * 17 * 13 * 27),
    ],
)  # fmt: skip
def test_conv2d(inputs, args, kwargs, shape, params, macs):
    assert run("conv2d", inputs, *args, **kwargs) == (shape, params, macs)


@pytest.mark.parametrize(
    ("inputs", "kwargs", "message"),
    [
        ([(3, 8, 8)], {"groups": 2}, "groups=2 must divide"),
        ([(8,)], {}, "rank 3"),
        ([(3, 2, 2)], {}, "empty output"),
        ([(3, 8, 8)], {"padding": "same", "stride": 2}, "stride 1"),
    ],
)
def test_conv2d_errors(inputs, kwargs, message):
    with pytest.raises(OpShapeError, match=message):
        run("conv2d", inputs, 4, 3, **kwargs)


def test_batchnorm_and_linear():
    assert run("batchnorm2d", [(64, 7, 7)]) == ((64, 7, 7), 128, 0)
    assert run("batchnorm2d", [(64, 7, 7)], affine=False) == ((64, 7, 7), 0, 0)
    assert run("linear", [(2048,)], 1000) == ((1000,), 2048 * 1000 + 1000, 2048 * 1000)
    assert run("linear", [(197, 768)], 3072, bias=False) == (
        (197, 3072), 768 * 3072, 197 * 768 * 3072,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("op", "inputs", "args", "kwargs", "shape"),
    [
        # ResNet's max pool: floor((112 + 2 - 3) / 2) + 1 = 56
        ("maxpool2d", [(64, 112, 112)], (3,), {"stride": 2, "padding": 1}, (64, 56, 56)),
        # stride defaults to the kernel
        ("maxpool2d", [(4, 8, 8)], (2,), {}, (4, 4, 4)),
        # ceil mode: ceil((7 - 2) / 2) + 1 = 4
        ("maxpool2d", [(1, 7, 7)], (2,), {"ceil_mode": True}, (1, 4, 4)),
        ("avgpool2d", [(4, 9, 9)], (3,), {"stride": 2}, (4, 4, 4)),
        ("adaptive_avgpool2d", [(512, 7, 9)], ((3, 2),), {}, (512, 3, 2)),
        ("global_avgpool", [(2048, 7, 7)], (), {}, (2048,)),
        ("flatten", [(4, 5, 6)], (), {}, (120,)),
        ("flatten", [(4, 5, 6)], (1,), {}, (4, 30)),
        ("relu", [(4, 5)], (), {}, (4, 5)),
        ("identity", [(4, 5)], (), {}, (4, 5)),
        ("dropout", [(4, 5)], (0.1,), {}, (4, 5)),
        ("add", [(4, 5, 5), (4, 5, 5), (4, 5, 5)], (), {}, (4, 5, 5)),
        ("concat", [(4, 5, 5), (3, 5, 5), (1, 5, 5)], (), {}, (8, 5, 5)),
        ("concat", [(4, 5), (4, 7)], (), {"axis": 1}, (4, 12)),
    ],
)
def test_shape_rules(op, inputs, args, kwargs, shape):
    out, params, macs = run(op, inputs, *args, **kwargs)
    assert out == shape
    assert (params, macs) == (0, 0)


def test_add_mismatch_hints_projection():
    with pytest.raises(OpShapeError, match=r"\(64, 56, 56\) and \(256, 28, 28\)") as e:
        run("add", [(64, 56, 56), (256, 28, 28)])
    assert "stride=2" in e.value.hints[0]


def test_concat_mismatch():
    with pytest.raises(OpShapeError, match="cannot concatenate"):
        run("concat", [(4, 5, 5), (4, 6, 5)])


def test_pool_padding_limit():
    with pytest.raises(OpShapeError, match="at most half"):
        run("maxpool2d", [(1, 8, 8)], 3, padding=2)


@pytest.mark.parametrize(
    ("source", "target", "stride"),
    [
        ((64, 56, 56), (256, 56, 56), 1),
        ((256, 56, 56), (512, 28, 28), 2),
        ((3, 7, 7), (8, 4, 4), 2),  # 1x1 conv, stride 2 on odd size: ceil(7 / 2) = 4
        ((3, 9, 9), (8, 3, 3), 3),
        ((3, 8, 8), (8, 3, 3), 3),  # ceil(8 / 3) = 3
        ((3, 8, 8), (8, 5, 5), None),
        ((3, 8, 8), (8, 4, 2), None),
    ],
)
def test_projection_stride(source, target, stride):
    assert projection_stride(source, target) == stride


def test_projection_hint_text():
    assert projection_hint((64, 56, 56), (128, 28, 28)) == (
        "conv2d(128, 1, stride=2, bias=false) -> batchnorm2d"
    )
    assert projection_hint((10,), (20,)) == "linear(20, bias=false)"


def test_attribute_binding_errors():
    from resdsl.ops import AttrError

    conv = OPS["conv2d"]
    for args, kwargs, kind in [
        ((), {}, "missing"),
        ((4, 3), {"strid": 2}, "unknown"),
        ((4, 3, 1, 0, 1, 1, True, 9), {}, "argument"),
        ((4, 3), {"kernel": 3}, "argument"),
        ((4.5, 3), {}, "type"),
        ((True, 3), {}, "type"),
        ((0, 3), {}, "value"),
        ((4, 3), {"padding": "half"}, "value"),
    ]:
        with pytest.raises(AttrError) as e:
            conv.bind(args, kwargs)
        assert e.value.kind == kind, (args, kwargs)


def test_every_op_documents_itself():
    for name, op in OPS.items():
        assert op.doc, name
        assert op.signature().startswith(f"{name}(")
