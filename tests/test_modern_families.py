"""The modern residual families of issue 16, written in the language: torchvision's
mobilenet_v2, efficientnet_b0, convnext_tiny and regnet_y_400mf, and the CIFAR ResNet-20 of
He et al. (2015) with option-A and option-B shortcuts. Each is exact: the parameter count,
a strict load of the reference state_dict, and the outputs on a randomised state (every
floating tensor of the reference perturbed: weights, biases, batch-norm statistics, layer
scales), within a relative max difference of 1e-5.
"""

import copy
import functools
from collections import Counter

import pytest

import resdsl

from .conftest import EXAMPLES

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
nn = torch.nn
F = torch.nn.functional

# torchvision's sum(p.numel() for p in model.parameters()), 1000 classes
TORCHVISION = {
    "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548,
    "convnext_tiny": 28_589_128,
    "regnet_y_400mf": 4_344_144,
}
CIFAR = {"A": 269_722, "B": 272_474}  # He et al. (2015), sec. 4.2: ResNet-20 is 0.27 M
TOLERANCE = 1e-5


# --- the CIFAR reference: the common PyTorch implementation of the paper's ResNet-20 ----------


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, option: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.planes, self.option = planes, option
        self.changes_shape = stride != 1 or in_planes != planes
        if self.changes_shape and option == "B":
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if not self.changes_shape:
            skip = x
        elif self.option == "A":
            pad = self.planes // 4
            skip = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0)
        else:
            skip = self.downsample(x)
        return F.relu(out + skip)


class CifarResNet(nn.Module):
    def __init__(self, option: str, n: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for k, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, option))
                in_planes = planes
            setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.avg_pool2d(x, x.size(3)).flatten(1))


# --- helpers -----------------------------------------------------------------------------------


@functools.cache
def spec(name: str, **params) -> resdsl.Network:
    return resdsl.load(EXAMPLES / f"{name}.res", **params)


@functools.cache
def _reference(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name.startswith("cifar_resnet20_"):
        return CifarResNet(name[-1]).eval()
    return getattr(torchvision.models, name)(weights=None).eval()


def reference(name: str) -> nn.Module:
    """A fresh copy (tests randomise it) of the reference model, built once."""
    return copy.deepcopy(_reference(name))


def resdsl_spec(name: str) -> resdsl.Network:
    if name.startswith("cifar_resnet20_"):
        return spec("cifar_resnet20", option=name[-1])
    return spec(name)


@functools.cache
def module(name: str) -> nn.Module:
    """The spec's PyTorch module, built once: each test loads a whole state into it."""
    return resdsl_spec(name).to_torch(seed=0).eval()


def randomise(model: nn.Module, seed: int = 0) -> dict:
    """Replace every floating tensor of the state_dict with a random one, load it into the
    model and return it: batch-norm statistics (variance positive), conv and linear weights
    (scaled by 1 / sqrt(fan-in)), norm scales around 1, biases, layer scales (ConvNeXt's
    start at 1e-6) and SE convolutions alike."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            state[key] = value  # num_batches_tracked
            continue
        shape = value.shape
        if key.endswith("running_var"):
            new = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            new = torch.randn(shape, generator=g) * 0.5
        elif value.dim() >= 2 and not key.endswith("layer_scale"):
            new = torch.randn(shape, generator=g) / value[0].numel() ** 0.5
        elif key.endswith("weight"):  # batch and layer norm scales
            new = torch.rand(shape, generator=g) + 0.5
        else:  # biases, layer scales
            new = torch.randn(shape, generator=g) * 0.5
        state[key] = new
    model.load_state_dict(state, strict=True)
    return state


def ops(net: resdsl.Network) -> Counter:
    return Counter(n.op for n in net.graph.nodes())


def modules(model: nn.Module, cls: type) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


NAMES = [*TORCHVISION, "cifar_resnet20_A", "cifar_resnet20_B"]


# --- (a) parameter counts ----------------------------------------------------------------------


@pytest.mark.parametrize("name", TORCHVISION)
def test_parameter_count_is_torchvisions(name):
    net = spec(name)
    ref = reference(name)
    assert net.num_params == TORCHVISION[name] == sum(p.numel() for p in ref.parameters())
    assert net.input_shapes == {"x": (3, 224, 224)}
    assert net.output_shapes == {"output": (1000,)}


@pytest.mark.parametrize("option", CIFAR)
def test_cifar_resnet20_parameter_counts(option):
    net = spec("cifar_resnet20", option=option)
    assert net.num_params == CIFAR[option]
    assert sum(p.numel() for p in CifarResNet(option).parameters()) == CIFAR[option]
    assert net.input_shapes == {"x": (3, 32, 32)}
    assert net.output_shapes == {"output": (10,)}
    # option A's shortcuts cost nothing: B's two projections are 16*32 + 2*32 and 32*64 + 2*64
    assert CIFAR["B"] - CIFAR["A"] == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


# --- (b) torchvision's state_dict loads strictly -------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_reference_state_dict_loads_strictly(name):
    ref = reference(name)
    model = module(name)
    model.load_state_dict(ref.state_dict(), strict=True)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == ref_shapes


# --- (c) the same outputs on a randomised state -----------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_on_a_randomised_state(name):
    ref = reference(name)
    state = randomise(ref, seed=len(name))
    model = module(name)
    model.load_state_dict(state, strict=True)
    size = 32 if name.startswith("cifar") else 224
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
    assert ours.shape == theirs.shape
    scale = theirs.abs().max().item()
    assert scale > 0.1  # not a vanishing signal that would hide a difference
    assert (ours - theirs).abs().max().item() / scale <= TOLERANCE


# --- (d) one node per activation ------------------------------------------------------------------


def test_mobilenet_v2_has_one_relu6_node_per_activation():
    counts = ops(spec("mobilenet_v2"))
    assert counts["relu6"] == modules(reference("mobilenet_v2"), nn.ReLU6) == 35
    # no decomposition (relu(x) - relu(x - 6), a clamp) stands in for one
    assert not {"relu", "sub", "scale_shift", "clamp", "hardtanh"} & set(counts)


def test_efficientnet_b0_has_one_silu_node_per_activation():
    net = spec("efficientnet_b0")
    ref = reference("efficientnet_b0")
    counts = ops(net)
    assert counts["silu"] == modules(ref, nn.SiLU) == 49
    # the only sigmoids and products are the 16 squeeze-and-excitation gates ...
    se = modules(ref, torchvision.ops.SqueezeExcitation)
    assert counts["sigmoid"] == modules(ref, nn.Sigmoid) == se == 16
    assert counts["mul"] == se
    # ... and none is x * sigmoid(x): each gate scales the map it was pooled from
    g = net.graph
    for node in g.nodes():
        if node.op == "mul":
            a, b = g.inputs_of(node.name)
            gate, x = (a, b) if g.node(a).op == "sigmoid" else (b, a)
            assert g.node(gate).op == "sigmoid"
            assert g.inputs_of(gate) != [x]


# --- what else the specs say about the architecture ----------------------------------------------


@pytest.mark.parametrize("name", ["efficientnet_b0", "convnext_tiny"])
def test_stochastic_depth_probabilities_are_torchvisions(name):
    expected = {
        k: m.p
        for k, m in reference(name).named_modules()
        if isinstance(m, torchvision.ops.StochasticDepth)
    }
    got = {n.name: n.attrs["p"] for n in spec(name).graph.nodes() if n.op == "drop_path"}
    if name == "efficientnet_b0":
        # torchvision's blocks that change the shape keep a StochasticDepth they never call
        expected = {k: p for k, p in expected.items() if k in got}
        assert len(got) == 9
    assert got.keys() == expected.keys()
    for key, p in expected.items():
        assert got[key] == pytest.approx(p, rel=1e-12, abs=1e-15), key


def test_convnext_layer_scale_is_stored_as_torchvisions_and_starts_at_1e_6():
    model = spec("convnext_tiny").to_torch(seed=0)
    scales = {k: v for k, v in model.state_dict().items() if k.endswith("layer_scale")}
    assert len(scales) == 18
    assert tuple(scales["features.1.0.layer_scale"].shape) == (96, 1, 1)
    assert tuple(scales["features.7.2.layer_scale"].shape) == (768, 1, 1)
    for value in scales.values():
        assert torch.all(value == torch.tensor(1e-6))
    keys = model.state_dict().keys()
    assert {"features.1.0.block.0.weight", "features.1.0.block.2.weight"} <= keys
    assert {"features.2.0.weight", "features.2.1.weight", "classifier.0.weight"} <= keys


def test_cifar_option_a_shortcut_is_strided_identity_with_zero_channels():
    net = spec("cifar_resnet20", option="A")
    counts = ops(net)
    assert counts["pad"] == 2 and counts["slice"] == 4 and counts["conv2d"] == 19
    model = net.to_torch(seed=0).eval()
    randomise(model)
    taps = {}

    def tap(key, pick):
        def hook(module, args, out):
            taps[key] = pick(args, out)  # returns None: the output is kept

        return hook

    block = model.layer2[0]
    block.conv1.register_forward_hook(tap("x", lambda args, out: args[0]))
    block.bn2.register_forward_hook(tap("y", lambda args, out: out))
    model.layer2[1].conv1.register_forward_hook(tap("out", lambda args, out: args[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    x, y, out = taps["x"], taps["y"], taps["out"]
    assert x.shape[1:] == (16, 32, 32) and out.shape[1:] == (32, 16, 16)
    skip = torch.zeros_like(out)
    skip[:, 8:24] = x[:, :, ::2, ::2]  # 8 zero channels on each side
    assert torch.equal(out, F.relu(y + skip))


@pytest.mark.parametrize(
    ("name", "params", "reference_name"),
    [
        ("mobilenet_v2", {"width_mult": 0.5}, None),
        ("efficientnet_b0", {"depth_mult": 1.1}, "efficientnet_b1"),
        ("regnet_y_400mf", {"depth": 14, "w_0": 56, "w_a": 38.84, "w_m": 2.4,
                            "group_width": 16}, "regnet_y_800mf"),
    ],
    ids=["mobilenet_v2-0.5", "efficientnet_b1", "regnet_y_800mf"],
)  # fmt: skip
def test_the_scaling_rules_give_the_other_family_members(name, params, reference_name):
    """Width and depth multipliers (make_divisible, ceil) and RegNet's design rule are
    written in the specs, so other members of each family load as they are."""
    if reference_name is None:
        ref = torchvision.models.mobilenet_v2(weights=None, **params)
    else:
        ref = getattr(torchvision.models, reference_name)(weights=None)
    net = resdsl.load(EXAMPLES / f"{name}.res", **params)
    assert net.num_params == sum(p.numel() for p in ref.parameters())
    net.to_torch(seed=0).load_state_dict(ref.state_dict(), strict=True)
