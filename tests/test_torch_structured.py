"""Structured PyTorch output (issue 24): one class per block, loops for repeats, the
projection only when the shape changes; state_dict keys and outputs equal the flat
module's, torchvision's checkpoints load strictly, and depth does not set the length."""

import copy
import inspect
import pickle
import subprocess
import sys
import textwrap

import pytest

import resdsl
from resdsl.backends import torch_structured

from .conftest import EXAMPLES

torch = pytest.importorskip("torch")

# examples whose structure is found, and those written flat (fallback)
STRUCTURED = ["cifar_resnet20", "highway", "long_skips", "preact_resnet18", "resnet18",
              "resnet50", "scaled_residual", "se_resnet", "stochastic_depth"]  # fmt: skip
STRUCTURED_SLOW = ["densenet121", "efficientnet_b0", "regnet_y_400mf", "resnet34", "resnet101",
                   "resnet152", "resnext50_32x4d", "vit_b_16", "wide_resnet50_2"]  # fmt: skip
FLAT = ["convnext_tiny", "mobilenet_v2"]


def test_every_example_is_listed():
    names = {p.stem for p in EXAMPLES.glob("*.res")}
    assert names == set(STRUCTURED) | set(STRUCTURED_SLOW) | set(FLAT)


def source(spec: str) -> str:
    text = torch_structured.structured(resdsl.load(spec).graph, spec)
    assert text is not None, f"{spec}: no structure found"
    return text


def build(text: str):
    namespace: dict = {}
    exec(compile(text, "<generated>", "exec"), namespace)
    return namespace["build"]()


def check_equal(spec: str):
    net = resdsl.load(spec)
    text = source(spec)
    assert "import resdsl" not in text and "from resdsl" not in text
    module = build(text)
    reference = net.to_torch(seed=0)
    assert list(module.state_dict()) == list(reference.state_dict())
    g = torch.Generator().manual_seed(3)
    state = {
        k: (torch.randn(v.shape, generator=g) * 0.1 + (1.0 if k.endswith("running_var") else 0))
        if v.is_floating_point() else v
        for k, v in reference.state_dict().items()
    }  # fmt: skip
    reference.load_state_dict(state, strict=True)
    module.load_state_dict(state, strict=True)
    reference.eval(), module.eval()
    x = torch.randn(1, *net.graph.info(net.graph.inputs[0]).shape, generator=g)
    with torch.no_grad():
        want, got = reference(x), module(x)
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), (a - b).abs().max()
    return module


@pytest.mark.parametrize(
    "name", [*STRUCTURED, *(pytest.param(n, marks=pytest.mark.slow) for n in STRUCTURED_SLOW)]
)
def test_structured_equals_flat(name):
    check_equal(str(EXAMPLES / f"{name}.res"))


@pytest.mark.parametrize("name", FLAT)
def test_fallback_is_the_flat_form(name):
    net = resdsl.load(EXAMPLES / f"{name}.res")
    assert torch_structured.structured(net.graph) is None
    assert torch_structured.generate(net.graph) == net.to_torch_source()


def test_resnet50_reads_like_torchvision():
    text = source(str(EXAMPLES / "resnet50.res"))
    assert "class Bottleneck(nn.Module):" in text
    assert text.count("class ") == 2  # Bottleneck and the network
    assert "if stride != 1 or in_channels != 4 * channels:" in text
    assert "self.layer3 = nn.Sequential(" in text and "for i in range(6)" in text
    assert "self.downsample = None" in text


def test_zoo_resnet50_loads_torchvisions_weights():
    torchvision = pytest.importorskip("torchvision")
    module = build(source("zoo:resnet50"))
    reference = torchvision.models.resnet50(weights=None).eval()
    module.load_state_dict(reference.state_dict(), strict=True)
    module.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(module(x), reference(x), atol=1e-5)


def test_depth_does_not_set_the_length():
    lines = {n: len(source(str(EXAMPLES / f"{n}.res")).splitlines())
             for n in ("resnet18", "resnet50", "resnet152")}  # fmt: skip
    assert lines["resnet152"] <= lines["resnet18"] + 8
    torchvision = pytest.importorskip("torchvision")
    resnet = torchvision.models.resnet
    reference = sum(len(inspect.getsource(c).splitlines()) for c in (resnet.Bottleneck,
                                                                      resnet.ResNet))  # fmt: skip
    assert lines["resnet50"] <= 1.5 * reference


CHILD = textwrap.dedent("""
    import importlib.util
    import sys

    sys.modules["resdsl"] = None  # any import of resdsl now fails
    import torch

    spec = importlib.util.spec_from_file_location("generated", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m = module.build()
    m.load_state_dict(torch.load(sys.argv[2], weights_only=True), strict=True)
    m.eval()
    with torch.no_grad():
        y = m(torch.load(sys.argv[3], weights_only=True))
    torch.save({"keys": list(m.state_dict()), "y": y}, sys.argv[4])
""")


def test_generated_file_runs_without_resdsl(tmp_path):
    spec = str(EXAMPLES / "cifar_resnet20.res")
    net = resdsl.load(spec)
    (tmp_path / "m.py").write_text(source(spec))
    reference = net.to_torch(seed=0).eval()
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *(str(tmp_path / f) for f in ("m.py", "w.pt", "x.pt",
                                                                   "out.pt"))],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    assert result["keys"] == list(reference.state_dict())
    with torch.no_grad():
        assert torch.allclose(result["y"], reference(x), atol=1e-6)


def test_deepcopy_pickle_and_export(tmp_path):
    spec = str(EXAMPLES / "cifar_resnet20.res")
    path = tmp_path / "generated_cifar.py"
    path.write_text(source(spec))
    sys.path.insert(0, str(tmp_path))
    try:
        import generated_cifar  # a real module, so pickle finds its classes

        m = generated_cifar.build().eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            y = m(x)
            assert torch.equal(copy.deepcopy(m)(x), y)
            assert torch.equal(pickle.loads(pickle.dumps(m))(x), y)
        exported = torch.export.export(m, (x,))
        with torch.no_grad():
            assert torch.allclose(exported.module()(x), y, atol=1e-6)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("generated_cifar", None)


def test_generated_code_is_lint_clean(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(source(str(EXAMPLES / "resnet50.res")))
    for args in (["check", "--select", "E,F"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--no-cache", "--isolated", "--line-length",
             "100", str(path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
