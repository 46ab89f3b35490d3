"""Packaging: the wheel ships every subpackage and data file (pyproject lists packages
explicitly), the extras use ranges and the test extra pins, and `python -m resdsl` works."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import resdsl

from .conftest import ROOT


def test_every_subpackage_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "resdsl").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert set(config["packages"]) == found | {"resdsl.grammars"}
    assert config["package-data"] == {
        "resdsl.grammars": ["*.lark"], "resdsl.std": ["*.res"], "resdsl.zoo": ["*.res"]
    }  # fmt: skip


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _requirement(extra: list[str], name: str) -> str:
    (found,) = [r for r in extra if re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0] == name]
    return found


def test_runtime_extras_use_ranges_and_the_test_extra_pins():
    """Users' environments need room (`torch>=2.4`); CI runs exact versions, and TVM, whose
    API moves, is pinned exactly wherever it is installed."""
    extras = _extras()
    for extra in ("torch", "onnx", "draw", "search"):
        for requirement in extras[extra]:
            assert "==" not in requirement, (extra, requirement)
    assert _requirement(extras["torch"], "torch") == "torch>=2.4"
    assert _requirement(extras["onnx"], "onnx").startswith("onnx>=")
    assert _requirement(extras["onnx"], "onnxruntime").startswith("onnxruntime>=")
    assert _requirement(extras["tvm"], "apache-tvm") == "apache-tvm==0.27.0.post1"
    assert _requirement(extras["tvm"], "apache-tvm-ffi") == "apache-tvm-ffi==0.1.14.post0"
    test = extras["test"]
    assert _requirement(test, "resdsl") == "resdsl[torch,tvm,onnx,search]"
    for name in ("torch", "torchvision", "onnx", "onnxruntime", "ruff"):
        assert "==" in _requirement(test, name), name
    # the README names the versions the test extra installs
    readme = (ROOT / "README.md").read_text()
    for name, label in (("torch", "PyTorch"), ("torchvision", "torchvision")):
        version = _requirement(test, name).split("==")[1]
        assert f"{label} {version}" in readme, (label, version)


def test_python_dash_m_resdsl():
    for module in ("resdsl", "resdsl.cli"):
        done = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True, cwd=ROOT
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"resdsl {resdsl.__version__}"
