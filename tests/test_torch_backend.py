"""`resdsl compile --target torch`: the written file stands alone (needs only torch), is
deterministic, is replaced atomically, goes to stdout with `-o -`, and is lint-clean."""

import os
import subprocess
import sys
import textwrap

import pytest

import resdsl
from resdsl.cli import main

from .conftest import EXAMPLES

torch = pytest.importorskip("torch")
F = torch.nn.functional

RESNET18 = str(EXAMPLES / "resnet18.res")

# Runs in a fresh interpreter: blocks every import of resdsl, imports the generated file by
# path, records build()'s state_dict keys, loads the parent's weights and runs a fixed input.
CHILD = textwrap.dedent("""
    import importlib.util
    import sys

    sys.modules["resdsl"] = None  # any `import resdsl` (or resdsl.x) now raises ImportError
    try:
        import resdsl  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("resdsl is still importable")

    import torch

    model_path, weights_path, out_path = sys.argv[1:4]
    spec = importlib.util.spec_from_file_location("generated_resnet18", model_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m = module.build()
    keys = list(m.state_dict().keys())
    m.load_state_dict(torch.load(weights_path, weights_only=True))
    m.eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = m(x)
    loaded = sorted(
        name for name, mod in sys.modules.items() if name.split(".")[0] == "resdsl" and mod
    )
    torch.save({"keys": keys, "x": x, "y": y, "loaded": loaded}, out_path)
""")


def compile_to(path, *extra: str) -> int:
    return main(["compile", RESNET18, "--target", "torch", "-o", str(path), *extra])


@pytest.fixture(scope="module")
def resnet18():
    return resdsl.load(RESNET18)


def test_generated_file_runs_without_resdsl(tmp_path, resnet18):
    model_path = tmp_path / "m.py"
    assert compile_to(model_path) == 0

    reference = resnet18.to_torch(seed=0)
    # non-trivial batchnorm statistics, so a mis-wired norm would show in the output
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for mod in reference.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    reference.eval()
    weights_path = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), weights_path)

    out_path = tmp_path / "out.pt"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_path), str(weights_path), str(out_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    result = torch.load(out_path, weights_only=True)

    assert result["loaded"] == []
    assert result["keys"] == list(resnet18.to_torch().state_dict().keys())
    with torch.no_grad():
        want = reference(result["x"])
    assert result["y"].shape == (2, 1000)
    assert torch.allclose(result["y"], want, atol=1e-5)


def test_generated_source_is_deterministic(tmp_path):
    assert compile_to(tmp_path / "a.py") == 0
    assert compile_to(tmp_path / "b.py") == 0
    first = (tmp_path / "a.py").read_bytes()
    assert first == (tmp_path / "b.py").read_bytes()
    assert b"import resdsl" not in first and b"from resdsl" not in first


def test_output_file_is_replaced_atomically(tmp_path):
    target = tmp_path / "m.py"
    target.write_text("# an older model\n")
    old_inode = target.stat().st_ino
    os.link(target, tmp_path / "old.py")  # a second name for the old file's contents

    assert compile_to(target) == 0

    assert "class Resnet18" in target.read_text()
    # renamed into place, not rewritten in place: the old file is untouched
    assert target.stat().st_ino != old_inode
    assert (tmp_path / "old.py").read_text() == "# an older model\n"
    assert list(tmp_path.glob(".*.tmp")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py", "old.py"]


def test_failed_compile_leaves_the_output_alone(tmp_path, capsys):
    spec = tmp_path / "bad.res"
    spec.write_text("network n() (x: (3, 8, 8)) { y = x -> conv2d(4, 3)  return y + x }\n")
    target = tmp_path / "m.py"
    target.write_text("# keep me\n")
    assert main(["compile", str(spec), "-o", str(target)]) == 1
    assert "cannot add" in capsys.readouterr().err
    assert target.read_text() == "# keep me\n"
    assert list(tmp_path.glob(".*.tmp")) == []


@pytest.mark.parametrize("stdout_args", [["-o", "-"], []], ids=["dash", "default"])
def test_compile_to_stdout(tmp_path, capsys, stdout_args):
    assert compile_to(tmp_path / "m.py") == 0
    capsys.readouterr()
    assert main(["compile", RESNET18, "--target", "torch", *stdout_args]) == 0
    out = capsys.readouterr().out
    assert out == (tmp_path / "m.py").read_text()
    assert list(tmp_path.iterdir()) == [tmp_path / "m.py"]


def ruff(path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", *args, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_generated_code_passes_ruff(tmp_path):
    assert compile_to(tmp_path / "m.py") == 0
    result = ruff(tmp_path / "m.py", "--select", "E,F", "--line-length", "100")  # the project width
    assert result.returncode == 0, result.stdout


def test_dotted_and_underscored_names_do_not_collide():
    net = resdsl.loads(
        textwrap.dedent("""
        block blk() (x) { return x -> b: conv2d(4, 1) }
        network n() (x: (4, 3, 3)) {
            p = x -> a: blk
            q = x -> a_b: conv2d(4, 1)
            return p + q
        }
        """)
    )
    m = net.to_torch(seed=0).eval()
    sd = m.state_dict()
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    want = F.conv2d(x, sd["a.b.weight"], sd["a.b.bias"]) + F.conv2d(
        x, sd["a_b.weight"], sd["a_b.bias"]
    )
    with torch.no_grad():
        assert torch.allclose(m(x), want, atol=1e-5)


def test_generated_code_is_ruff_formatted(tmp_path):
    assert compile_to(tmp_path / "m.py") == 0
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--isolated", "--line-length", "100",
         str(tmp_path / "m.py")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
