"""Every example checks; the ResNets reproduce torchvision exactly (counts, names, outputs)."""

import pytest

import resdsl
from resdsl.cli import main
from resdsl.ops import weight_key

from .conftest import EXAMPLES

ALL_SPECS = sorted(EXAMPLES.rglob("*.res"))

# Parameter counts of torchvision's models (1000 classes), and its published GFLOPS (= GMACs).
TORCHVISION = {
    "resnet18": (11_689_512, 1.81),
    "resnet34": (21_797_672, 3.66),
    "resnet50": (25_557_032, 4.09),
    "resnet101": (44_549_160, 7.80),
    "resnet152": (60_192_808, 11.51),
    "resnext50_32x4d": (25_028_904, 4.23),
    "wide_resnet50_2": (68_883_240, 11.40),
    "densenet121": (7_978_856, 2.83),
    "vit_b_16": (86_567_656, 17.56),
}


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_checks(path, capsys):
    assert main(["check", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_counts(name):
    params, gmacs = TORCHVISION[name]
    net = resdsl.load(EXAMPLES / f"{name}.res")
    assert net.num_params == params
    assert abs(net.macs / 1e9 - gmacs) / gmacs < 0.01
    assert net.input_shapes == {"x": (3, 224, 224)}
    assert net.output_shapes == {"output": (1000,)}


def test_num_classes_parameter():
    net = resdsl.load(EXAMPLES / "resnet50.res", num_classes=10)
    assert net.output_shapes == {"output": (10,)}
    # Only the classifier changes: 2048 * (1000 - 10) weights and 990 biases fewer.
    assert net.num_params == TORCHVISION["resnet50"][0] - 2048 * 990 - 990


@pytest.mark.parametrize("name", TORCHVISION)
def test_matches_torchvision(name):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    reference = getattr(torchvision.models, name)().eval()
    model = resdsl.load(EXAMPLES / f"{name}.res").to_torch(seed=0).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(len(name)))
    with torch.no_grad():
        diff = (model(x) - reference(x)).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("depth", [18, 50])
def test_op_table_weights_are_the_state_dict(depth):
    """The op table's declared weights name and shape every state_dict entry of the module."""
    pytest.importorskip("torch")
    net = resdsl.load(EXAMPLES / f"resnet{depth}.res")
    g = net.graph
    declared = {
        weight_key(n.name, w.name): w.shape for n in g.nodes() for w in g.weights_of(n.name)
    }
    actual = {k: tuple(v.shape) for k, v in net.to_torch().state_dict().items()}
    assert declared == actual
