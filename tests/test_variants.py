"""The residual variants of docs/cookbook.md: each example builds in PyTorch and trains (a
forward and a backward pass), and shows its characteristic behaviour, checked by hand.

Examples: preact_resnet18, se_resnet (+ blocks.res), stochastic_depth, scaled_residual,
highway, long_skips. `tests/test_examples.py` already runs `resdsl check` on all of them.
"""

import math
import re

import pytest

import resdsl
from resdsl.ops import weight_key

from .conftest import EXAMPLES, ROOT

STD = ROOT / "resdsl" / "std"

torch = pytest.importorskip("torch")
F = torch.nn.functional

from .torch_helpers import randomise_batchnorm  # noqa: E402

COOKBOOK = ROOT / "docs" / "cookbook.md"


# --- helpers -------------------------------------------------------------------------------------


def load(name: str, **params) -> resdsl.Network:
    return resdsl.load(EXAMPLES / f"{name}.res", **params)


def loads_beside_examples(text: str, **params) -> resdsl.Network:
    """A spec as if it were a file in examples/ (so its imports resolve as theirs do)."""
    return resdsl.loads(text, path=str(EXAMPLES / "_test_variants.res"), **params)


def image(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


class Taps:
    """Record the inputs or outputs of named submodules during a forward pass.

    The generated forward is flat, so block boundaries are read off the layers around
    them: a block's input is the input of its first layer, its output the input of the
    next block's first layer.
    """

    def __init__(self, model: torch.nn.Module, inputs=(), outputs=()) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.handles = []
        modules = dict(model.named_modules())
        for name in inputs:
            hook = self._save(f"{name}:in", lambda args, out: args[0])
            self.handles.append(modules[name].register_forward_hook(hook))
        for name in outputs:
            hook = self._save(f"{name}:out", lambda args, out: out)
            self.handles.append(modules[name].register_forward_hook(hook))

    def _save(self, key: str, pick):
        def hook(module, args, out):
            self.values[key] = pick(args, out).detach().clone()

        return hook

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.values[key]


def ops_in(net: resdsl.Network, scope: str) -> list:
    """The nodes of one block instance, in graph order."""
    return [n for n in net.graph.nodes() if n.name.startswith(scope + ".")]


def bn_eval(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[f"{name}.running_mean"],
        sd[f"{name}.running_var"],
        sd[f"{name}.weight"],
        sd[f"{name}.bias"],
        training=False,
        eps=1e-5,
    )


def conv(x: torch.Tensor, sd: dict, name: str, stride: int = 1, padding: int = 1) -> torch.Tensor:
    return F.conv2d(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), stride, padding)


# --- every new example builds, runs forward and backward -------------------------------------

CASES = [
    ("preact_resnet18", {}),
    ("se_resnet", {}),
    ("stochastic_depth", {}),
    ("scaled_residual", {}),
    ("scaled_residual", {"layer_scale": True}),
    ("highway", {"gates": "coupled"}),
    ("highway", {"gates": "separate"}),
    ("highway", {"gates": "open"}),
    ("long_skips", {}),
    ("long_skips", {"skip": "add"}),
]


@pytest.mark.parametrize(
    ("name", "params"), CASES, ids=[f"{n}-{'-'.join(map(str, p.values()))}" for n, p in CASES]
)
def test_builds_trains_and_matches_the_graph(name, params):
    net = load(name, **params)
    model = net.to_torch(seed=0).train()
    # The module's parameters are the op table's weights, key for key and shape for shape.
    declared = {
        weight_key(n.name, w.name): w.shape
        for n in net.graph.nodes()
        for w in net.graph.weights_of(n.name)
    }
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == declared
    assert sum(p.numel() for p in model.parameters()) == net.num_params

    out = model(image(batch=2))
    assert {"output": tuple(out.shape[1:])} == net.output_shapes
    assert out.shape[0] == 2
    out.square().mean().backward()
    for key, p in model.named_parameters():
        assert p.requires_grad, key
        assert p.grad is not None, f"{key} got no gradient"
        assert torch.isfinite(p.grad).all(), key


# --- pre-activation ResNet -------------------------------------------------------------------


def test_preact_resnet18_parameter_count():
    def block(cin: int, cout: int) -> int:
        # bn1 (2 cin), conv1 3x3, bn2 (2 cout), conv2 3x3, a 1x1 projection if the shape changes
        proj = cin * cout if cin != cout else 0
        return 2 * cin + cin * cout * 9 + 2 * cout + cout * cout * 9 + proj

    assert block(64, 64) == 128 + 36_864 + 128 + 36_864 == 73_984
    assert block(64, 128) == 128 + 73_728 + 256 + 147_456 + 8_192 == 229_760
    assert block(128, 256) == 256 + 294_912 + 512 + 589_824 + 32_768 == 918_272
    assert block(256, 512) == 512 + 1_179_648 + 1_024 + 2_359_296 + 131_072 == 3_671_552
    stem = 3 * 64 * 9  # 1,728
    layers = (
        2 * block(64, 64)  # 147,968
        + block(64, 128) + block(128, 128)  # 229,760 + 295,424
        + block(128, 256) + block(256, 256)  # 918,272 + 1,180,672
        + block(256, 512) + block(512, 512)  # 3,671,552 + 4,720,640
    )  # fmt: skip
    head = 2 * 512 + 512 * 10 + 10  # final bn, fc
    assert stem + layers + head == 11_172_170
    net = load("preact_resnet18")
    assert net.num_params == 11_172_170
    # Without the final BN this is the widely used CIFAR PreActResNet18 (11,171,146).
    assert net.num_params - 2 * 512 == 11_171_146


def test_preact_blocks_start_with_batchnorm_and_end_with_a_bare_sum():
    net = load("preact_resnet18")
    g = net.graph
    blocks = [f"layer{s}.{i}" for s in range(1, 5) for i in range(2)]
    for scope in blocks:
        nodes = ops_in(net, scope)
        assert [n.op for n in nodes[:3]] == ["batchnorm2d", "relu", "conv2d"], scope
        assert nodes[0].name == f"{scope}.bn1"
        (add,) = [n for n in nodes if n.op == "add"]
        assert nodes[-1] is add, f"{scope} ends with {nodes[-1].op}, not the addition"
        # The sum goes on unchanged: into the next block's bn1 (and its skip), or the final bn.
        assert {g.node(u).op for u in g.users_of(add.name)} <= {"batchnorm2d", "add"}
        assert "relu" not in {g.node(u).op for u in g.users_of(add.name)}
    # Identity mappings: where the shape is kept, the skip is the block input itself.
    for scope, previous in [("layer1.1", "layer1.0"), ("layer4.1", "layer4.0")]:
        assert f"{previous}.add_0" in g.inputs_of(f"{scope}.add_0")
    # Where it changes, a bias-free 1x1 conv (no batch norm) projects the pre-activated input.
    assert g.inputs_of("layer2.0.shortcut.0") == ["layer2.0.relu_0"]
    assert "layer2.0.shortcut.1" not in g
    assert dict(g.node("layer2.0.shortcut.0").attrs)["stride"] == (2, 2)


def test_preact_projection_block_numerics():
    net = load("preact_resnet18")
    m = randomise_batchnorm(net.to_torch(seed=0)).eval()
    sd = m.state_dict()
    taps = Taps(m, inputs=["layer2.0.bn1", "layer2.1.bn1"])
    with torch.no_grad():
        m(image())
        x = taps["layer2.0.bn1:in"]
        a = F.relu(bn_eval(x, sd, "layer2.0.bn1"))
        f = conv(a, sd, "layer2.0.conv1", stride=2)
        f = conv(F.relu(bn_eval(f, sd, "layer2.0.bn2")), sd, "layer2.0.conv2")
        skip = conv(a, sd, "layer2.0.shortcut.0", stride=2, padding=0)
    torch.testing.assert_close(taps["layer2.1.bn1:in"], f + skip)


# --- squeeze-and-excitation ------------------------------------------------------------------


def test_se_resnet_parameter_count():
    def se(c: int, r: int = 4) -> int:
        return c * (c // r) + c // r + (c // r) * c + c  # fc1 and fc2, 1x1 convs with bias

    def block(cin: int, cout: int) -> int:
        proj = cin * cout + 2 * cout if cin != cout else 0  # 1x1 conv + bn
        return cin * cout * 9 + 2 * cout + cout * cout * 9 + 2 * cout + se(cout) + proj

    assert se(16) == 64 + 4 + 64 + 16 == 148
    assert se(32) == 256 + 8 + 256 + 32 == 552
    assert se(64) == 1_024 + 16 + 1_024 + 64 == 2_128
    stem = 3 * 16 * 9 + 2 * 16  # 464
    layers = (
        3 * block(16, 16)  # 3 * 4,820
        + block(16, 32) + 2 * block(32, 32)  # 15,848 + 2 * 19,176
        + block(32, 64) + 2 * block(64, 64)  # 61,584 + 2 * 76,112
    )  # fmt: skip
    fc = 64 * 10 + 10
    assert stem + layers + fc == 280_958
    net = load("se_resnet")
    assert net.num_params == 280_958
    # 8,484 more than the CIFAR ResNet-20 of the tutorial (272,474): three SE modules per stage.
    assert net.num_params - 272_474 == 3 * (148 + 552 + 2_128)


def test_se_gate_shape_and_placement():
    net = load("se_resnet")
    g = net.graph
    for scope, c in [("layer1.0", 16), ("layer2.1", 32), ("layer3.2", 64)]:
        h = {16: 32, 32: 16, 64: 8}[c]
        assert g.info(f"{scope}.se.sigmoid_0").shape == (c, 1, 1)
        assert g.info(f"{scope}.se.fc1").shape == (c // 4, 1, 1)
        mul = f"{scope}.se.mul_0"
        assert g.node(mul).op == "mul"
        assert g.input_shapes(mul) == [(c, h, h), (c, 1, 1)]
        assert g.inputs_of(mul) == [f"{scope}.bn2", f"{scope}.se.sigmoid_0"]
        assert g.users_of(mul) == [f"{scope}.add_0"]  # before the residual addition


def test_se_block_numerics():
    net = load("se_resnet")
    m = randomise_batchnorm(net.to_torch(seed=0)).eval()
    sd = m.state_dict()
    taps = Taps(m, inputs=["layer2.1.conv1", "layer2.2.conv1"], outputs=["layer2.1.bn2"])
    with torch.no_grad():
        m(image())
        x, y = taps["layer2.1.conv1:in"], taps["layer2.1.bn2:out"]
        squeezed = y.mean(dim=(2, 3), keepdim=True)
        assert squeezed.shape[1:] == (32, 1, 1)
        hidden = F.relu(conv(squeezed, sd, "layer2.1.se.fc1", padding=0))
        s = torch.sigmoid(conv(hidden, sd, "layer2.1.se.fc2", padding=0))
        assert s.shape[1:] == (32, 1, 1)
    torch.testing.assert_close(taps["layer2.2.conv1:in"], F.relu(y * s + x))


def test_se_block_is_torchvisions_squeeze_excitation():
    torchvision = pytest.importorskip("torchvision")
    net = loads_beside_examples(
        "import std.blocks\n"
        "network se_only() (x: (64, 8, 8)) { return x -> se: squeeze_excite(16) }\n"
    )
    assert net.num_params == 64 * 4 + 4 + 4 * 64 + 64
    ref = torchvision.ops.SqueezeExcitation(64, 4).eval()
    m = net.to_torch(seed=0).eval()
    m.se.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 64, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x))


# --- stochastic depth ------------------------------------------------------------------------


def drop_path_ps(net: resdsl.Network) -> list[float]:
    return [n.attrs["p"] for n in net.graph.nodes() if n.op == "drop_path"]


def test_stochastic_depth_linear_schedule():
    # p_i = p_max * i / (L - 1) over the L = 3n blocks, by hand:
    assert drop_path_ps(load("stochastic_depth")) == [
        0.0, 0.0625, 0.125, 0.1875, 0.25, 0.3125, 0.375, 0.4375, 0.5  # 0.5 * i / 8
    ]  # fmt: skip
    assert drop_path_ps(load("stochastic_depth", n=2, p_max=0.3)) == [
        0.0, 0.3 / 5, 0.6 / 5, 0.9 / 5, 1.2 / 5, 0.3  # 0.3 * i / 5 for i = 0..5
    ]  # fmt: skip
    net = load("stochastic_depth")
    g = net.graph
    for i in range(9):
        # drop_path ends the branch and feeds the residual addition
        assert g.inputs_of(f"block{i}.drop_path_0") == [f"block{i}.bn2"]
        assert g.users_of(f"block{i}.drop_path_0") == [f"block{i}.add_0"]
    # p must stay below 1: p_max = 1 fails at the last block, where it is reached.
    with pytest.raises(resdsl.ValueRangeError) as e:
        load("stochastic_depth", p_max=1.0)
    assert "block8" in resdsl.render(e.value)


def test_drop_path_statistics():
    net = resdsl.loads("network t(p: float) (x: 4) { return x -> drop_path(p) }", p=0.25)
    m = net.to_torch(seed=0).train()
    n, p = 20_000, 0.25
    x = torch.rand(n, 4) + 1.0  # no zeros, so a zero row is a dropped sample
    torch.manual_seed(0)
    y = m(x)
    dropped = (y == 0).all(dim=1)
    kept = (y != 0).all(dim=1)
    assert bool((dropped | kept).all()), "whole samples are dropped, never single elements"
    # binomial: the kept fraction is 1 - p within 5 standard deviations
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(y[kept], x[kept] / (1 - p))  # scaled by exactly 1 / (1 - p)
    # the same seed draws the same samples
    torch.manual_seed(0)
    assert torch.equal(m(x), y)
    # eval: the identity, bit for bit
    assert torch.equal(m.eval()(x), x)


def test_stochastic_depth_block_in_training_drops_or_scales_each_sample():
    net = load("stochastic_depth")
    m = net.to_torch(seed=0).train()
    # block7: identity shortcut, p = 0.5 * 7 / 8; its output is block8's input
    p = 0.4375
    taps = Taps(m, inputs=["block7.conv1", "block8.conv1"], outputs=["block7.bn2"])
    torch.manual_seed(0)
    with torch.no_grad():
        m(image(batch=256, seed=1))
    x, branch, out = taps["block7.conv1:in"], taps["block7.bn2:out"], taps["block8.conv1:in"]
    dropped = (out == F.relu(x)).flatten(1).all(dim=1)
    kept = (out == F.relu(branch / (1 - p) + x)).flatten(1).all(dim=1)
    assert bool((dropped ^ kept).all()), "each sample is either dropped or kept and scaled"
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / 256)


def test_stochastic_depth_is_the_plain_network_in_eval():
    net = load("stochastic_depth")
    m = randomise_batchnorm(net.to_torch(seed=0)).eval()
    plain = load("stochastic_depth", p_max=0.0).to_torch(seed=None)  # drop_path(0) everywhere
    plain.load_state_dict(m.state_dict(), strict=True)
    plain.eval()
    taps = Taps(m, inputs=["block8.conv1"], outputs=["block8.bn2", "fc"])
    x = image(batch=4)
    with torch.no_grad():
        torch.manual_seed(0)
        out = m(x)
        assert torch.equal(out, plain(x))
        # block8, the one with the largest p, is relu(branch + x) exactly: nothing dropped
        pooled = F.relu(taps["block8.bn2:out"] + taps["block8.conv1:in"]).mean(dim=(2, 3))
        assert torch.equal(taps["fc:out"], m.fc(pooled))


# --- scaled residuals and layer scale --------------------------------------------------------


def scale_shifts(net: resdsl.Network) -> list[tuple[str, float, float]]:
    return [(n.name, n.attrs["scale"], n.attrs["shift"]) for n in net.graph.nodes()
            if n.op == "scale_shift"]  # fmt: skip


def test_scaled_residual_scale_is_one_over_the_depth():
    # L derived from depths: 3 + 3 + 3 = 9 residual layers
    derived = scale_shifts(load("scaled_residual"))
    assert len(derived) == 9
    assert {(s, b) for _, s, b in derived} == {(1 / 9, 0.0)}
    assert scale_shifts(load("scaled_residual", depths=(2, 4), widths=(8, 16))) == [
        ("layer1.0.scale_shift_0", 1 / 6, 0.0),
        ("layer1.1.scale_shift_0", 1 / 6, 0.0),
        *[(f"layer2.{i}.scale_shift_0", 1 / 6, 0.0) for i in range(4)],
    ]
    # L given explicitly
    explicit = scale_shifts(load("scaled_residual", depths=(2,), widths=(8,), L=5))
    assert [s for _, s, _ in explicit] == [0.2, 0.2]
    net = load("scaled_residual", depths=(2,), widths=(8,), L=5)
    g = net.graph
    # the skip (block input) is scaled, the branch (conv2) is not
    assert g.inputs_of("layer1.1.scale_shift_0") == ["layer1.0.add_0"]
    assert g.inputs_of("layer1.1.add_0") == ["layer1.1.scale_shift_0", "layer1.1.conv2"]
    with pytest.raises(resdsl.ValueRangeError):
        load("scaled_residual", L=-1)


@pytest.mark.parametrize("depth", [5, 7])
def test_scaled_residual_numerics(depth):
    net = load("scaled_residual", depths=(2,), widths=(8,), L=depth)
    m = randomise_batchnorm(net.to_torch(seed=0)).eval()
    taps = Taps(m, inputs=["layer1.0.bn1", "layer1.1.bn1"], outputs=["layer1.0.conv2"])
    with torch.no_grad():
        m(image())
    x, f, out = taps["layer1.0.bn1:in"], taps["layer1.0.conv2:out"], taps["layer1.1.bn1:in"]
    torch.testing.assert_close(out, x / depth + f)
    assert torch.equal(out, x * (1 / depth) + f)  # the constant 1 / L, as the graph holds it


def test_layer_scale_parameters():
    net = load("scaled_residual", layer_scale=True)
    assert scale_shifts(net) == []
    widths = {1: 16, 2: 32, 3: 64}
    keys = {f"layer{s}.{i}.alpha": (1, c, 1, 1) for s, c in widths.items() for i in range(3)}
    m = net.to_torch(seed=0)
    params = dict(m.named_parameters())
    for key, shape in keys.items():
        assert tuple(m.state_dict()[key].shape) == shape  # stored with a leading 1
        assert params[key].requires_grad
        (weight,) = net.graph.weights_of(key)
        assert weight.init == "ones" and weight.trainable
    # the factors are the only difference from scaled mode: sum of the widths * 3 blocks
    assert net.num_params - load("scaled_residual").num_params == 3 * (16 + 32 + 64)
    g = net.graph
    assert g.inputs_of("layer2.1.mul_0") == ["layer2.1.alpha", "layer2.1.conv2"]
    assert g.input_shapes("layer2.1.mul_0") == [(32, 1, 1), (32, 16, 16)]


def test_layer_scale_starts_at_one_in_torch():
    m = load("scaled_residual", layer_scale=True).to_torch(seed=0)
    assert torch.equal(m.layer1[0].alpha, torch.ones(1, 16, 1, 1))


def test_layer_scale_numerics():
    net = load("scaled_residual", depths=(2,), widths=(8,), layer_scale=True)
    m = randomise_batchnorm(net.to_torch(seed=0)).eval()
    with torch.no_grad():
        m.layer1[0].alpha.copy_(torch.linspace(-1, 2, 8).reshape(1, 8, 1, 1))
    taps = Taps(m, inputs=["layer1.0.bn1", "layer1.1.bn1"], outputs=["layer1.0.conv2"])
    with torch.no_grad():
        m(image())
    x, f, out = taps["layer1.0.bn1:in"], taps["layer1.0.conv2:out"], taps["layer1.1.bn1:in"]
    assert torch.equal(out, x + m.layer1[0].alpha * f)


# --- highway ---------------------------------------------------------------------------------


def test_highway_graph_and_counts():
    open_, coupled, separate = (load("highway", gates=g) for g in ("open", "coupled", "separate"))
    conv_gate, linear_gate = 32 * 32 * 9 + 32, 32 * 32 + 32  # 9,248 and 1,056
    assert open_.num_params == 896 + 3 * conv_gate + linear_gate + 330 == 30_026
    assert coupled.num_params == open_.num_params + 3 * conv_gate + linear_gate == 58_826
    assert separate.num_params == coupled.num_params + 3 * conv_gate + linear_gate == 87_626
    g = coupled.graph
    # 1 - t is a scale_shift with scale -1 and shift 1
    assert dict(g.node("layer0.scale_shift_0").attrs) == {"scale": -1.0, "shift": 1.0}
    assert g.inputs_of("layer0.mul_0") == ["layer0.sigmoid_0", "layer0.relu_0"]  # t * h
    assert g.inputs_of("layer0.mul_1") == ["layer0.scale_shift_0", "relu_0"]  # (1 - t) * x
    assert g.info("head.mul_0").shape == (32,)  # the vector layer
    # open: h + x, a residual block
    assert [n.op for n in ops_in(open_, "layer0")] == ["conv2d", "relu", "add"]
    with pytest.raises(resdsl.ValueRangeError, match='not "opne"'):
        load("highway", gates="opne")


def force_gates(m: torch.nn.Module, names, bias: float) -> None:
    """Zero the gate layers' weights and set their bias: the gate is sigmoid(bias)."""
    modules = dict(m.named_modules())
    with torch.no_grad():
        for name in names:
            modules[name].weight.zero_()
            modules[name].bias.fill_(bias)


GATE_LAYERS = ["layer0", "layer1", "layer2"]


def test_highway_open_gate_limit_is_the_residual_network():
    assert torch.sigmoid(torch.tensor(30.0)).item() == 1.0  # exactly 1 in float32
    gated = load("highway", gates="separate").to_torch(seed=0).eval()
    layers = [f"{s}.{kind}.conv" for s in GATE_LAYERS for kind in "TC"]
    force_gates(gated, [*layers, "head.T.fc", "head.C.fc"], 30.0)  # T = C = 1
    residual = load("highway", gates="open").to_torch(seed=None).eval()
    own = residual.state_dict().keys()
    residual.load_state_dict({k: v for k, v in gated.state_dict().items() if k in own})
    x = image(batch=4)
    with torch.no_grad():
        assert torch.equal(gated(x), residual(x))


def test_highway_coupled_gate_limits():
    m = load("highway", gates="coupled").to_torch(seed=0).eval()
    taps = Taps(m, inputs=["layer0.H.conv", "layer1.H.conv"], outputs=["layer0.H.conv"])
    x = image()
    # T -> 1: the plain layer H(x), no skip (C = 1 - T = 0)
    force_gates(m, ["layer0.T.conv"], 30.0)
    with torch.no_grad():
        m(x)
    assert torch.equal(taps["layer1.H.conv:in"], F.relu(taps["layer0.H.conv:out"]))
    # T -> 0: the carry, x itself
    force_gates(m, ["layer0.T.conv"], -30.0)
    with torch.no_grad():
        m(x)
    torch.testing.assert_close(taps["layer1.H.conv:in"], taps["layer0.H.conv:in"])


def test_highway_coupled_numerics():
    m = load("highway", gates="coupled").to_torch(seed=0).eval()
    sd = m.state_dict()
    taps = Taps(m, inputs=["layer1.H.conv", "layer2.H.conv"])
    with torch.no_grad():
        m(image())
        x = taps["layer1.H.conv:in"]
        h = F.relu(conv(x, sd, "layer1.H.conv"))
        t = torch.sigmoid(conv(x, sd, "layer1.T.conv"))
    torch.testing.assert_close(taps["layer2.H.conv:in"], t * h + (1 - t) * x)


# --- long and all-to-all skips ---------------------------------------------------------------


@pytest.mark.parametrize(("base", "layers"), [(16, 3), (8, 5)])
def test_all_to_all_channel_growth(base, layers):
    net = load("long_skips", base=base, layers=layers)
    g = net.graph
    c0 = 2 * base  # the pooled output of enc2
    sd = net.to_torch(seed=0).state_dict()
    for i in range(layers):
        # layer i sees the block input and the i earlier outputs
        assert g.input_shapes(f"mid.layer{i}.conv") == [(c0 + i * base, 8, 8)]
        assert tuple(sd[f"mid.layer{i}.conv.weight"].shape) == (base, c0 + i * base, 3, 3)
        # and feeds every later layer, and the block's output
        users = {u for u in g.users_of(f"mid.layer{i}.relu_0")}
        assert users == {f"mid.concat_{j}" for j in range(i + 1, layers + 1)}
    assert g.info(f"mid.concat_{layers}").shape == (c0 + layers * base, 8, 8)


def test_long_skips_merge_shapes():
    concat = load("long_skips").graph
    assert concat.inputs_of("join2.concat_0") == ["up2.reshape_1", "enc2.relu_0"]
    assert concat.info("join2.concat_0").shape == (64, 16, 16)
    assert concat.inputs_of("join1.concat_0") == ["up1.reshape_1", "enc1.relu_0"]
    assert concat.info("join1.concat_0").shape == (32, 32, 32)
    add = load("long_skips", skip="add").graph
    assert add.inputs_of("join2.add_0") == ["up2.reshape_1", "enc2.relu_0"]
    assert add.info("join2.add_0").shape == (32, 16, 16)
    assert load("long_skips").output_shapes == {"output": (10, 32, 32)}


@pytest.mark.parametrize(("skip", "message"), [
    ("concat", "(32, 16, 16)"),
    ("add", "cannot add tensors of shape (32, 16, 16) and (16, 32, 32)"),
])  # fmt: skip
def test_long_skip_to_the_wrong_level_is_a_shape_error(skip, message):
    text = (EXAMPLES / "long_skips.res").read_text()
    wrong = text.replace("merge(d2, e2, skip)", "merge(d2, e1, skip)")
    assert wrong != text
    with pytest.raises(resdsl.ShapeError) as e:
        loads_beside_examples(wrong, skip=skip)
    assert message in e.value.message
    assert "join2" in resdsl.render(e.value)


def test_upsample_is_pixel_shuffle():
    m = load("long_skips").to_torch(seed=0).eval()
    taps = Taps(m, inputs=["dec2.conv"], outputs=["up2.conv"])
    with torch.no_grad():
        m(image())
    merged = taps["dec2.conv:in"]
    assert merged.shape[1:] == (64, 16, 16)
    assert torch.equal(merged[:, :32], F.pixel_shuffle(taps["up2.conv:out"], 2))


# --- docs/cookbook.md ------------------------------------------------------------------------

FENCE = re.compile(r"(?:<!-- from (?P<source>\S+) -->\n)?```res\n(?P<body>.*?)```", re.S)


def cookbook_snippets() -> list[tuple[str | None, str]]:
    return [(m["source"], m["body"]) for m in FENCE.finditer(COOKBOOK.read_text())]


def test_cookbook_has_snippets():
    snippets = cookbook_snippets()
    assert len(snippets) >= 10
    sources = {s for s, _ in snippets if s}
    for name in ("preact_resnet18", "se_resnet", "stochastic_depth", "scaled_residual",
                 "highway", "long_skips"):  # fmt: skip
        assert f"examples/{name}.res" in sources, name
    assert "resdsl/std/blocks.res" in sources


@pytest.mark.parametrize("index", range(len(cookbook_snippets())))
def test_cookbook_snippet(index):
    """An excerpt is verbatim in its example (which test_examples checks); any other ```res
    block elaborates as a file in examples/, or is a library whose definitions check."""
    source, body = cookbook_snippets()[index]
    if source is not None:
        assert body in (ROOT / source).read_text(), f"not an excerpt of {source}"
    elif re.search(r"^network ", body, re.M):
        loads_beside_examples(body)
    else:
        from resdsl.elaborate import check_definitions
        from resdsl.loader import load_program

        check_definitions(load_program(body, str(EXAMPLES / "_test_variants.res")))


def test_cookbook_two_spirals_counts():
    (body,) = [b for s, b in cookbook_snippets() if "network two_spirals" in b]
    net = loads_beside_examples(body)
    # the same count as a linear map on the concatenation of all earlier outputs:
    # (2 -> 5) + (2 + 5 -> 5) + (2 + 5 + 5 -> 5) + (2 + 5 + 5 + 5 -> 1), weights and biases
    assert net.num_params == (2 * 5 + 5) + (7 * 5 + 5) + (12 * 5 + 5) + (17 * 1 + 1) == 138
    assert net.output_shapes == {"output": (1,)}


# The rendered errors shown in the cookbook: (file to break, text to replace, replacement,
# spec to check, network parameters). Each is reproduced on a copy of the examples.
BROKEN = [
    ("preact_resnet18.res",
     "    skip = if f.shape == x.shape then x else (a -> shortcut: project(planes, stride, "
     "bn=false))\n    return f + skip",
     "    return f + x", "preact_resnet18.res", {}),
    ("std/blocks.res",
     "    s = x -> avgpool: adaptive_avgpool2d(1)\n"
     "          -> fc1: conv2d(squeezed, 1)\n"
     "          -> act\n"
     "          -> fc2: conv2d(x.channels, 1)\n"
     "          -> gate",
     "    s = x -> avgpool: global_avgpool\n"
     "          -> fc1: linear(squeezed) -> act\n"
     "          -> fc2: linear(x.channels) -> gate", "se_resnet.res", {}),
    ("stochastic_depth.res", "", "", "stochastic_depth.res", {"p_max": 1.0}),
    ("long_skips.res", "merge(d2, e2, skip)", "merge(d2, e1, skip)", "long_skips.res", {}),
]  # fmt: skip


@pytest.mark.parametrize(("broken", "old", "new", "main", "params"), BROKEN,
                         ids=[b[3] for b in BROKEN])  # fmt: skip
def test_cookbook_errors_are_current(tmp_path, monkeypatch, broken, old, new, main, params):
    # the examples and, as files beside them, the standard library: `std/blocks.res` is
    # what the diagnostics call it either way
    (tmp_path / "std").mkdir()
    for path in STD.glob("*.res"):
        (tmp_path / "std" / path.name).write_text(path.read_text())
    for path in EXAMPLES.glob("*.res"):
        text = re.sub(r"^import std\.(\w+)", r'import "std/\1.res"', path.read_text(), flags=re.M)
        (tmp_path / path.name).write_text(text)
    text = (tmp_path / broken).read_text()
    assert old in text
    (tmp_path / broken).write_text(text.replace(old, new))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(resdsl.SpecError) as e:
        resdsl.load(main, **params)
    assert resdsl.render(e.value) in COOKBOOK.read_text()
