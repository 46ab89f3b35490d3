"""Comprehensions, constant and index buffers (`values`, `dtype`, `persistent`), `take`,
`relative_position_index`, `absolute_offset_index` and training-only outputs: what the
Swin, MaxViT, LeViT, GoogLeNet and Inception specs are built from."""

from __future__ import annotations

import json

import numpy as np
import pytest

import resdsl
from resdsl.cli import main
from resdsl.errors import SpecError

torch = pytest.importorskip("torch")


def net(body: str, inputs: str = "x: (3, 4)", **params) -> resdsl.Network:
    return resdsl.loads(f"network t() ({inputs}) {{\n{body}\n}}\n", **params)


def error(body: str, inputs: str = "x: (3, 4)") -> SpecError:
    with pytest.raises(SpecError) as e:
        net(body, inputs)
    return e.value


# --- comprehensions ----------------------------------------------------------------------------


def test_comprehension_values_loop_order_and_scope():
    n = net(
        "    i = 7\n"
        "    t = (a * 10 + b for a in range(3) for b in (0, 5))\n"
        '    assert t == (0, 5, 10, 15, 20, 25), "order"\n'
        '    assert i == 7, "the loop variable does not leak"\n'
        "    u = (x for x in ())\n"
        '    assert u == (), "empty"\n'
        "    return x"
    )
    assert len(n.graph) == 1


def test_comprehension_errors_are_located():
    e = error("    t = (i for i in 3)\n    return x")
    assert (e.line, e.column) == (2, 21) and "needs a range or a tuple" in e.message
    e = error("    t = (j for i in range(2))\n    return x")
    assert (e.line, e.column) == (2, 10) and "`j`" in e.message


def test_comprehension_is_bounded_by_the_limits():
    with pytest.raises(SpecError, match="elements"):
        resdsl.loads(
            "network t() (x: 3) {\n    t = (i for i in range(10) for j in range(10))\n"
            "    return x\n}",
            limits=resdsl.Limits(max_loop=50),
        )


# --- relative_position_index ------------------------------------------------------------------


@pytest.mark.parametrize("window", [7, (3, 5), 1])
def test_relative_position_index_is_torchvisions(window):
    swin = pytest.importorskip("torchvision.models.swin_transformer")
    pair = [window, window] if isinstance(window, int) else list(window)
    want = swin.ShiftedWindowAttention(8, pair, [0, 0], 2).relative_position_index
    n = pair[0] * pair[1]
    text = "(" + ", ".join(map(str, pair)) + ")"
    index = f"values=relative_position_index({text})"
    body = f'    i = idx: buffer(({n * n},), stored=({n * n},), {index}, dtype="int64")'
    body += "\n    return x"
    module = net(body).to_torch()
    assert module.idx.dtype == torch.int64
    assert torch.equal(module.idx, want)


def _offsets(h, w, stride):
    """LeViT's index, written here with NumPy as timm computes it."""
    ky, kx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    qy, qx = np.meshgrid(np.arange(0, h, stride), np.arange(0, w, stride), indexing="ij")
    q = np.stack([qy.ravel(), qx.ravel()])
    k = np.stack([ky.ravel(), kx.ravel()])
    rel = np.abs(q[:, :, None] - k[:, None, :])
    return rel[0] * w + rel[1]


@pytest.mark.parametrize(("resolution", "stride"), [(7, 1), ((3, 5), 2), (14, 2), (4, 3)])
def test_absolute_offset_index_is_levits(resolution, stride):
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    want = _offsets(h, w, stride)
    text = f"({h}, {w})" if h != w else str(h)
    index = f"values=absolute_offset_index({text}, {stride})"
    size = want.size
    body = f'    i = idx: buffer(({size},), stored=({size},), {index}, dtype="int64")'
    module = net(body + "\n    return x").to_torch()
    assert module.idx.dtype == torch.int64
    assert module.idx.tolist() == want.ravel().tolist()


def test_absolute_offset_index_is_timms_buffer():
    levit = pytest.importorskip("timm.models.levit")
    from resdsl.importers.writer import offset_index

    for attn, text in (
        (levit.Attention(32, 8, 2, resolution=7), "absolute_offset_index(7)"),
        (levit.AttentionDownsample(32, 64, 8, 2, stride=2, resolution=7),
         "absolute_offset_index(7, 2)"),
    ):  # fmt: skip
        values = tuple(attn.attention_bias_idxs.flatten().tolist())
        assert offset_index(values) == text


def test_absolute_offset_index_rejects_bad_arguments():
    e = error("    t = absolute_offset_index(7, 0)\n    return x")
    assert "positive int" in e.message and (e.line, e.column) == (2, 34)
    e = error("    t = absolute_offset_index((7, 0))\n    return x")
    assert "positive ints" in e.message and (e.line, e.column) == (2, 31)


def test_relative_position_index_rejects_bad_windows():
    e = error("    t = relative_position_index((2, 0))\n    return x")
    assert "positive" in e.message and (e.line, e.column) == (2, 33)


# --- buffers and take --------------------------------------------------------------------------


def test_index_buffer_and_take_through_every_backend(tmp_path):
    n = net(
        '    i = idx: buffer((5,), stored=(5,), values=(3, 0, 0, 2, 1), dtype="int64")\n'
        "    return take(x, i, axis=1)"
    )
    assert n.output_shapes == {"output": (3, 5)}
    module = n.to_torch().eval()
    assert "idx" in module.state_dict() and module.state_dict()["idx"].tolist() == [3, 0, 0, 2, 1]
    x = torch.randn(2, 3, 4)
    assert torch.equal(module(x), x[:, :, [3, 0, 0, 2, 1]])
    from resdsl.backends.onnx import export

    ort = pytest.importorskip("onnxruntime")
    export(n, str(tmp_path / "t.onnx"))
    session = ort.InferenceSession(str(tmp_path / "t.onnx"))
    (got,) = session.run(None, {"x": x.numpy()})
    assert (got == x[:, :, [3, 0, 0, 2, 1]].numpy()).all()


def test_non_persistent_buffer_is_not_in_the_state_dict():
    n = net("    return x + c: buffer((4,), values=(1, 2, 3, 4.5), persistent=false)")
    assert n.num_params == 0
    module = n.to_torch()
    assert "c" not in module.state_dict() and "c" in dict(module.named_buffers())
    x = torch.zeros(2, 3, 4)
    assert torch.equal(module(x)[1, 2], torch.tensor([1, 2, 3, 4.5]))


@pytest.mark.parametrize(
    "body, message, column",
    [
        ("y = b: buffer((2, 2), values=(1, 2, 3))", "`values` has 3", 9),
        ('y = b: buffer((2,), values=(1, 2.5), dtype="int64")', "holds ints", 9),
        ('y = b: buffer((2,), dtype="int64", init="normal")', "takes `values`", 9),
        ('y = b: buffer((2,), init="normal", persistent=false)', "a constant", 9),
        ('y = b: buffer((4,), values=(0, 1, 2, 3), dtype="int64") -> relu', "int64 index", 9),
        ("y = take(x, x -> flatten)", "needs an int64 index", 22),  # the op that made it
    ],
)
def test_buffer_and_index_errors_are_located(body, message, column):
    e = error(f"    {body}\n    return x")
    assert message in e.message
    assert (e.line, e.column) == (2, column)


def test_abs_and_sqrt_are_builtins_on_numbers_and_ops_on_tensors():
    n = net('    assert abs(-3) == 3 and sqrt(16) == 4, "numbers"\n    return x -> abs -> sqrt')
    assert [node.op for node in n.graph.nodes()] == ["input", "abs", "sqrt"]


# --- training-only outputs ---------------------------------------------------------------------

AUX = """network aux_net(classes: int = 10) (x: (3, 8, 8)) {
    y = x -> conv: conv2d(4, 3, padding=1) -> relu
    aux = y -> "aux1.pool": global_avgpool -> "aux1.fc": linear(classes)
    logits = y -> conv2: conv2d(8, 3, padding=1) -> global_avgpool -> fc: linear(classes)
    return logits, training(aux)
}
"""


def test_training_outputs_in_torch_and_counts():
    n = resdsl.loads(AUX)
    assert n.output_shapes == {"logits": (10,)}
    assert n.training_output_shapes == {"aux": (10,)}
    # the aux weights are parameters; its MACs (a 4 -> 10 linear) are not counted
    assert n.num_params == (3 * 9 * 4 + 4) + (4 * 10 + 10) + (4 * 9 * 8 + 8) + (8 * 10 + 10)
    assert n.macs == 4 * 3 * 9 * 64 + 8 * 4 * 9 * 64 + 8 * 10
    module = n.to_torch()
    x = torch.randn(2, 3, 8, 8)
    logits, aux = module.train()(x)
    with torch.no_grad():
        pooled = torch.relu(module.conv(x)).mean((2, 3))
        assert torch.allclose(aux, module.aux1.fc(pooled), atol=1e-6)
        assert torch.allclose(module.eval()(x), logits, atol=1e-6)  # a tensor, not a tuple


def test_training_outputs_leave_the_inference_artifacts(tmp_path, capsys):
    n = resdsl.loads(AUX)
    assert "aux1.fc" not in n.graph.inference() and "aux1.fc" in n.graph
    from resdsl.backends.onnx import export

    export(n, str(tmp_path / "a.onnx"))
    import onnx

    model = onnx.load(str(tmp_path / "a.onnx"))
    assert [o.name for o in model.graph.output] == ["logits"]
    assert not [i.name for i in model.graph.initializer if i.name.startswith("aux1")]
    path = tmp_path / "aux.res"
    path.write_text(AUX)
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["training_outputs"] == {"aux": [10]}
    assert [la["name"] for la in info["layers"] if la.get("training")] == ["aux1.pool", "aux1.fc"]
    assert main(["info", str(path)]) == 0
    assert "training aux: (10,) (training mode only" in capsys.readouterr().out


def test_training_marks_only_network_outputs():
    e = error("    return training(x)")
    assert "not training-only" in e.message
    e = error("    y = training(x) -> relu\n    return x")
    assert "marks a network output" in e.message and (e.line, e.column) == (2, 9)
    e = error("    return x, training(3)")
    assert "marks one tensor" in e.message


def test_training_outputs_compile_for_tvm(tmp_path):
    """The TVM artifact computes the inference output only (the branch is dead there)."""
    pytest.importorskip("tvm")
    import numpy as np

    import resdsl.runtime

    path, weights, out = tmp_path / "aux.res", tmp_path / "w.pt", tmp_path / "art"
    path.write_text(AUX)
    module = resdsl.loads(AUX).to_torch().eval()
    torch.save(module.state_dict(), weights)  # the aux weights too: they load strictly
    args = ["compile", str(path), "--target", "llvm", "-o", str(out), "--weights", str(weights)]
    assert main(args) == 0
    model = resdsl.runtime.load(str(out))
    assert [o["name"] for o in model.outputs] == ["logits"]
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
    want = module(torch.from_numpy(x)).detach().numpy()
    assert model(x).shape == (1, 10)
    assert np.abs(model(x) - want).max() <= 1e-4 * np.abs(want).max()
