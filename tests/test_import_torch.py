"""`resdsl import` of PyTorch models (torch.fx): torchvision models come back as specs whose
PyTorch module loads the original state_dict strictly and computes the same outputs on a
randomised state; the specs have blocks and loops; resdsl's own modules round-trip to the
same graph; what cannot be imported is reported all at once, with module paths."""

from __future__ import annotations

import re
import sys

import pytest

import resdsl
from resdsl.backends.check import randomise_state
from resdsl.cli import main
from resdsl.importers import ModelImportError, import_model
from resdsl.search.fingerprint import fingerprint
from resdsl.tools.fmt import format_text

from .conftest import ROOT

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

# fast ones; benchmarks/import.py runs all 80
FAST = ["resnet18", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5", "mnasnet0_5",
        "regnet_x_400mf", "efficientnet_b0"]  # fmt: skip


@pytest.mark.parametrize("name", FAST)
def test_torchvision_model_imports_with_parity(name):
    reference = randomise_state(torchvision.models.get_model(name, weights=None)).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    text = import_model(reference, x)
    assert format_text(text) == text  # passes `resdsl fmt --check`
    net = resdsl.loads(text)
    assert net.num_params == sum(p.numel() for p in reference.parameters())
    module = net.to_torch().eval()
    module.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        want, got = reference(x), module(x)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_imported_resnet50_reads_like_the_hand_written_one():
    """A block per module class, a `for` over each stage, within 2x the lines of
    examples/resnet50.res and the std/resnet.res blocks it uses."""
    text = import_model("torchvision:resnet50")
    hand = len((ROOT / "examples" / "resnet50.res").read_text().splitlines())
    hand += len((ROOT / "resdsl" / "std" / "resnet.res").read_text().splitlines())
    assert len(text.splitlines()) <= 2 * hand
    assert "block bottleneck(channels: int, stride: int) (x) {" in text
    assert 'x = x -> "{i}": bottleneck(channels, if i == 0 then stride else 1)' in text
    assert "downsample: shortcut(x, like=" in text  # the projection, only where shapes change
    loop = r'y = y -> "layer\{i \+ 1\}": bottlenecks\(\s*'
    assert re.search(loop + r"\(64, 128, 256, 512\)\[i\], \(3, 4, 6, 3\)\[i\]", text)


@pytest.mark.parametrize("name, family", [("efficientnet_b0", "efficientnet"),
                                          ("convnext_tiny", "convnext")])  # fmt: skip
def test_imported_modern_models_are_within_twice_the_zoo_spec(name, family):
    text = import_model(f"torchvision:{name}")
    zoo = (ROOT / "resdsl" / "zoo" / f"{family}.res").read_text()
    assert len(text.splitlines()) <= 2 * len(zoo.splitlines())


@pytest.mark.parametrize(
    "spec", ["resnet18", "resnet50", "se_resnet", "preact_resnet18", "mobilenet_v2",
             "highway", "long_skips", "stochastic_depth", "regnet_y_400mf", "cifar_resnet20"],
)  # fmt: skip
def test_round_trip_through_pytorch_keeps_the_graph(spec):
    """import(to_torch(load(spec))) elaborates to the spec's graph (same fingerprint)."""
    net = resdsl.load(ROOT / "examples" / f"{spec}.res")
    xs = [torch.randn(2, *net.graph.info(i).shape) for i in net.graph.inputs]
    back = resdsl.loads(import_model(net.to_torch(), *xs))
    assert fingerprint(back) == fingerprint(net)


class Gated(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.act = torch.nn.PReLU()

    def forward(self, x):
        y = torch.nn.functional.glu(self.conv(x), dim=1)
        return torch.cumsum(self.act(y), 2)


def test_everything_unsupported_is_reported_at_once():
    with pytest.raises(ModelImportError) as e:
        import_model(Gated(), torch.randn(2, 3, 8, 8))
    text = str(e.value)
    assert "3 op(s) or module(s)" in text
    assert "glu" in text and "cumsum" in text and "act: module PReLU" in text


class Branchy(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return x
        return -x


def test_untraceable_control_flow_is_a_clear_error():
    with pytest.raises(ModelImportError, match=r"torch\.fx cannot trace it"):
        import_model(Branchy(), torch.randn(2, 3))


def test_cli_import_writes_a_spec_that_checks(tmp_path, capsys):
    out = tmp_path / "r18.res"
    assert main(["import", "torchvision:resnet18", "-o", str(out)]) == 0
    assert "imported torchvision:resnet18: " in capsys.readouterr().err
    assert main(["check", str(out)]) == 0
    assert "11,689,512 params" in capsys.readouterr().out
    assert main(["fmt", "--check", str(out)]) == 0


def test_cli_import_refusals(capsys):
    assert main(["import", "torchvision:no_such_net"]) == 1
    assert "torchvision has no model `no_such_net`" in capsys.readouterr().err
    assert main(["import", "not a reference"]) == 1
    assert "not a model reference" in capsys.readouterr().err
    assert main(["import", "torchvision:resnet18", "--input-shape", "3,x"]) == 2


def test_a_factory_is_imported_by_module_path(tmp_path, monkeypatch):
    """`package.module:factory` runs that factory (the one place resdsl runs user code)."""
    (tmp_path / "my_models.py").write_text(
        "import torch\n\ndef tiny():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    text = import_model("my_models:tiny", input_shape=(3, 16, 16))
    net = resdsl.loads(text)
    assert net.num_params == 3 * 8 * 9 + 8
    assert net.output_shapes == {"output": (8, 14, 14)} or list(net.output_shapes.values()) == [
        (8, 14, 14)
    ]


def test_the_docs_show_the_spec_import_writes():
    doc = (ROOT / "docs" / "import.md").read_text()
    (shown,) = re.findall(r"```res\n(.*?)```", doc, re.S)
    text = import_model("torchvision:resnet50")
    assert text == "# Imported by `resdsl import` from torchvision:resnet50.\n\n" + shown


def test_auxiliary_classifiers_import_as_training_outputs():
    """GoogLeNet returns its auxiliary logits in training mode only: traced in both modes,
    they become `training(...)` outputs, and the whole state_dict loads strictly."""
    reference = randomise_state(torchvision.models.get_model("googlenet", weights=None))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    text = import_model(reference, x)
    assert re.search(r"return \w+, training\(\w+\), training\(\w+\)\n", text)
    net = resdsl.loads(text)
    assert len(net.training_output_shapes) == 2
    module = net.to_torch()
    module.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        want, got = reference.eval()(x), module.eval()(x)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5
    assert len(module.train()(x)) == 3


def test_densenet_layers_become_one_block():
    """Each dense layer reads all earlier features; the concatenation moves to the caller,
    so every layer is a call of one block and the spec stays short."""
    reference = randomise_state(torchvision.models.get_model("densenet121", weights=None)).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    text = import_model(reference, x)
    assert text.count("\nblock dense_layer(") == 1 and len(text.splitlines()) < 200
    module = resdsl.loads(text).to_torch().eval()
    module.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        want, got = reference(x), module(x)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_cli_import_writes_the_weights_too(tmp_path, capsys):
    from resdsl.weights import load_file

    out, weights = tmp_path / "sq.res", tmp_path / "sq.safetensors"
    args = ["import", "torchvision:squeezenet1_1", "-o", str(out), "--weights", str(weights)]
    assert main(args) == 0
    assert f"wrote {weights}" in capsys.readouterr().err
    module = resdsl.load(out).to_torch()
    state = {k: torch.from_numpy(v) for k, v in load_file(str(weights)).items()}
    module.load_state_dict(state, strict=True)
    assert main(["compile", str(out), "--target", "onnx", "-o", str(tmp_path / "sq.onnx"),
                 "--weights", str(weights)]) == 0  # fmt: skip
    assert main(["import", "torchvision:squeezenet1_1", "--weights", "w.pt"]) == 2


def test_onnx_import_recovers_blocks_from_the_names(tmp_path):
    """An ONNX file has no module tree; its names do (resdsl's exporter names nodes by the
    spec's names): the import gets blocks, shortcuts and loops, and the same graph."""
    from resdsl.backends.onnx import export

    net = resdsl.load(ROOT / "examples" / "resnet18.res")
    export(net, str(tmp_path / "r18.onnx"))
    text = import_model(str(tmp_path / "r18.onnx"))
    assert "downsample: shortcut(x, like=" in text and "for i in range(" in text
    assert len(text.splitlines()) < 40
    assert fingerprint(resdsl.loads(text)) == fingerprint(net)


class WindowAttention(torch.nn.Module):
    """What Swin and MaxViT do with tensors that are not laid out batch-first: a relative
    position bias gathered from a table with an int64 index buffer (no batch axis), the
    windows moved into the batch axis by a reshape and back, a constant computed in
    forward from a buffer, ``x[..., ::2]`` and ``swapaxes``."""

    def __init__(self, dim=16, heads=2, window=2):
        super().__init__()
        self.heads, self.window = heads, window
        n = window * window
        self.table = torch.nn.Parameter(torch.randn((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                            indexing="ij")).flatten(1)  # fmt: skip
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]))
        self.register_buffer("offsets", torch.randn(n))
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):  # (B, H, W, C)
        B, H, W, C = x.shape  # noqa: N806 - the shapes' usual names
        p, n = self.window, self.window * self.window
        x = x.view(B, H // p, p, W // p, p, C).swapaxes(2, 3).reshape(-1, n, C)  # (B*w, n, C)
        q, k, v = self.qkv(x).reshape(x.shape[0], n, 3, self.heads, C // self.heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)  # fmt: skip
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = (q @ k.transpose(-2, -1)) * (C // self.heads) ** -0.5 + bias.unsqueeze(0)
        attn = attn + (self.offsets.view(1, n) * 2).unsqueeze(0)  # traced out: a constant
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, C)
        x = self.proj(x).view(B, H // p, W // p, p, p, C).swapaxes(2, 3).reshape(B, H, W, C)
        return x[..., ::2] + x[:, :, :, 1::2]


def test_tensors_without_a_batch_axis_and_windows_in_the_batch_import_with_parity():
    model = randomise_state(WindowAttention()).eval()
    x = torch.randn(2, 4, 6, 16, generator=torch.Generator().manual_seed(0))
    text = import_model(model, x)
    # Swin's index of relative offsets, recognised: not 256 numbers written out
    assert "take(table, index)" in text and "values=relative_position_index(2)" in text
    net = resdsl.loads(text)
    assert net.input_shapes == {"x": (4, 6, 16)}
    assert list(net.output_shapes.values()) == [(4, 6, 8)]
    module = net.to_torch().eval()
    module.load_state_dict(model.state_dict(), strict=True)  # `offsets` stays the model's
    y = torch.randn(3, 4, 6, 16)  # another batch size: nothing fixed the example's
    with torch.no_grad():
        want, got = model(y), module(y)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_a_batch_reshape_that_mixes_samples_is_refused():
    class Mix(torch.nn.Module):
        def forward(self, x):  # (2, 6) as (3, 4): the second row holds both samples
            return x.reshape(3, -1)

    with pytest.raises(ModelImportError, match="a reshape that moves the batch"):
        import_model(Mix(), torch.randn(2, 6))


def test_a_spec_that_does_not_reproduce_the_model_is_never_written(monkeypatch):
    """The importer checks what it writes against the source on the example: a converter
    bug (here ReLU read as sigmoid) is an error, not a wrong spec."""
    from resdsl.importers import torch_fx

    leaves = torch_fx._leaves

    def wrong():
        table = leaves()
        table[torch.nn.ReLU] = lambda m: ("sigmoid", {})
        return table

    monkeypatch.setattr(torch_fx, "_leaves", wrong)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    with pytest.raises(ModelImportError, match=r"does not reproduce the model \(its outputs "
                       r"differ from the source's by [0-9.e+-]+ \(relative\)\)"):  # fmt: skip
        import_model(model, torch.randn(2, 4))


class BiasedAttention(torch.nn.Module):
    """BEiT's attention: a qkv bias concatenated in forward from two parameters and a zero
    buffer, applied with F.linear; the relative position bias given to
    scaled_dot_product_attention as a float mask; and torch.stack."""

    def __init__(self, dim=8, heads=2, tokens=5):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = torch.nn.Parameter(torch.randn(dim))
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.v_bias = torch.nn.Parameter(torch.randn(dim))
        self.bias = torch.nn.Parameter(torch.randn(heads, tokens, tokens))

    def forward(self, x):  # (B, N, C)
        bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = torch.nn.functional.linear(x, weight=self.qkv.weight, bias=bias)
        q, k, v = qkv.reshape(x.shape[0], x.shape[1], 3, self.heads, -1).permute(2, 0, 3, 1, 4) \
            .unbind(0)  # fmt: skip
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=self.bias[None])
        return torch.stack([y, q], dim=2).flatten(2)


def test_functional_linear_masked_attention_and_stack_import_with_parity():
    model = randomise_state(BiasedAttention()).eval()
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    text = import_model(model, x)  # the importer checks its outputs on x itself
    assert "k_bias: buffer((8,), stored=(8,), persistent=false)" in text  # zeros: no values
    module = resdsl.loads(text).to_torch().eval()
    module.load_state_dict(model.state_dict(), strict=True)
    y = torch.randn(3, 5, 8)
    with torch.no_grad():
        want, got = model(y), module(y)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_slice_bounds_read_from_sizes():
    """PiT's ``x[:, :tokens]`` with ``tokens`` computed from ``x.shape``."""

    class Head(torch.nn.Module):
        def forward(self, x):  # (B, N, C)
            n = x.shape[1] - 2
            return x[:, :n] * 2 + x[:, x.shape[1] - n :]

    text = import_model(Head(), torch.randn(2, 5, 4))
    assert "slice(end=3)" in text and "slice(start=2)" in text


def _parity(model, x, text):
    """The spec's module, the model's state_dict loaded strictly, against the model on a
    batch of another size."""
    module = resdsl.loads(text).to_torch().eval()
    module.load_state_dict(model.state_dict(), strict=True)
    y = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want, got = model(y), module(y)
    return float((got - want).abs().max() / want.abs().max())


class StackedHeads(torch.nn.Module):
    """EfficientViM's heads: weighted logits stacked in front of the batch, summed."""

    def __init__(self):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(4, 3) for _ in range(3))
        self.weights = torch.nn.Parameter(torch.randn(3))

    def forward(self, x):
        w = self.weights.softmax(-1)
        return torch.stack([w[i] * h(x) for i, h in enumerate(self.heads)]).sum(0)


def test_a_stack_summed_over_its_front_is_a_sum():
    model = randomise_state(StackedHeads()).eval()
    x = torch.randn(2, 4)
    text = import_model(model, x)
    assert "concat" not in text and text.count(" + ") == 2
    assert _parity(model, x, text) <= 1e-5


class BlurPool(torch.nn.Module):
    """TResNet's anti-aliasing: reflect padding, then a constant binomial filter applied
    to every channel with a strided functional convolution."""

    def __init__(self, channels=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 1)
        k = torch.tensor([1.0, 2.0, 1.0])
        filt = (k[:, None] * k[None, :] / 16)[None, None].repeat(channels, 1, 1, 1)
        self.register_buffer("filt", filt, persistent=False)

    def forward(self, x):
        x = torch.nn.functional.pad(self.conv(x), (1, 1, 1, 1), mode="reflect")
        return torch.nn.functional.conv2d(x, self.filt, stride=2, groups=x.shape[1])


def test_reflect_padding_and_a_constant_depthwise_filter():
    model = randomise_state(BlurPool()).eval()
    x = torch.randn(2, 3, 7, 6)
    text = import_model(model, x)
    # reflect padding: a one-element slice on each side of each axis, concatenated
    assert text.count("concat(") == 2 and "slice(axis=2, start=1, end=2)" in text
    assert "buffer" not in text  # the filter is not written: its 9 taps are
    assert text.count("scale_shift(scale=0.25)") == 1
    assert text.count("scale_shift(scale=0.0625)") == 4
    assert _parity(model, x, text) <= 1e-5


class FourierPosition(torch.nn.Module):
    """XCiT's position encoding: sines of positions built in forward (arange, sin, cos:
    32 x 12 x 12 elements), a 1x1 convolution with weights, repeated over the batch."""

    def __init__(self, hidden=16, dim=8):
        super().__init__()
        self.hidden = hidden
        self.proj = torch.nn.Conv2d(2 * hidden, dim, 1)

    def forward(self, x):  # (B, C, H, W)
        b, _, h, w = x.shape
        y = torch.arange(1, h + 1).to(torch.float32).unsqueeze(1).repeat(1, 1, w) / h * 6.28
        xs = torch.arange(1, w + 1).to(torch.float32).repeat(1, h, 1) / w * 6.28
        t = torch.div(torch.arange(self.hidden), 2, rounding_mode="floor")
        t = 1000 ** (2 * t / self.hidden)
        py, px = y[..., None] / t, xs[..., None] / t
        py = torch.stack([py[..., 0::2].sin(), py[..., 1::2].cos()], dim=4).flatten(3)
        px = torch.stack([px[..., 0::2].sin(), px[..., 1::2].cos()], dim=4).flatten(3)
        pos = torch.cat((py, px), dim=3).permute(0, 3, 1, 2)
        return x + self.proj(pos).repeat(b, 1, 1, 1)


def test_a_constant_computed_in_forward_is_written_in_broadcast_parts():
    model = randomise_state(FourierPosition()).eval()
    x = torch.randn(2, 8, 12, 12)
    text = import_model(model, x)
    # constants, no sin/cos op; each of the four (12, 12, 8) sines and cosines varies along
    # one of its map's axes only: written as its (12, 8) part, broadcast back, not whole
    assert "persistent=false" in text and ".sin" not in text and "arange" not in text
    assert len(re.findall(r"-?\d+\.\d+", text)) == 4 * 12 * 8  # not 4 * 1,152
    assert _parity(model, x, text) <= 1e-5


class BeitBias(torch.nn.Module):
    """BEiT's relative position bias: Swin's index of a 4 x 4 window with a row and a column
    for the class token (17 x 17 = 289 entries, above the constant limit here)."""

    def __init__(self, window=4, heads=2):
        super().__init__()
        from resdsl.elaborate.functions import _relative_position_index

        n = window * window
        distance = (2 * window - 1) ** 2 + 3
        index = torch.zeros(n + 1, n + 1, dtype=torch.int64)
        index[1:, 1:] = torch.tensor(_relative_position_index(window, window)).view(n, n)
        index[0, 0:] = distance - 3
        index[0:, 0] = distance - 2
        index[0, 0] = distance - 1
        self.register_buffer("relative_position_index", index, persistent=False)
        self.table = torch.nn.Parameter(torch.randn(distance, heads))
        self.n, self.heads = n + 1, heads

    def forward(self, x):  # (B, heads, N, N) attention scores
        bias = self.table[self.relative_position_index.view(-1)].view(self.n, self.n, -1)
        return (x + bias.permute(2, 0, 1)).softmax(-1)


def test_beit_index_with_class_token_rows(monkeypatch):
    from resdsl.importers import constants, torch_fx

    monkeypatch.setattr(constants, "LIMIT", 100)  # BEiT's 38,809 entries, in small
    monkeypatch.setattr(torch_fx, "_CONSTANT_LIMIT", 100)
    model = randomise_state(BeitBias()).eval()
    x = torch.randn(2, 2, 17, 17)
    text = import_model(model, x)
    assert "values=relative_position_index(4)" in text and text.count("take(") == 3
    assert _parity(model, x, text) <= 1e-5


class Rotary(torch.nn.Module):
    """timm's RoPE-mixed ViT: angles from token positions times learned per-head
    frequencies (``t.unsqueeze(-1) * freqs[0].unsqueeze(-2)``, as ``get_mixed_freqs``),
    their sines and cosines each repeated twice along the channels, mixed into the heads
    with each channel pair rotated."""

    def __init__(self, heads=2, tokens=5, dim=6):
        super().__init__()
        self.freqs = torch.nn.Parameter(torch.randn(2, heads, dim // 2))
        self.register_buffer("t", torch.arange(tokens, dtype=torch.float32), persistent=False)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):  # x: (B, heads, tokens, dim)
        angles = self.t.unsqueeze(-1) * self.freqs[0].unsqueeze(-2)
        angles = angles + self.t.flip(0).unsqueeze(-1) * self.freqs[1].unsqueeze(-2)
        sin, cos = angles.sin().repeat_interleave(2, -1), angles.cos().repeat_interleave(2, -1)
        x = self.proj(x)
        rotated = torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
        return x * cos + rotated * sin


def test_rotary_embedding_sin_cos_and_repeat_interleave():
    model = randomise_state(Rotary()).eval()
    x = torch.randn(3, 2, 5, 6)
    text = import_model(model, x)
    assert "-> sin" in text and "-> cos" in text
    # each repeat_interleave(2, -1): two copies side by side on a unit axis, then merged
    assert len(re.findall(r"concat\((\w+), \1, axis=3\) -> reshape\(\(2, 5, 6\)\)", text)) == 2
    assert _parity(model, x, text) <= 1e-5


class LateConstantBlock(torch.nn.Module):
    def __init__(self, d=4):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.fc = torch.nn.Linear(d, d)

    def forward(self, x, pos):
        return x + self.fc(self.norm(x) * pos)


class LateConstant(torch.nn.Module):
    """A constant computed in ``forward`` and first read by a block's second layer (EVA-02's
    rotary table): converted where it is first read, after that block's first layer."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([LateConstantBlock(), LateConstantBlock()])

    def forward(self, x):
        pos = torch.arange(x.shape[-1], dtype=torch.float32) * 0.5 + 1
        for b in self.blocks:
            x = b(x, pos)
        return x


def test_a_constant_read_inside_a_block_is_written_before_the_block():
    """The block call stands after the constant's calls (it was placed at its first layer,
    before them, and the structured writer failed with a KeyError)."""
    model = randomise_state(LateConstant()).eval()
    x = torch.randn(2, 3, 4)
    text = import_model(model, x)
    assert "block late_constant_block() (x0, x1) {" in text
    network = text[text.index("network late_constant()") :]
    assert network.index("buffer(") < network.index('"blocks.0": late_constant_block(')
    assert network.count('": late_constant_block(') == 2
    assert _parity(model, x, text) <= 1e-5


@pytest.mark.parametrize("version", [1, 2])
def test_torchvision_swin_attention_traced_through_its_wrapped_function(version):
    """torchvision's Swin attention is a ``torch.fx.wrap``'ed function with control flow on
    its input's shape, whose shifted-window mask is built in forward by slice assignments
    (and V2's qkv bias has its key part zeroed in place): traced through with the
    example's sizes, the assignments as functions; the mask is written as each
    position's region, a row's number plus a column's."""
    from torchvision.models import swin_transformer as swin

    cls = swin.ShiftedWindowAttention if version == 1 else swin.ShiftedWindowAttentionV2
    model = randomise_state(cls(16, [2, 2], [1, 1], 2)).eval()
    x = torch.randn(2, 6, 6, 16, generator=torch.Generator().manual_seed(0))
    text = import_model(model, x)  # the importer checks its outputs on x itself
    assert "roll((-1, -1), (0, 1))" in text and "-100.0" in text  # the mask, 144 numbers
    if version == 2:  # the bias's key part zeroed, and nothing left unread
        assert "scale_shift(scale=0.0)" in text and text.count("slice(start=16, end=32)") == 1
    module = resdsl.loads(text).to_torch().eval()
    module.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        want, got = model(x), module(x)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


class ShapeBranches(torch.nn.Module):
    """What symbolic tracing cannot take (Hiera's and NaFlexViT's): control flow on sizes,
    ``len`` of a shape, an optional argument left at None, an in-place add."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.table = torch.nn.Parameter(torch.randn(1, 8, 4))

    def forward(self, x, mask=None):  # (B, N, 8)
        if mask is not None:
            x = x * mask
        if len(x.shape) == 3 and x.shape[1] > 4:
            x = x[:, :4]
        y = self.proj(x)
        pos = torch.nn.functional.interpolate(self.table, size=y.shape[1] * 2, mode="linear")
        y.add_(pos.permute(0, 2, 1)[:, ::2])
        return y.view(y.shape[0], 2, 2, 8).amax(dim=1) + self.table.tile((1, 1, 2))[:, :2]


def test_sizes_as_numbers_where_symbolic_tracing_fails():
    model = randomise_state(ShapeBranches()).eval()
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0))
    text = import_model(model, x)
    assert "maxpool2d((2, 1))" in text and "concat(table, table, axis=1)" in text
    module = resdsl.loads(text).to_torch().eval()
    module.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        want, got = model(x), module(x)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_a_spec_too_large_to_write_is_an_error_not_a_crash():
    class Noise(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for k in range(3):  # 12,000 distinct numbers: no form, more than 64 KiB of text
                self.register_buffer(f"n{k}", torch.randn(4000), persistent=False)

        def forward(self, x):
            return x + self.n0 + self.n1 + self.n2

    with pytest.raises(ModelImportError, match="the imported spec cannot be written"):
        import_model(Noise(), torch.randn(2, 4000))


def test_a_shifted_window_mask_is_written_as_row_and_column_bands():
    """Swin's mask for 8 x 8 windows of 7 x 7 (64 x 49 x 49 numbers): each position's region
    is a row band's number plus a column band's, two buffers of 56 numbers."""
    region = torch.zeros(56, 56)
    for k, (h, w) in enumerate(
        (h, w)
        for h in (slice(0, -7), slice(-7, -3), slice(-3, None))
        for w in (slice(0, -7), slice(-7, -3), slice(-3, None))
    ):
        region[h, w] = k
    windows = region.view(8, 7, 8, 7).permute(0, 2, 1, 3).reshape(64, 49)
    mask = (windows[:, None, :] - windows[:, :, None]).ne(0).float() * -100.0

    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mask", mask, persistent=False)

        def forward(self, x):  # (B, 64, 49, 49)
            return x + self.mask

    text = import_model(Masked(), torch.randn(2, 64, 49, 49))  # checked on the example
    assert "(8, 1, 7, 1)" in text and "(1, 8, 1, 7)" in text and len(text) < 3000


# --- the torch.export route: what fx cannot trace, or traces to functions without an op ------


class _SwishFn(torch.autograd.Function):
    """timm's memory-efficient activations are written this way; both routes record what
    its ``forward`` computes (a sigmoid and a product)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * s * (1 + x * (1 - s))


class _Swish(torch.nn.Module):
    def forward(self, x):
        return _SwishFn.apply(x)


class _Checked(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(channels)
        self.act = _Swish()

    def forward(self, x):
        if not isinstance(x, torch.Tensor):  # an fx proxy is not a tensor
            raise TypeError("expected a tensor")
        return x + self.act(self.bn(self.conv(x)))


class _CheckedNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = torch.nn.Sequential(*(_Checked(8) for _ in range(3)))
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def _assert_parity(model, text, shape):
    module = resdsl.loads(text).to_torch().eval()
    module.load_state_dict(model.state_dict(), strict=True)  # labels: the module paths
    y = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))  # another batch
    with torch.no_grad():
        want, got = model(y), module(y)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_torch_export_imports_what_fx_cannot_trace():
    model = randomise_state(_CheckedNet()).eval()
    # neither fx trace (symbolic, or with sizes as numbers) gets past the check
    with pytest.raises(TypeError, match="expected a tensor"):
        torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    text = import_model(model, x)
    # the leaf modules' calls come back whole, labelled by their paths; the loop is found
    assert 'y = y -> "blocks.{i}": checked()' in text
    assert "conv: conv2d(8, 3, padding=1, bias=false) -> bn: batchnorm2d" in text
    assert "sigmoid" in text and "head: linear(5)" in text
    _assert_parity(model, text, (3, 12, 12))


class _Views(torch.nn.Module):
    """fx traces it, to methods the converter has no rule for (``squeeze``, ``narrow``,
    ``reshape_as``, ``t``); torch.export's ops for them are slices and views it reads."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 6)
        self.scale = torch.nn.Parameter(torch.randn(6))
        self.mix = torch.nn.Parameter(torch.randn(6, 6))

    def forward(self, x):  # x: (B, 4, 6)
        a, b = torch.split(self.proj(x), [2, 4], dim=2)
        c, d = x.chunk(2, dim=1)
        first, *_ = x.unbind(1)
        y = torch.cat([b, a], 2) * (1 - torch.sigmoid(x.narrow(1, 1, 2).sum(1, keepdim=True)))
        z = torch.cat([c, d], 1).unsqueeze(1).squeeze(1).reshape_as(x) * self.scale
        return y + z @ self.mix.t() + first.unsqueeze(1), x.transpose(1, 2)[:, 2:].flatten(1)


def test_torch_export_reads_what_the_fx_trace_has_no_op_for():
    from resdsl.importers.torch_fx import _Converter

    model = randomise_state(_Views()).eval()
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ModelImportError, match=r"Tensor\.squeeze"):  # the fx trace alone
        _Converter(model, "views", "views").run(x)
    text = import_model(model, x)
    module = resdsl.loads(text).to_torch().eval()
    module.load_state_dict(model.state_dict(), strict=True)
    y = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for want, got in zip(model(y), module(y), strict=True):
            assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_when_neither_route_traces_both_reasons_are_given():
    with pytest.raises(ModelImportError) as e:
        import_model(Branchy(), torch.randn(2, 3))
    text = str(e.value)
    assert "torch.fx cannot trace it" in text and "nor can torch.export" in text


def test_an_unsupported_op_after_export_is_reported_with_its_module_path():
    class Cumulative(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Sequential(torch.nn.Linear(4, 4), _Swish())

        def forward(self, x):
            if not isinstance(x, torch.Tensor):
                raise TypeError("expected a tensor")
            return torch.cumsum(self.inner(x), 1)

    with pytest.raises(ModelImportError) as e:
        import_model(Cumulative(), torch.randn(2, 4))
    text = str(e.value)
    assert "1 op(s) or module(s)" in text
    assert re.search(r"\(top level\) \(cumsum\w*\): \S*aten\.cumsum", text), text


def test_both_routes_write_the_same_resnet18():
    """torch.export's ATen graph, read back, is the fx trace's: leaf modules whole, the
    residual adds (in-place in torchvision: functionalised) and the flatten."""
    by_fx = import_model("torchvision:resnet18", trace="fx")
    by_export = import_model("torchvision:resnet18", trace="export")
    assert by_export == by_fx


def test_trace_fx_only_does_not_fall_back_to_export():
    model = _CheckedNet().eval()
    with pytest.raises(ModelImportError) as e:
        import_model(model, torch.randn(2, 3, 8, 8), trace="fx")
    assert "torch.fx cannot trace it" in str(e.value) and "torch.export" not in str(e.value)


def test_cli_import_trace_export(tmp_path, capsys):
    out = tmp_path / "r18.res"
    assert main(["import", "torchvision:resnet18", "--trace", "export", "-o", str(out)]) == 0
    assert "imported torchvision:resnet18: " in capsys.readouterr().err
    assert main(["check", str(out)]) == 0
    with pytest.raises(SystemExit) as e:  # argparse's usage error
        main(["import", "torchvision:resnet18", "--trace", "jit"])
    assert e.value.code == 2 and "invalid choice: 'jit'" in capsys.readouterr().err


class _LinearNorm(torch.nn.Module):
    """LeViT's: a linear layer, then a batch norm over the tokens merged into the batch."""

    def __init__(self, a, b):
        super().__init__()
        self.linear = torch.nn.Linear(a, b, bias=False)
        self.bn = torch.nn.BatchNorm1d(b)

    def forward(self, x):
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class _LeViTAttention(torch.nn.Module):
    """LeViT's attention on a 9 x 9 grid: its biases read through the index of absolute
    offsets, a (81, 81) buffer of 6,561 elements (written by name, not element by element)."""

    def __init__(self, dim=16, heads=2, res=9):
        super().__init__()
        self.heads, self.d = heads, dim // heads
        self.qkv = _LinearNorm(dim, 3 * dim)
        self.proj = _LinearNorm(dim, dim)
        self.attention_biases = torch.nn.Parameter(torch.randn(heads, res * res))
        pos = torch.stack(torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij"))
        pos = pos.flatten(1)
        rel = (pos[..., :, None] - pos[..., None, :]).abs()
        self.register_buffer("idxs", rel[0] * res + rel[1], persistent=False)
        self.head_bn = torch.nn.BatchNorm1d(dim)

    def forward(self, x):  # x: (B, 81, dim)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.heads, -1).split([self.d] * 3, dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 3, 1), v.permute(0, 2, 1, 3)
        attn = (q @ k) * self.d**-0.5 + self.attention_biases[:, self.idxs]
        y = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
        y = x + self.proj(y)
        return self.head_bn(y.mean(1))


def test_levit_attention_batch_norms_on_tokens_and_offset_index():
    model = randomise_state(_LeViTAttention()).eval()
    x = torch.randn(2, 81, 16, generator=torch.Generator().manual_seed(0))
    text = import_model(model, x, trace="fx")
    assert "values=absolute_offset_index(9)" in text  # not 6,561 numbers
    assert text.count("bn: batchnorm2d") == 2 and "head_bn: batchnorm2d" in text
    module = resdsl.loads(text).to_torch().eval()
    module.load_state_dict(model.state_dict(), strict=True)  # bn's names are the modules'
    y = torch.randn(3, 81, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = model(y), module(y)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


@pytest.mark.parametrize("antialias", [True, False])
def test_an_antialiased_bicubic_resize_of_a_position_table(antialias):
    """Hiera's absolute-window position embedding: a table resized with an antialiased
    bicubic kernel (which on a unit axis is not the kernel it is on a wider one) plus a
    tiled window table. The tables are drawn large: at their initial 0.02 scale an error
    here hides under the parity bound."""

    class AbsWin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Conv2d(3, 8, 4, stride=4)
            self.pos_embed = torch.nn.Parameter(torch.randn(1, 8, 5, 5))
            self.pos_embed_win = torch.nn.Parameter(torch.randn(1, 8, 2, 2))

        def forward(self, x):
            y = self.proj(x)
            win = self.pos_embed_win.tile((1, 1, 4, 4))
            pos = torch.nn.functional.interpolate(
                self.pos_embed, size=win.shape[-2:], mode="bicubic", antialias=antialias
            )
            return y + pos + win

    model = randomise_state(AbsWin()).eval()
    _assert_parity(model, import_model(model, torch.randn(2, 3, 32, 32)), (3, 32, 32))


def test_torch_export_keeps_two_calls_of_one_module_apart():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.act = torch.nn.SiLU()

        def forward(self, x):  # back to back: one run of ATen ops, two calls of `act`
            return self.act(self.act(self.lin(x)))

    model = randomise_state(Twice()).eval()
    text = import_model(model, torch.randn(2, 4), trace="export")
    assert "-> silu -> silu\n" in text  # silu(silu(x)) is not silu(x)
    _assert_parity(model, text, (4,))


def test_attention_on_windows_in_the_batch_with_a_bias_mask():
    """MaxxViT's: windows moved into the batch, F.scaled_dot_product_attention with a
    relative position bias (no batch axis) as its mask; its result keeps the windows."""

    class WindowAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.Linear(16, 48)
            self.bias = torch.nn.Parameter(torch.randn(2, 4, 4))

        def forward(self, x):  # (B, 8 windows, 4 tokens, 16)
            b = x.shape[0]
            qkv = self.qkv(x.reshape(b * 8, 4, 16)).reshape(b * 8, 4, 3, 2, 8)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
            return y.transpose(1, 2).reshape(b, 8, 4, 16)

    model = randomise_state(WindowAttention()).eval()
    x = torch.randn(2, 8, 4, 16, generator=torch.Generator().manual_seed(0))
    _assert_parity(model, import_model(model, x, trace="fx"), (8, 4, 16))


def test_torch_export_reads_a_zeroed_slice_and_a_normalisation():
    """Swin V2's attention as torch.export records it: `bias[a:b].zero_()` is a
    `slice_scatter` of `zero`, F.normalize a vector norm, a clamp and an expand."""

    class CosineAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.Linear(8, 24)

        def forward(self, x):  # (B, 4 tokens, 8)
            if not isinstance(x, torch.Tensor):
                raise TypeError("expected a tensor")
            bias = self.qkv.bias.clone()
            bias[8:16].zero_()  # no bias for the keys
            q, k, v = torch.nn.functional.linear(x, self.qkv.weight, bias).chunk(3, -1)
            q, k = (
                torch.nn.functional.normalize(q, dim=-1),
                torch.nn.functional.normalize(k, dim=-1),
            )
            return (q @ k.transpose(-2, -1)).softmax(-1) @ v

    model = randomise_state(CosineAttention()).eval()
    text = import_model(model, torch.randn(2, 4, 8), trace="export")
    _assert_parity(model, text, (4, 8))
